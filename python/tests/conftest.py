"""Shared fixtures of the persistent_cache pytest suite.

Run by host/tests/python.rs (`cargo test`), which builds the extension into a virtualenv and
sets PCACHE_BIN (the pcache binary) and PCACHE_NO_SKIP=1 (a skipped test fails the run).
"""

import os

import pytest


@pytest.fixture
def in_tmp_cwd(tmp_path, monkeypatch):
    """Runs the test in an empty working directory, with no CACHE_* variables set, so that
    the guide's relative `tmp/cache` and `.env` land there."""
    monkeypatch.chdir(tmp_path)
    for name in ("CACHE_DIRECTORY", "CACHE_SIZE_LIMIT", "CACHE_CONTENT_TTL", "CACHE_SEARCH_TTL"):
        monkeypatch.delenv(name, raising=False)
    return tmp_path


def pytest_runtest_logreport(report):
    # Under `cargo test` every test must run: a skip there is a failure.
    if os.environ.get("PCACHE_NO_SKIP") == "1" and report.skipped:
        report.outcome = "failed"
        report.longrepr = f"skipped under PCACHE_NO_SKIP=1: {report.longrepr}"
