#!/usr/bin/env python3
"""Benchmark driver for the Python baseline (diskcache 5.6.3 behind an asyncio lock).

Runs ONE workload in a fresh directory and prints ONE JSON object on stdout:

    python bench/diskcache_bench.py --workload get-hit --n 20000 \
        --value-size 1024 --dir /tmp/bench

The cache lives in a new subdirectory of --dir (created with mkdtemp) that is
removed afterwards unless --keep is given. Timing uses time.perf_counter and
excludes setup (value generation, key/op precomputation, prefill), except for
the `memory` workload, whose timed section *is* the prefill. Every cache
operation goes through diskcache_wrapper.PersistentCache inside asyncio.run,
as users call it. See docs/performance.md for the list of workloads.
"""

import argparse
import asyncio
import bisect
import json
import math
import os
import random
import resource
import shutil
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import diskcache  # noqa: E402

from diskcache_wrapper import PersistentCache  # noqa: E402

IMPL = "diskcache-wrapper"
DEFAULT_SIZE_LIMIT = 500 * 1024 * 1024
EVICTION_SIZE_LIMIT = 10 * 1024 * 1024
EVICTION_WRITE_BYTES = 50 * 1024 * 1024
GET_FRACTION = 0.9
ZIPF_S = 1.0

WORKLOADS = (
    "set",
    "get-hit",
    "get-miss",
    "mixed-uniform",
    "mixed-zipf",
    "concurrent-mixed",
    "eviction",
    "reopen",
    "memory",
    "incr",
)
INCR_COUNTERS = 100


def key(i):
    return f"key:{i}"


class ZipfSampler:
    """Zipf(s) over ranks 0..n-1 via a precomputed CDF and bisect (no numpy).

    Rank r has weight 1/(r+1)^s. Ranks are mapped through a seeded permutation
    so that the hot keys are not simply key:0, key:1, ...
    """

    def __init__(self, n, s, rng):
        cdf = []
        total = 0.0
        for r in range(1, n + 1):
            total += 1.0 / (r ** s)
            cdf.append(total)
        self._cdf = [c / total for c in cdf]
        self._cdf[-1] = 1.0
        self._perm = list(range(n))
        rng.shuffle(self._perm)
        self._rng = rng

    def sample(self):
        return self._perm[bisect.bisect_left(self._cdf, self._rng.random())]


def make_mixed_ops(count, n, rng, chooser):
    """Precompute a list of (is_get, key) for the 90/10 get/set mix."""
    return [(rng.random() < GET_FRACTION, key(chooser())) for _ in range(count)]


async def prefill(cache, n, value):
    for i in range(n):
        await cache.set(key(i), value)


async def run_ops(cache, ops, value):
    """Execute a precomputed mixed op list; return (hits, misses, sets)."""
    hits = misses = sets = 0
    for is_get, k in ops:
        if is_get:
            if await cache.get(k) is None:
                misses += 1
            else:
                hits += 1
        else:
            await cache.set(k, value)
            sets += 1
    return hits, misses, sets


async def main(args):
    rng = random.Random(args.seed)
    value = rng.randbytes(args.value_size)  # fixed per seed, reused for every write
    n = args.n
    wl = args.workload
    size_limit = args.size_limit
    if size_limit is None:
        size_limit = EVICTION_SIZE_LIMIT if wl == "eviction" else DEFAULT_SIZE_LIMIT

    cache_dir = os.path.join(args.workdir, "cache")
    extra = {"size_limit": size_limit, "seed": args.seed}
    cache = PersistentCache(cache_dir, size_limit=size_limit)
    t_setup = time.perf_counter()

    if wl == "set":
        keys = [key(i) for i in range(n)]
        t0 = time.perf_counter()
        for k in keys:
            await cache.set(k, value)
        seconds = time.perf_counter() - t0
        ops = n

    elif wl in ("get-hit", "get-miss"):
        await prefill(cache, n, value)
        idx = list(range(n)) if wl == "get-hit" else list(range(n, 2 * n))
        rng.shuffle(idx)
        keys = [key(i) for i in idx]
        extra["setup_seconds"] = time.perf_counter() - t_setup
        hits = 0
        t0 = time.perf_counter()
        for k in keys:
            if await cache.get(k) is not None:
                hits += 1
        seconds = time.perf_counter() - t0
        ops = n
        extra.update(hits=hits, misses=n - hits)

    elif wl in ("mixed-uniform", "mixed-zipf"):
        await prefill(cache, n, value)
        if wl == "mixed-uniform":
            chooser = lambda: rng.randrange(n)  # noqa: E731
        else:
            chooser = ZipfSampler(n, ZIPF_S, rng).sample
            extra["zipf_s"] = ZIPF_S
        ops_list = make_mixed_ops(n, n, rng, chooser)
        extra["setup_seconds"] = time.perf_counter() - t_setup
        t0 = time.perf_counter()
        hits, misses, sets = await run_ops(cache, ops_list, value)
        seconds = time.perf_counter() - t0
        ops = n
        extra.update(hits=hits, misses=misses, sets=sets)

    elif wl == "concurrent-mixed":
        tasks = args.tasks
        await prefill(cache, n, value)
        # Split N ops over `tasks` tasks (first N % tasks tasks get one extra).
        base, rem = divmod(n, tasks)
        per_task = [
            make_mixed_ops(base + (1 if t < rem else 0), n, rng, lambda: rng.randrange(n))
            for t in range(tasks)
        ]
        extra["setup_seconds"] = time.perf_counter() - t_setup
        t0 = time.perf_counter()
        results = await asyncio.gather(*(run_ops(cache, o, value) for o in per_task))
        seconds = time.perf_counter() - t0
        ops = sum(len(o) for o in per_task)
        extra.update(
            tasks=tasks,
            hits=sum(r[0] for r in results),
            misses=sum(r[1] for r in results),
            sets=sum(r[2] for r in results),
        )

    elif wl == "eviction":
        count = math.ceil(EVICTION_WRITE_BYTES / args.value_size)
        keys = [key(i) for i in range(count)]
        t0 = time.perf_counter()
        for k in keys:
            await cache.set(k, value)
        seconds = time.perf_counter() - t0
        ops = count
        extra["bytes_written"] = count * args.value_size

    elif wl == "reopen":
        await prefill(cache, n, value)
        cache.close()
        k = key(rng.randrange(n))
        extra["setup_seconds"] = time.perf_counter() - t_setup
        t0 = time.perf_counter()
        cache = PersistentCache(cache_dir, size_limit=size_limit)
        got = await cache.get(k)
        seconds = time.perf_counter() - t0
        ops = 1
        extra["hit"] = got is not None

    elif wl == "memory":
        keys = [key(i) for i in range(n)]
        t0 = time.perf_counter()
        for k in keys:
            await cache.set(k, value)
        seconds = time.perf_counter() - t0
        ops = n

    elif wl == "incr":
        # The wrapper has no incr; this is the one a user adds to it: diskcache's own atomic
        # Cache.incr under the wrapper's lock, like every other call.
        picks = [f"counter:{rng.randrange(INCR_COUNTERS)}" for _ in range(n)]

        async def incr(k):
            async with cache._lock:
                return cache._cache.incr(k, 1, default=0)

        t0 = time.perf_counter()
        for k in picks:
            await incr(k)
        seconds = time.perf_counter() - t0
        ops = n
        total = 0
        for c in range(INCR_COUNTERS):
            total += await incr(f"counter:{c}") - 1
        if total != n:
            raise AssertionError(f"incr: the counters add up to {total}, not {n}")

    else:  # argparse restricts choices
        raise AssertionError(wl)

    # Untimed: final cache state.
    st = cache.stats()
    extra.update(size=st["size"], volume=st["volume"])
    cache.close()
    return ops, seconds, extra


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--workload", required=True, choices=WORKLOADS)
    p.add_argument("--n", type=int, required=True, help="number of keys / ops")
    p.add_argument("--value-size", type=int, required=True, help="value size in bytes")
    p.add_argument("--dir", required=True, help="parent directory for the fresh cache dir")
    p.add_argument(
        "--size-limit",
        type=int,
        default=None,
        help="cache size limit in bytes (default 500 MB; 10 MiB for eviction)",
    )
    p.add_argument("--tasks", type=int, default=64, help="tasks for concurrent-mixed")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--keep", action="store_true", help="keep the cache directory")
    args = p.parse_args(argv)
    if args.n < 1 or args.value_size < 1 or args.tasks < 1:
        p.error("--n, --value-size and --tasks must be >= 1")
    return args


def cli(argv=None):
    args = parse_args(argv)
    os.makedirs(args.dir, exist_ok=True)
    args.workdir = tempfile.mkdtemp(prefix=f"diskcache-{args.workload}-", dir=args.dir)
    try:
        ops, seconds, extra = asyncio.run(main(args))
    finally:
        if not args.keep:
            shutil.rmtree(args.workdir, ignore_errors=True)
    result = {
        "impl": IMPL,
        "workload": args.workload,
        "n": args.n,
        "value_size": args.value_size,
        "ops": ops,
        "seconds": seconds,
        "ops_per_sec": ops / seconds if seconds > 0 else None,
        "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
    }
    result.update(extra)
    result["python"] = sys.version.split()[0]
    result["diskcache"] = diskcache.__version__
    if args.keep:
        result["directory"] = os.path.join(args.workdir, "cache")
    print(json.dumps(result))


if __name__ == "__main__":
    cli()
