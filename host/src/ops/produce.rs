//! What `host produce` appends: entries from `field=value` arguments, from
//! JSON lines (one object per line, fields in the object's order), or the
//! reference guide's order events; and the summary it reports.

use std::fmt;
use std::time::{Duration, Instant};

use serde::Serialize;
use serde::de::{Deserializer, MapAccess, Visitor};

use super::OpsError;
use crate::stream::cluster::{Nodes, is_redirect};
use crate::stream::entries::add_batch;
use crate::vocab::partition;

/// One entry's fields, in order.
pub type Fields = Vec<(Vec<u8>, Vec<u8>)>;

/// The summary of a produce run.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ProduceReport {
    /// Stream key (the logical stream's name when partitioned).
    pub stream: String,
    /// Entries added to each partition, when partitioned.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub partitions: Vec<u64>,
    /// Entries added.
    pub added: u64,
    /// Input lines skipped as malformed (`--on-error skip`).
    pub skipped: u64,
    /// First id added.
    pub first_id: Option<String>,
    /// Last id added.
    pub last_id: Option<String>,
    /// Seconds it took.
    pub seconds: f64,
    /// Entries per second.
    pub rate: f64,
}

impl ProduceReport {
    /// Counts a batch of new ids.
    pub fn record(&mut self, ids: &[String]) {
        if self.first_id.is_none() {
            self.first_id = ids.first().cloned();
        }
        if let Some(last) = ids.last() {
            self.last_id = Some(last.clone());
        }
        self.added += ids.len() as u64;
    }
}

/// Where each entry goes: one stream, or a partition of a logical stream.
#[derive(Debug, Clone)]
pub enum Route {
    /// The stream itself.
    Stream(String),
    /// Partition `partition_of(value of by, count)` of `stream` (see
    /// [`crate::vocab::partition`]), or the next in turn for entries
    /// without the field (or without `by`).
    Partitions {
        /// The logical stream.
        stream: String,
        /// How many partitions it has.
        count: u32,
        /// The field whose value picks the partition.
        by: Option<String>,
    },
}

impl Route {
    /// The stream named in reports.
    pub fn stream(&self) -> &str {
        match self {
            Route::Stream(s) | Route::Partitions { stream: s, .. } => s,
        }
    }
}

/// Appends entries in pipelined batches, to one stream or routed over the
/// partitions of one, paced to a steady rate when one is given, counting
/// what it appended into a report.
#[derive(Debug)]
pub struct Paced {
    /// A connection to each node appended to (on a cluster, each
    /// partition's).
    nodes: Nodes,
    route: Route,
    /// The partition the next entry without a routing value goes to.
    turn: u32,
    maxlen: Option<u64>,
    rate: Option<f64>,
    batch: usize,
    started: Instant,
    report: ProduceReport,
    /// Queued entries and the partition each goes to (0 unpartitioned).
    pending: Vec<(u32, Fields)>,
}

impl Paced {
    /// Appends along `route` (each stream trimmed to about `maxlen`) in
    /// batches of at most `batch`, at `rate` entries a second or as fast as
    /// Redis takes them.
    pub fn new(
        nodes: Nodes,
        route: Route,
        maxlen: Option<u64>,
        rate: Option<f64>,
        batch: usize,
    ) -> Self {
        let partitions = match &route {
            Route::Stream(_) => Vec::new(),
            Route::Partitions { count, .. } => vec![0; *count as usize],
        };
        Self {
            nodes,
            report: ProduceReport {
                stream: route.stream().to_owned(),
                partitions,
                ..ProduceReport::default()
            },
            route,
            turn: 0,
            maxlen,
            rate,
            batch: batch.max(1),
            started: Instant::now(),
            pending: Vec::new(),
        }
    }

    fn batch_size(&self) -> usize {
        match self.rate {
            // About 20 round trips a second at most, so the pace stays even.
            Some(r) => ((r / 20.0) as usize).clamp(1, self.batch),
            None => self.batch,
        }
    }

    /// Queues one entry; returns how many entries this appended (a whole
    /// batch, once one is full).
    pub async fn push(&mut self, fields: Fields) -> Result<u64, OpsError> {
        let partition = self.partition_of(&fields);
        self.pending.push((partition, fields));
        if self.pending.len() >= self.batch_size() {
            return self.flush().await;
        }
        Ok(0)
    }

    /// Appends what is queued, when the pace allows; returns how many.
    pub async fn flush(&mut self) -> Result<u64, OpsError> {
        if self.pending.is_empty() {
            return Ok(0);
        }
        if let Some(r) = self.rate {
            let due = Duration::from_secs_f64(self.report.added as f64 / r);
            tokio::time::sleep_until((self.started + due).into()).await;
        }
        let pending = std::mem::take(&mut self.pending);
        let mut appended = 0;
        match &self.route {
            Route::Stream(stream) => {
                let batch: Vec<Fields> = pending.into_iter().map(|(_, f)| f).collect();
                let ids = add_routed(&mut self.nodes, stream, self.maxlen, &batch).await?;
                self.report.record(&ids);
                appended += ids.len() as u64;
            }
            Route::Partitions { stream, count, .. } => {
                // One pipelined batch per partition, each in input order.
                let mut by_partition: Vec<Vec<Fields>> = vec![Vec::new(); *count as usize];
                for (p, fields) in pending {
                    by_partition[p as usize].push(fields);
                }
                for (p, batch) in by_partition.iter().enumerate() {
                    if batch.is_empty() {
                        continue;
                    }
                    let key = partition::stream_key(stream, p as u32);
                    let ids = add_routed(&mut self.nodes, &key, self.maxlen, batch).await?;
                    self.report.record(&ids);
                    self.report.partitions[p] += ids.len() as u64;
                    appended += ids.len() as u64;
                }
            }
        }
        Ok(appended)
    }

    /// The partition `fields` go to: by the routing field's value, else
    /// the next in turn.
    fn partition_of(&mut self, fields: &Fields) -> u32 {
        let Route::Partitions { count, by, .. } = &self.route else {
            return 0;
        };
        let value = by
            .as_ref()
            .and_then(|by| fields.iter().find(|(k, _)| k == by.as_bytes()))
            .map(|(_, v)| v);
        match value {
            Some(v) => partition::partition_of(v, *count),
            None => {
                let p = self.turn % count;
                self.turn = self.turn.wrapping_add(1);
                p
            }
        }
    }

    /// Counts an input line skipped as malformed.
    pub fn skipped(&mut self) {
        self.report.skipped += 1;
    }

    /// The report, with the time taken and the rate reached.
    pub fn finish(self) -> ProduceReport {
        let mut report = self.report;
        report.seconds = self.started.elapsed().as_secs_f64();
        report.rate = if report.seconds > 0.0 {
            report.added as f64 / report.seconds
        } else {
            0.0
        };
        report
    }
}

/// Appends `batch` to `key` on the node holding it; on a cluster, after a
/// redirection (the slot moved: none of the batch's `XADD`s, all of one
/// key, was taken) the slot map is read again and the batch sent once more.
async fn add_routed(
    nodes: &mut Nodes,
    key: &str,
    maxlen: Option<u64>,
    batch: &[Fields],
) -> Result<Vec<String>, OpsError> {
    let mut attempts = 0;
    loop {
        attempts += 1;
        let mut con = nodes.of(key).await?;
        match add_batch(&mut con, key, maxlen, batch).await {
            Err(e) if is_redirect(&e) && attempts < 3 => nodes.forget(),
            other => return Ok(other?),
        }
    }
}

/// A JSON object with its keys in the order written.
struct Ordered(Fields);

impl<'de> serde::Deserialize<'de> for Ordered {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Ordered;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object of field names to values")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Ordered, A::Error> {
                let mut fields = Vec::new();
                while let Some((k, v)) = map.next_entry::<String, serde_json::Value>()? {
                    let value = match v {
                        serde_json::Value::String(s) => s,
                        other => other.to_string(),
                    };
                    fields.push((k.into_bytes(), value.into_bytes()));
                }
                Ok(Ordered(fields))
            }
        }
        d.deserialize_map(V)
    }
}

/// One JSON line as an entry: an object whose values are strings (taken as
/// they are) or any other JSON (written as JSON text). Blank lines are
/// `Ok(None)`; an empty object is refused (an entry needs a field).
pub fn parse_json_line(line: &str) -> Result<Option<Fields>, String> {
    if line.trim().is_empty() {
        return Ok(None);
    }
    let Ordered(fields) = serde_json::from_str(line).map_err(|e| e.to_string())?;
    if fields.is_empty() {
        return Err("an empty object: an entry needs at least one field".into());
    }
    Ok(Some(fields))
}

/// The `n`-th (from 0) of the reference guide's order events: orders of
/// five customers moving through `order.placed`, `order.paid`, then
/// `order.shipped` or (every fifth order) `order.cancelled`, with the
/// guide's fields `type`, `order_id`, `customer`, `amount`, `ts_ms`.
pub fn demo_order(n: u64, ts_ms: u64) -> Fields {
    const CUSTOMERS: [&str; 5] = ["alice", "bob", "carol", "dan", "erin"];
    let order = n / 3;
    let kind = match n % 3 {
        0 => "order.placed",
        1 => "order.paid",
        _ if order % 5 == 4 => "order.cancelled",
        _ => "order.shipped",
    };
    let cents = 1_000 + (order * 7_919) % 9_000;
    [
        ("type", kind.to_owned()),
        ("order_id", format!("o-{}", 1_000 + order)),
        ("customer", CUSTOMERS[(order % 5) as usize].to_owned()),
        ("amount", format!("{}.{:02}", cents / 100, cents % 100)),
        ("ts_ms", ts_ms.to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.as_bytes().to_vec(), v.into_bytes()))
    .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_lines_keep_field_order_and_stringify_values() {
        let f = parse_json_line(r#"{"z":"1","a":2.5,"m":{"x":[true]},"n":null}"#)
            .unwrap()
            .unwrap();
        let shown: Vec<(String, String)> = f
            .into_iter()
            .map(|(k, v)| (String::from_utf8(k).unwrap(), String::from_utf8(v).unwrap()))
            .collect();
        assert_eq!(
            shown,
            [
                ("z", "1"),
                ("a", "2.5"),
                ("m", r#"{"x":[true]}"#),
                ("n", "null")
            ]
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
        );
        assert_eq!(parse_json_line("  ").unwrap(), None);
        assert!(parse_json_line("{}").unwrap_err().contains("empty object"));
        assert!(parse_json_line("[1]").is_err());
        assert!(parse_json_line(r#"{"a": "#).is_err());
    }

    #[test]
    fn demo_orders_follow_the_guide() {
        let kinds: Vec<String> = (0..15)
            .map(|n| String::from_utf8(demo_order(n, 0)[0].1.clone()).unwrap())
            .collect();
        assert_eq!(&kinds[..3], ["order.placed", "order.paid", "order.shipped"]);
        assert_eq!(kinds[14], "order.cancelled");
        let first = demo_order(0, 7);
        let names: Vec<&[u8]> = first.iter().map(|(k, _)| k.as_slice()).collect();
        assert_eq!(
            names,
            [&b"type"[..], b"order_id", b"customer", b"amount", b"ts_ms"]
        );
        assert_eq!(first[1].1, b"o-1000");
        assert_eq!(demo_order(1, 7)[1].1, b"o-1000", "paid is the same order");
    }
}
