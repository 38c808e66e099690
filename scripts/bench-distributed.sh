#!/usr/bin/env bash
# Data-parallel scaling: samples per second of the default transformer job
# (configs/transformer.toml) on N ranks against 1, at the same global batch, this
# runtime (`esper run --nproc N`) beside PyTorch DDP on the same model
# (scripts/bench/ddp_reference.py under torchrun). Every rank gets an equal share of the
# CPU cores for its threads (OMP_NUM_THREADS), on both sides.
#
#   scripts/bench-distributed.sh                        # CPU (Gloo), ranks 1 2, batch 32
#   RANKS="1 2 4" BATCH=64 scripts/bench-distributed.sh
#   DEVICE=cuda RANKS="1 2" BATCH=2048 scripts/bench-distributed.sh   # NCCL, a GPU a rank
#
# This runtime's figure is the second epoch's (the first warms up): its training steps
# over their wall time from report.json (data, forward, backward, all-reduce, optimizers,
# gradient telemetry). PyTorch's: the median step over 40 after 10 warm-up steps (the
# slowest rank's), from random tokens already on the device.
#
# Elsewhere (the GPU machine, no cargo): ESPER=<esper binary> PYTHON=<python with torch>
# scripts/bench-distributed.sh --no-build (the transformer plugin ships in the binary's
# folder as libesper_transformer.so).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
BUILD=1
[[ "${1:-}" == "--no-build" ]] && BUILD=0
RANKS=${RANKS:-1 2}
BATCH=${BATCH:-32}
DEVICE=${DEVICE:-cpu}
PYTHON=${PYTHON:-$(readlink .esper-python 2>/dev/null || command -v python3)}
if [[ $BUILD == 1 ]]; then
    cargo build --release -p esper-cli -p esper-transformer >&2
    ESPER=${ESPER:-target/release/esper}
fi
ESPER=${ESPER:?set ESPER to the esper binary}
cores=$(nproc)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

printf '%-6s %-7s %-24s %-24s %s\n' ranks batch "esper samples/s (xN/1)" "DDP samples/s (xN/1)" "esper/DDP"
first_ours="" first_ddp=""
for n in $RANKS; do
    (( BATCH % n == 0 )) || { echo "BATCH=$BATCH is not a multiple of $n ranks" >&2; exit 2; }
    threads=$(( cores / n > 0 ? cores / n : 1 ))
    sed -e "s/^batch_size = .*/batch_size = $(( BATCH / n ))/" -e "s/^epochs = .*/epochs = 2/" \
        -e "s/^device = .*/device = \"$DEVICE\"/" -e "s/^min_epoch = .*/min_epoch = 99/" \
        configs/transformer.toml > "$work/job.toml"
    OMP_NUM_THREADS=$threads "$ESPER" run --nproc "$n" --output "$work/run-$n" "$work/job.toml" > /dev/null 2> "$work/esper-$n.log" ||
        { cat "$work/esper-$n.log" >&2; exit 1; }
    ours=$("$PYTHON" - "$work/run-$n/report.json" "$BATCH" <<'PY'
import json, sys
e = json.load(open(sys.argv[1]))["epochs"][-1]
print(f"{e['steps'] * int(sys.argv[2]) / e['train_seconds']:.1f}")
PY
)
    ddp=$(OMP_NUM_THREADS=$threads "$PYTHON" -m torch.distributed.run --nproc-per-node "$n" --master-port $(( 29600 + n )) \
        scripts/bench/ddp_reference.py --device "$DEVICE" --global-batch "$BATCH" 2> "$work/ddp-$n.log" |
        "$PYTHON" -c 'import json, sys; print(round(json.loads(sys.stdin.readlines()[-1])["samples_per_s"], 1))') ||
        { cat "$work/ddp-$n.log" >&2; exit 1; }
    first_ours=${first_ours:-$ours}
    first_ddp=${first_ddp:-$ddp}
    "$PYTHON" -c "
o, d, o1, d1 = $ours, $ddp, $first_ours, $first_ddp
print(f'{$n:<6} {$BATCH:<7} {f\"{o:.0f} ({o / o1:.2f}x)\":<24} {f\"{d:.0f} ({d / d1:.2f}x)\":<24} {o / d:.2f}x')"
done
