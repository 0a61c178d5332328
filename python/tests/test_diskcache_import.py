"""Coming from diskcache: its `cache.db` is detected, and `import_diskcache` copies the values
that convert without running any pickle (through diskcache, and through sqlite3 alone)."""

import asyncio
import sys
import time

import pytest

import persistent_cache
from persistent_cache import PersistentCache, import_diskcache

diskcache = pytest.importorskip("diskcache")


class Exploit:
    """A pickle that, loaded, creates a file: the code-execution problem of diskcache."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def make_legacy(directory, marker):
    legacy = diskcache.Cache(str(directory), eviction_policy="least-recently-used")
    legacy.set("user:123", {"name": "John", "email": "john@example.com"})
    legacy.set("ids", [1, 2, 3])
    legacy.set("text", "plain text")
    legacy.set("blob", b"\x00" * 100_000)  # diskcache keeps big bytes in a file of its own
    legacy.set("long text", "y" * 100_000)
    legacy.set("number", 7)
    legacy.set("ratio", 0.5)
    legacy.set("tuple", (1, 2))
    legacy.set("ttl", "expires later", expire=3600)
    legacy.set("gone", "expired", expire=0.01)
    legacy.set(("tuple", "key"), "not a str key")
    legacy.set("evil", Exploit(str(marker)))
    legacy.set("", "a key this cache refuses: skipped, the import goes on")
    legacy.close()
    time.sleep(0.05)


def check_imported(directory, report, marker):
    assert not marker.exists(), "a pickle from the diskcache directory was run"
    assert report["imported"] == 9, report
    assert report["skipped"] == {"pickle names code": 1, "expired": 1, "key is not a str": 1,
                                 "InvalidKeyError": 1}

    async def read():
        # The directory still holds diskcache's cache.db (it says so).
        with pytest.warns(persistent_cache.DiskcacheDirectoryWarning):
            cache = PersistentCache(cache_dir=directory)
        async with cache:
            keys = await cache.keys()
            values = {k: await cache.get(k) for k in keys}
            return values

    values = asyncio.run(read())
    assert values["user:123"] == {"name": "John", "email": "john@example.com"}
    assert values["ids"] == [1, 2, 3] and values["tuple"] == [1, 2]
    assert values["blob"] == b"\x00" * 100_000 and values["long text"] == "y" * 100_000
    assert values["number"] == 7 and values["ratio"] == 0.5 and values["text"] == "plain text"
    assert values["ttl"] == "expires later"
    assert "evil" not in values and "gone" not in values


def test_import_through_diskcache(tmp_path):
    marker = tmp_path / "pwned"
    directory = tmp_path / "cache"
    make_legacy(directory, marker)
    with pytest.warns(persistent_cache.DiskcacheDirectoryWarning):
        report = import_diskcache(directory)
    check_imported(directory, report, marker)


def test_import_without_diskcache_installed(tmp_path, monkeypatch):
    marker = tmp_path / "pwned"
    directory = tmp_path / "cache"
    make_legacy(directory, marker)
    monkeypatch.setitem(sys.modules, "diskcache", None)  # `import diskcache` fails
    with pytest.warns(persistent_cache.DiskcacheDirectoryWarning):
        report = import_diskcache(directory)
    check_imported(directory, report, marker)


def test_import_needs_a_cache_db(tmp_path):
    with pytest.raises(FileNotFoundError):
        import_diskcache(tmp_path)
