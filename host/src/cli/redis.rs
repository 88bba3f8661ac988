//! The Redis connection from flags: `--redis` and the `--redis-*` flags
//! beside it, and a password from `STREAMHOST_REDIS_PASSWORD` — what a
//! config file says in its `[redis]` table.

use std::path::PathBuf;

use clap::Args;

use crate::config::{ConfigError, RedisConfig, Secret, SecretSource, SentinelConfig, TlsConfig};

/// The variable a password can be given in. Not a flag: a flag's value
/// shows in `ps`, a variable's only to the same user.
pub const PASSWORD_ENV: &str = "STREAMHOST_REDIS_PASSWORD";

/// The `--redis*` flags, shared by `host run` and every operator command
/// (each also read from its `STREAMHOST_REDIS*` variable).
#[derive(Debug, Clone, Args)]
pub struct RedisArgs {
    /// Redis URL: `redis://[user:password@]host:port[/db]`, `rediss://…` for TLS, or
    /// `redis+unix:///path/to/socket`. A password here shows in `ps`: prefer
    /// --redis-password-file or STREAMHOST_REDIS_PASSWORD.
    #[arg(
        long,
        env = "STREAMHOST_REDIS",
        default_value = "redis://127.0.0.1:6379",
        value_name = "URL",
        hide_env_values = true,
        help_heading = "Redis connection"
    )]
    pub redis: String,
    /// ACL user to authenticate as (overrides one in the URL).
    #[arg(
        long,
        env = "STREAMHOST_REDIS_USERNAME",
        value_name = "USER",
        help_heading = "Redis connection"
    )]
    pub redis_username: Option<String>,
    /// File holding the Redis password, trailing newlines ignored (overrides one in the URL). The
    /// password can also come from the STREAMHOST_REDIS_PASSWORD variable; either way it never
    /// shows in `ps`.
    #[arg(
        long,
        env = "STREAMHOST_REDIS_PASSWORD_FILE",
        value_name = "FILE",
        help_heading = "Redis connection"
    )]
    pub redis_password_file: Option<PathBuf>,
    /// CA certificate(s) (PEM) the server's certificate must chain to, instead of the system's
    /// roots (`rediss://` only).
    #[arg(
        long,
        env = "STREAMHOST_REDIS_CA",
        value_name = "FILE",
        help_heading = "Redis connection"
    )]
    pub redis_ca: Option<PathBuf>,
    /// Client certificate (PEM, chain allowed) for a server that asks for one (`tls-auth-clients`);
    /// needs --redis-key.
    #[arg(
        long,
        env = "STREAMHOST_REDIS_CERT",
        value_name = "FILE",
        help_heading = "Redis connection"
    )]
    pub redis_cert: Option<PathBuf>,
    /// Private key (PEM) of --redis-cert.
    #[arg(
        long,
        env = "STREAMHOST_REDIS_KEY",
        value_name = "FILE",
        help_heading = "Redis connection"
    )]
    pub redis_key: Option<PathBuf>,
    /// Name the server's certificate must be issued for, when it is not the URL's host (e.g. the
    /// URL has an IP address); the connection still goes to the URL's host.
    #[arg(
        long,
        env = "STREAMHOST_REDIS_SERVER_NAME",
        value_name = "NAME",
        help_heading = "Redis connection"
    )]
    pub redis_server_name: Option<String>,
    /// The URL is a seed node of a Redis Cluster: each partition (`--partitions`) is read and
    /// written on the node holding its slot, following the slot map through resharding and
    /// failover.
    #[arg(
        long,
        env = "STREAMHOST_REDIS_CLUSTER",
        help_heading = "Redis connection"
    )]
    pub cluster: bool,
    /// Find the master through these sentinels (HOST:PORT, comma-separated or repeated), and
    /// follow it through failovers; --redis then gives only credentials, database and TLS.
    #[arg(
        long = "sentinel",
        env = "STREAMHOST_SENTINELS",
        value_name = "HOST:PORT",
        value_delimiter = ',',
        requires = "sentinel_master",
        conflicts_with = "cluster",
        help_heading = "Redis connection"
    )]
    pub sentinels: Vec<String>,
    /// The name the sentinels monitor the master by.
    #[arg(
        long,
        env = "STREAMHOST_SENTINEL_MASTER",
        value_name = "NAME",
        requires = "sentinels",
        help_heading = "Redis connection"
    )]
    pub sentinel_master: Option<String>,
}

impl RedisArgs {
    /// The connection these flags describe, looking variables up with `env`.
    /// Reads the password file; the TLS files are read when the
    /// configuration is validated.
    pub fn redis_config(
        &self,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<RedisConfig, ConfigError> {
        let from_env = env(PASSWORD_ENV).filter(|p| !p.is_empty());
        let password = match (&self.redis_password_file, from_env) {
            (Some(_), Some(_)) => {
                return Err(ConfigError::Conflict {
                    flags: &["redis-password-file"],
                    message: format!(
                        "the Redis password is given twice, by --redis-password-file and by {PASSWORD_ENV}: give it one way"
                    ),
                });
            }
            (Some(path), None) => {
                Some(Secret::from_file(path).map_err(|e| ConfigError::Invalid {
                    flag: "redis-password-file",
                    problem: format!("cannot read {}: {e}", path.display()),
                })?)
            }
            (None, Some(value)) => Some(Secret::new(value, SecretSource::Env(PASSWORD_ENV.into()))),
            (None, None) => None,
        };
        let tls = TlsConfig {
            ca: self.redis_ca.clone(),
            cert: self.redis_cert.clone(),
            key: self.redis_key.clone(),
            server_name: self.redis_server_name.clone(),
        };
        Ok(RedisConfig {
            url: self.redis.clone(),
            username: self.redis_username.clone(),
            password,
            tls: (tls != TlsConfig::default()).then_some(tls),
            cluster: self.cluster,
            sentinel: match &self.sentinel_master {
                None => None,
                Some(master) => Some(SentinelConfig {
                    nodes: SentinelConfig::nodes_of(&self.sentinels.join(",")).map_err(
                        |problem| ConfigError::Invalid {
                            flag: "sentinel",
                            problem,
                        },
                    )?,
                    master: master.clone(),
                }),
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;
    use crate::cli::{Cli, Command};

    fn args(extra: &[&str]) -> RedisArgs {
        let argv = [
            "host", "run", "--stream", "s", "--group", "g", "--plugin", "p",
        ];
        let cli = Cli::try_parse_from(argv.iter().chain(extra)).unwrap();
        match cli.command {
            Command::Run(args) => args.redis,
            other => panic!("parsed as {other:?}"),
        }
    }

    #[test]
    fn tls_and_credentials_from_flags() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("pw");
        std::fs::write(&file, "s3cret\n").unwrap();
        let file_arg = file.display().to_string();
        let a = args(&[
            "--redis",
            "rediss://10.0.0.1:6380",
            "--redis-username",
            "app",
            "--redis-password-file",
            &file_arg,
            "--redis-ca",
            "ca.pem",
            "--redis-server-name",
            "redis.internal",
        ]);
        let c = a.redis_config(&|_| None).unwrap();
        assert_eq!(c.username.as_deref(), Some("app"));
        let password = c.password.as_ref().unwrap();
        assert_eq!(password.expose(), "s3cret", "the newline is not part of it");
        assert_eq!(password.source(), &SecretSource::File(file.clone()));
        let tls = c.tls.unwrap();
        assert_eq!(tls.ca.as_deref(), Some(std::path::Path::new("ca.pem")));
        assert_eq!(tls.server_name.as_deref(), Some("redis.internal"));
        assert_eq!(tls.cert, None);

        let plain = args(&[]).redis_config(&|_| None).unwrap();
        assert_eq!(plain, RedisConfig::from_url("redis://127.0.0.1:6379"));
    }

    #[test]
    fn the_password_comes_one_way() {
        let env = |name: &str| (name == PASSWORD_ENV).then(|| "from-env".to_owned());
        let c = args(&[]).redis_config(&env).unwrap();
        let password = c.password.unwrap();
        assert_eq!(password.expose(), "from-env");
        assert_eq!(password.source(), &SecretSource::Env(PASSWORD_ENV.into()));
        let both = args(&["--redis-password-file", "/nonexistent"])
            .redis_config(&env)
            .unwrap_err()
            .to_string();
        assert!(both.contains("given twice"), "{both}");
        let missing = args(&["--redis-password-file", "/nonexistent/pw"])
            .redis_config(&|_| None)
            .unwrap_err()
            .to_string();
        assert!(
            missing.starts_with("--redis-password-file cannot read /nonexistent/pw"),
            "{missing}"
        );
    }
}
