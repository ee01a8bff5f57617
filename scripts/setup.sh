#!/usr/bin/env bash
# Idempotent setup of a development / CI machine for this workspace (x86-64 Linux, rustup, no
# CUDA toolkit needed):
#   - the nightly pinned in rust-toolchain.toml, with rust-src (for -Zbuild-std=core when
#     compiling the kernels to PTX), rustfmt and clippy. Our machines set RUSTUP_AUTO_INSTALL=0,
#     so nothing installs them on first use;
#   - with --with-ptxas: CUDA 13.0's ptxas from PyPI (nvidia-cuda-nvcc), which
#     `cargo xtask build-ptx` uses to gate the PTX (registers, spills, stack).
# Building and running the host crate (`cargo +stable build -p host`, the bench) needs neither
# the nightly's rust-src nor ptxas: the PTX is committed under host/ptx/.
#
# usage: scripts/setup.sh [--with-ptxas]
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

NVCC_WHEEL="nvidia-cuda-nvcc==13.0.88"

with_ptxas=0
for arg in "$@"; do
    case "$arg" in
        --with-ptxas) with_ptxas=1 ;;
        -h|--help) sed -n '2,12p' "$0"; exit 0 ;;
        *) echo "setup.sh: unknown argument: $arg" >&2; exit 2 ;;
    esac
done

log() { echo "setup: $*" >&2; }

if ! command -v rustup >/dev/null 2>&1; then
    log "rustup not found: install it from https://rustup.rs, then run this again"
    exit 1
fi

toolchain=$(sed -n 's/^[[:space:]]*channel[[:space:]]*=[[:space:]]*"\([^"]*\)".*/\1/p' rust-toolchain.toml)
if [[ -z "$toolchain" ]]; then
    log "no channel in rust-toolchain.toml"
    exit 1
fi
components=(rust-src rustfmt clippy)

installed_components() {
    rustup component list --installed --toolchain "$toolchain" 2>/dev/null || true
}

missing=()
if rustup toolchain list | grep -q "^$toolchain"; then
    have=$(installed_components)
    for c in "${components[@]}"; do
        grep -q "^$c" <<<"$have" || missing+=("$c")
    done
    if ((${#missing[@]} == 0)); then
        log "toolchain $toolchain with ${components[*]}: already installed"
    else
        log "toolchain $toolchain: adding ${missing[*]}"
        rustup component add --toolchain "$toolchain" "${missing[@]}"
    fi
else
    log "installing toolchain $toolchain with ${components[*]}"
    args=()
    for c in "${components[@]}"; do args+=(-c "$c"); done
    rustup toolchain install "$toolchain" --profile minimal "${args[@]}"
fi

# The host crate and everything a service links build on stable too (CI checks it).
if ! rustup toolchain list | grep -q '^stable'; then
    log "installing the stable toolchain"
    rustup toolchain install stable --profile minimal
fi

# Where ptxas is, searched like `cargo xtask build-ptx` does: $PTXAS, PATH, then the
# nvidia-cuda-nvcc wheel in python3's packages. Prints the path, or nothing.
find_ptxas() {
    if [[ -n "${PTXAS:-}" ]]; then
        echo "$PTXAS"
        return
    fi
    if command -v ptxas >/dev/null 2>&1; then
        command -v ptxas
        return
    fi
    command -v python3 >/dev/null 2>&1 || return 0
    python3 - <<'PY' 2>/dev/null || true
import os
try:
    import nvidia
except ImportError:
    raise SystemExit(0)
for p in nvidia.__path__:
    for rel in ("cu13/bin/ptxas", "cuda_nvcc/bin/ptxas"):
        if os.path.isfile(os.path.join(p, rel)):
            print(os.path.join(p, rel))
            raise SystemExit(0)
PY
}

if ((with_ptxas)); then
    ptxas=$(find_ptxas)
    if [[ -n "$ptxas" ]]; then
        log "ptxas: already installed ($ptxas)"
    else
        if ! command -v python3 >/dev/null 2>&1; then
            log "--with-ptxas needs python3 (pip) to install $NVCC_WHEEL"
            exit 1
        fi
        log "installing ptxas: python3 -m pip install $NVCC_WHEEL"
        # A system python that refuses global installs (PEP 668) still takes a user install.
        python3 -m pip install --quiet --disable-pip-version-check "$NVCC_WHEEL" ||
            python3 -m pip install --quiet --disable-pip-version-check --user \
                --break-system-packages "$NVCC_WHEEL"
        ptxas=$(find_ptxas)
        if [[ -z "$ptxas" ]]; then
            log "installed $NVCC_WHEEL but python3 cannot find nvidia/cu13/bin/ptxas"
            exit 1
        fi
        log "ptxas: $ptxas"
    fi
else
    ptxas=$(find_ptxas)
    if [[ -z "$ptxas" ]]; then
        log "ptxas not installed (only \`cargo xtask build-ptx\` needs it: run with --with-ptxas)"
    fi
fi

log "done: $(rustup run "$toolchain" rustc --version)"
