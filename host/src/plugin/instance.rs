//! One worker's instance of a plugin: kept warm across calls, thrown away
//! after any trap (a trap poisons the whole store), and the one place where a
//! call's result becomes an [`Outcome`].

use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use wasmtime::{Store, Trap};

use super::LoadedPlugin;
use super::bindings::{Event, Failure, Handler};
use super::host_api::CallState;
use super::limits::{MemoryLimitExceeded, MemoryLimiter, deadline_ticks};
use super::rules::RuleBroken;
use crate::vocab::outcome::{DeadLetterKind, Outcome};

/// A store plus the instantiated `handler` world inside it.
struct Live {
    store: Store<CallState>,
    handler: Handler,
}

/// A worker's handle on a plugin version.
pub struct PluginInstance {
    plugin: Arc<LoadedPlugin>,
    live: Option<Live>,
    replaced: u64,
    fault: Option<CallFault>,
}

/// How the last call broke the instance, for the trap and timeout counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallFault {
    /// A trap: the memory cap, `unreachable`, a failed instantiation, …
    Trap,
    /// The call ran past its deadline and was interrupted.
    Timeout,
}

impl CallFault {
    fn of(err: &wasmtime::Error) -> Self {
        match err.downcast_ref::<Trap>() {
            Some(Trap::Interrupt) => CallFault::Timeout,
            _ => CallFault::Trap,
        }
    }
}

impl std::fmt::Debug for PluginInstance {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PluginInstance")
            .field("plugin", &self.plugin.identity())
            .field("live", &self.live.is_some())
            .finish()
    }
}

impl PluginInstance {
    /// An instance of `plugin`; the store is created lazily on the first call.
    pub fn new(plugin: Arc<LoadedPlugin>) -> Self {
        Self {
            plugin,
            live: None,
            replaced: 0,
            fault: None,
        }
    }

    /// The plugin version this instance runs.
    pub fn plugin(&self) -> &Arc<LoadedPlugin> {
        &self.plugin
    }

    /// Drops the live store, so the next call starts from a fresh instance
    /// (`--fresh-instance`: no guest state survives between entries).
    pub fn discard(&mut self) {
        self.live = None;
    }

    /// How many times a store was thrown away after a trap.
    pub fn replaced(&self) -> u64 {
        self.replaced
    }

    /// Whether the last call trapped or timed out (then its outcome is a
    /// retry whose reason says so).
    pub fn fault(&self) -> Option<CallFault> {
        self.fault
    }

    /// Calls `handle(event)` under the plugin's memory cap and deadline, on
    /// `rt` (the calling thread's runtime). The deadline covers instantiating
    /// a fresh instance and everything the call does, time blocked in host
    /// calls (a WASI sleep, a poll) included: wasm code is interrupted by the
    /// epoch, a call waiting on a host future is dropped at the deadline.
    /// Traps, timeouts and memory exhaustion become `Retry` with a reason
    /// that names what happened; a broken plugin rule (an emit over budget or
    /// to a refused target) a permanent failure. Either way the store is
    /// then discarded.
    ///
    /// The call is first polled right here: one that never waits on a host
    /// future — nearly all — is done after that one poll, with no timer and
    /// no scheduling round; only one that waits is driven by `rt` under a
    /// timer.
    pub fn call_on(&mut self, rt: &tokio::runtime::Runtime, event: &Event) -> Outcome {
        let timeout = self.plugin.timeout;
        let _context = tokio::runtime::Handle::try_current()
            .is_err()
            .then(|| rt.enter());
        let deadline = tokio::time::Instant::now() + timeout;
        self.fault = None;
        let finished = {
            let mut call = std::pin::pin!(self.call_until(event, deadline));
            match call.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
                Poll::Ready(outcome) => Some(outcome),
                Poll::Pending => rt.block_on(tokio::time::timeout_at(deadline, call)).ok(),
            }
        };
        finished.unwrap_or_else(|| {
            // Dropped at the deadline while waiting on a host future: the
            // store is in no state to be entered again.
            self.discard_broken();
            self.fault = Some(CallFault::Timeout);
            Outcome::Retry {
                reason: format!(
                    "handler exceeded its deadline of {} (blocked in a host call) and was interrupted",
                    humantime::format_duration(timeout)
                ),
            }
        })
    }

    /// The call itself; wasm code is bounded by the epoch deadline, waiting
    /// on host futures by the caller.
    async fn call_until(&mut self, event: &Event, deadline: tokio::time::Instant) -> Outcome {
        let timeout = self.plugin.timeout;
        let live = match self.live.take() {
            Some(live) => {
                let live = self.live.insert(live);
                // Warm: the whole timeout is left (no second clock read).
                live.store.set_epoch_deadline(deadline_ticks(timeout));
                live
            }
            None => match self.instantiate(deadline).await {
                Ok(live) => {
                    let live = self.live.insert(live);
                    live.store.set_epoch_deadline(ticks_until(deadline));
                    live
                }
                Err((fault, reason)) => {
                    self.fault = Some(fault);
                    return Outcome::Retry { reason };
                }
            },
        };
        live.store.data_mut().begin_call(&event.id);
        let called = live.handler.call_handle(&mut live.store, event).await;
        let max_reason = self.plugin.meta.rules.max_message_size;
        let reason = |r: String| super::output::cut(&r, max_reason).into_owned();
        match called {
            Ok(Ok(())) => Outcome::Ack {
                emits: std::mem::take(&mut live.store.data_mut().emits),
            },
            Ok(Err(Failure::Retryable(r))) => Outcome::Retry { reason: reason(r) },
            Ok(Err(Failure::Permanent(r))) => {
                Outcome::dead_letter(DeadLetterKind::Permanent, reason(r))
            }
            Err(err) => {
                self.discard_broken();
                match err.downcast_ref::<RuleBroken>() {
                    Some(broken) => {
                        Outcome::dead_letter(DeadLetterKind::Permanent, broken.to_string())
                    }
                    None => {
                        self.fault = Some(CallFault::of(&err));
                        Outcome::Retry {
                            reason: describe_trap(&err, timeout),
                        }
                    }
                }
            }
        }
    }

    fn discard_broken(&mut self) {
        self.live = None;
        self.replaced += 1;
    }

    async fn instantiate(
        &self,
        deadline: tokio::time::Instant,
    ) -> Result<Live, (CallFault, String)> {
        let state = CallState::new(
            self.plugin.meta.clone(),
            MemoryLimiter::new(self.plugin.max_memory),
        );
        let mut store = Store::new(&self.plugin.engine, state);
        store.limiter(|s| &mut s.limiter);
        store.epoch_deadline_trap();
        store.set_epoch_deadline(ticks_until(deadline));
        match self.plugin.pre.instantiate_async(&mut store).await {
            Ok(handler) => Ok(Live { store, handler }),
            Err(err) => Err((
                CallFault::of(&err),
                format!(
                    "instantiating the plugin failed: {}",
                    describe_trap(&err, self.plugin.timeout)
                ),
            )),
        }
    }
}

/// Epoch ticks from now until `deadline` (see [`deadline_ticks`]).
fn ticks_until(deadline: tokio::time::Instant) -> u64 {
    deadline_ticks(deadline.saturating_duration_since(tokio::time::Instant::now()))
}

/// A failure reason that says what went wrong in words an operator can act on.
fn describe_trap(err: &wasmtime::Error, timeout: std::time::Duration) -> String {
    if let Some(limit) = err.downcast_ref::<MemoryLimitExceeded>() {
        return format!("plugin trapped: {limit}");
    }
    match err.downcast_ref::<Trap>() {
        Some(Trap::Interrupt) => format!(
            "handler exceeded its deadline of {} and was interrupted",
            humantime::format_duration(timeout)
        ),
        Some(trap) => format!("plugin trapped: {trap}"),
        None => format!("plugin failed: {err:#}"),
    }
}
