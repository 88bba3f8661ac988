#!/usr/bin/env bash
# Builds the JavaScript enrichment handler as a WebAssembly component:
#   plugins/js-enrich/enrich.js -> plugins/dist/enrich.wasm
# Needs node (20+) and npm with access to the npm registry on first run. The componentize-js
# version is pinned in package.json / package-lock.json and installed into ./node_modules.
set -euo pipefail
start=$(date +%s%N)
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
cd "$here"

out="$root/plugins/dist/enrich.wasm"
newer() { [ -f "$out" ] && [ -z "$(find "$@" -newer "$out" 2>/dev/null | head -1)" ]; }
if [ -x node_modules/.bin/componentize-js ] && newer enrich.js package.json package-lock.json "$root/wit" \
  && [ "${1:-}" != "--force" ]; then
  echo "plugins/dist/enrich.wasm is up to date"
  exit 0
fi

cli="node_modules/.bin/componentize-js"
stamp="node_modules/.streamhost-lock.sha256"
if [ -f package-lock.json ]; then
  # npm ci wipes and reinstalls node_modules (~30 s); skip it when this exact lock file was
  # already installed here.
  want="$(sha256sum package-lock.json | cut -d' ' -f1)"
  if [ ! -x "$cli" ] || [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    # npm ci refuses a lock that lacks entries for other platforms' optional native
    # packages (rolldown/jco-node-fs bindings for darwin/win32/musl); a registry that lacks
    # those versions produces such a lock. Then install the locked versions with npm install,
    # without rewriting package-lock.json.
    if ! npm ci --no-audit --no-fund; then
      echo "npm ci refused package-lock.json; installing the locked versions with npm install --no-save" >&2
      npm install --no-save --no-audit --no-fund
    fi
    echo "$want" > "$stamp"
  fi
else
  npm install --no-audit --no-fund
fi

mkdir -p "$root/plugins/dist"
# -d http fetch-event: no outbound fetch() and no wasi:http incoming handler, so the component
# imports only what the host links (wasi:cli/io/clocks/random and streamhost:plugin/host).
"$cli" enrich.js --wit "$root/wit" --world-name handler -d http fetch-event \
  -o "$root/plugins/dist/enrich.wasm"
ms=$(( ($(date +%s%N) - start) / 1000000 ))
printf 'built plugins/dist/enrich.wasm (%s bytes) in %d.%03ds\n' \
  "$(wc -c < "$root/plugins/dist/enrich.wasm")" $((ms / 1000)) $((ms % 1000))
