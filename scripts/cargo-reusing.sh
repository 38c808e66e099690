#!/usr/bin/env bash
# scripts/cargo-reusing.sh CARGO-ARGS...: runs `cargo CARGO-ARGS...` for a Cargo project
# that builds into the runtime's target folder (the example plugin, the plugin frozen at
# ABI 1.0, a project of `esper plugin new --native`), after `cargo build --workspace`,
# and fails when it compiled any crate from crates.io: each of those is in the target
# folder already, compiled by the workspace build, and is reused only with the same
# features (workspace-hack/Cargo.toml) and the same [profile.dev] (the workspace's
# Cargo.toml). docs/src/contributing.md ("Build time") says how to find what differs.
set -euo pipefail
log=$(mktemp "${TMPDIR:-/tmp}/cargo-reusing.XXXXXX")
trap 'rm -f "$log"' EXIT
CARGO_TERM_COLOR=never cargo "$@" 2>&1 | tee "$log"
# "Compiling NAME vX.Y.Z" with no "(path)" after it: a crate from a registry.
again=$(sed -n 's/^ *Compiling \([^ ]*\) \(v[^ ]*\)$/\1 \2/p' "$log" | paste -sd, - | sed 's/,/, /g')
if [[ -n $again ]]; then
    echo "cargo-reusing: FAILED: \`cargo $*\` compiled crates from crates.io that the workspace" \
        "build compiled already: $again. Their features or profile differ from the workspace's:" \
        "see docs/src/contributing.md (Build time)." >&2
    exit 1
fi
