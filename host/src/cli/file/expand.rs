//! `${VAR}`, `${VAR:-default}` and `$$` inside the file's strings.

use std::ops::Range;

use toml::Spanned;
use toml::de::DeValue;

/// Replaces `${VAR}` and `${VAR:-default}` in every string; `$$` is a `$`.
pub(super) fn expand(
    value: &mut Spanned<DeValue<'_>>,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<(), (Range<usize>, String)> {
    let span = value.span();
    match value.get_mut() {
        DeValue::String(s) if s.contains('$') => {
            *s = expand_str(s, env).map_err(|m| (span, m))?.into();
        }
        DeValue::Array(items) => {
            for item in items.iter_mut() {
                expand(item, env)?;
            }
        }
        DeValue::Table(t) => {
            for (_, v) in t.iter_mut() {
                expand(v, env)?;
            }
        }
        _ => {}
    }
    Ok(())
}

fn expand_str(s: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<String, String> {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        rest = &rest[at..];
        if let Some(r) = rest.strip_prefix("$$") {
            out.push('$');
            rest = r;
        } else if let Some(r) = rest.strip_prefix("${") {
            let end = r
                .find('}')
                .ok_or("unclosed ${ (write $$ for a literal $)")?;
            let (name, default) = match r[..end].split_once(":-") {
                Some((n, d)) => (n, Some(d)),
                None => (&r[..end], None),
            };
            let valid =
                !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
            if !valid {
                // Not quoted: it may be a piece of a secret.
                return Err(
                    "`${…}` must hold an environment variable name (letters, digits, _)".into(),
                );
            }
            match (env(name), default) {
                (Some(v), _) => out.push_str(&v),
                (None, Some(d)) => out.push_str(d),
                (None, None) => {
                    return Err(format!(
                        "environment variable {name} is not set (write ${{{name}:-default}} for a default)"
                    ));
                }
            }
            rest = &r[end + 1..];
        } else {
            out.push('$');
            rest = &rest[1..];
        }
    }
    out.push_str(rest);
    Ok(out)
}
