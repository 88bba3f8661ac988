//! The plugin version in service. A hot swap replaces the `Arc` here; calls
//! in flight keep the version they started with, and each worker picks up the
//! new one before its next call by comparing generations (one atomic load).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use super::LoadedPlugin;

/// The current plugin version and how many times it was replaced.
#[derive(Debug)]
pub struct PluginSlot {
    current: RwLock<Arc<LoadedPlugin>>,
    generation: AtomicU64,
}

impl PluginSlot {
    /// A slot serving `plugin`.
    pub fn new(plugin: Arc<LoadedPlugin>) -> Arc<Self> {
        Arc::new(Self {
            current: RwLock::new(plugin),
            generation: AtomicU64::new(0),
        })
    }

    /// The version new calls should use.
    pub fn current(&self) -> Arc<LoadedPlugin> {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Changes whenever the version is replaced.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// Puts `plugin` in service and returns the version it replaces.
    pub fn swap(&self, plugin: Arc<LoadedPlugin>) -> Arc<LoadedPlugin> {
        let old = std::mem::replace(
            &mut *self.current.write().unwrap_or_else(|e| e.into_inner()),
            plugin,
        );
        self.generation.fetch_add(1, Ordering::Release);
        old
    }
}
