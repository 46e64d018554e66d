#!/usr/bin/env bash
# Idempotent set-up for Kasmina: everything the build, tests and demo need.
#
#   scripts/setup.sh            # safe to run any number of times
#
# (a) a slim CPU libtorch 2.11.0 assembled from PyPI wheels into one cache
#     folder outside the repository (KASMINA_CACHE, default ~/.cache/kasmina),
#     and a git-ignored .cargo/config.toml pointing LIBTORCH at it, so plain
#     `cargo build` / `cargo test` need no environment variables. The path is
#     absolute and the same for every checkout, so torch-sys (which rebuilds
#     whenever LIBTORCH changes) stays compiled across clones sharing a
#     CARGO_TARGET_DIR. An exported LIBTORCH or LIBTORCH_USE_PYTORCH still
#     wins: cargo's [env] never overrides a set variable, and torch-sys reads
#     LIBTORCH_USE_PYTORCH first;
# (b) the wasm32-wasip2 rustup target the policy plugins compile to;
# (c) the scikit-learn digits data set for the demo, read out of the
#     scikit-learn wheel (no import of scikit-learn), stored decompressed as
#     $KASMINA_CACHE/data/digits.csv (1 797 rows: 64 pixels 0..16, then the label).
#
# Set KASMINA_SKIP_LIBTORCH=1 when LIBTORCH or LIBTORCH_USE_PYTORCH already
# points the build at another libtorch (for example a CUDA one).
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CACHE="${KASMINA_CACHE:-$HOME/.cache/kasmina}"
TORCH_VERSION="2.11.0"
BUILD_VERSION="2.11.0+cu130"   # torch-sys compares this with the version it was written for
CUDART_VERSION="13.0.96"        # libtorch_cpu.so NEEDS libcudart.so.13 ...
CUPTI_VERSION="13.0.85"         # ... and libcupti.so.13, even on a CPU-only machine
SKLEARN_VERSION="1.5.2"
LIBTORCH_DIR="$CACHE/libtorch-$BUILD_VERSION-slim"
PYTHON="${PYTHON:-python3}"

say() { printf '[setup] %s\n' "$*" >&2; }

mkdir -p "$CACHE"

# (b) wasm target -----------------------------------------------------------
if ! rustup target list --installed | grep -qx wasm32-wasip2; then
    say "adding rustup target wasm32-wasip2"
    rustup target add wasm32-wasip2
fi

# rustfmt: scripts/test.sh checks formatting
if ! rustup component list --installed 2>/dev/null | grep -q '^rustfmt'; then
    say "adding rustup component rustfmt"
    rustup component add rustfmt
fi

# (a) slim libtorch ---------------------------------------------------------
if [[ "${KASMINA_SKIP_LIBTORCH:-0}" != 1 ]]; then
    if [[ -f "$LIBTORCH_DIR/build-version" ]] && [[ "$(cat "$LIBTORCH_DIR/build-version")" == "$BUILD_VERSION" ]]; then
        say "libtorch $BUILD_VERSION present in $LIBTORCH_DIR"
    else
        say "assembling slim CPU libtorch $BUILD_VERSION in $LIBTORCH_DIR (~550 MB download, once)"
        WHEELS="$CACHE/wheels"
        mkdir -p "$WHEELS"
        "$PYTHON" -m pip download --quiet --no-deps --only-binary=:all: --dest "$WHEELS" \
            "torch==$TORCH_VERSION" \
            "nvidia-cuda-runtime==$CUDART_VERSION" \
            "nvidia-cuda-cupti==$CUPTI_VERSION"
        STAGING="$(mktemp -d "$CACHE/libtorch-staging.XXXXXX")"
        "$PYTHON" - "$WHEELS" "$STAGING" "$TORCH_VERSION" "$CUDART_VERSION" "$CUPTI_VERSION" <<'PY'
import glob, os, shutil, sys, zipfile
wheels, out, torch_v, cudart_v, cupti_v = sys.argv[1:]
def one(pattern):
    found = sorted(glob.glob(os.path.join(wheels, pattern)))
    if not found:
        sys.exit(f"setup: no wheel matching {pattern} in {wheels}")
    return found[-1]
lib = os.path.join(out, "lib"); os.makedirs(lib)
# Never libtorch_cuda.so: torch-sys links torch_cuda whenever it exists.
keep = {"libtorch_cpu.so", "libc10.so", "libgomp.so.1", "libtorch.so"}
with zipfile.ZipFile(one(f"torch-{torch_v}-*.whl")) as z:
    for name in z.namelist():
        if name.startswith("torch/include/") and not name.endswith("/"):
            z.extract(name, out)
        elif name.startswith("torch/lib/") and os.path.basename(name) in keep:
            with z.open(name) as src, open(os.path.join(lib, os.path.basename(name)), "wb") as dst:
                shutil.copyfileobj(src, dst)
    shutil.move(os.path.join(out, "torch", "include"), os.path.join(out, "include"))
    shutil.rmtree(os.path.join(out, "torch"))
for pattern, so in ((f"nvidia_cuda_runtime-{cudart_v}-*.whl", "libcudart.so.13"),
                    (f"nvidia_cuda_cupti-{cupti_v}-*.whl", "libcupti.so.13")):
    with zipfile.ZipFile(one(pattern)) as z:
        names = [n for n in z.namelist() if os.path.basename(n) == so]
        if not names:
            sys.exit(f"setup: {so} not found in {pattern}")
        with z.open(names[0]) as src, open(os.path.join(lib, so), "wb") as dst:
            shutil.copyfileobj(src, dst)
missing = [n for n in keep | {"libcudart.so.13", "libcupti.so.13"} if not os.path.exists(os.path.join(lib, n))]
if missing:
    sys.exit(f"setup: libtorch assembly incomplete, missing {missing}")
PY
        echo "$BUILD_VERSION" > "$STAGING/build-version"
        rm -rf "$LIBTORCH_DIR"
        mv "$STAGING" "$LIBTORCH_DIR"   # appears whole or not at all
        say "libtorch ready ($(du -sh "$LIBTORCH_DIR" | cut -f1))"
    fi
    mkdir -p "$REPO/.cargo"
    CONFIG="$REPO/.cargo/config.toml"
    WANT="# Written by scripts/setup.sh; git-ignored. Re-run setup.sh to regenerate.
[env]
LIBTORCH = \"$LIBTORCH_DIR\""
    if [[ ! -f "$CONFIG" ]] || [[ "$(cat "$CONFIG")" != "$WANT" ]]; then
        printf '%s\n' "$WANT" > "$CONFIG"
        say "wrote $CONFIG"
    fi
fi

# (c) digits data -----------------------------------------------------------
DIGITS="$CACHE/data/digits.csv"
if [[ ! -s "$DIGITS" ]]; then
    say "fetching the digits data set from the scikit-learn $SKLEARN_VERSION wheel"
    mkdir -p "$CACHE/data" "$CACHE/wheels"
    "$PYTHON" -m pip download --quiet --no-deps --only-binary=:all: --dest "$CACHE/wheels" \
        --python-version 3.11 --platform manylinux2014_x86_64 "scikit-learn==$SKLEARN_VERSION"
    "$PYTHON" - "$CACHE/wheels" "$DIGITS" "$SKLEARN_VERSION" <<'PY'
import glob, gzip, os, sys, zipfile
wheels, dest, v = sys.argv[1:]
whl = sorted(glob.glob(os.path.join(wheels, f"scikit_learn-{v}-*.whl")))
if not whl:
    sys.exit("setup: scikit-learn wheel not downloaded")
with zipfile.ZipFile(whl[-1]) as z:
    data = gzip.decompress(z.read("sklearn/datasets/data/digits.csv.gz"))
rows = data.decode().strip().splitlines()
if len(rows) != 1797 or any(len(r.split(",")) != 65 for r in rows):
    sys.exit(f"setup: digits.csv has an unexpected shape ({len(rows)} rows)")
tmp = dest + ".tmp"
with open(tmp, "wb") as f:
    f.write(data)
os.replace(tmp, dest)
PY
fi
# --- python: the kasmina package (bindings/python) and its venv -------------------------
# (d) a virtual environment at $KASMINA_CACHE/venv with PyTorch (the same 2.11.0 the slim
#     libtorch above comes from), maturin and pytest, and the kasmina wheel built from
#     bindings/python (its own cargo workspace and target dir, $KASMINA_CACHE/target-python)
#     and installed into it. The wheels are downloaded once into $KASMINA_CACHE/wheels; the
#     torch wheel is the one already there. PyTorch on the Python package index is the CUDA
#     build for Linux (~2.7 GB with its nvidia-* wheels, 4.7 GB installed): the CPU-only wheel
#     index is a separate host this machine does not reach, and the slim trick used for
#     libtorch cannot serve `import torch` (libtorch_python.so needs the CUDA libraries).
#     The venv is rebuilt only when the pinned requirements change (stamp file, written
#     last); the wheel is rebuilt incrementally and reinstalled on every run (~5 s warm).
#     KASMINA_SKIP_PYTHON=1 skips all of (d).
if [[ "${KASMINA_SKIP_PYTHON:-0}" != 1 ]]; then
    VENV="$CACHE/venv"
    PY_REQUIREMENTS=("torch==$TORCH_VERSION" "maturin==1.16.0" "pytest==8.4.2")
    PY_STAMP="$VENV/.kasmina-requirements"
    if [[ ! -x "$VENV/bin/python" ]] || [[ "$(cat "$PY_STAMP" 2>/dev/null)" != "${PY_REQUIREMENTS[*]}" ]]; then
        say "creating $VENV (PyTorch $TORCH_VERSION, maturin, pytest; ~2.7 GB of wheels, downloaded once)"
        mkdir -p "$CACHE/wheels"
        "$PYTHON" -m pip download --quiet --only-binary=:all: --find-links "$CACHE/wheels" \
            --dest "$CACHE/wheels" "${PY_REQUIREMENTS[@]}"
        rm -rf "$VENV"
        "$PYTHON" -m venv "$VENV"
        "$VENV/bin/python" -m pip install --quiet --no-index --find-links "$CACHE/wheels" "${PY_REQUIREMENTS[@]}"
        echo "${PY_REQUIREMENTS[*]}" > "$PY_STAMP"
        say "venv ready ($(du -sh "$VENV" | cut -f1))"
    fi
    WHEELHOUSE="$CACHE/python-wheelhouse"
    rm -rf "$WHEELHOUSE"
    say "building the kasmina wheel (bindings/python; the first build compiles PyO3: ~1 min)"
    CARGO_TARGET_DIR="$CACHE/target-python" "$VENV/bin/maturin" build --quiet --release --locked \
        --manifest-path "$REPO/bindings/python/Cargo.toml" --interpreter "$VENV/bin/python" --out "$WHEELHOUSE"
    WHEELS_BUILT=("$WHEELHOUSE"/kasmina-*.whl)
    if [[ ${#WHEELS_BUILT[@]} -ne 1 ]] || [[ ! -f "${WHEELS_BUILT[0]}" ]]; then
        echo "[setup] FAIL: expected one kasmina wheel in $WHEELHOUSE, found: ${WHEELS_BUILT[*]}" >&2
        exit 1
    fi
    "$VENV/bin/python" -m pip install --quiet --no-index --no-deps --force-reinstall "${WHEELS_BUILT[0]}"
    say "python: $VENV/bin/python with kasmina $(basename "${WHEELS_BUILT[0]}")"
fi
# --- end python ---
say "ready: libtorch=$LIBTORCH_DIR data=$DIGITS"
