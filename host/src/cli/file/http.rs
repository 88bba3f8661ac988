//! The `[http]` table: where the metrics and health endpoints listen.

use toml::Spanned;
use toml::de::DeValue;

use super::Problem;
use super::values::type_name;
use crate::config::HttpListen;

/// `[http]`: `listen = "HOST:PORT"` (or `"PORT"`, meaning loopback).
pub(super) fn http_listen(table: &Spanned<DeValue<'_>>) -> Result<Option<HttpListen>, Problem> {
    let DeValue::Table(t) = table.get_ref() else {
        unreachable!("checked in read")
    };
    let mut listen = None;
    for (key, value) in t.iter() {
        match key.get_ref().as_ref() {
            "listen" => {
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
                let parsed = text
                    .parse::<HttpListen>()
                    .map_err(|e| (Some(value.span()), format!("invalid `listen`: {e}")))?;
                listen = Some(parsed);
            }
            other => {
                return Err((
                    Some(key.span()),
                    format!("unknown key `{other}` in [http] (listen)"),
                ));
            }
        }
    }
    Ok(listen)
}
