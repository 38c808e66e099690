#!/usr/bin/env bash
# Sets everything up (libtorch included) and runs every test of the workspace.
# Extra arguments go to `cargo test` (e.g. a test name filter).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
scripts/setup.sh
# The plugin libraries (cdylibs) the tests load must exist before the tests run.
cargo build --workspace
# The out-of-tree example plugin is its own Cargo project: built and tested (its one-line
# conformance test) here, into the same target folder, because a cargo run from inside
# `cargo test` could deadlock on that folder's lock. There it reuses the workspace's
# compiled dependencies, tch included, and scripts/cargo-reusing.sh fails if it compiles
# one again. Its test builds the runtime's crates as a plugin project's dependencies,
# which the native project of scripts/test-scaffold.sh then reuses.
scripts/cargo-reusing.sh test --manifest-path examples/blueprint-plugin/Cargo.toml --target-dir target
# Likewise the plugin API frozen at ABI 1.0 and the plugin built against it, which the
# loader tests load in this (newer) runtime.
scripts/cargo-reusing.sh build --manifest-path tests/abi-1.0/Cargo.toml --target-dir target
# `esper plugin new` end to end: new portable and native plugins pass their own tests.
scripts/test-scaffold.sh
cargo test --workspace "$@"
