//! What one process runs: its pipelines, the rules between them, and the
//! file they came from (read again on reload).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::{ConfigError, Dashboard, HttpListen, RunConfig};

/// Everything one process runs: its pipelines, and where they came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// The pipelines, in the order they were declared.
    pub pipelines: Vec<RunConfig>,
    /// The file they were read from, watched for live reload (`None`: flags).
    pub source: Option<Source>,
    /// Where the metrics and health endpoints listen (`--http`, `[http]
    /// listen`); process-level: a reload does not move the listener.
    pub http: Option<HttpListen>,
    /// What the dashboard on the listener may do (`--http-admin`, `host demo`).
    pub dashboard: Dashboard,
}

/// Reads a configuration file into a validated [`Config`] (or says why not).
pub type Loader = dyn Fn(&Path) -> Result<Config, String> + Send + Sync;

/// A config file and how to read it again on reload.
#[derive(Clone)]
pub struct Source {
    path: PathBuf,
    load: Arc<Loader>,
}

impl Source {
    /// `path`, read by `load`.
    pub fn new(path: PathBuf, load: Arc<Loader>) -> Self {
        Self { path, load }
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Reads and validates the file as it is now.
    pub fn load(&self) -> Result<Config, String> {
        (self.load)(&self.path)
    }
}

impl PartialEq for Source {
    fn eq(&self, other: &Self) -> bool {
        self.path == other.path
    }
}

impl Eq for Source {}

impl std::fmt::Debug for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Source").field(&self.path).finish()
    }
}

/// A pipeline whose configuration cannot work.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("pipeline {name:?}: {error}")]
pub struct PipelineError {
    /// Its position among the declared pipelines.
    pub index: usize,
    /// Its name.
    pub name: String,
    /// What is wrong.
    pub error: ConfigError,
}

impl Config {
    /// One pipeline from flags.
    pub fn single(pipeline: RunConfig) -> Self {
        Self {
            pipelines: vec![pipeline],
            source: None,
            http: None,
            dashboard: Dashboard::default(),
        }
    }

    /// Checks every pipeline, then the rules between them: unique names, one
    /// consumer per stream and group (several consumers of one group may
    /// share a process: the dashboard's "add consumer"), one Redis
    /// connection for all.
    pub fn validate(&self) -> Result<(), PipelineError> {
        let at = |index: usize, error: ConfigError| PipelineError {
            index,
            name: self.pipelines[index].name.clone(),
            error,
        };
        if self.pipelines.is_empty() {
            return Err(PipelineError {
                index: 0,
                name: String::new(),
                error: ConfigError::Conflict {
                    flags: &["name"],
                    message: "no pipeline is declared (add a [[pipeline]] table)".into(),
                },
            });
        }
        let mut names = HashMap::new();
        let mut groups = HashMap::new();
        for (i, p) in self.pipelines.iter().enumerate() {
            p.validate().map_err(|e| at(i, e))?;
            if let Some(first) = names.insert(p.name.as_str(), i) {
                return Err(at(
                    i,
                    ConfigError::Conflict {
                        flags: &["name", "group"],
                        message: format!(
                            "the name {:?} is already taken by pipeline #{} (names must be unique; the default is the group)",
                            p.name,
                            first + 1
                        ),
                    },
                ));
            }
            if let Some(first) = groups.insert(
                (p.stream.as_str(), p.group.as_str(), p.consumer.as_str()),
                i,
            ) {
                return Err(at(
                    i,
                    ConfigError::Conflict {
                        flags: &["group", "consumer", "stream", "name"],
                        message: format!(
                            "pipeline {:?} already consumes stream {:?} as group {:?} with consumer {:?}; two pipelines cannot share one consumer's pending entries (give each its own `consumer`, or raise `concurrency`)",
                            self.pipelines[first].name, p.stream, p.group, p.consumer
                        ),
                    },
                ));
            }
            if p.redis != self.pipelines[0].redis {
                return Err(at(
                    i,
                    ConfigError::Conflict {
                        flags: &["redis"],
                        message: "every pipeline of a process uses the same Redis connection"
                            .into(),
                    },
                ));
            }
        }
        Ok(())
    }
}
