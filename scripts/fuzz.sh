#!/usr/bin/env bash
# Coverage-guided fuzzing of Kasmina's parsers of outside input with libFuzzer
# (the `fuzz/` workspace; tests/README.md, "Fuzzing", says what each target
# checks). Stable toolchain: the sanitizer-coverage instrumentation is set
# with stable `-C` options and libFuzzer comes from the libfuzzer-sys crate,
# so neither nightly nor cargo-fuzz is needed.
#
#   scripts/fuzz.sh TARGET SECONDS [libFuzzer flags]  # a campaign; its corpus grows in the cache
#   scripts/fuzz.sh smoke [SECONDS]                   # every light target briefly (scripts/test.sh)
#   scripts/fuzz.sh build [host]                      # build the light (or all) targets
#   scripts/fuzz.sh list                              # the targets
#   scripts/fuzz.sh gen-corpus                        # rewrite fuzz/corpus/* from the real encoders
#
# Light targets (default build): frame_decoder client_frame annotations journal.
# Host targets (linked with wasmtime and libtorch; built with --features host on
# first use): settings urza_catalog torchscript annotations_wasm.
#
# Campaign corpora live in $KASMINA_CACHE/fuzz/corpus/TARGET, crashes in
# $KASMINA_CACHE/fuzz/artifacts/TARGET, and each run appends one line to
# $KASMINA_CACHE/fuzz/campaigns.tsv (date, target, seconds, executions,
# execs/s, coverage, features, corpus size, result). A crash keeps its input;
# copy it into fuzz/regressions/TARGET/ once fixed, so every later run replays it.
# KASMINA_FUZZ_PREBUILT=1 skips the build (binaries already built; another build holds the lock).
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"
CACHE="${KASMINA_CACHE:-$HOME/.cache/kasmina}"
export CARGO_TARGET_DIR="$CACHE/target-fuzz"
LIGHT=(frame_decoder client_frame annotations journal)
HOST=(settings urza_catalog torchscript annotations_wasm)
TRIPLE="$(rustc -vV | sed -n 's/^host: //p')"
# What cargo-fuzz passes, minus its nightly-only -Zsanitizer (see tests/README.md).
export RUSTFLAGS="--cfg fuzzing -Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=4 \
-Cllvm-args=-sanitizer-coverage-inline-8bit-counters -Cllvm-args=-sanitizer-coverage-pc-table \
-Cllvm-args=-sanitizer-coverage-trace-compares -Cllvm-args=-simplifycfg-branch-fold-threshold=0"

say() { printf '[fuzz] %s\n' "$*" >&2; }
is_host() { local t; for t in "${HOST[@]}"; do [[ "$t" == "$1" ]] && return 0; done; return 1; }
is_light() { local t; for t in "${LIGHT[@]}"; do [[ "$t" == "$1" ]] && return 0; done; return 1; }

build() {
    # KASMINA_FUZZ_PREBUILT=1: use the binaries already built (e.g. while another build holds the lock).
    [[ "${KASMINA_FUZZ_PREBUILT:-0}" == 1 ]] && return 0
    local features=() bins=() t
    for t in "${LIGHT[@]}"; do bins+=(--bin "$t"); done
    if [[ "${1:-}" == host ]]; then
        features=(--features host)
        for t in "${HOST[@]}"; do bins+=(--bin "$t"); done
    fi
    # --target keeps RUSTFLAGS off build scripts and proc macros (as cargo-fuzz does).
    cargo build --quiet --locked --release --manifest-path fuzz/Cargo.toml --target "$TRIPLE" "${bins[@]}" "${features[@]}"
}

bin_of() { echo "$CARGO_TARGET_DIR/$TRIPLE/release/$1"; }

# Per-target limits: hang timeout (s) and largest input (bytes).
limits_of() {
    case "$1" in
        torchscript) echo "10 65536" ;;
        urza_catalog | settings) echo "5 16384" ;;
        journal) echo "5 20480" ;;
        *) echo "5 4096" ;;
    esac
}

# Seeds kept in the repository for the host targets: the project's own fixtures
# (tests/fuzz-checks/src/replay.rs, `checked_in`, replays the same list: keep them alike).
host_seeds() {
    local dir="$1" t="$2"
    case "$t" in
        settings) cp examples/digits/daemon.toml "$dir/digits_daemon.toml"; : > "$dir/empty.toml" ;;
        torchscript) cp host/kernels/fixtures/*.pt host/kernels/fixtures/hostile/*.pt "$dir/" ;;
        annotations_wasm) cp fuzz/corpus/annotations/* "$dir/" ;;
    esac
}

# run TARGET SECONDS CORPUS_DIR [flags]: fuzzes; prints and records a summary line.
run() {
    local target="$1" seconds="$2" corpus="$3"; shift 3
    local timeout max_len log artifacts
    read -r timeout max_len <<<"$(limits_of "$target")"
    artifacts="$CACHE/fuzz/artifacts/$target"
    mkdir -p "$corpus" "$artifacts" fuzz/corpus/"$target" fuzz/regressions/"$target"
    log="$(mktemp)"
    local seeds=(fuzz/corpus/"$target" fuzz/regressions/"$target")
    if is_host "$target"; then
        local extra="$CACHE/fuzz/seeds/$target"
        mkdir -p "$extra"
        host_seeds "$extra" "$target"
        seeds+=("$extra")
    fi
    # A host build links libtorch into every target (they share the checks crate) without an
    # rpath; a light build links none, and the path is harmless there.
    export LD_LIBRARY_PATH="$(sed -n 's/^LIBTORCH = "\(.*\)"$/\1/p' .cargo/config.toml)/lib:${LD_LIBRARY_PATH:-}"
    local rc=0
    "$(bin_of "$target")" -max_total_time="$seconds" -print_final_stats=1 -timeout="$timeout" \
        -rss_limit_mb=2048 -max_len="$max_len" -artifact_prefix="$artifacts/" "$@" \
        "$corpus" "${seeds[@]}" >"$log" 2>&1 || rc=$?
    local execs cov ft units result
    execs="$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)"
    cov="$(grep -oE 'cov: [0-9]+' "$log" | tail -1 | cut -d' ' -f2)"
    ft="$(grep -oE 'ft: [0-9]+' "$log" | tail -1 | cut -d' ' -f2)"
    units="$(find "$corpus" -type f | wc -l)"
    if [[ $rc -eq 0 ]]; then result=ok; else result="FAILED(rc=$rc)"; fi
    local rate=$(( ${execs:-0} / (seconds > 0 ? seconds : 1) ))
    printf '[fuzz] %-16s %5ss  %12s execs  %8s/s  cov %-6s ft %-6s corpus %-5s %s\n' \
        "$target" "$seconds" "${execs:-?}" "$rate" "${cov:-?}" "${ft:-?}" "$units" "$result" >&2
    mkdir -p "$CACHE/fuzz"
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$(date -u +%FT%TZ)" "$target" "$seconds" "${execs:-?}" \
        "$rate" "${cov:-?}" "${ft:-?}" "$units" "$result" >>"$CACHE/fuzz/campaigns.tsv"
    if [[ $rc -ne 0 ]]; then
        say "FAIL: $target (log below; the input is in $artifacts)"
        tail -40 "$log" >&2
        rm -f "$log"
        return 1
    fi
    rm -f "$log"
}

cmd="${1:-}"
case "$cmd" in
    list) printf '%s\n' "${LIGHT[@]}" "${HOST[@]}" ;;
    build) build "${2:-}" ;;
    gen-corpus)
        # Not instrumented: it only writes files (and has no libFuzzer to link).
        RUSTFLAGS="" cargo run --quiet --locked --release --manifest-path fuzz/Cargo.toml --bin gen_corpus -- fuzz/corpus
        ;;
    smoke)
        seconds="${2:-5}"
        say "building the light targets (instrumented, $CARGO_TARGET_DIR)"
        build
        for t in "${LIGHT[@]}"; do
            scratch="$(mktemp -d)"
            run "$t" "$seconds" "$scratch" || { rm -rf "$scratch"; exit 1; }
            rm -rf "$scratch"
        done
        ;;
    "" | -h | --help) sed -n '2,25p' "$0"; exit 0 ;;
    *)
        target="$cmd"
        seconds="${2:?usage: scripts/fuzz.sh TARGET SECONDS}"
        shift 2
        if is_host "$target"; then build host; elif is_light "$target"; then build; else
            say "unknown target $target (scripts/fuzz.sh list)"; exit 2
        fi
        run "$target" "$seconds" "$CACHE/fuzz/corpus/$target" "$@"
        ;;
esac
