"""PersistentCache for asyncio: a persistent, size-limited LRU cache with TTL.

A drop-in for the diskcache-based ``PersistentCache`` of the usage guide, whose engine is the
Rust crate ``persistent-cache``: the same sandboxed WebAssembly component, the same directory
format, readable from Rust and ``pcache``. Values are stored as CBOR (dict, list, tuple, str,
bytes, int, float, bool, None), never pickled unless you ask for it with ``pickle=True``.

    from persistent_cache import PersistentCache

    async with PersistentCache() as cache:          # tmp/cache, 500 MiB (or CACHE_* / .env)
        await cache.set("user:123", {"name": "John"}, expire=300)
        user = await cache.get("user:123")          # None on a miss

See docs/python.md for every operation, the value types and the error classes.
"""

from __future__ import annotations

import asyncio
import atexit
import inspect
import os
import warnings
import weakref
from typing import (Any, Awaitable, Callable, Dict, Generator, List, Optional, Tuple,
                    TypedDict, Union)

from . import errors
from ._native import NativeCache as _NativeCache
from ._native import Pending as _Pending
from ._native import decode, encode
from .errors import *  # noqa: F401,F403  (the exception classes are part of the package's API)
from .errors import DiskcacheDirectoryWarning

__all__ = ["PersistentCache", "CacheStats", "import_diskcache", "encode", "decode", "NEVER"]
__all__ += errors.__all__

#: ``expire=NEVER`` keeps an entry forever, even when a default TTL (``CACHE_CONTENT_TTL``) is set.
NEVER = float("inf")


class CacheStats(TypedDict):
    """What :meth:`PersistentCache.stats` returns."""

    size: int
    volume: int
    directory: str
    size_limit: int
    hits: int
    misses: int
    expired: int
    evicted: int
    damaged: int
    plugin_volume: int
    plugin_budget: int

# Caches still open at interpreter exit are closed then (their final flush writes the index
# snapshot, so the next open replays little). Weak: a cache that is dropped is closed by Rust.
_open_caches: weakref.WeakSet[PersistentCache] = weakref.WeakSet()

# get_or_set's computations in progress, by (directory, key): one per key in the process.
_flights: Dict[Tuple[str, str], asyncio.Future[Any]] = {}



@atexit.register
def _close_open_caches():
    for cache in list(_open_caches):
        try:
            cache._native.close()
        except Exception:  # noqa: BLE001 - nothing to report to at exit
            pass


class PersistentCache:
    """A persistent, size-limited LRU cache with per-entry TTLs, in one directory.

    ``PersistentCache(cache_dir="tmp/cache", size_limit=500 * 1024 * 1024)``, as in the usage
    guide; what is not given comes from ``CACHE_DIRECTORY``, ``CACHE_SIZE_LIMIT`` and
    ``CACHE_CONTENT_TTL`` (the environment, then ``.env`` in the working directory), then the
    defaults. Keyword-only options:

    - ``default_ttl``: seconds an entry set without ``expire`` lives (``CACHE_CONTENT_TTL``).
    - ``pickle=True``: also store objects CBOR cannot hold, as pickles. Off by default, since
      unpickling runs code: anyone who can write the cache directory could then run code in
      this process. Use it only for a directory nobody else can write.
    - ``sync=True``: every write reaches stable storage before it returns (slower).
    - ``read_only=True``: open without writing anything; writes raise ``ReadOnlyError``.
    - ``exclusive=True``: keep the directory to this process (by default several processes
      may share it).

    Opening blocks while the engine recovers the directory (the GIL is released). Any number of
    instances, in any threads, may use one directory: they share one engine in the process.
    Every coroutine is safe to run concurrently (``asyncio.gather``); none blocks the event loop.

    Raises ``ConfigError`` for a malformed ``CACHE_*`` value, ``DirectoryError`` if the
    directory cannot be created, ``LockedError`` if another process holds it exclusively.
    Warns with ``DiskcacheDirectoryWarning`` if the directory holds a diskcache ``cache.db``.
    """

    __slots__ = ("_native", "_directory", "__weakref__")

    def __init__(self, cache_dir: Union[str, os.PathLike[str], None] = None,
                 size_limit: Optional[int] = None, *, default_ttl: Optional[float] = None,
                 pickle: bool = False, sync: bool = False, read_only: bool = False,
                 exclusive: bool = False) -> None:
        if cache_dir is not None:
            cache_dir = os.fspath(cache_dir)
        self._native = _NativeCache(
            cache_dir,
            size_limit,
            default_ttl=default_ttl,
            pickle=pickle,
            sync=sync,
            read_only=read_only,
            exclusive=exclusive,
        )
        self._directory = self._native.directory
        if os.path.exists(os.path.join(self._directory, "cache.db")):
            warnings.warn(
                f"{self._directory} also holds a diskcache cache (cache.db), which "
                "persistent_cache does not read: this cache starts without its entries. Copy "
                "the values that convert with persistent_cache.import_diskcache("
                f"{self._directory!r}), then delete cache.db and diskcache's numbered "
                "subdirectories.",
                DiskcacheDirectoryWarning,
                stacklevel=2,
            )
        _open_caches.add(self)

    def __repr__(self) -> str:
        state = "closed" if self._native.closed else "open"
        return f"<PersistentCache {self._directory!r} ({state})>"

    @property
    def directory(self) -> str:
        """The cache directory (canonical absolute path)."""
        return self._directory

    @property
    def size_limit(self) -> int:
        """The size limit in force, in bytes."""
        return self._native.size_limit

    @property
    def search_ttl(self) -> Optional[float]:
        """``CACHE_SEARCH_TTL`` in seconds, for callers that cache search results
        (``await cache.set(key, hits, expire=cache.search_ttl)``); None if unset, so that
        such a set uses the default TTL."""
        return self._native.search_ttl

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called."""
        return self._native.closed

    async def set(self, key: str, value: Any, expire: Optional[float] = None) -> None:
        """Stores ``value`` under ``key``, replacing any previous value.

        ``expire``: seconds until the entry expires (fractions allowed); None uses the default
        TTL (none unless ``CACHE_CONTENT_TTL``/``default_ttl`` is set); ``NEVER`` never expires.
        Raises ``SerializeError`` (a ``TypeError``) naming an unsupported object,
        ``InvalidKeyError`` for an empty key or one over 4096 bytes, ``InvalidTtlError`` for
        ``expire <= 0``, ``ValueTooLargeError`` if the entry exceeds the size limit.
        """
        result = self._native.set(key, value, expire)
        if result.__class__ is _Pending:
            await result

    async def get(self, key: str) -> Any:
        """The value under ``key``; None on a miss or an expired entry.

        Raises ``DeserializeError`` if the stored bytes are not CBOR this package reads (say,
        raw bytes written with Rust's ``set_raw``) or hold a pickle while ``pickle=False``.
        """
        result = self._native.get(key)
        if result.__class__ is _Pending:
            return await result
        return result

    async def delete(self, key: str) -> bool:
        """Removes ``key``; True if a live entry was removed, False on a miss."""
        result = self._native.delete(key)
        if result.__class__ is _Pending:
            return await result
        return result

    async def clear(self) -> None:
        """Removes every entry (the directory stays)."""
        result = self._native.clear()
        if result.__class__ is _Pending:
            await result

    def stats(self) -> CacheStats:
        """The counters, as in the guide: ``size`` (entries), ``volume`` (bytes on disk),
        ``directory``; and ``size_limit``, ``hits``, ``misses``, ``expired``, ``evicted``,
        ``damaged``, ``plugin_volume``, ``plugin_budget`` (hits and misses count since this
        process opened the directory). Synchronous, as in the guide: microseconds, unless a
        slow call (``clear``, a sync) holds the engine."""
        return self._native.stats()

    def close(self) -> Awaitable[None]:
        """Closes this handle; the last one of the process on the directory flushes and
        releases it. Works awaited (``await cache.close()``) or plain (``cache.close()``): in a
        coroutine the close runs off the event loop and completes even if not awaited; in
        plain code it is done when the call returns. Later calls raise ``CacheClosedError``;
        closing twice does nothing."""
        _open_caches.discard(self)
        result = self._native.close()
        if result.__class__ is _Pending:
            return result
        return _done()

    async def __aenter__(self) -> PersistentCache:
        return self

    async def __aexit__(self, exc_type: Any, exc: Any, traceback: Any) -> None:
        await self.close()

    def __enter__(self) -> PersistentCache:
        return self

    def __exit__(self, exc_type: Any, exc: Any, traceback: Any) -> None:
        self._native.close()

    # Beyond the guide: the operations of the Rust API, with diskcache's names where it has them.

    async def contains(self, key: str) -> bool:
        """Whether ``key`` holds a live entry; not counted as a hit or miss, recency unchanged."""
        result = self._native.contains(key)
        if result.__class__ is _Pending:
            return await result
        return result

    async def add(self, key: str, value: Any, expire: Optional[float] = None) -> bool:
        """Stores ``value`` only if ``key`` holds no live entry, atomically (across processes
        too); True if stored, False if the key was present (its value stays)."""
        result = self._native.add(key, value, expire)
        if result.__class__ is _Pending:
            return await result
        return result

    async def incr(self, key: str, delta: int = 1, default: int = 0,
                   expire: Optional[float] = None) -> int:
        """Adds ``delta`` to the integer under ``key`` (``default`` if absent) atomically and
        returns the new value. ``expire`` applies to a counter this call creates; an existing
        one keeps its expiry. Raises ``NotACounterError`` if the value is not an integer,
        ``CounterOverflowError`` beyond 64-bit signed; nothing changes then."""
        result = self._native.incr(key, delta, default, expire)
        if result.__class__ is _Pending:
            return await result
        return result

    async def decr(self, key: str, delta: int = 1, default: int = 0,
                   expire: Optional[float] = None) -> int:
        """``incr(key, -delta, default, expire)``."""
        return await self.incr(key, -delta, default, expire)

    async def pop(self, key: str, default: Any = None) -> Any:
        """Removes ``key`` and returns its value atomically; ``default`` on a miss. Not counted
        as a hit or miss. A value that cannot be decoded is removed all the same."""
        result = self._native.pop(key)
        if result.__class__ is _Pending:
            result = await result
        return default if result is None else result

    async def touch(self, key: str, expire: Optional[float] = None) -> bool:
        """Marks ``key`` most recently used and gives it a new expiry from now (None: the
        default TTL; ``NEVER``: none) without rewriting its value; False on a miss."""
        result = self._native.touch(key, expire)
        if result.__class__ is _Pending:
            return await result
        return result

    async def keys(self, prefix: str = "") -> List[str]:
        """Every live key starting with ``prefix``, in byte order (a list)."""
        result = self._native.keys(prefix)
        if result.__class__ is _Pending:
            return await result
        return result

    async def delete_prefix(self, prefix: str) -> int:
        """Removes every key starting with ``prefix`` (``""``: all); returns how many."""
        result = self._native.delete_prefix(prefix)
        if result.__class__ is _Pending:
            return await result
        return result

    async def expire(self) -> int:
        """Removes every expired entry now; returns how many (they are never returned anyway)."""
        result = self._native.expire()
        if result.__class__ is _Pending:
            return await result
        return result

    async def flush(self) -> None:
        """Makes every write so far durable (synced) and writes the index snapshot."""
        result = self._native.flush()
        if result.__class__ is _Pending:
            await result

    async def get_or_set(self, key: str, compute: Callable[[], Any],
                         expire: Optional[float] = None) -> Any:
        """The value under ``key``; on a miss, ``compute()`` (a function or coroutine
        function, called with no arguments) is run, its result stored with ``expire`` and
        returned.

        Single flight: while one task computes a key, every other task of the process asking
        for it (through any instance on the directory, on the same event loop) waits for that
        result instead of computing again. If the computation raises, nothing is stored and
        every waiting task gets the same exception; if the computing task is cancelled, a
        waiting task computes instead. If storing fails (a full disk), the computing task gets
        the error and the waiting ones the value. A computed None is returned but reads back
        as a miss, so it is computed again next time.
        """
        loop = asyncio.get_running_loop()
        flight_key = (self._directory, key)
        while True:
            value = await self.get(key)
            if value is not None:
                return value
            flight = _flights.get(flight_key)
            if flight is None or flight.get_loop() is not loop:
                break
            try:
                return await asyncio.shield(flight)
            except _Abandoned:
                continue  # the computing task was cancelled: try again, maybe computing
        flight = loop.create_future()
        _flights[flight_key] = flight
        try:
            try:
                value = compute()
                if inspect.isawaitable(value):
                    value = await value
            except asyncio.CancelledError:
                flight.set_exception(_Abandoned())
                raise
            except BaseException as exc:
                # A future refuses StopIteration: the waiters get it wrapped (else they hang).
                waiters_get = (RuntimeError(f"compute raised {exc!r}")
                               if isinstance(exc, StopIteration) else exc)
                flight.set_exception(waiters_get)
                flight.exception()  # retrieved: no "never retrieved" warning if nobody waited
                raise
            flight.set_result(value)
            await self.set(key, value, expire)
            return value
        finally:
            if _flights.get(flight_key) is flight:
                del _flights[flight_key]


class _Abandoned(Exception):
    """get_or_set's computing task was cancelled: a waiting task takes over."""


class _Done:
    """What a plain close() returns: an awaitable that is already complete."""

    __slots__ = ()

    def __await__(self) -> Generator[Any, None, None]:
        return
        yield  # noqa: unreachable - makes this a generator


def _done() -> _Done:
    return _Done()


from ._diskcache import import_diskcache  # noqa: E402  (needs PersistentCache)
