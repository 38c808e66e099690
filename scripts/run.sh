#!/usr/bin/env bash
# Sets everything up (libtorch included) and runs the main job on its built-in default.
# With no arguments it runs `esper run --overwrite`: each run starts over in
# runs/default, replacing the previous run's checkpoints, events and report there.
# Arguments replace that and go to `esper run` as given (see `esper run --help`), e.g.
#   scripts/run.sh --resume runs/default        # continue the last run instead
#   scripts/run.sh --output runs/second         # keep the last run, write elsewhere
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
scripts/setup.sh
cargo build --workspace
exec target/debug/esper run "${@:---overwrite}"
