//! `host produce`: entries from arguments, JSON lines or the demo orders,
//! appended in pipelined batches, optionally at a steady rate.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{ArgGroup, Args, ValueEnum};

use super::output::{print_json, progress};
use super::{Connect, StreamArgs, resolve};
use crate::ops::produce::{Fields, Paced, Route, demo_order, parse_json_line};
use crate::ops::{self, OpsError};
use crate::vocab::ids::now_ms;
use crate::vocab::partition;

/// What to do with a malformed JSON line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OnError {
    /// Stop with exit status 65 (lines before it have been added).
    Fail,
    /// Report it on stderr with its line number and go on.
    Skip,
}

/// Flags of `host produce`.
#[derive(Debug, Args)]
#[command(group(ArgGroup::new("source").required(true).args(["fields", "from_jsonl", "demo_orders"])))]
#[command(
    after_help = "Examples:\n  host produce --stream orders type=order.placed order_id=o-1 amount=49.50\n  \
host produce --stream orders --count 10000 --rate 500 n=1\n  \
host produce --stream orders --from-jsonl events.jsonl --on-error skip\n  \
host produce --stream demo:events:orders --demo-orders 1000 --maxlen 100000\n\n\
Exit status: 0 when everything was added; 64 for bad arguments; 65 for a malformed JSON line \
with --on-error fail; 69 when Redis cannot be reached."
)]
pub struct ProduceArgs {
    /// Connection.
    #[command(flatten)]
    pub connect: Connect,
    /// The stream to append to (`--dlq` is not used).
    #[command(flatten)]
    pub target: StreamArgs,
    /// The entry's fields, in order.
    #[arg(value_name = "FIELD=VALUE", value_parser = super::super::key_value)]
    pub fields: Vec<(String, String)>,
    /// Append the FIELD=VALUE entry this many times.
    #[arg(long, value_name = "N", default_value_t = 1, requires = "fields")]
    pub count: u64,
    /// Read entries from a file of JSON lines (`-`: stdin), one object per line; string values
    /// are taken as they are, other values as JSON text.
    #[arg(long, value_name = "FILE|-")]
    pub from_jsonl: Option<PathBuf>,
    /// What to do with a malformed JSON line.
    #[arg(long, value_enum, default_value_t = OnError::Fail, requires = "from_jsonl")]
    pub on_error: OnError,
    /// Append N order events of the reference guide (order.placed, .paid, .shipped,
    /// .cancelled with order_id, customer, amount, ts_ms).
    #[arg(long, value_name = "N")]
    pub demo_orders: Option<u64>,
    /// A steady rate, in entries per second (`500` or `500/s`) [default: as fast as Redis takes them].
    #[arg(long, value_name = "N/s", value_parser = rate)]
    pub rate: Option<f64>,
    /// Trim the stream to about N entries as it grows (XADD MAXLEN ~ N; this does not
    /// spare entries a group still needs: see `host trim` for that).
    #[arg(long, value_name = "N")]
    pub maxlen: Option<u64>,
    /// Entries per pipelined round trip.
    #[arg(long, value_name = "N", default_value_t = 500)]
    pub batch: usize,
    /// Print the summary as JSON.
    #[arg(long)]
    pub json: bool,
    /// Route each entry by the value of FIELD: partition CRC16(value) mod 16384 mod N (Redis
    /// Cluster's key-slot hash, which every client library can compute). Entries without the
    /// field, or all without this flag, go round-robin.
    #[arg(long, value_name = "FIELD")]
    pub partition_by: Option<String>,
}

fn rate(s: &str) -> Result<f64, String> {
    let n = s.strip_suffix("/s").unwrap_or(s);
    match n.parse::<f64>() {
        Ok(r) if r > 0.0 && r.is_finite() => Ok(r),
        _ => Err(format!("{s:?} is not a rate (e.g. 500 or 500/s)")),
    }
}

/// The paced appender and the progress bar it moves.
struct Sender {
    paced: Paced,
    bar: super::output::Progress,
}

impl Sender {
    async fn push(&mut self, fields: Fields) -> Result<(), OpsError> {
        let appended = self.paced.push(fields).await?;
        self.bar.inc(appended);
        Ok(())
    }

    async fn flush(&mut self) -> Result<(), OpsError> {
        let appended = self.paced.flush().await?;
        self.bar.inc(appended);
        Ok(())
    }
}

pub(super) async fn run(args: ProduceArgs) -> anyhow::Result<ExitCode> {
    let (redis, targets) = resolve(&args.connect, &args.target, false)?;
    let stream = targets[0].stream.clone();
    if args.batch == 0 {
        return Err(super::usage("--batch must be at least 1"));
    }
    let t = &targets[0];
    let route = match (t.partitions, t.only) {
        (None, _) if args.partition_by.is_some() => {
            return Err(super::usage(
                "--partition-by needs --partitions N (or a --config pipeline with `partitions`)",
            ));
        }
        (None, _) => Route::Stream(stream),
        (Some(_), Some(i)) if args.partition_by.is_none() => {
            Route::Stream(partition::stream_key(&stream, i))
        }
        (Some(_), Some(_)) => {
            return Err(super::usage(
                "--partition I and --partition-by FIELD cannot be combined: one sends every entry to partition I, the other routes each by its field",
            ));
        }
        (Some(count), None) => Route::Partitions {
            stream,
            count,
            by: args.partition_by.clone(),
        },
    };
    let nodes = ops::nodes(&redis)?;
    let total = if args.fields.is_empty() {
        args.demo_orders
    } else {
        Some(args.count)
    };
    let mut sender = Sender {
        paced: Paced::new(nodes, route, args.maxlen, args.rate, args.batch),
        bar: progress(total, "producing"),
    };
    let mut failure = None;
    if let Some(path) = &args.from_jsonl {
        failure = from_jsonl(&mut sender, path, args.on_error).await?;
    } else if let Some(n) = args.demo_orders {
        for i in 0..n {
            sender.push(demo_order(i, now_ms())).await?;
        }
    } else {
        let fields: Fields = args
            .fields
            .iter()
            .map(|(k, v)| (k.clone().into_bytes(), v.clone().into_bytes()))
            .collect();
        for _ in 0..args.count {
            sender.push(fields.clone()).await?;
        }
    }
    sender.flush().await?;
    sender.bar.finish();
    let report = sender.paced.finish();
    if args.json {
        print_json(&report)?;
    } else {
        let spread = if report.partitions.is_empty() {
            String::new()
        } else {
            let counts: Vec<String> = report.partitions.iter().map(u64::to_string).collect();
            format!(" over {} partitions ({})", counts.len(), counts.join(" "))
        };
        println!(
            "added {} entries to {}{spread} in {:.2}s ({:.0}/s){}; first id {}, last id {}",
            report.added,
            report.stream,
            report.seconds,
            report.rate,
            if report.skipped > 0 {
                format!(", {} malformed lines skipped", report.skipped)
            } else {
                String::new()
            },
            report.first_id.as_deref().unwrap_or("-"),
            report.last_id.as_deref().unwrap_or("-"),
        );
    }
    match failure {
        Some(e) => Err(e.into()),
        None => Ok(ExitCode::SUCCESS),
    }
}

/// Streams the JSON lines of `path` into `sender`; returns the error that
/// stopped it (`--on-error fail`) after flushing what came before.
async fn from_jsonl(
    sender: &mut Sender,
    path: &std::path::Path,
    on_error: OnError,
) -> anyhow::Result<Option<OpsError>> {
    let input: Box<dyn BufRead> = if path.as_os_str() == "-" {
        Box::new(BufReader::new(std::io::stdin()))
    } else {
        let file = std::fs::File::open(path)
            .map_err(|e| OpsError::Usage(format!("cannot read {}: {e}", path.display())))?;
        Box::new(BufReader::new(file))
    };
    let name = if path.as_os_str() == "-" {
        "stdin".into()
    } else {
        path.display().to_string()
    };
    for (n, line) in input.lines().enumerate() {
        let line = line.map_err(|e| OpsError::Data(format!("{name}: line {}: {e}", n + 1)))?;
        match parse_json_line(&line) {
            Ok(Some(fields)) => sender.push(fields).await?,
            Ok(None) => {}
            Err(e) => {
                let message = format!("{name}: line {}: not a JSON object of fields: {e}", n + 1);
                match on_error {
                    OnError::Fail => {
                        sender.flush().await?;
                        return Ok(Some(OpsError::Data(message)));
                    }
                    OnError::Skip => {
                        sender.bar.println(&format!("skipped {message}"));
                        sender.paced.skipped();
                    }
                }
            }
        }
    }
    Ok(None)
}
