//! Host-side bindings for the guest's `cache-guest` world (generated from `wit/`) and their error mapping.

mod generated {
    wasmtime::component::bindgen!({
        world: "cache-guest",
        path: "../wit",
    });
}

pub(crate) use generated::exports::pcache::cache::cache::Guest as CacheExports;
pub(crate) use generated::pcache::cache::types::{
    CacheStats as GuestCounters, Error as GuestError, Expiry as GuestExpiry, IoKind,
    OpenOptions as GuestOpenOptions,
};
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
        assert!(matches!(
            Error::from(GuestError::InvalidKey("empty".into())),
            Error::InvalidKey(m) if m == "empty"
        ));
        assert!(matches!(
            Error::from(GuestError::ValueTooLarge(ValueTooLarge {
                size: 9,
                limit: 4
            })),
            Error::ValueTooLarge { size: 9, limit: 4 }
        ));
        assert!(matches!(
            Error::from(GuestError::Io(IoError { kind: IoKind::StorageFull, message: "disk full".into() })),
            Error::Io(e) if e.kind() == std::io::ErrorKind::StorageFull && e.to_string() == "disk full"
        ));
        assert!(matches!(Error::from(GuestError::ReadOnly), Error::ReadOnly));
        assert!(matches!(
            Error::from(GuestError::InvalidTtl("zero".into())),
            Error::InvalidTtl(m) if m == "zero"
        ));
        assert!(matches!(
            Error::from(GuestError::Corrupt("bad crc".into())),
            Error::Corrupt(m) if m == "bad crc"
        ));
        assert!(matches!(
            Error::from(GuestError::IncompatibleFormat("v9".into())),
            Error::IncompatibleFormat(m) if m == "v9"
        ));
        assert!(matches!(
            Error::from(GuestError::NotACounter("text".into())),
            Error::NotACounter(m) if m == "text"
        ));
        assert!(matches!(
            Error::from(GuestError::CounterOverflow("max".into())),
            Error::CounterOverflow(m) if m == "max"
        ));
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
