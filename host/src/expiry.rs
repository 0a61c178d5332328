//! `Expiry`: when an entry expires — the one TTL rule of every operation, flag and variable.

use std::time::Duration;

use crate::bindings::GuestExpiry;

/// When an entry expires. Every operation that takes a TTL takes one of these, with the same
/// meaning everywhere (Rust, WIT, `pcache` flags and REPL):
///
/// - [`Expiry::Default`]: the cache's default TTL ([`CacheOptions::default_ttl`], or
///   `CACHE_CONTENT_TTL`); never, if none is configured.
/// - [`Expiry::Never`]: the entry does not expire.
/// - [`Expiry::After`]: the entry expires that long from now, rounded up to whole milliseconds.
///   A zero duration is refused with [`Error::InvalidTtl`](crate::Error::InvalidTtl): to keep an
///   entry forever say `Never`, to remove it call `delete`.
///
/// A [`Duration`] converts into `After`, so `set_with_ttl(key, &v, Duration::from_secs(60))`
/// and `set_with_ttl(key, &v, Expiry::Never)` both work.
///
/// [`CacheOptions::default_ttl`]: crate::CacheOptions::default_ttl
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum Expiry {
    /// The cache's default TTL; never, if it has none.
    #[default]
    Default,
    /// Never expires.
    Never,
    /// Expires this long from now (at least 1 ms; zero is an error).
    After(Duration),
}

impl From<Duration> for Expiry {
    fn from(ttl: Duration) -> Self {
        Expiry::After(ttl)
    }
}

impl Expiry {
    /// A TTL in whole milliseconds, rounded up so a sub-millisecond TTL is not zero.
    pub(crate) fn millis(ttl: Duration) -> u64 {
        let rounded_up = ttl.as_nanos().div_ceil(1_000_000);
        u64::try_from(rounded_up).unwrap_or(u64::MAX)
    }

    /// The WIT form.
    pub(crate) fn to_wit(self) -> GuestExpiry {
        match self {
            Expiry::Default => GuestExpiry::Default,
            Expiry::Never => GuestExpiry::Never,
            Expiry::After(ttl) => GuestExpiry::AfterMs(Expiry::millis(ttl)),
        }
    }
}

impl std::str::FromStr for Expiry {
    type Err = String;

    /// Parses a TTL as the `--ttl` flag and the REPL take it: `never`, `default`, a number of
    /// seconds (`300`) or a duration (`5m`, `1h 30m`, `250ms`; humantime's syntax).
    ///
    /// Edge cases: `0` (or any zero duration) is refused, naming `never`; an empty string and
    /// anything else that does not parse is refused, quoting it.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let text = text.trim();
        match text {
            "never" => return Ok(Expiry::Never),
            "default" => return Ok(Expiry::Default),
            _ => {}
        }
        let ttl = parse_duration(text)?;
        if ttl.is_zero() {
            return Err(format!(
                "a TTL must be longer than zero, got {text:?} (use \"never\" for no expiry)"
            ));
        }
        Ok(Expiry::After(ttl))
    }
}

/// A duration as seconds (`300`) or in humantime's syntax (`5m`, `300s`, `1h 30m`).
///
/// Edge cases: a bare number is seconds; an empty or malformed string is an error quoting it.
pub(crate) fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    if let Ok(seconds) = text.parse::<u64>() {
        return Ok(Duration::from_secs(seconds));
    }
    humantime::parse_duration(text).map_err(|err| {
        format!("expected seconds or a duration like 5m, 300s or 1h 30m, got {text:?}: {err}")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ttl_rounds_up_to_milliseconds() {
        assert_eq!(Expiry::millis(Duration::ZERO), 0);
        assert_eq!(Expiry::millis(Duration::from_nanos(1)), 1);
        assert_eq!(Expiry::millis(Duration::from_millis(1500)), 1500);
        assert_eq!(Expiry::millis(Duration::from_micros(1500)), 2);
        assert_eq!(Expiry::millis(Duration::MAX), u64::MAX);
    }

    #[test]
    fn ttl_text_parses_one_way() {
        let parse = |t: &str| t.parse::<Expiry>();
        assert_eq!(parse("never"), Ok(Expiry::Never));
        assert_eq!(parse("default"), Ok(Expiry::Default));
        assert_eq!(parse("300"), Ok(Expiry::After(Duration::from_secs(300))));
        assert_eq!(parse("300s"), Ok(Expiry::After(Duration::from_secs(300))));
        assert_eq!(parse("5m"), Ok(Expiry::After(Duration::from_secs(300))));
        assert_eq!(
            parse(" 1h 30m "),
            Ok(Expiry::After(Duration::from_secs(5400)))
        );
        assert_eq!(
            parse("250ms"),
            Ok(Expiry::After(Duration::from_millis(250)))
        );
        for zero in ["0", "0s", "0ms"] {
            let err = parse(zero).unwrap_err();
            assert!(err.contains("never"), "{zero}: {err}");
        }
        for junk in ["", "soon", "-5", "1.5"] {
            assert!(parse(junk).is_err(), "{junk:?} parsed");
        }
    }
}
