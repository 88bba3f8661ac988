#!/usr/bin/env bash
# Builds the Python fraud-score handler as a WebAssembly component:
#   plugins/python-fraud/app.py -> plugins/dist/fraud.wasm
# Needs only python3 (with venv/pip) and access to PyPI on first run; installs the pinned
# componentize-py from requirements.txt into plugins/python-fraud/.venv if it is not there.
set -euo pipefail
start=$(date +%s%N)
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
venv="$here/.venv"
want="$(sed -n 's/^componentize-py==//p' "$here/requirements.txt")"

have=""
if [ -x "$venv/bin/componentize-py" ]; then
  have="$("$venv/bin/componentize-py" --version 2>/dev/null | awk '{print $2}')" || have=""
fi
if [ "$have" != "$want" ]; then
  echo "installing componentize-py $want into $venv"
  [ -x "$venv/bin/python" ] || python3 -m venv "$venv"
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$here/requirements.txt"
fi

out="$root/plugins/dist/fraud.wasm"
newer() { [ -f "$out" ] && [ -z "$(find "$@" -newer "$out" 2>/dev/null | head -1)" ]; }
if newer "$here/app.py" "$here/requirements.txt" "$root/wit" && [ "${1:-}" != "--force" ]; then
  echo "plugins/dist/fraud.wasm is up to date"
  exit 0
fi

mkdir -p "$root/plugins/dist"
cd "$here"
"$venv/bin/componentize-py" -d "$root/wit" -w handler componentize app -o "$root/plugins/dist/fraud.wasm"
ms=$(( ($(date +%s%N) - start) / 1000000 ))
printf 'built plugins/dist/fraud.wasm (%s bytes) in %d.%03ds\n' \
  "$(wc -c < "$root/plugins/dist/fraud.wasm")" $((ms / 1000)) $((ms % 1000))
