// Enrichment handler: a streamhost handler written in JavaScript.
//
// Built with componentize-js (see build.sh) against the `handler` world in wit/handler.wit.
// For each order event it emits an enriched copy to the stream named by config key `output`
// (default "orders:enriched"): the original fields, then amount_cents, tier, customer_upper,
// enriched_by and source_id.
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
  const values = new Map();
  for (const [name, bytes] of event.fields) {
    if (!values.has(name)) values.set(name, bytes);
  }
  const get = (name) => (values.has(name) ? text(name, values.get(name)) : undefined);

  const orderId = get('order_id');
  if (orderId === undefined || orderId.trim() === '') {
    throw permanent('missing order_id');
  }
  const amount = get('amount');
  if (amount === undefined) {
    throw permanent(`order ${orderId}: missing amount`);
  }
  const cents = parseCents(amount);
  const customer = get('customer') ?? '';
  const tier = tierOf(cents);

  const fields = event.fields.map(([name, bytes]) => [name, bytes]);
  const add = (name, value) => fields.push([name, encoder.encode(String(value))]);
  add('amount_cents', cents);
  add('tier', tier);
  add('customer_upper', customer.toUpperCase());
  add('enriched_by', 'js-enrich');
  add('source_id', event.id);

  const output = config('output') || 'orders:enriched';
  emit(output, fields);
  log('debug', `order ${orderId} -> ${output}: ${cents} cents, tier ${tier}`);
}
