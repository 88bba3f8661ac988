//! The lease keeper: for every pipeline whose partitions are assigned by
//! lease, keeps this host's membership alive, spreads the partitions over
//! the live members by rendezvous hashing (each partition goes to the
//! member with the highest hash of member and partition, so a member's
//! arrival or departure moves only the partitions it wins or held), takes
//! the leases this host wins, renews what it holds, and gives up what it no
//! longer wins — only after the process has drained that partition's
//! pipeline, so nothing it committed meanwhile is fenced.
//!
//! The keeper tells the process what it holds ([`LeaseChange`]); the
//! process runs a pipeline per held partition, fenced on its lease. A lease
//! lost (renewal refused: it ran out and another host took it) is dropped
//! at once: its pipeline's writes are already refused by the fence.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use sha2::{Digest, Sha256};
use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;

use crate::config::{Assign, Config, RedisEndpoint};
use crate::stream::cluster::{Links, Router};
use crate::stream::{LinkHealth, leases};
use crate::vocab::backoff::Backoff;
use crate::vocab::partition::{self, Fence};

/// How long one of the keeper's commands may take.
const LINK_TIMEOUT: Duration = Duration::from_secs(2);
/// How long the keeper may spend giving its leases back at shutdown.
const LEAVE_BUDGET: Duration = Duration::from_secs(3);

/// One pipeline whose partitions are assigned by lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseSpec {
    /// The declared pipeline.
    pub pipeline: String,
    /// The logical stream.
    pub stream: String,
    /// The consumer group (each group has its own owners).
    pub group: String,
    /// This host's name among the members: its consumer name.
    pub member: String,
    /// Partitions.
    pub count: u32,
    /// Lease and membership TTL.
    pub ttl: Duration,
}

impl LeaseSpec {
    /// The pipelines of `config` assigned by lease.
    pub fn of(config: &Config) -> Vec<LeaseSpec> {
        config
            .pipelines
            .iter()
            .filter_map(|p| {
                let parts = p.partitions?;
                (parts.assign == Assign::Lease).then(|| LeaseSpec {
                    pipeline: p.name.clone(),
                    stream: p.stream.clone(),
                    group: p.group.clone(),
                    member: p.consumer.clone(),
                    count: parts.count,
                    ttl: parts.lease_ttl,
                })
            })
            .collect()
    }
}

/// What the keeper holds of one pipeline now; `applied` fires once the
/// process runs exactly that.
#[derive(Debug)]
pub struct LeaseChange {
    /// The declared pipeline.
    pub pipeline: String,
    /// Held partitions and their fences.
    pub owned: BTreeMap<u32, Fence>,
    /// Answered when the change is applied (or dropped if it cannot be).
    pub applied: oneshot::Sender<()>,
}

/// Leases given up, renewed until the process has drained their pipelines.
#[derive(Debug)]
struct Giving {
    applied: oneshot::Receiver<()>,
    leases: BTreeMap<u32, Fence>,
}

/// One lease group's state.
#[derive(Debug)]
struct Group {
    spec: LeaseSpec,
    held: BTreeMap<u32, Fence>,
    giving: Vec<Giving>,
}

/// The lease keeper task.
#[derive(Debug)]
pub struct LeaseKeeper {
    links: Links,
    specs: watch::Receiver<Vec<LeaseSpec>>,
    changes: mpsc::UnboundedSender<LeaseChange>,
    groups: BTreeMap<String, Group>,
}

impl LeaseKeeper {
    /// A keeper for the lease groups `specs` announces, talking to Redis at
    /// `endpoint` (through `router` on a cluster) and to the process
    /// through `changes`.
    pub fn new(
        endpoint: Arc<RedisEndpoint>,
        router: Option<Arc<Router>>,
        specs: watch::Receiver<Vec<LeaseSpec>>,
        changes: mpsc::UnboundedSender<LeaseChange>,
    ) -> Self {
        let health = LinkHealth::new(endpoint.target().to_owned());
        // Each round has a budget of a third of the TTL: a wait between
        // attempts longer than that would never end in an attempt.
        let backoff = Backoff::new(Duration::from_millis(20), Duration::from_millis(100));
        Self {
            links: Links::new(endpoint, router, health, LINK_TIMEOUT, backoff),
            specs,
            changes,
            groups: BTreeMap::new(),
        }
    }

    /// Keeps the leases until `stop`, then gives every one back and leaves
    /// (the process has drained every pipeline by then).
    pub async fn run(mut self, stop: CancellationToken) {
        self.respec().await;
        loop {
            let names: Vec<String> = self.groups.keys().cloned().collect();
            for name in names {
                // Each group's round may take at most its period.
                let budget = super::cancel_after(self.period());
                tokio::select! {
                    biased;
                    _ = stop.cancelled() => break,
                    _ = self.round(&name, &budget) => {}
                }
            }
            let period = self.period();
            tokio::select! {
                biased;
                _ = stop.cancelled() => break,
                changed = self.specs.changed() => {
                    if changed.is_err() {
                        break;
                    }
                    self.respec().await;
                }
                _ = tokio::time::sleep(period) => {}
            }
        }
        self.leave().await;
    }

    /// A third of the shortest TTL: two renewals may fail before a lease
    /// runs out.
    fn period(&self) -> Duration {
        self.groups
            .values()
            .map(|g| g.spec.ttl / 3)
            .min()
            .unwrap_or(Duration::from_secs(1))
    }

    /// Takes the process's current lease groups: new ones start empty; a
    /// group gone or changed had its pipelines drained by the change that
    /// announced it, so its leases are given back at once.
    async fn respec(&mut self) {
        let specs = self.specs.borrow_and_update().clone();
        let stale: Vec<String> = self
            .groups
            .iter()
            .filter(|(name, g)| !specs.iter().any(|s| &s.pipeline == *name && *s == g.spec))
            .map(|(name, _)| name.clone())
            .collect();
        for name in stale {
            if let Some(group) = self.groups.remove(&name) {
                let budget = super::cancel_after(LEAVE_BUDGET);
                quit(&mut self.links, group, &budget).await;
            }
        }
        for spec in specs {
            self.groups
                .entry(spec.pipeline.clone())
                .or_insert_with(|| Group {
                    spec,
                    held: BTreeMap::new(),
                    giving: Vec::new(),
                });
        }
    }

    /// One round for one group: give back what was drained, renew what is
    /// held, renew membership, then give up what this host no longer wins
    /// and take what it newly wins.
    async fn round(&mut self, name: &str, budget: &CancellationToken) {
        let Some(group) = self.groups.get_mut(name) else {
            return;
        };
        let links = &mut self.links;
        finish_giving(links, group, budget).await;
        let mut changed = renew_held(links, group, budget).await;
        let spec = group.spec.clone();
        let key = partition::members_key(&spec.stream, &spec.group);
        let (me, ttl) = (spec.member.as_str(), spec.ttl);
        let live = links
            .of(&key)
            .run(budget, |mut con| {
                let key = key.clone();
                async move { leases::members(&mut con, &key, me, ttl, false).await }
            })
            .await;
        let Ok(live) = live else {
            // Without the members, nothing is moved this round.
            if changed {
                announce(&self.changes, group, BTreeMap::new());
            }
            return;
        };
        let mut given = BTreeMap::new();
        let owners = assignment(&live, &spec.stream, spec.count);
        for index in 0..spec.count {
            let winner = owners.get(index as usize).copied();
            let mine = winner == Some(me);
            if !mine {
                if let Some(fence) = group.held.remove(&index) {
                    tracing::info!(stream = %spec.stream, partition = index, to = ?winner, "partition moves to another host: draining it, then giving its lease back");
                    given.insert(index, fence);
                    changed = true;
                }
                continue;
            }
            let giving = group.giving.iter().any(|g| g.leases.contains_key(&index));
            if group.held.contains_key(&index) || giving {
                continue;
            }
            let fence = Fence {
                key: partition::lease_key(&spec.stream, index, &spec.group),
                token: partition::lease_token(me, rand::random::<u64>()),
            };
            let taken = links
                .of(&fence.key)
                .run(budget, |mut con| {
                    let fence = &fence;
                    async move { leases::acquire(&mut con, &fence.key, &fence.token, ttl).await }
                })
                .await;
            if let Ok(true) = taken {
                tracing::info!(stream = %spec.stream, group = %spec.group, partition = index, "lease taken");
                group.held.insert(index, fence);
                changed = true;
            }
        }
        if changed {
            announce(&self.changes, group, given);
        }
    }

    /// Gives every lease back and leaves every group's membership.
    async fn leave(&mut self) {
        let budget = super::cancel_after(LEAVE_BUDGET);
        for group in std::mem::take(&mut self.groups).into_values() {
            quit(&mut self.links, group, &budget).await;
        }
    }
}

/// Gives back every lease of `group` and leaves its membership, so the
/// other members take its partitions at their next round rather than
/// after the TTL.
async fn quit(links: &mut Links, group: Group, budget: &CancellationToken) {
    let leases: Vec<Fence> = group
        .held
        .into_values()
        .chain(
            group
                .giving
                .into_iter()
                .flat_map(|g| g.leases.into_values()),
        )
        .collect();
    release_all(links, &leases, budget).await;
    let key = partition::members_key(&group.spec.stream, &group.spec.group);
    let (me, ttl) = (group.spec.member.as_str(), group.spec.ttl);
    let _ = links
        .of(&key)
        .run(budget, |mut con| {
            let key = key.clone();
            async move { leases::members(&mut con, &key, me, ttl, true).await }
        })
        .await;
}

/// Tells the process what `group` holds now; `given` (leases no longer
/// held but still renewed) is given back once that is applied.
fn announce(
    changes: &mpsc::UnboundedSender<LeaseChange>,
    group: &mut Group,
    given: BTreeMap<u32, Fence>,
) {
    let (applied, done) = oneshot::channel();
    let _ = changes.send(LeaseChange {
        pipeline: group.spec.pipeline.clone(),
        owned: group.held.clone(),
        applied,
    });
    if !given.is_empty() {
        group.giving.push(Giving {
            applied: done,
            leases: given,
        });
    }
}

/// Releases the leases whose pipelines the process has drained.
async fn finish_giving(links: &mut Links, group: &mut Group, budget: &CancellationToken) {
    let mut waiting = Vec::new();
    for mut giving in std::mem::take(&mut group.giving) {
        match giving.applied.try_recv() {
            Err(oneshot::error::TryRecvError::Empty) => waiting.push(giving),
            // Applied, or the process is gone: either way nothing of ours
            // runs on these partitions any more.
            _ => {
                let leases: Vec<Fence> = giving.leases.into_values().collect();
                release_all(links, &leases, budget).await;
            }
        }
    }
    group.giving = waiting;
}

/// Renews every lease held or being given up; drops those lost. `true` if
/// any held one was lost.
async fn renew_held(links: &mut Links, group: &mut Group, budget: &CancellationToken) -> bool {
    let ttl = group.spec.ttl;
    let mut lost = Vec::new();
    let fences = group
        .held
        .iter()
        .chain(group.giving.iter().flat_map(|g| g.leases.iter()));
    for (index, fence) in fences {
        let renewed = links
            .of(&fence.key)
            .run(budget, |mut con| async move {
                leases::renew(&mut con, &fence.key, &fence.token, ttl).await
            })
            .await;
        // Unknown (Redis unreachable this round) is not lost: the fence
        // decides, and the next round asks again.
        if let Ok(false) = renewed {
            lost.push(*index);
        }
    }
    let mut changed = false;
    for index in lost {
        if group.held.remove(&index).is_some() {
            tracing::warn!(stream = %group.spec.stream, group = %group.spec.group, partition = index,
                "lease lost (it ran out, and another host may have taken it): this host's writes to the partition are refused from now on; draining it");
            changed = true;
        }
        for g in &mut group.giving {
            g.leases.remove(&index);
        }
    }
    changed
}

/// Gives back each lease still held by its token.
async fn release_all(links: &mut Links, fences: &[Fence], budget: &CancellationToken) {
    for fence in fences {
        let released = links
            .of(&fence.key)
            .run(budget, |mut con| async move {
                leases::release(&mut con, &fence.key, &fence.token).await
            })
            .await;
        if let Ok(true) = released {
            tracing::info!(lease = %fence.key, "lease given back");
        }
    }
}

/// Who owns each of `count` partitions of `stream` among `members`: each
/// partition goes to the member with the highest hash of (member, stream,
/// partition) that still has room, every member taking at most
/// ⌈count / members⌉ — rendezvous hashing with bounded loads, so the
/// spread is even and a member's arrival or departure moves few
/// partitions. Every host computes the same answer from the same members.
fn assignment<'a>(members: &'a [String], stream: &str, count: u32) -> Vec<&'a str> {
    if members.is_empty() {
        return Vec::new();
    }
    let cap = (count as usize).div_ceil(members.len());
    let mut load = vec![0usize; members.len()];
    (0..count)
        .map(|index| {
            let mut ranked: Vec<(usize, [u8; 32])> = members
                .iter()
                .enumerate()
                .map(|(i, m)| (i, weight(m, stream, index)))
                .collect();
            // Highest weight first; ties (never in practice) to the smaller name.
            ranked
                .sort_by(|(a, wa), (b, wb)| wb.cmp(wa).then_with(|| members[*a].cmp(&members[*b])));
            let (chosen, _) = ranked
                .into_iter()
                .find(|(i, _)| load[*i] < cap)
                .expect("the caps add up to at least count");
            load[chosen] += 1;
            members[chosen].as_str()
        })
        .collect()
}

fn weight(member: &str, stream: &str, index: u32) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(member.as_bytes());
    h.update([0]);
    h.update(stream.as_bytes());
    h.update([0]);
    h.update(index.to_be_bytes());
    h.finalize().into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partitions_spread_evenly_and_a_newcomer_moves_few() {
        let names = |n: usize| -> Vec<String> { (0..n).map(|i| format!("host-{i}")).collect() };
        for hosts in 1..=5 {
            let members = names(hosts);
            let owners = assignment(&members, "orders", 8);
            assert_eq!(owners.len(), 8);
            for m in &members {
                let won = owners.iter().filter(|o| *o == m).count();
                assert!(
                    won <= 8usize.div_ceil(hosts),
                    "{m} owns {won} of 8 among {hosts}"
                );
            }
        }
        let (three, four) = (names(3), names(4));
        let (before, after) = (
            assignment(&three, "orders", 64),
            assignment(&four, "orders", 64),
        );
        let moved = before.iter().zip(&after).filter(|(b, a)| b != a).count();
        let to_newcomer = after.iter().filter(|a| **a == "host-3").count();
        assert_eq!(to_newcomer, 16);
        assert!(moved <= 24, "{moved} of 64 moved for a fourth member's 16");
        let mut shuffled = names(3);
        shuffled.reverse();
        assert_eq!(
            assignment(&shuffled, "orders", 64),
            before,
            "the members' order does not matter"
        );
        assert!(assignment(&[], "orders", 4).is_empty());
    }
}
