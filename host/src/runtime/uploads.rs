//! A new plugin version handed in by a face (the dashboard's upload): its
//! bytes written over the pipeline's plugin file (staged in a file of its
//! own, then renamed, so the watcher never reads half a file), the
//! watcher's verdict on those bytes waited for, and the previous file put
//! back after a refusal, so that a restart finds the version that serves.
//! Uploads to one file take turns, from before the face reads the bytes to
//! the restore: each waits for the verdict on its own bytes, and a restore
//! puts back the version in service.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;

use super::plugin_log::{PluginLog, ReloadOutcome};
use super::port::PipelineView;
use crate::plugin::content_hash;

/// How long an upload waits for the watcher's verdict (a large component
/// compiles for seconds).
pub const UPLOAD_VERDICT: Duration = Duration::from_secs(60);

/// Why an upload was not judged.
#[derive(Debug, thiserror::Error)]
pub enum UploadError {
    /// No pipeline of that name runs.
    #[error("no running pipeline is named {0:?}")]
    NoSuchPipeline(String),
    /// The pipeline does not watch its plugin file.
    #[error(
        "pipeline {0:?} does not watch its plugin file (--no-watch); replace the file and send SIGHUP"
    )]
    NotWatched(String),
    /// Nothing was sent.
    #[error("the upload is empty")]
    Empty,
    /// The file could not be written.
    #[error("cannot write {path}: {source}")]
    Write {
        /// The plugin file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The watcher said nothing in time.
    #[error(
        "the file was written but the watcher gave no verdict within {}s; see the plugin log",
        UPLOAD_VERDICT.as_secs()
    )]
    NoVerdict,
}

/// What became of an upload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "outcome", rename_all = "lowercase")]
pub enum UploadVerdict {
    /// The bytes are the version in service: nothing was written.
    Unchanged {
        /// The version in service.
        to: String,
    },
    /// The new version serves.
    Swapped {
        /// The version it replaced.
        from: String,
        /// The new version.
        to: Option<String>,
    },
    /// The watcher refused it; the version in service goes on.
    Refused {
        /// The version in service.
        from: String,
        /// Why it was refused.
        error: Option<String>,
        /// Whether the previous file was put back.
        restored: bool,
    },
}

/// The uploads in progress: one turn per plugin file.
#[derive(Debug, Default)]
pub struct Uploads {
    /// One lock per plugin file, held by the upload whose turn it is.
    turns: Mutex<HashMap<PathBuf, Arc<tokio::sync::Mutex<()>>>>,
    /// Numbers the staging files.
    staged: AtomicU64,
}

/// An upload whose turn it is: the face reads the bytes now, then
/// [`UploadTurn::install`]s them.
#[derive(Debug)]
pub struct UploadTurn {
    pipeline: PipelineView,
    log: Arc<PluginLog>,
    uploads: Arc<Uploads>,
    _turn: tokio::sync::OwnedMutexGuard<()>,
}

impl Uploads {
    /// The turn of uploads to `path`.
    fn turn(&self, path: &Path) -> Arc<tokio::sync::Mutex<()>> {
        let mut turns = self.turns.lock().unwrap_or_else(|e| e.into_inner());
        turns.entry(path.to_owned()).or_default().clone()
    }

    /// A staging file beside `path` that no other upload uses.
    fn staging(&self, path: &Path) -> PathBuf {
        let n = self.staged.fetch_add(1, Ordering::Relaxed);
        path.with_extension(format!("upload-{}-{n}", std::process::id()))
    }

    /// Waits for the turn of uploads to `pipeline`'s plugin file.
    pub async fn wait_turn(
        self: &Arc<Self>,
        pipeline: PipelineView,
        log: Arc<PluginLog>,
    ) -> Result<UploadTurn, UploadError> {
        if !pipeline.config.watch {
            return Err(UploadError::NotWatched(pipeline.name));
        }
        let turn = self.turn(&pipeline.config.plugin).lock_owned().await;
        Ok(UploadTurn {
            pipeline,
            log,
            uploads: self.clone(),
            _turn: turn,
        })
    }
}

impl UploadTurn {
    /// Writes `bytes` over the plugin file and waits for this pipeline's
    /// watcher's verdict on them; after a refusal, puts the previous file
    /// back. Every pipeline using that file swaps.
    pub async fn install(self, bytes: &[u8]) -> Result<UploadVerdict, UploadError> {
        if bytes.is_empty() {
            return Err(UploadError::Empty);
        }
        let p = &self.pipeline;
        let current = p.plugin.current();
        let version = content_hash(bytes);
        if version == current.version() {
            return Ok(UploadVerdict::Unchanged {
                to: current.identity(),
            });
        }
        let path = p.config.plugin.clone();
        let after = self.log.newest_seq();
        let previous = tokio::fs::read(&path).await.ok();
        let staged = self.uploads.staging(&path);
        if let Err(source) = replace_file(&staged, &path, bytes).await {
            let _ = tokio::fs::remove_file(&staged).await;
            return Err(UploadError::Write { path, source });
        }
        tracing::info!(pipeline = %p.name, path = %path.display(), bytes = bytes.len(), "plugin uploaded");
        // The verdict of this pipeline's watcher on these bytes: a watcher
        // may still be judging what an earlier upload wrote.
        let verdict = self.log.next_after(after, |e| {
            e.path == path && e.pipeline == p.name && e.judged.as_deref() == Some(&version)
        });
        let verdict = tokio::time::timeout(UPLOAD_VERDICT, verdict)
            .await
            .map_err(|_| UploadError::NoVerdict)?;
        Ok(match verdict.outcome {
            ReloadOutcome::Swapped => UploadVerdict::Swapped {
                from: verdict.from,
                to: verdict.to,
            },
            ReloadOutcome::Refused => {
                let restored = match previous {
                    Some(previous) => {
                        let staged = self.uploads.staging(&path);
                        replace_file(&staged, &path, &previous).await.is_ok()
                    }
                    None => false,
                };
                UploadVerdict::Refused {
                    from: verdict.from,
                    error: verdict.error,
                    restored,
                }
            }
        })
    }
}

/// Writes `bytes` to `staged`, then renames it over `path`.
async fn replace_file(staged: &Path, path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    tokio::fs::write(staged, bytes).await?;
    tokio::fs::rename(staged, path).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_upload_stages_in_a_file_of_its_own_and_one_file_has_one_turn() {
        let uploads = Uploads::default();
        let path = Path::new("/plugins/notify.wasm");
        let (a, b) = (uploads.staging(path), uploads.staging(path));
        assert_ne!(a, b);
        assert_eq!(a.parent(), path.parent());
        assert!(Arc::ptr_eq(&uploads.turn(path), &uploads.turn(path)));
        let other = Path::new("/plugins/analytics.wasm");
        assert!(!Arc::ptr_eq(&uploads.turn(path), &uploads.turn(other)));
    }
}
