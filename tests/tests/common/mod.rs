//! What the end-to-end tests share: opening a cache, the `cache-child` process, the probe
//! plugin, and the failure of a plugin call.

// Each test file uses a part of this module.
#![allow(dead_code)]

use std::path::Path;
use std::process::Command;
use std::sync::Arc;

use persistent_cache::{CacheOptions, Error, ManualClock, PersistentCache, Plugin, PluginFailure};
use persistent_cache_tests::PROBE_PLUGIN;

/// The cache in `dir` with the default options.
pub async fn open(dir: &Path) -> PersistentCache {
    PersistentCache::open(CacheOptions::new(dir)).await.unwrap()
}

/// The cache in `dir`, reading the time from `clock`.
pub async fn open_with_clock(dir: &Path, clock: &Arc<ManualClock>) -> PersistentCache {
    let options = CacheOptions::new(dir).clock(clock.clone());
    PersistentCache::open(options).await.unwrap()
}

/// The cache in `dir`, reading the time from `clock`, whose default TTL is `ttl`.
pub async fn open_with_default_ttl(
    dir: &Path,
    clock: &Arc<ManualClock>,
    ttl: std::time::Duration,
) -> PersistentCache {
    let options = CacheOptions::new(dir)
        .clock(clock.clone())
        .default_ttl(Some(ttl));
    PersistentCache::open(options).await.unwrap()
}

/// `cache-child`: the cache in another process (see `src/bin/cache-child.rs` for its commands).
pub fn child() -> Command {
    Command::new(env!("CARGO_BIN_EXE_cache-child"))
}

/// The probe plugin, loaded under `name` (its namespace).
pub async fn probe(name: &str) -> Plugin {
    let bytes = std::fs::read(PROBE_PLUGIN).unwrap();
    Plugin::from_bytes(name, bytes, None).await.unwrap()
}

/// The plugin's name and the failure of a call that must fail with [`Error::Plugin`].
pub fn plugin_failure<T: std::fmt::Debug>(
    result: persistent_cache::Result<T>,
) -> (String, PluginFailure) {
    match result {
        Err(Error::Plugin { plugin, failure }) => (plugin, failure),
        other => panic!("expected a plugin failure, got {other:?}"),
    }
}
