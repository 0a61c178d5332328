//! The wit-bindgen export: a thin shim from `pcache:cache/cache` to the engine.

#[cfg(feature = "fault-injection")]
mod fault;

use crate::engine::{Engine, EngineOptions};
use crate::error::Error;
use crate::storage::WasiStorage;
use crate::time::WallClock;
use std::cell::RefCell;

wit_bindgen::generate!({
    world: "cache-guest",
    path: "../wit",
});

use exports::pcache::cache::cache::Guest;
use pcache::cache::types as wit;

type WasiEngine = Engine<WasiStorage, WallClock>;

thread_local! {
    /// The one open cache of this instance.
    static ENGINE: RefCell<Option<WasiEngine>> = const { RefCell::new(None) };
}

fn with_engine<T>(f: impl FnOnce(&mut WasiEngine) -> crate::Result<T>) -> Result<T, wit::Error> {
    ENGINE.with_borrow_mut(|slot| match slot.as_mut() {
        Some(engine) => f(engine).map_err(to_wit),
        None => Err(wit::Error::NotOpen),
    })
}

fn to_wit(e: Error) -> wit::Error {
    match e {
        Error::InvalidKey(why) => wit::Error::InvalidKey(why),
        Error::ValueTooLarge { size, limit } => {
            wit::Error::ValueTooLarge(wit::ValueTooLarge { size, limit })
        }
        Error::Io(msg) => wit::Error::Io(msg),
        Error::Corrupt(msg) => wit::Error::Corrupt(msg),
        Error::IncompatibleFormat(msg) => wit::Error::IncompatibleFormat(msg),
        Error::NotOpen => wit::Error::NotOpen,
        Error::AlreadyOpen => wit::Error::AlreadyOpen,
        Error::NotACounter(msg) => wit::Error::NotACounter(msg),
        Error::CounterOverflow(msg) => wit::Error::CounterOverflow(msg),
        Error::ReadOnly => wit::Error::Io(e.to_string()),
    }
}

struct Component;

impl Guest for Component {
    fn open(options: wit::OpenOptions) -> Result<(), wit::Error> {
        ENGINE.with_borrow_mut(|slot| {
            if slot.is_some() {
                return Err(wit::Error::AlreadyOpen);
            }
            let storage = WasiStorage::preopened(&options.directory)
                .map_err(|e| wit::Error::Io(e.to_string()))?;
            let engine = Engine::open(
                storage,
                WallClock,
                EngineOptions {
                    size_limit: options.size_limit,
                    sync_writes: options.sync_writes,
                    read_only: false,
                },
            )
            .map_err(to_wit)?;
            *slot = Some(engine);
            Ok(())
        })
    }

    fn get(key: String) -> Result<Option<Vec<u8>>, wit::Error> {
        with_engine(|e| e.get(&key))
    }

    fn set(key: String, value: Vec<u8>, ttl_ms: Option<u64>) -> Result<(), wit::Error> {
        #[cfg(feature = "fault-injection")]
        if let Some(command) = key.strip_prefix(fault::PREFIX) {
            return fault::inject(command, &value);
        }
        with_engine(|e| e.set(&key, &value, ttl_ms))
    }

    fn delete(key: String) -> Result<bool, wit::Error> {
        with_engine(|e| e.delete(&key))
    }

    fn clear() -> Result<(), wit::Error> {
        with_engine(|e| e.clear())
    }

    fn contains(key: String) -> Result<bool, wit::Error> {
        with_engine(|e| e.contains(&key))
    }

    fn add(key: String, value: Vec<u8>, ttl_ms: Option<u64>) -> Result<bool, wit::Error> {
        with_engine(|e| e.add(&key, &value, ttl_ms))
    }

    fn touch(key: String, ttl_ms: Option<u64>) -> Result<bool, wit::Error> {
        with_engine(|e| e.touch(&key, ttl_ms))
    }

    fn pop(key: String) -> Result<Option<Vec<u8>>, wit::Error> {
        with_engine(|e| e.pop(&key))
    }

    fn incr(key: String, delta: i64, default: i64, ttl_ms: Option<u64>) -> Result<i64, wit::Error> {
        with_engine(|e| e.incr(&key, delta, default, ttl_ms))
    }

    fn delete_prefix(prefix: String) -> Result<u64, wit::Error> {
        with_engine(|e| e.delete_prefix(&prefix))
    }

    fn expire() -> Result<u64, wit::Error> {
        with_engine(|e| Ok(e.expire()))
    }

    fn keys(prefix: String, after: Option<String>, limit: u32) -> Result<Vec<String>, wit::Error> {
        with_engine(|e| Ok(e.keys(&prefix, after.as_deref(), limit as usize)))
    }

    fn stats() -> Result<wit::CacheStats, wit::Error> {
        with_engine(|e| {
            let s = e.stats();
            Ok(wit::CacheStats {
                entries: s.entries,
                volume: s.volume,
                size_limit: s.size_limit,
                hits: s.hits,
                misses: s.misses,
                expired: s.expired,
                evicted: s.evicted,
            })
        })
    }

    fn close() -> Result<(), wit::Error> {
        match ENGINE.with_borrow_mut(Option::take) {
            Some(engine) => engine.close().map_err(to_wit),
            None => Err(wit::Error::NotOpen),
        }
    }
}

export!(Component);
