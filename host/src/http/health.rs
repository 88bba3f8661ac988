//! `/healthz` and `/readyz` as pure verdicts over what the process and Redis
//! say. Liveness: the process is not draining and no task of a pipeline has
//! ended. Readiness: that, plus Redis answers, every declared pipeline runs
//! with its plugin loaded, and its group exists.

use serde::Serialize;

use super::probe::RedisLook;

/// An endpoint's answer: ok, or the reasons it is not.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HealthAnswer {
    /// `ok` or `unavailable`.
    pub status: &'static str,
    /// What is wrong (absent when ok).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub reasons: Vec<String>,
}

impl HealthAnswer {
    fn of(reasons: Vec<String>) -> Self {
        Self {
            status: if reasons.is_empty() {
                "ok"
            } else {
                "unavailable"
            },
            reasons,
        }
    }

    /// Whether everything is fine.
    pub fn is_ok(&self) -> bool {
        self.reasons.is_empty()
    }
}

/// A running pipeline, as far as health is concerned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PipelineState {
    /// Its name.
    pub name: String,
    /// Its stream.
    pub stream: String,
    /// Its group.
    pub group: String,
    /// The task that ended unexpectedly and how, if one did.
    pub failed: Option<(String, String)>,
}

/// Liveness.
pub fn liveness(draining: bool, running: &[PipelineState]) -> HealthAnswer {
    let mut reasons = Vec::new();
    if draining {
        reasons.push("draining: the process is shutting down".to_owned());
    }
    for p in running {
        if let Some((task, how)) = &p.failed {
            reasons.push(format!("pipeline {:?}: the {task} task {how}", p.name));
        }
    }
    HealthAnswer::of(reasons)
}

/// Readiness: liveness, plus Redis, the declared pipelines and their groups.
pub fn readiness(
    draining: bool,
    declared: &[String],
    running: &[PipelineState],
    redis: &RedisLook,
) -> HealthAnswer {
    let mut reasons = liveness(draining, running).reasons;
    if let Some(why) = &redis.down {
        reasons.push(format!("redis: {why}"));
    }
    for name in declared {
        let Some(p) = running.iter().find(|p| &p.name == name) else {
            reasons.push(format!(
                "pipeline {name:?}: not running (its plugin is not loaded yet, or it is restarting)"
            ));
            continue;
        };
        let key = (p.stream.clone(), p.group.clone());
        if redis.down.is_none() && !matches!(redis.groups.get(&key), Some(Some(_))) {
            reasons.push(format!(
                "pipeline {name:?}: group {:?} does not exist on stream {:?}",
                p.group, p.stream
            ));
        }
    }
    HealthAnswer::of(reasons)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::super::probe::GroupLook;
    use super::*;

    fn state(name: &str, failed: Option<(&str, &str)>) -> PipelineState {
        PipelineState {
            name: name.into(),
            stream: format!("{name}:s"),
            group: "g".into(),
            failed: failed.map(|(t, h)| (t.into(), h.into())),
        }
    }

    fn redis_with(groups: &[&str]) -> RedisLook {
        let look = GroupLook {
            lag: Some(0),
            pending: 0,
            oldest_pending_age: None,
        };
        RedisLook {
            down: None,
            groups: groups
                .iter()
                .map(|n| ((format!("{n}:s"), "g".to_owned()), Some(look.clone())))
                .collect::<BTreeMap<_, _>>(),
        }
    }

    #[test]
    fn live_until_draining_or_a_task_ends() {
        assert!(liveness(false, &[state("a", None)]).is_ok());
        let draining = liveness(true, &[state("a", None)]);
        assert_eq!(draining.status, "unavailable");
        assert!(draining.reasons[0].contains("draining"));
        let failed = liveness(false, &[state("a", Some(("committer", "panicked: x")))]);
        assert_eq!(
            failed.reasons,
            ["pipeline \"a\": the committer task panicked: x"]
        );
    }

    #[test]
    fn ready_names_each_thing_that_is_not() {
        let declared = ["a".to_owned(), "b".to_owned()];
        let running = [state("a", None), state("b", None)];
        assert!(readiness(false, &declared, &running, &redis_with(&["a", "b"])).is_ok());
        let v = readiness(false, &declared, &running[..1], &redis_with(&["a"]));
        assert_eq!(v.reasons.len(), 1);
        assert!(
            v.reasons[0].starts_with("pipeline \"b\": not running"),
            "{v:?}"
        );
        let v = readiness(false, &declared, &running, &redis_with(&["a"]));
        assert!(v.reasons[0].contains("group \"g\" does not exist"), "{v:?}");
        let down = RedisLook {
            down: Some("connection refused".into()),
            groups: BTreeMap::new(),
        };
        let v = readiness(false, &declared, &running, &down);
        assert_eq!(v.reasons, ["redis: connection refused"]);
        let json = serde_json::to_string(&readiness(false, &[], &[], &redis_with(&[]))).unwrap();
        assert_eq!(json, r#"{"status":"ok"}"#);
    }
}
