//! The config file (`host run --config FILE`): `[redis]`, `[http]`, `[defaults]` and
//! `[[pipeline]]` tables whose keys are `host run`'s flag names. Each
//! pipeline (its keys over `[defaults]`) is turned into the flags it stands
//! for and parsed by the same clap definitions, so keys, value syntax and
//! defaults can never drift from the flags'. Every refusal names the file,
//! line and column. `${VAR}` (or `${VAR:-default}`) in a string is replaced
//! by the environment variable.

use std::collections::HashMap;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;

mod expand;
mod http;
mod redact;
mod redis;
mod values;

use clap::error::{ContextKind, ContextValue};
use clap::{Arg, CommandFactory, FromArgMatches};
use toml::Spanned;
use toml::de::{DeTable, DeValue};

use self::expand::expand;
use self::http::http_table;
use self::redact::Secrets;
use self::redis::redis_config;
use self::values::flag_values;
use super::{Cli, RunArgs};
use crate::config::{Config, HttpAdmin, Loader, RedisConfig, Source};

/// A config file that cannot be used, located in the file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}:{line}:{column}: {message}{snippet}", path.display())]
pub struct FileError {
    /// The file.
    pub path: PathBuf,
    /// 1-based line.
    pub line: usize,
    /// 1-based column (characters).
    pub column: usize,
    /// What is wrong.
    pub message: String,
    /// The offending line with a marker under the problem.
    snippet: String,
}

/// Reads and validates `path`.
pub fn load(path: &Path) -> Result<Config, FileError> {
    let text = std::fs::read_to_string(path).map_err(|e| FileError {
        path: path.to_owned(),
        line: 1,
        column: 1,
        message: format!("cannot read the config file: {e}"),
        snippet: String::new(),
    })?;
    parse(path, &text, &|name| std::env::var(name).ok())
}

/// Parses and validates `text` (read from `path`), looking variables up with `env`.
pub fn parse(
    path: &Path,
    text: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Config, FileError> {
    let at = |secrets: &Secrets, span: Option<Range<usize>>, message: String| {
        locate(path, text, secrets, span, message)
    };
    let mut secrets = Secrets::of_urls(text);
    let doc = match DeTable::parse(text) {
        Ok(doc) => doc,
        Err(e) => {
            secrets.add_lines(text);
            return Err(at(&secrets, e.span(), e.message().to_owned()));
        }
    };
    let mut root = doc.into_inner();
    secrets.add_tree(&root);
    for (_, value) in root.iter_mut() {
        expand(value, env).map_err(|(span, m)| at(&secrets, Some(span), m))?;
    }
    // Expanded values may carry secrets from the environment.
    secrets.add_tree(&root);
    File::read(&root)
        .and_then(|file| file.into_config(path, env))
        .map_err(|(span, m)| at(&secrets, span, m))
}

type Problem = (Option<Range<usize>>, String);

/// The tables of a parsed file, with the spans errors point at.
struct File<'a> {
    redis: Option<&'a Spanned<DeValue<'a>>>,
    http: Option<&'a Spanned<DeValue<'a>>>,
    defaults: Option<&'a DeTable<'a>>,
    pipelines: Vec<&'a Spanned<DeValue<'a>>>,
}

impl<'a> File<'a> {
    fn read(root: &'a DeTable<'a>) -> Result<Self, Problem> {
        let mut file = File {
            redis: None,
            http: None,
            defaults: None,
            pipelines: Vec::new(),
        };
        for (key, value) in root.iter() {
            match (key.get_ref().as_ref(), value.get_ref()) {
                ("redis", DeValue::Table(_)) => file.redis = Some(value),
                ("http", DeValue::Table(_)) => file.http = Some(value),
                ("defaults", DeValue::Table(t)) => {
                    if let Some((k, _)) = t.iter().find(|(k, _)| k.get_ref() == "name") {
                        return Err((
                            Some(k.span()),
                            "`name` cannot be a default: each pipeline has its own".into(),
                        ));
                    }
                    file.defaults = Some(t);
                }
                ("pipeline", DeValue::Array(items)) => {
                    for item in items.iter() {
                        if !matches!(item.get_ref(), DeValue::Table(_)) {
                            return Err((
                                Some(item.span()),
                                "write each pipeline as a [[pipeline]] table".into(),
                            ));
                        }
                        file.pipelines.push(item);
                    }
                }
                ("redis" | "http" | "defaults", _) => {
                    return Err((
                        Some(value.span()),
                        format!("`{}` must be a table", key.get_ref()),
                    ));
                }
                ("pipeline", _) => {
                    return Err((
                        Some(key.span()),
                        "write each pipeline as a [[pipeline]] table (double brackets)".into(),
                    ));
                }
                (other, _) => {
                    return Err((
                        Some(key.span()),
                        format!(
                            "unknown key `{other}` (a config file has [redis], [http], [defaults] and [[pipeline]] tables)"
                        ),
                    ));
                }
            }
        }
        if file.pipelines.is_empty() {
            return Err((
                None,
                "no pipeline is declared: add a [[pipeline]] table".into(),
            ));
        }
        Ok(file)
    }

    fn into_config(
        self,
        path: &Path,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Config, Problem> {
        let reload: Arc<Loader> = Arc::new(|p: &Path| load(p).map_err(|e| e.one_line()));
        let redis = match self.redis {
            Some(table) => redis_config(table, env)?,
            None => RedisConfig::from_url("redis://127.0.0.1:6379"),
        };
        let http = match self.http {
            Some(table) => http_table(table)?,
            None => Default::default(),
        };
        let command = run_command();
        let mut pipelines = Vec::new();
        let mut keys = Vec::new();
        for item in &self.pipelines {
            let DeValue::Table(table) = item.get_ref() else {
                unreachable!("checked in read")
            };
            let merged = merge(self.defaults, table);
            let args = run_args(&command, &merged, item.span())?;
            let config = args
                .into_config(redis.clone(), Vec::new())
                .map_err(|e| (Some(item.span()), e.to_string()))?;
            pipelines.push(config);
            keys.push(merged);
        }
        let config = Config {
            pipelines,
            source: Some(Source::new(path.to_owned(), reload)),
            http: http.listen,
            dashboard: crate::config::Dashboard {
                admin: http.admin.then(|| HttpAdmin::from_env(env)),
                allowed_hosts: http.allowed_hosts,
            },
        };
        config.validate().map_err(|e| {
            let flags = e.error.flags();
            let in_file = |key: &&str| keys[e.index].get(*key).map(|(_, v)| v.span());
            let span = flags
                .iter()
                .find_map(in_file)
                .or_else(|| {
                    flags
                        .contains(&"redis")
                        .then(|| self.redis.map(|r| r.span()))
                        .flatten()
                })
                .unwrap_or_else(|| self.pipelines[e.index].span());
            (Some(span), e.to_string())
        })?;
        Ok(config)
    }
}

/// A pipeline's keys over the defaults' (`plugin-config` tables merge key by key).
fn merge<'a>(
    defaults: Option<&'a DeTable<'a>>,
    pipeline: &'a DeTable<'a>,
) -> HashMap<String, (Range<usize>, &'a Spanned<DeValue<'a>>)> {
    let mut merged = HashMap::new();
    for table in defaults.into_iter().chain([pipeline]) {
        for (k, v) in table.iter() {
            merged.insert(k.get_ref().to_string(), (k.span(), v));
        }
    }
    merged
}

/// `host run`'s flags, reading no environment variables: a file says it all.
pub(crate) fn run_command() -> clap::Command {
    Cli::command()
        .find_subcommand("run")
        .expect("run is a subcommand")
        .clone()
        .mut_args(|a| a.env(None))
}

/// Keys the file handles itself or that make no sense inside a pipeline.
fn reserved(key: &str) -> Option<&'static str> {
    match key {
        "redis" | "cluster" | "sentinel" | "sentinel-master" => {
            Some("the connection is set in the [redis] table")
        }
        k if k.starts_with("redis-") => Some("the connection is set in the [redis] table"),
        "http" => Some("the listener is set in the [http] table (`listen`)"),
        "http-admin" => {
            Some("the dashboard's actions are allowed in the [http] table (`admin = true`)")
        }
        "http-allowed-host" => {
            Some("the names the listener answers to are set in the [http] table (`allowed-hosts`)")
        }
        "config" | "check" => Some("only a command-line flag"),
        _ => None,
    }
}

/// The flags one pipeline's keys stand for, parsed by clap.
fn run_args(
    command: &clap::Command,
    keys: &HashMap<String, (Range<usize>, &Spanned<DeValue<'_>>)>,
    table: Range<usize>,
) -> Result<RunArgs, Problem> {
    let mut argv = vec!["run".to_owned()];
    let mut sorted: Vec<_> = keys.iter().collect();
    sorted.sort_by_key(|(_, (span, _))| span.start);
    for (key, (key_span, value)) in &sorted {
        if let Some(why) = reserved(key) {
            return Err((
                Some(key_span.clone()),
                format!("`{key}` cannot be set here: {why}"),
            ));
        }
        let arg = command
            .get_arguments()
            .find(|a| a.get_long() == Some(key.as_str()) && !a.is_hide_set())
            .ok_or_else(|| (Some(key_span.clone()), unknown_key(command, key)))?;
        flag_values(arg, key, value, &mut argv)?;
    }
    for required in ["stream", "group", "plugin"] {
        if !keys.contains_key(required) {
            return Err((
                Some(table.clone()),
                format!("this pipeline has no `{required}` (set it here or in [defaults])"),
            ));
        }
    }
    let matches = command.clone().try_get_matches_from(&argv).map_err(|e| {
        let key = match e.get(ContextKind::InvalidArg) {
            Some(ContextValue::String(s)) => s
                .trim_start_matches("--")
                .split([' ', '='])
                .next()
                .unwrap_or_default()
                .to_owned(),
            _ => String::new(),
        };
        let why = std::error::Error::source(&e)
            .map(|s| s.to_string())
            .unwrap_or_else(|| e.kind().to_string());
        let span = keys
            .get(&key)
            .map(|(_, v)| v.span())
            .unwrap_or(table.clone());
        (Some(span), format!("invalid value for `{key}`: {why}"))
    })?;
    RunArgs::from_arg_matches(&matches).map_err(|e| (Some(table), e.to_string()))
}

fn unknown_key(command: &clap::Command, key: &str) -> String {
    let close: Vec<_> = command
        .get_arguments()
        .filter_map(Arg::get_long)
        .filter(|l| reserved(l).is_none() && similar(l, key))
        .collect();
    match close.first() {
        Some(c) => format!("unknown key `{key}` (did you mean `{c}`?)"),
        None => {
            format!("unknown key `{key}` (keys are `host run` flag names: see `host run --help`)")
        }
    }
}

/// At most a few typos apart (edit distance), for "did you mean".
fn similar(a: &str, b: &str) -> bool {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let next = (diagonal + usize::from(ca != *cb))
                .min(row[j] + 1)
                .min(row[j + 1] + 1);
            diagonal = row[j + 1];
            row[j + 1] = next;
        }
    }
    row[b.len()] <= 3
}

/// An error at `span` of `text`, with line, column and the line shown,
/// `secrets` masked in the line and the message.
fn locate(
    path: &Path,
    text: &str,
    secrets: &Secrets,
    span: Option<Range<usize>>,
    message: String,
) -> FileError {
    let start = span.as_ref().map_or(0, |s| s.start.min(text.len()));
    let line_start = text[..start].rfind('\n').map_or(0, |i| i + 1);
    let line_end = text[start..].find('\n').map_or(text.len(), |i| start + i);
    let line = text[..start].matches('\n').count() + 1;
    let column = text[line_start..start].chars().count() + 1;
    let snippet = match &span {
        Some(s) => {
            let shown = secrets.line(text, line_start..line_end, start..s.end);
            let gutter = line.to_string().len();
            format!(
                "\n{:gutter$} |\n{line} | {}\n{:gutter$} | {}{}",
                "",
                shown.text,
                "",
                " ".repeat(shown.column),
                "^".repeat(shown.width)
            )
        }
        None => String::new(),
    };
    FileError {
        path: path.to_owned(),
        line,
        column,
        message: secrets.scrub(&message),
        snippet,
    }
}

impl FileError {
    /// The message without the snippet, for one-line logs.
    pub fn one_line(&self) -> String {
        format!(
            "{}:{}:{}: {}",
            self.path.display(),
            self.line,
            self.column,
            self.message
        )
    }
}

#[cfg(test)]
mod tests;
