//! The end-to-end tests' artifacts, built for `wasm32-wasip2` by this package's build script:
//! test components and plugins that the published `persistent-cache` does not carry. Used by
//! the tests here and, as a dev-dependency, by those of `persistent-cache`.

pub mod redis_server;

/// The example plugin (`examples/wordfreq`).
pub const WORDFREQ_PLUGIN: &str = env!("PCACHE_WORDFREQ_PLUGIN_WASM");

/// The test probe plugin (`tests/probe-plugin`).
pub const PROBE_PLUGIN: &str = env!("PCACHE_PROBE_PLUGIN_WASM");

/// A test build of the guest component (its `fault-injection` feature); open a cache on it
/// with `CacheOptions::component(Some(FAULT_INJECTION_COMPONENT.into()))`.
///
/// In it, `set` of a key starting with `"\0pcache-fault:"` runs a fault command instead of
/// storing (`trap`, `trap-after-set:KEY`, `spin`, `grow-memory`, `open-outside` with the path
/// as the value; anything else is `InvalidKey`); every other key behaves as in the released
/// component, which has no such hook.
pub const FAULT_INJECTION_COMPONENT: &str = env!("PCACHE_FAULT_INJECTION_GUEST_WASM");

/// The Rust examples of `docs/plugins.md` run as doctests (they load [`WORDFREQ_PLUGIN`]).
#[doc = include_str!("../../docs/plugins.md")]
#[cfg(doctest)]
pub struct PluginDocs;
