//! The `streamhost:plugin/host` interface as seen by a guest — `log`, `emit`,
//! `config` — and the per-store state it works on. Every emit is checked
//! against the call's budget and the target rules as it is made: the first
//! one that breaks a rule ends the call, as a permanent failure that names
//! the rule.

use std::collections::BTreeMap;
use std::sync::Arc;

use wasmtime::component::{HasSelf, Linker, ResourceTable, WasmList, WasmStr};
use wasmtime::{AsContext, StoreContextMut};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use super::bindings::Level;
use super::bindings::streamhost::plugin::types;
use super::limits::MemoryLimiter;
use super::output;
use super::rules::{OutputRules, RuleBroken};
use super::stdio::{LogStream, StdioKind};
use crate::vocab::limits::{EMIT_OVERHEAD, field_cost};
use crate::vocab::msgpack::PackedFields;
use crate::vocab::outcome::Emit;

/// What a plugin version is called and configured with; shared by all its stores.
#[derive(Debug)]
pub struct PluginMeta {
    /// Plugin name (the file stem).
    pub name: Arc<str>,
    /// Short content hash of the component file.
    pub version: String,
    /// Operator-supplied values returned by `config()`.
    pub config: BTreeMap<String, String>,
    /// Bounds on what it writes.
    pub rules: Arc<OutputRules>,
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
        let stdio = |kind| LogStream::new(meta.name.clone(), kind, meta.rules.clone());
        let wasi = WasiCtx::builder()
            .stdout(stdio(StdioKind::Stdout))
            .stderr(stdio(StdioKind::Stderr))
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false)
            .build();
        Self {
            wasi,
            table: ResourceTable::new(),
            limiter,
            meta,
            entry_id: String::new(),
            emits: Vec::new(),
            emit_bytes: 0,
        }
    }

    /// Clears per-call state before the next call.
    pub fn begin_call(&mut self, entry_id: &str) {
        self.entry_id.clear();
        self.entry_id.push_str(entry_id);
        self.emits.clear();
        self.emit_bytes = 0;
    }

    /// Checks the shape of one emit — its target, its number of fields, the
    /// call's count of emits — before its fields are read.
    fn admit_shape(&self, stream: &str, fields: usize) -> Result<(), RuleBroken> {
        let rules = &self.meta.rules;
        let broken = |rule, detail| Err(RuleBroken { rule, detail });
        if stream.is_empty() {
            return broken(
                "emit",
                "plugin emitted an entry to an empty stream name".into(),
            );
        }
        if fields == 0 {
            return broken(
                "emit",
                format!("plugin emitted an entry with no fields to {stream:?}"),
            );
        }
        if fields > rules.max_fields {
            return broken(
                "--max-fields",
                format!(
                    "plugin emitted an entry of {} fields to {stream:?}, over the limit of {}",
                    fields, rules.max_fields
                ),
            );
        }
        if self.emits.len() >= rules.max_emits {
            return broken(
                "--max-emits",
                format!(
                    "plugin emitted more than {} entries in one call",
                    rules.max_emits
                ),
            );
        }
        Ok(())
    }

    /// Checks one emit, its fields of these name and value sizes, against
    /// the call's byte budget and the target rules; returns what it costs.
    fn admit_size(
        &self,
        stream: &str,
        sizes: impl Iterator<Item = (usize, usize)>,
    ) -> Result<usize, RuleBroken> {
        let rules = &self.meta.rules;
        let broken = |rule, detail| Err(RuleBroken { rule, detail });
        let cost =
            stream.len() + EMIT_OVERHEAD + sizes.map(|(k, v)| field_cost(k, v)).sum::<usize>();
        if self.emit_bytes + cost > rules.max_emit_bytes {
            return broken(
                "--max-emit-bytes",
                format!(
                    "plugin emitted more than {} bytes in one call",
                    rules.max_emit_bytes
                ),
            );
        }
        rules.targets.check(stream)?;
        Ok(cost)
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

/// The instance name of the `host` interface in `wit/handler.wit`.
const HOST_INTERFACE: &str = "streamhost:plugin/host@0.1.0";

/// Links the `types` and `host` interfaces for guests. `host` is linked by
/// hand rather than through `bindgen!`: `emit` takes its arguments as views
/// of the guest's memory, so an emitted entry is checked against the call's
/// budget before anything is copied, and then copied once, packed, instead
/// of into a `String` and a `Vec` per field.
pub fn add_to_linker(linker: &mut Linker<CallState>) -> wasmtime::Result<()> {
    types::add_to_linker::<CallState, HasSelf<CallState>>(linker, |s| s)?;
    let mut host = linker.instance(HOST_INTERFACE)?;
    host.func_wrap(
        "log",
        |mut store: StoreContextMut<'_, CallState>, (level, message): (Level, String)| {
            store.data_mut().log(level, &message);
            Ok(())
        },
    )?;
    host.func_wrap(
        "emit",
        |store: StoreContextMut<'_, CallState>, (stream, fields): (WasmStr, GuestFields)| {
            emit(store, &stream, &fields)
        },
    )?;
    host.func_wrap(
        "config",
        |store: StoreContextMut<'_, CallState>, (key,): (String,)| {
            Ok((store.data().meta.config.get(&key).cloned(),))
        },
    )?;
    Ok(())
}

/// `list<tuple<string, list<u8>>>` as it lies in the guest's memory.
type GuestFields = WasmList<(WasmStr, WasmList<u8>)>;

/// `emit`: checks the entry against the rules and the call's budget, then
/// keeps it, packed; the first entry that breaks a rule traps the call.
/// Its shape (target, field count) is checked before the field list is
/// read, and its size before anything is copied, so an emit of millions of
/// fields or megabytes costs the host nothing but the refusal.
fn emit(
    mut store: StoreContextMut<'_, CallState>,
    stream: &WasmStr,
    fields: &GuestFields,
) -> wasmtime::Result<()> {
    {
        let store = store.as_context();
        let stream = stream.to_str(&store)?;
        store.data().admit_shape(&stream, fields.len())?;
    }
    // Sized up front: collecting `Result`s would grow the vectors step by step.
    let mut views = Vec::with_capacity(fields.len());
    for view in fields.iter(&mut store)? {
        views.push(view?);
    }
    let (emit, cost) = {
        let store = store.as_context();
        let stream = stream.to_str(&store)?;
        let mut pairs = Vec::with_capacity(views.len());
        for (k, v) in &views {
            pairs.push((k.to_str(&store)?, v.as_le_slice(&store)));
        }
        let sizes = pairs.iter().map(|(k, v)| (k.len(), v.len()));
        let cost = store.data().admit_size(&stream, sizes)?;
        let mut packed = PackedFields::with_room_for(pairs.iter().map(|(k, v)| (k.len(), v.len())));
        for (k, v) in &pairs {
            packed.push(k.as_bytes(), v);
        }
        let emit = Emit {
            stream: stream.into_owned(),
            fields: packed,
        };
        (emit, cost)
    };
    let state = store.data_mut();
    state.emit_bytes += cost;
    state.emits.push(emit);
    Ok(())
}

impl CallState {
    fn log(&mut self, level: Level, message: &str) {
        let (plugin, version, entry) = (&*self.meta.name, &self.meta.version, &self.entry_id);
        let rules = &self.meta.rules;
        // Lines the log filter drops anyway cost nothing and count against
        // no rate limit.
        let enabled = match level {
            Level::Trace => tracing::enabled!(target: "plugin", tracing::Level::TRACE),
            Level::Debug => tracing::enabled!(target: "plugin", tracing::Level::DEBUG),
            Level::Info => tracing::enabled!(target: "plugin", tracing::Level::INFO),
            Level::Warn => tracing::enabled!(target: "plugin", tracing::Level::WARN),
            Level::Error => tracing::enabled!(target: "plugin", tracing::Level::ERROR),
        };
        if !enabled {
            return;
        }
        rules.gate.log(plugin, || {
            let message = output::for_log(message, rules.max_message_size);
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
        });
    }
}
