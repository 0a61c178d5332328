//! PersistentCache's storage engine: a size-limited LRU cache with TTL over one directory.
//!
//! The engine is a plain Rust library (tested natively); [`component`] exports it as a
//! WebAssembly component through the `pcache:cache` WIT interface.

pub mod clock;
pub mod counter;
pub mod engine;
pub mod error;
pub mod format;
pub mod index;
pub mod lru_table;
pub mod storage;

#[cfg(target_arch = "wasm32")]
mod component;

pub use clock::{Clock, ManualClock, SystemClock};
pub use engine::{Engine, EngineOptions, Stats, DEFAULT_SIZE_LIMIT};
pub use error::{Error, Result};
