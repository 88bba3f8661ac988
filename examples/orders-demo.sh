#!/usr/bin/env bash
# The orders demo: produces order events into demo:events:orders and runs two
# consumer groups on it in one `host run --config examples/orders.toml` process
# — `notifications` (plugins/notify) and `analytics` (plugins/analytics) — then
# shows what happened: acks, the dead-letter stream (malformed orders), the
# notification outbox and totals.
#
#   examples/orders-demo.sh            # private redis-server on a free port
#   REDIS_URL=redis://127.0.0.1:6379 examples/orders-demo.sh
#   EVENTS=5000 examples/orders-demo.sh
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
events="${EVENTS:-200}"
stream=demo:events:orders

say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

say "building the host and the plugins"
plugins/build.sh
cargo build --quiet -p streamhost
host="$root/target/debug/host"

workdir="$(mktemp -d)"
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$workdir"
}
trap cleanup EXIT

if [[ -n "${REDIS_URL:-}" ]]; then
  url="$REDIS_URL"
else
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  redis-server --port "$port" --bind 127.0.0.1 --save '' --appendonly no --dir "$workdir" >"$workdir/redis.log" 2>&1 &
  pids+=($!)
  url="redis://127.0.0.1:$port"
  for _ in $(seq 100); do redis-cli -p "$port" ping >/dev/null 2>&1 && break; sleep 0.05; done
fi
hostport="${url#redis://}"; hostport="${hostport##*@}"; hostport="${hostport%%/*}"
cli() { redis-cli -h "${hostport%%:*}" -p "${hostport##*:}" "$@"; }
cli DEL "$stream" "$stream:dlq" notifications:outbox analytics:totals >/dev/null

say "producing $events order events (every 50th is malformed) with XADD"
kinds=(order.placed order.paid order.shipped order.cancelled)
customers=(alice bob carol dan erin)
{
  for i in $(seq 1 "$events"); do
    kind=${kinds[$((i % 4))]}; who=${customers[$((i % 5))]}
    amount="$((i % 90 + 10)).$((i % 10))0"
    if (( i % 50 == 0 )); then amount="twelve"; fi
    echo "XADD $stream * type $kind order_id o-$i customer $who amount $amount ts_ms $(date +%s%3N)"
  done
} | cli >/dev/null
echo "stream length: $(cli XLEN "$stream")"

say "host run --config examples/orders.toml: groups 'notifications' (notify.wasm) and 'analytics' (analytics.wasm) in one process"
REDIS_URL="$url" PLUGIN_DIR="$root/plugins/dist" "$host" run --config examples/orders.toml 2>"$workdir/host.log" &
pids+=($!)

done_reading() {
  cli XINFO GROUPS "$stream" | awk -v n="$events" '
    /^name$/ {getline g} /^pending$/ {getline p} /^lag$/ {getline l; if (p==0 && l==0) ok++}
    END {exit !(ok==2)}'
}
for _ in $(seq 600); do done_reading && break; sleep 0.1; done

say "consumer groups (XINFO GROUPS)"
cli XINFO GROUPS "$stream" | paste - - | paste - - - - - - | sed 's/\t/  /g'
say "dead-letter stream $stream:dlq: $(cli XLEN "$stream:dlq") entries; the first one:"
cli XRANGE "$stream:dlq" - + COUNT 1 | tail -n +2 | paste - - | column -t -s $'\t'
say "notifications:outbox: $(cli XLEN notifications:outbox) notifications; the last one:"
cli XREVRANGE notifications:outbox + - COUNT 1 | tail -n +2 | paste - - | column -t -s $'\t'
say "analytics:totals: events by type (latest running total of each worker instance, summed)"
cli XRANGE analytics:totals - + | awk '
  prev == "instance" { inst = $0 } prev == "type" { type = $0 } prev == "count" { last[inst SUBSEP type] = $0 }
  { prev = $0 }
  END { for (k in last) { split(k, p, SUBSEP); total[p[2]] += last[k] } for (t in total) printf "  %-16s %d\n", t, total[t] }' | sort

say "stopping the host with SIGTERM (both pipelines drain, flush acks, exit 0)"
host_pid="${pids[${#pids[@]}-1]}"
kill -TERM "$host_pid"
wait "$host_pid"; echo "host pid $host_pid exited with status $?"
say "last lines of the host's log"
tail -n 6 "$workdir/host.log"
