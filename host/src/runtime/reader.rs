//! The reader: makes sure the group exists, recovers this consumer's own
//! pending entries once, then reads new entries with a blocking XREADGROUP on
//! its own connection, never holding more than the in-flight window. It
//! remembers the newest id the group delivered, so that a group destroyed
//! under it is put back where it had got to, not replayed.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use redis::RedisResult;
use redis::aio::MultiplexedConnection;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use super::claiming::claim_entries;
use super::dead_letters::DlqTarget;
use super::dispatch::{Dispatcher, window_slots};
use super::holdings::GroupHoldings;
use super::stats::Stats;
use crate::config::RunConfig;
use crate::stream::commands::{self, GroupRef};
use crate::stream::groups::{self, Regroup, Restored};
use crate::stream::inspect;
use crate::stream::pending::{self, PendingQuery};
use crate::stream::scripts::FENCED;
use crate::stream::{Cancelled, ClaimSpec, ErrorClass, LinkError, PayloadReader, RedisLink};
use crate::vocab::entry::Entry;
use crate::vocab::ids::id_parts;

/// Slack on top of BLOCK before a read is given up as lost, and the limit
/// on each step of connecting the read connection.
pub const READ_TIMEOUT_SLACK: std::time::Duration = std::time::Duration::from_secs(5);

/// Reads entries and hands them to the dispatcher.
#[derive(Debug)]
pub struct Reader {
    /// The reader's own connection (response timeout above BLOCK).
    pub link: RedisLink,
    /// Stream, group and consumer.
    pub group: GroupRef,
    /// Run configuration.
    pub config: Arc<RunConfig>,
    /// Slots for entries read but not yet settled.
    pub window: Arc<Semaphore>,
    /// Where entries go.
    pub dispatch: Dispatcher,
    /// Run counters.
    pub stats: Arc<Stats>,
    /// Where payloads are read (`XREADGROUP >`, and recovered entries).
    pub payloads: PayloadReader,
    /// Where `trimmed` records of recovered entries go.
    pub dlq: DlqTarget,
    /// What this process holds of the group, and the newest id it delivered.
    pub holdings: Arc<GroupHoldings>,
}

impl Reader {
    /// Runs until `cancel` fires. Dropping the reader closes the job queue,
    /// which lets workers drain and stop.
    pub async fn run(mut self, cancel: CancellationToken) {
        if self.ensure_group(&cancel).await.is_err()
            || self.recover_own_pending(&cancel).await.is_err()
        {
            return;
        }
        let _ = self.read_loop(&cancel).await;
    }

    async fn ensure_group(&mut self, cancel: &CancellationToken) -> Result<(), Cancelled> {
        let (g, start_id) = (&self.group, self.config.start_id.as_str());
        let what = "creating the consumer group";
        let (created, position) = insist(&mut self.link, g, cancel, what, |mut con| async move {
            let created = groups::create(&mut con, &g.stream, &g.group, start_id, true).await?;
            commands::register_consumer(&mut con, g).await?;
            let position = inspect::groups(&mut con, &g.stream)
                .await?
                .into_iter()
                .find(|info| info.name == g.group)
                .map(|info| info.last_delivered_id);
            Ok((created, position))
        })
        .await?;
        if created {
            tracing::info!(stream = %g.stream, group = %g.group, start_id = %start_id, "created consumer group");
        }
        if let Some(id) = position {
            self.holdings.delivered(&id);
        }
        Ok(())
    }

    /// Puts the group back after it vanished (destroyed, or the stream key
    /// deleted): at the newest id this process knows it delivered, so what
    /// was handled is not handled again, with the pending rows of every
    /// entry held here restored (their commits are fenced on them). If
    /// nothing was ever known delivered, or the stream key itself is gone
    /// (nothing of it can be delivered again), at --start-id.
    async fn regroup(&mut self, cancel: &CancellationToken) -> Result<(), Cancelled> {
        let (g, holdings) = (&self.group, &self.holdings);
        let start_id = self.config.start_id.as_str();
        let what = "recreating the vanished consumer group";
        let (at, known, restored) = insist(&mut self.link, g, cancel, what, |mut con| async move {
            // Read again on every attempt: what is held changes meanwhile.
            let newest = holdings.newest();
            let at = newest.clone().unwrap_or_else(|| start_id.to_owned());
            let restored = groups::restore(&mut con, g, &at, start_id, &holdings.held()).await?;
            Ok((at, newest.is_some(), restored))
        })
        .await?;
        report_regroup(g, &at, start_id, known, restored);
        Ok(())
    }

    /// Takes back this consumer's pending entries (from a previous run under
    /// the same name, or whose read reply was lost) with the fenced claim,
    /// which raises their delivery counters durably and skips any a peer
    /// has taken meanwhile, and dispatches them like new ones.
    async fn recover_own_pending(&mut self, cancel: &CancellationToken) -> Result<(), Cancelled> {
        let batch = self.config.batch;
        let mut after = "-".to_owned();
        let mut total = 0u64;
        loop {
            let mut permits = window_slots(&self.window, batch, cancel).await?;
            let (g, payloads, dlq, stats) = (&self.group, &self.payloads, &self.dlq, &self.stats);
            let (inflight, from) = (&self.dispatch.inflight, after.as_str());
            let what = "recovering own pending entries";
            // Read and claim a page as one operation. One repeated after a
            // lost reply reads the page again and sees the counts the lost
            // claim may have left; it expects the counts first seen instead,
            // so the repeated claim can tell entries it took already.
            let (attempts, first_seen) = (&AtomicU32::new(0), &Mutex::new(HashMap::new()));
            let page = insist(&mut self.link, g, cancel, what, |mut con| async move {
                let attempt = attempts.fetch_add(1, Ordering::Relaxed);
                // Under a lease, everything pending is this owner's now.
                let me = g.fence.is_none().then_some(g.consumer.as_str());
                let from = pending::after(from);
                let query = PendingQuery::oldest(batch).between(&from, "+").of(me);
                let rows = match pending::rows(&mut con, &g.stream, &g.group, query).await {
                    // Gone, and our pending rows with it: the read loop
                    // puts the group back.
                    Err(e) if e.code() == Some("NOGROUP") => return Ok(None),
                    rows => rows?,
                };
                let Some(last) = rows.last() else {
                    return Ok(None);
                };
                let next = last.id.clone();
                // Entries this process still holds (waiting out a retry
                // backoff) are ours already: claiming them again would count
                // a delivery.
                let rows: Vec<_> = {
                    let mut first_seen = first_seen.lock().unwrap_or_else(|e| e.into_inner());
                    rows.into_iter()
                        .filter(|r| !inflight.contains(&r.id))
                        .map(|mut r| {
                            r.deliveries = *first_seen.entry(r.id.clone()).or_insert(r.deliveries);
                            r
                        })
                        .collect()
                };
                let spec = match me {
                    Some(me) => ClaimSpec::recover(me),
                    None => ClaimSpec::take_over(&g.consumer),
                }
                .repeated(attempt);
                let entries = claim_entries(&mut con, payloads, dlq, spec, &rows, stats).await?;
                Ok(Some((next, entries)))
            })
            .await?;
            let Some((next, entries)) = page else { break };
            after = next;
            total += entries.len() as u64;
            if !self.dispatch.dispatch(entries, &mut permits) {
                return Err(Cancelled);
            }
        }
        if total > 0 {
            self.stats.recovered(total);
            self.stats.read(total);
            if self.group.fence.is_some() {
                tracing::info!(entries = total, stream = %self.group.stream, "took over the partition's pending entries from its previous owners");
            } else {
                tracing::info!(entries = total, consumer = %self.group.consumer, "recovered this consumer's pending entries from a previous run");
            }
        }
        Ok(())
    }

    /// Waits until every entry in flight is settled, then recovers own
    /// pending entries. Needed after a connection loss: an XREADGROUP whose
    /// reply was lost left entries in this consumer's PEL that `>` will
    /// never return again.
    async fn resync(&mut self, cancel: &CancellationToken) -> Result<(), Cancelled> {
        drop(window_slots(&self.window, self.config.max_in_flight, cancel).await?);
        self.check_position(cancel).await?;
        self.recover_own_pending(cancel).await
    }

    /// After a lost connection (a failover, maybe): says so when the group
    /// is behind what this host saw it deliver — the promoted replica
    /// lacked the newest writes, and entries after its position are
    /// delivered (and handled) again.
    async fn check_position(&mut self, cancel: &CancellationToken) -> Result<(), Cancelled> {
        let Some(known) = self.holdings.newest() else {
            return Ok(());
        };
        let g = &self.group;
        let found = insist(
            &mut self.link,
            g,
            cancel,
            "reading the group's position",
            |mut con| async move {
                Ok(inspect::groups(&mut con, &g.stream)
                    .await
                    .ok()
                    .and_then(|groups| groups.into_iter().find(|i| i.name == g.group))
                    .map(|i| i.last_delivered_id))
            },
        )
        .await?;
        let behind = found
            .as_deref()
            .and_then(id_parts)
            .zip(id_parts(&known))
            .is_some_and(|(now, before)| now < before);
        if behind {
            self.stats.went_back(1);
            tracing::warn!(stream = %g.stream, group = %g.group, position = ?found, delivered_before = %known,
                "the group's position went back (a failover lost writes the replica had not received): entries after it are delivered and handled again; --commit-wait makes commits wait for replicas");
        }
        Ok(())
    }

    /// One fenced read: entries if there are any; otherwise waits up to
    /// BLOCK for one after `wait_from` (a script cannot block) and comes
    /// back empty, to read again. `wait_from` moves to the newest id seen,
    /// so a wait never returns at once for an entry already delivered.
    async fn read_fenced(
        &self,
        batch: usize,
        wait_from: &mut Option<String>,
    ) -> RedisResult<Vec<Entry>> {
        let entries = self.payloads.read_group_fenced(&self.group, batch).await?;
        if let Some(last) = entries.last() {
            *wait_from = Some(last.id.clone());
            return Ok(entries);
        }
        let from = wait_from
            .clone()
            .or_else(|| self.holdings.newest())
            .unwrap_or_else(|| "0-0".to_owned());
        if let Some(next) = self
            .payloads
            .wait_after(&self.group.stream, &from, self.config.block)
            .await?
        {
            *wait_from = Some(next);
        }
        Ok(entries)
    }

    async fn read_loop(&mut self, cancel: &CancellationToken) -> Result<(), Cancelled> {
        let batch = self.config.batch;
        let mut resync = false;
        let mut wait_from: Option<String> = None;
        loop {
            if std::mem::take(&mut resync) {
                self.resync(cancel).await?;
            }
            let mut permits = window_slots(&self.window, batch, cancel).await?;
            // Not through `RedisLink::run`: after a lost connection the
            // reader must resync before it reads again. The read goes over
            // the fast connection, not the link's, but waiting for the link
            // waits out its backoff after a failed read: the fast connection
            // has no backoff of its own.
            self.link.connection(cancel).await?;
            // Not cancelled mid-flight: Redis may already have delivered the
            // entries of this read, and dropping the reply would leave them
            // pending with nobody working on them. The read ends within BLOCK;
            // what it returns is handled during the drain.
            let read = match &self.group.fence {
                None => {
                    self.payloads
                        .read_group(&self.group, batch, self.config.block)
                        .await
                }
                Some(_) => self.read_fenced(batch, &mut wait_from).await,
            };
            let entries = match read {
                Ok(entries) => entries,
                Err(e) if e.code() == Some(FENCED) => {
                    // Nothing more can be read or written here: the lease
                    // keeper drains this partition's pipeline.
                    tracing::warn!(stream = %self.group.stream, "the partition's lease is no longer this host's: reading stopped until the pipeline is drained");
                    cancel.cancelled().await;
                    return Err(Cancelled);
                }
                Err(e) if e.code() == Some("NOGROUP") => {
                    self.regroup(cancel).await?;
                    continue;
                }
                Err(e) => {
                    match self.link.recover(e, cancel).await {
                        Ok(class) => resync = class == ErrorClass::Connection,
                        Err(e) => {
                            refused(&mut self.link, &self.group, cancel, "XREADGROUP", e).await?
                        }
                    }
                    continue;
                }
            };
            self.link.succeeded();
            if let Some(last) = entries.last() {
                self.holdings.delivered(&last.id);
            }
            self.stats.read(entries.len() as u64);
            if !self.dispatch.dispatch(entries, &mut permits) {
                return Err(Cancelled);
            }
        }
    }
}

/// Runs `op` on `link` until Redis takes it: the link rides out outages,
/// and a refusal is logged and retried after a pause — the reader cannot go
/// on without it, and the cause (a missing permission, a full server) may
/// yet be fixed.
async fn insist<T, F, Fut>(
    link: &mut RedisLink,
    g: &GroupRef,
    cancel: &CancellationToken,
    what: &str,
    mut op: F,
) -> Result<T, Cancelled>
where
    F: FnMut(MultiplexedConnection) -> Fut,
    Fut: Future<Output = RedisResult<T>>,
{
    loop {
        match link.run(cancel, &mut op).await {
            Ok(value) => return Ok(value),
            Err(e) => refused(link, g, cancel, what, e).await?,
        }
    }
}

/// Logs a refusal and waits one backoff step before the retry; `Err` if
/// cancelled instead.
async fn refused(
    link: &mut RedisLink,
    g: &GroupRef,
    cancel: &CancellationToken,
    what: &str,
    e: LinkError,
) -> Result<(), Cancelled> {
    match e {
        LinkError::Cancelled(c) => Err(c),
        LinkError::Refused(e) if e.code() == Some(FENCED) => {
            tracing::warn!(stream = %g.stream, "{what}: the partition's lease is no longer this host's; waiting to be drained");
            cancel.cancelled().await;
            Err(Cancelled)
        }
        LinkError::Refused(e) => {
            tracing::error!(error = %e, stream = %g.stream, group = %g.group, "{what} failed");
            link.pause(cancel).await
        }
    }
}

/// Says what putting a vanished group back did, and why (`at`: the
/// position asked for; `known`: whether it was a delivered id).
fn report_regroup(g: &GroupRef, at: &str, start_id: &str, known: bool, restored: Restored) {
    let (stream, group, rows) = (&g.stream, &g.group, restored.rows);
    let reason = if known {
        "the group vanished (NOGROUP): entries up to the newest id it delivered count as handled"
    } else {
        "the group vanished (NOGROUP) before anything was known delivered: --start-id"
    };
    match restored.how {
        Regroup::Fresh => {
            tracing::warn!(%stream, %group, id = %start_id, restored_rows = rows,
                reason = "the stream key vanished, and every entry with it: --start-id",
                "recreated the stream and its consumer group");
        }
        Regroup::Created => {
            tracing::warn!(%stream, %group, id = %at, restored_rows = rows, reason, "recreated the consumer group where it had got to");
        }
        Regroup::Raised { from } => {
            tracing::warn!(%stream, %group, id = %at, from = %from, restored_rows = rows, reason,
                "the consumer group had been recreated behind what was delivered here: moved it forward");
        }
        Regroup::Behind { at: found, why } => {
            tracing::warn!(%stream, %group, id = %found, delivered_here = %at, restored_rows = rows, reason, error = %why,
                "the consumer group had been recreated behind what was delivered here and could not be moved forward: entries after it are delivered again");
        }
        Regroup::Kept { at: found } => {
            tracing::warn!(%stream, %group, id = %found, delivered_here = %at, restored_rows = rows, reason,
                "the consumer group had already been recreated; left it where it is");
        }
    }
}
