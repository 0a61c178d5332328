//! The wit-bindgen export: a thin shim from `pcache:cache/cache` to the engine.

use crate::clock::SystemClock;
use crate::engine::{Engine, EngineOptions};
use crate::error::Error;
use crate::storage::WasiStorage;
use std::cell::{Cell, RefCell};

wit_bindgen::generate!({
    world: "cache-guest",
    path: "../wit",
});

use exports::pcache::cache::cache::Guest;
use pcache::cache::types as wit;

type WasiEngine = Engine<WasiStorage, SystemClock>;

thread_local! {
    /// The one open cache of this instance.
    static ENGINE: RefCell<Option<WasiEngine>> = const { RefCell::new(None) };
    /// Whether the host enabled the fault-injection test hook at open.
    static FAULT_INJECTION: Cell<bool> = const { Cell::new(false) };
}

/// Keys starting with this are fault commands when the test hook is on (see `inject_fault`).
const FAULT_PREFIX: &str = "\u{0}pcache-fault:";

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
                SystemClock,
                EngineOptions {
                    size_limit: options.size_limit,
                    sync_writes: options.sync_writes,
                },
            )
            .map_err(to_wit)?;
            *slot = Some(engine);
            FAULT_INJECTION.set(options.fault_injection);
            Ok(())
        })
    }

    fn get(key: String) -> Result<Option<Vec<u8>>, wit::Error> {
        with_engine(|e| e.get(&key))
    }

    fn set(key: String, value: Vec<u8>, ttl_ms: Option<u64>) -> Result<(), wit::Error> {
        if FAULT_INJECTION.get() {
            if let Some(command) = key.strip_prefix(FAULT_PREFIX) {
                return inject_fault(command, &value);
            }
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

/// Runs a fault command of the test hook (only reachable when the host enabled it at open).
///
/// `trap` traps at once; `trap-after-set:KEY` stores `value` under KEY, then traps before
/// returning; `spin` loops forever (for the host's time limit); `grow-memory` allocates until the
/// host's memory limit stops it; `open-outside` tries to create the file named by `value` (UTF-8)
/// through every preopened directory and returns `io` listing the refusals, or `Ok` if any open
/// succeeded (a sandbox escape). Unknown commands are `invalid-key`.
fn inject_fault(command: &str, value: &[u8]) -> Result<(), wit::Error> {
    use wasip2::filesystem::preopens::get_directories;
    use wasip2::filesystem::types::{DescriptorFlags, OpenFlags, PathFlags};
    match command {
        "trap" => core::arch::wasm32::unreachable(),
        "spin" => {
            let mut n = 0u64;
            loop {
                n = std::hint::black_box(n.wrapping_add(1));
            }
        }
        "grow-memory" => {
            let mut hoard: Vec<Vec<u8>> = Vec::new();
            loop {
                hoard.push(std::hint::black_box(vec![1u8; 1 << 20]));
            }
        }
        "open-outside" => {
            let path = String::from_utf8_lossy(value).into_owned();
            let mut refusals = Vec::new();
            for (dir, name) in get_directories() {
                match dir.open_at(
                    PathFlags::SYMLINK_FOLLOW,
                    &path,
                    OpenFlags::CREATE,
                    DescriptorFlags::READ | DescriptorFlags::WRITE,
                ) {
                    Ok(_) => return Ok(()),
                    Err(code) => refusals.push(format!("{name}: {}", code.name())),
                }
            }
            Err(wit::Error::Io(format!(
                "opening {path:?} was refused by every preopen [{}]",
                refusals.join(", ")
            )))
        }
        other => match other.strip_prefix("trap-after-set:") {
            Some(key) => {
                with_engine(|e| e.set(key, value, None))?;
                core::arch::wasm32::unreachable()
            }
            None => Err(wit::Error::InvalidKey(format!(
                "unknown fault command {other:?}"
            ))),
        },
    }
}

export!(Component);
