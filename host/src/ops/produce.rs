//! What `host produce` appends: entries from `field=value` arguments, from
//! JSON lines (one object per line, fields in the object's order), or the
//! reference guide's order events; and the summary it reports.

use std::fmt;

use serde::Serialize;
use serde::de::{Deserializer, MapAccess, Visitor};

/// One entry's fields, in order.
pub type Fields = Vec<(Vec<u8>, Vec<u8>)>;

/// The summary of a produce run.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ProduceReport {
    /// Stream key.
    pub stream: String,
    /// Entries added.
    pub added: u64,
    /// Input lines skipped as malformed (`--on-error skip`).
    pub skipped: u64,
    /// First id added.
    pub first_id: Option<String>,
    /// Last id added.
    pub last_id: Option<String>,
    /// Seconds it took.
    pub seconds: f64,
    /// Entries per second.
    pub rate: f64,
}

impl ProduceReport {
    /// Counts a batch of new ids.
    pub fn record(&mut self, ids: &[String]) {
        if self.first_id.is_none() {
            self.first_id = ids.first().cloned();
        }
        if let Some(last) = ids.last() {
            self.last_id = Some(last.clone());
        }
        self.added += ids.len() as u64;
    }
}

/// A JSON object with its keys in the order written.
struct Ordered(Fields);

impl<'de> serde::Deserialize<'de> for Ordered {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Ordered;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object of field names to values")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Ordered, A::Error> {
                let mut fields = Vec::new();
                while let Some((k, v)) = map.next_entry::<String, serde_json::Value>()? {
                    let value = match v {
                        serde_json::Value::String(s) => s,
                        other => other.to_string(),
                    };
                    fields.push((k.into_bytes(), value.into_bytes()));
                }
                Ok(Ordered(fields))
            }
        }
        d.deserialize_map(V)
    }
}

/// One JSON line as an entry: an object whose values are strings (taken as
/// they are) or any other JSON (written as JSON text). Blank lines are
/// `Ok(None)`; an empty object is refused (an entry needs a field).
pub fn parse_json_line(line: &str) -> Result<Option<Fields>, String> {
    if line.trim().is_empty() {
        return Ok(None);
    }
    let Ordered(fields) = serde_json::from_str(line).map_err(|e| e.to_string())?;
    if fields.is_empty() {
        return Err("an empty object: an entry needs at least one field".into());
    }
    Ok(Some(fields))
}

/// The `n`-th (from 0) of the reference guide's order events: orders of
/// five customers moving through `order.placed`, `order.paid`, then
/// `order.shipped` or (every fifth order) `order.cancelled`, with the
/// guide's fields `type`, `order_id`, `customer`, `amount`, `ts_ms`.
pub fn demo_order(n: u64, ts_ms: u64) -> Fields {
    const CUSTOMERS: [&str; 5] = ["alice", "bob", "carol", "dan", "erin"];
    let order = n / 3;
    let kind = match n % 3 {
        0 => "order.placed",
        1 => "order.paid",
        _ if order % 5 == 4 => "order.cancelled",
        _ => "order.shipped",
    };
    let cents = 1_000 + (order * 7_919) % 9_000;
    [
        ("type", kind.to_owned()),
        ("order_id", format!("o-{}", 1_000 + order)),
        ("customer", CUSTOMERS[(order % 5) as usize].to_owned()),
        ("amount", format!("{}.{:02}", cents / 100, cents % 100)),
        ("ts_ms", ts_ms.to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.as_bytes().to_vec(), v.into_bytes()))
    .collect()
}

/// The order event types the dashboard offers, `malformed` last.
pub const EVENT_TYPES: [&str; 5] = [
    "order.placed",
    "order.paid",
    "order.shipped",
    "order.cancelled",
    "malformed",
];

/// An order event of type `kind` (one of [`EVENT_TYPES`]) numbered `n`;
/// `None` for an unknown type. A `malformed` event is one the reference's
/// notifier must refuse for good, cycling through the ways an order breaks:
/// an unknown type, a missing `order_id`, a bad amount, a missing amount.
pub fn demo_event(kind: &str, n: u64, ts_ms: u64) -> Option<Fields> {
    let mut fields = demo_order(n * 3, ts_ms);
    let set = |fields: &mut Fields, key: &str, value: &str| {
        if let Some(slot) = fields.iter_mut().find(|(k, _)| k == key.as_bytes()) {
            slot.1 = value.as_bytes().to_vec();
        }
    };
    match kind {
        "order.placed" | "order.paid" | "order.shipped" | "order.cancelled" => {
            set(&mut fields, "type", kind);
        }
        "malformed" => match n % 4 {
            0 => set(&mut fields, "type", "order.teleported"),
            1 => fields.retain(|(k, _)| k != b"order_id"),
            2 => set(&mut fields, "amount", "12.345"),
            _ => fields.retain(|(k, _)| k != b"amount"),
        },
        _ => return None,
    }
    Some(fields)
}

/// The `n`-th event of the demo's steady trickle: the reference's order
/// sequence, with every 50th event malformed so the dead-letter stream
/// has something to show.
pub fn trickle_event(n: u64, ts_ms: u64) -> Fields {
    if n % 50 == 49 {
        demo_event("malformed", n / 50, ts_ms).unwrap_or_else(|| demo_order(n, ts_ms))
    } else {
        demo_order(n, ts_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field(f: &Fields, key: &str) -> Option<String> {
        f.iter()
            .find(|(k, _)| k == key.as_bytes())
            .map(|(_, v)| String::from_utf8(v.clone()).unwrap())
    }

    #[test]
    fn demo_events_have_the_asked_type_and_malformed_ones_break_a_rule() {
        for kind in &EVENT_TYPES[..4] {
            let e = demo_event(kind, 7, 1).unwrap();
            assert_eq!(field(&e, "type").as_deref(), Some(*kind));
            assert!(field(&e, "order_id").is_some() && field(&e, "amount").is_some());
        }
        let broken: Vec<Fields> = (0..4)
            .map(|n| demo_event("malformed", n, 1).unwrap())
            .collect();
        assert_eq!(
            field(&broken[0], "type").as_deref(),
            Some("order.teleported")
        );
        assert_eq!(field(&broken[1], "order_id"), None);
        assert_eq!(field(&broken[2], "amount").as_deref(), Some("12.345"));
        assert_eq!(field(&broken[3], "amount"), None);
        assert!(demo_event("order.lost", 0, 1).is_none());
        assert_eq!(
            field(&trickle_event(49, 1), "type").as_deref(),
            Some("order.teleported")
        );
        assert_eq!(
            field(&trickle_event(48, 1), "type").as_deref(),
            Some("order.placed")
        );
    }

    #[test]
    fn json_lines_keep_field_order_and_stringify_values() {
        let f = parse_json_line(r#"{"z":"1","a":2.5,"m":{"x":[true]},"n":null}"#)
            .unwrap()
            .unwrap();
        let shown: Vec<(String, String)> = f
            .into_iter()
            .map(|(k, v)| (String::from_utf8(k).unwrap(), String::from_utf8(v).unwrap()))
            .collect();
        assert_eq!(
            shown,
            [
                ("z", "1"),
                ("a", "2.5"),
                ("m", r#"{"x":[true]}"#),
                ("n", "null")
            ]
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
        );
        assert_eq!(parse_json_line("  ").unwrap(), None);
        assert!(parse_json_line("{}").unwrap_err().contains("empty object"));
        assert!(parse_json_line("[1]").is_err());
        assert!(parse_json_line(r#"{"a": "#).is_err());
    }

    #[test]
    fn demo_orders_follow_the_guide() {
        let kinds: Vec<String> = (0..15)
            .map(|n| String::from_utf8(demo_order(n, 0)[0].1.clone()).unwrap())
            .collect();
        assert_eq!(&kinds[..3], ["order.placed", "order.paid", "order.shipped"]);
        assert_eq!(kinds[14], "order.cancelled");
        let first = demo_order(0, 7);
        let names: Vec<&[u8]> = first.iter().map(|(k, _)| k.as_slice()).collect();
        assert_eq!(
            names,
            [&b"type"[..], b"order_id", b"customer", b"amount", b"ts_ms"]
        );
        assert_eq!(first[1].1, b"o-1000");
        assert_eq!(demo_order(1, 7)[1].1, b"o-1000", "paid is the same order");
    }
}
