//! The engine's error type, one case per thing a caller can act on.

use std::fmt;

/// Why a cache operation failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Error {
    /// The key is empty or longer than `MAX_KEY_LEN` bytes.
    InvalidKey(String),
    /// The entry would occupy `size` bytes on disk, more than the size limit `limit`.
    ValueTooLarge { size: u64, limit: u64 },
    /// A filesystem call failed: what kind of failure, and a message naming the operation and
    /// the file.
    Io {
        kind: std::io::ErrorKind,
        message: String,
    },
    /// The directory holds bytes the engine cannot trust.
    Corrupt(String),
    /// The directory was written by a newer format version.
    IncompatibleFormat(String),
    /// `incr` found a value that is not an integer counter.
    NotACounter(String),
    /// `incr` would take the counter past the `i64` range; the counter is unchanged.
    CounterOverflow(String),
    /// The cache was opened read-only and the operation may write; nothing changed.
    ReadOnly,
    /// Non-blocking mode: the operation would do slow work (see
    /// [`Engine::set_nonblocking`](crate::Engine::set_nonblocking)); nothing changed.
    WouldBlock,
    /// Shared directory: the operation may write and the host does not hold the directory's
    /// write lock (see [`Engine::set_write_locked`](crate::Engine::set_write_locked));
    /// nothing changed.
    NeedsLock,
    /// Shared directory: other processes deleted the segment this engine was appending to (it
    /// missed a whole rotation of the log); reopen the cache.
    Stale,
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::InvalidKey(why) => write!(f, "invalid key: {why}"),
            Error::ValueTooLarge { size, limit } => write!(
                f,
                "value too large: the entry needs {size} bytes but the size limit is {limit} bytes"
            ),
            Error::Io { message, .. } => write!(f, "I/O error: {message}"),
            Error::Corrupt(msg) => write!(f, "corrupt cache data: {msg}"),
            Error::IncompatibleFormat(msg) => write!(f, "incompatible cache format: {msg}"),
            Error::NotACounter(msg) => write!(f, "not a counter: {msg}"),
            Error::CounterOverflow(msg) => write!(f, "counter overflow: {msg}"),
            Error::ReadOnly => write!(f, "the cache was opened read-only"),
            Error::WouldBlock => write!(f, "the operation would block (non-blocking mode)"),
            Error::NeedsLock => write!(f, "a write without the directory's write lock"),
            Error::Stale => write!(
                f,
                "other processes rewrote the whole log since this engine last looked; reopen"
            ),
        }
    }
}

impl std::error::Error for Error {}

/// Wraps an I/O error with what was being done to which file, keeping its kind.
pub(crate) fn io_err(what: &str, file: &str, e: std::io::Error) -> Error {
    Error::Io {
        kind: e.kind(),
        message: format!("{what} {file}: {e}"),
    }
}

/// The engine's result type.
pub type Result<T> = std::result::Result<T, Error>;
