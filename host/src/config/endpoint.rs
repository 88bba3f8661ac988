//! Where and how a pipeline connects, resolved once from a [`RedisConfig`]:
//! the redis-rs client every `RedisLink` opens connections with, and what
//! the fast entry reader (`stream::wire`) needs to open its own — address,
//! credentials, and the same TLS trust, identity and server name.

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, ConnectionAddr, RedisConnectionInfo};
use rustls::pki_types::ServerName;

use super::tls::TlsError;
use super::{ConfigError, RedisConfig};

/// The ready-to-use form of a [`RedisConfig`].
#[derive(Clone)]
pub struct RedisEndpoint {
    client: redis::Client,
    address: Address,
    tls: Option<TlsTarget>,
    /// Set when the certificate is checked against a name other than the
    /// URL's host (see [`ConnectTo`]).
    connect_to: Option<ConnectTo>,
    /// `host:port` (or the socket path) of the URL, for logs.
    target: String,
}

/// Where the fast reader opens its socket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Address {
    /// TCP (plain or TLS).
    Tcp {
        /// Host name or IP address, as in the URL.
        host: String,
        /// Port.
        port: u16,
    },
    /// A Unix socket.
    Unix(PathBuf),
}

/// TLS over [`Address::Tcp`]: what to trust and present, and which name the
/// server's certificate must be valid for.
#[derive(Clone)]
pub struct TlsTarget {
    /// Roots and client identity, shared by every connection.
    pub config: Arc<rustls::ClientConfig>,
    /// The URL's host, or the `server-name` override.
    pub server_name: ServerName<'static>,
}

impl fmt::Debug for TlsTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsTarget")
            .field("server_name", &self.server_name)
            .finish_non_exhaustive()
    }
}

impl fmt::Debug for RedisEndpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisEndpoint")
            .field("target", &self.target)
            .field("tls", &self.tls)
            .finish_non_exhaustive()
    }
}

impl RedisEndpoint {
    /// Parses the URL, applies credentials and reads the TLS files. Connects
    /// nowhere, but refuses anything that could not connect as configured.
    pub fn new(config: &RedisConfig) -> Result<Self, ConfigError> {
        Self::build(config, None)
    }

    /// The same connection settings (credentials, TLS trust, identity and
    /// server name) for another node, `host:port` — a node of the cluster
    /// the URL is a seed of.
    pub fn at_node(config: &RedisConfig, host: &str, port: u16) -> Result<Self, ConfigError> {
        Self::build(config, Some((host, port)))
    }

    fn build(config: &RedisConfig, node: Option<(&str, u16)>) -> Result<Self, ConfigError> {
        let mut info = config.connection_info()?;
        if let Some((host, port)) = node {
            let addr = match info.addr().clone() {
                ConnectionAddr::Tcp(..) => ConnectionAddr::Tcp(host.to_owned(), port),
                ConnectionAddr::TcpTls {
                    insecure,
                    tls_params,
                    ..
                } => ConnectionAddr::TcpTls {
                    host: host.to_owned(),
                    port,
                    insecure,
                    tls_params,
                },
                _ => {
                    return Err(ConfigError::Invalid {
                        flag: "redis",
                        problem: format!(
                            "{}: a cluster is reached over TCP, not a Unix socket",
                            config.redacted_url()
                        ),
                    });
                }
            };
            info = info.set_addr(addr);
        }
        let target = info.addr().to_string();
        let plaintext = || TlsError::PlaintextUrl {
            url: config.redacted_url(),
        };
        let (address, tls, connect_to, client) = match info.addr().clone() {
            ConnectionAddr::Tcp(host, port) => {
                if config.tls.is_some() {
                    return Err(plaintext().into());
                }
                let client = redis::Client::open(info).map_err(|e| invalid_url(config, &e))?;
                (Address::Tcp { host, port }, None, None, client)
            }
            ConnectionAddr::Unix(path) => {
                if config.tls.is_some() {
                    return Err(plaintext().into());
                }
                let client = redis::Client::open(info).map_err(|e| invalid_url(config, &e))?;
                (Address::Unix(path), None, None, client)
            }
            ConnectionAddr::TcpTls {
                host,
                port,
                insecure,
                ..
            } => {
                if insecure {
                    return Err(ConfigError::Invalid {
                        flag: "redis",
                        problem: format!(
                            "{}: #insecure (no certificate verification) is not supported; give the CA that signs the server's certificate instead, and the name it is issued for if that is not the URL's host",
                            config.redacted_url()
                        ),
                    });
                }
                let settings = config.tls.clone().unwrap_or_default();
                let material = settings.load()?;
                let name = settings.server_name.clone().unwrap_or_else(|| host.clone());
                let server_name = ServerName::try_from(name.clone())
                    .map_err(|_| TlsError::ServerName { name: name.clone() })?;
                // redis-rs checks the certificate against the host it
                // connects to: with an override, that host is the name, and
                // `ConnectTo` resolves it to the URL's host.
                let connect_to = (name != host).then(|| ConnectTo { host: host.clone() });
                let info = info.set_addr(ConnectionAddr::TcpTls {
                    host: name,
                    port,
                    insecure: false,
                    tls_params: None,
                });
                let client = redis::Client::build_with_tls(info, material.certificates())
                    .map_err(|e| invalid_url(config, &e))?;
                let tls = TlsTarget {
                    config: material.client_config(),
                    server_name,
                };
                (Address::Tcp { host, port }, Some(tls), connect_to, client)
            }
            _ => {
                return Err(ConfigError::Invalid {
                    flag: "redis",
                    problem: format!("{}: unsupported address", config.redacted_url()),
                });
            }
        };
        Ok(Self {
            client,
            address,
            tls,
            connect_to,
            target,
        })
    }

    /// The redis-rs client.
    pub fn client(&self) -> &redis::Client {
        &self.client
    }

    /// Connection options every redis-rs connection to this endpoint needs
    /// (timeouts are the caller's).
    pub fn connection_config(&self) -> AsyncConnectionConfig {
        let config = AsyncConnectionConfig::new();
        match &self.connect_to {
            Some(resolver) => config.set_dns_resolver(resolver.clone()),
            None => config,
        }
    }

    /// A new multiplexed connection that waits at most `connect` to be
    /// established and `response` for each answer (a connection of its own:
    /// nobody else's commands or `WATCH` share it).
    pub async fn connect(
        &self,
        connect: Duration,
        response: Duration,
    ) -> redis::RedisResult<MultiplexedConnection> {
        let config = self
            .connection_config()
            .set_connection_timeout(Some(connect))
            .set_response_timeout(Some(response));
        self.client
            .get_multiplexed_async_connection_with_config(&config)
            .await
    }

    /// Where the fast reader connects.
    pub fn address(&self) -> &Address {
        &self.address
    }

    /// How the fast reader secures its connection (`None`: plaintext).
    pub fn tls(&self) -> Option<&TlsTarget> {
        self.tls.as_ref()
    }

    /// Database, user and password to authenticate with.
    pub fn settings(&self) -> &RedisConnectionInfo {
        self.client.get_connection_info().redis_settings()
    }

    /// `host:port` or the socket path, for logs: never credentials, and the
    /// host from the URL even when the certificate is checked against
    /// another name.
    pub fn target(&self) -> &str {
        &self.target
    }
}

fn invalid_url(config: &RedisConfig, e: &redis::RedisError) -> ConfigError {
    ConfigError::Invalid {
        flag: "redis",
        problem: format!("{} cannot be used: {e}", config.redacted_url()),
    }
}

/// Resolves whatever redis-rs asks for to the URL's host: with a server
/// name override, redis-rs is told the name (which it checks the
/// certificate against and sends as SNI) and must still reach the URL's
/// address.
#[derive(Debug, Clone)]
struct ConnectTo {
    host: String,
}

impl redis::io::AsyncDNSResolver for ConnectTo {
    fn resolve<'a, 'b: 'a>(
        &'a self,
        _name: &'b str,
        port: u16,
    ) -> redis::RedisFuture<'a, Box<dyn Iterator<Item = SocketAddr> + Send + 'a>> {
        Box::pin(async move {
            let addrs: Vec<SocketAddr> = tokio::net::lookup_host((self.host.as_str(), port))
                .await?
                .collect();
            Ok(Box::new(addrs.into_iter()) as Box<dyn Iterator<Item = SocketAddr> + Send>)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::TlsConfig;

    #[test]
    fn plaintext_urls_need_no_tls_and_refuse_tls_settings() {
        let plain = RedisEndpoint::new(&RedisConfig::from_url("redis://127.0.0.1:7000/2")).unwrap();
        assert!(plain.tls().is_none());
        assert_eq!(plain.target(), "127.0.0.1:7000");
        assert_eq!(plain.settings().db(), 2);
        assert_eq!(
            plain.address(),
            &Address::Tcp {
                host: "127.0.0.1".into(),
                port: 7000
            }
        );
        let with_tls = RedisConfig {
            tls: Some(TlsConfig {
                server_name: Some("redis.test".into()),
                ..TlsConfig::default()
            }),
            ..RedisConfig::from_url("redis://app:pw@127.0.0.1:7000")
        };
        let err = RedisEndpoint::new(&with_tls).unwrap_err().to_string();
        assert!(err.contains("need a rediss:// URL"), "{err}");
        assert!(
            err.contains("redis://app:***@127.0.0.1:7000") && !err.contains("pw"),
            "{err}"
        );
    }

    #[test]
    fn certificate_verification_cannot_be_turned_off() {
        let err = RedisEndpoint::new(&RedisConfig::from_url("rediss://127.0.0.1:7000/#insecure"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("#insecure") && err.contains("not supported"),
            "{err}"
        );
    }

    #[test]
    fn a_server_name_override_is_checked_and_kept_apart_from_the_address() {
        let dir = tempfile::tempdir().unwrap();
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca = dir.path().join("ca.pem");
        std::fs::write(&ca, params.self_signed(&ca_key).unwrap().pem()).unwrap();
        let config = |name: &str| RedisConfig {
            tls: Some(TlsConfig {
                ca: Some(ca.clone()),
                server_name: Some(name.into()),
                ..TlsConfig::default()
            }),
            ..RedisConfig::from_url("rediss://127.0.0.1:7000")
        };
        let endpoint = RedisEndpoint::new(&config("redis.test")).unwrap();
        let tls = endpoint.tls().expect("TLS");
        assert_eq!(tls.server_name.to_str(), "redis.test");
        assert_eq!(
            endpoint.address(),
            &Address::Tcp {
                host: "127.0.0.1".into(),
                port: 7000
            }
        );
        assert_eq!(endpoint.target(), "127.0.0.1:7000");
        assert_eq!(
            endpoint.client().get_connection_info().addr().to_string(),
            "redis.test:7000"
        );
        assert!(endpoint.connect_to.is_some());
        let err = RedisEndpoint::new(&config("not a name!")).unwrap_err();
        assert!(err.to_string().contains("\"not a name!\""), "{err}");
    }
}
