//! The `[redis]` table: where to connect, as whom, and over TLS.

use std::path::PathBuf;

use toml::Spanned;
use toml::de::DeValue;

use super::Problem;
use super::values::type_name;
use crate::config::{RedisConfig, Secret, SecretSource, TlsConfig};

/// `[redis]`: `url`, `username`, `password-env` or `password-file`, `[redis.tls]`.
pub(super) fn redis_config(
    table: &Spanned<DeValue<'_>>,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<RedisConfig, Problem> {
    let DeValue::Table(t) = table.get_ref() else {
        unreachable!("checked in read")
    };
    let mut redis = RedisConfig::from_url("redis://127.0.0.1:6379");
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
            "url" => redis.url = text()?,
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
                let password = std::fs::read_to_string(&path).map_err(|e| {
                    (
                        Some(value.span()),
                        format!(
                            "cannot read the Redis password from {}: {e}",
                            path.display()
                        ),
                    )
                })?;
                let password = password.trim_end_matches(['\r', '\n']).to_owned();
                redis.password = Some(Secret::new(password, SecretSource::File(path)));
            }
            "password" => {
                return Err((
                    Some(key.span()),
                    "a password is never written in the config file: use `password-env = \"VAR\"` or `password-file = \"/path\"`".into(),
                ));
            }
            "tls" => redis.tls = Some(tls_config(value)?),
            other => {
                return Err((
                    Some(key.span()),
                    format!(
                        "unknown key `{other}` in [redis] (url, username, password-env, password-file, tls)"
                    ),
                ));
            }
        }
    }
    Ok(redis)
}

fn tls_config(table: &Spanned<DeValue<'_>>) -> Result<TlsConfig, Problem> {
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
        match key.get_ref().as_ref() {
            "ca" => tls.ca = Some(s.to_string().into()),
            "cert" => tls.cert = Some(s.to_string().into()),
            "key" => tls.key = Some(s.to_string().into()),
            "server-name" => tls.server_name = Some(s.to_string()),
            other => {
                return Err((
                    Some(key.span()),
                    format!("unknown key `{other}` in [redis.tls] (ca, cert, key, server-name)"),
                ));
            }
        }
    }
    Ok(tls)
}
