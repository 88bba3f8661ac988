//! Taking pending entries over, fenced: the typed wrapper of the
//! [`CLAIM`] script that every claim goes through — the reaper's, start-up
//! recovery, keep-alive renewals, retry releases and handovers — and of the
//! consumer's final check-and-delete.

use std::time::Duration;

use redis::aio::MultiplexedConnection;
use redis::{FromRedisValue, RedisResult, Value};

use super::commands::GroupRef;
use super::dlq::{self, DeadLetterSource};
use super::scripts::{CLAIM, DELETE_CONSUMER_IF_EMPTY};

/// Where `trimmed` records go, and what they say about who wrote them.
#[derive(Debug, Clone, Copy)]
pub struct DeadLetters<'a> {
    /// The dead-letter stream.
    pub dlq: &'a str,
    /// Its approximate length cap (`MAXLEN ~`), if any.
    pub maxlen: Option<u64>,
    /// Stream, group, consumer and plugin for the record.
    pub source: DeadLetterSource<'a>,
}

/// What qualifies an entry for a claim, and what the claim does.
#[derive(Debug, Clone, Copy)]
pub struct ClaimSpec<'a> {
    /// The consumer the entry must still belong to (`None`: anyone).
    pub owner: Option<&'a str>,
    /// The least idle time it must have (zero: any).
    pub min_idle: Duration,
    /// The consumer that gets it.
    pub target: &'a str,
    /// The idle time it is left with (`None`: zero, i.e. renewed).
    pub leave_idle: Option<Duration>,
    /// Whether this claim counts as a delivery (it does when the entry is
    /// about to be handled again).
    pub count_delivery: bool,
    /// Whether this call repeats one whose reply was lost (see
    /// [`ClaimSpec::repeated`]).
    pub repeated: bool,
}

impl<'a> ClaimSpec<'a> {
    /// The reaper's claim: entries of anyone, idle for at least `min_idle`,
    /// to `me`, counting a delivery.
    pub fn reap(me: &'a str, min_idle: Duration) -> Self {
        Self {
            owner: None,
            min_idle,
            target: me,
            leave_idle: None,
            count_delivery: true,
            repeated: false,
        }
    }

    /// Start-up recovery: entries still ours, to be handled again.
    pub fn recover(me: &'a str) -> Self {
        Self {
            owner: Some(me),
            min_idle: Duration::ZERO,
            target: me,
            leave_idle: None,
            count_delivery: true,
            repeated: false,
        }
    }

    /// Taking over a partition under a fresh lease: every pending entry of
    /// the group, whoever held it (a previous owner's writes are fenced), to
    /// be handled again before anything new is read — so per-key order
    /// carries over from one owner to the next.
    pub fn take_over(me: &'a str) -> Self {
        Self {
            owner: None,
            ..Self::recover(me)
        }
    }

    /// Keep-alive: entries still ours, idle time reset.
    pub fn renew(me: &'a str) -> Self {
        Self {
            leave_idle: None,
            count_delivery: false,
            ..Self::recover(me)
        }
    }

    /// Release or handover: entries still ours, to `target`, idle for
    /// `idle` so the next reaper sweep takes them.
    pub fn release(me: &'a str, target: &'a str, idle: Duration) -> Self {
        Self {
            owner: Some(me),
            min_idle: Duration::ZERO,
            target,
            leave_idle: Some(idle),
            count_delivery: false,
            repeated: false,
        }
    }

    /// The same claim sent again after a lost reply (`attempt` counts from
    /// 0). A counting claim whose reply was lost may have taken its entries
    /// already; the repeat hands those over as claimed instead of skipping
    /// them as changed, so no delivery is counted that nobody handles.
    pub fn repeated(self, attempt: u32) -> Self {
        Self {
            repeated: attempt > 0,
            ..self
        }
    }
}

/// What a claim did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Claimed {
    /// Entries now the target's, with their delivery counts.
    pub claimed: Vec<(String, u32)>,
    /// Entries found without payload: recorded as `trimmed` (XCLAIM drops
    /// their pending rows, so nothing is left to ack).
    pub trimmed: Vec<String>,
}

/// An entry to claim: its id, and the delivery count it must still have
/// (`None`: any), so a claim acts only on the delivery its caller knows.
pub type Target<'a> = (&'a str, Option<u32>);

/// Runs [`CLAIM`] over `targets`: each is checked against the pending list
/// (still the owner's, idle enough, the expected delivery) and skipped
/// otherwise, so a claim never takes an entry a peer holds; one whose
/// payload is gone gets its `trimmed` record in the same atomic step.
///
/// `EVALSHA <claim> 2 stream dlq group owner min_idle target idle count maxlen repeated m meta… (id deliveries)…`
pub async fn claim(
    con: &mut MultiplexedConnection,
    g: &GroupRef,
    spec: ClaimSpec<'_>,
    dead: DeadLetters<'_>,
    targets: &[Target<'_>],
) -> RedisResult<Claimed> {
    if targets.is_empty() {
        return Ok(Claimed::default());
    }
    let meta = dlq::trimmed_template(dead.source);
    let mut call = CLAIM.under(g.fence.as_ref()).key(&g.stream);
    call.key(dead.dlq);
    if let Some(fence) = &g.fence {
        call.key(&fence.key).arg(&fence.token);
    }
    call.arg(&g.group)
        .arg(spec.owner.unwrap_or(""))
        .arg(spec.min_idle.as_millis() as u64)
        .arg(spec.target)
        .arg(
            spec.leave_idle
                .map(|d| d.as_millis().to_string())
                .unwrap_or_default(),
        )
        .arg(if spec.count_delivery { "1" } else { "0" })
        .arg(dead.maxlen.map(|n| n.to_string()).unwrap_or_default())
        .arg(if spec.repeated { "1" } else { "0" })
        .arg(meta.len());
    for (k, v) in &meta {
        call.arg(*k).arg(v);
    }
    for (id, deliveries) in targets {
        call.arg(*id)
            .arg(deliveries.map(|n| n.to_string()).unwrap_or_default());
    }
    let (flat, trimmed): (Vec<Value>, Vec<String>) = call.invoke_async(con).await?;
    let mut claimed = Vec::with_capacity(flat.len() / 2);
    let mut it = flat.into_iter();
    while let (Some(id), Some(count)) = (it.next(), it.next()) {
        claimed.push((String::from_redis_value(id)?, u32::from_redis_value(count)?));
    }
    Ok(Claimed { claimed, trimmed })
}

/// Deletes this consumer from the group only if it owns no pending entry
/// (a plain `XGROUP DELCONSUMER` would drop them). `true` if deleted.
///
/// `EVALSHA <delete-consumer-if-empty> 1 stream group consumer`
pub async fn delete_consumer_if_empty(
    con: &mut MultiplexedConnection,
    g: &GroupRef,
) -> RedisResult<bool> {
    let deleted: u64 = DELETE_CONSUMER_IF_EMPTY
        .key(&g.stream)
        .arg(&g.group)
        .arg(&g.consumer)
        .invoke_async(con)
        .await?;
    Ok(deleted == 1)
}
