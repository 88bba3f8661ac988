//! A pipeline over a partitioned stream (`--partitions`): how many
//! partitions, how hosts share them (`--assign`), and the per-partition
//! pipelines a process runs of it.

use std::time::Duration;

use super::{ConfigError, RunConfig};
use crate::vocab::partition::{self, Fence, MAX_PARTITIONS};

/// Shortest lease: renewals go out every third of it, and a round trip to
/// Redis must fit in one.
pub const MIN_LEASE_TTL: Duration = Duration::from_secs(1);

/// How the logical stream is spread, and how hosts share it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Partitions {
    /// N: the stream is read as the keys `{S:0}` … `{S:N-1}`.
    pub count: u32,
    /// Who reads which partition.
    pub assign: Assign,
    /// How long a lease lives without renewal (`--lease-ttl`).
    pub lease_ttl: Duration,
}

/// `--assign`: how the hosts of one group share the partitions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Assign {
    /// One owner per partition at a time, under a lease its commits are
    /// fenced on; partitions spread over the live hosts.
    Lease,
    /// Every host reads every partition, as hosts share one stream.
    Shared,
}

impl Assign {
    /// The flag's value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Lease => "lease",
            Self::Shared => "shared",
        }
    }
}

impl Partitions {
    /// Ranges and names.
    pub fn validate(&self, stream: &str) -> Result<(), ConfigError> {
        if self.count == 0 || self.count > MAX_PARTITIONS {
            return Err(ConfigError::Invalid {
                flag: "partitions",
                problem: format!("must be between 1 and {MAX_PARTITIONS}"),
            });
        }
        if let Some(why) = partition::refuse_name(stream) {
            return Err(ConfigError::Conflict {
                flags: &["stream", "partitions"],
                message: format!("--stream {stream:?}: {why}"),
            });
        }
        if self.lease_ttl < MIN_LEASE_TTL {
            return Err(ConfigError::Invalid {
                flag: "lease-ttl",
                problem: format!(
                    "must be at least {}",
                    humantime::format_duration(MIN_LEASE_TTL)
                ),
            });
        }
        Ok(())
    }
}

impl RunConfig {
    /// The pipeline that reads partition `index` of this one's stream: its
    /// keys, a name of its own (`NAME/i`), and under a lease, the fence
    /// its commits are checked against. Unpartitioned pipelines run as
    /// they are.
    pub fn partition(&self, index: u32, fence: Option<Fence>) -> RunConfig {
        let Some(parts) = self.partitions else {
            return self.clone();
        };
        debug_assert!(index < parts.count);
        RunConfig {
            name: format!("{}/{index}", self.name),
            stream: partition::stream_key(&self.stream, index),
            dlq: partition::dlq_key(&self.stream, index),
            partitions: None,
            partition_of: Some(PartitionOf {
                stream: self.stream.clone(),
                pipeline: self.name.clone(),
                index,
                count: parts.count,
            }),
            fence,
            ..self.clone()
        }
    }
}

/// What a partition's pipeline is a part of.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionOf {
    /// The logical stream.
    pub stream: String,
    /// The declared pipeline's name.
    pub pipeline: String,
    /// This partition.
    pub index: u32,
    /// How many there are.
    pub count: u32,
}

/// The partitions a process holds leases on, by declared pipeline name:
/// each with the fence its pipeline writes under.
pub type Owned = std::collections::BTreeMap<String, std::collections::BTreeMap<u32, Fence>>;

impl super::Config {
    /// What runs of this configuration: unpartitioned pipelines as they
    /// are, a shared partitioned one as a pipeline per partition, and one
    /// under leases as a pipeline per partition of `owned`.
    pub fn running(&self, owned: &Owned) -> super::Config {
        let mut pipelines = Vec::new();
        for p in &self.pipelines {
            match p.partitions {
                None => pipelines.push(p.clone()),
                Some(Partitions {
                    count,
                    assign: Assign::Shared,
                    ..
                }) => pipelines.extend((0..count).map(|i| p.partition(i, None))),
                Some(Partitions {
                    count,
                    assign: Assign::Lease,
                    ..
                }) => {
                    if let Some(held) = owned.get(&p.name) {
                        pipelines.extend(
                            held.iter()
                                .filter(|(i, _)| **i < count)
                                .map(|(i, fence)| p.partition(*i, Some(fence.clone()))),
                        );
                    }
                }
            }
        }
        super::Config {
            pipelines,
            ..self.clone()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Config, sample};

    fn partitioned(assign: Assign) -> RunConfig {
        RunConfig {
            name: "orders".into(),
            stream: "orders".into(),
            dlq: "{orders:i}:dlq".into(),
            partitions: Some(Partitions {
                count: 4,
                assign,
                lease_ttl: Duration::from_secs(10),
            }),
            ..sample()
        }
    }

    #[test]
    fn shared_partitions_run_all_and_leased_ones_what_is_held() {
        let shared = Config::single(partitioned(Assign::Shared)).running(&Owned::new());
        let streams: Vec<_> = shared.pipelines.iter().map(|p| p.stream.as_str()).collect();
        assert_eq!(
            streams,
            ["{orders:0}", "{orders:1}", "{orders:2}", "{orders:3}"]
        );
        assert_eq!(shared.pipelines[2].name, "orders/2");
        assert_eq!(shared.pipelines[2].dlq, "{orders:2}:dlq");
        assert!(shared.pipelines.iter().all(|p| p.fence.is_none()));
        assert_eq!(shared.validate(), Ok(()));

        let leased = Config::single(partitioned(Assign::Lease));
        assert!(leased.running(&Owned::new()).pipelines.is_empty());
        let fence = |i: u32| Fence {
            key: partition::lease_key("orders", i, "g"),
            token: format!("t{i}"),
        };
        let owned = Owned::from([(
            "orders".to_owned(),
            [(1, fence(1)), (3, fence(3)), (9, fence(9))].into(),
        )]);
        let running = leased.running(&owned);
        let names: Vec<_> = running.pipelines.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(
            names,
            ["orders/1", "orders/3"],
            "held partitions only, in range"
        );
        assert_eq!(running.pipelines[1].fence, Some(fence(3)));
    }

    #[test]
    fn partitioned_names_and_counts_are_checked() {
        let mut p = partitioned(Assign::Lease);
        p.stream = "a{b}".into();
        let err = p.validate().unwrap_err().to_string();
        assert!(err.contains("braces"), "{err}");
        let mut p = partitioned(Assign::Lease);
        p.partitions.as_mut().unwrap().count = 0;
        assert!(
            p.validate()
                .unwrap_err()
                .to_string()
                .contains("--partitions")
        );
        let mut p = partitioned(Assign::Lease);
        p.partitions.as_mut().unwrap().lease_ttl = Duration::from_millis(10);
        assert!(
            p.validate()
                .unwrap_err()
                .to_string()
                .contains("--lease-ttl")
        );
    }
}
