//! The reader: makes sure the group exists, recovers this consumer's own
//! pending entries once, then reads new entries with a blocking XREADGROUP on
//! its own connection, never holding more than the in-flight window.

use std::collections::HashMap;
use std::sync::Arc;

use redis::RedisError;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use super::dispatch::Dispatcher;
use super::stats::Stats;
use crate::config::RunConfig;
use crate::stream::commands::{self, GroupRef};
use crate::stream::wire::ReadConnection;
use crate::stream::{Entry, ErrorClass, Payload, RedisLink};

/// Slack on top of BLOCK before a read is given up as lost, and the limit
/// on each step of connecting the read connection.
pub const READ_TIMEOUT_SLACK: std::time::Duration = std::time::Duration::from_secs(5);

/// The connection new entries are read on.
#[derive(Debug, Default)]
pub enum ReadPath {
    /// Not connected yet (or dropped after an error).
    #[default]
    Disconnected,
    /// The fast RESP connection.
    Fast(ReadConnection),
    /// The URL needs what the fast connection lacks (TLS): read through
    /// the generic client.
    Generic,
}

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
    /// Where `XREADGROUP >` goes.
    pub path: ReadPath,
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
    /// the same name) with XCLAIM, which raises their delivery counters
    /// durably, and dispatches them like new ones.
    async fn recover_own_pending(&mut self, cancel: &CancellationToken) -> Result<(), Cancelled> {
        let batch = self.config.batch;
        let mut after = "-".to_owned();
        let mut total = 0u64;
        loop {
            let permits = tokio::select! {
                biased;
                _ = cancel.cancelled() => return Err(Cancelled),
                p = self.window.clone().acquire_many_owned(batch as u32) => p.map_err(|_| Cancelled)?,
            };
            let mut con = self.link.connection(cancel).await.ok_or(Cancelled)?;
            let rows = match commands::own_pending(&mut con, &self.group, &after, batch).await {
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
            let ids: Vec<String> = rows.iter().map(|r| r.id.clone()).collect();
            let claimed = if ids.is_empty() {
                Vec::new()
            } else {
                match commands::claim(&mut con, &self.group, &ids).await {
                    Ok(c) => c,
                    Err(e) => {
                        self.on_error(&e, "claiming own pending entries", cancel)
                            .await?;
                        continue;
                    }
                }
            };
            after = next_after;
            let mut claimed: HashMap<String, Entry> =
                claimed.into_iter().map(|e| (e.id.clone(), e)).collect();
            let missing: Vec<&String> =
                ids.iter().filter(|id| !claimed.contains_key(*id)).collect();
            let trimmed = self.still_in_stream(&mut con, &missing).await;
            let mut batch = Vec::with_capacity(rows.len());
            for row in rows {
                match claimed.remove(&row.id) {
                    Some(mut e) => {
                        e.delivery_count = row.deliveries.saturating_add(1);
                        batch.push(e);
                    }
                    // Missing from the XCLAIM reply: either trimmed (Redis
                    // dropped it from the PEL) or acked meanwhile by a peer.
                    None if trimmed.get(&row.id) == Some(&false) => batch.push(Entry {
                        id: row.id,
                        payload: Payload::Trimmed,
                        delivery_count: row.deliveries,
                    }),
                    None => {}
                }
            }
            total += batch.len() as u64;
            let mut permits = permits;
            if !self.dispatch.dispatch(batch, &mut permits) {
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

    /// For ids XCLAIM did not return: whether each still exists in the stream.
    async fn still_in_stream(
        &mut self,
        con: &mut redis::aio::MultiplexedConnection,
        ids: &[&String],
    ) -> HashMap<String, bool> {
        let mut out = HashMap::new();
        for id in ids {
            let exists: RedisResultVec = redis::cmd("XRANGE")
                .arg(&self.group.stream)
                .arg(id.as_str())
                .arg(id.as_str())
                .query_async(con)
                .await;
            // On error, assume it exists: never invent a `trimmed` record.
            let exists = exists.map(|v| !v.is_empty()).unwrap_or(true);
            out.insert((*id).clone(), exists);
        }
        out
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

    /// `XREADGROUP … >` on the fast read connection (connecting it first if
    /// needed); through the generic client when the URL needs TLS.
    async fn read_new(
        &mut self,
        con: &mut redis::aio::MultiplexedConnection,
        batch: usize,
    ) -> redis::RedisResult<Vec<Entry>> {
        if matches!(self.path, ReadPath::Disconnected) {
            let info = self.link.connection_info();
            self.path = match ReadConnection::connect(info, READ_TIMEOUT_SLACK).await? {
                Some(fast) => ReadPath::Fast(fast),
                None => ReadPath::Generic,
            };
        }
        match &mut self.path {
            ReadPath::Fast(fast) => {
                let read = fast.read_group(&self.group, batch, self.config.block).await;
                if let Err(e) = &read
                    && crate::stream::link::classify(e) == ErrorClass::Connection
                {
                    self.path = ReadPath::Disconnected;
                }
                read
            }
            _ => commands::read_new(con, &self.group, batch, self.config.block).await,
        }
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
            let read = self.read_new(&mut con, batch).await;
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

type RedisResultVec = redis::RedisResult<Vec<redis::Value>>;
