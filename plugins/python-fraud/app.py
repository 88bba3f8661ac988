"""Fraud-score filter: a streamhost handler written in Python.

Built with componentize-py (see build.sh) against the `handler` world in wit/handler.wit.
componentize-py 0.25 generates a `wit_world` module whose `WitWorld` protocol has the
exported `handle` function as a method; the component's entry point is a class named
`WitWorld` in this module. A `result<_, failure>` export is written as: return None for
`ok`, raise `Err(Failure_Permanent(...))` / `Err(Failure_Retryable(...))` for `err`.
Any other exception traps the instance (the host treats that like a retryable failure).

Config keys (host `--plugin-config key=value`):
  max_amount         orders above this amount score as suspicious (default "1000")
  blocked_customers  customer names that are always rejected, separated by commas, semicolons
                     or spaces (e.g. `--plugin-config blocked_customers=mallory,eve`)
  threshold          score at or above which an order is rejected (default "0.8")
  output             if set, stream that gets one record per accepted order:
                     order_id, score, source_id (the event id)
"""

import re
from decimal import Decimal, InvalidOperation

import wit_world
from componentize_py_types import Err
from wit_world.imports import host
from wit_world.imports.host import Level
from wit_world.imports.types import Event, Failure_Permanent, Failure_Retryable


def _config(key: str, default: str) -> str:
    value = host.config(key)
    return default if value is None or value.strip() == "" else value.strip()


def _permanent(reason: str) -> Err:
    return Err(Failure_Permanent(reason))


def _field(fields: dict, name: str) -> str | None:
    raw = fields.get(name)
    if raw is None:
        return None
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise _permanent(f"field {name!r} is not valid UTF-8")


def _amount(text: str | None) -> Decimal:
    if text is None or text.strip() == "":
        raise _permanent("missing amount")
    try:
        value = Decimal(text.strip())
    except InvalidOperation:
        raise _permanent(f"amount {text!r} is not a number")
    if not value.is_finite():
        raise _permanent(f"amount {text!r} is not a finite number")
    if value < 0:
        raise _permanent(f"amount {text!r} is negative")
    return value


def score(amount: Decimal, customer: str, max_amount: Decimal, blocked: set) -> tuple:
    """Returns (score in [0, 1], list of reasons)."""
    points = 0.0
    reasons = []
    if customer in blocked:
        points += 0.95
        reasons.append(f"customer {customer} is blocked")
    if amount > max_amount:
        # 0.8 just over the limit, rising towards 1.0 at five times the limit.
        ratio = float(amount / max_amount) if max_amount > 0 else 5.0
        points += min(0.8 + 0.05 * (ratio - 1.0), 0.99)
        reasons.append(f"amount {amount:.2f} over {max_amount:.2f}")
    elif amount > max_amount / 2:
        points += 0.3
        reasons.append(f"amount {amount:.2f} over half of {max_amount:.2f}")
    return min(points, 1.0), reasons


class WitWorld(wit_world.WitWorld):
    def handle(self, event: Event) -> None:
        fields = dict(event.fields)

        order_id = _field(fields, "order_id")
        if order_id is None or order_id.strip() == "":
            raise _permanent("missing order_id")
        customer = _field(fields, "customer") or ""
        amount = _amount(_field(fields, "amount"))

        try:
            max_amount = Decimal(_config("max_amount", "1000"))
            threshold = float(_config("threshold", "0.8"))
        except (InvalidOperation, ValueError) as e:
            # Operator error, not the event's fault: leave it pending until the config is fixed.
            raise Err(Failure_Retryable(f"bad plugin config: {e!r}"))
        blocked = set(re.split(r"[\s,;]+", _config("blocked_customers", ""))) - {""}

        value, reasons = score(amount, customer, max_amount, blocked)
        if value >= threshold:
            reason = f"fraud score {value:.2f}: " + "; ".join(reasons)
            host.log(Level.INFO, f"order {order_id} rejected: {reason}")
            raise _permanent(reason)

        host.log(Level.DEBUG, f"order {order_id} accepted, fraud score {value:.2f}")
        output = host.config("output")
        if output:
            host.emit(
                output,
                [
                    ("order_id", order_id.encode()),
                    ("score", f"{value:.2f}".encode()),
                    ("source_id", event.id.encode()),
                ],
            )
