#!/usr/bin/env bash
# Builds the `esper` binary (and the shipped plugins it runs by default) in this checkout
# and puts an `esper` command on PATH: ~/.local/bin, or --bin-dir DIR, or $PREFIX/bin.
#
# What is installed is a two-line wrapper that execs target/<profile>/esper, not a copy:
# the binary finds libtorch through an rpath relative to target/ ($ORIGIN/../../.libtorch)
# and its shipped plugins beside itself, so a copy elsewhere would find neither. It also
# means a later `cargo build` here is what `esper` runs. Run it again any time: it only
# rewrites the wrapper.
#
#   scripts/install.sh [--bin-dir DIR] [--release]
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bin_dir="${PREFIX:+$PREFIX/bin}"
bin_dir="${bin_dir:-$HOME/.local/bin}"
profile=debug
cargo_profile=()
while [[ $# -gt 0 ]]; do
    case "$1" in
        --bin-dir) bin_dir="${2:?--bin-dir needs a folder}"; shift 2 ;;
        --bin-dir=*) bin_dir="${1#--bin-dir=}"; shift ;;
        # A release build of tch takes long on a small machine: debug is the default
        # (the workspace's dev profile is optimised at level 1).
        --release) profile=release; cargo_profile=(--release); shift ;;
        -h|--help) sed -n '2,12p' "${BASH_SOURCE[0]}"; exit 0 ;;
        *) echo "install.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
done

cd "$root"
[[ -e .libtorch ]] || { echo "install.sh: no .libtorch here: run scripts/setup.sh first" >&2; exit 1; }
echo "building esper and the shipped plugins ($profile) in $root/target"
cargo build "${cargo_profile[@]}" -p esper-cli -p esper-norm -p esper-cnn
binary="$root/target/$profile/esper"
[[ -x "$binary" ]] || { echo "install.sh: $binary was not built" >&2; exit 1; }

mkdir -p "$bin_dir"
target="$bin_dir/esper"
wrapper="#!/bin/sh
# Installed by $root/scripts/install.sh: runs the esper built in that checkout.
exec \"$binary\" \"\$@\""
if [[ -f "$target" && "$(cat "$target")" == "$wrapper" ]]; then
    echo "$target is up to date (runs $binary)"
else
    [[ -e "$target" ]] && echo "replacing $target"
    printf '%s\n' "$wrapper" >"$target.tmp.$$"
    chmod 755 "$target.tmp.$$"
    mv -f "$target.tmp.$$" "$target"
    echo "installed $target (runs $binary)"
fi

# Check it from elsewhere, as a user would run it.
(cd /tmp && "$target" --version >/dev/null) || { echo "install.sh: $target does not run" >&2; exit 1; }
echo "checked: $("$target" --version) runs from /tmp"
case ":$PATH:" in
    *":$bin_dir:"*) ;;
    *) echo "note: $bin_dir is not on PATH; add it (e.g. export PATH=\"$bin_dir:\$PATH\")" ;;
esac
