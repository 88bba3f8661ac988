//! Where the metrics and health endpoints listen (`--http ADDR`, `[http]
//! listen`): `HOST:PORT`, or a bare `PORT` meaning loopback, so nothing is
//! exposed beyond the machine unless an address says so.

use std::fmt;
use std::str::FromStr;

/// The HTTP listener's address, as given (a host name is resolved at bind).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpListen {
    /// Host name or IP address (IPv6 without brackets).
    pub host: String,
    /// TCP port (0: any free port).
    pub port: u16,
}

impl FromStr for HttpListen {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        let bad_port = |p: &str| format!("{p:?} is not a port number (0-65535)");
        if !s.contains(':') {
            let port = s.parse().map_err(|_| {
                format!(
                    "{s:?} is neither HOST:PORT nor a port number (e.g. 127.0.0.1:9090 or 9090)"
                )
            })?;
            return Ok(Self {
                host: "127.0.0.1".into(),
                port,
            });
        }
        let (host, port) = s
            .rsplit_once(':')
            .ok_or_else(|| format!("{s:?} is not HOST:PORT"))?;
        let port = port.parse().map_err(|_| bad_port(port))?;
        let host = match host.strip_prefix('[') {
            Some(v6) => v6
                .strip_suffix(']')
                .ok_or_else(|| format!("{s:?}: an IPv6 address is written [addr]:port"))?,
            None if host.contains(':') => {
                return Err(format!("{s:?}: write an IPv6 address as [addr]:port"));
            }
            None => host,
        };
        if host.is_empty() {
            return Err(format!(
                "{s:?} has no host (write 0.0.0.0:PORT to listen on every interface)"
            ));
        }
        Ok(Self {
            host: host.to_owned(),
            port,
        })
    }
}

impl fmt::Display for HttpListen {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

/// Whom the listener answers and what the dashboard served on it may do
/// besides showing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Dashboard {
    /// Actions (produce, crash, reclaim, redrive, trim, upload, consumers)
    /// and entry payloads are allowed to requests bearing this token;
    /// `None`: read-only, and payloads are never shown.
    pub admin: Option<HttpAdmin>,
    /// Host names requests may name besides IP addresses, `localhost` and
    /// the listen address (`--http-allowed-host`, `[http] allowed-hosts`),
    /// lowercase, without a trailing dot.
    pub allowed_hosts: Vec<String>,
}

impl Dashboard {
    /// What a reload that reads `new` leaves in force: the admin switch and
    /// the allowed names as `new` says, the token of the running process
    /// while admin stays on (it comes from the environment, which a reload
    /// does not change, or was generated and announced at start).
    pub fn reloaded(&self, new: Self) -> Self {
        let admin = match (&self.admin, new.admin) {
            (Some(running), Some(_)) => Some(running.clone()),
            (_, new) => new,
        };
        Self {
            admin,
            allowed_hosts: new.allowed_hosts,
        }
    }
}

/// A name for `--http-allowed-host` / `allowed-hosts`: a DNS name (letters,
/// digits, `-` and `.`), without port; returned lowercase without a
/// trailing dot, as requests are compared.
pub fn allowed_host(name: &str) -> Result<String, String> {
    let name = name.trim().trim_end_matches('.').to_ascii_lowercase();
    let valid = !name.is_empty()
        && name.len() <= 253
        && name
            .split('.')
            .all(|label| !label.is_empty() && label.len() <= 63)
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.');
    if valid {
        Ok(name)
    } else {
        Err(format!(
            "{name:?} is not a host name (letters, digits, '-' and '.', no port: e.g. dash.example.com)"
        ))
    }
}

/// The dashboard's admin access (`--http-admin`).
#[derive(Clone, PartialEq, Eq)]
pub struct HttpAdmin {
    /// The bearer token every action must carry.
    pub token: String,
    /// Whether the listener logs a link carrying the token at start-up
    /// (the token was generated, so nobody knows it yet).
    pub announce: bool,
}

/// Where the admin token is read from.
pub const TOKEN_ENV: &str = "STREAMHOST_HTTP_TOKEN";

impl HttpAdmin {
    /// The token in [`TOKEN_ENV`], else a new random one to announce.
    pub fn from_env(env: &dyn Fn(&str) -> Option<String>) -> Self {
        match env(TOKEN_ENV)
            .map(|t| t.trim().to_owned())
            .filter(|t| !t.is_empty())
        {
            Some(token) => Self {
                token,
                announce: false,
            },
            None => Self {
                token: rand::random::<[u8; 16]>()
                    .iter()
                    .map(|b| format!("{b:02x}"))
                    .collect(),
                announce: true,
            },
        }
    }
}

impl fmt::Debug for HttpAdmin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpAdmin")
            .field("token", &"***")
            .field("announce", &self.announce)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn listen(s: &str) -> Result<String, String> {
        s.parse::<HttpListen>().map(|l| l.to_string())
    }

    #[test]
    fn allowed_host_names_are_dns_names_compared_in_lowercase() {
        assert_eq!(
            allowed_host("Dash.Example.com."),
            Ok("dash.example.com".into())
        );
        assert_eq!(
            allowed_host(" ops-1.internal "),
            Ok("ops-1.internal".into())
        );
        for bad in ["", ".", "a..b", "host:80", "a b", "*.example.com", "[::1]"] {
            assert!(allowed_host(bad).is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn a_reload_keeps_the_running_token_while_admin_stays_on() {
        let admin = |token: &str| HttpAdmin {
            token: token.into(),
            announce: true,
        };
        let running = Dashboard {
            admin: Some(admin("first")),
            allowed_hosts: vec!["a.example".into()],
        };
        let read = |admin: Option<HttpAdmin>| Dashboard {
            admin,
            allowed_hosts: vec!["b.example".into()],
        };
        let kept = running.reloaded(read(Some(admin("regenerated"))));
        assert_eq!(kept.admin.as_ref().map(|a| a.token.as_str()), Some("first"));
        assert_eq!(kept.allowed_hosts, ["b.example"]);
        let off = running.reloaded(read(None));
        assert_eq!(off.admin, None);
        let on = off.reloaded(read(Some(admin("new"))));
        assert_eq!(on.admin.as_ref().map(|a| a.token.as_str()), Some("new"));
    }

    #[test]
    fn addresses_parse_and_a_bare_port_means_loopback() {
        assert_eq!(listen("9090"), Ok("127.0.0.1:9090".into()));
        assert_eq!(listen("0.0.0.0:80"), Ok("0.0.0.0:80".into()));
        assert_eq!(listen("localhost:0"), Ok("localhost:0".into()));
        assert_eq!(listen("[::1]:9090"), Ok("[::1]:9090".into()));
        for bad in [
            "",
            "http",
            ":9090",
            "::1:9090",
            "host:",
            "host:99999",
            "[::1:9",
            "9090x",
        ] {
            assert!(listen(bad).is_err(), "{bad:?} was accepted");
        }
    }
}
