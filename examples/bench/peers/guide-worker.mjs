// The node-redis streaming guide's ConsumerWorker loop, as the benchmark's
// peer: XREADGROUP COUNT 10 BLOCK 500 on a dedicated client, then one awaited
// XACK per entry (the guide's _dispatch -> _handleEntry -> ack path), with a
// no-op handler. Runs until SIGTERM.
//
//   node guide-worker.mjs REDIS_URL STREAM GROUP CONSUMER
import { createClient } from "redis";

const [url, stream, group, consumer] = process.argv.slice(2);
const shared = createClient({ url });
const blocking = shared.duplicate();
await shared.connect();
await blocking.connect();

let stopped = false;
process.on("SIGTERM", () => { stopped = true; });

// node-redis returns [{ name, messages: [{ id, message }] }] (RESP2) or a
// map keyed by stream (RESP3); the guide's flattenEntries accepts both.
function flattenEntries(raw) {
  if (!raw) return [];
  const streams = Array.isArray(raw) ? raw : Object.values(raw);
  const out = [];
  for (const s of streams) {
    for (const m of s.messages ?? []) out.push([m.id, m.message]);
  }
  return out;
}

while (!stopped) {
  const raw = await blocking.xReadGroup(group, consumer, [{ key: stream, id: ">" }], {
    COUNT: 10,
    BLOCK: 500,
  });
  for (const [id] of flattenEntries(raw)) {
    await shared.xAck(stream, group, [id]);
  }
}
await blocking.quit();
await shared.quit();
