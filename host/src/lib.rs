//! PersistentCache: a persistent, size-limited LRU cache with per-entry TTLs, whose storage
//! engine runs as a sandboxed WebAssembly component (see `guest/`) that can only touch the
//! cache directory.
//!
//! ```no_run
//! # async fn demo() -> persistent_cache::Result<()> {
//! use persistent_cache::{CacheOptions, PersistentCache};
//! use std::time::Duration;
//!
//! let cache = PersistentCache::open(CacheOptions::new("tmp/cache")).await?;
//! cache.set_with_ttl("greeting", "hello", Duration::from_secs(60)).await?;
//! let greeting: Option<String> = cache.get("greeting").await?;
//! assert_eq!(greeting.as_deref(), Some("hello"));
//! cache.close().await?;
//! # Ok(())
//! # }
//! ```

mod bindings;
mod blocking;
mod cache;
mod clock;
mod codec;
mod compiled;
mod env;
mod epoch;
mod error;
mod expiry;
mod instance;
mod layout;
mod log_sync;
mod ops;
mod options;
mod plugin;
mod remote;
mod runtime;
mod settings;
mod shared;
mod sharing;
mod single_flight;
mod stop;
mod value_reader;
mod wasi_fs;
mod wasi_io;
mod worker;

pub use blocking::BlockingCache;
pub use cache::PersistentCache;
pub use clock::{Clock, ManualClock, SystemClock};
pub use compiled::{CodeCache, MAX_COMPONENT_BYTES};
pub use env::{
    env_lookup, parse_size, ENV_CONTENT_TTL, ENV_DIRECTORY, ENV_REDIS_URL, ENV_SEARCH_TTL,
    ENV_SIZE_LIMIT,
};
pub use error::{Error, PluginFailure, Result};
pub use expiry::Expiry;
pub use layout::{DATA_DIRECTORY, LOCK_FILE_NAME};
pub use ops::Stats;
pub use options::{
    CacheOptions, DEFAULT_DIRECTORY, DEFAULT_MAX_STALENESS, DEFAULT_PLUGIN_BUDGET,
    DEFAULT_SIZE_LIMIT,
};
pub use plugin::{Plugin, PluginExit, PluginOptions, MIN_PLUGIN_STORE, PLUGINS_DIRECTORY};
pub use remote::RemoteStatus;
pub use settings::SETTINGS_FILE_NAME;
pub use sharing::WRITE_LOCK_FILE_NAME;
pub use single_flight::GetOrSetError;

/// What the workspace's own tests need from the build; not a stable API. The test components
/// and plugins are not here: `persistent-cache-tests` builds them (`persistent_cache_tests::
/// {PROBE_PLUGIN, WORDFREQ_PLUGIN, FAULT_INJECTION_COMPONENT}`), so this crate carries none.
#[doc(hidden)]
pub mod test_support {
    /// The guest component this crate embeds (the same bytes it runs).
    pub fn guest_component() -> &'static [u8] {
        crate::compiled::EMBEDDED_COMPONENT
    }

    #[cfg(test)]
    mod tests {
        use super::guest_component;

        /// The names of the custom sections of every core module in a component (or module).
        fn custom_sections(mut bytes: &[u8], names: &mut Vec<String>) {
            let header = bytes.get(..8).expect("a wasm header");
            let is_component = header[4..] != [1, 0, 0, 0];
            bytes = &bytes[8..];
            while let Some((&id, rest)) = bytes.split_first() {
                let (size, rest) = leb128(rest);
                let (section, rest) = rest.split_at(size);
                match (is_component, id) {
                    (_, 0) => {
                        let (len, name) = leb128(section);
                        names.push(String::from_utf8_lossy(&name[..len]).into_owned());
                    }
                    // A core module or a nested component.
                    (true, 1 | 4) => custom_sections(section, names),
                    _ => {}
                }
                bytes = rest;
            }
        }

        fn leb128(bytes: &[u8]) -> (usize, &[u8]) {
            let (mut value, mut shift) = (0usize, 0);
            for (i, byte) in bytes.iter().enumerate() {
                value |= usize::from(byte & 0x7f) << shift;
                shift += 7;
                if byte & 0x80 == 0 {
                    return (value, &bytes[i + 1..]);
                }
            }
            panic!("truncated LEB128");
        }

        /// Built with DWARF (`PCACHE_GUEST_DEBUG=1`), the component is as large as it was.
        fn debug_build() -> bool {
            env!("PCACHE_GUEST_PROFILE") == "pcache-component-debug"
        }

        #[test]
        fn the_embedded_component_is_small_and_carries_no_dwarf() {
            let component = guest_component();
            let mut sections = Vec::new();
            custom_sections(component, &mut sections);
            if debug_build() {
                assert!(sections.iter().any(|name| name.starts_with(".debug_")));
                return;
            }
            // 3.7 MB with DWARF (3.4 MB of it), 294 KiB without (issue 12). The bound leaves
            // room for the engine to grow; DWARF, or an unoptimised build, is far over it.
            assert!(
                component.len() <= 512 << 10,
                "the embedded component is {} bytes",
                component.len()
            );
            let dwarf: Vec<_> = sections
                .iter()
                .filter(|n| n.starts_with(".debug_"))
                .collect();
            assert!(dwarf.is_empty(), "DWARF sections: {dwarf:?}");
        }

        #[test]
        fn the_embedded_component_keeps_function_names() {
            // The `name` section, which names guest functions in trap backtraces.
            let mut sections = Vec::new();
            custom_sections(guest_component(), &mut sections);
            assert!(
                sections.iter().any(|name| name == "name"),
                "custom sections: {sections:?}"
            );
        }
    }
}

/// Every Rust example in the README runs as a doctest.
#[doc = include_str!("../../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;

/// And every one in `docs/usage.md` (the plugin guide's run from the `tests` crate).
#[doc = include_str!("../../docs/usage.md")]
#[cfg(doctest)]
pub struct UsageDoctests;
