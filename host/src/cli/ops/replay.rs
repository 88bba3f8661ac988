//! `host replay`: print a window of a stream, or judge it with a handler.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::Args;

use super::output::{print_json, progress, table};
use super::{Connect, StreamArgs, resolve};
use crate::ops::dlq::show_bytes;
use crate::ops::replay::{self, HandlerVerdict, ReplayRow, ReplayTotals};
use crate::ops::{self, OpsError, parse_position, require_stream};
use crate::stream::cluster::Nodes;
use crate::stream::inspect;
use crate::vocab::ids::id_parts;

/// Flags of `host replay`.
#[derive(Debug, Args)]
#[command(
    after_help = "Replay reads with XRANGE: no group is read through, nothing is acked, \
dead-lettered or (without --emit) emitted. With --plugin each entry is handled as a first delivery \
(delivery-count 1) by one warm instance, under the same entry limits as `host run`.\n\n\
Exit status: 0 when the window was replayed; 64 for bad arguments (a stream that does not exist, \
a bad id); 65 for a plugin that cannot be loaded; 69 when Redis cannot be reached."
)]
pub struct ReplayArgs {
    /// Connection.
    #[command(flatten)]
    pub connect: Connect,
    /// The stream (and its DLQ, which a handler may not emit to).
    #[command(flatten)]
    pub target: StreamArgs,
    /// First entry: an id, a time (RFC 3339) or a duration ago (e.g. 1h) [default: the oldest].
    #[arg(long, value_name = "ID|TIME")]
    pub from: Option<String>,
    /// Last entry: an id, a time or a duration ago [default: the newest].
    #[arg(long, value_name = "ID|TIME")]
    pub to: Option<String>,
    /// At most N entries.
    #[arg(long, value_name = "N", default_value_t = 100)]
    pub count: usize,
    /// Run this handler component over the window and report what each entry would become.
    #[arg(long, value_name = "PATH", help_heading = "Handler")]
    pub plugin: Option<PathBuf>,
    /// A value the plugin reads with `config(KEY)`; repeatable.
    #[arg(long = "plugin-config", value_name = "KEY=VALUE", value_parser = super::super::key_value, help_heading = "Handler")]
    pub plugin_config: Vec<(String, String)>,
    /// Streams the handler may emit to (as `run --emit-allow`); repeatable.
    #[arg(long = "emit-allow", value_name = "PATTERN", help_heading = "Handler")]
    pub emit_allow: Vec<String>,
    /// Deadline of one handler call.
    #[arg(long, default_value = "5s", value_parser = super::super::duration, help_heading = "Handler")]
    pub handler_timeout: Duration,
    /// Directory for compiled plugins (as `run`) [default: $XDG_CACHE_HOME/streamhost or ~/.cache/streamhost].
    #[arg(
        long,
        env = "STREAMHOST_CACHE_DIR",
        value_name = "DIR",
        help_heading = "Handler"
    )]
    pub cache_dir: Option<PathBuf>,
    /// Append what the handler emits for the entries it would ack (nothing is acked or
    /// dead-lettered either way).
    #[arg(long, requires = "plugin", help_heading = "Handler")]
    pub emit: bool,
    /// Print JSON: `{"entries": [...], "totals": {...}}`.
    #[arg(long)]
    pub json: bool,
}

pub(super) async fn run(args: ReplayArgs) -> anyhow::Result<ExitCode> {
    let (redis, targets) = resolve(&args.connect, &args.target, false)?;
    let t = &targets[0];
    let from = args
        .from
        .as_deref()
        .map(parse_position)
        .transpose()?
        .unwrap_or_else(|| "-".into());
    let to = args
        .to
        .as_deref()
        .map(parse_position)
        .transpose()?
        .unwrap_or_else(|| "+".into());
    let mut nodes = ops::nodes(&redis)?;
    let entries = window(&mut nodes, t, &from, &to, args.count).await?;
    let rows = match &args.plugin {
        None => replay::rows(&entries),
        Some(path) => judge(&args, path, t, &entries)?,
    };
    let mut totals = ReplayTotals::of(&rows);
    if args.emit {
        replay::append_emits(&mut nodes, &rows, &mut totals).await?;
    }
    if args.json {
        print_json(&serde_json::json!({ "entries": rows, "totals": totals }))?;
        return Ok(ExitCode::SUCCESS);
    }
    print_rows(&rows);
    if args.plugin.is_some() {
        println!(
            "replayed {} entries: {} ack, {} retry, {} dead-letter; {} emits {}",
            totals.entries,
            totals.ack,
            totals.retry,
            totals.dead_letter,
            totals.emits,
            if args.emit {
                format!("({} appended)", totals.emitted)
            } else {
                "(nothing written)".into()
            }
        );
    } else {
        println!("{} entries", rows.len());
    }
    Ok(ExitCode::SUCCESS)
}

/// The window `from`..=`to` of the stream, at most `count` entries; of a
/// partitioned stream, the first `count` by id over its partitions (each
/// read up to `count`, so memory stays bounded by partitions × count).
async fn window(
    nodes: &mut Nodes,
    t: &super::Target,
    from: &str,
    to: &str,
    count: usize,
) -> anyhow::Result<Vec<replay::Sourced>> {
    let parts = t.parts();
    let mut entries = Vec::new();
    let mut found = false;
    for part in &parts {
        let mut con = nodes.of(&part.stream).await?;
        if part.index.is_none() || t.only.is_some() {
            require_stream(&mut con, &part.stream).await?;
        } else if inspect::key_type(&mut con, &part.stream).await? == "none" {
            continue;
        }
        found = true;
        let read = inspect::range(&mut con, &part.stream, from, to, count)
            .await
            .map_err(OpsError::from)?;
        let key = part.index.map(|_| part.stream.clone());
        entries.extend(read.into_iter().map(|e| (key.clone(), e)));
    }
    if !found {
        return Err(OpsError::Usage(format!("no partition of {} exists", t.label())).into());
    }
    if parts.len() > 1 {
        entries.sort_by_key(|(_, (id, _))| id_parts(id));
        entries.truncate(count);
    }
    Ok(entries)
}

fn judge(
    args: &ReplayArgs,
    path: &Path,
    t: &super::Target,
    entries: &[replay::Sourced],
) -> anyhow::Result<Vec<ReplayRow>> {
    let handler = replay::Handler {
        path: path.to_owned(),
        config: args.plugin_config.iter().cloned().collect(),
        emit_allow: args.emit_allow.clone(),
        timeout: args.handler_timeout,
        cache_dir: args
            .cache_dir
            .clone()
            .or_else(crate::plugin::default_cache_dir),
    };
    // A partitioned stream's handler is loaded as its first partition's
    // pipeline would load it; each entry is handled as from its partition.
    let first = t.parts().into_iter().next().expect("a stream has a part");
    let (plugin, admission) = handler.load(&first.stream, &first.dlq)?;
    let bar = progress(Some(entries.len() as u64), "replaying");
    let tick = || bar.inc(1);
    let rows = std::thread::scope(|s| {
        s.spawn(|| replay::judge(plugin, admission, &t.stream, entries, &tick))
            .join()
            .map_err(|_| OpsError::Data("the handler thread panicked".into()))
    })??;
    bar.finish();
    Ok(rows)
}

fn print_rows(rows: &[ReplayRow]) {
    let fields = |r: &ReplayRow| {
        r.fields
            .iter()
            .map(|f| format!("{}={}", f.name, f.value))
            .collect::<Vec<_>>()
            .join(" ")
    };
    // A partitioned stream's rows say which partition each is from.
    let sourced = rows.iter().any(|r| r.stream.is_some());
    let lead = |r: &ReplayRow| -> Vec<String> {
        match sourced {
            true => vec![r.stream.clone().unwrap_or_default(), r.id.clone()],
            false => vec![r.id.clone()],
        }
    };
    let head = |rest: &[&'static str]| -> Vec<&'static str> {
        let mut h = if sourced {
            vec!["PARTITION", "ID"]
        } else {
            vec!["ID"]
        };
        h.extend_from_slice(rest);
        h
    };
    if rows.iter().all(|r| r.verdict.is_none()) {
        let body = rows
            .iter()
            .map(|r| [lead(r), vec![fields(r)]].concat())
            .collect();
        println!("{}", table(&head(&["FIELDS"]), body));
        return;
    }
    let body = rows
        .iter()
        .map(|r| {
            let (outcome, detail) = match &r.verdict {
                Some(HandlerVerdict::Ack { emits }) => (
                    "ack".to_owned(),
                    emits
                        .iter()
                        .map(|e| format!("emit -> {} ({} fields)", e.stream, e.fields.len()))
                        .collect::<Vec<_>>()
                        .join("; "),
                ),
                Some(HandlerVerdict::Retry { reason }) => {
                    ("retry".to_owned(), show_bytes(reason.as_bytes()))
                }
                Some(HandlerVerdict::DeadLetter { kind, reason }) => {
                    (format!("dlq {kind}"), show_bytes(reason.as_bytes()))
                }
                None => (String::new(), String::new()),
            };
            [lead(r), vec![outcome, detail]].concat()
        })
        .collect();
    println!("{}", table(&head(&["WOULD", "DETAIL"]), body));
}
