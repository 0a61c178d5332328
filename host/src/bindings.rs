//! Host-side bindings for the guest's `cache-guest` world (generated from `wit/`) and their error mapping.

mod generated {
    wasmtime::component::bindgen!({
        world: "cache-guest",
        path: "wit",
        // `value-reader.stage` borrows the guest's files: wasmtime-wasi's descriptors.
        with: {
            "wasi:filesystem/types": wasmtime_wasi::p2::bindings::sync::filesystem::types,
            "wasi:io": wasmtime_wasi::p2::bindings::sync::io,
            "wasi:clocks": wasmtime_wasi::p2::bindings::clocks,
        },
    });
}

pub(crate) use generated::exports::pcache::cache::cache::{
    Guest as CacheExports, ValueSource as GuestValueSource,
};
pub(crate) use generated::pcache::cache::types::{
    CacheStats as GuestCounters, Error as GuestError, Expiry as GuestExpiry, IoKind,
    Maintenance as GuestMaintenance, OpenOptions as GuestOpenOptions,
};
pub(crate) use generated::pcache::cache::value_reader;
pub(crate) use generated::{CacheGuest, CacheGuestPre};

use crate::error::Error;

impl From<GuestError> for Error {
    fn from(err: GuestError) -> Self {
        match err {
            GuestError::InvalidKey(message) => Error::InvalidKey(message),
            GuestError::ValueTooLarge(details) => Error::ValueTooLarge {
                size: details.size,
                limit: details.limit,
            },
            GuestError::InvalidTtl(message) => Error::InvalidTtl(message),
            GuestError::Io(io) => Error::Io(std::io::Error::new(io_kind(io.kind), io.message)),
            GuestError::ReadOnly => Error::ReadOnly,
            // Handled by `GuestInstance::finish` (a refused non-blocking call is run again).
            GuestError::WouldBlock => Error::Wasm("the engine refused slow work".into()),
            // Both are handled by `GuestSupervisor` (the lock is taken, the guest reopened);
            // seen here only if the host broke its own protocol.
            GuestError::NeedsLock => Error::Wasm(
                "the engine refused a write made without the directory's write lock".into(),
            ),
            GuestError::Stale => Error::Wasm("the engine's view of the shared log is stale".into()),
            GuestError::Corrupt(message) => Error::Corrupt(message),
            GuestError::IncompatibleFormat(message) => Error::IncompatibleFormat(message),
            GuestError::NotACounter(message) => Error::NotACounter(message),
            GuestError::CounterOverflow(message) => Error::CounterOverflow(message),
        }
    }
}

/// The `std::io::ErrorKind` of a guest `io-kind`.
fn io_kind(kind: IoKind) -> std::io::ErrorKind {
    use std::io::ErrorKind;
    match kind {
        IoKind::NotFound => ErrorKind::NotFound,
        IoKind::PermissionDenied => ErrorKind::PermissionDenied,
        IoKind::AlreadyExists => ErrorKind::AlreadyExists,
        IoKind::StorageFull => ErrorKind::StorageFull,
        IoKind::FileTooLarge => ErrorKind::FileTooLarge,
        IoKind::Other => ErrorKind::Other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use generated::pcache::cache::types::{IoError, ValueTooLarge};

    #[test]
    fn guest_errors_map_to_matching_variants() {
        let io = IoError {
            kind: IoKind::StorageFull,
            message: "disk full".into(),
        };
        // Each guest error becomes the host variant of the same name, with its details.
        type Make = fn(String) -> GuestError;
        let with_message: [(Make, &str); 6] = [
            (GuestError::InvalidKey, "InvalidKey"),
            (GuestError::InvalidTtl, "InvalidTtl"),
            (GuestError::Corrupt, "Corrupt"),
            (GuestError::IncompatibleFormat, "IncompatibleFormat"),
            (GuestError::NotACounter, "NotACounter"),
            (GuestError::CounterOverflow, "CounterOverflow"),
        ];
        for (guest, name) in with_message {
            let host = Error::from(guest("why".to_owned()));
            assert_eq!(format!("{host:?}"), format!("{name}(\"why\")"));
        }
        let too_large = GuestError::ValueTooLarge(ValueTooLarge { size: 9, limit: 4 });
        assert!(matches!(
            Error::from(too_large),
            Error::ValueTooLarge { size: 9, limit: 4 }
        ));
        assert!(matches!(Error::from(GuestError::ReadOnly), Error::ReadOnly));
        // An I/O error keeps its kind.
        match Error::from(GuestError::Io(io)) {
            Error::Io(err) => {
                assert_eq!(err.kind(), std::io::ErrorKind::StorageFull);
                assert_eq!(err.to_string(), "disk full");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn value_too_large_message_names_both_sizes() {
        let message = Error::from(GuestError::ValueTooLarge(ValueTooLarge {
            size: 2048,
            limit: 1024,
        }))
        .to_string();
        assert!(
            message.contains("2048") && message.contains("1024"),
            "{message}"
        );
    }
}
