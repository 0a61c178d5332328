//! The error type every fallible PersistentCache operation returns.

use std::path::PathBuf;
use std::time::Duration;

/// Why a cache operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The key is empty or longer than 4096 bytes of UTF-8.
    #[error("invalid key: {0}")]
    InvalidKey(String),

    /// The entry (key, value and record overhead) would not fit in the size limit.
    #[error("value too large: the entry needs {size} bytes but the size limit is {limit} bytes")]
    ValueTooLarge {
        /// Bytes the entry would occupy on disk.
        size: u64,
        /// The cache's size limit in bytes.
        limit: u64,
    },

    /// A per-call TTL of zero (see [`Expiry`](crate::Expiry)): say `Expiry::Never` for an entry
    /// that does not expire, or delete it.
    #[error("invalid TTL: {0}")]
    InvalidTtl(String),

    /// A filesystem operation inside the cache directory failed (disk full, permission denied,
    /// ...); [`io::Error::kind`](std::io::Error::kind) tells which.
    #[error("cache I/O error: {0}")]
    Io(std::io::Error),

    /// The cache was opened read-only ([`CacheOptions::read_only`](crate::CacheOptions::read_only))
    /// and the call would write; nothing changed.
    #[error("the cache was opened read-only")]
    ReadOnly,

    /// The cache directory holds data the engine cannot trust.
    #[error("cache data is corrupt: {0}")]
    Corrupt(String),

    /// The cache directory was written by a newer, incompatible format version.
    #[error("incompatible cache format: {0}")]
    IncompatibleFormat(String),

    /// `incr` found a value that is not an integer counter; nothing changed.
    #[error("not a counter: {0}")]
    NotACounter(String),

    /// `incr` would take the counter outside the `i64` range; the counter is unchanged.
    #[error("counter overflow: {0}")]
    CounterOverflow(String),

    /// The cache was closed; reopen it with `PersistentCache::open`.
    #[error("the cache is closed")]
    Closed,

    /// A configuration variable has a value that cannot be used.
    #[error("invalid configuration {variable}: {message}")]
    Config {
        /// The variable (or file) at fault, e.g. `CACHE_SIZE_LIMIT`.
        variable: String,
        /// What is wrong with it, including the offending value.
        message: String,
    },

    /// The host could not create, open or lock the cache directory or a file of it.
    #[error("cannot use {}: {source}", path.display())]
    Directory {
        /// The directory, or the file of it (e.g. its `.lock`).
        path: PathBuf,
        /// The underlying operating-system error.
        #[source]
        source: std::io::Error,
    },

    /// Another process holds the cache directory open exclusively (or this one asked for
    /// `exclusive` and another process has it open).
    #[error("cache directory {} is open exclusively in another process (or this process asked for exclusive access and another has it open)", path.display())]
    Locked {
        /// The locked directory.
        path: PathBuf,
    },

    /// A value could not be encoded to CBOR.
    #[error("cannot serialize value: {0}")]
    Serialize(String),

    /// A stored value could not be decoded into the requested type.
    #[error("cannot deserialize value: {0}")]
    Deserialize(String),

    /// The sandboxed engine needed more memory than `CacheOptions::memory_limit` allows. The
    /// call was abandoned (a write may or may not have happened, as in a crash) and the engine
    /// is restarted from the directory before the next call.
    #[error("the cache engine exceeded its memory limit of {limit} bytes (CacheOptions::memory_limit); the call was abandoned and the engine restarted")]
    MemoryLimit {
        /// The memory limit in bytes.
        limit: u64,
    },

    /// One engine call ran longer than `CacheOptions::time_limit`. The call was abandoned (a
    /// write may or may not have happened, as in a crash) and the engine is restarted from the
    /// directory before the next call.
    #[error("the cache engine ran longer than its time limit of {limit:?} (CacheOptions::time_limit); the call was abandoned and the engine restarted")]
    TimeLimit {
        /// The time limit.
        limit: Duration,
    },

    /// The WebAssembly runtime failed: compilation, instantiation, or a trap inside the guest.
    #[error("WebAssembly runtime error: {0}")]
    Wasm(String),

    /// The shared Redis tier ([`CacheOptions::redis`](crate::CacheOptions::redis)) could not
    /// be reached or refused the command: a write that fails so changed nothing this node can
    /// vouch for (its local copy of the key is dropped), a read that needed Redis got nothing.
    /// The local tier is unharmed; the connection is retried by itself.
    #[error("Redis tier: {0}")]
    Remote(String),

    /// A plugin could not be loaded, or was stopped: it trapped or hit one of its limits. The
    /// cache and the host are unaffected.
    #[error("plugin {plugin}: {failure}")]
    Plugin {
        /// The plugin's name.
        plugin: String,
        /// What went wrong.
        failure: PluginFailure,
    },
}

/// Why a plugin failed (see [`Error::Plugin`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PluginFailure {
    /// The file is not a component, is not a `wasi:cli` command, or imports something the host
    /// does not provide (only WASI and `wasi:keyvalue@0.2.0-draft2` store/atomics/batch).
    #[error("cannot load: {0}")]
    Load(String),
    /// The plugin ran longer than its time limit and was stopped.
    #[error("stopped after its time limit of {0:?}")]
    TimeLimit(Duration),
    /// The plugin asked for more memory than its limit (bytes) and was stopped.
    #[error("stopped at its memory limit of {0} bytes")]
    MemoryLimit(u64),
    /// The plugin trapped (a wasm trap, e.g. `unreachable` or a panic).
    #[error("trapped: {0}")]
    Trap(String),
    /// The plugin's store does not fit what is left of the cache's plugin budget
    /// ([`CacheOptions::plugin_budget`](crate::CacheOptions::plugin_budget)).
    #[error("no room for its store: {0}")]
    Budget(String),
}

/// The result type of every fallible PersistentCache operation.
pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    /// Wraps a wasmtime error (trap, link or compile failure) in one line: the root cause (e.g.
    /// `wasm trap: wasm `unreachable` instruction executed`) first, then the chain of contexts.
    /// The wasm backtrace (many lines) goes to the log at debug level instead.
    pub(crate) fn wasm(err: &wasmtime::Error) -> Self {
        // A trap's backtrace is a context whose message runs over many lines; keep its first.
        let contexts: Vec<String> = err
            .chain()
            .map(|cause| {
                let message = cause.to_string();
                let first = message.lines().next().unwrap_or_default();
                first.trim_end_matches(" at wasm backtrace:").to_owned()
            })
            .collect();
        if contexts.len() > 1 {
            tracing::debug!(error = %format!("{err:#}"), "wasm error with backtrace");
            Error::Wasm(format!(
                "{}; details: {}",
                err.root_cause(),
                contexts.join(": ")
            ))
        } else {
            Error::Wasm(err.to_string())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wasm_error_leads_with_root_cause() {
        let err = wasmtime::Error::msg("wasm trap: unreachable").context("error while executing");
        let Error::Wasm(message) = Error::wasm(&err) else {
            panic!("expected Error::Wasm");
        };
        assert!(
            message.starts_with("wasm trap: unreachable; details: error while executing"),
            "{message}"
        );
        let plain = Error::wasm(&wasmtime::Error::msg("link failed"));
        assert!(matches!(plain, Error::Wasm(m) if m == "link failed"));
    }

    #[test]
    fn messages_name_the_details() {
        let err = Error::Config {
            variable: "CACHE_SIZE_LIMIT".into(),
            message: "expected bytes, got \"x\"".into(),
        };
        assert!(err.to_string().contains("CACHE_SIZE_LIMIT"));
        let locked = Error::Locked {
            path: PathBuf::from("/tmp/c"),
        };
        assert!(locked.to_string().contains("/tmp/c"));
        let dir = Error::Directory {
            path: PathBuf::from("/nope"),
            source: std::io::Error::from(std::io::ErrorKind::PermissionDenied),
        };
        assert!(std::error::Error::source(&dir).is_some());
    }
}
