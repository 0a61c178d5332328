//! The wit-bindgen export: a thin shim from the `pcache:cache/cache` resource to the engine.

#[cfg(feature = "fault-injection")]
mod fault;

use crate::engine::{Engine, EngineOptions};
use crate::error::Error;
use crate::storage::WasiStorage;
use crate::time::WallClock;
use std::cell::RefCell;

wit_bindgen::generate!({
    world: "cache-guest",
    path: "wit",
    // The engine's files are `wasip2` descriptors: `value-reader.stage` borrows one.
    with: {
        "wasi:filesystem/types@0.2.12": wasip2::filesystem::types,
        "wasi:io/error@0.2.12": wasip2::io::error,
        "wasi:io/poll@0.2.12": wasip2::io::poll,
        "wasi:io/streams@0.2.12": wasip2::io::streams,
        "wasi:clocks/wall-clock@0.2.12": wasip2::clocks::wall_clock,
    },
});

pub(crate) use pcache::cache::value_reader;

use crate::engine::Found;
use exports::pcache::cache::cache::{Cache, Guest, GuestCache, ValueSource};
use pcache::cache::types as wit;

type WasiEngine = Engine<WasiStorage, WallClock>;

/// One open cache: the `cache` resource's representation.
struct CacheResource {
    engine: RefCell<WasiEngine>,
    /// The TTL that `expiry::default` stands for, in milliseconds.
    default_ttl_ms: Option<u64>,
}

impl CacheResource {
    fn with_engine<T>(
        &self,
        f: impl FnOnce(&mut WasiEngine) -> crate::Result<T>,
    ) -> Result<T, wit::Error> {
        f(&mut self.engine.borrow_mut()).map_err(to_wit)
    }

    /// The engine's TTL for `expiry`: `None` never expires, `Some(ms)` expires `ms` from now.
    ///
    /// Edge cases: `after-ms(0)` is `invalid-ttl` (one rule for every operation: a zero TTL
    /// is a mistake, not "expired at once"); `default` with no default TTL is never.
    fn ttl_ms(&self, expiry: wit::Expiry) -> Result<Option<u64>, wit::Error> {
        match expiry {
            wit::Expiry::Default => Ok(self.default_ttl_ms),
            wit::Expiry::Never => Ok(None),
            wit::Expiry::AfterMs(0) => Err(wit::Error::InvalidTtl(
                "a TTL must be at least 1 ms; use `never` for an entry that does not expire"
                    .to_owned(),
            )),
            wit::Expiry::AfterMs(ms) => Ok(Some(ms)),
        }
    }
}

fn to_wit(e: Error) -> wit::Error {
    match e {
        Error::InvalidKey(why) => wit::Error::InvalidKey(why),
        Error::ValueTooLarge { size, limit } => {
            wit::Error::ValueTooLarge(wit::ValueTooLarge { size, limit })
        }
        Error::Io { kind, message } => wit::Error::Io(wit::IoError {
            kind: io_kind(kind),
            message,
        }),
        Error::Corrupt(msg) => wit::Error::Corrupt(msg),
        Error::IncompatibleFormat(msg) => wit::Error::IncompatibleFormat(msg),
        Error::NotACounter(msg) => wit::Error::NotACounter(msg),
        Error::CounterOverflow(msg) => wit::Error::CounterOverflow(msg),
        Error::ReadOnly => wit::Error::ReadOnly,
        Error::WouldBlock => wit::Error::WouldBlock,
        Error::NeedsLock => wit::Error::NeedsLock,
        Error::Stale => wit::Error::Stale,
    }
}

/// The WIT `io-kind` of an `std::io::ErrorKind` (what `WasiStorage` made of a WASI error code).
fn io_kind(kind: std::io::ErrorKind) -> wit::IoKind {
    use std::io::ErrorKind;
    match kind {
        ErrorKind::NotFound => wit::IoKind::NotFound,
        ErrorKind::PermissionDenied => wit::IoKind::PermissionDenied,
        ErrorKind::AlreadyExists => wit::IoKind::AlreadyExists,
        ErrorKind::StorageFull => wit::IoKind::StorageFull,
        ErrorKind::FileTooLarge => wit::IoKind::FileTooLarge,
        _ => wit::IoKind::Other,
    }
}

struct Component;

impl Guest for Component {
    type Cache = CacheResource;
}

impl GuestCache for CacheResource {
    fn open(options: wit::OpenOptions) -> Result<Cache, wit::Error> {
        let storage = WasiStorage::preopened(&options.directory).map_err(|e| {
            wit::Error::Io(wit::IoError {
                kind: io_kind(e.kind()),
                message: e.to_string(),
            })
        })?;
        let engine = Engine::open(
            storage,
            WallClock,
            EngineOptions {
                size_limit: options.size_limit,
                sync_writes: options.sync_writes,
                read_only: options.read_only,
                shared: options.shared,
                memory_budget: options.memory_budget,
            },
        )
        .map_err(to_wit)?;
        Ok(Cache::new(CacheResource {
            engine: RefCell::new(engine),
            default_ttl_ms: options.default_ttl_ms,
        }))
    }

    fn get(&self, key: String) -> Result<Option<Vec<u8>>, wit::Error> {
        self.with_engine(|e| e.get(&key))
    }

    fn get_many(&self, keys: Vec<String>) -> Result<Vec<Option<Vec<u8>>>, wit::Error> {
        self.with_engine(|e| e.get_many(&keys))
    }

    fn set_many(
        &self,
        entries: Vec<(String, Vec<u8>)>,
        expiry: wit::Expiry,
    ) -> Result<(), wit::Error> {
        let ttl_ms = self.ttl_ms(expiry)?;
        self.with_engine(|e| e.set_many(&entries, ttl_ms))
    }

    fn read_value(&self, key: String) -> Result<Option<ValueSource>, wit::Error> {
        Ok(self
            .with_engine(|e| e.read_value(&key))?
            .map(|found| match found {
                Found::Value(bytes) => ValueSource::Inline(bytes),
                Found::Staged(len) => ValueSource::Staged(len),
            }))
    }

    fn contains(&self, key: String) -> Result<bool, wit::Error> {
        self.with_engine(|e| e.contains(&key))
    }

    fn set(&self, key: String, value: Vec<u8>, expiry: wit::Expiry) -> Result<(), wit::Error> {
        #[cfg(feature = "fault-injection")]
        if let Some(command) = key.strip_prefix(fault::PREFIX) {
            return fault::inject(self, command, &value);
        }
        let ttl_ms = self.ttl_ms(expiry)?;
        self.with_engine(|e| e.set(&key, &value, ttl_ms))
    }

    fn delete(&self, key: String) -> Result<bool, wit::Error> {
        self.with_engine(|e| e.delete(&key))
    }

    fn clear(&self) -> Result<(), wit::Error> {
        self.with_engine(|e| e.clear())
    }

    fn add(&self, key: String, value: Vec<u8>, expiry: wit::Expiry) -> Result<bool, wit::Error> {
        let ttl_ms = self.ttl_ms(expiry)?;
        self.with_engine(|e| e.add(&key, &value, ttl_ms))
    }

    fn touch(&self, key: String, expiry: wit::Expiry) -> Result<bool, wit::Error> {
        let ttl_ms = self.ttl_ms(expiry)?;
        self.with_engine(|e| e.touch(&key, ttl_ms))
    }

    fn pop(&self, key: String) -> Result<Option<Vec<u8>>, wit::Error> {
        self.with_engine(|e| e.pop(&key))
    }

    fn incr(
        &self,
        key: String,
        delta: i64,
        default: i64,
        expiry: wit::Expiry,
    ) -> Result<i64, wit::Error> {
        let ttl_ms = self.ttl_ms(expiry)?;
        self.with_engine(|e| e.incr(&key, delta, default, ttl_ms))
    }

    fn delete_prefix(&self, prefix: String) -> Result<u64, wit::Error> {
        self.with_engine(|e| e.delete_prefix(&prefix))
    }

    fn expire(&self) -> Result<u64, wit::Error> {
        self.with_engine(|e| Ok(e.expire()))
    }

    fn keys(
        &self,
        prefix: String,
        after: Option<String>,
        limit: u32,
    ) -> Result<Vec<String>, wit::Error> {
        self.with_engine(|e| Ok(e.keys(&prefix, after.as_deref(), limit as usize)))
    }

    fn stats(&self) -> Result<wit::CacheStats, wit::Error> {
        self.with_engine(|e| {
            let s = e.stats();
            Ok(wit::CacheStats {
                entries: s.entries,
                volume: s.volume,
                size_limit: s.size_limit,
                hits: s.hits,
                misses: s.misses,
                expired: s.expired,
                evicted: s.evicted,
                damaged: s.damaged,
            })
        })
    }

    fn flush(&self) -> Result<(), wit::Error> {
        self.with_engine(|e| e.flush())
    }

    fn set_nonblocking(&self, on: bool) {
        self.engine.borrow_mut().set_nonblocking(on);
    }

    fn maintain(&self, durable_through: u64) -> Result<wit::Maintenance, wit::Error> {
        self.with_engine(|e| e.maintain(durable_through))
            .map(to_wit_maintenance)
    }

    fn catch_up(&self) -> Result<(), wit::Error> {
        self.with_engine(|e| e.catch_up())
    }

    fn set_write_locked(&self, locked: bool, others_wrote: bool) -> Result<(), wit::Error> {
        self.with_engine(|e| e.set_write_locked(locked, others_wrote))
    }

    fn maintenance_pending(&self) -> wit::Maintenance {
        to_wit_maintenance(self.engine.borrow().maintenance())
    }

    fn close(this: Cache) -> Result<(), wit::Error> {
        let resource: CacheResource = this.into_inner();
        resource.engine.into_inner().close().map_err(to_wit)
    }
}

export!(Component);

/// The engine's `Maintenance` as the WIT record.
fn to_wit_maintenance(m: crate::engine::Maintenance) -> wit::Maintenance {
    wit::Maintenance {
        pending: m.pending,
        sync_through: m.sync_through,
    }
}
