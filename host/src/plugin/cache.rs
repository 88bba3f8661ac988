//! An on-disk cache of compiled components, keyed by the component's SHA-256
//! and the engine's compatibility hash, so restarts with large (Python, JS)
//! components take milliseconds instead of seconds.
//!
//! Loading a precompiled artifact runs native code from disk, so the cache
//! only ever loads entries this host wrote itself: every artifact carries an
//! HMAC-SHA256 under a random key kept in the cache directory (mode 0600);
//! anything without a valid tag is ignored and recompiled.

use std::fs;
use std::hash::{Hash, Hasher};
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use wasmtime::Engine;
use wasmtime::component::Component;

type Tag = Hmac<Sha256>;

/// A directory of compiled artifacts this host can trust.
#[derive(Debug, Clone)]
pub struct ArtifactCache {
    dir: PathBuf,
    key: Vec<u8>,
}

impl ArtifactCache {
    /// Opens (creating if needed) the cache in `dir`. `None`, with a warning,
    /// if the directory or its key cannot be set up: the cache is an
    /// optimisation, never a reason not to start.
    pub fn open(dir: &Path) -> Option<Self> {
        match Self::try_open(dir) {
            Ok(cache) => Some(cache),
            Err(e) => {
                tracing::warn!(dir = %dir.display(), error = %e, "compiled-artifact cache disabled");
                None
            }
        }
    }

    fn try_open(dir: &Path) -> std::io::Result<Self> {
        fs::create_dir_all(dir)?;
        fs::set_permissions(dir, fs::Permissions::from_mode(0o700))?;
        let key_path = dir.join("key");
        let key = match fs::read(&key_path) {
            Ok(k) if k.len() == 32 => k,
            _ => {
                let key: [u8; 32] = rand::random();
                // Another host process may have raced us: whichever key wins
                // the rename is the one both then read back.
                write_private(&key_path, &[&key])?;
                fs::read(&key_path)?
            }
        };
        Ok(Self {
            dir: dir.to_owned(),
            key,
        })
    }

    fn entry(&self, engine: &Engine, bytes: &[u8]) -> PathBuf {
        let mut h = std::hash::DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut h);
        let digest: String = Sha256::digest(bytes)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        self.dir.join(format!("{digest}-{:016x}.cwasm", h.finish()))
    }

    fn tag(&self, artifact: &[u8]) -> Tag {
        let mut mac = Tag::new_from_slice(&self.key).expect("HMAC accepts any key length");
        mac.update(artifact);
        mac
    }

    /// The compiled form of `bytes` if this host cached it before.
    pub fn load(&self, engine: &Engine, bytes: &[u8]) -> Option<Component> {
        let path = self.entry(engine, bytes);
        let stored = fs::read(&path).ok()?;
        if stored.len() < 32 {
            return None;
        }
        let (tag, artifact) = stored.split_at(32);
        if self.tag(artifact).verify_slice(tag).is_err() {
            tracing::warn!(path = %path.display(), "ignoring a cached artifact this host did not write");
            return None;
        }
        // SAFETY: `deserialize` trusts its input to be an artifact produced by
        // `Component::serialize` of a compatible engine. The HMAC check above
        // proves this host wrote these exact bytes (only it holds the key),
        // and the file name binds them to this engine's compatibility hash;
        // wasmtime re-checks the version and configuration on load as well.
        #[allow(unsafe_code)]
        let component = unsafe { Component::deserialize(engine, artifact) };
        match component {
            Ok(c) => Some(c),
            Err(e) => {
                tracing::debug!(path = %path.display(), error = %format!("{e:#}"), "unusable cached artifact; recompiling");
                None
            }
        }
    }

    /// Stores the compiled form of `bytes`; failures are logged, not returned.
    pub fn store(&self, engine: &Engine, bytes: &[u8], component: &Component) {
        let path = self.entry(engine, bytes);
        let result = component
            .serialize()
            .map_err(|e| format!("{e:#}"))
            .and_then(|artifact| {
                let tag = self.tag(&artifact).finalize().into_bytes();
                write_private(&path, &[&tag, &artifact]).map_err(|e| e.to_string())
            });
        if let Err(e) = result {
            tracing::debug!(path = %path.display(), error = %e, "could not cache the compiled plugin");
        }
    }
}

/// Writes `parts` to `path` atomically (a private temporary file, renamed
/// over), readable by this user only.
fn write_private(path: &Path, parts: &[&[u8]]) -> std::io::Result<()> {
    let tmp = path.with_extension(format!("{}.tmp", std::process::id()));
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    for part in parts {
        f.write_all(part)?;
    }
    f.sync_all()?;
    fs::rename(&tmp, path)
}

/// The default cache directory: `$XDG_CACHE_HOME/streamhost` or `~/.cache/streamhost`.
pub fn default_dir() -> Option<PathBuf> {
    std::env::var_os("XDG_CACHE_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .map(|base| base.join("streamhost"))
}
