//! Where the engine gets the time: milliseconds since the UNIX epoch.

use std::time::{SystemTime, UNIX_EPOCH};

/// Where the engine reads the time that TTLs are measured against.
pub trait TimeSource {
    /// Milliseconds since the UNIX epoch.
    fn now_ms(&self) -> u64;
}

/// The system's wall clock; inside the component this is `wasi:clocks/wall-clock`, which the
/// host may replace (tests drive TTLs with a manual clock that way).
#[derive(Clone, Copy, Debug, Default)]
pub struct WallClock;

impl TimeSource for WallClock {
    fn now_ms(&self) -> u64 {
        // A clock before 1970 reads as the epoch: entries then simply expire late, never early.
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0)
    }
}

/// Time that moves only when told to (native tests); clones share one reading.
#[derive(Clone, Debug, Default)]
pub struct ManualTime(std::rc::Rc<std::cell::Cell<u64>>);

impl ManualTime {
    /// Time standing at `now_ms`.
    pub fn at(now_ms: u64) -> Self {
        Self(std::rc::Rc::new(std::cell::Cell::new(now_ms)))
    }
    /// Moves the time forward by `ms` (for every clone).
    pub fn advance(&self, ms: u64) {
        self.0.set(self.0.get() + ms);
    }
}

impl TimeSource for ManualTime {
    fn now_ms(&self) -> u64 {
        self.0.get()
    }
}
