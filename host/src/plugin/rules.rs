//! What bounds a plugin's output, shared by all its versions and stores:
//! the emit caps and accepted targets, the longest message, and the
//! pipeline's log rate gate — and the rule a plugin broke when it passed one.

use super::output::LogGate;
use crate::vocab::limits::Limits;
use crate::vocab::partition::{dedup_key, key_slot};

/// The rule a plugin broke; ends its call as a permanent failure.
#[derive(Debug, thiserror::Error)]
#[error("{detail} ({rule})")]
pub struct RuleBroken {
    /// The flag that sets the rule.
    pub rule: &'static str,
    /// What the plugin did.
    pub detail: String,
}

/// Which streams a plugin may emit to. The source stream and the DLQ are
/// refused (a feedback loop, forged dead letters) unless an `--emit-allow`
/// pattern names them literally; with patterns, only matching targets are
/// accepted at all.
#[derive(Debug, Clone, Default)]
pub struct EmitTargets {
    /// The stream being consumed.
    pub source: String,
    /// The dead-letter stream.
    pub dlq: String,
    /// `--emit-allow` patterns (`*` any run of characters, `?` one).
    pub allow: Vec<String>,
    /// On a Redis Cluster refusing cross-slot emits, the source's slot: an
    /// emit is committed with the ack in one script, so its target must
    /// live in the same slot.
    pub slot: Option<u16>,
    /// On a Redis Cluster forwarding cross-slot emits through the outbox:
    /// a target must have a slot its idempotence keys can share.
    pub forwarded: bool,
}

impl EmitTargets {
    /// `Err` with the reason if `target` is not an accepted emit target.
    pub fn check(&self, target: &str) -> Result<(), RuleBroken> {
        let refuse = |detail: String| {
            Err(RuleBroken {
                rule: "--emit-allow",
                detail,
            })
        };
        for (own, what) in [
            (&self.source, "source stream"),
            (&self.dlq, "dead-letter stream"),
        ] {
            if target == own && !self.allow.iter().any(|p| p == target) {
                return refuse(format!(
                    "plugin emitted to the {what} {target:?}, which is refused unless allowed by name"
                ));
            }
        }
        if !self.allow.is_empty() && !self.allow.iter().any(|p| glob(p, target)) {
            return refuse(format!(
                "plugin emitted to {target:?}, which matches no allowed pattern"
            ));
        }
        if self.forwarded && dedup_key(target).is_none() {
            return Err(RuleBroken {
                rule: "--cluster",
                detail: format!(
                    "plugin emitted to {target:?}, whose empty hash tag leaves no key in its slot for the idempotence keys of forwarded emits"
                ),
            });
        }
        if let Some(slot) = self.slot {
            let theirs = key_slot(target.as_bytes());
            if theirs != slot {
                return Err(RuleBroken {
                    rule: "--cluster",
                    detail: format!(
                        "plugin emitted to {target:?} (cluster slot {theirs}), not in the slot of {:?} ({slot}): on a cluster an emit is committed with its ack in one single-slot script; emit to a stream sharing the source's hash tag (e.g. {})",
                        self.source,
                        same_slot_example(&self.source)
                    ),
                });
            }
        }
        Ok(())
    }
}

/// A stream name in the same slot as `source`: with its hash tag.
fn same_slot_example(source: &str) -> String {
    let tag = source
        .find('{')
        .and_then(|open| {
            source[open..]
                .find('}')
                .map(|close| &source[open..open + close + 1])
        })
        .filter(|t| t.len() > 2);
    match tag {
        Some(tag) => format!("{tag}:out"),
        None => format!("{{{source}}}:out, with the source renamed {{{source}}}"),
    }
}

/// Whether `text` matches `pattern`, where `*` matches any run of
/// characters and `?` any one character.
pub fn glob(pattern: &str, text: &str) -> bool {
    let (p, t): (Vec<char>, Vec<char>) = (pattern.chars().collect(), text.chars().collect());
    let (mut pi, mut ti) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some((pi, ti));
            pi += 1;
        } else if let Some((sp, st)) = star {
            pi = sp + 1;
            ti = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

/// What bounds a plugin's output; shared by all its versions and stores.
#[derive(Debug)]
pub struct OutputRules {
    /// Entries one call may emit.
    pub max_emits: usize,
    /// Bytes one call may emit (names, values and overheads).
    pub max_emit_bytes: usize,
    /// Fields one emitted entry may have.
    pub max_fields: usize,
    /// Longest message, line or failure reason.
    pub max_message_size: usize,
    /// Accepted emit targets.
    pub targets: EmitTargets,
    /// The pipeline's log rate limit.
    pub gate: LogGate,
}

impl OutputRules {
    /// The rules `limits` and `targets` set.
    pub fn new(limits: &Limits, targets: EmitTargets) -> Self {
        Self {
            max_emits: limits.max_emits,
            max_emit_bytes: usize::try_from(limits.max_emit_bytes.0).unwrap_or(usize::MAX),
            max_fields: limits.max_fields,
            max_message_size: usize::try_from(limits.max_message_size.0).unwrap_or(usize::MAX),
            targets,
            gate: LogGate::new(limits.max_log_rate),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs_match_stars_and_question_marks() {
        assert!(glob("out:*", "out:orders"));
        assert!(glob("*", ""));
        assert!(glob("a?c", "abc") && !glob("a?c", "ac"));
        assert!(glob("*:enriched", "orders:enriched"));
        assert!(!glob("out:*", "other"));
        assert!(glob("a*b*c", "aXbYbZc"));
    }

    #[test]
    fn source_and_dlq_need_a_literal_allow() {
        let mut t = EmitTargets {
            source: "orders".into(),
            dlq: "orders:dlq".into(),
            slot: None,
            forwarded: false,
            allow: vec![],
        };
        assert!(t.check("orders:out").is_ok());
        assert!(t.check("orders").is_err());
        assert!(t.check("orders:dlq").is_err());
        t.allow = vec!["*".into()];
        assert!(
            t.check("orders").is_err(),
            "a wildcard does not open a loop"
        );
        t.allow = vec!["orders".into(), "x:*".into()];
        assert!(t.check("orders").is_ok());
        assert!(t.check("x:1").is_ok());
        assert!(
            t.check("y:1")
                .unwrap_err()
                .to_string()
                .contains("--emit-allow")
        );
    }

    #[test]
    fn on_a_cluster_an_emit_stays_in_the_sources_slot() {
        let t = EmitTargets {
            source: "{orders:3}".into(),
            dlq: "{orders:3}:dlq".into(),
            allow: Vec::new(),
            slot: Some(key_slot(b"{orders:3}")),
            forwarded: false,
        };
        assert!(t.check("{orders:3}:receipts").is_ok());
        let e = t.check("notifications:outbox").unwrap_err();
        assert_eq!(e.rule, "--cluster");
        assert!(e.detail.contains("{orders:3}:out"), "{e}");
        let unpartitioned = EmitTargets {
            source: "orders".into(),
            slot: Some(key_slot(b"orders")),
            ..t
        };
        let e = unpartitioned.check("elsewhere").unwrap_err();
        assert!(e.detail.contains("{orders}:out"), "{e}");
    }
}
