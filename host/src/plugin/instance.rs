//! One worker's instance of a plugin: kept warm across calls, thrown away
//! after any trap (a trap poisons the whole store), and the one place where a
//! call's result becomes an [`Outcome`].

use std::sync::Arc;

use wasmtime::{Store, Trap};

use super::LoadedPlugin;
use super::bindings::{Event, Failure, Handler};
use super::host_api::CallState;
use super::limits::{MemoryLimitExceeded, MemoryLimiter, deadline_ticks};
use crate::outcome::{DeadLetterKind, Outcome};

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

    /// Calls `handle(event)` under the plugin's memory cap and deadline.
    /// Traps, timeouts and memory exhaustion become `Retry` with a reason that
    /// names what happened; the store is then discarded.
    pub fn call(&mut self, event: &Event) -> Outcome {
        let ticks = deadline_ticks(self.plugin.timeout);
        let live = match self.live.take() {
            Some(live) => self.live.insert(live),
            None => match self.instantiate(ticks) {
                Ok(live) => self.live.insert(live),
                Err(reason) => return Outcome::Retry { reason },
            },
        };
        live.store.data_mut().begin_call(&event.id);
        live.store.set_epoch_deadline(ticks);
        match live.handler.call_handle(&mut live.store, event) {
            Ok(Ok(())) => {
                let state = live.store.data_mut();
                match state.emit_error.take() {
                    Some(reason) => Outcome::dead_letter(DeadLetterKind::Permanent, reason),
                    None => Outcome::Ack {
                        emits: std::mem::take(&mut state.emits),
                    },
                }
            }
            Ok(Err(Failure::Retryable(reason))) => Outcome::Retry { reason },
            Ok(Err(Failure::Permanent(reason))) => {
                Outcome::dead_letter(DeadLetterKind::Permanent, reason)
            }
            Err(err) => {
                self.live = None;
                self.replaced += 1;
                Outcome::Retry {
                    reason: describe_trap(&err, self.plugin.timeout),
                }
            }
        }
    }

    fn instantiate(&self, ticks: u64) -> Result<Live, String> {
        let state = CallState::new(
            self.plugin.meta.clone(),
            MemoryLimiter::new(self.plugin.max_memory),
        );
        let mut store = Store::new(&self.plugin.engine, state);
        store.limiter(|s| &mut s.limiter);
        store.epoch_deadline_trap();
        store.set_epoch_deadline(ticks);
        match self.plugin.pre.instantiate(&mut store) {
            Ok(handler) => Ok(Live { store, handler }),
            Err(err) => Err(format!(
                "instantiating the plugin failed: {}",
                describe_trap(&err, self.plugin.timeout)
            )),
        }
    }
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
