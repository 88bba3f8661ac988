//! Entry ids and time: the parts of an id, the time it carries, the id a
//! moment in time stands for, and how long ago a time was. Every layer
//! reads ids; this is the one place that says how.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The numeric parts of a stream id, `<ms>-<seq>` (a bare `<ms>` means
/// sequence 0); `None` if it is not one. Ids order by these, not as text.
pub fn id_parts(id: &str) -> Option<(u64, u64)> {
    let (ms, seq) = id.split_once('-').unwrap_or((id, "0"));
    Some((ms.parse().ok()?, seq.parse().ok()?))
}

/// The time part of an entry id, in ms since the epoch.
pub fn id_ms(id: &str) -> Option<u64> {
    id_parts(id).map(|(ms, _)| ms)
}

/// Whether id `a` comes before id `b` (ids that do not parse sort first).
pub fn id_lt(a: &str, b: &str) -> bool {
    id_parts(a) < id_parts(b)
}

/// Milliseconds since the Unix epoch, now.
pub fn now_ms() -> u64 {
    ms_of(SystemTime::now())
}

/// Milliseconds since the Unix epoch at `time` (0 before the epoch).
pub fn ms_of(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or_default()
}

/// The first id of the millisecond `age` before now: entries older than
/// `age` have smaller ids (what `MINID` and an age filter compare with).
pub fn id_at_age(age: Duration) -> String {
    format!("{}-0", now_ms().saturating_sub(age.as_millis() as u64))
}

/// How long before `now` the time `ms` (ms since the epoch) was; zero for a
/// time ahead of this host's clock.
pub fn age_of(ms: u64, now: SystemTime) -> Duration {
    let then = UNIX_EPOCH + Duration::from_millis(ms);
    now.duration_since(then).unwrap_or(Duration::ZERO)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_order_by_their_numbers_and_carry_their_time() {
        assert_eq!(id_parts("1700-3"), Some((1700, 3)));
        assert_eq!(id_parts("42"), Some((42, 0)));
        assert_eq!(id_parts("x-1"), None);
        assert_eq!(id_ms("1700000000123-9"), Some(1_700_000_000_123));
        assert!(id_lt("9-0", "10-0") && !id_lt("10-0", "9-0"));
        assert!(id_lt("5-2", "5-10"));
    }

    #[test]
    fn ages_count_from_the_id_time_and_never_go_negative() {
        let now = UNIX_EPOCH + Duration::from_millis(10_000);
        assert_eq!(age_of(7_500, now), Duration::from_millis(2_500));
        assert_eq!(age_of(12_000, now), Duration::ZERO);
        let cut = id_at_age(Duration::from_secs(60));
        let ms = id_ms(&cut).unwrap();
        assert!(now_ms() - ms >= 60_000 && now_ms() - ms < 61_000, "{cut}");
        assert!(cut.ends_with("-0"));
    }
}
