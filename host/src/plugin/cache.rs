//! An on-disk cache of compiled components, keyed by the component's SHA-256
//! and the engine's compatibility hash, so restarts with large (Python, JS)
//! components take milliseconds instead of seconds.
//!
//! Loading a precompiled artifact runs native code from disk, so the cache
//! only ever loads entries this host wrote itself, for the component it is
//! loading: every artifact carries an HMAC-SHA256, under a random key kept in
//! the cache directory, over the component's identity (its SHA-256 and the
//! engine's compatibility hash) and the artifact; anything without a valid
//! tag is ignored and recompiled. The key file is trusted only if it is a
//! regular file (not a symlink) owned by this user and private to it;
//! otherwise the cache is off. A directory the operator named is never
//! chmodded: only one the cache creates gets mode 0700.

use std::fs;
use std::hash::{Hash, Hasher};
use std::io::{Read, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use wasmtime::Engine;
use wasmtime::component::Component;

type Tag = Hmac<Sha256>;

/// Largest artifact read back (a compiled 18 MB Python component is ~100 MB).
const MAX_ARTIFACT: u64 = 1 << 30;

/// A directory of compiled artifacts this host can trust.
#[derive(Debug, Clone)]
pub struct ArtifactCache {
    dir: PathBuf,
    key: Vec<u8>,
}

fn refuse(path: &Path, why: impl std::fmt::Display) -> std::io::Error {
    std::io::Error::new(
        std::io::ErrorKind::PermissionDenied,
        format!("{}: {why}", path.display()),
    )
}

/// Opens `path` for reading without following a symlink, and only if it is
/// a regular file owned by this user that nobody else can read or write.
fn open_private(path: &Path) -> std::io::Result<fs::File> {
    let file = fs::OpenOptions::new()
        .read(true)
        .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
        .open(path)?;
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Err(refuse(path, "not a regular file"));
    }
    let me = rustix::process::geteuid().as_raw();
    if meta.uid() != me {
        return Err(refuse(
            path,
            format!("owned by uid {}, not by this user ({me})", meta.uid()),
        ));
    }
    if meta.mode() & 0o077 != 0 {
        return Err(refuse(
            path,
            format!(
                "mode {:o}: others may read or write it (it must be 0600)",
                meta.mode() & 0o777
            ),
        ));
    }
    Ok(file)
}

impl ArtifactCache {
    /// Opens (creating if needed) the cache in `dir`. `None`, with a warning,
    /// if the directory or its key cannot be set up or trusted: the cache is
    /// an optimisation, never a reason not to start.
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
        if !dir.exists() {
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)?;
        }
        let key_path = dir.join("key");
        let key = match open_private(&key_path) {
            Ok(mut f) => {
                let mut key = Vec::new();
                f.read_to_end(&mut key)?;
                key
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(e),
        };
        let key = if key.len() == 32 {
            key
        } else {
            // Missing (or ours but torn): another host process may race us,
            // and whichever key wins the rename is the one both read back.
            let fresh: [u8; 32] = rand::random();
            write_private(&key_path, &[&fresh])?;
            let mut key = Vec::new();
            open_private(&key_path)?.read_to_end(&mut key)?;
            key
        };
        Ok(Self {
            dir: dir.to_owned(),
            key,
        })
    }

    /// The component's identity: its SHA-256 and the engine's compatibility hash.
    fn identity(engine: &Engine, bytes: &[u8]) -> (String, u64) {
        let mut h = std::hash::DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut h);
        let digest: String = Sha256::digest(bytes)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        (digest, h.finish())
    }

    fn entry(&self, id: &(String, u64)) -> PathBuf {
        self.dir.join(format!("{}-{:016x}.cwasm", id.0, id.1))
    }

    fn tag(&self, id: &(String, u64), artifact: &[u8]) -> Tag {
        let mut mac = Tag::new_from_slice(&self.key).expect("HMAC accepts any key length");
        mac.update(b"streamhost artifact v2\0");
        mac.update(id.0.as_bytes());
        mac.update(&id.1.to_le_bytes());
        mac.update(artifact);
        mac
    }

    /// The compiled form of `bytes` if this host cached it before.
    pub fn load(&self, engine: &Engine, bytes: &[u8]) -> Option<Component> {
        let id = Self::identity(engine, bytes);
        let path = self.entry(&id);
        let mut stored = Vec::new();
        let read = open_private(&path).and_then(|f| f.take(MAX_ARTIFACT).read_to_end(&mut stored));
        if let Err(e) = read {
            if e.kind() != std::io::ErrorKind::NotFound {
                tracing::warn!(path = %path.display(), error = %e, "ignoring a cached artifact");
            }
            return None;
        }
        if stored.len() < 32 {
            return None;
        }
        let (tag, artifact) = stored.split_at(32);
        if self.tag(&id, artifact).verify_slice(tag).is_err() {
            tracing::warn!(path = %path.display(), "ignoring a cached artifact this host did not write for this component");
            return None;
        }
        // SAFETY: `deserialize` trusts its input to be an artifact produced by
        // `Component::serialize` of a compatible engine. The HMAC check above
        // proves this host wrote these exact bytes for this very component
        // and engine (only it holds the key, which only it can read);
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

    /// Stores `artifact`, the serialized compiled form of `bytes`; failures
    /// are logged, not returned.
    pub fn store(&self, engine: &Engine, bytes: &[u8], artifact: &[u8]) {
        let id = Self::identity(engine, bytes);
        let path = self.entry(&id);
        let tag = self.tag(&id, artifact).finalize().into_bytes();
        if let Err(e) = write_private(&path, &[&tag, artifact]) {
            tracing::debug!(path = %path.display(), error = %e, "could not cache the compiled plugin");
        }
    }
}

/// Writes `parts` to `path` atomically: a new private file (never an
/// existing one, never through a symlink) renamed over it.
fn write_private(path: &Path, parts: &[&[u8]]) -> std::io::Result<()> {
    let tmp = path.with_extension(format!(
        "{}.{:016x}.tmp",
        std::process::id(),
        rand::random::<u64>()
    ));
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)?;
    let written = parts
        .iter()
        .try_for_each(|part| f.write_all(part))
        .and_then(|()| f.sync_all())
        .and_then(|()| fs::rename(&tmp, path));
    if written.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    written
}

/// The default cache directory: `$XDG_CACHE_HOME/streamhost` or `~/.cache/streamhost`.
pub fn default_dir() -> Option<PathBuf> {
    std::env::var_os("XDG_CACHE_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .map(|base| base.join("streamhost"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn trusts_only_a_private_regular_key_file_of_its_own() {
        let dir = tempfile::tempdir().unwrap();
        let cache = dir.path().join("c");
        assert!(ArtifactCache::open(&cache).is_some(), "created");
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&cache), 0o700);
        assert_eq!(mode(&cache.join("key")), 0o600);
        assert!(ArtifactCache::open(&cache).is_some(), "reopened");

        fs::set_permissions(cache.join("key"), fs::Permissions::from_mode(0o644)).unwrap();
        assert!(
            ArtifactCache::open(&cache).is_none(),
            "a key others can read"
        );
        fs::set_permissions(cache.join("key"), fs::Permissions::from_mode(0o600)).unwrap();

        let elsewhere = dir.path().join("elsewhere");
        fs::rename(cache.join("key"), &elsewhere).unwrap();
        std::os::unix::fs::symlink(&elsewhere, cache.join("key")).unwrap();
        assert!(ArtifactCache::open(&cache).is_none(), "a symlinked key");
    }

    #[test]
    fn never_chmods_a_directory_it_did_not_create() {
        let dir = tempfile::tempdir().unwrap();
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
        assert!(ArtifactCache::open(dir.path()).is_some());
        let mode = fs::metadata(dir.path()).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o755);
    }
}
