//! A logical stream spread over partitions: how partition `i` of stream `S`
//! and its companions are named, and which partition a key goes to.
//!
//! Partition `i` of `S` is the key `{S:i}`: the hash tag holds the stream's
//! name and the index, so on Redis Cluster one stream's partitions spread
//! over the shards and two streams' partitions never share a slot by
//! construction. Everything a partition's scripts touch — its dead letters,
//! its lease — carries the same tag, so every script stays in one slot.
//!
//! The partition of a key is Redis Cluster's own key-slot hash taken modulo
//! the partition count: `CRC16(value) mod 16384 mod N` (CRC-16/XMODEM, the
//! function every cluster client carries). It equals `CLUSTER KEYSLOT value`
//! mod N for any value without a `{`.

/// Most partitions a stream may have: a slot each at most, and far more
/// than any deployment reads.
pub const MAX_PARTITIONS: u32 = 1024;

/// The lease a partition's writes are checked against: every script that
/// acks, dead-letters, claims or reads for the partition first compares the
/// key's value with the token, so a host that lost the lease writes nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fence {
    /// The lease key (in the partition's slot).
    pub key: String,
    /// This holder's token: unique per acquisition, never reused.
    pub token: String,
}

/// The key of partition `index` of `stream`: `{stream:index}`.
pub fn stream_key(stream: &str, index: u32) -> String {
    format!("{{{stream}:{index}}}")
}

/// The dead-letter stream of partition `index`: `{stream:index}:dlq`.
pub fn dlq_key(stream: &str, index: u32) -> String {
    format!("{}:dlq", stream_key(stream, index))
}

/// The lease of partition `index` for `group`: `{stream:index}:lease:group`,
/// holding the owner's token.
pub fn lease_key(stream: &str, index: u32, group: &str) -> String {
    format!("{}:lease:{group}", stream_key(stream, index))
}

/// A fresh lease token of host `me`: its name, then a random part, so an
/// operator can tell who holds a lease and no two acquisitions share one.
pub fn lease_token(me: &str, random: u64) -> String {
    format!("{me}#{random:016x}")
}

/// The host a lease token belongs to (the token itself if not of
/// [`lease_token`]'s making).
pub fn lease_owner(token: &str) -> &str {
    token.rsplit_once('#').map_or(token, |(me, _)| me)
}

/// The sorted set of hosts consuming `stream` as `group` with leases,
/// scored by when each one's membership runs out (ms since the epoch).
pub fn members_key(stream: &str, group: &str) -> String {
    format!("{{{stream}}}:members:{group}")
}

/// A key in the same cluster slot as `key`, named `{TAG}:suffix`: TAG is
/// `key`'s hash tag, or `key` itself when it has none. `None` for a key
/// whose slot no such name can share (an empty tag `{}` before any other).
pub fn beside(key: &str, suffix: &str) -> Option<String> {
    match hash_tag(key.as_bytes()) {
        Some(tag) => Some(format!("{{{}}}:{suffix}", String::from_utf8_lossy(tag))),
        None if !key.contains('{') && !key.contains('}') => Some(format!("{{{key}}}:{suffix}")),
        None => None,
    }
}

/// The outbox of `source`: where its emits to other slots wait, appended
/// atomically with their acks, until the forwarder appends them to their
/// targets.
pub fn outbox_key(source: &str) -> Option<String> {
    beside(source, "streamhost:outbox")
}

/// The idempotence keys of emits forwarded to `target`, in its slot.
pub fn dedup_key(target: &str) -> Option<String> {
    beside(target, "streamhost:dedup")
}

/// Why a stream name cannot be partitioned.
pub fn refuse_name(stream: &str) -> Option<&'static str> {
    if stream.contains('{') || stream.contains('}') {
        Some(
            "a partitioned stream's name must not contain braces: its partitions are named {STREAM:i}, and a brace in STREAM would move their hash tag",
        )
    } else {
        None
    }
}

/// Redis Cluster's CRC16 (XMODEM: polynomial 0x1021, initial value 0).
pub fn crc16(bytes: &[u8]) -> u16 {
    let mut crc: u16 = 0;
    for &b in bytes {
        crc ^= u16::from(b) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    crc
}

/// The hash tag of a key: what is between its first `{` and the next `}`,
/// when not empty.
fn hash_tag(key: &[u8]) -> Option<&[u8]> {
    key.iter().position(|&b| b == b'{').and_then(|open| {
        let rest = &key[open + 1..];
        rest.iter()
            .position(|&b| b == b'}')
            .filter(|&close| close > 0)
            .map(|close| &rest[..close])
    })
}

/// The cluster slot of a key, hash tags honoured (`{…}`: only what is
/// between the first `{` and the next `}` counts, when not empty).
pub fn key_slot(key: &[u8]) -> u16 {
    crc16(hash_tag(key).unwrap_or(key)) % 16384
}

/// The partition (of `partitions`) a key value is routed to.
pub fn partition_of(value: &[u8], partitions: u32) -> u32 {
    u32::from(crc16(value) % 16384) % partitions.max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lease_token_names_its_host_even_when_the_name_has_a_hash() {
        let token = lease_token("web#2-41", 0xab);
        assert_eq!(token, "web#2-41#00000000000000ab");
        assert_eq!(lease_owner(&token), "web#2-41");
        assert_eq!(lease_owner("hand-made"), "hand-made");
    }

    #[test]
    fn the_hash_is_redis_clusters_crc16() {
        // The check value of CRC-16/XMODEM, and the Redis Cluster spec's example.
        assert_eq!(crc16(b"123456789"), 0x31C3);
        // Slots as `CLUSTER KEYSLOT` gives them.
        assert_eq!(key_slot(b"foo"), 12182);
        assert_eq!(key_slot(b"{user1000}.following"), key_slot(b"user1000"));
        assert_eq!(key_slot(b"foo{}{bar}"), crc16(b"foo{}{bar}") % 16384);
        assert_eq!(partition_of(b"123456789", 8), 12739 % 8);
        assert_eq!(partition_of(b"anything", 1), 0);
    }

    #[test]
    fn a_partitions_companions_share_its_slot_and_partitions_spread() {
        let slot = key_slot(stream_key("orders", 3).as_bytes());
        assert_eq!(key_slot(dlq_key("orders", 3).as_bytes()), slot);
        assert_eq!(key_slot(lease_key("orders", 3, "billing").as_bytes()), slot);
        let slots: std::collections::BTreeSet<u16> = (0..8)
            .map(|i| key_slot(stream_key("orders", i).as_bytes()))
            .collect();
        assert_eq!(slots.len(), 8, "eight partitions, eight slots");
        assert!(refuse_name("a{b}").is_some() && refuse_name("orders").is_none());
        for key in [
            "notifications:outbox",
            "{orders:3}",
            "{user1}.feed",
            "a{b}c{d}",
        ] {
            for near in [outbox_key(key), dedup_key(key)] {
                let near = near.expect("a key beside it");
                assert_eq!(
                    key_slot(near.as_bytes()),
                    key_slot(key.as_bytes()),
                    "{near} beside {key}"
                );
            }
        }
        assert_eq!(
            outbox_key("{orders:3}").unwrap(),
            "{orders:3}:streamhost:outbox"
        );
        assert_eq!(dedup_key("{}x"), None);
    }
}
