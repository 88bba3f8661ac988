//! Group-safe retention: the typed wrapper of [`TRIM_SAFELY`], one bounded
//! step at a time, and the loop that takes as many steps as a pass needs.

use std::sync::Mutex;

use redis::aio::MultiplexedConnection;
use redis::{RedisError, RedisResult};

use super::scripts::TRIM_SAFELY;
use crate::vocab::ids::id_at_age;
use crate::vocab::retention::Retention;

/// Most entries one trim step reads inside Redis, so no step blocks the
/// server for long however far back a group's floor is.
pub const TRIM_STEP_BUDGET: u64 = 1_000;

/// Steps one pass may take (a scan for the N-th newest entry of a huge
/// stream spreads over many); past this the pass ends without trimming by
/// length, and the next pass starts over.
pub const MAX_TRIM_STEPS: u32 = 10_000;

/// What one trim pass did.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TrimReport {
    /// Entries removed.
    pub trimmed: u64,
    /// The group that kept the policy from being met, if any.
    pub held_by: Option<String>,
    /// The oldest entry some group still needs.
    pub floor: Option<String>,
    /// Steps (script calls) the pass took.
    pub steps: u32,
}

/// Carried from one pass to the next: an id known to have at least `maxlen`
/// entries from it on, which spares a fresh scan while a floor stays behind it.
/// Shared (`&self`), so a pass [`super::RedisLink::run`] may repeat can use it.
#[derive(Debug, Default)]
pub struct TrimMemo {
    hint: Mutex<String>,
}

impl TrimMemo {
    fn hint(&self) -> String {
        self.hint.lock().map(|h| h.clone()).unwrap_or_default()
    }

    fn remember(&self, hint: String) {
        if let Ok(mut h) = self.hint.lock() {
            *h = hint;
        }
    }
}

/// One pass: trim steps until the script is done (each reads at most
/// [`TRIM_STEP_BUDGET`] entries). `None` if the stream does not exist (yet):
/// nothing to trim.
///
/// `exact` trims to the entry (`XTRIM … =`) rather than whole stream nodes.
///
/// `EVALSHA <trim-safely> 1 stream maxlen age-cutoff budget cursor counted hint mode`
pub async fn trim(
    con: &mut MultiplexedConnection,
    stream: &str,
    policy: Retention,
    memo: &TrimMemo,
    exact: bool,
) -> RedisResult<Option<TrimReport>> {
    let age_cutoff = policy.max_age.map(id_at_age).unwrap_or_default();
    let maxlen = policy.maxlen.map(|n| n.to_string()).unwrap_or_default();
    let mut report = TrimReport::default();
    let (mut cursor, mut counted) = (String::new(), 0u64);
    loop {
        let (trimmed, holder, floor, state, next, now_counted, hint): (
            u64,
            String,
            String,
            String,
            String,
            u64,
            String,
        ) = match TRIM_SAFELY
            .key(stream)
            .arg(&maxlen)
            .arg(&age_cutoff)
            .arg(TRIM_STEP_BUDGET)
            .arg(&cursor)
            .arg(counted)
            .arg(memo.hint())
            .arg(if exact { "=" } else { "~" })
            .invoke_async(con)
            .await
        {
            Ok(step) => step,
            Err(e) if is_missing_stream(&e) => return Ok(None),
            Err(e) => return Err(e),
        };
        report.steps += 1;
        report.trimmed += trimmed;
        report.held_by = (!holder.is_empty()).then_some(holder);
        report.floor = (!floor.is_empty()).then_some(floor);
        memo.remember(hint);
        if state != "scanning" || report.steps >= MAX_TRIM_STEPS {
            return Ok(Some(report));
        }
        (cursor, counted) = (next, now_counted);
    }
}

/// Whether the script failed because the stream is missing: its
/// `XINFO GROUPS` answers `ERR no such key`.
fn is_missing_stream(e: &RedisError) -> bool {
    e.code() == Some("ERR") && e.to_string().contains("no such key")
}
