"""Every example of the usage guide (shared/seed-usage-guide.md), run as written against this
package: only `from app.cache import PersistentCache` became `from persistent_cache import
PersistentCache`, and top-level `await` snippets run inside `asyncio.run`. Each test then
checks what the example did."""

import asyncio
import http.server
import json
import os
import threading
import time
from pathlib import Path

import pytest

from persistent_cache import PersistentCache


def test_creating_a_cache_instance(in_tmp_cwd):
    # Default settings (tmp/cache directory, 500MB limit)
    cache = PersistentCache()

    # Custom settings
    cache2 = PersistentCache(
        cache_dir="custom/cache/path",
        size_limit=1024 * 1024 * 1024  # 1GB
    )

    assert cache.stats()["directory"] == str(in_tmp_cwd / "tmp" / "cache")
    assert cache.size_limit == 500 * 1024 * 1024
    assert cache2.stats()["directory"] == str(in_tmp_cwd / "custom" / "cache" / "path")
    assert cache2.size_limit == 1024 * 1024 * 1024
    cache.close()
    cache2.close()


def test_storing_and_retrieving_values(in_tmp_cwd, capsys):
    async def example():
        cache = PersistentCache()
        # Store a value
        await cache.set("user:123", {"name": "John", "email": "john@example.com"})

        # Retrieve a value
        user = await cache.get("user:123")
        if user is None:
            print("Cache miss")
        else:
            print(f"Cache hit: {user}")
        missing = await cache.get("user:999")
        await cache.close()
        return user, missing

    user, missing = asyncio.run(example())
    assert user == {"name": "John", "email": "john@example.com"}
    assert missing is None
    assert capsys.readouterr().out == "Cache hit: {'name': 'John', 'email': 'john@example.com'}\n"


def test_using_ttl(in_tmp_cwd):
    session_data = {"user": 1, "roles": ["admin"]}

    async def example():
        cache = PersistentCache()
        # Cache for 5 minutes
        await cache.set("temp_data", "value", expire=300)

        # Cache for 1 hour
        await cache.set("session:abc", session_data, expire=3600)

        # And one that expires while we watch.
        await cache.set("blink", "gone soon", expire=0.05)
        before = await cache.get("blink")
        await asyncio.sleep(0.1)
        after = await cache.get("blink")
        return cache, before, after, await cache.get("temp_data"), await cache.get("session:abc")

    cache, before, after, temp, session = asyncio.run(example())
    assert (before, after) == ("gone soon", None)
    assert temp == "value" and session == session_data
    cache.close()


def test_deleting_entries(in_tmp_cwd, capsys):
    async def example():
        cache = PersistentCache()
        await cache.set("user:123", {"name": "John"})
        await cache.set("other", 1)
        # Delete a specific key
        deleted = await cache.delete("user:123")
        if deleted:
            print("Key was deleted")
        else:
            print("Key not found")
        again = await cache.delete("user:123")

        # Clear all entries
        await cache.clear()
        return cache, deleted, again

    cache, deleted, again = asyncio.run(example())
    assert (deleted, again) == (True, False)
    assert capsys.readouterr().out == "Key was deleted\n"
    assert cache.stats()["size"] == 0
    cache.close()


def test_cache_statistics(in_tmp_cwd, capsys):
    cache = PersistentCache()
    asyncio.run(cache.set("a", "x" * 1000))

    stats = cache.stats()
    print(f"Entries: {stats['size']}")
    print(f"Size: {stats['volume'] / 1024 / 1024:.2f} MB")
    print(f"Location: {stats['directory']}")

    out = capsys.readouterr().out.splitlines()
    assert out[0] == "Entries: 1"
    assert out[1].startswith("Size: ") and out[1].endswith(" MB")
    assert out[2] == f"Location: {in_tmp_cwd / 'tmp' / 'cache'}"
    assert stats["volume"] >= 1000
    # Our extra counters.
    assert {"hits", "misses", "expired", "evicted", "size_limit"} <= stats.keys()
    cache.close()


def test_using_as_context_manager(in_tmp_cwd):
    async def example():
        async with PersistentCache() as cache:
            await cache.set("key", "value")
            value = await cache.get("key")
            # Cache is automatically cleaned up on exit
        return cache, value

    cache, value = asyncio.run(example())
    assert value == "value"
    assert cache.closed
    # Closed means released: the directory opens again, with the value.
    reopened = PersistentCache()
    assert asyncio.run(reopened.get("key")) == "value"
    reopened.close()


def test_concurrent_operations(in_tmp_cwd):
    cache = PersistentCache()

    async def cache_user(user_id: int, user_data: dict):
        await cache.set(f"user:{user_id}", user_data)

    async def example():
        # Run multiple cache operations concurrently
        await asyncio.gather(
            cache_user(1, {"name": "Alice"}),
            cache_user(2, {"name": "Bob"}),
            cache_user(3, {"name": "Charlie"}),
        )
        return [await cache.get(f"user:{i}") for i in (1, 2, 3)]

    assert asyncio.run(example()) == [{"name": "Alice"}, {"name": "Bob"}, {"name": "Charlie"}]
    cache.close()


def test_caching_complex_data(in_tmp_cwd):
    async def example():
        cache = PersistentCache()
        # Dictionaries
        await cache.set("config", {
            "api_url": "https://api.example.com",
            "timeout": 30,
            "retries": 3
        })

        # Lists
        await cache.set("user_ids", [1, 2, 3, 4, 5])

        # Nested structures
        await cache.set("nested", {
            "users": [
                {"id": 1, "name": "Alice"},
                {"id": 2, "name": "Bob"}
            ],
            "metadata": {
                "count": 2,
                "page": 1
            }
        })
        return cache, [await cache.get(k) for k in ("config", "user_ids", "nested")]

    cache, values = asyncio.run(example())
    assert values == [
        {"api_url": "https://api.example.com", "timeout": 30, "retries": 3},
        [1, 2, 3, 4, 5],
        {"users": [{"id": 1, "name": "Alice"}, {"id": 2, "name": "Bob"}],
         "metadata": {"count": 2, "page": 1}},
    ]
    cache.close()


async def read_file_cached(file_path: Path, cache: PersistentCache) -> str:
    """Read file content with caching."""
    cache_key = f"file_content:{file_path.resolve()}"

    # Try to get from cache
    content = await cache.get(cache_key)
    if content is not None:
        return content

    # Cache miss - read from disk
    content = file_path.read_text()

    # Store in cache
    await cache.set(cache_key, content)

    return content


def test_integration_caching_file_content(in_tmp_cwd):
    notes = in_tmp_cwd / "notes.txt"
    notes.write_text("first version")

    async def example():
        cache = PersistentCache()
        first = await read_file_cached(notes, cache)
        notes.write_text("changed on disk")
        second = await read_file_cached(notes, cache)  # served from the cache
        await cache.close()
        return first, second

    assert asyncio.run(example()) == ("first version", "first version")
    # And from a new process's point of view: a new cache on the same directory.
    async def later():
        async with PersistentCache() as cache:
            return await read_file_cached(notes, cache)

    assert asyncio.run(later()) == "first version"


import httpx  # noqa: E402  (the guide's second example imports it here)


async def fetch_data_cached(url: str, cache: PersistentCache) -> dict:
    """Fetch data from API with caching."""
    cache_key = f"api_response:{url}"

    # Try cache first
    cached = await cache.get(cache_key)
    if cached is not None:
        return cached

    # Cache miss - fetch from API
    async with httpx.AsyncClient() as client:
        response = await client.get(url)
        data = response.json()

    # Cache for 5 minutes
    await cache.set(cache_key, data, expire=300)

    return data


class _Api(http.server.BaseHTTPRequestHandler):
    requests = 0

    def do_GET(self):  # noqa: N802 - http.server's name
        type(self).requests += 1
        body = json.dumps({"path": self.path, "items": [1, 2.5, None, True], "n": self.requests})
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body.encode())

    def log_message(self, *args):
        pass


def test_integration_caching_api_results(in_tmp_cwd):
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Api)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{server.server_address[1]}/v1/items?page=1"
    try:
        async def example():
            cache = PersistentCache()
            first = await fetch_data_cached(url, cache)
            second = await fetch_data_cached(url, cache)
            await cache.close()
            return first, second

        first, second = asyncio.run(example())
    finally:
        server.shutdown()
        server.server_close()
    expected = {"path": "/v1/items?page=1", "items": [1, 2.5, None, True], "n": 1}
    assert first == expected and second == expected
    assert _Api.requests == 1, "the second call must be served from the cache"


def test_environment_variables_from_dotenv(in_tmp_cwd):
    (in_tmp_cwd / ".env").write_text(
        "# Cache Configuration\n"
        "CACHE_DIRECTORY=tmp/env-cache\n"
        "CACHE_SIZE_LIMIT=524288000      # 500MB\n"
        "CACHE_CONTENT_TTL=0             # 0 = no expiry\n"
        "CACHE_SEARCH_TTL=300            # 5 minutes\n"
    )
    cache = PersistentCache()
    assert cache.stats()["directory"] == str(in_tmp_cwd / "tmp" / "env-cache")
    assert cache.size_limit == 524288000
    assert cache.search_ttl == 300.0
    cache.close()


def test_environment_variables_win_over_dotenv(in_tmp_cwd, monkeypatch):
    (in_tmp_cwd / ".env").write_text("CACHE_DIRECTORY=tmp/env-cache\nCACHE_CONTENT_TTL=1\n")
    monkeypatch.setenv("CACHE_DIRECTORY", "tmp/from-environ")
    monkeypatch.setenv("CACHE_SIZE_LIMIT", "1MB")
    cache = PersistentCache()
    assert cache.directory == str(in_tmp_cwd / "tmp" / "from-environ")
    assert cache.size_limit == 1 << 20

    async def default_ttl_applies():
        await cache.set("k", "v")  # CACHE_CONTENT_TTL=1 from .env: expires after a second
        assert await cache.get("k") == "v"
        await asyncio.sleep(1.2)
        return await cache.get("k")

    assert asyncio.run(default_ttl_applies()) is None
    cache.close()


def test_a_malformed_setting_is_a_config_error_naming_it(in_tmp_cwd, monkeypatch):
    from persistent_cache import CacheError, ConfigError

    monkeypatch.setenv("CACHE_SIZE_LIMIT", "500 bananas")
    with pytest.raises(ConfigError) as raised:
        PersistentCache()
    assert "CACHE_SIZE_LIMIT" in str(raised.value) and "500 bananas" in str(raised.value)
    assert isinstance(raised.value, CacheError) and isinstance(raised.value, ValueError)
    assert raised.value.variable == "CACHE_SIZE_LIMIT"


def test_using_with_settings(in_tmp_cwd):
    (in_tmp_cwd / ".env").write_text("CACHE_DIRECTORY=tmp/settings-cache\nCACHE_SIZE_LIMIT=2097152\n")

    from pydantic_settings import BaseSettings

    with pytest.warns(Warning):  # pydantic 2 deprecates class-based Config, as the guide writes it
        class Settings(BaseSettings):
            cache_directory: str = "tmp/cache"
            cache_size_limit: int = 500 * 1024 * 1024  # 500MB

            class Config:
                env_file = ".env"

    settings = Settings()
    cache = PersistentCache(
        cache_dir=settings.cache_directory,
        size_limit=settings.cache_size_limit
    )
    assert cache.directory == str(in_tmp_cwd / "tmp" / "settings-cache")
    assert cache.size_limit == 2097152
    cache.close()


def test_troubleshooting_cache_not_persisting(in_tmp_cwd):
    # Ensure you're using the same cache directory
    cache1 = PersistentCache(cache_dir="tmp/cache")
    cache2 = PersistentCache(cache_dir="tmp/cache")  # Same directory

    async def example():
        await cache1.set("shared", [1, 2])
        return await cache2.get("shared")

    assert asyncio.run(example()) == [1, 2]
    cache1.close()
    assert asyncio.run(cache2.get("shared")) == [1, 2], "closing one leaves the other open"
    cache2.close()


def test_troubleshooting_high_memory_usage_and_stale_data(in_tmp_cwd):
    # Reduce cache size limit
    cache = PersistentCache(size_limit=100 * 1024 * 1024)  # 100MB
    assert cache.size_limit == 100 * 1024 * 1024

    async def example():
        # Use TTL to auto-expire data
        await cache.set("key", "value", expire=60)  # Expires after 1 minute
        return await cache.get("key")

    assert asyncio.run(example()) == "value"
    cache.close()


def test_size_limit_evicts_least_recently_used(in_tmp_cwd):
    cache = PersistentCache(size_limit=256 * 1024)

    async def example():
        value = "x" * 4096
        await cache.set("keep", value)
        for i in range(200):  # ~800 KiB through a 256 KiB cache
            await cache.get("keep")
            await cache.set(f"filler:{i}", value)
        return await cache.get("keep"), await cache.get("filler:0"), await cache.get("filler:199")

    keep, first, last = asyncio.run(example())
    stats = cache.stats()
    assert stats["volume"] <= 256 * 1024 and stats["evicted"] > 0
    assert keep is not None and last is not None and first is None
    cache.close()


def test_close_plain_and_awaited(in_tmp_cwd):
    from persistent_cache import CacheClosedError

    plain = PersistentCache(cache_dir="tmp/plain")
    asyncio.run(plain.set("k", 1))
    plain.close()  # plain code, as the guide's "Close When Done"
    plain.close()  # twice is fine
    with pytest.raises(CacheClosedError):
        asyncio.run(plain.get("k"))

    async def in_a_coroutine():
        awaited = PersistentCache(cache_dir="tmp/awaited")
        await awaited.set("k", 2)
        await awaited.close()
        not_awaited = PersistentCache(cache_dir="tmp/not-awaited")
        await not_awaited.set("k", 3)
        not_awaited.close()  # not awaited: closes anyway, off the event loop
        # Reopening waits for that close to finish.
        again = PersistentCache(cache_dir="tmp/not-awaited")
        value = await again.get("k")
        await again.close()
        return value

    assert asyncio.run(in_a_coroutine()) == 3
    for name, expected in (("plain", 1), ("awaited", 2)):
        with PersistentCache(cache_dir=f"tmp/{name}") as cache:
            assert asyncio.run(cache.get("k")) == expected
