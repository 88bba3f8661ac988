//! The reader: makes sure the group exists, recovers this consumer's own
//! pending entries once, then reads new entries with a blocking XREADGROUP on
//! its own connection, never holding more than the in-flight window.

use std::sync::Arc;

use redis::RedisError;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use super::claiming::{DlqTarget, claim_entries};
use super::dispatch::Dispatcher;
use super::stats::Stats;
use crate::config::RunConfig;
use crate::stream::commands::{self, GroupRef};
use crate::stream::{ClaimSpec, ErrorClass, PayloadReader, RedisLink};

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
}

/// The reader stopped because shutdown began.
struct Cancelled;

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

    /// Handles a failed command; `Err` once cancelled.
    async fn on_error(
        &mut self,
        err: &RedisError,
        what: &str,
        cancel: &CancellationToken,
    ) -> Result<ErrorClass, Cancelled> {
        let class = self.link.failed(err);
        match class {
            ErrorClass::Connection => {}
            ErrorClass::Transient => self.pause(cancel).await?,
            ErrorClass::Permanent => {
                tracing::error!(error = %err, stream = %self.group.stream, group = %self.group.group, "{what} failed");
                self.pause(cancel).await?;
            }
        }
        Ok(class)
    }

    async fn pause(&mut self, cancel: &CancellationToken) -> Result<(), Cancelled> {
        if self.link.pause(cancel).await {
            Ok(())
        } else {
            Err(Cancelled)
        }
    }

    async fn ensure_group(&mut self, cancel: &CancellationToken) -> Result<(), Cancelled> {
        loop {
            let mut con = self.link.connection(cancel).await.ok_or(Cancelled)?;
            let ensured =
                match commands::ensure_group(&mut con, &self.group, &self.config.start_id).await {
                    Ok(created) => commands::register_consumer(&mut con, &self.group)
                        .await
                        .map(|()| created),
                    Err(e) => Err(e),
                };
            match ensured {
                Ok(created) => {
                    self.link.succeeded();
                    if created {
                        tracing::info!(stream = %self.group.stream, group = %self.group.group, start_id = %self.config.start_id, "created consumer group");
                    }
                    return Ok(());
                }
                Err(e) => {
                    self.on_error(&e, "creating the consumer group", cancel)
                        .await?;
                }
            }
        }
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
            let mut permits = tokio::select! {
                biased;
                _ = cancel.cancelled() => return Err(Cancelled),
                p = self.window.clone().acquire_many_owned(batch as u32) => p.map_err(|_| Cancelled)?,
            };
            let mut con = self.link.connection(cancel).await.ok_or(Cancelled)?;
            let me = Some(self.group.consumer.as_str());
            let rows = match commands::pending_page(&mut con, &self.group, &after, batch, me).await
            {
                Ok(rows) => rows,
                Err(e) => {
                    self.on_error(&e, "reading own pending entries", cancel)
                        .await?;
                    continue;
                }
            };
            let Some(last) = rows.last() else { break };
            let next_after = last.id.clone();
            // Entries this process still holds (waiting out a retry backoff)
            // are ours already: claiming them again would count a delivery.
            let rows: Vec<_> = rows
                .into_iter()
                .filter(|r| !self.dispatch.inflight.contains(&r.id))
                .collect();
            let spec = ClaimSpec::recover(&self.group.consumer);
            let claimed = claim_entries(
                &mut con,
                &mut self.payloads,
                &self.dlq,
                spec,
                &rows,
                &self.stats,
            )
            .await;
            let entries = match claimed {
                Ok(entries) => entries,
                Err(e) => {
                    self.on_error(&e, "claiming own pending entries", cancel)
                        .await?;
                    continue;
                }
            };
            after = next_after;
            total += entries.len() as u64;
            if !self.dispatch.dispatch(entries, &mut permits) {
                return Err(Cancelled);
            }
        }
        if total > 0 {
            self.stats.recovered(total);
            self.stats.read(total);
            tracing::info!(entries = total, consumer = %self.group.consumer, "recovered this consumer's pending entries from a previous run");
        }
        Ok(())
    }

    /// Waits until every entry in flight is settled, then recovers own
    /// pending entries. Needed after a connection loss: an XREADGROUP whose
    /// reply was lost left entries in this consumer's PEL that `>` will
    /// never return again.
    async fn resync(&mut self, cancel: &CancellationToken) -> Result<(), Cancelled> {
        let everything = self.config.max_in_flight as u32;
        let idle = tokio::select! {
            biased;
            _ = cancel.cancelled() => return Err(Cancelled),
            p = self.window.clone().acquire_many_owned(everything) => p.map_err(|_| Cancelled)?,
        };
        drop(idle);
        self.recover_own_pending(cancel).await
    }

    async fn read_loop(&mut self, cancel: &CancellationToken) -> Result<(), Cancelled> {
        let batch = self.config.batch;
        let mut resync = false;
        loop {
            if std::mem::take(&mut resync) {
                self.resync(cancel).await?;
            }
            let mut permits = tokio::select! {
                biased;
                _ = cancel.cancelled() => return Err(Cancelled),
                p = self.window.clone().acquire_many_owned(batch as u32) => p.map_err(|_| Cancelled)?,
            };
            let mut con = self.link.connection(cancel).await.ok_or(Cancelled)?;
            // Not cancelled mid-flight: Redis may already have delivered the
            // entries of this read, and dropping the reply would leave them
            // pending with nobody working on them. The read ends within BLOCK;
            // what it returns is handled during the drain.
            let read = self
                .payloads
                .read_group(&mut con, &self.group, batch, self.config.block)
                .await;
            let entries = match read {
                Ok(entries) => entries,
                Err(e) if e.code() == Some("NOGROUP") => {
                    tracing::warn!(stream = %self.group.stream, group = %self.group.group, start_id = %self.config.start_id,
                        "the stream or consumer group vanished; recreating the group at --start-id");
                    self.ensure_group(cancel).await?;
                    continue;
                }
                Err(e) => {
                    resync =
                        self.on_error(&e, "XREADGROUP", cancel).await? == ErrorClass::Connection;
                    continue;
                }
            };
            self.link.succeeded();
            self.stats.read(entries.len() as u64);
            if !self.dispatch.dispatch(entries, &mut permits) {
                return Err(Cancelled);
            }
        }
    }
}
