//! Everything about a pipeline that can be refused before touching Redis:
//! its configuration, and its plugin, compiled.

use std::sync::Arc;

use super::RunError;
use crate::config::{CrossSlotEmits, RunConfig};
use crate::plugin::{EmitTargets, LoadedPlugin, PluginEngine, PluginError, PluginSettings};
use crate::vocab::partition::key_slot;

/// A validated pipeline with its plugin compiled, ready to start.
#[derive(Debug)]
pub struct Prepared {
    /// The engine, kept to compile later versions of the plugin.
    pub engine: PluginEngine,
    /// Limits and configuration every version runs with.
    pub settings: PluginSettings,
    /// The version to start with.
    pub plugin: Arc<LoadedPlugin>,
}

/// Validates `config` and loads its plugin: everything that can be refused
/// before touching Redis. Blocking (compiles the component).
pub fn prepare(config: &RunConfig) -> Result<Prepared, RunError> {
    config.validate()?;
    // A fresh instance per entry makes instantiation the hot path: take
    // instances from a pool (each worker holds at most one at a time).
    let engine = if config.fresh_instance {
        PluginEngine::pooled(config.concurrency as u32 * 2 + 8, config.max_memory)?
    } else {
        PluginEngine::new()?
    }
    .with_cache(config.cache_dir.as_deref());
    let targets = EmitTargets {
        source: config.stream.clone(),
        dlq: config.dlq.clone(),
        allow: config.emit_allow.clone(),
        slot: (config.redis.cluster && config.cross_slot_emits == CrossSlotEmits::Refuse)
            .then(|| key_slot(config.stream.as_bytes())),
        forwarded: config.redis.cluster && config.cross_slot_emits == CrossSlotEmits::Outbox,
    };
    let settings = PluginSettings::new(config.plugin_config.clone(), &config.limits(), targets);
    let plugin = engine
        .load(&config.plugin, &settings)
        .map_err(|e: PluginError| RunError::Plugin(e))?;
    Ok(Prepared {
        engine,
        settings,
        plugin,
    })
}
