//! What a key's value must be (from its flag's clap definition) and the
//! command-line arguments it stands for.

use std::any::TypeId;

use clap::{Arg, ArgAction};
use toml::Spanned;
use toml::de::DeValue;

use super::Problem;
use crate::vocab::units::ByteSize;

/// What a flag's value must be in the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Switch,
    Integer,
    Size,
    Text,
    List,
    Table,
}

fn kind(arg: &Arg) -> Kind {
    if matches!(arg.get_action(), ArgAction::SetTrue) {
        return Kind::Switch;
    }
    if arg.get_long() == Some("plugin-config") {
        return Kind::Table;
    }
    if matches!(arg.get_action(), ArgAction::Append) {
        return Kind::List;
    }
    let t = arg.get_value_parser().type_id();
    if t == TypeId::of::<u32>() || t == TypeId::of::<u64>() || t == TypeId::of::<usize>() {
        Kind::Integer
    } else if t == TypeId::of::<ByteSize>() {
        Kind::Size
    } else {
        Kind::Text
    }
}

/// Appends the flags `key = value` stands for, refusing a value of the wrong type.
pub(super) fn flag_values(
    arg: &Arg,
    key: &str,
    value: &Spanned<DeValue<'_>>,
    argv: &mut Vec<String>,
) -> Result<(), Problem> {
    let flag = format!("--{key}");
    let wrong = |expected: &str| {
        (
            Some(value.span()),
            format!(
                "`{key}` must be {expected}, not {}",
                type_name(value.get_ref())
            ),
        )
    };
    match (kind(arg), value.get_ref()) {
        (Kind::Switch, DeValue::Boolean(on)) => {
            if *on {
                argv.push(flag);
            }
        }
        (Kind::Switch, _) => return Err(wrong("true or false")),
        (Kind::Integer | Kind::Size, DeValue::Integer(i)) => {
            let n =
                i128::from_str_radix(i.as_str(), i.radix()).map_err(|_| wrong("a whole number"))?;
            argv.extend([flag, n.to_string()]);
        }
        (Kind::Integer, _) => return Err(wrong("a whole number")),
        (Kind::Size | Kind::Text, DeValue::String(s)) => argv.extend([flag, s.to_string()]),
        (Kind::Size, _) => return Err(wrong("a size like \"64MiB\" or a number of bytes")),
        (Kind::Text, _) => return Err(wrong("a string")),
        (Kind::List, DeValue::Array(items)) => {
            for item in items.iter() {
                let DeValue::String(s) = item.get_ref() else {
                    return Err((Some(item.span()), format!("`{key}` must list strings")));
                };
                argv.extend([flag.clone(), s.to_string()]);
            }
        }
        (Kind::List, _) => return Err(wrong("an array of strings")),
        (Kind::Table, DeValue::Table(t)) => {
            for (k, v) in t.iter() {
                let text = match v.get_ref() {
                    DeValue::String(s) => s.to_string(),
                    DeValue::Integer(i) => i.to_string(),
                    DeValue::Float(f) => f.to_string(),
                    DeValue::Boolean(b) => b.to_string(),
                    other => {
                        return Err((
                            Some(v.span()),
                            format!(
                                "plugin-config values are strings, numbers or booleans, not {}",
                                type_name(other)
                            ),
                        ));
                    }
                };
                if k.get_ref().contains('=') || k.get_ref().is_empty() {
                    return Err((
                        Some(k.span()),
                        "plugin-config keys cannot be empty or contain `=`".into(),
                    ));
                }
                argv.extend([flag.clone(), format!("{}={text}", k.get_ref())]);
            }
        }
        (Kind::Table, _) => return Err(wrong("a table ([pipeline.plugin-config])")),
    }
    Ok(())
}

pub(super) fn type_name(v: &DeValue<'_>) -> &'static str {
    match v {
        DeValue::String(_) => "a string",
        DeValue::Integer(_) => "an integer",
        DeValue::Float(_) => "a float",
        DeValue::Boolean(_) => "a boolean",
        DeValue::Datetime(_) => "a date",
        DeValue::Array(_) => "an array",
        DeValue::Table(_) => "a table",
    }
}
