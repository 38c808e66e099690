#!/usr/bin/env bash
# This runtime's training step against PyTorch, side by side in one run, on the same
# model and step (scripts/bench/step_reference.py says which): PyTorch eager, this
# runtime (runtime/examples/step_time.rs, the step `esper run` takes), and, where CUDA
# exists, PyTorch with the whole step in one CUDA graph. Runs alternate ROUNDS times
# (default 3); the table gives the median of each side's per-round medians, the range,
# and runtime / eager.
#
#   scripts/bench-vs-pytorch.sh                   # CPU, batches 8 and 128
#   DEVICE=cuda BATCHES=8,128,1024 scripts/bench-vs-pytorch.sh
#   PYTORCH_CHANNELS_LAST=1 scripts/bench-vs-pytorch.sh  # PyTorch in channels-last too
#   scripts/bench-vs-pytorch.sh --host transformer  # the default transformer job's step
#   PYTORCH_COMPILE=1 scripts/bench-vs-pytorch.sh --host transformer  # + PyTorch's torch.compile
#
# PyTorch runs NCHW by default (what a new user writes); this runtime's host is
# channels-last by default ([host] memory_format).
#
# --host transformer: the default transformer job (configs/transformer.toml, its batch
# size unless BATCHES is set) with a `lora` seed in TRAINING at r0c0, Adam on host and
# seed; the PyTorch side is the parity reference's model on PyTorch's fused ops
# (scripts/bench/step_reference.py says what each side runs).
#
# Elsewhere (the GPU machine, no cargo): BIN=<folder with step_time and the plugin
# library: libesper_norm.so, or libesper_transformer.so for --host transformer>
# PYTHON=<python with torch> scripts/bench-vs-pytorch.sh --no-build
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
HOST=cnn
BUILD=1
while [[ $# -gt 0 ]]; do
    case "$1" in
        --no-build) BUILD=0 ;;
        --host)
            HOST=${2:?--host needs cnn or transformer}
            shift
            ;;
        *) echo "unknown argument $1 (--host cnn|transformer, --no-build)" >&2; exit 2 ;;
    esac
    shift
done
case "$HOST" in
    cnn) PLUGIN_CRATE=esper-norm PLUGIN_LIB=libesper_norm.so BATCHES=${BATCHES:-8,128} ;;
    # The job's batch size (both sides read it from configs/transformer.toml) unless set.
    transformer) PLUGIN_CRATE=esper-transformer PLUGIN_LIB=libesper_transformer.so BATCHES=${BATCHES:-} ;;
    *) echo "--host $HOST: not a host (cnn, transformer)" >&2; exit 2 ;;
esac
DEVICE=${DEVICE:-cpu}
ROUNDS=${ROUNDS:-3}
STEPS=${STEPS:-40}
WARMUP=${WARMUP:-10}
if [[ "$BUILD" == 1 ]]; then
    scripts/setup.sh >/dev/null
    # Two commands: with --example, cargo builds no other target of the packages named.
    cargo build --release -p "$PLUGIN_CRATE"
    cargo build --release -p esper-runtime --example step_time
    BIN=${BIN:-target/release}
    PYTHON=${PYTHON:-$(readlink .esper-python)}
fi
: "${BIN:?set BIN to the folder holding step_time and $PLUGIN_LIB}"
: "${PYTHON:?set PYTHON to a python with torch}"
STEP_TIME="$BIN/step_time"
[[ -x "$STEP_TIME" ]] || STEP_TIME="$BIN/examples/step_time"
common=(--host "$HOST" --device "$DEVICE" --steps "$STEPS" --warmup "$WARMUP" ${BATCHES:+--batches "$BATCHES"})
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
for round in $(seq "$ROUNDS"); do
    echo "round $round/$ROUNDS: PyTorch ..." >&2
    "$PYTHON" scripts/bench/step_reference.py "${common[@]}" \
        ${PYTORCH_CHANNELS_LAST:+--channels-last} ${PYTORCH_COMPILE:+--compile} >>"$out/pytorch.jsonl"
    echo "round $round/$ROUNDS: this runtime ..." >&2
    "$STEP_TIME" --plugin "$BIN/$PLUGIN_LIB" "${common[@]}" --cuda-graph off >>"$out/runtime.jsonl"
    if [[ "$DEVICE" == cuda ]]; then
        echo "round $round/$ROUNDS: this runtime, CUDA graphs ..." >&2
        "$STEP_TIME" --plugin "$BIN/$PLUGIN_LIB" "${common[@]}" --cuda-graph auto >>"$out/runtime-graph.jsonl"
    fi
done
"$PYTHON" - "$out" "$DEVICE" "$HOST" <<'PY'
import json, statistics, sys, platform, os
out, device, host = sys.argv[1], sys.argv[2], sys.argv[3]
rows = lambda f: [json.loads(l) for l in open(os.path.join(out, f)) if l.strip()]
py, rt = rows("pytorch.jsonl"), rows("runtime.jsonl")
rg = rows("runtime-graph.jsonl") if os.path.exists(os.path.join(out, "runtime-graph.jsonl")) else []
def summary(values):
    return statistics.median(values), min(values), max(values)
if host == "transformer":
    what = "default transformer job (configs/transformer.toml) + lora seed in TRAINING at r0c0, Adam; PyTorch's fused ops"
else:
    layout = "channels-last" if os.environ.get("PYTORCH_CHANNELS_LAST") else "NCHW"
    what = f"default host + norm seed in TRAINING at r0c1, SGD momentum 0.9; PyTorch {layout}"
print(f"training step, {what}; device {device}, "
      f"{os.cpu_count()} CPUs, torch threads {py[0]['threads']} (this runtime {rt[0]['threads']}); median of {len(rt) // len({r['batch'] for r in rt})} rounds (range)")
head = "| batch | PyTorch eager (ms) | this runtime (ms) | runtime / eager | PyTorch CUDA graph (ms) |"
rule = "| ---: | ---: | ---: | ---: | ---: |"
if rg:
    head += " this runtime, CUDA graph (ms) | runtime graph / PyTorch graph | capture (ms) | GPU launches per step, PyTorch / runtime graph |"
    rule += " ---: | ---: | ---: | ---: |"
print(head)
print(rule)
for batch in sorted({r["batch"] for r in rt}):
    e = summary([r["eager_median_ms"] for r in py if r["batch"] == batch])
    r = summary([r["median_ms"] for r in rt if r["batch"] == batch])
    g = [r["graph_median_ms"] for r in py if r["batch"] == batch and "graph_median_ms" in r]
    graph = "%.3f (%.3f-%.3f)" % summary(g) if g else "-"
    line = f"| {batch} | {e[0]:.3f} ({e[1]:.3f}-{e[2]:.3f}) | {r[0]:.3f} ({r[1]:.3f}-{r[2]:.3f}) | {r[0] / e[0]:.2f}x | {graph} |"
    if rg:
        mine = [x for x in rg if x["batch"] == batch]
        assert all(x["replays"] > 0 for x in mine), f"batch {batch}: the runtime's CUDA graph was not replayed: {mine}"
        s = summary([x["median_ms"] for x in mine])
        ratio = "%.2fx" % (s[0] / summary(g)[0]) if g else "-"
        cap = statistics.median([x["capture_ms"] for x in mine])
        kernels = [r["kernels"] for r in py if r["batch"] == batch and "kernels" in r]
        launches = f"{kernels[0]} / {mine[0].get('graph_nodes', '-')}" if kernels else "-"
        line += f" {s[0]:.3f} ({s[1]:.3f}-{s[2]:.3f}) | {ratio} | {cap:.1f} | {launches} |"
    print(line)
# Each round's runtime against the PyTorch run just before it: on a shared machine whose
# load changes from minute to minute, the pairs are steadier than the medians above.
for batch in sorted({r["batch"] for r in rt}):
    pairs = zip([r["eager_median_ms"] for r in py if r["batch"] == batch], [r["median_ms"] for r in rt if r["batch"] == batch])
    ratios = [r / e for e, r in pairs]
    print(f"batch {batch}: runtime / eager round by round {' '.join(f'{x:.2f}' for x in ratios)}; "
          "median %.2fx (%.2f-%.2f)" % summary(ratios))
    # The fastest single step of all rounds: the closest to a step no other process slowed.
    e_min = min(r["eager_min_ms"] for r in py if r["batch"] == batch)
    r_min = min(r["min_ms"] for r in rt if r["batch"] == batch)
    print(f"batch {batch}: fastest step, PyTorch eager {e_min:.3f} ms, this runtime {r_min:.3f} ms: {r_min / e_min:.2f}x")
    compiled = [(r["compiled_median_ms"], x["median_ms"]) for r, x in zip([r for r in py if r["batch"] == batch], [x for x in rt if x["batch"] == batch]) if "compiled_median_ms" in r]
    if compiled:
        c = summary([p for p, _ in compiled])
        print(f"batch {batch}: PyTorch torch.compile {c[0]:.3f} ms ({c[1]:.3f}-{c[2]:.3f}); runtime / compiled round by round "
              f"{' '.join(f'{r / p:.2f}' for p, r in compiled)}; median %.2fx" % statistics.median(r / p for p, r in compiled))
PY
