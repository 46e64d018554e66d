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
# The production binary carries its default plugins as bytes; the crate that
# builds the fault-fixture plugins (and knows build-directory paths) is for tests.
if cargo tree --locked -p kasmina-daemon -e normal,build --prefix none | grep -qE '^kasmina-plugin-artifacts '; then
    echo "[test] FAIL: kasmina-daemon links kasmina-plugin-artifacts outside tests (cargo tree -p kasmina-daemon)" >&2
    exit 1
fi
if ! cargo fmt --all --check >/dev/null; then
    echo "[test] FAIL: code is not formatted; run: cargo fmt --all" >&2
    exit 1
fi
# --- gpu-check dry run: scripts/gpu-check.sh's own flow on CPU stand-ins (no GPU needed) ---
bash scripts/gpu-check.sh --dry-run
# --- end gpu-check dry run ---
# --- status page browser: Debian's headless chromium for examples/tests/status_page.rs (issue 16) ---
# Installed here, only for that test; without it the test prints why it skipped.
if [[ -z "${KASMINA_CHROMIUM:-}" ]]; then
    KASMINA_CHROMIUM="$(command -v chromium-headless-shell || command -v chromium || true)"
    if [[ -z "$KASMINA_CHROMIUM" && "$(id -u)" == 0 ]] && command -v apt-get >/dev/null; then
        echo "[test] installing Debian's chromium-headless-shell for the status-page browser test" >&2
        if DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends chromium-headless-shell >/dev/null 2>&1 \
            || { apt-get update -q >/dev/null 2>&1 && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends chromium-headless-shell >/dev/null 2>&1; }; then
            KASMINA_CHROMIUM="$(command -v chromium-headless-shell || true)"
        fi
    fi
    [[ -n "$KASMINA_CHROMIUM" ]] || echo "[test] no chromium could be installed: the status-page browser test will skip" >&2
fi
export KASMINA_CHROMIUM
# --- end status page browser ---
echo "[test] cargo test --workspace (first run compiles libtorch bindings and wasmtime: several minutes)" >&2
# --no-fail-fast: one run reports every failing test binary, not only the first.
cargo test --workspace --locked --no-fail-fast "$@"
# --- fuzz smoke: coverage-guided libFuzzer runs of the light targets (fuzz/, scripts/fuzz.sh) ---
# (Every target, host ones included, is also replayed by `cargo test -p kasmina-fuzz-checks` above.)
# Each target replays its seed corpus and regression inputs (fuzz/corpus, fuzz/regressions),
# then fuzzes for KASMINA_FUZZ_SMOKE_SECONDS (default 5) seconds; a crash, hang or an
# allocation over a cap fails the suite. Long campaigns and the host targets: scripts/fuzz.sh.
echo "[test] fuzz smoke (scripts/fuzz.sh smoke; first run builds the instrumented targets: ~3 min)" >&2
if ! cargo fmt --manifest-path fuzz/Cargo.toml --check >/dev/null; then
    echo "[test] FAIL: fuzz/ is not formatted; run: cargo fmt --manifest-path fuzz/Cargo.toml" >&2
    exit 1
fi
bash scripts/fuzz.sh smoke "${KASMINA_FUZZ_SMOKE_SECONDS:-5}"
# --- end fuzz smoke ---
# --- python: the kasmina package's tests (bindings/python) on real torch, the real daemon ---
# scripts/setup.sh built and installed the wheel into the venv. The tests start the
# `kasmina` binary and run the Rust digits demo for comparison; both are built by the
# cargo test above (the build below only makes sure, and is a no-op then).
CACHE="${KASMINA_CACHE:-$HOME/.cache/kasmina}"
if [[ "${KASMINA_SKIP_PYTHON:-0}" != 1 ]]; then
    if ! cargo fmt --manifest-path bindings/python/Cargo.toml --all --check >/dev/null; then
        echo "[test] FAIL: bindings/python is not formatted; run: cargo fmt --manifest-path bindings/python/Cargo.toml --all" >&2
        exit 1
    fi
    cargo build --locked --quiet -p kasmina-daemon --bin kasmina -p kasmina-examples --example digits
    TARGET_DIR="$(cargo metadata --locked --format-version 1 --no-deps | "$CACHE/venv/bin/python" -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')"
    export KASMINA_BIN="$TARGET_DIR/debug/kasmina"
    export KASMINA_DIGITS_DEMO="$TARGET_DIR/debug/examples/digits"
    KASMINA_WHEEL="$(ls "$CACHE"/python-wheelhouse/kasmina-*.whl)"
    export KASMINA_WHEEL
    echo "[test] pytest bindings/python/tests (PyTorch trainer, native client, parity with the Rust tensor plane)" >&2
    "$CACHE/venv/bin/python" -m pytest -p no:cacheprovider bindings/python/tests
fi
# --- end python ---
