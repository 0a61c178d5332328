#!/bin/sh
# Builds the engine as of 292a391 (before issue 13) next to the current one and runs the
# comparison on a directory of the real disk (default: the repository's parent).
# Usage: bench/durability-cost/run.sh [DIR]   (WITH_CLOSE=1 counts close in the time)
set -eu
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
if [ ! -d "$here/old" ]; then
    git -C "$repo" worktree add --detach "$here/old" 292a391
    # Two copies of one crate in one build need distinct names and no `links` key.
    sed -i -e '/^links = /d' -e 's/^name = "persistent-cache-guest"/name = "persistent-cache-guest-old"/' "$here/old/guest/Cargo.toml"
    rm -f "$here/old/guest/build.rs"
fi
cd "$here"
CARGO_TARGET_DIR="$here/target" cargo run --release -- "${1:-$repo/..}"
