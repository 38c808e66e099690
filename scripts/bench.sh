#!/usr/bin/env bash
# Builds the release plugins the benchmarks load, then runs the criterion benchmarks.
# Extra arguments go to `cargo bench` (e.g. `-- training_step`).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
scripts/setup.sh
cargo build --release -p esper-norm -p esper-norm-portable
cargo bench -p esper-runtime "$@"
