//! The plugin engine: compiles a handler component once, checks it against the
//! `handler` world, and hands out per-worker instances that run it under a
//! memory cap and a deadline.

mod bindings;
mod cache;
mod host_api;
mod instance;
mod limits;
mod output;
mod rules;
mod slot;
mod stdio;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use wasmtime::component::{Component, Linker};
use wasmtime::{
    Config, Enabled, Engine, InstanceAllocationStrategy, PoolingAllocationConfig, ProfilingStrategy,
};

pub use bindings::{Event, Failure};
pub use cache::{ArtifactCache, default_dir as default_cache_dir};
pub use host_api::{CallState, PluginMeta};
pub use instance::{CallFault, PluginInstance};
pub use limits::{EPOCH_TICK, MemoryLimitExceeded};
pub use rules::{EmitTargets, OutputRules, RuleBroken};
pub use slot::PluginSlot;

use crate::vocab::limits::Limits;
use crate::vocab::units::ByteSize;

/// The WIT world every plugin must implement.
pub const WORLD: &str = "streamhost:plugin/handler@0.1.0";

/// Set once at start-up by `--perf-map`; read by every engine built after.
/// Process-wide because the perf map is: perf reads one file per process.
static PERF_MAP: AtomicBool = AtomicBool::new(false);

/// Makes every engine built from now on append its compiled code's symbols
/// to `/tmp/perf-<pid>.map`, the file `perf report` resolves JIT addresses
/// with. Without it a profile of a plugin is one opaque block of anonymous
/// memory. Compiled code is the same either way, so cached artifacts stay
/// valid (wasmtime registers them with the map when they are loaded).
pub fn write_perf_map() {
    PERF_MAP.store(true, Ordering::Relaxed);
    tracing::info!(
        path = %format!("/tmp/perf-{}.map", std::process::id()),
        "writing a perf map of plugin code (--perf-map)"
    );
}

/// Why a plugin file was refused.
#[derive(Debug, thiserror::Error)]
pub enum PluginError {
    /// The file could not be read.
    #[error("cannot read plugin {path}: {source}")]
    Read {
        /// The plugin path.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file does not start with the WebAssembly magic bytes.
    #[error("{path} is not a WebAssembly file (it does not start with the `\\0asm` header)")]
    NotWasm {
        /// The plugin path.
        path: PathBuf,
    },
    /// A core module, not a component.
    #[error(
        "{path} is a core WebAssembly module, not a component: build it with \
         `cargo build --target wasm32-wasip2` (or wrap it with `wasm-tools component new`)"
    )]
    CoreModule {
        /// The plugin path.
        path: PathBuf,
    },
    /// The component is malformed or failed to compile.
    #[error("{path} is not a valid WebAssembly component: {message}")]
    Compile {
        /// The plugin path.
        path: PathBuf,
        /// wasmtime's explanation.
        message: String,
    },
    /// The component imports or exports something other than the world.
    #[error("{path} does not implement the world {WORLD}: {message}")]
    WrongWorld {
        /// The plugin path.
        path: PathBuf,
        /// What does not match.
        message: String,
    },
    /// The engine itself could not be set up.
    #[error("cannot set up the WebAssembly engine: {0}")]
    Engine(String),
}

/// Limits and configuration every instance of a plugin runs with.
#[derive(Debug, Clone)]
pub struct PluginSettings {
    /// Values the plugin reads with `config(key)`.
    pub config: BTreeMap<String, String>,
    /// Memory cap per instance (all memories and tables).
    pub max_memory: ByteSize,
    /// Deadline for one `handle` call, time in host calls included.
    pub timeout: Duration,
    /// Bounds on what the plugin writes; shared by every version.
    pub rules: Arc<OutputRules>,
}

impl PluginSettings {
    /// The settings `limits` and `targets` give, with `config` for the plugin.
    pub fn new(config: BTreeMap<String, String>, limits: &Limits, targets: EmitTargets) -> Self {
        Self {
            config,
            max_memory: limits.max_memory,
            timeout: limits.handler_timeout,
            rules: Arc::new(OutputRules::new(limits, targets)),
        }
    }
}

/// One long-lived wasmtime engine with the host interface and WASI linked in.
#[derive(Clone)]
pub struct PluginEngine {
    engine: Engine,
    linker: Arc<Linker<CallState>>,
    _ticker: Arc<limits::EpochTicker>,
    cache: Option<ArtifactCache>,
}

impl std::fmt::Debug for PluginEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PluginEngine").finish_non_exhaustive()
    }
}

impl PluginEngine {
    /// Builds the engine, links WASI (nothing granted) and the host interface,
    /// and starts the epoch ticker that enforces deadlines.
    pub fn new() -> Result<Self, PluginError> {
        Self::build(Config::new())
    }

    /// [`PluginEngine::new`] with instances allocated from a pre-reserved
    /// pool: instantiation without mmap/munmap per instance, which is what
    /// `--fresh-instance` (one instance per entry) pays for otherwise. The
    /// pool holds `instances` live component instances, each with linear
    /// memories of at most `max_memory`. Compiled code is the same either
    /// way, so cached artifacts are shared.
    pub fn pooled(instances: u32, max_memory: ByteSize) -> Result<Self, PluginError> {
        let mut pool = PoolingAllocationConfig::new();
        // Generous per-component room: a componentized Python or JavaScript
        // guest is several core modules with their own memories and tables.
        pool.total_component_instances(instances)
            .total_core_instances(instances * 16)
            .total_memories(instances * 4)
            .total_tables(instances * 16)
            .total_stacks(instances)
            .max_memory_size(max_memory.0.min(4 << 30) as usize)
            // Reset reused memories and tables in place (memset of the
            // pages the guest dirtied, found with PAGEMAP_SCAN where the
            // kernel has it) instead of madvise: every madvise is a TLB
            // shootdown across the host's threads, which dominated the
            // cost of an instance per entry.
            .linear_memory_keep_resident(16 << 20)
            .table_keep_resident(1 << 20)
            .pagemap_scan(Enabled::Auto);
        let mut config = Config::new();
        config.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
        Self::build(config)
    }

    fn build(mut config: Config) -> Result<Self, PluginError> {
        let engine_err = |e: wasmtime::Error| PluginError::Engine(format!("{e:#}"));
        config.wasm_component_model(true);
        config.epoch_interruption(true);
        if PERF_MAP.load(Ordering::Relaxed) {
            config.profiler(ProfilingStrategy::PerfMap);
        }
        let engine = Engine::new(&config).map_err(engine_err)?;
        let mut linker = Linker::<CallState>::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker).map_err(engine_err)?;
        host_api::add_to_linker(&mut linker).map_err(engine_err)?;
        Ok(Self {
            _ticker: Arc::new(limits::EpochTicker::start(engine.clone())),
            engine,
            linker: Arc::new(linker),
            cache: None,
        })
    }

    /// Caches compiled components in `dir` (see [`ArtifactCache`]).
    pub fn with_cache(mut self, dir: Option<&Path>) -> Self {
        self.cache = dir.and_then(ArtifactCache::open);
        self
    }

    /// Reads, compiles and type-checks a plugin file. Blocking and CPU-heavy:
    /// call it off the async runtime.
    pub fn load(
        &self,
        path: &Path,
        settings: &PluginSettings,
    ) -> Result<Arc<LoadedPlugin>, PluginError> {
        let bytes = std::fs::read(path).map_err(|source| PluginError::Read {
            path: path.to_owned(),
            source,
        })?;
        let name = path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| "plugin".into());
        self.load_bytes(path, &name, &bytes, settings)
    }

    /// Like [`PluginEngine::load`] for bytes already in memory.
    pub fn load_bytes(
        &self,
        path: &Path,
        name: &str,
        bytes: &[u8],
        settings: &PluginSettings,
    ) -> Result<Arc<LoadedPlugin>, PluginError> {
        check_header(path, bytes)?;
        let started = Instant::now();
        let (component, from_cache) = self.component(path, bytes)?;
        let compile_time = started.elapsed();
        let wrong_world = |e: wasmtime::Error| PluginError::WrongWorld {
            path: path.to_owned(),
            message: format!(
                "{e:#}; it exports [{}]",
                export_names(&self.engine, &component)
            ),
        };
        let ty = component.component_type();
        let imports: Vec<String> = ty
            .imports(&self.engine)
            .map(|(n, _)| n.to_owned())
            .collect();
        let exports: Vec<String> = ty
            .exports(&self.engine)
            .map(|(n, _)| n.to_owned())
            .collect();
        let pre = self
            .linker
            .instantiate_pre(&component)
            .map_err(wrong_world)?;
        let pre = bindings::HandlerPre::new(pre).map_err(wrong_world)?;
        let meta = Arc::new(PluginMeta {
            name: name.into(),
            version: content_hash(bytes),
            config: settings.config.clone(),
            rules: settings.rules.clone(),
        });
        Ok(Arc::new(LoadedPlugin {
            meta,
            pre,
            engine: self.engine.clone(),
            _ticker: self._ticker.clone(),
            max_memory: settings.max_memory,
            timeout: settings.timeout,
            size: bytes.len(),
            compile_time,
            from_cache,
            imports,
            exports,
        }))
    }

    /// The compiled component: from the cache, else compiled (and cached).
    /// Says whether it came from the cache.
    fn component(&self, path: &Path, bytes: &[u8]) -> Result<(Component, bool), PluginError> {
        if let Some(component) = self
            .cache
            .as_ref()
            .and_then(|c| c.load(&self.engine, bytes))
        {
            return Ok((component, true));
        }
        Ok((self.compile_lean(path, bytes)?, false))
    }

    /// Compiles `bytes`, then serializes, drops the compiled form and loads
    /// the artifact back: what the compiler left behind (hundreds of MiB
    /// for a Python or JavaScript component) is freed and handed back to
    /// the kernel, and the process runs as lean as after a cache hit.
    fn compile_lean(&self, path: &Path, bytes: &[u8]) -> Result<Component, PluginError> {
        let compile_err = |e: wasmtime::Error| PluginError::Compile {
            path: path.to_owned(),
            message: format!("{e:#}"),
        };
        let compiled = Component::new(&self.engine, bytes).map_err(compile_err)?;
        let artifact = compiled.serialize().map_err(compile_err)?;
        drop(compiled);
        if let Some(cache) = &self.cache {
            cache.store(&self.engine, bytes, &artifact);
        }
        // SAFETY: `deserialize` trusts its input to come from
        // `Component::serialize` of a compatible engine: these bytes were
        // produced a moment ago, in this process, by this engine.
        #[allow(unsafe_code)]
        let component =
            unsafe { Component::deserialize(&self.engine, &artifact) }.map_err(compile_err)?;
        drop(artifact);
        release_freed_heap();
        Ok(component)
    }
}

/// A compiled, type-checked plugin version, ready to instantiate.
pub struct LoadedPlugin {
    meta: Arc<PluginMeta>,
    pre: bindings::HandlerPre<CallState>,
    engine: Engine,
    /// Deadlines only work while the epoch advances: every loaded plugin
    /// keeps the ticker alive, even after the `PluginEngine` is dropped.
    _ticker: Arc<limits::EpochTicker>,
    max_memory: ByteSize,
    timeout: Duration,
    size: usize,
    compile_time: Duration,
    from_cache: bool,
    imports: Vec<String>,
    exports: Vec<String>,
}

impl std::fmt::Debug for LoadedPlugin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoadedPlugin")
            .field("name", &self.meta.name)
            .field("version", &self.meta.version)
            .finish_non_exhaustive()
    }
}

impl LoadedPlugin {
    /// Plugin name (file stem).
    pub fn name(&self) -> &str {
        &self.meta.name
    }

    /// Short content hash identifying this version.
    pub fn version(&self) -> &str {
        &self.meta.version
    }

    /// `name@version`, as it appears in logs.
    pub fn identity(&self) -> String {
        format!("{}@{}", self.meta.name, self.meta.version)
    }

    /// Size of the component file in bytes.
    pub fn size(&self) -> usize {
        self.size
    }

    /// How long compiling took.
    pub fn compile_time(&self) -> Duration {
        self.compile_time
    }

    /// Whether the compiled form came from the artifact cache.
    pub fn from_cache(&self) -> bool {
        self.from_cache
    }

    /// Names of the component's imports (interfaces it needs from the host).
    pub fn imports(&self) -> &[String] {
        &self.imports
    }

    /// Names of the component's exports.
    pub fn exports(&self) -> &[String] {
        &self.exports
    }
}

/// Returns the heap a compile freed to the kernel. Compiling a large Python
/// or JavaScript component allocates hundreds of MiB across the compiler's
/// threads; the allocator keeps what they freed in its arenas (jemalloc
/// returns it only as later allocations tick its decay clock), so without
/// this a host that compiled once would idle several times larger than one
/// started from a warm cache (figures: the README's "Limits").
fn release_freed_heap() {
    // `arena.<MALLCTL_ARENAS_ALL>.purge`: every arena's unused dirty pages.
    const PURGE_ALL: &std::ffi::CStr = c"arena.4096.purge";
    // SAFETY: a purge takes no input or output (all pointers null, length
    // 0, as the control requires) and is thread-safe. It only releases
    // pages no allocation uses; where jemalloc is not the global allocator
    // (unit tests) its arenas are empty and it does nothing.
    #[allow(unsafe_code)]
    let failed = unsafe {
        tikv_jemalloc_sys::mallctl(
            PURGE_ALL.as_ptr(),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            0,
        )
    };
    if failed != 0 {
        tracing::debug!(errno = failed, "jemalloc purge refused");
    }
}

fn check_header(path: &Path, bytes: &[u8]) -> Result<(), PluginError> {
    if bytes.len() < 8 || &bytes[..4] != b"\0asm" {
        return Err(PluginError::NotWasm {
            path: path.to_owned(),
        });
    }
    // Core modules are version 1 (`01 00 00 00`); components carry a layer
    // field of 1 in bytes 6..8.
    if bytes[6..8] != [1, 0] {
        return Err(PluginError::CoreModule {
            path: path.to_owned(),
        });
    }
    Ok(())
}

fn export_names(engine: &Engine, component: &Component) -> String {
    component
        .component_type()
        .exports(engine)
        .map(|(name, _)| name.to_owned())
        .collect::<Vec<_>>()
        .join(", ")
}

/// First 12 hex digits of the SHA-256 of the component file.
pub fn content_hash(bytes: &[u8]) -> String {
    let digest = Sha256::digest(bytes);
    digest.iter().take(6).map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_check_tells_modules_components_and_garbage_apart() {
        let p = Path::new("x.wasm");
        assert!(matches!(
            check_header(p, b"hello world"),
            Err(PluginError::NotWasm { .. })
        ));
        assert!(matches!(
            check_header(p, b"\0asm\x01\0\0\0"),
            Err(PluginError::CoreModule { .. })
        ));
        assert!(check_header(p, b"\0asm\x0d\0\x01\0").is_ok());
    }

    #[test]
    fn content_hash_is_short_and_stable() {
        assert_eq!(content_hash(b"abc"), "ba7816bf8f01");
    }
}
