#!/usr/bin/env bash
# The README's first command: set up (if needed) and run the main job.
#
#   scripts/demo.sh [demo flags, see --help]
#
# Runs the digits demo on the embedded host (examples/digits).
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"
bash scripts/setup.sh
echo "[demo] building (first run compiles libtorch bindings and wasmtime: several minutes)" >&2
exec cargo run --locked --quiet -p kasmina-examples --example digits -- "$@"
