"""The exceptions of persistent_cache: one class per kind of ``persistent_cache::Error``.

Every one is a :class:`CacheError`; each is also the built-in exception it is a kind of, so
``except ValueError`` still catches an invalid key and ``except OSError`` a full disk.
"""

__all__ = [
    "CacheError",
    "InvalidKeyError",
    "ValueTooLargeError",
    "InvalidTtlError",
    "CacheIOError",
    "ReadOnlyError",
    "CorruptError",
    "IncompatibleFormatError",
    "NotACounterError",
    "CounterOverflowError",
    "CacheClosedError",
    "ConfigError",
    "DirectoryError",
    "LockedError",
    "SerializeError",
    "DeserializeError",
    "MemoryLimitError",
    "TimeLimitError",
    "EngineError",
    "PluginError",
    "DiskcacheDirectoryWarning",
]


class CacheError(Exception):
    """Any failure of a cache operation (``persistent_cache::Error``)."""


class InvalidKeyError(CacheError, ValueError):
    """The key is empty or longer than 4096 bytes of UTF-8 (``Error::InvalidKey``)."""


class ValueTooLargeError(CacheError, ValueError):
    """The entry does not fit in the size limit; nothing was written (``Error::ValueTooLarge``).

    ``size`` is the bytes the entry needs, ``limit`` the cache's size limit.
    """

    def __init__(self, message, size=None, limit=None):
        super().__init__(message)
        self.size = size
        self.limit = limit


class InvalidTtlError(CacheError, ValueError):
    """A TTL of zero or less; to remove an entry, delete it (``Error::InvalidTtl``)."""


class CacheIOError(CacheError, OSError):
    """A file operation in the cache directory failed: disk full, permission denied...
    (``Error::Io``). ``errno`` is the operating system's error number when there is one."""

    def __init__(self, errno, message):
        if errno is None:
            OSError.__init__(self, message)
        else:
            OSError.__init__(self, errno, message)


class ReadOnlyError(CacheError):
    """The cache was opened read-only and the call would write; nothing changed (``Error::ReadOnly``)."""


class CorruptError(CacheError):
    """The cache directory holds data the engine cannot trust (``Error::Corrupt``)."""


class IncompatibleFormatError(CacheError):
    """The directory was written by a newer, incompatible format (``Error::IncompatibleFormat``)."""


class NotACounterError(CacheError, TypeError):
    """``incr`` found a value that is not an integer; nothing changed (``Error::NotACounter``)."""


class CounterOverflowError(CacheError, OverflowError):
    """``incr`` would leave the 64-bit signed range; nothing changed (``Error::CounterOverflow``)."""


class CacheClosedError(CacheError):
    """The cache was closed (``Error::Closed``); open a new ``PersistentCache``."""


class ConfigError(CacheError, ValueError):
    """A ``CACHE_*`` setting (environment or ``.env``) has a value that cannot be used
    (``Error::Config``); ``variable`` names it."""

    def __init__(self, message, variable=None):
        super().__init__(message)
        self.variable = variable


class DirectoryError(CacheError, OSError):
    """The cache directory or one of its files cannot be created, opened or locked
    (``Error::Directory``); ``filename`` is the path."""

    def __init__(self, errno, message, path):
        if errno is None:
            OSError.__init__(self, message)
        else:
            OSError.__init__(self, errno, message)
        self.filename = path


class LockedError(CacheError):
    """Another process holds the directory open exclusively, or this one asked for
    ``exclusive=True`` while another has it open (``Error::Locked``)."""

    def __init__(self, message, path=None):
        super().__init__(message)
        self.path = path


class SerializeError(CacheError, TypeError):
    """A value holds an object the cache does not store (``Error::Serialize``); the message
    names its type and where it is."""


class DeserializeError(CacheError, ValueError):
    """The stored bytes are not a value this package reads, or hold a pickle while
    ``pickle=False`` (``Error::Deserialize``)."""


class MemoryLimitError(CacheError, MemoryError):
    """The sandboxed engine hit its memory limit; the call was abandoned and the engine
    restarted (``Error::MemoryLimit``)."""

    def __init__(self, message, limit=None):
        super().__init__(message)
        self.limit = limit


class TimeLimitError(CacheError, TimeoutError):
    """One engine call ran past its time limit; the call was abandoned and the engine
    restarted (``Error::TimeLimit``). ``limit`` is in seconds."""

    def __init__(self, message, limit=None):
        super().__init__(message)
        self.limit = limit


class EngineError(CacheError):
    """The WebAssembly runtime failed: compilation, instantiation or a trap (``Error::Wasm``)."""


class PluginError(CacheError):
    """A plugin could not be loaded or was stopped (``Error::Plugin``)."""

    def __init__(self, message, plugin=None):
        super().__init__(message)
        self.plugin = plugin


class DiskcacheDirectoryWarning(UserWarning):
    """The cache directory also holds a diskcache cache (``cache.db``), which this package does
    not read: see :func:`persistent_cache.import_diskcache`."""
