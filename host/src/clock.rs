//! The clocks entry expiry is measured against: the system's, and a manual one for tests.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use parking_lot::Mutex;

/// A source of wall-clock time; entry expiry is measured against it.
pub trait Clock: Send + Sync + 'static {
    /// The current wall-clock time.
    fn now(&self) -> SystemTime;
}

/// The operating system's real-time clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> SystemTime {
        SystemTime::now()
    }
}

/// A clock that only moves when told to, for testing expiry.
///
/// Clones share the same time: keep one clone and hand another (or an `Arc` of it) to
/// [`CacheOptions::clock`].
#[derive(Debug, Clone)]
pub struct ManualClock {
    now: Arc<Mutex<SystemTime>>,
}

impl ManualClock {
    /// A clock that reads `start` until moved.
    pub fn new(start: SystemTime) -> Self {
        ManualClock {
            now: Arc::new(Mutex::new(start)),
        }
    }

    /// A clock that starts at the current system time.
    pub fn starting_now() -> Self {
        ManualClock::new(SystemTime::now())
    }

    /// Moves the clock forward by `by` (saturating at the largest representable time).
    pub fn advance(&self, by: Duration) {
        let mut now = self.now.lock();
        if let Some(later) = now.checked_add(by) {
            *now = later;
        }
    }

    /// Sets the clock to `time` (which may be earlier than the current reading).
    pub fn set(&self, time: SystemTime) {
        *self.now.lock() = time;
    }
}

impl Default for ManualClock {
    fn default() -> Self {
        ManualClock::starting_now()
    }
}

impl Clock for ManualClock {
    fn now(&self) -> SystemTime {
        *self.now.lock()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manual_clock_clones_share_time() {
        let clock = ManualClock::new(SystemTime::UNIX_EPOCH);
        let shared = clock.clone();
        clock.advance(Duration::from_millis(1500));
        assert_eq!(
            shared.now(),
            SystemTime::UNIX_EPOCH + Duration::from_millis(1500)
        );
        shared.set(SystemTime::UNIX_EPOCH);
        assert_eq!(clock.now(), SystemTime::UNIX_EPOCH);
    }
}
