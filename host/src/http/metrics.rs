//! `/metrics`: one scrape's view of the process — each pipeline's counters
//! copied from its [`Stats`](crate::runtime::Stats) atomics, its in-flight
//! entries, and its group as Redis sees it, and every partition of the
//! declared partitioned streams whoever runs it — encoded in the Prometheus text
//! format by `prometheus-client` through a collector over that copy.

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeGaugeValue, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::Registry;

use super::probe::{GroupLook, PartitionLook, RedisLook};
use crate::runtime::StatsSnapshot;
use crate::runtime::port::CallTimesSnapshot;

/// One pipeline at scrape time.
#[derive(Debug, Clone)]
pub struct PipelineScrape {
    /// Pipeline name.
    pub name: String,
    /// Its stream.
    pub stream: String,
    /// Its group.
    pub group: String,
    /// Its counters.
    pub stats: StatsSnapshot,
    /// Handler call durations.
    pub call_times: CallTimesSnapshot,
    /// How long entries waited for their handler call.
    pub wait_times: CallTimesSnapshot,
    /// Entries held now.
    pub in_flight: u64,
    /// The plugin version in service (`name@hash`).
    pub plugin: String,
}

/// Everything one scrape reports.
#[derive(Debug, Clone)]
pub struct Scrape {
    /// The running pipelines.
    pub pipelines: Vec<PipelineScrape>,
    /// Redis's answer, if a connection is configured.
    pub redis: Option<RedisLook>,
    /// Every partition of the partitioned streams the configuration
    /// declares, whoever runs it (`None`: Redis did not answer in time).
    pub partitions: Option<Vec<PartitionLook>>,
}

/// A per-pipeline counter: name (without `_total`), help, value.
type CounterOf = (&'static str, &'static str, fn(&StatsSnapshot) -> u64);

const COUNTERS: [CounterOf; 18] = [
    (
        "streamhost_entries_read",
        "Entries read from the stream (new, recovered and reclaimed).",
        |s| s.read,
    ),
    (
        "streamhost_entries_acked",
        "Entries acknowledged after the handler succeeded.",
        |s| s.acked,
    ),
    (
        "streamhost_entries_retried",
        "Entries left pending for a retry (retryable failure, trap or timeout).",
        |s| s.retried,
    ),
    (
        "streamhost_entries_reclaimed",
        "Idle pending entries claimed by the reaper.",
        |s| s.reclaimed,
    ),
    (
        "streamhost_entries_recovered",
        "This consumer's own pending entries recovered at start-up.",
        |s| s.recovered,
    ),
    (
        "streamhost_entries_trimmed",
        "Entries removed from the stream by retention.",
        |s| s.trimmed,
    ),
    (
        "streamhost_entries_emitted",
        "Entries appended on behalf of handlers (with their acks).",
        |s| s.emitted,
    ),
    (
        "streamhost_entries_not_pending",
        "Settlements skipped because the entry was no longer pending for this consumer.",
        |s| s.not_pending,
    ),
    (
        "streamhost_commits_fenced",
        "Settlements refused because the partition's lease had passed to another host (the entry is left to its new owner).",
        |s| s.fenced,
    ),
    (
        "streamhost_emits_forwarded",
        "Cross-slot emits forwarded from a partition's outbox to their targets (cluster).",
        |s| s.forwarded,
    ),
    (
        "streamhost_emits_forwarded_again",
        "Outbox entries found already forwarded and dropped by the idempotence check (cluster).",
        |s| s.forwarded_again,
    ),
    (
        "streamhost_commit_waits_short",
        "Commit rounds whose WAIT saw fewer replicas than --commit-wait asks.",
        |s| s.commit_waits_short,
    ),
    (
        "streamhost_group_went_back",
        "Times a group's last-delivered-id was found behind what this host had delivered (a failover lost writes).",
        |s| s.went_back,
    ),
    (
        "streamhost_commit_failures",
        "Acks or dead-letter moves Redis refused (the entry stays pending).",
        |s| s.commit_failures,
    ),
    (
        "streamhost_handler_traps",
        "Handler calls that trapped (memory cap, unreachable, failed instantiation).",
        |s| s.traps,
    ),
    (
        "streamhost_handler_timeouts",
        "Handler calls interrupted at --handler-timeout.",
        |s| s.timeouts,
    ),
    (
        "streamhost_plugin_swaps",
        "New plugin versions swapped in while running.",
        |s| s.plugin_swaps,
    ),
    (
        "streamhost_plugin_reload_failures",
        "Plugin files refused on reload (the previous version kept serving).",
        |s| s.plugin_reload_failures,
    ),
];

/// The Prometheus text for `scrape`.
pub fn render(scrape: Scrape) -> Result<String, std::fmt::Error> {
    let mut registry = Registry::default();
    registry.register(
        "streamhost_build",
        "Build information: the host's version.",
        Info::new(vec![("version", env!("CARGO_PKG_VERSION"))]),
    );
    registry.register_collector(Box::new(scrape));
    let mut text = String::new();
    prometheus_client::encoding::prometheus_text::encode(&mut text, &registry)?;
    Ok(text)
}

/// The labels naming one pipeline.
fn labels(p: &PipelineScrape) -> Labels<'_> {
    vec![
        ("pipeline", p.name.as_str()),
        ("stream", p.stream.as_str()),
        ("group", p.group.as_str()),
    ]
}

impl Collector for Scrape {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        gauge(
            &mut encoder,
            "streamhost_pipelines_running",
            "Pipelines running in this process.",
            [(Vec::new(), self.pipelines.len() as i64)],
        )?;
        for (name, help, value) in COUNTERS {
            let mut metric = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
            for p in &self.pipelines {
                metric
                    .encode_family(&labels(p))?
                    .encode_counter::<NoLabelSet, _, u64>(&value(&p.stats), None)?;
            }
        }
        self.dead_letters(&mut encoder)?;
        self.handler_histograms(&mut encoder)?;
        let per =
            |f: fn(&PipelineScrape) -> u64| self.pipelines.iter().map(move |p| (labels(p), f(p)));
        gauge(
            &mut encoder,
            "streamhost_entries_in_flight",
            "Entries held by this process now: queued, being handled or waiting out a retry backoff.",
            per(|p| p.in_flight),
        )?;
        gauge(
            &mut encoder,
            "streamhost_retention_held_back",
            "1 while a lagging group keeps retention from trimming as configured.",
            per(|p| p.stats.retention_held_back),
        )?;
        let mut plugin = encoder.encode_descriptor(
            "streamhost_plugin",
            "The plugin version in service (name@sha256 prefix).",
            None,
            MetricType::Info,
        )?;
        for p in &self.pipelines {
            plugin
                .encode_family(&labels(p))?
                .encode_info(&[("plugin", p.plugin.as_str())])?;
        }
        self.redis_side(&mut encoder)?;
        self.partitions(&mut encoder)
    }
}

impl Scrape {
    fn dead_letters(&self, encoder: &mut DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let mut metric = encoder.encode_descriptor(
            "streamhost_entries_dead_lettered",
            "Entries moved to the dead-letter stream, by kind (permanent, max-deliveries, trimmed, invalid).",
            None,
            MetricType::Counter,
        )?;
        for p in &self.pipelines {
            let s = &p.stats;
            let kinds = [
                ("permanent", s.dead_permanent),
                ("max-deliveries", s.dead_max_deliveries),
                ("trimmed", s.dead_trimmed),
                ("invalid", s.dead_invalid),
            ];
            for (kind, n) in kinds {
                let mut set = labels(p);
                set.push(("kind", kind));
                metric
                    .encode_family(&set)?
                    .encode_counter::<NoLabelSet, _, u64>(&n, None)?;
            }
        }
        Ok(())
    }

    fn handler_histograms(&self, encoder: &mut DescriptorEncoder) -> Result<(), std::fmt::Error> {
        self.histogram(
            encoder,
            "streamhost_handler_duration_seconds",
            "How long handler calls take (instantiation of a fresh instance included).",
            |p| &p.call_times,
        )?;
        self.histogram(
            encoder,
            "streamhost_handler_wait_seconds",
            "How long entries wait in the host between being routed to the workers (after a read, a reclaim or a retry's backoff) and the start of their handler call: behind busy workers, and with --order-by behind earlier entries of their key.",
            |p| &p.wait_times,
        )
    }

    fn histogram(
        &self,
        encoder: &mut DescriptorEncoder,
        name: &str,
        help: &str,
        of: impl Fn(&PipelineScrape) -> &CallTimesSnapshot,
    ) -> Result<(), std::fmt::Error> {
        let mut metric = encoder.encode_descriptor(name, help, None, MetricType::Histogram)?;
        for p in &self.pipelines {
            let t = of(p);
            metric
                .encode_family(&labels(p))?
                .encode_histogram::<NoLabelSet>(t.sum_seconds, t.count, &t.buckets, None)?;
        }
        Ok(())
    }

    /// The partition gauges: every partition of each declared partitioned
    /// stream, so any host's scrape shows the whole stream.
    fn partitions(&self, encoder: &mut DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let Some(parts) = &self.partitions else {
            return Ok(());
        };
        let of = partition_labels;
        gauge(
            encoder,
            "streamhost_partition_lag",
            "Entries of a partition not yet delivered to the group, for every partition of a declared partitioned stream (left out when Redis cannot tell).",
            parts.iter().filter_map(|p| p.lag.map(|lag| (of(p), lag))),
        )?;
        gauge(
            encoder,
            "streamhost_partition_pending",
            "Entries of a partition delivered to the group and not yet acknowledged.",
            parts.iter().map(|p| (of(p), p.pending)),
        )?;
        gauge(
            encoder,
            "streamhost_partition_dead_letters",
            "Records in a partition's dead-letter stream.",
            parts.iter().map(|p| (of(p), p.dead_letters)),
        )?;
        gauge(
            encoder,
            "streamhost_partition_leased",
            "1 while a host holds the group's lease on the partition (labelled with it), else 0.",
            parts.iter().map(|p| {
                let mut set = of(p);
                set.push(("owner", p.owner.as_deref().unwrap_or("")));
                (set, i64::from(p.owner.is_some()))
            }),
        )
    }

    /// `streamhost_redis_up`, and the group gauges when Redis answered.
    fn redis_side(&self, encoder: &mut DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let Some(look) = &self.redis else {
            return Ok(());
        };
        let up = i64::from(look.down.is_none());
        gauge(
            encoder,
            "streamhost_redis_up",
            "1 if Redis answered this scrape (PING) within its time budget, else 0 (and the group gauges are left out).",
            [(Vec::new(), up)],
        )?;
        if look.down.is_some() {
            return Ok(());
        }
        let groups: Vec<(&PipelineScrape, &GroupLook)> = self
            .pipelines
            .iter()
            .filter_map(|p| {
                let key = (p.stream.clone(), p.group.clone());
                look.groups
                    .get(&key)
                    .and_then(Option::as_ref)
                    .map(|g| (p, g))
            })
            .collect();
        gauge(
            encoder,
            "streamhost_group_lag",
            "Entries of the stream not yet delivered to the group (XINFO GROUPS lag; left out when Redis cannot tell).",
            each(&groups, |g| g.lag),
        )?;
        gauge(
            encoder,
            "streamhost_group_pending",
            "Entries delivered to the group and not yet acknowledged, by any consumer (XPENDING).",
            each(&groups, |g| Some(g.pending)),
        )?;
        gauge(
            encoder,
            "streamhost_group_oldest_pending_age_seconds",
            "Age of the group's oldest pending entry, from its id's time (0 when none is pending).",
            each(&groups, |g| {
                Some(g.oldest_pending_age.map_or(0.0, |a| a.as_secs_f64()))
            }),
        )
    }
}

type Labels<'l> = Vec<(&'static str, &'l str)>;

/// The labels naming one partition and its group.
fn partition_labels(p: &PartitionLook) -> Labels<'_> {
    vec![
        ("stream", p.stream.as_str()),
        ("partition", p.partition.as_str()),
        ("group", p.group.as_str()),
    ]
}

/// One value per group Redis knows, labelled with its pipeline.
fn each<'a, V: 'a>(
    groups: &'a [(&'a PipelineScrape, &'a GroupLook)],
    value: fn(&GroupLook) -> Option<V>,
) -> impl Iterator<Item = (Labels<'a>, V)> + 'a {
    groups
        .iter()
        .filter_map(move |(p, g)| value(g).map(|v| (labels(p), v)))
}

/// One gauge family with a value per label set.
fn gauge<'l, V: EncodeGaugeValue>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    values: impl IntoIterator<Item = (Labels<'l>, V)>,
) -> Result<(), std::fmt::Error> {
    let mut metric = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
    for (set, value) in values {
        metric.encode_family(&set)?.encode_gauge(&value)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::time::Duration;

    use super::*;
    use crate::runtime::port::CallTimes;

    fn pipeline() -> PipelineScrape {
        let times = CallTimes::default();
        times.record(Duration::from_millis(3));
        let waits = CallTimes::default();
        waits.record(Duration::from_millis(40));
        waits.record(Duration::from_micros(20));
        PipelineScrape {
            name: "orders".into(),
            stream: "s\"1".into(),
            group: "g".into(),
            stats: StatsSnapshot {
                read: 7,
                acked: 4,
                dead_permanent: 2,
                ..StatsSnapshot::default()
            },
            call_times: times.snapshot(),
            wait_times: waits.snapshot(),
            in_flight: 1,
            plugin: "misbehave@0123456789ab".into(),
        }
    }

    #[test]
    fn counters_gauges_and_histograms_carry_the_pipeline_labels() {
        let look = RedisLook {
            down: None,
            groups: BTreeMap::from([(
                ("s\"1".to_owned(), "g".to_owned()),
                Some(GroupLook {
                    lag: Some(3),
                    pending: 2,
                    oldest_pending_age: Some(Duration::from_millis(1500)),
                }),
            )]),
        };
        let parts = ["ann", ""]
            .iter()
            .enumerate()
            .map(|(i, owner)| PartitionLook {
                stream: "orders".into(),
                partition: i.to_string(),
                group: "g".into(),
                owner: (!owner.is_empty()).then(|| owner.to_string()),
                lag: Some(5 + i as u64),
                pending: 1,
                dead_letters: 2,
            });
        let text = render(Scrape {
            pipelines: vec![pipeline()],
            redis: Some(look),
            partitions: Some(parts.collect()),
        })
        .expect("encodes");
        let l = r#"pipeline="orders",stream="s\"1",group="g""#;
        for line in [
            format!("streamhost_entries_read_total{{{l}}} 7"),
            format!("streamhost_entries_acked_total{{{l}}} 4"),
            format!("streamhost_entries_dead_lettered_total{{{l},kind=\"permanent\"}} 2"),
            format!("streamhost_entries_dead_lettered_total{{{l},kind=\"trimmed\"}} 0"),
            format!("streamhost_handler_duration_seconds_bucket{{{l},le=\"0.005\"}} 1"),
            format!("streamhost_handler_duration_seconds_count{{{l}}} 1"),
            format!("streamhost_handler_wait_seconds_bucket{{{l},le=\"0.025\"}} 1"),
            format!("streamhost_handler_wait_seconds_bucket{{{l},le=\"0.05\"}} 2"),
            format!("streamhost_handler_wait_seconds_count{{{l}}} 2"),
            format!("streamhost_entries_in_flight{{{l}}} 1"),
            format!("streamhost_group_lag{{{l}}} 3"),
            format!("streamhost_group_oldest_pending_age_seconds{{{l}}} 1.5"),
            format!("streamhost_plugin_info{{{l},plugin=\"misbehave@0123456789ab\"}} 1"),
            "streamhost_redis_up 1".to_owned(),
            "streamhost_pipelines_running 1".to_owned(),
            r#"streamhost_partition_lag{stream="orders",partition="1",group="g"} 6"#.to_owned(),
            r#"streamhost_partition_pending{stream="orders",partition="0",group="g"} 1"#.to_owned(),
            r#"streamhost_partition_dead_letters{stream="orders",partition="1",group="g"} 2"#
                .to_owned(),
            r#"streamhost_partition_leased{stream="orders",partition="0",group="g",owner="ann"} 1"#
                .to_owned(),
            r#"streamhost_partition_leased{stream="orders",partition="1",group="g",owner=""} 0"#
                .to_owned(),
            format!(
                "streamhost_build_info{{version=\"{}\"}} 1",
                env!("CARGO_PKG_VERSION")
            ),
        ] {
            assert!(
                text.lines().any(|t| t == line),
                "no line {line:?} in\n{text}"
            );
        }
        assert!(
            text.contains("# TYPE streamhost_entries_read_total counter"),
            "{text}"
        );
    }

    #[test]
    fn without_redis_the_group_gauges_are_left_out() {
        let text = render(Scrape {
            pipelines: vec![pipeline()],
            redis: Some(RedisLook {
                down: Some("refused".into()),
                groups: BTreeMap::new(),
            }),
            partitions: None,
        })
        .expect("encodes");
        assert!(text.lines().any(|l| l == "streamhost_redis_up 0"), "{text}");
        assert!(!text.contains("streamhost_group_lag{"), "{text}");
        assert!(text.contains("streamhost_entries_read_total{"), "{text}");
    }
}
