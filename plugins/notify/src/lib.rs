//! The orders demo's `notifications` consumer: turns each order event into a
//! customer notification.
//!
//! Config (`--plugin-config KEY=VALUE`):
//! - `outbox`: stream to `emit` each notification to (atomically with the
//!   ack); without it notifications are only logged.
//! - `log`: `info` (default), `debug` or `off` — how each notification is logged.
//!
//! A malformed event (missing field, unknown type, bad amount) is a permanent
//! failure: redelivering it cannot help, so it goes to the dead-letter stream.

use streamhost_sdk::{Emit, Event, Failure, Handler, log};

struct Notify;

impl Handler for Notify {
    fn handle(event: Event) -> Result<(), Failure> {
        let kind = event.str("type")?;
        let order = event.str("order_id")?;
        let customer = event.str("customer")?;
        let amount = match event.opt_str("amount")? {
            Some(raw) => Some(parse_amount(raw)?),
            None => None,
        };
        let message = render(kind, order, customer, amount)?;

        match streamhost_sdk::config("log").as_deref() {
            Some("off") => {}
            Some("debug") => log::debug(&format!("notify {customer}: {message}")),
            _ => log::info(&format!("notify {customer}: {message}")),
        }
        if let Some(outbox) = streamhost_sdk::config("outbox") {
            Emit::to(outbox)
                .field("customer", customer)
                .field("order_id", order)
                .field("type", kind)
                .field("message", &message)
                .field("source_id", &event.id)
                .send();
        }
        Ok(())
    }
}

/// Money in cents, from "49.50", "12" or "0.5".
fn parse_amount(raw: &str) -> Result<u64, Failure> {
    let bad = || Failure::permanent(format!("field `amount` is not a valid amount: {raw:?}"));
    let (whole, frac) = raw.split_once('.').unwrap_or((raw, ""));
    if whole.is_empty() || frac.len() > 2 || !frac.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    let whole: u64 = whole.parse().map_err(|_| bad())?;
    let frac: u64 = format!("{frac:0<2}").parse().map_err(|_| bad())?;
    whole
        .checked_mul(100)
        .and_then(|c| c.checked_add(frac))
        .ok_or_else(bad)
}

fn render(kind: &str, order: &str, customer: &str, cents: Option<u64>) -> Result<String, Failure> {
    let money = |c: Option<u64>| -> Result<String, Failure> {
        let c = c.ok_or_else(|| Failure::permanent(format!("`{kind}` event without `amount`")))?;
        Ok(format!("${}.{:02}", c / 100, c % 100))
    };
    Ok(match kind {
        "order.placed" => format!(
            "Hi {customer}, we received your order {order} ({}).",
            money(cents)?
        ),
        "order.paid" => format!(
            "Hi {customer}, payment of {} for order {order} is confirmed.",
            money(cents)?
        ),
        "order.shipped" => format!("Hi {customer}, order {order} is on its way."),
        "order.cancelled" => format!("Hi {customer}, order {order} was cancelled."),
        other => return Err(Failure::permanent(format!("unknown event type {other:?}"))),
    })
}

streamhost_sdk::export!(Notify);
