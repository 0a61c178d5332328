"""The Python baseline: what users run today.

A thin asyncio wrapper around diskcache 5.6.3. Every call takes one
``asyncio.Lock`` and then calls diskcache synchronously (blocking the event
loop for the duration of the SQLite / file I/O). The eviction policy is
'least-recently-used' and the size limit defaults to 500 MB.

This file deliberately mirrors the production shape exactly; do not
"improve" it, since it is the thing being measured.
"""

import asyncio

import diskcache


class PersistentCache:
    def __init__(self, cache_dir="tmp/cache", size_limit=500 * 1024 * 1024):
        self._cache = diskcache.Cache(
            cache_dir,
            size_limit=size_limit,
            eviction_policy="least-recently-used",
        )
        self._lock = asyncio.Lock()

    async def get(self, key):
        async with self._lock:
            return self._cache.get(key)

    async def set(self, key, value, expire=None):
        async with self._lock:
            return self._cache.set(key, value, expire=expire)

    async def delete(self, key):
        async with self._lock:
            return self._cache.delete(key)

    async def clear(self):
        async with self._lock:
            return self._cache.clear()

    def stats(self):
        return {
            "size": len(self._cache),
            "volume": self._cache.volume(),
            "directory": self._cache.directory,
        }

    def close(self):
        self._cache.close()
