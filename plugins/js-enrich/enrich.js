// Enrichment handler: a streamhost handler written in JavaScript.
//
// Built with componentize-js (see build.sh) against the `handler` world in wit/handler.wit.
// For each order event it emits an enriched copy to the stream named by config key `output`
// (default "orders:enriched"): the original fields, then amount_cents, tier, customer_upper,
// enriched_by and source_id. With config `verbose=true` it also logs one debug line per order.
//
// How componentize-js 0.23 maps the WIT types:
//   - export `handle: func(event) -> result<_, failure>`: return normally for `ok`; throw the
//     `failure` variant value `{ tag: 'permanent', val: reason }` (or `'retryable'`) for `err`
//     (an object with a `payload` property holding that value works too). Throwing anything
//     else (an `Error`, a string) traps the instance: the host treats that as retryable.
//   - event: `{ stream, id, group, consumer, fields: [[name, Uint8Array], ...], deliveryCount }`
//   - host.log(level, msg): level is the enum case name as a string, e.g. 'info'.
//   - host.emit(stream, [[name, Uint8Array], ...]); host.config(key) -> string | undefined.
import { log, emit, config } from 'streamhost:plugin/host@0.1.0';

const encoder = new TextEncoder();
const decoder = new TextDecoder('utf-8', { fatal: true });

// Everything below is shaped by what costs time in a componentize-js guest (measured in
// docs/plugins-javascript.md): each host call and each field crossing the boundary costs
// microseconds, so constants are encoded once, `config` is read once per instance (a new
// plugin version or config starts a new instance), and the per-order log line is opt-in —
// a `log` call costs ~25 µs even when the host's log filter drops the line.
const ENRICHED_BY = encoder.encode('js-enrich');
const TIERS = new Map(['gold', 'silver', 'bronze'].map((t) => [t, encoder.encode(t)]));
let output;
let verbose;

function permanent(reason) {
  return { tag: 'permanent', val: reason };
}

function text(name, bytes) {
  try {
    return decoder.decode(bytes);
  } catch {
    throw permanent(`field ${JSON.stringify(name)} is not valid UTF-8`);
  }
}

// "49.50" -> 4950. Non-negative decimal with at most two fractional digits; no floats involved.
function parseCents(amount) {
  const m = /^\s*(\d+)(?:\.(\d{1,2}))?\s*$/.exec(amount);
  if (!m) {
    throw permanent(`amount ${JSON.stringify(amount)} is not a decimal with at most 2 places`);
  }
  const cents = Number(m[1]) * 100 + Number((m[2] ?? '').padEnd(2, '0'));
  if (!Number.isSafeInteger(cents)) {
    throw permanent(`amount ${JSON.stringify(amount)} is too large`);
  }
  return cents;
}

function tierOf(cents) {
  if (cents >= 100_00) return 'gold';
  if (cents >= 20_00) return 'silver';
  return 'bronze';
}

export function handle(event) {
  if (output === undefined) {
    output = config('output') || 'orders:enriched';
    verbose = config('verbose') === 'true';
  }
  // The first occurrence of each field wins; only the three fields used are decoded.
  const fields = event.fields;
  let orderIdBytes, amountBytes, customerBytes;
  for (let i = 0; i < fields.length; i++) {
    const name = fields[i][0];
    if (name === 'order_id') orderIdBytes ??= fields[i][1];
    else if (name === 'amount') amountBytes ??= fields[i][1];
    else if (name === 'customer') customerBytes ??= fields[i][1];
  }

  const orderId = orderIdBytes === undefined ? undefined : text('order_id', orderIdBytes);
  if (orderId === undefined || orderId.trim() === '') {
    throw permanent('missing order_id');
  }
  if (amountBytes === undefined) {
    throw permanent(`order ${orderId}: missing amount`);
  }
  const cents = parseCents(text('amount', amountBytes));
  const customer = customerBytes === undefined ? '' : text('customer', customerBytes);
  const tier = tierOf(cents);

  // event.fields is this call's own array: the enriched entry is the original fields with
  // the new ones appended, without copying the pairs.
  fields.push(
    ['amount_cents', encoder.encode(String(cents))],
    ['tier', TIERS.get(tier)],
    ['customer_upper', encoder.encode(customer.toUpperCase())],
    ['enriched_by', ENRICHED_BY],
    ['source_id', encoder.encode(event.id)],
  );
  emit(output, fields);
  if (verbose) {
    log('debug', `order ${orderId} -> ${output}: ${cents} cents, tier ${tier}`);
  }
}
