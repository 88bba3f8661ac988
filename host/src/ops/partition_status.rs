//! `host status` of a partitioned stream (`--partitions N`): one logical
//! stream with a row per partition — its key, length, each group's owner
//! (the lease holder), lag and pending entries, its dead letters — and
//! totals over the partitions. Each partition is read on the node that
//! holds it (on a cluster, the partitions of one stream spread over the
//! shards), with the bounded reads of [`super::status::collect`].

use std::collections::BTreeMap;

use serde::Serialize;

use super::OpsError;
use super::status::{self, RetentionStatus, StatusOptions, StreamStatus};
use crate::stream::cluster::Nodes;
use crate::stream::leases;
use crate::vocab::ids::{id_parts, now_ms};
use crate::vocab::partition;

/// A partitioned stream's state.
#[derive(Debug, Clone, Serialize)]
pub struct PartitionedStatus {
    /// The logical stream's name (`S` of `{S:i}`).
    pub stream: String,
    /// How many partitions it is read as.
    pub partitions: u32,
    /// When this was collected (ms since the epoch).
    pub collected_at_ms: u64,
    /// Entries over the partitions shown.
    pub length: u64,
    /// Entries ever added over them (`None` if a partition cannot tell).
    pub entries_added: Option<u64>,
    /// Each consumer group, over the partitions shown.
    pub groups: Vec<GroupTotal>,
    /// Dead letters over the partitions shown.
    pub dead_letters: u64,
    /// Dead letters by kind, over what each partition's scan counted.
    pub dead_letter_kinds: BTreeMap<String, u64>,
    /// A row per partition shown, by index.
    pub rows: Vec<PartitionStatus>,
}

/// One group over the partitions.
#[derive(Debug, Clone, Serialize)]
pub struct GroupTotal {
    /// Name.
    pub name: String,
    /// Entries not yet delivered, summed.
    pub lag: u64,
    /// Whether every partition's lag is exact.
    pub lag_exact: bool,
    /// Entries delivered and not yet acked, summed.
    pub pending: u64,
    /// Partitions (of those shown) the group reads.
    pub partitions: u32,
    /// Partitions (of those shown) whose lease someone holds now.
    pub leased: u32,
    /// Hosts whose lease-group membership is live (`host run --assign
    /// lease`; empty when the group shares its partitions).
    pub hosts: Vec<String>,
}

/// One partition.
#[derive(Debug, Clone, Serialize)]
pub struct PartitionStatus {
    /// Its index.
    pub index: u32,
    /// Its key, `{S:i}`.
    pub key: String,
    /// Whether the key exists (a partition nothing was appended to yet
    /// does not; its row is empty).
    pub exists: bool,
    /// Each group's lease holder now, by group (groups without a held
    /// lease left out).
    pub owners: BTreeMap<String, String>,
    /// The partition as `host status` shows an unpartitioned stream.
    pub status: StreamStatus,
}

impl PartitionedStatus {
    /// Whether retention is held back in any partition shown.
    pub fn held_back(&self) -> Vec<(u32, &RetentionStatus)> {
        self.rows
            .iter()
            .filter(|r| r.status.retention.held_back == Some(true))
            .map(|r| (r.index, &r.status.retention))
            .collect()
    }
}

/// Collects the partitions `indexes` of `stream` (each on its node), with
/// `opts` (its `dlq` is replaced by each partition's).
pub async fn collect(
    nodes: &mut Nodes,
    stream: &str,
    partitions: u32,
    indexes: &[u32],
    opts: &StatusOptions,
) -> Result<PartitionedStatus, OpsError> {
    let mut rows = Vec::with_capacity(indexes.len());
    for &index in indexes {
        let key = partition::stream_key(stream, index);
        let mut con = nodes.of(&key).await?;
        let mut opts = opts.clone();
        opts.dlq = partition::dlq_key(stream, index);
        let (status, exists) = match status::collect_existing(&mut con, &key, &opts).await? {
            Some(s) => (s, true),
            None => (status::empty(&mut con, &key, &opts).await?, false),
        };
        let mut owners = BTreeMap::new();
        for g in &status.groups {
            let lease = partition::lease_key(stream, index, &g.name);
            if let Some(token) = leases::holder(&mut con, &lease).await? {
                owners.insert(g.name.clone(), partition::lease_owner(&token).to_owned());
            }
        }
        rows.push(PartitionStatus {
            index,
            key,
            exists,
            owners,
            status,
        });
    }
    let mut groups: Vec<GroupTotal> = Vec::new();
    for row in &rows {
        for g in &row.status.groups {
            let at = match groups.iter().position(|t| t.name == g.name) {
                Some(at) => at,
                None => {
                    groups.push(GroupTotal {
                        name: g.name.clone(),
                        lag: 0,
                        lag_exact: true,
                        pending: 0,
                        partitions: 0,
                        leased: 0,
                        hosts: Vec::new(),
                    });
                    groups.len() - 1
                }
            };
            let t = &mut groups[at];
            t.lag = t.lag.saturating_add(g.lag);
            t.lag_exact &= g.lag_exact;
            t.pending = t.pending.saturating_add(g.pending);
            t.partitions += 1;
            t.leased += u32::from(row.owners.contains_key(&g.name));
        }
    }
    for t in &mut groups {
        let members = partition::members_key(stream, &t.name);
        let mut con = nodes.of(&members).await?;
        t.hosts = leases::live_members(&mut con, &members).await?;
    }
    let mut kinds = BTreeMap::new();
    for (kind, n) in rows.iter().flat_map(|r| &r.status.dlq.kinds) {
        *kinds.entry(kind.clone()).or_insert(0u64) += n;
    }
    Ok(PartitionedStatus {
        stream: stream.to_owned(),
        partitions,
        collected_at_ms: now_ms(),
        length: rows.iter().map(|r| r.status.length).sum(),
        entries_added: rows.iter().map(|r| r.status.entries_added).sum(),
        groups,
        dead_letters: rows.iter().map(|r| r.status.dlq.length).sum(),
        dead_letter_kinds: kinds,
        rows,
    })
}

/// The newest dead letters over the rows, newest first (by record id: the
/// time each was written), with the partition each is in.
pub fn newest_dead_letters(
    s: &PartitionedStatus,
    n: usize,
) -> Vec<(u32, &status::NewestDeadLetter)> {
    let mut all: Vec<(u32, &status::NewestDeadLetter)> = s
        .rows
        .iter()
        .flat_map(|r| r.status.dlq.newest.iter().map(move |d| (r.index, d)))
        .collect();
    all.sort_by_key(|(_, d)| std::cmp::Reverse(id_parts(&d.id)));
    all.truncate(n);
    all
}

/// Whether any row's DLQ counted only its newest records by kind.
pub fn kinds_estimated(s: &PartitionedStatus) -> bool {
    s.rows.iter().any(|r| r.status.dlq.kinds_estimated)
}

/// What `host status --json` prints per stream and `/api/status` serves:
/// an unpartitioned stream as it is, a partitioned one with its rows.
#[derive(Debug, Clone, Serialize)]
#[serde(untagged)]
pub enum Report {
    /// An unpartitioned stream.
    Stream(StreamStatus),
    /// A partitioned stream.
    Partitioned(PartitionedStatus),
}
