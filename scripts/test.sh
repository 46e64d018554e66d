#!/usr/bin/env bash
# The README's second command: set up (if needed) and run the whole test suite.
#
#   scripts/test.sh [extra cargo test args]
#
# Builds the host crates, the wasm32-wasip2 policy plugins (via the
# kasmina-plugin-artifacts build script) and runs every test on real libtorch
# and real wasmtime. Cold on 2 cores: see BENCHMARKS.md for measured times.
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"
bash scripts/setup.sh
# The contract crate must stay light enough for any client to depend on.
if cargo tree --locked -p leyline -e normal,build --prefix none | grep -qE '^(wasmtime|tch|torch-sys) '; then
    echo "[test] FAIL: leyline depends on wasmtime or tch (cargo tree -p leyline)" >&2
    exit 1
fi
# So must the client crate: controllers and tools link it without the host's weight.
if cargo tree --locked -p kasmina-client -e normal,build --prefix none | grep -qE '^(wasmtime|tch|torch-sys|tokio) '; then
    echo "[test] FAIL: kasmina-client depends on tch, torch-sys, wasmtime or tokio (cargo tree -p kasmina-client)" >&2
    exit 1
fi
if ! cargo fmt --all --check >/dev/null; then
    echo "[test] FAIL: code is not formatted; run: cargo fmt --all" >&2
    exit 1
fi
echo "[test] cargo test --workspace (first run compiles libtorch bindings and wasmtime: several minutes)" >&2
exec cargo test --workspace --locked "$@"
