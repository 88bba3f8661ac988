//! The forwarder: on a cluster, moves what a source's handlers emitted to
//! streams of other slots from the source's outbox (where each was appended
//! with its entry's ack) to its target, in outbox order, each under its
//! idempotence key checked in the target's slot ([`outbox::forward`]), and
//! deletes from the outbox only what has landed. An entry forwarded twice —
//! this forwarder stopped before its delete, another owner's forwarder read
//! it too, or a failover undid the delete — lands once within the window.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::stats::Stats;
use crate::stream::cluster::Links;
use crate::stream::outbox::{self, Parcel};
use crate::stream::{LinkError, RedisLink};
use crate::vocab::partition;

/// Outbox entries read and forwarded per round.
const PAGE: usize = 256;
/// How long the last pass at the drain may take.
const LAST_PASS: Duration = Duration::from_secs(2);

/// Forwards one source's outbox.
#[derive(Debug)]
pub struct Forwarder {
    /// The outbox stream.
    pub outbox: String,
    /// A connection to the outbox's node (response timeout above BLOCK).
    pub link: RedisLink,
    /// Connections to the targets' nodes.
    pub targets: Links,
    /// How long idempotence keys are remembered.
    pub window: Duration,
    /// How long one wait for new outbox entries blocks.
    pub block: Duration,
    /// Run counters.
    pub stats: Arc<Stats>,
}

impl Forwarder {
    /// Forwards until `stop`, then makes one last pass over what the drain
    /// committed meanwhile.
    pub async fn run(mut self, stop: CancellationToken) {
        let mut after = "0-0".to_owned();
        while !stop.is_cancelled() {
            match self.pass(&stop).await {
                Ok(Some(last)) => after = last,
                Ok(None) => {
                    let (outbox, from, block) = (&self.outbox, after.as_str(), self.block);
                    let _ = self
                        .link
                        .run(&stop, |mut con| async move {
                            outbox::wait_after(&mut con, outbox, from, block).await
                        })
                        .await;
                }
                Err(()) => {
                    let _ = self.link.pause(&stop).await;
                }
            }
        }
        let deadline = super::cancel_after(LAST_PASS);
        while let Ok(Some(_)) = self.pass(&deadline).await {}
    }

    /// Forwards the oldest page of the outbox: the id of its last entry
    /// forwarded, `None` when the outbox is empty, `Err` when a target
    /// refused (logged; the entry stays first in line).
    async fn pass(&mut self, stop: &CancellationToken) -> Result<Option<String>, ()> {
        let key = self.outbox.clone();
        let outbox = key.as_str();
        let page = self
            .link
            .run(stop, |mut con| async move {
                outbox::oldest(&mut con, outbox, PAGE).await
            })
            .await
            .map_err(|_| ())?;
        if page.is_empty() {
            return Ok(None);
        }
        let mut done = Vec::with_capacity(page.len());
        let mut result = Ok(None);
        for entry in page {
            let parcel = match Parcel::of(entry) {
                Ok(p) => p,
                Err(id) => {
                    tracing::error!(outbox = %self.outbox, entry = %id, "an outbox entry without its target and key was written by something else: deleted");
                    done.push(id);
                    continue;
                }
            };
            match self.forward(&parcel, stop).await {
                Ok(()) => {
                    result = Ok(Some(parcel.id.clone()));
                    done.push(parcel.id);
                }
                Err(()) => {
                    result = Err(());
                    break;
                }
            }
        }
        let removed = self
            .link
            .run(stop, |mut con| {
                let done = &done;
                async move { outbox::remove(&mut con, outbox, done).await }
            })
            .await;
        // Not deleted: forwarded again next time, and dropped by the check.
        if removed.is_err() {
            return Err(());
        }
        result
    }

    async fn forward(&mut self, parcel: &Parcel, stop: &CancellationToken) -> Result<(), ()> {
        let Some(dedup) = partition::dedup_key(&parcel.target) else {
            tracing::error!(target = %parcel.target, entry = %parcel.id, "an emit's target has no slot for idempotence keys: dropped from the outbox");
            return Ok(());
        };
        let window = self.window;
        let sent = self
            .targets
            .of(&parcel.target)
            .run(stop, |mut con| {
                let dedup = &dedup;
                async move { outbox::forward(&mut con, parcel, dedup, window).await }
            })
            .await;
        match sent {
            Ok(true) => {
                self.stats.forwarded(1);
                Ok(())
            }
            Ok(false) => {
                self.stats.forwarded_again(1);
                Ok(())
            }
            Err(LinkError::Cancelled(_)) => Err(()),
            Err(LinkError::Refused(e)) => {
                tracing::error!(target = %parcel.target, entry = %parcel.id, error = %e, "the target refused a forwarded emit; it stays first in the outbox and is tried again");
                Err(())
            }
        }
    }
}
