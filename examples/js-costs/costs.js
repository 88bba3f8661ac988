// The probe behind the price table in docs/plugins-javascript.md: one handler whose work per
// event is one operation (config key `op`) repeated `reps` times (default 1). Compare the
// host's CPU per event against `op=empty` and divide by `reps`.
//
// Build with the toolchain plugins/js-enrich/build.sh installs:
//   plugins/js-enrich/build.sh    # once, for node_modules
//   plugins/js-enrich/node_modules/.bin/componentize-js examples/js-costs/costs.js --wit wit \
//     --world-name handler -d http fetch-event -o target/js-costs.wasm
// then e.g. `host run --plugin target/js-costs.wasm --plugin-config op=decode --plugin-config
// reps=10 ...` over a pre-filled stream, reading the process's CPU time (/proc/<pid>/stat)
// before and after it drains.
import { log, emit, config } from 'streamhost:plugin/host@0.1.0';

const encoder = new TextEncoder();
const decoder = new TextDecoder('utf-8', { fatal: true });
const loose = new TextDecoder('utf-8');
let op, reps;
const STR = 'order o-00000001 -> bench:enriched: 123450 cents, tier gold';

function decodeAscii(bytes) {
  let s = '';
  for (let i = 0; i < bytes.length; i++) s += String.fromCharCode(bytes[i]);
  return s;
}

const ops = {
  empty(event) {},
  decode(event) {
    for (const f of event.fields) decoder.decode(f[1]);
  },
  decodeLoose(event) {
    for (const f of event.fields) loose.decode(f[1]);
  },
  fromCharCode(event) {
    for (const f of event.fields) decodeAscii(f[1]);
  },
  map(event) {
    new Map(event.fields);
  },
  regex(event) {
    /^\s*(\d+)(?:\.(\d{1,2}))?\s*$/.exec('1234.50');
  },
  encode(event) {
    encoder.encode('gold');
  },
  object(event) {
    const o = { a: 1, b: 'x', c: [1, 2] };
    o.d = o.a;
  },
  template(event) {
    `order ${event.id} -> out: ${123450} cents, tier ${'gold'}`;
  },
  config(event) {
    config('output');
  },
  log(event) {
    log('debug', STR);
  },
  emit1(event) {
    emit('bench:out', [['k', event.fields[0][1]]]);
  },
  emit5(event) {
    emit('bench:out', event.fields);
  },
  emit10(event) {
    const f = event.fields.slice();
    for (let i = 0; i < 5; i++) f.push(['extra_' + i, event.fields[i][1]]);
    emit('bench:out', f);
  },
};

export function handle(event) {
  if (op === undefined) {
    op = ops[config('op') ?? 'empty'];
    reps = Number(config('reps') ?? '1');
  }
  for (let i = 0; i < reps; i++) op(event);
}
