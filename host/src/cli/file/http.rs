//! The `[http]` table: where the metrics and health endpoints listen, whom
//! they answer and whether the dashboard may act.

use toml::Spanned;
use toml::de::DeValue;

use super::Problem;
use super::values::type_name;
use crate::config::{HttpListen, allowed_host};

/// What an `[http]` table says.
#[derive(Debug, Default)]
pub(super) struct HttpTable {
    /// `listen = "HOST:PORT"` (or `"PORT"`, meaning loopback).
    pub listen: Option<HttpListen>,
    /// `admin = true` allows the dashboard's actions (`--http-admin`).
    pub admin: bool,
    /// `allowed-hosts = ["NAME", …]` (`--http-allowed-host`).
    pub allowed_hosts: Vec<String>,
}

/// Reads `[http]`; `admin` and `allowed-hosts` need `listen`.
pub(super) fn http_table(table: &Spanned<DeValue<'_>>) -> Result<HttpTable, Problem> {
    let DeValue::Table(t) = table.get_ref() else {
        unreachable!("checked in read")
    };
    let mut http = HttpTable::default();
    let mut needs_listen = None;
    for (key, value) in t.iter() {
        match key.get_ref().as_ref() {
            "listen" => http.listen = Some(listen(value)?),
            "admin" => match value.get_ref() {
                DeValue::Boolean(b) => {
                    http.admin = *b;
                    if *b {
                        needs_listen = needs_listen.or(Some(("admin", key.span())));
                    }
                }
                other => {
                    return Err((
                        Some(value.span()),
                        format!("`admin` must be true or false, not {}", type_name(other)),
                    ));
                }
            },
            "allowed-hosts" => {
                http.allowed_hosts = allowed_hosts(value)?;
                needs_listen = needs_listen.or(Some(("allowed-hosts", key.span())));
            }
            other => {
                return Err((
                    Some(key.span()),
                    format!("unknown key `{other}` in [http] (listen, admin, allowed-hosts)"),
                ));
            }
        }
    }
    match needs_listen {
        Some((key, span)) if http.listen.is_none() => Err((
            Some(span),
            format!("`{key}` needs `listen` (the dashboard is served on the listener)"),
        )),
        _ => Ok(http),
    }
}

fn listen(value: &Spanned<DeValue<'_>>) -> Result<HttpListen, Problem> {
    let text = match value.get_ref() {
        DeValue::String(s) => s.to_string(),
        // A bare port number is a port, as on the command line.
        DeValue::Integer(i) => i128::from_str_radix(i.as_str(), i.radix())
            .map(|n| n.to_string())
            .unwrap_or_default(),
        other => {
            return Err((
                Some(value.span()),
                format!("`listen` must be a string, not {}", type_name(other)),
            ));
        }
    };
    text.parse::<HttpListen>()
        .map_err(|e| (Some(value.span()), format!("invalid `listen`: {e}")))
}

fn allowed_hosts(value: &Spanned<DeValue<'_>>) -> Result<Vec<String>, Problem> {
    let DeValue::Array(items) = value.get_ref() else {
        return Err((
            Some(value.span()),
            format!(
                "`allowed-hosts` must be an array of host names, not {}",
                type_name(value.get_ref())
            ),
        ));
    };
    items
        .iter()
        .map(|item| match item.get_ref() {
            DeValue::String(s) => allowed_host(s)
                .map_err(|e| (Some(item.span()), format!("invalid `allowed-hosts`: {e}"))),
            other => Err((
                Some(item.span()),
                format!(
                    "`allowed-hosts` holds host names (strings), not {}",
                    type_name(other)
                ),
            )),
        })
        .collect()
}
