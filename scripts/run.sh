#!/usr/bin/env bash
# Sets everything up (libtorch included) and runs the main job on its built-in default.
# Extra arguments go to `esper run` (see `esper run --help`).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
scripts/setup.sh
cargo build --workspace
exec target/debug/esper run "$@"
