//! What `CacheOptions::sync(true)` costs: a measurement to run by hand, not a test (timings
//! are not asserted). Run it with
//! `cargo test --release -p persistent-cache-tests --test sync_cost -- --ignored --nocapture`.

use persistent_cache::{CacheOptions, Expiry, PersistentCache};
use std::time::Instant;

async fn sets_per_second(sync: bool, count: usize, value_len: usize) -> f64 {
    let dir = tempfile::tempdir().unwrap();
    let cache = PersistentCache::open(CacheOptions::new(dir.path()).sync(sync))
        .await
        .unwrap();
    let value = vec![7u8; value_len];
    // Warm up: the first calls compile nothing, but create the first segment.
    cache
        .set_raw("warm-up", &value, Expiry::Never)
        .await
        .unwrap();
    let started = Instant::now();
    for i in 0..count {
        cache
            .set_raw(&format!("key:{i}"), &value, Expiry::Never)
            .await
            .unwrap();
    }
    let rate = count as f64 / started.elapsed().as_secs_f64();
    cache.close().await.unwrap();
    rate
}

#[tokio::test]
#[ignore = "a measurement, run by hand"]
async fn measure_the_cost_of_sync() {
    for value_len in [100, 4096] {
        let fast = sets_per_second(false, 20_000, value_len).await;
        let durable = sets_per_second(true, 1_000, value_len).await;
        println!(
            "{value_len:>5}-byte values: sync(false) {fast:>9.0} sets/s, sync(true) {durable:>7.0} \
             sets/s, {:.0}x slower",
            fast / durable
        );
    }
}
