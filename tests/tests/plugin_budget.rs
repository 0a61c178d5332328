//! Plugin stores are accounted for by the cache that runs the plugins: one budget for all of
//! them, shown by `stats`, and emptied by `clear`.

mod common;

use persistent_cache::{
    CacheOptions, Error, PersistentCache, Plugin, PluginExit, PluginFailure, PluginOptions,
};
use std::path::Path;

use common::{plugin_failure, probe};

async fn open(dir: &Path, budget: u64) -> PersistentCache {
    PersistentCache::open(CacheOptions::new(dir).plugin_budget(budget))
        .await
        .unwrap()
}

/// Runs the probe with `args`, its store limited to `store_limit`; the probe's output.
async fn run(cache: &PersistentCache, plugin: &Plugin, store_limit: u64, args: &[&str]) -> String {
    let options = PluginOptions::new()
        .args(args.iter().copied())
        .store_size_limit(store_limit);
    let exit: PluginExit = cache.run_plugin(plugin, options).await.unwrap();
    assert!(exit.success(), "{args:?}: {exit:?}");
    String::from_utf8(exit.stdout).unwrap()
}

#[tokio::test]
async fn plugin_stores_share_one_budget_show_in_stats_and_are_cleared() {
    let dir = tempfile::tempdir().unwrap();
    let mib = 1 << 20;
    let cache = open(dir.path(), mib).await;
    let (a, b) = (probe("a").await, probe("b").await);
    let big = "x".repeat(600 << 10);

    // Plugin a asks for a 4 MiB store and gets the 1 MiB budget; its 600 KiB value fits.
    assert_eq!(
        run(&cache, &a, 4 * mib, &["put", "s", "k", &big]).await,
        "put=ok\n"
    );
    let stats = cache.stats().await.unwrap();
    assert_eq!(stats.plugin_budget, mib);
    assert!(
        stats.plugin_volume > 600 << 10 && stats.plugin_volume <= mib,
        "plugin volume {}",
        stats.plugin_volume
    );
    // Plugin b gets what a left: the same value no longer fits in its store.
    let out = run(&cache, &b, 4 * mib, &["put", "s", "k", &big]).await;
    assert!(out.starts_with("put=err:"), "{out}");
    assert_eq!(
        run(&cache, &b, 4 * mib, &["put", "s", "small", "v"]).await,
        "put=ok\n"
    );
    let stats = cache.stats().await.unwrap();
    assert!(
        stats.plugin_volume <= mib,
        "over budget: {}",
        stats.plugin_volume
    );

    // clear empties the application's entries and every plugin's store.
    cache.set("app", &1).await.unwrap();
    cache.clear().await.unwrap();
    assert_eq!(cache.get::<i32>("app").await.unwrap(), None);
    assert_eq!(run(&cache, &a, mib, &["get", "s", "k"]).await, "get=none\n");
    assert_eq!(
        run(&cache, &b, mib, &["get", "s", "small"]).await,
        "get=none\n"
    );
    let stats = cache.stats().await.unwrap();
    assert!(stats.plugin_volume < 64 << 10, "{}", stats.plugin_volume);
    cache.close().await.unwrap();
}

#[tokio::test]
async fn a_plugin_does_not_run_without_room_in_the_budget() {
    let dir = tempfile::tempdir().unwrap();
    let cache = open(dir.path(), 16 << 10).await;
    let options = PluginOptions::new().args(["put", "s", "k", "v"]);
    match plugin_failure(cache.run_plugin(&probe("a").await, options).await) {
        (plugin, PluginFailure::Budget(why)) => {
            assert_eq!(plugin, "a");
            assert!(why.contains("plugin budget"), "{why}");
        }
        other => panic!("expected a budget failure, got {other:?}"),
    }
    cache.close().await.unwrap();
}

#[tokio::test]
async fn a_symlink_planted_under_plugins_is_not_followed() {
    let dir = tempfile::tempdir().unwrap();
    let outside = tempfile::tempdir().unwrap();
    let cache = open(dir.path(), 1 << 20).await;
    std::fs::create_dir(dir.path().join("plugins")).unwrap();
    std::os::unix::fs::symlink(outside.path(), dir.path().join("plugins").join("a")).unwrap();
    let options = PluginOptions::new().args(["put", "s", "k", "v"]);
    match cache.run_plugin(&probe("a").await, options).await {
        Err(Error::Directory { source, .. }) => {
            assert!(source.to_string().contains("symlink"), "{source}")
        }
        other => panic!("expected a directory error, got {other:?}"),
    }
    assert_eq!(std::fs::read_dir(outside.path()).unwrap().count(), 0);
    cache.close().await.unwrap();
}
