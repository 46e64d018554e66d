#!/usr/bin/env bash
# The README's first command: set up (if needed) and run the main job.
#
#   scripts/demo.sh [demo flags, see --help]
#   scripts/demo.sh --repeats 5      # the published table: mean ± spread over 5 random seeds
#
# Runs the digits demo (examples/digits) on the embedded host with the
# convolutional host network: baseline, seeded and static runs, the table,
# target/digits-demo.svg and target/digits-demo-summary.json. Flags given
# here override the defaults below (`--host linear` for the linear host).
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"
bash scripts/setup.sh
echo "[demo] building (first run compiles libtorch bindings and wasmtime: several minutes)" >&2
exec cargo run --locked --quiet -p kasmina-examples --example digits -- --host conv "$@"
