#!/usr/bin/env bash
# Builds every Rust handler plugin as a WebAssembly component and copies the
# results to plugins/dist/<name>.wasm. Plain cargo: no cargo-component needed.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
if ! rustup target list --installed | grep -qx wasm32-wasip2; then
  rustup target add wasm32-wasip2
fi
# Under CARGO_TARGET_DIR when it is set, like every other build of the workspace.
out="${CARGO_TARGET_DIR:-target}/plugins"
cargo build --quiet --target wasm32-wasip2 --profile plugin --target-dir "$out" \
  -p notify-plugin -p analytics-plugin -p noop-plugin -p misbehave-plugin -p probe-plugin -p fanout-plugin
mkdir -p plugins/dist
for name in notify analytics noop misbehave probe fanout; do
  cp "$out/wasm32-wasip2/plugin/$name.wasm" "plugins/dist/$name.wasm"
done
echo "built: $(cd plugins/dist && ls *.wasm | tr '\n' ' ')"
