#!/usr/bin/env bash
# Runs the CUDA tests: every test marked `#[ignore = "needs CUDA: run scripts/test-gpu.sh"]`
# (the `gpu` module of the tests/all binary, and the CUDA tests of tests/jobs' `containment`
# and `distributed`). They are ignored by a plain `cargo test`, so a machine without a GPU
# never counts them as passed; here they run, and this script FAILS when no CUDA device
# can be used (each test asserts it first).
#
#   scripts/test-gpu.sh               set up, build and run them here (needs cargo and a GPU)
#   scripts/test-gpu.sh --pack [DIR]  build here (no GPU needed) and put the test binaries,
#                                     the esper binary, the plugin libraries and the Python
#                                     package, stripped, into DIR (default .gpu-carry,
#                                     git-ignored)
#   scripts/test-gpu.sh --prebuilt [DIR]
#                                     run the binaries packed in DIR, on a machine without
#                                     cargo (the GPU machine): libtorch comes from
#                                     $ESPER_TORCH_LIB, else $LIBTORCH/lib, else
#                                     /opt/torch/.venv/lib/python3*/site-packages/torch/lib,
#                                     else .libtorch/lib
#
# The packed test binaries find the esper binary and the plugins through ESPER_TARGET_DIR
# (tests/src/lib.rs). libtorch's CUDA library is loaded on demand by the runtime
# (runtime/src/device.rs), so it only has to be on the library path.
set -euo pipefail
shopt -s inherit_errexit
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"

mode=build
case "${1:-}" in
    --pack) mode=pack; shift ;;
    --prebuilt) mode=prebuilt; shift ;;
    -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d'; exit 0 ;;
    "") ;;
    *) echo "test-gpu: unknown argument $1 (see --help)" >&2; exit 2 ;;
esac
dir=$(realpath -m "${1:-$repo/.gpu-carry}")

log() { printf '[test-gpu] %s\n' "$*" >&2; }

# The test binaries and, for each, the libtest filters that select its CUDA tests
# (with --ignored: only the ignored tests whose names match one filter).
# esper_torch_shim: the shim's NCCL tests (its unit tests); jobs' distributed::nccl_ tests:
# ranks over NCCL. Those that need two GPUs are skipped, and the script says so, on a
# machine with one.
suites=(all jobs esper_torch_shim)
declare -A filter=([all]="gpu::" [jobs]="containment:: distributed::nccl_" [esper_torch_shim]="dist::tests::nccl_")
if command -v nvidia-smi >/dev/null && [ "$(nvidia-smi -L 2>/dev/null | grep -c '^GPU')" -lt 2 ]; then
    filter[esper_torch_shim]+=" --skip two_gpus"
    filter[jobs]+=" --skip two_gpus"
    printf '[test-gpu] fewer than two GPUs: the tests named *two_gpus* (%s) are not run\n' \
        "dist::tests::nccl_allreduce_sums_on_two_gpus, distributed::nccl_two_gpus_train_in_lockstep_in_cuda_graphs" >&2
fi

# Runs one test binary's CUDA tests; fails unless at least one ran and none failed.
run_suite() {
    local name=$1 bin=$2 out
    out=$(mktemp)
    log "$name: $bin --ignored --nocapture ${filter[$name]}"
    # shellcheck disable=SC2086 # the filters are words
    if ! "$bin" --ignored --test-threads=1 --nocapture ${filter[$name]} 2>&1 | tee "$out"; then
        rm -f "$out"
        log "$name: FAILED"
        return 1
    fi
    if ! grep -Eq '^test result: ok\. [1-9][0-9]* passed' "$out"; then
        rm -f "$out"
        log "$name: no CUDA test ran"
        return 1
    fi
    rm -f "$out"
}

# Builds the workspace (plugins and esper included) and the CUDA test binaries; prints
# "kind<TAB>path" lines: test NAME, bin esper, lib PATH.
build_artifacts() {
    scripts/setup.sh
    {
        cargo build --workspace --message-format=json
        cargo test -p esper-tests --test all --test jobs --no-run --message-format=json
        cargo test -p esper-torch-shim --lib --no-run --message-format=json
    } | python3 -c '
import json, sys
for line in sys.stdin:
    try:
        m = json.loads(line)
    except ValueError:
        continue
    if m.get("reason") != "compiler-artifact":
        continue
    kinds = m["target"]["kind"]
    if m.get("profile", {}).get("test") and m.get("executable"):
        print("test\t%s\t%s" % (m["target"]["name"], m["executable"]))
    elif kinds == ["bin"] and m["target"]["name"] == "esper" and m.get("executable"):
        print("bin\tesper\t%s" % m["executable"])
    elif "cdylib" in kinds and m["target"]["name"] == "esper_runtime_py":  # the Python module
        for f in m["filenames"]:
            if f.endswith(".so"):
                print("py\t_native\t%s" % f)
    elif "cdylib" in kinds:
        for f in m["filenames"]:
            if f.endswith(".so"):
                print("lib\t%s\t%s" % (m["target"]["name"], f))
'
}

# The Python package's CUDA test (tests/python/test_gpu.py: several runs share one GPU),
# run by `python` (with torch and pytest); fails unless it ran and passed (a skip, for
# want of CUDA, fails here).
run_python_suite() {
    local python=$1 out
    log "python: $python -m pytest tests/python/test_gpu.py"
    if ! "$python" -c 'import pytest' 2>/dev/null; then
        log "python: $python has no pytest: tests/python/test_gpu.py did not run"
        return 1
    fi
    if ! out=$("$python" -m pytest -q -rs tests/python/test_gpu.py 2>&1); then
        printf '%s\n' "$out" >&2
        log "python: FAILED"
        return 1
    fi
    printf '%s\n' "$out" >&2
    if ! grep -Eq '[1-9][0-9]* passed' <<<"$out" || grep -q skipped <<<"$out"; then
        log "python: the CUDA test did not run"
        return 1
    fi
}

case $mode in
    build)
        artifacts=$(build_artifacts)
        status=0
        for s in "${suites[@]}"; do
            bin=$(awk -F'\t' -v n="$s" '$1 == "test" && $2 == n { print $3 }' <<<"$artifacts" | tail -n1)
            [ -n "$bin" ] || { log "no test binary for $s"; exit 1; }
            run_suite "$s" "$bin" || status=1
        done
        run_python_suite "$(readlink .esper-python)" || status=1
        exit $status
        ;;
    pack)
        artifacts=$(build_artifacts)
        rm -rf "$dir"
        mkdir -p "$dir/tests"
        copy() { # strip: the debug binaries are ~150 MB, stripped a few MB (a panic still names its line)
            if command -v strip >/dev/null; then strip --strip-all -o "$2" "$1"; else cp "$1" "$2"; fi
        }
        while IFS=$'\t' read -r kind name path; do
            case $kind in
                test) copy "$path" "$dir/tests/$name" ;;
                bin) copy "$path" "$dir/$name" ;;
                lib) copy "$path" "$dir/$(basename "$path")" ;;
                py) # the package esper_runtime: its Python files and the extension module
                    mkdir -p "$dir/python/esper_runtime"
                    cp python/esper_runtime/*.py python/esper_runtime/*.pyi python/esper_runtime/py.typed "$dir/python/esper_runtime/"
                    copy "$path" "$dir/python/esper_runtime/_native.abi3.so" ;;
            esac
        done <<<"$artifacts"
        [ -f "$dir/python/esper_runtime/_native.abi3.so" ] || { log "the Python module was not built"; exit 1; }
        for s in "${suites[@]}"; do
            [ -x "$dir/tests/$s" ] || { log "no test binary for $s"; exit 1; }
        done
        log "packed into $dir ($(du -sh "$dir" | cut -f1)); on the GPU machine: scripts/test-gpu.sh --prebuilt"
        ;;
    prebuilt)
        [ -d "$dir/tests" ] || { log "$dir has no packed tests: run scripts/test-gpu.sh --pack first"; exit 1; }
        lib=${ESPER_TORCH_LIB:-}
        if [ -z "$lib" ] && [ -n "${LIBTORCH:-}" ]; then lib=$LIBTORCH/lib; fi
        if [ -z "$lib" ]; then lib=$(ls -d /opt/torch/.venv/lib/python3*/site-packages/torch/lib 2>/dev/null | head -n1 || true); fi
        if [ -z "$lib" ] && [ -d "$repo/.libtorch/lib" ]; then lib=$repo/.libtorch/lib; fi
        [ -n "$lib" ] && [ -f "$lib/libtorch_cpu.so" ] || { log "no libtorch found (set ESPER_TORCH_LIB)"; exit 1; }
        [ -f "$lib/libtorch_cuda.so" ] || log "warning: $lib has no libtorch_cuda.so: the tests will fail for want of CUDA"
        export LD_LIBRARY_PATH="$lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
        export ESPER_TARGET_DIR=$dir
        log "libtorch: $lib"
        if command -v nvidia-smi >/dev/null; then
            nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | sed 's/^/[test-gpu] GPU: /' >&2 || true
        fi
        status=0
        for s in "${suites[@]}"; do
            run_suite "$s" "$dir/tests/$s" || status=1
        done
        # The packed Python package, by a Python with torch (and pytest): $ESPER_PYTHON, else
        # python3.
        PYTHONPATH="$dir/python${PYTHONPATH:+:$PYTHONPATH}" run_python_suite "${ESPER_PYTHON:-python3}" || status=1
        exit $status
        ;;
esac
