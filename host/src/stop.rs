//! Why a store's call stops: epoch deadlines, the guest's memory limiter, limits hit in host
//! calls, and how a failed call is classified into `TimeLimit`, `MemoryLimit` or `Wasm`.

use std::time::Duration;

use wasmtime::{ResourceLimiter, StoreLimits, StoreLimitsBuilder, Trap};

use crate::epoch::EPOCH_TICK;
use crate::error::Error;

/// Epoch ticks that cover `limit`, rounded up, plus one for the tick already under way.
pub(crate) fn deadline_ticks(limit: Duration) -> u64 {
    if limit.is_zero() {
        return 0;
    }
    let ticks = limit.as_nanos().div_ceil(EPOCH_TICK.as_nanos()) + 1;
    u64::try_from(ticks).unwrap_or(u64::MAX)
}

/// Raised (as a trap) when the guest asks for more linear memory than its limit.
#[derive(Debug)]
struct MemoryLimitHit {
    desired: usize,
    limit: u64,
}

impl std::fmt::Display for MemoryLimitHit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "the guest asked for {} bytes of memory; its limit is {} bytes",
            self.desired, self.limit
        )
    }
}

impl std::error::Error for MemoryLimitHit {}

/// The guest's memory and table limits: wasmtime's [`StoreLimits`], except that a growth past
/// the memory limit traps with [`MemoryLimitHit`] (so the caller gets `Error::MemoryLimit`)
/// instead of failing the allocation, which the guest would turn into an opaque abort.
pub(crate) struct GuestLimiter {
    limits: StoreLimits,
    memory_limit: u64,
}

impl GuestLimiter {
    pub(crate) fn new(memory_limit: u64) -> Self {
        let bytes = usize::try_from(memory_limit).unwrap_or(usize::MAX);
        GuestLimiter {
            limits: StoreLimitsBuilder::new().memory_size(bytes).build(),
            memory_limit,
        }
    }
}

impl ResourceLimiter for GuestLimiter {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if u64::try_from(desired).map_or(true, |d| d > self.memory_limit) {
            return Err(wasmtime::Error::new(MemoryLimitHit {
                desired,
                limit: self.memory_limit,
            }));
        }
        self.limits.memory_growing(current, desired, maximum)
    }

    fn table_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        self.limits.table_growing(current, desired, maximum)
    }

    fn instances(&self) -> usize {
        self.limits.instances()
    }

    fn tables(&self) -> usize {
        self.limits.tables()
    }

    fn memories(&self) -> usize {
        self.limits.memories()
    }
}

/// The error for a failed guest call: `TimeLimit` for an epoch interruption, `MemoryLimit` for
/// a memory growth past the limit, `Wasm` for any other trap or runtime failure.
pub(crate) fn limit_error(err: &wasmtime::Error, time_limit: Duration, memory_limit: u64) -> Error {
    match Stop::of(err) {
        Stop::TimeLimit => Error::TimeLimit { limit: time_limit },
        Stop::MemoryLimit => Error::MemoryLimit {
            limit: memory_limit,
        },
        Stop::Other => Error::wasm(err),
    }
}

/// Why a store's call was abandoned: its epoch deadline, its memory limit, or anything else.
pub(crate) enum Stop {
    TimeLimit,
    MemoryLimit,
    Other,
}

/// Raised (as a trap) by host code serving a store that finds the store past one of its
/// limits: its deadline passed during a host call, or a host call would make the host hold
/// more memory than the store may cause (the message says what).
#[derive(Debug)]
pub(crate) enum HostLimitHit {
    Time,
    Memory(String),
}

impl std::fmt::Display for HostLimitHit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HostLimitHit::Time => f.write_str("the time limit passed during a host call"),
            HostLimitHit::Memory(what) => f.write_str(what),
        }
    }
}

impl std::error::Error for HostLimitHit {}

impl Stop {
    /// Classifies a failed call (of the cache guest or of a plugin).
    pub(crate) fn of(err: &wasmtime::Error) -> Stop {
        let host = err
            .chain()
            .find_map(|cause| cause.downcast_ref::<HostLimitHit>());
        if err.downcast_ref::<Trap>() == Some(&Trap::Interrupt)
            || matches!(host, Some(HostLimitHit::Time))
        {
            Stop::TimeLimit
        } else if err.chain().any(|cause| cause.is::<MemoryLimitHit>())
            || matches!(host, Some(HostLimitHit::Memory(_)))
        {
            Stop::MemoryLimit
        } else {
            Stop::Other
        }
    }
}
