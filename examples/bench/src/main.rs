//! Throughput of `host run` against a native Rust consumer loop, side by side
//! on one Redis: pre-fill N entries (5 fields, ~100 bytes, like the orders
//! demo), then time (a) a plain XREADGROUP COUNT 500 + pipelined XACK loop and
//! (b) the real `host` binary with a plugin, each on its own consumer group.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::Parser;
use redis::Value;
use redis::aio::MultiplexedConnection;

/// Compare `host run` with a native consumer loop.
#[derive(Debug, Parser)]
struct Args {
    /// Redis to use; by default a private redis-server is started on a free port.
    #[arg(long)]
    redis: Option<String>,
    /// Entries to pre-fill.
    #[arg(long, default_value_t = 200_000)]
    entries: usize,
    /// Plugin(s) to run under the host; repeatable.
    #[arg(long = "plugin")]
    plugins: Vec<PathBuf>,
    /// Extra flags passed to `host run` (e.g. `--concurrency=2`).
    #[arg(long = "host-arg", allow_hyphen_values = true)]
    host_args: Vec<String>,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<()> {
    let args = Args::parse();
    let root = workspace_root()?;
    let plugins = if args.plugins.is_empty() {
        vec![root.join("target/plugins/wasm32-wasip2/plugin/noop.wasm")]
    } else {
        args.plugins.clone()
    };
    let host_bin = std::env::current_exe()?.with_file_name("host");
    if !host_bin.exists() {
        bail!(
            "{} not found: build it with `cargo build --release -p streamhost`",
            host_bin.display()
        );
    }
    let mut server = None;
    let url = match &args.redis {
        Some(url) => url.clone(),
        None => {
            let (child, url, dir) = start_redis()?;
            server = Some((child, dir));
            url
        }
    };
    let client = redis::Client::open(url.as_str())?;
    let mut con = client.get_multiplexed_async_connection().await?;
    let stream = "bench:orders";
    let _: () = redis::cmd("DEL").arg(stream).query_async(&mut con).await?;
    prefill(&mut con, stream, args.entries).await?;
    println!("pre-filled {} entries into {stream} at {url}", args.entries);

    let native = native_loop(&mut con, stream, "bench-native").await?;
    println!("native XREADGROUP/XACK loop : {:>9.0} entries/s", native);
    for (i, plugin) in plugins.iter().enumerate() {
        let group = format!("bench-host-{i}");
        let rate = host_run(
            &host_bin,
            &url,
            stream,
            &group,
            plugin,
            &args.host_args,
            args.entries,
            &mut con,
        )
        .await?;
        let name = plugin.file_name().unwrap_or_default().to_string_lossy();
        println!(
            "host run ({name:<14})     : {rate:>9.0} entries/s  ({:.2}x native)",
            rate / native
        );
    }
    if let Some((mut child, _dir)) = server {
        let _ = child.kill();
        let _ = child.wait();
    }
    Ok(())
}

fn workspace_root() -> Result<PathBuf> {
    let mut dir = std::env::current_exe()?;
    while dir.pop() {
        if dir.join("Cargo.toml").exists() && dir.join("host").is_dir() {
            return Ok(dir);
        }
    }
    std::env::current_dir().context("current dir")
}

fn start_redis() -> Result<(Child, String, tempfile::TempDir)> {
    let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let dir = tempfile::tempdir()?;
    let child = Command::new("redis-server")
        .args([
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ])
        .arg("--dir")
        .arg(dir.path())
        .stdout(Stdio::null())
        .spawn()
        .context("starting redis-server")?;
    let url = format!("redis://127.0.0.1:{port}");
    for _ in 0..200 {
        if redis::Client::open(url.as_str())?.get_connection().is_ok() {
            return Ok((child, url, dir));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    bail!("redis-server did not come up on port {port}")
}

async fn prefill(con: &mut MultiplexedConnection, stream: &str, n: usize) -> Result<()> {
    let kinds = [
        "order.placed",
        "order.paid",
        "order.shipped",
        "order.cancelled",
    ];
    for chunk in (0..n).collect::<Vec<_>>().chunks(1000) {
        let mut pipe = redis::pipe();
        for &i in chunk {
            pipe.cmd("XADD")
                .arg(stream)
                .arg("*")
                .arg("type")
                .arg(kinds[i % 4])
                .arg("order_id")
                .arg(format!("o-{i:08}"))
                .arg("customer")
                .arg("customer-0042")
                .arg("amount")
                .arg("1234.50")
                .arg("ts_ms")
                .arg("1716998413541")
                .ignore();
        }
        let _: () = pipe.query_async(con).await?;
    }
    Ok(())
}

/// The fastest plain consumer: COUNT 500, the XACK of one batch pipelined with
/// the next read, entries decoded into owned field lists (a no-op handler).
async fn native_loop(con: &mut MultiplexedConnection, stream: &str, group: &str) -> Result<f64> {
    let _: () = redis::cmd("XGROUP")
        .arg("CREATE")
        .arg(stream)
        .arg(group)
        .arg("0")
        .query_async(con)
        .await?;
    let start = Instant::now();
    let mut total = 0usize;
    let mut to_ack: Vec<String> = Vec::new();
    loop {
        let mut pipe = redis::pipe();
        if !to_ack.is_empty() {
            pipe.cmd("XACK")
                .arg(stream)
                .arg(group)
                .arg(&to_ack)
                .ignore();
        }
        pipe.cmd("XREADGROUP")
            .arg("GROUP")
            .arg(group)
            .arg("c")
            .arg("COUNT")
            .arg(500)
            .arg("STREAMS")
            .arg(stream)
            .arg(">");
        let (reply,): (Value,) = pipe.query_async(con).await?;
        to_ack.clear();
        let entries = decode(reply);
        if entries.is_empty() {
            break;
        }
        total += entries.len();
        for (id, fields) in entries {
            std::hint::black_box(&fields);
            to_ack.push(id);
        }
    }
    Ok(total as f64 / start.elapsed().as_secs_f64())
}

/// An entry id with its raw field/value pairs.
type RawEntry = (String, Vec<(Vec<u8>, Vec<u8>)>);

fn decode(reply: Value) -> Vec<RawEntry> {
    let Value::Array(streams) = reply else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for s in streams {
        let Value::Array(mut pair) = s else { continue };
        let Some(Value::Array(entries)) = pair.pop() else {
            continue;
        };
        for e in entries {
            let Value::Array(mut parts) = e else { continue };
            let fields = match parts.pop() {
                Some(Value::Array(flat)) => {
                    let mut it = flat.into_iter();
                    let mut f = Vec::new();
                    while let (Some(Value::BulkString(k)), Some(Value::BulkString(v))) =
                        (it.next(), it.next())
                    {
                        f.push((k, v));
                    }
                    f
                }
                _ => Vec::new(),
            };
            if let Some(Value::BulkString(id)) = parts.pop() {
                out.push((String::from_utf8_lossy(&id).into_owned(), fields));
            }
        }
    }
    out
}

#[allow(clippy::too_many_arguments, reason = "a flat benchmark step")]
async fn host_run(
    host: &Path,
    url: &str,
    stream: &str,
    group: &str,
    plugin: &Path,
    extra: &[String],
    entries: usize,
    con: &mut MultiplexedConnection,
) -> Result<f64> {
    let mut child = Command::new(host)
        .args([
            "run", "--redis", url, "--stream", stream, "--group", group, "--block", "100ms",
            "--log", "warn",
        ])
        .arg("--plugin")
        .arg(plugin)
        .args(extra)
        .stdout(Stdio::null())
        .spawn()
        .context("starting host")?;
    // Time from the first entry read to the last one acked: start-up
    // (compiling the component) is not throughput.
    let (mut t0, mut read0) = (None, 0u64);
    let deadline = Instant::now() + Duration::from_secs(600);
    let rate = loop {
        if Instant::now() > deadline {
            let _ = child.kill();
            bail!("host did not finish {entries} entries in time");
        }
        let (read, pending) = group_progress(con, stream, group).await?;
        if t0.is_none() && read > 0 {
            t0 = Some(Instant::now());
            read0 = read;
        }
        if read as usize >= entries && pending == 0 {
            let t0 = t0.unwrap_or_else(Instant::now);
            break (entries as u64 - read0) as f64 / t0.elapsed().as_secs_f64();
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    };
    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status();
    let _ = child.wait();
    Ok(rate)
}

async fn group_progress(
    con: &mut MultiplexedConnection,
    stream: &str,
    group: &str,
) -> Result<(u64, u64)> {
    let groups: Vec<Vec<Value>> = redis::cmd("XINFO")
        .arg("GROUPS")
        .arg(stream)
        .query_async(con)
        .await?;
    for g in groups {
        let mut name = String::new();
        let (mut read, mut pending) = (0u64, 0u64);
        let mut it = g.into_iter();
        while let (Some(k), Some(v)) = (it.next(), it.next()) {
            match redis::from_redis_value::<String>(k)?.as_str() {
                "name" => name = redis::from_redis_value(v)?,
                "entries-read" => read = redis::from_redis_value::<Option<u64>>(v)?.unwrap_or(0),
                "pending" => pending = redis::from_redis_value(v)?,
                _ => {}
            }
        }
        if name == group {
            return Ok((read, pending));
        }
    }
    Ok((0, 0))
}
