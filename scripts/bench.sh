#!/usr/bin/env bash
# Builds the release plugin the benchmarks load, then runs the criterion benchmarks.
# Extra arguments go to `cargo bench` (e.g. `-- training_step`).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
scripts/setup.sh
cargo build --release -p esper-norm
cargo bench -p esper-runtime "$@"
