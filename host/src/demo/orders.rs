//! The demo's order events, built on the reference guide's orders
//! ([`demo_order`]): events of one type on request (the dashboard's produce
//! menu), the malformed ones a notifier must refuse, and the trickle's
//! sequence with a malformed event now and then.

use crate::ops::produce::{Fields, demo_order};

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
}
