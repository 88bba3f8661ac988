//! One way to count a stream's entries without loading them: the typed
//! wrapper of [`COUNT_RANGE`], which walks a range inside Redis a small page
//! at a time and answers only a count and the last id, taken a bounded step
//! per call and resumed from its cursor up to a cap. Whatever asks "how many
//! entries lie between these ids?" or "which is the N-th one?" asks here, so
//! the memory of the asker (and of Redis) stays the same for a stream of ten
//! entries or ten million.

use redis::RedisResult;
use redis::aio::MultiplexedConnection;

use super::scripts::COUNT_RANGE;

/// Entries one `XRANGE` inside the script reads: small, so that even a page
/// of large entries is a small reply and a small Lua table.
pub const COUNT_PAGE: u64 = 16;

/// Most entries one script call counts, so no call blocks Redis for long
/// (the README's "What `status` costs" has the time per call).
pub const COUNT_STEP_BUDGET: u64 = 1_000;

/// Which way a count walks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Walk {
    /// From `from` (the older bound) forward to `to` (`XRANGE`).
    Forward,
    /// From `from` (the newer bound) back to `to` (`XREVRANGE`): the N-th
    /// newest entry is the last of a backward count capped at N.
    Backward,
}

/// What a count found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Counted {
    /// Entries counted (at most the cap).
    pub count: u64,
    /// Whether `count` is all the range holds (else it holds more: the cap
    /// was reached, and `count` is a lower bound).
    pub exact: bool,
    /// The id of the last entry counted, in the walk's direction.
    pub last: Option<String>,
}

/// How a count proceeds: [`count`] uses [`COUNT_STEP_BUDGET`] and [`COUNT_PAGE`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CountSteps {
    /// Most entries counted in all (at least 1).
    pub cap: u64,
    /// Most entries counted per script call (at least 1).
    pub budget: u64,
    /// Entries per page inside the script (at least 1).
    pub page: u64,
}

impl CountSteps {
    /// The default steps, up to `cap`.
    pub fn up_to(cap: u64) -> Self {
        Self {
            cap,
            budget: COUNT_STEP_BUDGET,
            page: COUNT_PAGE,
        }
    }
}

/// Counts the entries of `key` from `from` to `to` (`XRANGE` bounds: ids,
/// `(id` exclusive, `-`, `+`), stopping at `cap`. A missing key holds none.
pub async fn count(
    con: &mut MultiplexedConnection,
    key: &str,
    from: &str,
    to: &str,
    cap: u64,
) -> RedisResult<Counted> {
    let (counted, _) =
        count_with(con, key, from, to, Walk::Forward, CountSteps::up_to(cap)).await?;
    Ok(counted)
}

/// Counts back from `from` (the newer bound) to `to`, stopping at `cap`:
/// with `from` `+`, the last entry counted is the `cap`-th newest.
pub async fn count_back(
    con: &mut MultiplexedConnection,
    key: &str,
    from: &str,
    to: &str,
    cap: u64,
) -> RedisResult<Counted> {
    let (counted, _) =
        count_with(con, key, from, to, Walk::Backward, CountSteps::up_to(cap)).await?;
    Ok(counted)
}

/// The first entry id after `after` (exclusive), if any, without reading
/// its payload into the host.
pub async fn next_id(
    con: &mut MultiplexedConnection,
    key: &str,
    after: &str,
) -> RedisResult<Option<String>> {
    Ok(count(con, key, &format!("({after}"), "+", 1).await?.last)
}

/// The count, and the number of script calls it took: each call is
/// `EVALSHA <count-range> 1 key from to rev|"" budget page`, the next one
/// starting at `(last` of the previous.
pub async fn count_with(
    con: &mut MultiplexedConnection,
    key: &str,
    from: &str,
    to: &str,
    walk: Walk,
    steps: CountSteps,
) -> RedisResult<(Counted, u32)> {
    let cap = steps.cap.max(1);
    let mut out = Counted {
        count: 0,
        exact: false,
        last: None,
    };
    let mut cursor = from.to_owned();
    let mut calls = 0u32;
    loop {
        let budget = steps.budget.max(1).min(cap - out.count);
        let (n, last, state): (u64, String, String) = COUNT_RANGE
            .key(key)
            .arg(&cursor)
            .arg(to)
            .arg(if walk == Walk::Backward { "rev" } else { "" })
            .arg(budget)
            .arg(steps.page.max(1))
            .invoke_async(con)
            .await?;
        calls += 1;
        out.count += n;
        if !last.is_empty() {
            cursor = format!("({last}");
            out.last = Some(last);
        }
        if state != "more" {
            out.exact = true;
            return Ok((out, calls));
        }
        if out.count >= cap {
            return Ok((out, calls));
        }
    }
}

#[cfg(test)]
mod tests;
