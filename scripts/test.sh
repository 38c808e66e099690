#!/usr/bin/env bash
# Sets everything up (libtorch included) and runs every test of the workspace.
# Extra arguments go to `cargo test` (e.g. a test name filter).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
scripts/setup.sh
# The plugin libraries (cdylibs) the tests load must exist before the tests run.
cargo build --workspace
# The out-of-tree example plugin is its own Cargo project: built here, into the same
# target folder, because a cargo run from inside `cargo test` could deadlock on that
# folder's lock. There it reuses the workspace's compiled dependencies, tch included, and
# scripts/cargo-reusing.sh fails if it compiles one again. Built with its tests (--lib
# puts the library in target/debug/): their dependency, esper-conformance, brings the
# workspace's features, and they compile the runtime's crates as a plugin project's
# dependencies, which the native project of scripts/test-scaffold.sh reuses. Then its
# own one-line conformance test runs, as `cargo test` in its folder would run it.
example=(--manifest-path examples/blueprint-plugin/Cargo.toml --target-dir target)
scripts/cargo-reusing.sh build "${example[@]}" --lib --tests
cargo test "${example[@]}" --test conformance
# Likewise the plugin API frozen at ABI 1.0 and the plugin built against it, which the
# loader tests load in this (newer) runtime.
scripts/cargo-reusing.sh build --manifest-path tests/abi-1.0/Cargo.toml --target-dir target
# `esper plugin new` end to end: new portable and native plugins pass their own tests.
scripts/test-scaffold.sh
# The Python package (built and installed by scripts/setup.sh) and its pytest suite,
# through the venv's Python: the link's own target, from which Python finds its venv.
python=${ESPER_PYTHON:-$(readlink .esper-python || true)}
[ -n "$python" ] || { echo "no .esper-python: scripts/setup.sh found no Python with torch" >&2; exit 1; }
"$python" -m pytest -q tests/python
cargo test --workspace "$@"
