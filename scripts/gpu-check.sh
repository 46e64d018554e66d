#!/usr/bin/env bash
# One prepared check of the tensor plane and the digits demo on CUDA.
#
#   scripts/gpu-check.sh --prepare     # HERE, before a device call: what it carries (target/gpu-check/carry:
#                                      #   binaries bundle, vendored crates, digits.csv, the Python wheel)
#   scripts/gpu-check.sh               # ON THE GPU MACHINE: the check itself (writes the summary to $OUT)
#   scripts/gpu-check.sh --dry-run     # anywhere: the same flow on CPU stand-ins (scripts/test.sh runs it)
#
# Options: --source auto|build|bundle (where the binaries come from; default
# auto), --out DIR (summary and logs; default $OUT, else a temp folder for
# --dry-run, else target/gpu-check/out), --budget SECONDS (the whole check;
# default 480 on the GPU), --steps N (demo steps; default 400, dry run 200),
# --device cpu|cuda (device under test; cpu runs the GPU flow's plumbing on a
# machine without a GPU).
#
# Steps, each timed and bounded by `timeout` (bounds shrink to fit --budget):
#   1. binaries: the tensor plane's CUDA test binary (`--features cuda-tests`),
#      the blend_bandwidth example and the digits demo, either
#      - built there (`build`): LIBTORCH_USE_PYTORCH=1 against the installed
#        CUDA torch, KASMINA_SKIP_LIBTORCH=1, CARGO_BUILD_JOBS=<cores>,
#        offline from the vendored crates carried in target/gpu-check/carry;
#        needs a Rust >= 1.95 toolchain on the machine (+ wasm32-wasip2 for
#        the demo's plugins), or
#      - from the carried bundle (`bundle`): binaries built here by --prepare,
#        run against the installed torch's libraries (LD_LIBRARY_PATH) with
#        libtorch_cuda.so preloaded (the CUDA backend registers on load).
#      `auto` builds when a toolchain and the vendored crates are there and
#      falls back to the bundle for whatever did not build in its bound;
#   2. tests: the CUDA test binary (every blend mode, the incubator, isolation
#      sampling, KD, a TorchScript kernel loaded onto cuda:0 from bytes);
#   3. bandwidth: every blend against `copy_` of the same size, GB/s and % of
#      the device's peak; gate: every blend >= 0.8x copy_;
#   4. demo: digits on the CPU (reference) and with --device cuda; gate: same
#      gate decisions and final stages, test accuracy within 0.5 points;
#   5. python: the PyTorch grafter's CUDA tests, once bindings/python has them
#      (tests/test_*.py files mentioning cuda, run with pytest and
#      KASMINA_TEST_DEVICE=cuda, the carried kasmina wheel installed into a
#      scratch folder; else skipped with the reason).
# The summary (Markdown, every figure and command) is rewritten after every
# step, so a check cut short still reports what ran.
#
# --dry-run: the same steps with CPU stand-ins (slim CPU libtorch from
# scripts/setup.sh, KASMINA_TEST_DEVICE=cpu, --device cpu, a short bandwidth
# run, a 200-step demo); it tests this script's flow, not a GPU. It writes
# only to a temp folder (and cargo's target folder).
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
REPORT="$REPO/scripts/gpu-check-report.py"
CARRY_REL="target/gpu-check/carry"
CARRY="$REPO/$CARRY_REL"
CACHE="${KASMINA_CACHE:-$HOME/.cache/kasmina}"
TORCH_VERSION="2.11.0"
MIN_RUST="1.95"
BANDWIDTH_GATE="0.8"
DEMO_MAX_POINTS="0.5"
CARRY_LIMIT=$((64 << 20))

MODE=gpu
SOURCE=auto
OUT_DIR=""
BUDGET=""
DEMO_STEPS=""
DEV_OVERRIDE=""
usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; }
while (($#)); do
    case "$1" in
        --dry-run) MODE=dry-run ;;
        --prepare) MODE=prepare ;;
        --gpu) MODE=gpu ;;
        --source) SOURCE="${2:?--source needs auto, build or bundle}"; shift ;;
        --out) OUT_DIR="${2:?--out needs a folder}"; shift ;;
        --budget) BUDGET="${2:?--budget needs seconds}"; shift ;;
        --steps) DEMO_STEPS="${2:?--steps needs a number}"; shift ;;
        --device) DEV_OVERRIDE="${2:?--device needs cpu or cuda}"; shift ;;
        -h | --help) usage; exit 0 ;;
        *) echo "gpu-check: unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
    shift
done
case "$SOURCE" in auto | build | bundle) ;; *) echo "gpu-check: --source auto|build|bundle" >&2; exit 2 ;; esac

cd "$REPO"
say() { printf '[gpu-check] %s\n' "$*" >&2; }
now_ms() { date +%s%3N; }
START_MS=$(now_ms)

# ---------------------------------------------------------------------------
# Building here (dry run, --prepare) and there (build source)
# ---------------------------------------------------------------------------

# cargo build ... --message-format=json-render-diagnostics > FILE; prints "name path" per wanted executable.
executables() {
    python3 - "$@" <<'PY'
import json, sys
path, want = sys.argv[1], set(sys.argv[2:])
for line in open(path, encoding="utf-8", errors="replace"):
    if line.startswith("{"):
        m = json.loads(line)
        if m.get("reason") == "compiler-artifact" and m.get("executable") and m["target"]["name"] in want:
            print(m["target"]["name"], m["executable"])
PY
}

BUILD_TENSOR_CMD=(cargo build --locked -p kasmina-tensor --features cuda-tests --test cuda --example blend_bandwidth
    --message-format=json-render-diagnostics)
BUILD_DEMO_CMD=(cargo build --locked -p kasmina-examples --example digits --message-format=json-render-diagnostics)

# Slim CPU libtorch folder configured by scripts/setup.sh (.cargo/config.toml), or empty.
slim_libtorch() {
    sed -n 's/^LIBTORCH = "\(.*\)"$/\1/p' "$REPO/.cargo/config.toml" 2>/dev/null | head -1
}

ensure_local_setup() {
    if [[ -z "$(slim_libtorch)" ]] || [[ ! -s "$CACHE/data/digits.csv" ]]; then
        say "running scripts/setup.sh (slim CPU libtorch, digits data)"
        bash "$REPO/scripts/setup.sh"
    fi
}

# ---------------------------------------------------------------------------
# --prepare: what a device call carries (run here, with network)
# ---------------------------------------------------------------------------
prepare() {
    cd "$REPO"
    ensure_local_setup
    PREP_WORK="$(mktemp -d "${TMPDIR:-/tmp}/kasmina-gpu-prepare.XXXXXX")"
    trap 'rm -rf "$PREP_WORK"' EXIT
    local work="$PREP_WORK"
    say "building the binaries for the bundle (slim CPU libtorch headers; same torch $TORCH_VERSION wheel as the GPU's)"
    "${BUILD_TENSOR_CMD[@]}" > "$work/build-tensor.json"
    "${BUILD_DEMO_CMD[@]}" > "$work/build-demo.json"
    local bundle="$work/bundle"
    mkdir -p "$bundle/bin" "$bundle/plugins" "$CARRY"
    local name path
    while read -r name path; do
        strip -o "$bundle/bin/$name" "$path" 2>/dev/null || cp "$path" "$bundle/bin/$name"
    done < <(executables "$work/build-tensor.json" cuda blend_bandwidth; executables "$work/build-demo.json" digits)
    for name in cuda blend_bandwidth digits; do
        [[ -x "$bundle/bin/$name" ]] || { say "FAIL: no $name executable from the build"; exit 1; }
    done
    # The demo binary reads fixtures (and, where a build links plugin-artifacts,
    # plugin components) from absolute paths fixed at build time.
    local target_dir plugin_dir
    target_dir="$(cargo metadata --locked --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')"
    plugin_dir="$target_dir/kasmina-plugins/wasm32-wasip2/plugin"
    if compgen -G "$plugin_dir/*.wasm" > /dev/null; then
        cp "$plugin_dir"/*.wasm "$bundle/plugins/"
    else
        plugin_dir=""
    fi
    cat > "$bundle/manifest.env" <<EOF
REPO_ROOT=$REPO
PLUGIN_DIR=$plugin_dir
TORCH_VERSION=$TORCH_VERSION
GIT_HEAD=$(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo unknown)$(git -C "$REPO" diff --quiet 2>/dev/null || echo +dirty)
BUILT_AT=$(date -u +%Y-%m-%dT%H:%M:%SZ)
EOF
    tar -czf "$CARRY/bundle.tar.gz.tmp" -C "$work" bundle
    mv "$CARRY/bundle.tar.gz.tmp" "$CARRY/bundle.tar.gz"
    cp "$CACHE/data/digits.csv" "$CARRY/digits.csv"
    # The Python package (abi3 wheel, no libtorch inside) when scripts/setup.sh built one.
    rm -f "$CARRY"/kasmina-*.whl
    if compgen -G "$CACHE/python-wheelhouse/kasmina-*.whl" > /dev/null; then
        cp "$CACHE"/python-wheelhouse/kasmina-*.whl "$CARRY/"
    fi

    # Vendored crates: the GPU machine reaches no registry. One archive per Cargo.lock.
    local lock_hash vendor
    lock_hash="$(sha256sum "$REPO/Cargo.lock" | cut -c1-16)"
    vendor="$CARRY/vendor-$lock_hash.tar.xz"
    if [[ ! -s "$vendor" ]]; then
        say "vendoring every crate in Cargo.lock (cargo vendor; compressing with xz: ~2 min on 2 cores)"
        rm -f "$CARRY"/vendor-*.tar.xz
        cargo vendor --locked --quiet "$work/src/vendor" > /dev/null
        mkdir -p "$work/cargo-home"
        vendor_config "$work/src/vendor" > "$work/cargo-home/config.toml"
        # The vendored set must resolve the whole lock file offline.
        CARGO_HOME="$work/cargo-home" cargo metadata --locked --offline --format-version 1 > /dev/null
        tar -C "$work/src" -cf - vendor | xz -6 -T2 > "$vendor.tmp"
        mv "$vendor.tmp" "$vendor"
    fi
    local carry_bytes tree_bytes
    carry_bytes="$(du -sb "$CARRY" | cut -f1)"
    tree_bytes="$(cd "$REPO" && git ls-files -z -co --exclude-standard | du -cb --files0-from=- 2>/dev/null | tail -1 | cut -f1)"
    say "carry: $CARRY_REL ($((carry_bytes >> 20)) MiB):"
    (cd "$CARRY" && ls -l | sed 1d | awk '{printf "[gpu-check]   %-40s %6.1f MiB\n", $9, $5 / 1048576}') >&2
    say "working tree: $((tree_bytes >> 20)) MiB; together $(((carry_bytes + tree_bytes) >> 20)) MiB of the device's 64 MiB"
    if ((carry_bytes + tree_bytes > CARRY_LIMIT)); then
        say "FAIL: over the 64 MiB the device call can carry"
        exit 1
    fi
    say "ready. Device call: run(command=\"bash scripts/gpu-check.sh\", carry=[\"$CARRY_REL\"], timeout_s=560)"
}

vendor_config() {
    printf '[source.crates-io]\nreplace-with = "vendored-sources"\n\n[source.vendored-sources]\ndirectory = "%s"\n\n[net]\noffline = true\n' "$1"
}

if [[ "$MODE" == prepare ]]; then
    prepare
    exit 0
fi

# ---------------------------------------------------------------------------
# The check (GPU or dry run)
# ---------------------------------------------------------------------------
if [[ "$MODE" == dry-run ]]; then
    DEV=cpu
    BUDGET="${BUDGET:-1800}" # a cap only: a cold build here compiles libtorch bindings and wasmtime
    DEMO_STEPS="${DEMO_STEPS:-200}"
    OUT_DIR="${OUT_DIR:-$(mktemp -d "${TMPDIR:-/tmp}/kasmina-gpu-check-dry-run.XXXXXX")}"
    WORK="$(mktemp -d "${TMPDIR:-/tmp}/kasmina-gpu-check-work.XXXXXX")"
    trap 'rm -rf "$WORK"' EXIT
    [[ "$SOURCE" == auto ]] && SOURCE=build
else
    DEV=cuda
    BUDGET="${BUDGET:-480}"
    DEMO_STEPS="${DEMO_STEPS:-400}"
    OUT_DIR="${OUT_DIR:-${OUT:-$REPO/target/gpu-check/out}}"
    # Inside the repository's ignored target/: a rerun on a still-warm machine reuses it.
    WORK="$REPO/target/gpu-check/work"
    rm -rf "$WORK/logs" "$WORK/bin"
    rm -f "$WORK"/{tests.log,bandwidth.jsonl,demo-ref.json,demo-dev.json,python.log,peak_gbps,torch.env,summary.md}
fi
DEV="${DEV_OVERRIDE:-$DEV}"
mkdir -p "$OUT_DIR" "$WORK/logs" "$WORK/bin"
: > "$WORK/steps.tsv"
: > "$WORK/env.tsv"
DEADLINE_MS=$((START_MS + BUDGET * 1000))
RESERVE_S=10 # kept for the summary
FAILED=0

env_line() { printf '%s\t%s\n' "$1" "$(printf '%s' "$2" | tr '\t\n' '  ')" >> "$WORK/env.tsv"; }

publish() {
    python3 "$REPORT" render "$WORK" "$WORK/summary.md" || say "summary rendering failed"
    cp "$WORK/summary.md" "$OUT_DIR/gpu-check-summary.md" 2>/dev/null || true
    # Logs and raw figures: the report script renders the summary again from an unpacked copy.
    local f raw=()
    for f in steps.tsv env.tsv tests.log bandwidth.jsonl peak_gbps demo-ref.json demo-dev.json python.log torch.env; do
        [[ -e "$WORK/$f" ]] && raw+=("$f")
    done
    tar -czf "$OUT_DIR/gpu-check-logs.tar.gz" -C "$WORK" logs "${raw[@]}" 2>/dev/null || true
}

# record NAME STATUS SECONDS BOUND COMMAND NOTE
record() {
    local note="${6//$'\t'/ }"
    printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "$4" "$5" "${note//$'\n'/ }" >> "$WORK/steps.tsv"
    [[ "$2" == FAIL || "$2" == TIMEOUT ]] && FAILED=1
    say "$(printf '%-12s %-7s %6ss (bound %ss) %s' "$1" "$2" "$3" "$4" "$6")"
    publish
}

# run_step NAME MAX_SECONDS [--stdout FILE] CMD...: runs CMD under timeout, logs to logs/NAME.log.
# Sets STEP_RC, STEP_SECS, STEP_BOUND, STEP_CMD; records nothing (the caller decides the status).
run_step() {
    local name="$1" max="$2" stdout=""
    shift 2
    if [[ "${1:-}" == --stdout ]]; then stdout="$2"; shift 2; fi
    local remaining=$(((DEADLINE_MS - $(now_ms)) / 1000 - RESERVE_S))
    if [[ -n "${STEP_CAP_MS:-}" ]]; then
        local capped=$(((STEP_CAP_MS - $(now_ms)) / 1000))
        ((capped < remaining)) && remaining=$capped
    fi
    STEP_BOUND=$((max < remaining ? max : remaining))
    STEP_CMD="$(printf '%q ' "$@")"
    STEP_CMD="${STEP_CMD% }"
    STEP_CMD="${STEP_CMD//$WORK\//}"
    STEP_CMD="${STEP_CMD//$REPO\//}"
    if ((STEP_BOUND < 5)); then
        STEP_RC=-1 STEP_SECS=0
        return 0
    fi
    say "$name: $STEP_CMD"
    local t0 rc=0
    t0=$(now_ms)
    if [[ -n "$stdout" ]]; then
        timeout --kill-after=10 "$STEP_BOUND" "$@" > "$stdout" 2> "$WORK/logs/$name.log" || rc=$?
    else
        timeout --kill-after=10 "$STEP_BOUND" "$@" > "$WORK/logs/$name.log" 2>&1 || rc=$?
    fi
    local ms=$(($(now_ms) - t0))
    STEP_SECS="$((ms / 1000)).$((ms % 1000 / 100))"
    STEP_RC=$rc
}

# status_of: PASS/FAIL/TIMEOUT/SKIP from STEP_RC.
status_of() {
    case "$STEP_RC" in
        0) echo PASS ;;
        -1) echo SKIP ;;
        124 | 137) echo TIMEOUT ;;
        *) echo FAIL ;;
    esac
}

# step NAME MAX [--stdout FILE] CMD...: run_step + record with a default note.
step() {
    local name="$1"
    run_step "$@"
    local status note=""
    status="$(status_of)"
    case "$status" in
        SKIP) note="out of time budget" ;;
        TIMEOUT) note="killed at its bound" ;;
        FAIL) note="exit $STEP_RC; see logs/$name.log" ;;
    esac
    record "$name" "$status" "$STEP_SECS" "$STEP_BOUND" "$STEP_CMD" "$note"
    [[ "$status" == PASS ]]
}

# stop_early NAME NOTE: a failure nothing after it can work around.
stop_early() {
    record "$1" FAIL 0 0 "" "$2"
    [[ "$MODE" == gpu ]] && cat "$OUT_DIR/gpu-check-summary.md"
    exit 1
}

say "mode $MODE, device $DEV, budget ${BUDGET}s, summary in $OUT_DIR"
env_line mode "$MODE"
env_line date "$(date -u +%Y-%m-%dT%H:%M:%SZ)"
env_line machine "$(uname -sm), $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2 / 1048576}' /proc/meminfo) memory"
env_line device_under_test "$DEV"
env_line bandwidth_gate "$BANDWIDTH_GATE"
env_line demo_max_points "$DEMO_MAX_POINTS"
env_line budget_s "$BUDGET"

# --- the torch the binaries run against -------------------------------------
TORCH_LIB=""
if [[ "$MODE" == gpu ]]; then
    gpu_info="$(nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null | head -1)" || true
    env_line gpu "${gpu_info:-nvidia-smi not available}"
    if ! timeout 120 python3 - > "$WORK/torch.env" 2> "$WORK/logs/torch-probe.log" <<'PY'; then
import os, shlex, torch
print("TORCH_VERSION_FOUND=" + torch.__version__)
print("TORCH_CUDA=" + str(torch.version.cuda))
print("TORCH_LIB=" + os.path.join(os.path.dirname(torch.__file__), "lib"))
print("CUDA_AVAILABLE=" + str(torch.cuda.is_available()))
if torch.cuda.is_available():
    p = torch.cuda.get_device_properties(0)
    clock_khz, bus_bits = getattr(p, "memory_clock_rate", 0), getattr(p, "memory_bus_width", 0)
    if clock_khz and bus_bits:
        print(f"PEAK_GBPS={2 * clock_khz * 1e3 * bus_bits / 8 / 1e9:.0f}")
        print("PEAK_SOURCE=" + shlex.quote(f"device properties: 2 x {clock_khz / 1e3:.0f} MHz x {bus_bits}-bit bus"))
    else:
        spec = {"H200": 4800, "H100": 3350, "A100": 2039}
        hit = next((v for k, v in spec.items() if k in p.name), None)
        if hit:
            print(f"PEAK_GBPS={hit}")
            print("PEAK_SOURCE=" + shlex.quote(f"datasheet figure for {p.name}"))
PY
        stop_early torch "python3 cannot import torch; see logs/torch-probe.log"
    fi
    # shellcheck disable=SC1091
    source "$WORK/torch.env"
    env_line torch "$TORCH_VERSION_FOUND (CUDA $TORCH_CUDA, available: $CUDA_AVAILABLE) at ${TORCH_LIB%/lib}"
    env_line peak_bandwidth "${PEAK_GBPS:-unknown} GB/s (${PEAK_SOURCE:-no figure})"
    printf '%s\n' "${PEAK_GBPS:-}" > "$WORK/peak_gbps"
    if [[ "$TORCH_VERSION_FOUND" != "$TORCH_VERSION"* ]]; then
        stop_early torch "torch $TORCH_VERSION_FOUND installed; tch 0.24 needs $TORCH_VERSION"
    fi
    if [[ "$CUDA_AVAILABLE" != True && "$DEV" == cuda ]]; then
        stop_early torch "torch sees no CUDA device"
    fi
    export KASMINA_SKIP_LIBTORCH=1 # set-up must leave libtorch alone (it is not run here: it needs network)
else
    cd "$REPO"
    ensure_local_setup
    TORCH_LIB="$(slim_libtorch)/lib"
    env_line torch "slim CPU libtorch $TORCH_VERSION at ${TORCH_LIB%/lib} (CPU stand-in for the CUDA torch)"
    env_line peak_bandwidth "n/a (CPU stand-in)"
    : > "$WORK/peak_gbps"
fi

# --- binaries -----------------------------------------------------------------
declare -A BIN=()

# wrap NAME PATH [ENV...]: $WORK/bin/NAME runs PATH with ENV.
wrap() {
    local name="$1" path="$2"
    shift 2
    { printf '#!/usr/bin/env bash\nexec env'; printf ' %q' "$@" "$path"; printf ' "$@"\n'; } > "$WORK/bin/$name"
    chmod +x "$WORK/bin/$name"
    BIN[$name]="$WORK/bin/$name"
}

have_toolchain() {
    command -v cargo > /dev/null && command -v rustc > /dev/null || return 1
    local v
    v="$(rustc --version | awk '{print $2}')"
    [[ "$(printf '%s\n%s\n' "$MIN_RUST" "${v%%-*}" | sort -V | head -1)" == "$MIN_RUST" ]]
}

vendor_archive() { ls "$CARRY"/vendor-*.tar.xz 2> /dev/null | head -1; }

build_binaries() {
    local built="$WORK/logs"
    if [[ "$MODE" == gpu ]]; then
        # One cold build: incremental compilation would only write caches nobody reads.
        export LIBTORCH_USE_PYTORCH=1 CARGO_INCREMENTAL=0 CARGO_BUILD_JOBS
        CARGO_BUILD_JOBS="$(nproc)"
        unset LIBTORCH
        # Its own target folder, never an inherited one: vendored sources and
        # LIBTORCH_USE_PYTORCH would invalidate a shared folder's dependencies.
        export CARGO_TARGET_DIR="$WORK/cargo-target"
        local archive vendor_dir="$WORK/vendor-src"
        archive="$(vendor_archive)"
        if [[ -z "$archive" ]]; then
            record vendor FAIL 0 0 "" "no vendored crates in $CARRY_REL (run scripts/gpu-check.sh --prepare here first)"
            return 1
        fi
        if [[ ! -f "$vendor_dir/.unpacked-$(basename "$archive")" ]]; then
            rm -rf "$vendor_dir"
            mkdir -p "$vendor_dir"
            if command -v xz > /dev/null; then
                step vendor 120 tar -xJf "$archive" -C "$vendor_dir" || return 1
            else
                step vendor 120 python3 -c 'import sys, tarfile; tarfile.open(sys.argv[1]).extractall(sys.argv[2])' \
                    "$archive" "$vendor_dir" || return 1
            fi
            touch "$vendor_dir/.unpacked-$(basename "$archive")"
        fi
        mkdir -p "$WORK/cargo-home"
        vendor_config "$vendor_dir/vendor" > "$WORK/cargo-home/config.toml"
        export CARGO_HOME="$WORK/cargo-home"
        env_line toolchain "$(rustc --version); CARGO_BUILD_JOBS=$CARGO_BUILD_JOBS; LIBTORCH_USE_PYTORCH=1; vendored crates $(basename "$archive")"
    else
        env_line toolchain "$(rustc --version) (local cargo caches, slim CPU libtorch)"
    fi
    # Both builds share one cap, so a slow build still leaves time for the bundle and the runs.
    local max_build=330
    [[ "$MODE" == dry-run ]] && max_build=1200
    STEP_CAP_MS=$(($(now_ms) + max_build * 1000))
    local name path
    if step build-tensor "$max_build" --stdout "$built/build-tensor.json" "${BUILD_TENSOR_CMD[@]}"; then
        while read -r name path; do wrap "$name" "$path"; done < <(executables "$built/build-tensor.json" cuda blend_bandwidth)
    fi
    if [[ "$MODE" == gpu ]] && [[ ! -d "$(rustc --print target-libdir --target wasm32-wasip2 2>/dev/null)" ]]; then
        record build-demo SKIP 0 0 "" "no wasm32-wasip2 target for the policy plugins"
    elif step build-demo "$max_build" --stdout "$built/build-demo.json" "${BUILD_DEMO_CMD[@]}"; then
        while read -r name path; do wrap "$name" "$path"; done < <(executables "$built/build-demo.json" digits)
    fi
    STEP_CAP_MS=""
}

# Binaries not built come from the bundle prepared by --prepare.
use_bundle() {
    local missing=()
    for name in cuda blend_bandwidth digits; do [[ -n "${BIN[$name]:-}" ]] || missing+=("$name"); done
    ((${#missing[@]})) || return 0
    if [[ ! -s "$CARRY/bundle.tar.gz" ]]; then
        record bundle FAIL 0 0 "" "no $CARRY_REL/bundle.tar.gz for ${missing[*]} (run scripts/gpu-check.sh --prepare here first)"
        return 1
    fi
    rm -rf "$WORK/bundle"
    step bundle 60 tar -xzf "$CARRY/bundle.tar.gz" -C "$WORK" || return 1
    # shellcheck disable=SC1091
    source "$WORK/bundle/manifest.env"
    # The demo reads plugins and fixtures from the absolute paths it was built with.
    local wasm
    if [[ -n "${PLUGIN_DIR:-}" ]]; then
        mkdir -p "$PLUGIN_DIR"
        for wasm in "$WORK/bundle/plugins"/*.wasm; do
            cmp -s "$wasm" "$PLUGIN_DIR/$(basename "$wasm")" || cp "$wasm" "$PLUGIN_DIR/"
        done
    fi
    if [[ "$REPO_ROOT" != "$REPO" ]] && [[ ! -e "$REPO_ROOT" ]]; then
        mkdir -p "$(dirname "$REPO_ROOT")"
        ln -s "$REPO" "$REPO_ROOT"
    fi
    local run_env=("LD_LIBRARY_PATH=$TORCH_LIB${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}")
    [[ -f "$TORCH_LIB/libtorch_cuda.so" ]] && run_env+=("LD_PRELOAD=$TORCH_LIB/libtorch_cuda.so")
    for name in "${missing[@]}"; do wrap "$name" "$WORK/bundle/bin/$name" "${run_env[@]}"; done
    env_line bundle "${missing[*]} from the bundle built $BUILT_AT at $GIT_HEAD; ${run_env[*]}"
}

case "$SOURCE" in
    build) build_binaries || true ;;
    bundle) ;;
    auto)
        if have_toolchain && [[ -n "$(vendor_archive)" ]]; then
            build_binaries || true
        else
            archive="$(vendor_archive)"
            env_line toolchain "$(have_toolchain && rustc --version || echo "no Rust >= $MIN_RUST toolchain"); vendored crates: ${archive:+$(basename "$archive")}${archive:-none}; so the binaries come from the bundle"
        fi
        ;;
esac
[[ "$SOURCE" == build ]] || use_bundle || true
for name in cuda blend_bandwidth digits; do
    [[ -n "${BIN[$name]:-}" ]] || say "no $name binary: its step is skipped"
done

# --- 2. tensor plane tests ------------------------------------------------------
if [[ -n "${BIN[cuda]:-}" ]]; then
    step tests 180 --stdout "$WORK/tests.log" env "KASMINA_TEST_DEVICE=$DEV" "${BIN[cuda]}" || true
    cat "$WORK/logs/tests.log" >> "$WORK/tests.log" 2>/dev/null || true
else
    record tests SKIP 0 0 "" "no test binary"
fi

# --- 3. blend bandwidth -----------------------------------------------------------
if [[ -n "${BIN[blend_bandwidth]:-}" ]]; then
    bw_args=(--device "$DEV")
    [[ "$MODE" == dry-run ]] && bw_args+=(--elements 4194304 --iters 5 --rounds 3)
    if step bandwidth 150 --stdout "$WORK/bandwidth.jsonl" "${BIN[blend_bandwidth]}" "${bw_args[@]}"; then
        gate_status=PASS
        gate="$(python3 "$REPORT" bench "$WORK" "$BANDWIDTH_GATE")" || gate_status=FAIL
        if [[ "$MODE" == dry-run ]]; then
            record bandwidth-gate INFO 0 0 "" "not applied to CPU stand-ins ($gate)"
        else
            record bandwidth-gate "$gate_status" 0 0 "" "$gate"
        fi
    fi
else
    record bandwidth SKIP 0 0 "" "no blend_bandwidth binary"
fi

# --- 4. digits demo: CPU reference, then the device ----------------------------------
DIGITS_DATA="$CACHE/data/digits.csv"
if [[ "$MODE" == gpu ]]; then
    DIGITS_DATA="$CARRY/digits.csv"
    if [[ ! -s "$DIGITS_DATA" ]]; then
        DIGITS_DATA="$WORK/digits.csv"
        python3 -c 'import gzip, os, sys, sklearn
src = os.path.join(os.path.dirname(sklearn.__file__), "datasets", "data", "digits.csv.gz")
open(sys.argv[1], "wb").write(gzip.open(src).read())' "$DIGITS_DATA" || true
    fi
fi
if [[ -z "${BIN[digits]:-}" ]]; then
    record demo SKIP 0 0 "" "no digits binary"
elif [[ ! -s "$DIGITS_DATA" ]]; then
    record demo FAIL 0 0 "" "no digits data (carried digits.csv or scikit-learn)"
else
    demo_args=(--steps "$DEMO_STEPS" --data "$DIGITS_DATA")
    step demo-ref 180 "${BIN[digits]}" --device cpu "${demo_args[@]}" --summary "$WORK/demo-ref.json" || true
    step demo-dev 180 "${BIN[digits]}" --device "$DEV" "${demo_args[@]}" --summary "$WORK/demo-dev.json" || true
    if [[ -s "$WORK/demo-ref.json" && -s "$WORK/demo-dev.json" ]]; then
        if verdict="$(python3 "$REPORT" demo "$WORK" "$DEMO_MAX_POINTS")"; then
            record demo-compare PASS 0 0 "" "$verdict"
        else
            record demo-compare FAIL 0 0 "" "$verdict"
        fi
    fi
fi

# --- 5. the Python grafter ------------------------------------------------------------
# Runs bindings/python/tests/test_*.py files that mention cuda, with
# KASMINA_TEST_DEVICE naming the device under test (cuda there, cpu in the dry
# run). The package is the abi3 wheel scripts/setup.sh builds (--prepare
# carries it); here the set-up venv already has it installed.
PY_DIR="$REPO/bindings/python"
if [[ ! -d "$PY_DIR" ]]; then
    record python SKIP 0 0 "" "bindings/python does not exist"
else
    mapfile -t PY_TESTS < <(find "$PY_DIR/tests" -maxdepth 1 -type f -name 'test_*.py' 2>/dev/null \
        | xargs -r grep -l -i cuda | sort)
    PY=python3
    PY_SITE=""
    if [[ "$MODE" == dry-run ]] && [[ -x "$CACHE/venv/bin/python" ]]; then
        PY="$CACHE/venv/bin/python"
    else
        PY_WHEEL="$(ls "$CARRY"/kasmina-*.whl 2>/dev/null | head -1)"
        PY_SITE="$WORK/python-site"
    fi
    if ((${#PY_TESTS[@]} == 0)); then
        record python SKIP 0 0 "" "bindings/python has no CUDA tests (no tests/test_*.py mentioning cuda)"
    elif ! "$PY" -c 'import pytest, torch' 2>/dev/null; then
        record python SKIP 0 0 "" "$PY cannot import pytest and torch"
    elif [[ -n "$PY_SITE" && -z "${PY_WHEEL:-}" ]]; then
        record python SKIP 0 0 "" "no kasmina wheel in $CARRY_REL (scripts/setup.sh builds it, --prepare carries it)"
    else
        if [[ -n "$PY_SITE" ]]; then
            rm -rf "$PY_SITE"
            "$PY" -m pip install --quiet --no-index --no-deps --target "$PY_SITE" "$PY_WHEEL" \
                > "$WORK/logs/python-install.log" 2>&1 || true
        fi
        # From bindings/python (its conftest and pytest settings); no cache or bytecode left in the tree.
        cd "$PY_DIR"
        step python 180 --stdout "$WORK/python.log" env "KASMINA_TEST_DEVICE=$DEV" PYTHONDONTWRITEBYTECODE=1 \
            ${PY_SITE:+"PYTHONPATH=$PY_SITE"} "$PY" -m pytest -q -p no:cacheprovider "${PY_TESTS[@]}" || true
        cd "$REPO"
    fi
fi

# --- summary -----------------------------------------------------------------------------
total_ms=$(($(now_ms) - START_MS))
env_line total_time "$((total_ms / 1000)).$((total_ms % 1000 / 100)) s (budget ${BUDGET} s)"
publish
if [[ "$MODE" == gpu ]]; then
    cat "$OUT_DIR/gpu-check-summary.md"
fi
if ((FAILED)); then
    say "FAIL after $((total_ms / 1000)) s; summary: $OUT_DIR/gpu-check-summary.md"
    exit 1
fi
say "PASS in $((total_ms / 1000)) s; summary: $OUT_DIR/gpu-check-summary.md"
