#!/bin/sh
# Throughput and stalls of issue 14's stall workloads, an old build against the current tree,
# in one run on one machine: builds bench/stall (stall-bench) against the `persistent-cache`
# of OLD (a temporary git worktree) and of this tree, each with its own target directory, runs
# the two alternately RUNS times each and prints every run and the median ratio new/old.
# The worktree, the build directories and the caches are deleted at the end.
#
# Usage: bench/stall/run.sh [OLD_COMMIT]     (default 7c42dbf, the commit before issue 14)
# Environment: RUNS (default 3), WORKLOAD (default stall-small; stall-big, stall-sync),
#              WORK_PARENT (where the temporary directory goes; default the repository's parent).
set -eu
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
old_commit=${1:-7c42dbf}
runs=${RUNS:-3}
workload=${WORKLOAD:-stall-small}
work=$(mktemp -d "${WORK_PARENT:-$repo/..}/stall-bench.XXXXXX")

cleanup() {
    git -C "$repo" worktree remove --force "$work/old-tree" 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

git -C "$repo" worktree add --quiet --detach "$work/old-tree" "$old_commit"

# build SIDE TREE: a copy of this program whose persistent-cache is TREE's, locked to TREE's
# dependency versions, built in a target directory of its own.
build() {
    side=$1 tree=$2
    mkdir -p "$work/$side"
    cp -r "$here/Cargo.toml" "$here/src" "$work/$side/"
    cp "$tree/Cargo.lock" "$tree/rust-toolchain.toml" "$work/$side/"
    sed -i "s|^persistent-cache = .*|persistent-cache = { path = \"$tree/host\" }|" "$work/$side/Cargo.toml"
    echo "building $side ($(git -C "$tree" rev-parse --short HEAD))..." >&2
    (cd "$work/$side" && CARGO_TARGET_DIR="$work/target-$side" cargo build --release --quiet)
}
build old "$work/old-tree"
build new "$repo"

field() { sed -n "s/.*\"$1\":\([0-9.]*\).*/\1/p"; }

printf '%-4s %-3s %10s %10s %10s %13s\n' side run ops/s p99.9_ms max_ms ticker_max_ms
for i in $(seq 1 "$runs"); do
    for side in old new; do
        rm -rf "$work/data"
        line=$("$work/target-$side/release/stall-bench" "$workload" "$work/data" | tail -n 1)
        echo "$line" >>"$work/$side.jsonl"
        printf '%-4s %-3s %10.0f %10.3f %10.3f %13.3f\n' "$side" "$i" \
            "$(echo "$line" | field ops_per_sec)" \
            "$(echo "$line" | field p999_us | awk '{print $1/1000}')" \
            "$(echo "$line" | field max_us | awk '{print $1/1000}')" \
            "$(echo "$line" | field late_max_us | awk '{print $1/1000}')"
    done
done

median() { sort -g | awk '{v[NR]=$1} END {print (NR % 2) ? v[(NR+1)/2] : (v[NR/2]+v[NR/2+1])/2}'; }
for f in ops_per_sec p999_us max_us late_max_us; do
    o=$(field "$f" <"$work/old.jsonl" | median)
    n=$(field "$f" <"$work/new.jsonl" | median)
    echo "$f" "$o" "$n" | awk '{printf "%-12s median old %12.1f  new %12.1f  new/old %.3f\n", $1, $2, $3, $3/$2}'
done
