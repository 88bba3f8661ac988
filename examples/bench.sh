#!/usr/bin/env bash
# The benchmark suite in one command: builds the host (release), the bench
# runner and every plugin (Rust, Python, JavaScript), installs the peers'
# clients (node-redis, redis-py; examples/bench/peers), then measures
# throughput, CPU, memory, latency and the hot-swap pause against native
# Rust consumer loops on a private redis-server. Results go to target/bench/
# (results.json, chart.svg, section.md).
#
#   examples/bench.sh                      # full run (~2 minutes after the build)
#   examples/bench.sh --update-readme      # ... and refresh README.md's figures
#   examples/bench.sh --rounds 1 --only noop --rates 0 --swaps 0   # quick look
#   examples/bench.sh --help               # every option
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
echo "building (release) host, bench runner and plugins..." >&2
cargo build --quiet --release --locked -p streamhost -p streamhost-bench
plugins/build.sh >&2
plugins/python-fraud/build.sh >&2
plugins/js-enrich/build.sh >&2
examples/bench/peers/setup.sh >&2
# cargo honours CARGO_TARGET_DIR (e.g. a shared build directory); so does this.
exec "${CARGO_TARGET_DIR:-target}/release/streamhost-bench" "$@"
