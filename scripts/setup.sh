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
# $LIBTORCH a python3 that already has torch and safetensors.
parity_python=""
if [ -z "${LIBTORCH:-}" ]; then
    if [ ! -f "$venv/.parity-deps-v3" ]; then
        log "installing safetensors, numpy and tensorboard into $venv (for the parity and TensorBoard tests)"
        "$venv/bin/pip" install --quiet --disable-pip-version-check --no-cache-dir safetensors numpy tensorboard
        touch "$venv/.parity-deps-v3"
    fi
    parity_python="$venv/bin/python"
elif command -v python3 >/dev/null && python3 -c 'import torch, safetensors' 2>/dev/null; then
    parity_python=$(command -v python3)
else
    log "no python3 with torch and safetensors: the PyTorch parity tests will say so and fail"
fi
if [ -n "$parity_python" ] && [ "$(readlink "$repo/.esper-python" 2>/dev/null || true)" != "$parity_python" ]; then
    ln -sfn "$parity_python" "$repo/.esper-python"
    log "linked $repo/.esper-python -> $parity_python"
fi
