"""The package is typed (PEP 561: `py.typed`): mypy --strict checks code that uses it, and
catches misuse of its API."""

import subprocess
import sys
import textwrap

import pytest

mypy = pytest.importorskip("mypy", reason="mypy is in tests/requirements.txt")

GOOD = """
    import asyncio
    from typing import Any, List, Optional

    import persistent_cache
    from persistent_cache import NEVER, CacheStats, PersistentCache


    async def main() -> None:
        async with PersistentCache(cache_dir="tmp/cache", size_limit=500 * 1024 * 1024) as cache:
            await cache.set("user:123", {"name": "John"}, expire=300)
            await cache.set("forever", [1, 2, 3], expire=NEVER)
            user: Any = await cache.get("user:123")
            removed: bool = await cache.delete("user:123")
            count: int = await cache.incr("hits")
            keys: List[str] = await cache.keys("user:")
            stats: CacheStats = cache.stats()
            size: int = stats["size"]
            ttl: Optional[float] = cache.search_ttl
            value = await cache.get_or_set("k", lambda: "computed")
            print(user, removed, count, keys, size, ttl, value)
        cache.close()
        await cache.close()
        report = persistent_cache.import_diskcache("tmp/cache")
        data: bytes = persistent_cache.encode({"a": 1})
        print(report["imported"], persistent_cache.decode(data))


    asyncio.run(main())
"""

BAD = """
    from persistent_cache import PersistentCache


    async def main(cache: PersistentCache) -> None:
        await cache.set(123, "a key must be str")
        name: str = await cache.incr("counter")
        cache.stats()["no such counter"]
"""


def mypy_on(tmp_path, source):
    script = tmp_path / "script.py"
    script.write_text(textwrap.dedent(source))
    return subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--no-incremental", str(script)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )


def test_mypy_strict_accepts_the_guides_usage(tmp_path):
    result = mypy_on(tmp_path, GOOD)
    assert result.returncode == 0, result.stdout + result.stderr


def test_mypy_catches_misuse(tmp_path):
    result = mypy_on(tmp_path, BAD)
    assert result.returncode == 1, result.stdout + result.stderr
    assert 'incompatible type "int"; expected "str"' in result.stdout, result.stdout
    assert 'Incompatible types in assignment (expression has type "int"' in result.stdout
    assert '"no such counter"' in result.stdout


def test_the_package_itself_type_checks():
    result = subprocess.run(
        [sys.executable, "-m", "mypy", "--no-incremental", "-p", "persistent_cache"],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr
