//! The `[redis]` table: where to connect, as whom, and over TLS.

use std::collections::HashMap;
use std::ops::Range;
use std::path::PathBuf;

use toml::Spanned;
use toml::de::DeValue;

use super::Problem;
use super::values::type_name;
use crate::config::{ConfigError, RedisConfig, Secret, SecretSource, SentinelConfig, TlsConfig};

/// `[redis]`: `url`, `username`, `password-env` or `password-file`, `[redis.tls]`.
pub(super) fn redis_config(
    table: &Spanned<DeValue<'_>>,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<RedisConfig, Problem> {
    let DeValue::Table(t) = table.get_ref() else {
        unreachable!("checked in read")
    };
    let mut redis = RedisConfig::from_url("redis://127.0.0.1:6379");
    let (mut sentinels, mut master) = (None, None);
    // Where each value sits, to point at the one a refusal is about.
    let mut spans: HashMap<&'static str, Range<usize>> = HashMap::new();
    for (key, value) in t.iter() {
        let text = || match value.get_ref() {
            DeValue::String(s) => Ok(s.to_string()),
            other => Err((
                Some(value.span()),
                format!(
                    "`{}` must be a string, not {}",
                    key.get_ref(),
                    type_name(other)
                ),
            )),
        };
        match key.get_ref().as_ref() {
            "url" => {
                redis.url = text()?;
                spans.insert("url", value.span());
            }
            "username" => redis.username = Some(text()?),
            "password-env" => {
                let name = text()?;
                let password = env(&name).ok_or_else(|| {
                    (
                        Some(value.span()),
                        format!("environment variable {name} (the Redis password) is not set"),
                    )
                })?;
                redis.password = Some(Secret::new(password, SecretSource::Env(name)));
            }
            "password-file" => {
                let path = PathBuf::from(text()?);
                let password = Secret::from_file(&path).map_err(|e| {
                    (
                        Some(value.span()),
                        format!(
                            "cannot read the Redis password from {}: {e}",
                            path.display()
                        ),
                    )
                })?;
                redis.password = Some(password);
            }
            "password" => {
                return Err((
                    Some(key.span()),
                    "a password is never written in the config file: use `password-env = \"VAR\"` or `password-file = \"/path\"`".into(),
                ));
            }
            "tls" => redis.tls = Some(tls_config(value, &mut spans)?),
            "sentinels" => {
                let DeValue::Array(items) = value.get_ref() else {
                    return Err((
                        Some(value.span()),
                        "`sentinels` must be a list of \"HOST:PORT\" strings".into(),
                    ));
                };
                let mut nodes = Vec::new();
                for item in items {
                    let DeValue::String(text) = item.get_ref() else {
                        return Err((
                            Some(item.span()),
                            "a sentinel is a \"HOST:PORT\" string".into(),
                        ));
                    };
                    nodes.extend(
                        SentinelConfig::nodes_of(text).map_err(|e| (Some(item.span()), e))?,
                    );
                }
                sentinels = Some((nodes, value.span()));
            }
            "master" => master = Some(text()?),
            "cluster" => {
                redis.cluster = match value.get_ref() {
                    DeValue::Boolean(b) => *b,
                    other => {
                        return Err((
                            Some(value.span()),
                            format!("`cluster` must be true or false, not {}", type_name(other)),
                        ));
                    }
                }
            }
            other => {
                return Err((
                    Some(key.span()),
                    format!(
                        "unknown key `{other}` in [redis] (url, username, password-env, password-file, tls, cluster, sentinels, master)"
                    ),
                ));
            }
        }
    }
    match (sentinels, master) {
        (Some((nodes, _)), Some(master)) => redis.sentinel = Some(SentinelConfig { nodes, master }),
        (None, None) => {}
        (Some((_, span)), None) => {
            return Err((
                Some(span),
                "`sentinels` needs `master`, the name they monitor the master by".into(),
            ));
        }
        (None, Some(_)) => {
            return Err((Some(table.span()), "`master` needs `sentinels`".into()));
        }
    }
    // The TLS files are read here too, so a refusal points at their line.
    if let Err(e) = redis.endpoint() {
        let key = match &e {
            ConfigError::Tls(tls) => tls.key(),
            _ => None,
        };
        let span = key
            .and_then(|k| spans.get(k))
            .or_else(|| spans.get("url"))
            .cloned()
            .unwrap_or_else(|| table.span());
        return Err((Some(span), e.to_string()));
    }
    Ok(redis)
}

fn tls_config(
    table: &Spanned<DeValue<'_>>,
    spans: &mut HashMap<&'static str, Range<usize>>,
) -> Result<TlsConfig, Problem> {
    let DeValue::Table(t) = table.get_ref() else {
        return Err((
            Some(table.span()),
            "`tls` must be a table ([redis.tls])".into(),
        ));
    };
    let mut tls = TlsConfig::default();
    for (key, value) in t.iter() {
        let DeValue::String(s) = value.get_ref() else {
            return Err((
                Some(value.span()),
                format!("`{}` must be a string", key.get_ref()),
            ));
        };
        let name = match key.get_ref().as_ref() {
            "ca" => {
                tls.ca = Some(s.to_string().into());
                "ca"
            }
            "cert" => {
                tls.cert = Some(s.to_string().into());
                "cert"
            }
            "key" => {
                tls.key = Some(s.to_string().into());
                "key"
            }
            "server-name" => {
                tls.server_name = Some(s.to_string());
                "server-name"
            }
            other => {
                return Err((
                    Some(key.span()),
                    format!("unknown key `{other}` in [redis.tls] (ca, cert, key, server-name)"),
                ));
            }
        };
        spans.insert(name, value.span());
    }
    Ok(tls)
}
