#!/usr/bin/env bash
# Installs the peers' clients locally (idempotent): node-redis into
# node_modules, redis-py into .venv. Used by examples/bench.sh.
set -euo pipefail
cd "$(dirname "$0")"
if [ ! -d node_modules/redis ]; then
  npm ci --no-audit --no-fund --silent >/dev/null 2>&1 || npm install --no-audit --no-fund --silent >/dev/null
fi
if [ ! -x .venv/bin/python ] || ! .venv/bin/python -c 'import redis' 2>/dev/null; then
  python3 -m venv .venv
  .venv/bin/pip install --quiet -r requirements.txt
fi
