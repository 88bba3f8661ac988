#!/usr/bin/env bash
# Throughput of partitioned consumption on a local Redis Cluster against one
# host on one node: builds the host (release) and the plugins, starts a
# private six-node cluster (three masters, a replica each) and a single
# redis-server, pre-loads N entries, then times how long 1, 2 and 3 hosts
# (no-op plugin, --partitions 8) take to consume them all. Everything runs on
# this machine, so hosts and Redis share its cores: the figures show what the
# partitioning and the routing cost, not how a real cluster scales.
#
#   examples/cluster-bench.sh            # 100000 entries
#   ENTRIES=20000 examples/cluster-bench.sh
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
entries="${ENTRIES:-100000}"
target="${CARGO_TARGET_DIR:-target}"
echo "building (release) host and plugins..." >&2
cargo build --quiet --release --locked -p streamhost
plugins/build.sh >/dev/null
host="$target/release/host"
plugin="plugins/dist/noop.wasm"
work="$(mktemp -d)"
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
start_redis() { # port, extra args...
  local port="$1"; shift
  mkdir -p "$work/$port"
  redis-server --port "$port" --bind 127.0.0.1 --save '' --dir "$work/$port" "$@" >/dev/null 2>&1 &
  pids+=($!)
  until redis-cli -p "$port" ping >/dev/null 2>&1; do sleep 0.05; done
}

# Cluster ports below 55536: each node's bus listens on port + 10000.
nodes=()
while [ ${#nodes[@]} -lt 6 ]; do
  p="$(free_port)"
  if [ "$p" -lt 55536 ]; then nodes+=("$p"); fi
done
for p in "${nodes[@]}"; do start_redis "$p" --cluster-enabled yes --cluster-config-file nodes.conf --cluster-node-timeout 2000; done
redis-cli --cluster create $(printf '127.0.0.1:%s ' "${nodes[@]}") --cluster-replicas 1 --cluster-yes >/dev/null
until redis-cli -p "${nodes[0]}" cluster info | grep -q cluster_state:ok; do sleep 0.1; done
single="$(free_port)"
start_redis "$single"

# Entries group g has read and acked over every key given, summed: what
# was read minus what is still pending.
done_total() { # port, cluster(0|1), keys...
  local port="$1" cluster="$2"; shift 2
  local total=0 c=()
  [ "$cluster" = 1 ] && c=(-c)
  for key in "$@"; do
    n="$(redis-cli "${c[@]}" -p "$port" xinfo groups "$key" 2>/dev/null |
      awk '/^pending$/{getline; p=$0} /^entries-read$/{getline; r=$0} END{print (r+0)-(p+0)}')"
    total=$((total + ${n:-0}))
  done
  echo "$total"
}

# run LABEL PORT CLUSTER HOSTS STREAM PARTITIONS [FLAGS…]: pre-loads, starts HOSTS hosts, times the drain.
run() {
  local label="$1" port="$2" cluster="$3" hosts="$4" stream="$5" parts="$6"
  shift 6
  local flags=(--redis "redis://127.0.0.1:$port" --stream "$stream" --group g --plugin "$plugin"
               --log warn --stats-interval 0s --concurrency 2 "$@")
  local keys=("$stream") produce=(--stream "$stream")
  if [ "$parts" -gt 0 ]; then
    flags+=(--partitions "$parts")
    produce+=(--partitions "$parts")
    keys=(); for i in $(seq 0 $((parts - 1))); do keys+=("{$stream:$i}"); done
  fi
  [ "$cluster" = 1 ] && flags+=(--cluster) && produce+=(--cluster)
  "$host" produce --redis "redis://127.0.0.1:$port" "${produce[@]}" --count "$entries" n=1 >/dev/null
  local started; started="$(date +%s.%N)"
  local hpids=()
  for _ in $(seq 1 "$hosts"); do
    "$host" run "${flags[@]}" 2>"$work/host.log" &
    hpids+=($!); pids+=($!)
  done
  until [ "$(done_total "$port" "$cluster" "${keys[@]}")" -ge "$entries" ]; do sleep 0.05; done
  local took; took="$(python3 -c "print($(date +%s.%N) - $started)")"
  for p in "${hpids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  for p in "${hpids[@]}"; do wait "$p" 2>/dev/null || true; done
  printf '%-46s %8.0f entries/s\n' "$label" "$(python3 -c "print($entries / $took)")"
}

echo "entries: $entries (no-op plugin; times include the hosts' start-up)"
run "1 host, one node, one stream"        "$single" 0 1 one 0
run "1 host, one node, 8 partitions, shared" "$single" 0 1 shared 8 --assign shared
run "1 host, one node, 8 partitions, leased" "$single" 0 1 parts 8
run "1 host, cluster, 8 partitions"       "${nodes[0]}" 1 1 c1 8
run "2 hosts, cluster, 8 partitions"      "${nodes[0]}" 1 2 c2 8
run "3 hosts, cluster, 8 partitions"      "${nodes[0]}" 1 3 c3 8
