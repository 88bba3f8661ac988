//! Where and as whom to connect to Redis: the URL, an ACL user, a password
//! that never appears in logs or printed configuration, and TLS settings.

use std::fmt;
use std::path::{Path, PathBuf};

use redis::IntoConnectionInfo;

use super::ConfigError;
use super::endpoint::RedisEndpoint;

/// The connection every pipeline of a process uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisConfig {
    /// `redis://[user:password@]host:port[/db]` (or `rediss://` for TLS).
    pub url: String,
    /// ACL user; overrides one in the URL.
    pub username: Option<String>,
    /// Password; overrides one in the URL.
    pub password: Option<Secret>,
    /// TLS settings (`[redis.tls]`).
    pub tls: Option<TlsConfig>,
    /// The URL is a seed node of a Redis Cluster (`--cluster`, `[redis]
    /// cluster = true`): each partition's commands go to the node holding
    /// its slot.
    pub cluster: bool,
    /// The master is found through Sentinel (`--sentinel`, `[redis]
    /// sentinels`/`master`): the URL gives credentials, database and TLS,
    /// the sentinels where its host and port are now.
    pub sentinel: Option<SentinelConfig>,
}

/// Where the sentinels are, and the name they monitor the master by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SentinelConfig {
    /// `host:port` of each sentinel, asked in order.
    pub nodes: Vec<(String, u16)>,
    /// The monitored master's name.
    pub master: String,
}

impl SentinelConfig {
    /// Reads `HOST:PORT[,HOST:PORT…]`.
    pub fn nodes_of(text: &str) -> Result<Vec<(String, u16)>, String> {
        text.split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(|s| {
                let (host, port) = s
                    .rsplit_once(':')
                    .ok_or_else(|| format!("{s:?} is not HOST:PORT"))?;
                let port = port.parse().map_err(|_| format!("{s:?}: bad port"))?;
                Ok((host.to_owned(), port))
            })
            .collect()
    }
}

/// `[redis.tls]`: trust roots, client certificate and server name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsConfig {
    /// CA certificate file (PEM) instead of the system roots.
    pub ca: Option<PathBuf>,
    /// Client certificate (PEM), for servers that require one.
    pub cert: Option<PathBuf>,
    /// The client certificate's private key (PEM).
    pub key: Option<PathBuf>,
    /// Name to verify the server certificate against, if not the URL's host.
    pub server_name: Option<String>,
}

/// A password: compared and used, but shown only as where it came from.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret {
    value: String,
    source: SecretSource,
}

/// Where a secret was read from; safe to print.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretSource {
    /// An environment variable, by name.
    Env(String),
    /// A file, by path.
    File(PathBuf),
}

impl fmt::Display for SecretSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Env(name) => write!(f, "env {name}"),
            Self::File(path) => write!(f, "file {}", path.display()),
        }
    }
}

impl Secret {
    /// A secret read from `source`.
    pub fn new(value: String, source: SecretSource) -> Self {
        Self { value, source }
    }

    /// The secret itself, for the connection only.
    pub fn expose(&self) -> &str {
        &self.value
    }

    /// Where it came from.
    pub fn source(&self) -> &SecretSource {
        &self.source
    }

    /// The contents of `path`; trailing newlines are not part of it.
    pub fn from_file(path: &Path) -> std::io::Result<Self> {
        let text = std::fs::read_to_string(path)?;
        let value = text.trim_end_matches(['\r', '\n']).to_owned();
        Ok(Self::new(value, SecretSource::File(path.to_owned())))
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "<redacted, from {}>", self.source)
    }
}

impl RedisConfig {
    /// A connection to `url` with no further settings (the flags' case).
    pub fn from_url(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            username: None,
            password: None,
            tls: None,
            cluster: false,
            sentinel: None,
        }
    }

    /// Everything needed to connect, TLS files read and checked; connects
    /// nowhere.
    pub fn endpoint(&self) -> Result<RedisEndpoint, ConfigError> {
        RedisEndpoint::new(self)
    }

    /// The URL's connection details, credentials applied. Pure: reads no
    /// file, connects nowhere.
    pub fn connection_info(&self) -> Result<redis::ConnectionInfo, ConfigError> {
        let info = self
            .url
            .as_str()
            .into_connection_info()
            .map_err(|e| ConfigError::Invalid {
                flag: "redis",
                problem: format!("{} is not a Redis URL: {e}", redact_url(&self.url)),
            })?;
        let mut settings = info.redis_settings().clone();
        if let Some(user) = &self.username {
            settings = settings.set_username(user);
        }
        if let Some(password) = &self.password {
            settings = settings.set_password(password.expose());
        }
        Ok(info.set_redis_settings(settings))
    }

    /// The URL with any password replaced by `***`, for logs and printouts.
    pub fn redacted_url(&self) -> String {
        redact_url(&self.url)
    }
}

/// `redis://user:secret@host` → `redis://user:***@host`.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let Some((userinfo, host)) = rest.rsplit_once('@') else {
        return url.to_owned();
    };
    match userinfo.split_once(':') {
        Some((user, _)) => format!("{scheme}://{user}:***@{host}"),
        None => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_never_show() {
        assert_eq!(
            redact_url("redis://app:s3cret@db:6379/2"),
            "redis://app:***@db:6379/2"
        );
        assert_eq!(redact_url("redis://:s3cret@db"), "redis://:***@db");
        assert_eq!(redact_url("redis://db:6379"), "redis://db:6379");
        let secret = Secret::new("s3cret".into(), SecretSource::Env("REDIS_PASSWORD".into()));
        let shown = format!(
            "{:?}",
            RedisConfig {
                password: Some(secret),
                ..RedisConfig::from_url("redis://db")
            }
        );
        assert!(
            !shown.contains("s3cret") && shown.contains("env REDIS_PASSWORD"),
            "{shown}"
        );
    }

    #[test]
    fn credentials_apply_without_connecting() {
        let c = RedisConfig {
            username: Some("app".into()),
            password: Some(Secret::new("pw".into(), SecretSource::File("/x".into()))),
            ..RedisConfig::from_url("redis://127.0.0.1:1")
        };
        let info = c.connection_info().unwrap();
        assert_eq!(info.redis_settings().username(), Some("app"));
        assert_eq!(info.redis_settings().password(), Some("pw"));
        let bad = RedisConfig::from_url("http://nope").connection_info();
        assert!(bad.unwrap_err().to_string().contains("not a Redis URL"));
    }
}
