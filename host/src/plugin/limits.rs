//! What one plugin run may make the host hold, and until when: its deadline, reply sizes, CAS bytes.

use std::time::{Duration, Instant};

use wasmtime::component::ResourceTableError;

use crate::stop::HostLimitHit;

/// Most resources (buckets, CAS handles, WASI streams, ...) a plugin may hold at once; past it
/// the plugin is stopped at its memory limit.
pub(crate) const MAX_RESOURCES: usize = 4096;

/// Host memory one element of a `get-many` reply takes besides its key and value bytes.
pub(crate) const REPLY_ENTRY_BYTES: usize = std::mem::size_of::<Option<(String, Vec<u8>)>>();

/// The limits of one plugin run that host code enforces (wasm code is stopped by the epoch
/// deadline and the memory limiter).
pub(crate) struct RunLimits {
    /// `None`: the time limit is too long to be a point in time, i.e. none.
    deadline: Option<Instant>,
    memory_limit: u64,
    /// Bytes the live CAS handles hold.
    held: u64,
}

impl RunLimits {
    /// Limits for a run that starts now with `time_limit` and `memory_limit`.
    ///
    /// Edge cases: a zero time limit has already passed; one too long to add to now (e.g.
    /// `Duration::MAX`) never passes.
    pub(crate) fn starting_now(time_limit: Duration, memory_limit: u64) -> RunLimits {
        RunLimits {
            deadline: Instant::now().checked_add(time_limit),
            memory_limit,
            held: 0,
        }
    }

    /// A trap classified as the time limit once the deadline has passed; called at the start
    /// of every host call and in every host loop, where the epoch deadline cannot fire.
    pub(crate) fn check_time(&self) -> wasmtime::Result<()> {
        match self.deadline {
            Some(deadline) if Instant::now() >= deadline => {
                Err(wasmtime::Error::new(HostLimitHit::Time))
            }
            _ => Ok(()),
        }
    }

    /// Time left until the deadline (`None`: no deadline; zero once it passed).
    pub(crate) fn remaining(&self) -> Option<Duration> {
        self.deadline
            .map(|deadline| deadline.saturating_duration_since(Instant::now()))
    }

    /// A counter for the bytes of one reply, capped at the memory limit (a reply the plugin's
    /// memory could not hold anyway).
    pub(crate) fn reply(&self) -> Reply {
        Reply {
            bytes: 0,
            cap: self.memory_limit,
        }
    }

    /// Counts `bytes` more held by CAS handles; a trap classified as the memory limit once
    /// they would hold more than the memory limit in all (nothing is counted then).
    pub(crate) fn hold(&mut self, bytes: usize) -> wasmtime::Result<()> {
        let held = self.held.saturating_add(bytes as u64);
        if held > self.memory_limit {
            return Err(wasmtime::Error::new(HostLimitHit::Memory(format!(
                "the plugin's CAS handles would hold {held} bytes; its memory limit is {} bytes",
                self.memory_limit
            ))));
        }
        self.held = held;
        Ok(())
    }

    /// Forgets `bytes` held by a CAS handle that is gone.
    pub(crate) fn release(&mut self, bytes: usize) {
        self.held = self.held.saturating_sub(bytes as u64);
    }
}

/// The bytes one host call is about to return to the plugin.
pub(crate) struct Reply {
    bytes: u64,
    cap: u64,
}

impl Reply {
    /// Bytes the reply may still grow by before it passes the cap.
    pub(crate) fn left(&self) -> u64 {
        self.cap.saturating_sub(self.bytes)
    }

    /// Adds `bytes` to the reply; a trap classified as the memory limit once it passes the
    /// cap, so the caller stops before building more.
    pub(crate) fn add(&mut self, bytes: usize) -> wasmtime::Result<()> {
        self.bytes = self.bytes.saturating_add(bytes as u64);
        if self.bytes > self.cap {
            return Err(wasmtime::Error::new(HostLimitHit::Memory(format!(
                "a keyvalue reply of more than {} bytes, the plugin's memory limit",
                self.cap
            ))));
        }
        Ok(())
    }
}

/// True when wasmtime refused to let the plugin make the host hold more: the plugin's resource
/// table is full ([`MAX_RESOURCES`]), the store's handle limit is reached, or one call tried to
/// copy more data into the host than its hostcall fuel (set to the memory limit). wasmtime 48
/// gives only the first a type of its own; the others are recognised by their messages.
pub(crate) fn refused_by_wasmtime(err: &wasmtime::Error) -> bool {
    err.chain().any(|cause| {
        if let Some(table) = cause.downcast_ref::<ResourceTableError>() {
            return matches!(table, ResourceTableError::Full);
        }
        let message = cause.to_string();
        message.contains("store handle limit exceeded")
            || message.contains("fuel allocated for hostcalls has been exhausted")
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stop::Stop;

    #[test]
    fn replies_and_held_bytes_stop_past_the_memory_limit() {
        let mut limits = RunLimits::starting_now(Duration::from_secs(60), 100);
        let mut reply = limits.reply();
        assert!(reply.add(60).is_ok() && reply.add(40).is_ok());
        let past = reply.add(1).unwrap_err();
        assert!(matches!(Stop::of(&past), Stop::MemoryLimit), "{past}");

        assert!(limits.hold(70).is_ok());
        let past = limits.hold(31).unwrap_err();
        assert!(matches!(Stop::of(&past), Stop::MemoryLimit), "{past}");
        limits.release(70);
        assert!(limits.hold(100).is_ok(), "released bytes are free again");
    }

    #[test]
    fn deadlines_pass_and_endless_limits_do_not() {
        let passed = RunLimits::starting_now(Duration::ZERO, 1).check_time();
        assert!(matches!(Stop::of(&passed.unwrap_err()), Stop::TimeLimit));
        assert!(RunLimits::starting_now(Duration::MAX, 1)
            .check_time()
            .is_ok());
        assert!(RunLimits::starting_now(Duration::from_secs(60), 1)
            .check_time()
            .is_ok());
    }

    #[test]
    fn wasmtime_refusals_are_recognised() {
        let full = wasmtime::Error::from(ResourceTableError::Full).context("pushing");
        assert!(refused_by_wasmtime(&full));
        assert!(!refused_by_wasmtime(&wasmtime::Error::from(
            ResourceTableError::NotPresent
        )));
        assert!(!refused_by_wasmtime(&wasmtime::Error::msg("unreachable")));
    }
}
