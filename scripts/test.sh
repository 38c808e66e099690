#!/usr/bin/env bash
# Sets everything up (libtorch included) and runs every test of the workspace.
# Extra arguments go to `cargo test` (e.g. a test name filter).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
scripts/setup.sh
# The plugin libraries (cdylibs) the tests load must exist before the tests run.
cargo build --workspace
cargo test --workspace "$@"
