#!/usr/bin/env bash
# End-to-end check of `esper plugin new`: in a fresh folder outside the checkout, with
# LIBTORCH unset, a new portable plugin passes `cargo test` (the conformance suite, run
# by this checkout's esper) with no tch or torch-sys in its dependency tree, and so does
# a new native plugin, and a new controller plugin, which then drives an `esper run` that
# germinates a seed. Prints the portable project's clean build-and-test wall time.
# Needs the built esper (`cargo build --workspace`, as scripts/test.sh runs first).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export ESPER="$root/target/debug/esper"
unset LIBTORCH
fail() { echo "test-scaffold: FAILED: $*" >&2; exit 1; }
trap 'echo "test-scaffold: FAILED (line $LINENO: $BASH_COMMAND)" >&2' ERR
[[ -x "$ESPER" ]] || fail "$ESPER is not built: run cargo build --workspace first"

work="$(mktemp -d "${TMPDIR:-/tmp}/esper-scaffold.XXXXXX")"
trap 'rm -rf "$work"' EXIT
case "$work/" in "$root"/*) fail "the temp folder $work is inside the checkout" ;; esac
cd "$work"

echo "== esper env"
"$ESPER" env

echo "== portable: esper plugin new my-seed --portable && cargo test (own, empty target folder)"
"$ESPER" plugin new my-seed --portable
cd my-seed
start=$(date +%s%N)
cargo test || fail "cargo test of the new portable plugin"
end=$(date +%s%N)
tree="$(cargo tree --edges all)"
if grep -Eq '(^|[^a-z_-])(tch|torch-sys) v' <<<"$tree"; then
    echo "$tree" >&2
    fail "the portable plugin depends on tch or torch-sys"
fi
echo "no tch or torch-sys in the portable plugin's dependency tree"
ms=$(((end - start) / 1000000))
printf 'clean portable build + conformance test (cargo test): %d.%01d s wall\n' $((ms / 1000)) $((ms % 1000 / 100))
cd "$work"

echo "== native: esper plugin new my-native --native && cargo test (the runtime's target folder)"
"$ESPER" plugin new my-native --native
cd my-native
grep -q '^LIBTORCH = "/' .cargo/config.toml || fail "no absolute LIBTORCH in .cargo/config.toml"
# In its own target folder the project would build tch and torch-sys's C++ wrapper
# (minutes on 2 cores). Built into the runtime's target folder with the runtime's exact
# settings (same lock file, profile, LIBTORCH and rustflags), it reuses the runtime's
# compiled tch. The rustflags must be the runtime's own (its rpath, relative to
# target/): the project's absolute rpath would make cargo rebuild every crate there,
# tch included, and the runtime's next build rebuild them again. Test binaries in
# target/debug/deps find libtorch through that rpath ($ORIGIN/../../.libtorch/lib).
# Keep these flags equal to the runtime's .cargo/config.toml. cargo-reusing.sh fails if
# the build compiles any crate from crates.io again (tch, tokenizers, ...): with the
# runtime's features and profile it reuses every one the workspace build compiled.
export CARGO_TARGET_DIR="$root/target"
export CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_RUSTFLAGS='-C link-arg=-Wl,-rpath,$ORIGIN/../../.libtorch/lib:$ORIGIN/../../../.libtorch/lib'
"$root/scripts/cargo-reusing.sh" test || fail "cargo test of the new native plugin"
rm -f "$root/target/debug/libmy_native.so"
cd "$work"

echo "== controller: esper plugin new my-controller --controller && cargo test, then esper run with it"
"$ESPER" plugin new my-controller --controller
cd my-controller
"$root/scripts/cargo-reusing.sh" test || fail "cargo test of the new controller plugin"
# The library itself, built with the tests' features (as scripts/test.sh builds the
# example plugin): a plain `cargo build` leaves out the dev-dependencies, whose features
# the workspace's compiled crates have, and would compile them all again.
"$root/scripts/cargo-reusing.sh" build --lib --tests || fail "cargo build of the new controller plugin"
lib="$root/target/debug/libmy_controller.so"
[[ -f "$lib" ]] || fail "$lib was not built"
# The generated run.toml, with the library where the shared target folder has it.
sed "s|target/debug/libmy_controller.so|$lib|" run.toml >run-here.toml
"$ESPER" run run-here.toml || fail "esper run with the controller"
grep -q '"event": "germinated"' runs/my-controller/report.json || fail "the controller germinated nothing"
echo "the controller plugin drove a run that germinated a seed"
rm -f "$lib"
echo "test-scaffold: OK"
