//! Where the engine gets the time: milliseconds since the UNIX epoch.

use std::time::{SystemTime, UNIX_EPOCH};

/// A source of wall-clock time for TTLs.
pub trait Clock {
    /// Milliseconds since the UNIX epoch.
    fn now_ms(&self) -> u64;
}

/// The system's wall clock; inside the component this is `wasi:clocks/wall-clock`, which the
/// host may replace (tests drive TTLs with a manual clock that way).
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> u64 {
        // A clock before 1970 reads as the epoch: entries then simply expire late, never early.
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0)
    }
}

/// A clock that moves only when told to (native tests).
#[derive(Clone, Debug, Default)]
pub struct ManualClock(std::rc::Rc<std::cell::Cell<u64>>);

impl ManualClock {
    /// A clock reading `now_ms`.
    pub fn at(now_ms: u64) -> Self {
        Self(std::rc::Rc::new(std::cell::Cell::new(now_ms)))
    }
    /// Moves the clock forward by `ms`.
    pub fn advance(&self, ms: u64) {
        self.0.set(self.0.get() + ms);
    }
}

impl Clock for ManualClock {
    fn now_ms(&self) -> u64 {
        self.0.get()
    }
}
