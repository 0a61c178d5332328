"""Copying a diskcache cache (``cache.db``) into a PersistentCache, without running its code.

diskcache pickles keys and values, and unpickling runs whatever code a pickle names (its open
CVE-2025-69872). This importer unpickles with every global refused, so only pickles of plain
data load (dict, list, tuple, str, bytes, int, float, bool, None: what the guide's users cache)
and a pickle naming a class or function is skipped, never run.
"""

from __future__ import annotations

import asyncio
import io
import os
import pickle
import sqlite3
import time
from typing import TYPE_CHECKING, Any, Dict, Optional, Union

from ._native import encode
from .errors import InvalidKeyError, InvalidTtlError, SerializeError, ValueTooLargeError

if TYPE_CHECKING:
    from . import PersistentCache

# diskcache's storage modes (diskcache/core.py).
_MODE_RAW, _MODE_BINARY, _MODE_TEXT, _MODE_PICKLE = 1, 2, 3, 4


class _PlainDataUnpickler(pickle.Unpickler):
    """Loads pickles of plain data only: naming any class or function is refused."""

    def find_class(self, module, name):
        raise pickle.UnpicklingError(f"refused to load {module}.{name}: it would run code")


def _plain_loads(data):
    return _PlainDataUnpickler(io.BytesIO(data)).load()


def import_diskcache(path: Union[str, os.PathLike[str]],
                     cache: Optional[PersistentCache] = None) -> Dict[str, Any]:
    """Copies the entries of the diskcache cache in ``path`` (its ``cache.db``) into ``cache``
    (by default ``PersistentCache(path)``: the same directory, as the guide's ``tmp/cache``),
    keeping each entry's remaining TTL. Returns a report: ``{"imported": n, "skipped": {reason:
    count}, "skipped_keys": [the first 20]}``.

    Reads through diskcache itself when it is installed (``pip install diskcache``), else
    straight from ``cache.db`` with sqlite3. Either way no pickle is run: pickles of plain data
    load, others (a class instance, a datetime) are skipped as "pickle names code". Skipped too:
    keys that are not ``str``, expired entries, values this package does not store. Values
    stored by diskcache as raw ``str``/``bytes``/``int``/``float`` and in its files are copied
    as they are.

    Synchronous (a one-time migration); from a coroutine run it in a thread:
    ``await asyncio.to_thread(import_diskcache, path)``. Raises ``FileNotFoundError`` when
    ``path`` holds no ``cache.db``.
    """
    from . import PersistentCache

    database = os.path.join(os.fspath(path), "cache.db")
    if not os.path.isfile(database):
        raise FileNotFoundError(f"{database}: no diskcache cache here")
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        pass
    else:
        raise RuntimeError(
            "import_diskcache blocks: from a coroutine, call "
            "await asyncio.to_thread(persistent_cache.import_diskcache, path)"
        )
    own = cache is None
    target = PersistentCache(path) if cache is None else cache
    try:
        try:
            import diskcache  # type: ignore[import-untyped]  # noqa: F401
        except ImportError:
            entries = _entries_from_sqlite(os.fspath(path), database)
        else:
            entries = _entries_from_diskcache(os.fspath(path))
        return asyncio.run(_store(target, entries))
    finally:
        if own:
            target.close()


async def _store(cache, entries):
    report = {"imported": 0, "skipped": {}, "skipped_keys": []}

    def skip(key, reason):
        report["skipped"][reason] = report["skipped"].get(reason, 0) + 1
        if len(report["skipped_keys"]) < 20:
            report["skipped_keys"].append(key)

    now = time.time()
    for key, value, expire_time, problem in entries:
        if problem is not None:
            skip(key, problem)
            continue
        if not isinstance(key, str):
            skip(key, "key is not a str")
            continue
        expire = None
        if expire_time is not None:
            expire = expire_time - now
            if expire <= 0:
                skip(key, "expired")
                continue
        try:
            await cache.set(key, value, expire=expire)
        except SerializeError:
            skip(key, "value of a type this package does not store")
            continue
        except (InvalidKeyError, InvalidTtlError, ValueTooLargeError) as err:
            # One entry the cache cannot hold does not stop the import of the others.
            skip(key, type(err).__name__)
            continue
        report["imported"] += 1
    return report


def _entries_from_diskcache(directory):
    """(key, value, expire_time, problem) for each entry, read through diskcache."""
    import diskcache

    class PlainDataDisk(diskcache.Disk):
        def get(self, key, raw):
            if raw:
                return super().get(key, raw)
            return _plain_loads(bytes(key))

        def fetch(self, mode, filename, value, read):
            if mode != _MODE_PICKLE:
                return super().fetch(mode, filename, value, read)
            if value is None:
                with open(os.path.join(self._directory, filename), "rb") as reader:
                    return _plain_loads(reader.read())
            return _plain_loads(bytes(value))

    source = diskcache.Cache(directory, disk=PlainDataDisk)
    try:
        # Keys come first (a key pickle naming code stops the listing: read them raw instead).
        rows = source._sql("SELECT rowid, key, raw FROM Cache").fetchall()
        for rowid, db_key, raw in rows:
            try:
                key = source._disk.get(db_key, raw)
            except pickle.UnpicklingError:
                yield (f"<rowid {rowid}>", None, None, "pickle names code")
                continue
            try:
                value, expire_time = source.get(key, expire_time=True, retry=True)
            except pickle.UnpicklingError:
                yield (key, None, None, "pickle names code")
                continue
            except Exception as exc:  # noqa: BLE001 - a damaged entry: skip it, say why
                yield (key, None, None, f"unreadable: {type(exc).__name__}")
                continue
            if value is None and expire_time is None:
                yield (key, None, None, "expired")
                continue
            yield (key, value, expire_time, None)
    finally:
        source.close()


def _entries_from_sqlite(directory, database):
    """(key, value, expire_time, problem) for each entry, read from cache.db with sqlite3."""
    real_directory = os.path.realpath(directory)
    connection = sqlite3.connect(f"file:{database}?mode=ro", uri=True)
    try:
        rows = connection.execute(
            "SELECT rowid, key, raw, expire_time, mode, filename, value FROM Cache"
        ).fetchall()
    finally:
        connection.close()
    for rowid, db_key, raw, expire_time, mode, filename, value in rows:
        try:
            key = db_key if raw else _plain_loads(bytes(db_key))
        except pickle.UnpicklingError:
            yield (f"<rowid {rowid}>", None, None, "pickle names code")
            continue
        try:
            if filename is not None:
                file_path = os.path.realpath(os.path.join(real_directory, filename))
                if os.path.commonpath([file_path, real_directory]) != real_directory:
                    yield (key, None, None, "file outside the cache directory")
                    continue
                with open(file_path, "rb") as reader:
                    data = reader.read()
            else:
                data = value
            if mode == _MODE_RAW:
                value = data
            elif mode == _MODE_BINARY:
                value = bytes(data)
            elif mode == _MODE_TEXT:
                value = data.decode("utf-8") if isinstance(data, bytes) else data
            elif mode == _MODE_PICKLE:
                value = _plain_loads(bytes(data))
            else:
                yield (key, None, None, f"unknown diskcache mode {mode}")
                continue
        except pickle.UnpicklingError:
            yield (key, None, None, "pickle names code")
            continue
        except (OSError, ValueError, EOFError) as exc:
            yield (key, None, None, f"unreadable: {type(exc).__name__}")
            continue
        yield (key, value, expire_time, None)


__all__ = ["import_diskcache", "encode"]
