//! PersistentCache's storage engine: a size-limited LRU cache with TTL over one directory.
//!
//! The engine is a plain Rust library (tested natively); `component` (wasm32 only) exports it
//! as a WebAssembly component through the `pcache:cache` WIT interface.

pub mod counter;
pub mod engine;
pub mod error;
pub mod format;
pub mod index;
pub mod lru_table;
pub mod storage;
pub mod time;

#[cfg(target_arch = "wasm32")]
mod component;

pub use engine::{Engine, EngineOptions, EngineStats, Found, Maintenance};
pub use error::{Error, Result};
pub use time::{ManualTime, TimeSource, WallClock};
