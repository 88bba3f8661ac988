//! Live reload as a diff: which pipelines of a new configuration start,
//! which stop, which restart with new settings, and which are left alone.

use crate::config::{Config, RunConfig, changed_keys};

/// What applying a new configuration takes.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Plan {
    /// Pipelines to start.
    pub added: Vec<RunConfig>,
    /// Pipelines to drain and drop, by name.
    pub removed: Vec<String>,
    /// Pipelines to drain and start again, with the keys that changed.
    pub changed: Vec<(RunConfig, Vec<String>)>,
    /// Pipelines left running as they are.
    pub unchanged: Vec<String>,
}

impl Plan {
    /// Whether applying it would touch nothing.
    pub fn is_empty(&self) -> bool {
        self.added.is_empty() && self.removed.is_empty() && self.changed.is_empty()
    }
}

/// Compares pipelines by name. A new plugin *file* at the same path is not a
/// change here: the plugin watcher hot-swaps it without a restart.
pub fn diff(old: &Config, new: &Config) -> Plan {
    let mut plan = Plan::default();
    for p in &new.pipelines {
        match old.pipelines.iter().find(|o| o.name == p.name) {
            None => plan.added.push(p.clone()),
            Some(o) if o == p => plan.unchanged.push(p.name.clone()),
            Some(o) => plan.changed.push((p.clone(), changed_keys(o, p))),
        }
    }
    plan.removed = old
        .pipelines
        .iter()
        .filter(|o| !new.pipelines.iter().any(|p| p.name == o.name))
        .map(|o| o.name.clone())
        .collect();
    plan
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pipeline(name: &str) -> RunConfig {
        RunConfig {
            name: name.into(),
            group: name.into(),
            ..crate::config::sample()
        }
    }

    #[test]
    fn a_reload_touches_only_what_changed() {
        let old = Config {
            pipelines: vec![pipeline("keep"), pipeline("tune"), pipeline("drop")],
            source: None,
            http: None,
            dashboard: Default::default(),
        };
        let mut tuned = pipeline("tune");
        tuned.batch = 50;
        tuned.plugin = "other.wasm".into();
        let new = Config {
            pipelines: vec![pipeline("keep"), tuned.clone(), pipeline("add")],
            source: None,
            http: None,
            dashboard: Default::default(),
        };
        let plan = diff(&old, &new);
        assert_eq!(plan.unchanged, ["keep"]);
        assert_eq!(plan.removed, ["drop"]);
        assert_eq!(plan.added, [pipeline("add")]);
        assert_eq!(
            plan.changed,
            [(tuned, vec!["plugin".to_owned(), "batch".to_owned()])]
        );
        assert!(diff(&old, &old).is_empty());
    }
}
