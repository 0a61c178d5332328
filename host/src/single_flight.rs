//! Single-flight get-or-compute: concurrent misses of one key run one computation.

/// The computations in progress, by key; shared by every handle to one directory.
#[derive(Default)]
pub(crate) struct Flights {}
