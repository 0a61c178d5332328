#!/usr/bin/env python3
"""Where the time of one Python call goes: get-hit and set of 1 KiB, layer by layer.

    $PY bench/python_profile.py [--n 20000] [--value-size 1024]

Each line is the median of 5 timed loops of N calls, in microseconds per call:
- asyncio: awaiting an `async def` that returns at once (the floor of any awaited call);
- native: the extension's call alone, no coroutine of ours (`cache._native.get(key)`): argument
  parsing, the GIL released, one poll of the Rust API's future (the engine's work inside the
  WebAssembly sandbox), the value decoded (or encoded) as CBOR;
- cbor: encode or decode of the value alone;
- awaited: `await cache.get(key)` as users call it (the sum, plus the cooperative yield every
  8th call).
"""

import argparse
import asyncio
import os
import statistics
import tempfile
import time

from persistent_cache import PersistentCache, decode, encode
from persistent_cache._native import Pending


def per_call(loop_fn, n, repeat=5):
    samples = []
    for _ in range(repeat):
        started = time.perf_counter()
        loop_fn()
        samples.append((time.perf_counter() - started) / n * 1e6)
    return statistics.median(samples)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=20000)
    parser.add_argument("--value-size", type=int, default=1024)
    args = parser.parse_args()
    n = args.n
    value = os.urandom(args.value_size)
    keys = [f"key:{i}" for i in range(n)]
    with tempfile.TemporaryDirectory() as directory:
        cache = PersistentCache(cache_dir=os.path.join(directory, "cache"))
        native = cache._native

        async def nothing():
            return None

        async def await_nothing():
            for _ in keys:
                await nothing()

        async def fill():
            for k in keys:
                await cache.set(k, value)

        async def gets():
            for k in keys:
                await cache.get(k)

        async def sets():
            for k in keys:
                await cache.set(k, value)

        async def native_gets():
            for k in keys:
                result = native.get(k)
                if result.__class__ is Pending:  # rare: the engine was busy (maintenance)
                    await result

        async def native_sets():
            for k in keys:
                result = native.set(k, value, None)
                if result.__class__ is Pending:
                    await result

        asyncio.run(fill())
        encoded = encode(value)
        rows = [
            ("asyncio: await an async def", per_call(lambda: asyncio.run(await_nothing()), n)),
            ("cbor: encode 1 value", per_call(lambda: [encode(value) for _ in keys], n)),
            ("cbor: decode 1 value", per_call(lambda: [decode(encoded) for _ in keys], n)),
            ("native get (no coroutine)", per_call(lambda: asyncio.run(native_gets()), n)),
            ("native set (no coroutine)", per_call(lambda: asyncio.run(native_sets()), n)),
            ("awaited get (as users call it)", per_call(lambda: asyncio.run(gets()), n)),
            ("awaited set (as users call it)", per_call(lambda: asyncio.run(sets()), n)),
        ]
        cache.close()
    for name, micros in rows:
        print(f"{name:34} {micros:7.2f} us")


if __name__ == "__main__":
    main()
