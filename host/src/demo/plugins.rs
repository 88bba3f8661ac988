//! The plugins `host demo` runs, compiled into the binary by `build.rs` and
//! written to a temporary directory at start: the pipelines load them from
//! there, and the plugin watcher (and the dashboard's upload) can replace
//! them there as with any plugin file.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::leftovers::{LeftoverDir, Leftovers};

/// `plugins/notify` built for wasm32-wasip2.
pub const NOTIFY: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/notify.wasm"));
/// `plugins/analytics` built for wasm32-wasip2.
pub const ANALYTICS: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/analytics.wasm"));

/// The embedded plugins as files, removed on drop.
#[derive(Debug)]
pub struct PluginFiles {
    dir: LeftoverDir,
}

impl PluginFiles {
    /// Writes `notify.wasm` and `analytics.wasm` to a new temporary
    /// directory, registered in `leftovers`.
    pub fn write(leftovers: &Arc<Leftovers>) -> io::Result<Self> {
        let dir = leftovers.tempdir("streamhost-demo-plugins-")?;
        std::fs::write(dir.path().join("notify.wasm"), NOTIFY)?;
        std::fs::write(dir.path().join("analytics.wasm"), ANALYTICS)?;
        Ok(Self { dir })
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The notify plugin's file.
    pub fn notify(&self) -> PathBuf {
        self.dir.path().join("notify.wasm")
    }

    /// The analytics plugin's file.
    pub fn analytics(&self) -> PathBuf {
        self.dir.path().join("analytics.wasm")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_embedded_plugins_are_valid_handler_components() {
        let files = PluginFiles::write(&Leftovers::new()).unwrap();
        for (path, name) in [(files.notify(), "notify"), (files.analytics(), "analytics")] {
            let report = crate::ops::plugin_check::check(&path)
                .unwrap_or_else(|e| panic!("{} is refused: {e}", path.display()));
            assert_eq!(report.name, name);
        }
    }
}
