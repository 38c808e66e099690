#!/usr/bin/env bash
# One-command set-up for a fresh machine, idempotent (a second run takes seconds).
#
# libtorch 2.11.0 (what tch 0.24 expects) comes from, in order:
#   1. $LIBTORCH, when it is set and holds include/ and lib/;
#   2. a cache outside the checkout: the torch==2.11.0 wheel from PyPI installed in a
#      virtualenv under ${ESPER_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/esper-runtime}.
# The chosen libtorch is linked as <repo>/.libtorch (git-ignored); .cargo/config.toml points
# tch at it and every binary carries an rpath to it, so plain `cargo build/test/run` work.
set -euo pipefail

TORCH_VERSION=2.11.0
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cache=${ESPER_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/esper-runtime}
venv="$cache/torch-$TORCH_VERSION"

log() { printf '[setup] %s\n' "$*" >&2; }

valid_libtorch() { [ -d "$1/include" ] && [ -f "$1/lib/libtorch_cpu.so" ]; }

if [ -n "${LIBTORCH:-}" ]; then
    valid_libtorch "$LIBTORCH" || { log "LIBTORCH=$LIBTORCH has no include/ and lib/libtorch_cpu.so"; exit 1; }
    libtorch=$(cd "$LIBTORCH" && pwd -P)
    log "using LIBTORCH=$libtorch"
else
    site=$(ls -d "$venv"/lib/python3*/site-packages 2>/dev/null | head -n1 || true)
    if [ -n "$site" ] && [ -f "$venv/.complete" ] && valid_libtorch "$site/torch"; then
        libtorch="$site/torch"
        log "libtorch $TORCH_VERSION already installed at $libtorch"
    else
        command -v python3 >/dev/null || { log "python3 is needed to install torch==$TORCH_VERSION from PyPI"; exit 1; }
        log "installing torch==$TORCH_VERSION from PyPI into $venv (about 3 GB, a few minutes, once)"
        mkdir -p "$cache"
        rm -rf "$venv"
        python3 -m venv "$venv"
        "$venv/bin/pip" install --quiet --disable-pip-version-check --no-cache-dir "torch==$TORCH_VERSION"
        site=$(ls -d "$venv"/lib/python3*/site-packages | head -n1)
        libtorch="$site/torch"
        valid_libtorch "$libtorch" || { log "the torch wheel has no libtorch at $libtorch"; exit 1; }
        touch "$venv/.complete"
    fi
fi

# Link it where .cargo/config.toml and the binaries' rpath expect it.
if [ "$(readlink "$repo/.libtorch" 2>/dev/null || true)" != "$libtorch" ]; then
    ln -sfn "$libtorch" "$repo/.libtorch"
    log "linked $repo/.libtorch -> $libtorch"
fi

# The CUDA headers of the wheel lack nv/target, which ATen's CUDA headers need: the CCCL
# wheel adds it, for the CUDA part of torch-shim (CUDA graphs and the NVRTC kernels,
# cfg esper_cuda in torch-shim/build.rs). Without it the build goes on without them (and
# says so).
if [ -z "${LIBTORCH:-}" ] && [ ! -f "$venv/.cccl-13.0" ]; then
    log "installing nvidia-cuda-cccl 13.0 into $venv (headers for the shim's CUDA part)"
    if "$venv/bin/pip" install --quiet --disable-pip-version-check --no-cache-dir "nvidia-cuda-cccl==13.0.*"; then
        touch "$venv/.cccl-13.0"
    else
        log "warning: nvidia-cuda-cccl could not be installed: this build will have no CUDA graphs or kernels of its own"
    fi
fi

# A Python with torch, safetensors and numpy for the PyTorch parity tests (tests/all/parity.rs)
# and tensorboard for the TensorBoard log test (tests/jobs/watch.rs, TensorBoard's own reader),
# linked as <repo>/.esper-python: the torch venv above (the packages added once), or with
# $LIBTORCH the virtualenv that holds it or a python3, either with torch and safetensors already.
parity_python=""
if [ -z "${LIBTORCH:-}" ]; then
    if [ ! -f "$venv/.parity-deps-v3" ]; then
        log "installing safetensors, numpy and tensorboard into $venv (for the parity and TensorBoard tests)"
        "$venv/bin/pip" install --quiet --disable-pip-version-check --no-cache-dir safetensors numpy tensorboard
        touch "$venv/.parity-deps-v3"
    fi
    parity_python="$venv/bin/python"
elif owner=$(cd "$libtorch/../../../.." && pwd -P) && [ -f "$owner/pyvenv.cfg" ] \
    && "$owner/bin/python" -c 'import torch, safetensors' 2>/dev/null; then
    # $LIBTORCH is the torch of a virtualenv (as the torch venv above is): its Python.
    parity_python="$owner/bin/python"
elif command -v python3 >/dev/null && python3 -c 'import torch, safetensors' 2>/dev/null; then
    parity_python=$(command -v python3)
else
    log "no python3 with torch and safetensors: the PyTorch parity tests will say so and fail"
fi
if [ -n "$parity_python" ] && [ "$(readlink "$repo/.esper-python" 2>/dev/null || true)" != "$parity_python" ]; then
    ln -sfn "$parity_python" "$repo/.esper-python"
    log "linked $repo/.esper-python -> $parity_python"
fi

# The Python package esper_runtime (python/: PyO3, built by maturin into this target folder
# with the dev profile, so it reuses the workspace's compiled crates), installed into the
# venv whose torch is this libtorch: the torch venv above, or with $LIBTORCH the venv of
# .esper-python when its torch is $LIBTORCH. Installed once (editable: the package's
# Python files are python/esper_runtime/), then rebuilt in place.
pkg_python=""
if [ -n "$parity_python" ] && "$parity_python" - "$libtorch" <<'PY' 2>/dev/null; then
import os, sys, torch
same = os.path.realpath(os.path.dirname(torch.__file__)) == os.path.realpath(sys.argv[1])
sys.exit(0 if same and sys.prefix != sys.base_prefix else 1)
PY
    pkg_python=$parity_python
fi
if [ -n "$pkg_python" ]; then
    prefix=$("$pkg_python" -c 'import sys; print(sys.prefix)')
    if [ ! -f "$prefix/.python-tools-v1" ]; then
        log "installing maturin and pytest into $prefix (to build and test the Python package)"
        "$prefix/bin/pip" install --quiet --disable-pip-version-check --no-cache-dir "maturin>=1.9,<2" "pytest>=8"
        touch "$prefix/.python-tools-v1"
    fi
    # gymnasium for esper_runtime.gym (SeedEnv), its tests and examples/python.
    if [ ! -f "$prefix/.python-gym-v1" ]; then
        log "installing gymnasium into $prefix (for esper_runtime.gym and examples/python)"
        "$prefix/bin/pip" install --quiet --disable-pip-version-check --no-cache-dir "gymnasium>=1.1,<2"
        touch "$prefix/.python-gym-v1"
    fi
    installed=$("$pkg_python" -c 'import esper_runtime, os; print(os.path.realpath(esper_runtime.__file__))' 2>/dev/null || true)
    develop=(develop --quiet --manifest-path "$repo/python/Cargo.toml")
    if [ "$installed" = "$(cd "$repo/python/esper_runtime" && pwd -P)/__init__.py" ]; then
        develop+=(--skip-install)
    else
        log "building and installing the Python package esper_runtime into $prefix"
    fi
    # maturin's own lines (and its warning that patchelf is missing: the extension's
    # rpath is set by python/build.rs) only when the build fails.
    if ! out=$(cd "$repo" && VIRTUAL_ENV=$prefix "$prefix/bin/maturin" "${develop[@]}" 2>&1); then
        printf '%s\n' "$out" >&2
        log "building the Python package esper_runtime failed"
        exit 1
    fi
else
    log "no virtualenv whose torch is $libtorch: the Python package esper_runtime is not built (tests/python will fail)"
fi
