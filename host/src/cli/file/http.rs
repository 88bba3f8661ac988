//! The `[http]` table: where the metrics and health endpoints listen.

use toml::Spanned;
use toml::de::DeValue;

use super::Problem;
use super::values::type_name;
use crate::config::HttpListen;

/// `[http]`: `listen = "HOST:PORT"` (or `"PORT"`, meaning loopback), and
/// `admin = true` to allow the dashboard's actions (`--http-admin`).
pub(super) fn http_listen(
    table: &Spanned<DeValue<'_>>,
) -> Result<(Option<HttpListen>, bool), Problem> {
    let DeValue::Table(t) = table.get_ref() else {
        unreachable!("checked in read")
    };
    let mut listen = None;
    let mut admin = None;
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
            "admin" => match value.get_ref() {
                DeValue::Boolean(b) => admin = Some((*b, key.span())),
                other => {
                    return Err((
                        Some(value.span()),
                        format!("`admin` must be true or false, not {}", type_name(other)),
                    ));
                }
            },
            other => {
                return Err((
                    Some(key.span()),
                    format!("unknown key `{other}` in [http] (listen, admin)"),
                ));
            }
        }
    }
    match admin {
        Some((true, span)) if listen.is_none() => Err((
            Some(span),
            "`admin` needs `listen` (the dashboard is served on the listener)".into(),
        )),
        _ => Ok((listen, admin.is_some_and(|(a, _)| a))),
    }
}
