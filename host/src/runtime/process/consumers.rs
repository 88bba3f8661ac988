//! Consumers added from a face: which pipeline a new consumer of a group
//! copies, and the name it gets — the next free one of the family it joins
//! (`notifications-3` after `notifications-2`), skipping every name this
//! process runs and every consumer Redis knows in the group.

use std::collections::BTreeSet;
use std::time::Duration;

use crate::config::{Config, RunConfig};
use crate::stream::consumers;

/// Consumers of the group read to avoid their names: a group with a
/// hostile number of consumers costs the process no more than this many.
const KNOWN_CONSUMERS_READ: usize = 10_000;
/// How long asking Redis for them may take.
const ASK_TIMEOUT: Duration = Duration::from_secs(5);

/// The pipeline a new consumer of `group` (on `stream`, if given) copies:
/// the group's first running pipeline by name.
pub(super) fn template<'a>(
    config: &'a Config,
    running: impl Fn(&str) -> bool,
    group: &str,
    stream: Option<&str>,
) -> Option<&'a RunConfig> {
    config
        .pipelines
        .iter()
        .filter(|p| p.group == group && stream.is_none_or(|s| s == p.stream) && running(&p.name))
        .min_by(|a, b| a.name.cmp(&b.name))
}

/// A copy of `template` under the next free name of its family, used as
/// both the pipeline's and the consumer's name.
pub(super) async fn copy(config: &Config, template: &RunConfig) -> Result<RunConfig, String> {
    let mut taken: BTreeSet<String> = config
        .pipelines
        .iter()
        .flat_map(|p| [p.name.clone(), p.consumer.clone()])
        .collect();
    taken.extend(known_in_redis(template).await?);
    let base = base_name(&template.consumer);
    let name = (1..)
        .map(|k| format!("{base}-{k}"))
        .find(|n| !taken.contains(n))
        .unwrap_or_default();
    let mut added = template.clone();
    added.name = name.clone();
    added.consumer = name;
    Ok(added)
}

/// The consumers Redis knows in `template`'s group.
async fn known_in_redis(template: &RunConfig) -> Result<Vec<String>, String> {
    let ask = async {
        let endpoint = template.redis.endpoint().map_err(|e| e.to_string())?;
        let mut con = endpoint
            .connect(ASK_TIMEOUT, ASK_TIMEOUT)
            .await
            .map_err(|e| e.to_string())?;
        let known = consumers::first(
            &mut con,
            &template.stream,
            &template.group,
            KNOWN_CONSUMERS_READ,
        )
        .await
        .map_err(|e| e.to_string())?;
        Ok(known.into_iter().map(|c| c.name).collect())
    };
    tokio::time::timeout(ASK_TIMEOUT * 2, ask)
        .await
        .unwrap_or_else(|_| Err("no answer in time".into()))
}

/// `notifications-2` → `notifications`: new consumers are numbered after
/// the family they join.
fn base_name(consumer: &str) -> &str {
    match consumer.rsplit_once('-') {
        Some((base, n))
            if !base.is_empty() && !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()) =>
        {
            base
        }
        _ => consumer,
    }
}

#[cfg(test)]
mod tests {
    use super::base_name;

    #[test]
    fn new_consumers_join_the_family_of_the_one_copied() {
        assert_eq!(base_name("notifications-2"), "notifications");
        assert_eq!(base_name("web-01-7"), "web-01");
        assert_eq!(base_name("notify"), "notify");
        assert_eq!(base_name("a-"), "a-");
        assert_eq!(base_name("-3"), "-3");
    }
}
