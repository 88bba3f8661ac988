//! `host check`: validates a plugin file against the contract without
//! touching Redis, and describes it.

use std::path::Path;

use serde::Serialize;

use crate::plugin::{EmitTargets, PluginEngine, PluginError, PluginSettings, WORLD};

/// What `host check` reports about a valid plugin.
#[derive(Debug, Clone, Serialize)]
pub struct CheckReport {
    /// The file checked.
    pub path: String,
    /// The world it implements.
    pub world: &'static str,
    /// Plugin name (file stem).
    pub name: String,
    /// Short content hash.
    pub version: String,
    /// `name@version`, as it appears in logs and DLQ records.
    pub identity: String,
    /// File size in bytes.
    pub size_bytes: usize,
    /// Time to compile it on this machine, in milliseconds.
    pub compile_ms: u64,
    /// Interfaces it imports.
    pub imports: Vec<String>,
    /// What it exports.
    pub exports: Vec<String>,
}

/// Compiles and type-checks `path` (blocking).
pub fn check(path: &Path) -> Result<CheckReport, PluginError> {
    let engine = PluginEngine::new()?;
    let limits = crate::vocab::limits::Limits::default();
    let settings = PluginSettings::new(Default::default(), &limits, EmitTargets::default());
    let plugin = engine.load(path, &settings)?;
    Ok(CheckReport {
        path: path.display().to_string(),
        world: WORLD,
        name: plugin.name().to_owned(),
        version: plugin.version().to_owned(),
        identity: plugin.identity(),
        size_bytes: plugin.size(),
        compile_ms: plugin.compile_time().as_millis() as u64,
        imports: plugin.imports().to_vec(),
        exports: plugin.exports().to_vec(),
    })
}

impl CheckReport {
    /// The human-readable form.
    pub fn render(&self) -> String {
        let mut out = format!(
            "{path}: ok — implements {world}\n  identity  {identity}\n  size      {size} bytes\n  compile   {ms} ms\n  exports   {exports}\n  imports\n",
            path = self.path,
            world = self.world,
            identity = self.identity,
            size = self.size_bytes,
            ms = self.compile_ms,
            exports = self.exports.join(", "),
        );
        for i in &self.imports {
            out.push_str(&format!("    {i}\n"));
        }
        out
    }
}
