"""Python and Rust share a directory: what one writes, the other (and `pcache`) reads.

host/tests/python.rs writes $PCACHE_XLANG_FROM_RUST with the Rust API before running pytest,
and reads $PCACHE_XLANG_TO_RUST (written here) with the Rust API and `pcache get` after it.
The `pcache` tests here run the binary at $PCACHE_BIN both ways."""

import asyncio
import json
import os
import subprocess

import pytest

from persistent_cache import PersistentCache

FROM_RUST = os.environ.get("PCACHE_XLANG_FROM_RUST")
TO_RUST = os.environ.get("PCACHE_XLANG_TO_RUST")
PCACHE = os.environ.get("PCACHE_BIN")

needs_rust = pytest.mark.skipif(
    not (FROM_RUST and TO_RUST), reason="run by host/tests/python.rs (sets PCACHE_XLANG_*)"
)
needs_pcache = pytest.mark.skipif(not PCACHE, reason="PCACHE_BIN (the pcache binary) not set")

# What host/tests/python.rs stores and expects back, key by key.
FROM_RUST_EXPECTED = {
    "rust:json": {"name": "John", "email": "john@example.com", "tags": ["a", "b"],
                  "score": 9.5, "active": True, "parent": None},
    "rust:struct": {"url": "https://example.com", "status": 200},
    "rust:tuple": [1, "two", 3.5],
    "rust:bytes": b"\x00\x01\xfe\xff",
    "rust:u128": 2**128 - 1,
    "rust:i128": -(2**127),
    "rust:f32": 0.25,
    "rust:counter": 42,
    "rust:text": "héllo",
    "rust:unit": None,
}

TO_RUST_VALUES = {
    "py:dict": {"name": "Alice", "ids": [1, 2, 3], "ratio": 0.1, "ok": False, "none": None},
    "py:struct": {"url": "https://example.org", "status": 404},
    "py:tuple": (7, "seven", 7.5),
    "py:bytes": b"\x10\x20\x30",
    "py:big": 2**100,
    "py:negative": -5,
    "py:text": "snowman ☃",
}


@needs_rust
def test_python_reads_what_rust_wrote():
    async def read():
        async with PersistentCache(cache_dir=FROM_RUST) as cache:
            return {key: await cache.get(key) for key in FROM_RUST_EXPECTED}

    assert asyncio.run(read()) == FROM_RUST_EXPECTED


@needs_rust
def test_python_writes_for_rust():
    async def write():
        async with PersistentCache(cache_dir=TO_RUST) as cache:
            for key, value in TO_RUST_VALUES.items():
                await cache.set(key, value)
            assert await cache.incr("py:counter", 41) == 41
            assert await cache.incr("py:counter") == 42

    asyncio.run(write())


def pcache(directory, *args):
    return subprocess.run([PCACHE, "--dir", str(directory), *args],
                          capture_output=True, text=True, timeout=60)


@needs_pcache
def test_pcache_reads_what_python_wrote_and_the_other_way_round(tmp_path):
    directory = tmp_path / "shared"

    async def write():
        async with PersistentCache(cache_dir=directory) as cache:
            await cache.set("user:123", {"name": "John", "ids": [1, 2], "x": 1.5, "n": None})
            await cache.set("blob", b"\x01\x02")

    asyncio.run(write())
    got = pcache(directory, "get", "user:123")
    assert got.returncode == 0, got.stderr
    assert json.loads(got.stdout) == {"name": "John", "ids": [1, 2], "x": 1.5, "n": None}
    assert json.loads(pcache(directory, "get", "blob").stdout) == [1, 2]

    # `pcache set` parses JSON and stores it as CBOR (indefinite-length maps and arrays).
    stored = pcache(directory, "set", "from:cli", '{"a": [1, 2, {"b": null}], "c": "d", "e": 2.5}')
    assert stored.returncode == 0, stored.stderr
    assert pcache(directory, "incr", "hits", "5").stdout.strip() == "5"

    async def read():
        async with PersistentCache(cache_dir=directory) as cache:
            return await cache.get("from:cli"), await cache.get("hits")

    assert asyncio.run(read()) == ({"a": [1, 2, {"b": None}], "c": "d", "e": 2.5}, 5)


@needs_pcache
def test_a_python_process_and_pcache_share_an_open_directory(tmp_path):
    # Several processes on one directory (the README's rule): Python keeps it open while
    # pcache writes and reads it.
    directory = tmp_path / "open"

    async def go():
        async with PersistentCache(cache_dir=directory) as cache:
            await cache.set("py", "from python")
            assert json.loads(pcache(directory, "get", "py").stdout) == "from python"
            assert pcache(directory, "set", "cli", '"from pcache"').returncode == 0
            return await cache.get("cli")

    assert asyncio.run(go()) == "from pcache"
