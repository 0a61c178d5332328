"""Types of the extension module (`python/src/`), as far as the Python half relies on them."""

from typing import Any, Generator

PICKLE_TAG: int
MAX_DEPTH: int
YIELD_EVERY: int

def encode(value: Any, *, pickle: bool = False) -> bytes: ...
def decode(data: bytes, *, pickle: bool = False) -> Any: ...

class Pending:
    """A call the engine did not answer at once: await it for the result."""

    def __await__(self) -> Generator[Any, None, Any]: ...

class NativeCache:
    def __init__(
        self,
        cache_dir: str | None = None,
        size_limit: int | None = None,
        *,
        default_ttl: float | None = None,
        pickle: bool = False,
        sync: bool = False,
        read_only: bool = False,
        exclusive: bool = False,
    ) -> None: ...
    @property
    def directory(self) -> str: ...
    # The operations return a value, or a `Pending` to await (`PersistentCache` documents them).
    def __getattr__(self, name: str) -> Any: ...
