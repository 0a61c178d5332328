//! Host-side bindings for the guest's `cache-guest` world (generated from `wit/`) and their error mapping.

mod generated {
    wasmtime::component::bindgen!({
        world: "cache-guest",
        path: "../wit",
    });
}

pub(crate) use generated::exports::pcache::cache::cache::Guest as CacheExports;
pub(crate) use generated::pcache::cache::types::{
    CacheStats as GuestCounters, Error as GuestError, OpenOptions as GuestOpenOptions,
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
            GuestError::Io(message) => Error::Io(message),
            GuestError::Corrupt(message) => Error::Corrupt(message),
            GuestError::IncompatibleFormat(message) => Error::IncompatibleFormat(message),
            GuestError::NotOpen => Error::Closed,
            GuestError::AlreadyOpen => {
                Error::Wasm("the guest reported `already-open`: it was opened twice".to_owned())
            }
            GuestError::NotACounter(message) => Error::NotACounter(message),
            GuestError::CounterOverflow(message) => Error::CounterOverflow(message),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use generated::pcache::cache::types::ValueTooLarge;

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
            Error::from(GuestError::Io("disk full".into())),
            Error::Io(m) if m == "disk full"
        ));
        assert!(matches!(
            Error::from(GuestError::Corrupt("bad crc".into())),
            Error::Corrupt(m) if m == "bad crc"
        ));
        assert!(matches!(
            Error::from(GuestError::IncompatibleFormat("v9".into())),
            Error::IncompatibleFormat(m) if m == "v9"
        ));
        assert!(matches!(Error::from(GuestError::NotOpen), Error::Closed));
        assert!(matches!(
            Error::from(GuestError::NotACounter("text".into())),
            Error::NotACounter(m) if m == "text"
        ));
        assert!(matches!(
            Error::from(GuestError::CounterOverflow("max".into())),
            Error::CounterOverflow(m) if m == "max"
        ));
        assert!(matches!(
            Error::from(GuestError::AlreadyOpen),
            Error::Wasm(_)
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
