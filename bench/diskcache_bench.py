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

The peer workloads (disk-set, disk-get-uniform, disk-get-zipf, get-hit-memory)
match bench/peers (pcache-peers, for foyer and cacache): the value bytes and the
key sequence come from splitmix64 (seeds 7 and 42), each operation is timed and
reported in `latency`, and `kept` counts the reads that returned the value.
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

IMPLS = ("diskcache-wrapper", "persistent-cache")
IMPL = IMPLS[0]
PersistentCache = None  # the class under test, chosen by --impl in cli()


def choose_impl(name):
    """Sets the PersistentCache the workloads run: the seed's diskcache wrapper, or this
    project's Python package (`persistent_cache`, installed in the running interpreter)."""
    global PersistentCache, IMPL
    IMPL = name
    if name == "diskcache-wrapper":
        from diskcache_wrapper import PersistentCache as chosen
    else:
        from persistent_cache import PersistentCache as chosen
    PersistentCache = chosen
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
    "disk-set",
    "disk-get-uniform",
    "disk-get-zipf",
    "get-hit-memory",
)
INCR_COUNTERS = 100
PEER_WORKLOADS = ("disk-set", "disk-get-uniform", "disk-get-zipf", "get-hit-memory")
MASK64 = (1 << 64) - 1


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


class SplitMix64:
    """splitmix64, the generator shared with bench/peers (pcache-peers)."""

    def __init__(self, seed):
        self._state = seed & MASK64

    def next(self):
        self._state = (self._state + 0x9E3779B97F4A7C15) & MASK64
        z = self._state
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK64
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK64
        return z ^ (z >> 31)


def peer_value(size):
    """The peer workloads' value: `size` bytes, each the low byte of splitmix64(7)."""
    rng = SplitMix64(7)
    return bytes(rng.next() & 0xFF for _ in range(size))


def peer_key_indices(n, zipf):
    """n key indices from splitmix64(42): uniform (next() % n) or Zipf(1.0) by inverse CDF."""
    rng = SplitMix64(42)
    if not zipf:
        return [rng.next() % n for _ in range(n)]
    cdf = []
    total = 0.0
    for j in range(1, n + 1):
        total += 1.0 / j
        cdf.append(total)
    cdf = [c / total for c in cdf]
    cdf[-1] = 1.0
    return [
        min(bisect.bisect_left(cdf, (rng.next() >> 11) / float(1 << 53)), n - 1)
        for _ in range(n)
    ]


def latency_summary(samples):
    """Nearest-rank p50/p99/p99.9 and max of per-op seconds, in microseconds."""
    samples = sorted(samples)
    count = len(samples)

    def pct(permille):
        rank = max(1, -(-count * permille // 1000))  # ceil, in integers like pcache-peers
        return samples[rank - 1] * 1e6 if count else 0.0

    return {
        "count": count,
        "p50_us": pct(500),
        "p99_us": pct(990),
        "p999_us": pct(999),
        "max_us": samples[-1] * 1e6 if count else 0.0,
    }


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
    if wl in PEER_WORKLOADS:
        value = peer_value(args.value_size)
        extra["seed"] = None  # the peer workloads use fixed splitmix64 seeds, not --seed

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
            if IMPL == "persistent-cache":
                return await cache.incr(k, 1, default=0)
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

    elif wl == "disk-set":
        keys = [key(i) for i in range(n)]
        lat = []
        t0 = time.perf_counter()
        for k in keys:
            t = time.perf_counter()
            await cache.set(k, value)
            lat.append(time.perf_counter() - t)
        seconds = time.perf_counter() - t0
        ops = n
        # Untimed: close, reopen on the same directory, count what reads back intact.
        cache.close()
        cache = PersistentCache(cache_dir, size_limit=size_limit)
        kept = 0
        for k in keys:
            if await cache.get(k) == value:
                kept += 1
        extra.update(latency=latency_summary(lat), kept=kept)

    elif wl in ("disk-get-uniform", "disk-get-zipf", "get-hit-memory"):
        # get-hit-memory is disk-get-uniform with an N the driver picks to fit a memory
        # budget; diskcache has no memory tier, so it runs the same way.
        await prefill(cache, n, value)
        keys = [key(i) for i in peer_key_indices(n, wl == "disk-get-zipf")]
        extra["setup_seconds"] = time.perf_counter() - t_setup
        lat = []
        kept = 0
        t0 = time.perf_counter()
        for k in keys:
            t = time.perf_counter()
            got = await cache.get(k)
            lat.append(time.perf_counter() - t)
            if got == value:
                kept += 1
        seconds = time.perf_counter() - t0
        ops = n
        extra.update(latency=latency_summary(lat), kept=kept)
        if wl == "disk-get-zipf":
            extra["zipf_s"] = ZIPF_S

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
    p.add_argument("--impl", choices=IMPLS, default=IMPLS[0],
                   help="the PersistentCache to run: the seed's diskcache wrapper (default) or "
                        "this project's Python package")
    args = p.parse_args(argv)
    if args.n < 1 or args.value_size < 1 or args.tasks < 1:
        p.error("--n, --value-size and --tasks must be >= 1")
    return args


def cli(argv=None):
    args = parse_args(argv)
    choose_impl(args.impl)
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
    result["diskcache"] = diskcache.__version__ if IMPL == "diskcache-wrapper" else None
    if args.keep:
        result["directory"] = os.path.join(args.workdir, "cache")
    print(json.dumps(result))


if __name__ == "__main__":
    cli()
