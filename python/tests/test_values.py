"""Values (CBOR, no pickle unless asked), errors, and the operations beyond the guide."""

import asyncio
import datetime
import math
import os

import pytest

import persistent_cache
from persistent_cache import (
    NEVER,
    CacheClosedError,
    CacheError,
    CounterOverflowError,
    DeserializeError,
    InvalidKeyError,
    InvalidTtlError,
    NotACounterError,
    PersistentCache,
    SerializeError,
    ValueTooLargeError,
    decode,
    encode,
)


@pytest.fixture
def cache(tmp_path):
    cache = PersistentCache(cache_dir=tmp_path / "cache")
    yield cache
    cache.close()


def run(coroutine):
    return asyncio.run(coroutine)


ROUND_TRIPS = [
    None,
    True,
    False,
    0,
    -1,
    23,
    24,
    255,
    -256,
    2**63 - 1,
    -(2**63),
    2**64 - 1,
    2**64,
    -(2**64) - 1,
    10**40,
    -(10**40),
    0.0,
    -0.0,
    1.5,
    0.1,
    1e300,
    math.inf,
    -math.inf,
    "",
    "héllo wörld ✓ 🦀",
    "x" * 100_000,
    b"",
    b"\x00\xff" * 1000,
    [],
    [1, "two", 3.0, None, [True, {"k": b"v"}]],
    {},
    {"a": 1, "b": [1, 2], "c": {"d": None}},
    {1: "int key", 2.5: "float key", True: "bool key", None: "none key", b"b": "bytes key"},
    {(1, "a"): "tuple key", ("nested", (2, 3)): "nested tuple key"},
]


@pytest.mark.parametrize("value", ROUND_TRIPS, ids=lambda v: repr(v)[:40])
def test_values_round_trip(cache, value):
    async def go():
        await cache.set("k", value)
        return await cache.get("k")

    got = run(go())
    assert got == value and type(got) is type(value)
    assert decode(encode(value)) == value


def test_nan_round_trips(cache):
    run(cache.set("nan", math.nan))
    assert math.isnan(run(cache.get("nan")))


def test_tuples_and_other_sequences_come_back_as_lists(cache):
    run(cache.set("t", (1, (2, 3), [4])))
    assert run(cache.get("t")) == [1, [2, 3], [4]]
    run(cache.set("b", bytearray(b"ab")))
    assert run(cache.get("b")) == b"ab"
    run(cache.set("m", memoryview(b"cd")))
    assert run(cache.get("m")) == b"cd"


def test_subclasses_store_as_their_base_type(cache):
    import collections
    import enum

    class Color(enum.IntEnum):
        RED = 1

    run(cache.set("k", collections.OrderedDict(a=Color.RED)))
    got = run(cache.get("k"))
    assert got == {"a": 1} and type(got) is dict and type(got["a"]) is int


def test_the_encoding_is_the_one_serde_ciborium_writes():
    # As ciborium writes them (RFC 8949 preferred serialisation): checked here byte for byte,
    # and read by Rust in host/tests/python.rs.
    assert encode(None) == b"\xf6"
    assert encode(True) == b"\xf5"
    assert encode(1) == b"\x01"
    assert encode(-1) == b"\x20"
    assert encode(1000) == b"\x19\x03\xe8"
    assert encode(1.5) == b"\xf9\x3e\x00"  # the shortest float that keeps the value
    assert encode(0.1) == b"\xfb\x3f\xb9\x99\x99\x99\x99\x99\x9a"
    assert encode("a") == b"\x61a"
    assert encode(b"a") == b"\x41a"
    assert encode([1, "a"]) == b"\x82\x01\x61a"
    assert encode({"a": 1}) == b"\xa1\x61a\x01"
    assert encode(2**64) == b"\xc2\x49\x01" + b"\x00" * 8


def test_unsupported_types_raise_type_error_naming_them(cache):
    for value, name in [
        ({1, 2}, "set"),
        (datetime.date(2024, 1, 1), "datetime.date"),
        (object(), "object"),
        ({"users": [{"id": 1, "seen": frozenset()}]}, "frozenset"),
    ]:
        with pytest.raises(TypeError) as raised:
            run(cache.set("k", value))
        message = str(raised.value)
        assert f"'{name}'" in message, message
        assert isinstance(raised.value, SerializeError) and isinstance(raised.value, CacheError)
    with pytest.raises(SerializeError, match=r"value\['users'\]\[0\]\['seen'\]"):
        run(cache.set("k", {"users": [{"id": 1, "seen": set()}]}))
    assert run(cache.get("k")) is None, "nothing was stored"


def test_a_value_that_contains_itself_is_refused(cache):
    loop = []
    loop.append(loop)
    with pytest.raises(SerializeError, match="deeper than"):
        run(cache.set("k", loop))


def test_malformed_bytes_are_a_deserialize_error_not_a_crash():
    for data in [b"", b"\x82\x01", b"\x61", b"\x62\xff\xfe", b"\x9b" + b"\xff" * 8,
                 b"\x5b\x7f\xff\xff\xff\xff\xff\xff\xff", b"\x81" * 10_000 + b"\x01",
                 b"\x01\x02", b"\xfc", b"\xf8\x01",
                 # A run of tags nests like arrays do (it overflowed the stack once).
                 b"\xc6" * 1_000_000 + b"\x00", b"\x81\xc6" * 200_000 + b"\x00"]:
        with pytest.raises(DeserializeError):
            decode(data)
    # Indefinite lengths (which `pcache set` writes) are read.
    assert decode(b"\x9f\x01\x02\xff") == [1, 2]
    assert decode(b"\xbf\x61a\x01\xff") == {"a": 1}
    assert decode(b"\x7f\x61a\x61b\xff") == "ab"


class Point:
    def __init__(self, x, y):
        self.x, self.y = x, y

    def __eq__(self, other):
        return isinstance(other, Point) and (self.x, self.y) == (other.x, other.y)


def test_pickle_is_opt_in_and_never_read_without_it(tmp_path):
    directory = tmp_path / "pickled"
    with PersistentCache(cache_dir=directory, pickle=True) as cache:
        assert cache._native.pickle
        run(cache.set("p", {"where": Point(1, 2), "plain": [1]}))
        assert run(cache.get("p")) == {"where": Point(1, 2), "plain": [1]}
    with PersistentCache(cache_dir=directory) as cache:
        with pytest.raises(DeserializeError, match="pickle=True"):
            run(cache.get("p"))


def test_a_stored_pickle_is_not_run_without_pickle_true(tmp_path):
    marker = tmp_path / "ran"

    class Exploit:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    directory = tmp_path / "evil"
    with PersistentCache(cache_dir=directory, pickle=True) as cache:
        run(cache.set("x", Exploit()))
    assert not marker.exists()
    with PersistentCache(cache_dir=directory) as cache:
        with pytest.raises(DeserializeError):
            run(cache.get("x"))
    assert not marker.exists(), "reading without pickle=True must not unpickle"


def test_errors_mirror_the_rust_error(cache, tmp_path):
    with pytest.raises(InvalidKeyError) as raised:
        run(cache.set("", 1))
    assert isinstance(raised.value, ValueError)
    with pytest.raises(InvalidKeyError):
        run(cache.get("k" * 5000))
    for expire in (0, -1, math.nan, -math.inf):
        with pytest.raises(InvalidTtlError):
            run(cache.set("k", 1, expire=expire))
    # Beyond what a Duration holds (it raised a PanicException once): never expires.
    run(cache.set("k", 1, expire=1e300))
    assert run(cache.get("k")) == 1
    small = PersistentCache(cache_dir=tmp_path / "small", size_limit=4096)
    with pytest.raises(ValueTooLargeError) as raised:
        run(small.set("big", b"x" * 10_000))
    assert raised.value.limit == 4096 and raised.value.size > 10_000
    small.close()
    run(cache.set("text", "not a number"))
    with pytest.raises(NotACounterError):
        run(cache.incr("text"))
    run(cache.set("max", 2**63 - 1))
    with pytest.raises(CounterOverflowError):
        run(cache.incr("max"))
    cache.close()
    with pytest.raises(CacheClosedError):
        run(cache.get("k"))
    with pytest.raises(CacheClosedError):
        cache.stats()


def test_read_only(tmp_path):
    from persistent_cache import ReadOnlyError

    directory = tmp_path / "ro"
    with PersistentCache(cache_dir=directory) as cache:
        run(cache.set("k", "v"))
    with PersistentCache(cache_dir=directory, read_only=True) as cache:
        assert run(cache.get("k")) == "v"
        with pytest.raises(ReadOnlyError):
            run(cache.set("k", "w"))


def test_add_incr_pop_touch(cache):
    async def go():
        assert await cache.add("a", 1) is True
        assert await cache.add("a", 2) is False
        assert await cache.get("a") == 1
        assert await cache.incr("n") == 1
        assert await cache.incr("n", 5) == 6
        assert await cache.decr("n", 2) == 4
        assert await cache.incr("m", 1, default=100) == 101
        assert await cache.get("n") == 4, "counters are CBOR integers"
        assert await cache.pop("a") == 1
        assert await cache.pop("a") is None
        assert await cache.pop("a", "fallback") == "fallback"
        await cache.set("t", "v", expire=0.05)
        assert await cache.touch("t", expire=NEVER) is True
        await asyncio.sleep(0.1)
        assert await cache.get("t") == "v"
        assert await cache.touch("missing", expire=10) is False
        assert await cache.contains("t") and not await cache.contains("missing")

    run(go())


def test_keys_delete_prefix_expire(cache):
    async def go():
        for i in range(5):
            await cache.set(f"user:{i}", i)
        await cache.set("post:1", "p")
        await cache.set("short", 1, expire=0.01)
        await cache.set("short2", 1, expire=0.01)
        assert await cache.keys("user:") == [f"user:{i}" for i in range(5)]
        assert await cache.delete_prefix("user:") == 5
        await asyncio.sleep(0.05)
        assert await cache.expire() == 2
        assert await cache.keys() == ["post:1"]

    run(go())


def test_get_or_set_computes_once_for_many_concurrent_callers(cache):
    calls = []

    async def compute():
        calls.append(1)
        await asyncio.sleep(0.05)
        return {"report": [1, 2, 3]}

    async def go():
        results = await asyncio.gather(*(cache.get_or_set("report", compute, expire=60)
                                         for _ in range(50)))
        again = await cache.get_or_set("report", compute)
        return results, again

    results, again = run(go())
    assert len(calls) == 1
    assert all(r == {"report": [1, 2, 3]} for r in results) and again == results[0]


def test_get_or_set_failure_reaches_every_waiter_and_stores_nothing(cache):
    calls = []

    async def failing():
        calls.append(1)
        await asyncio.sleep(0.02)
        raise RuntimeError("upstream down")

    async def go():
        results = await asyncio.gather(*(cache.get_or_set("k", failing) for _ in range(10)),
                                       return_exceptions=True)
        value = await cache.get_or_set("k", lambda: "recovered")
        return results, value

    results, value = run(go())
    assert len(calls) == 1
    assert all(isinstance(r, RuntimeError) and str(r) == "upstream down" for r in results)
    assert value == "recovered"


def test_get_or_set_compute_raising_stop_iteration(cache):
    def stop():
        raise StopIteration

    # Out of a coroutine, StopIteration becomes RuntimeError (PEP 479); a future refuses it,
    # which once turned it into a TypeError.
    with pytest.raises(RuntimeError):
        run(cache.get_or_set("s", stop))
    assert run(cache.get_or_set("s", lambda: "next")) == "next"


def test_get_or_set_cancelled_leader_hands_over(cache):
    started = []

    async def slow():
        started.append(1)
        await asyncio.sleep(0.2 if len(started) == 1 else 0.01)
        return len(started)

    async def go():
        leader = asyncio.ensure_future(cache.get_or_set("k", slow))
        await asyncio.sleep(0.01)
        follower = asyncio.ensure_future(cache.get_or_set("k", slow))
        await asyncio.sleep(0.01)
        leader.cancel()
        return await follower

    assert run(go()) == 2, "the follower computed after the leader was cancelled"


def test_a_diskcache_directory_is_detected(tmp_path):
    directory = tmp_path / "legacy"
    directory.mkdir()
    (directory / "cache.db").write_bytes(b"")
    with pytest.warns(persistent_cache.DiskcacheDirectoryWarning, match="import_diskcache"):
        cache = PersistentCache(cache_dir=directory)
    cache.close()


def test_many_tasks_many_values_and_a_reopen(tmp_path):
    directory = tmp_path / "many"

    async def writer(task):
        async with PersistentCache(cache_dir=directory) as cache:
            for i in range(200):
                await cache.set(f"{task}:{i}", {"task": task, "i": i, "blob": b"x" * (i * 7)})

    async def go():
        await asyncio.gather(*(writer(t) for t in range(16)))

    run(go())
    with PersistentCache(cache_dir=directory) as cache:
        assert cache.stats()["size"] == 16 * 200
        assert run(cache.get("15:199")) == {"task": 15, "i": 199, "blob": b"x" * 1393}


def test_big_values_go_off_the_event_loop_and_come_back(cache):
    big = os.urandom(300_000)

    async def go():
        await asyncio.gather(*(cache.set(f"big:{i}", big) for i in range(8)))
        return await asyncio.gather(*(cache.get(f"big:{i}") for i in range(8)))

    assert all(v == big for v in run(go()))


def test_coroutines_are_real_coroutines(cache):
    async def go():
        task = asyncio.create_task(cache.set("k", 1))
        await task
        return await asyncio.wait_for(cache.get("k"), timeout=5)

    assert run(go()) == 1
