//! The `streamhost:plugin/host` interface as seen by a guest — `log`, `emit`,
//! `config` — and the per-store state it works on.

use std::collections::BTreeMap;
use std::sync::Arc;

use wasmtime::component::ResourceTable;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use super::bindings::Level;
use super::bindings::streamhost::plugin::{host, types};
use super::limits::MemoryLimiter;
use super::stdio::{LogStream, StdioKind};
use crate::outcome::Emit;

/// Most entries one call may emit; a guest looping on `emit` must not grow the
/// host without bound before its deadline hits.
pub const MAX_EMITS_PER_CALL: usize = 10_000;

/// What a plugin version is called and configured with; shared by all its stores.
#[derive(Debug)]
pub struct PluginMeta {
    /// Plugin name (the file stem).
    pub name: Arc<str>,
    /// Short content hash of the component file.
    pub version: String,
    /// Operator-supplied values returned by `config()`.
    pub config: BTreeMap<String, String>,
    /// Cap on the bytes one call may emit (the memory cap).
    pub max_emit_bytes: usize,
}

/// The data of one store: WASI state, limits and the current call's emits.
pub struct CallState {
    wasi: WasiCtx,
    table: ResourceTable,
    /// Memory/table bounds for this store.
    pub limiter: MemoryLimiter,
    meta: Arc<PluginMeta>,
    /// Entry id of the call in progress, for log context.
    pub entry_id: String,
    /// Entries emitted by the call in progress.
    pub emits: Vec<Emit>,
    emit_bytes: usize,
    /// Set when the guest broke an emit rule; the call then fails permanently.
    pub emit_error: Option<String>,
}

impl std::fmt::Debug for CallState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CallState")
            .field("plugin", &self.meta.name)
            .field("entry_id", &self.entry_id)
            .field("emits", &self.emits.len())
            .finish_non_exhaustive()
    }
}

impl CallState {
    /// Fresh state for a new store: WASI with nothing granted (no files,
    /// environment, arguments or sockets), stdio routed to the log.
    pub fn new(meta: Arc<PluginMeta>, limiter: MemoryLimiter) -> Self {
        let wasi = WasiCtx::builder()
            .stdout(LogStream::new(meta.name.clone(), StdioKind::Stdout))
            .stderr(LogStream::new(meta.name.clone(), StdioKind::Stderr))
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false)
            .allow_blocking_current_thread(true)
            .build();
        Self {
            wasi,
            table: ResourceTable::new(),
            limiter,
            meta,
            entry_id: String::new(),
            emits: Vec::new(),
            emit_bytes: 0,
            emit_error: None,
        }
    }

    /// Clears per-call state before the next call.
    pub fn begin_call(&mut self, entry_id: &str) {
        self.entry_id.clear();
        self.entry_id.push_str(entry_id);
        self.emits.clear();
        self.emit_bytes = 0;
        self.emit_error = None;
    }
}

impl WasiView for CallState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl types::Host for CallState {}

impl host::Host for CallState {
    fn log(&mut self, level: Level, message: String) {
        let (plugin, version, entry) = (&*self.meta.name, &self.meta.version, &self.entry_id);
        match level {
            Level::Trace => {
                tracing::trace!(target: "plugin", plugin = %plugin, version = %version, entry = %entry, "{message}")
            }
            Level::Debug => {
                tracing::debug!(target: "plugin", plugin = %plugin, version = %version, entry = %entry, "{message}")
            }
            Level::Info => {
                tracing::info!(target: "plugin", plugin = %plugin, version = %version, entry = %entry, "{message}")
            }
            Level::Warn => {
                tracing::warn!(target: "plugin", plugin = %plugin, version = %version, entry = %entry, "{message}")
            }
            Level::Error => {
                tracing::error!(target: "plugin", plugin = %plugin, version = %version, entry = %entry, "{message}")
            }
        }
    }

    fn emit(&mut self, stream: String, fields: Vec<(String, Vec<u8>)>) {
        if self.emit_error.is_some() {
            return;
        }
        let size = stream.len() + fields.iter().map(|(k, v)| k.len() + v.len()).sum::<usize>();
        self.emit_error = if stream.is_empty() {
            Some("plugin emitted an entry to an empty stream name".to_owned())
        } else if fields.is_empty() {
            Some(format!(
                "plugin emitted an entry with no fields to {stream:?}"
            ))
        } else if self.emits.len() >= MAX_EMITS_PER_CALL {
            Some(format!(
                "plugin emitted more than {MAX_EMITS_PER_CALL} entries in one call"
            ))
        } else if self.emit_bytes + size > self.meta.max_emit_bytes {
            Some(format!(
                "plugin emitted more than {} bytes in one call",
                self.meta.max_emit_bytes
            ))
        } else {
            None
        };
        if self.emit_error.is_none() {
            self.emit_bytes += size;
            self.emits.push(Emit { stream, fields });
        }
    }

    fn config(&mut self, key: String) -> Option<String> {
        self.meta.config.get(&key).cloned()
    }
}
