//! Power cuts through the real component's WASI path: a workload runs on the engine natively
//! over the simulated disk (`storage::sim`), crash images are taken after storage operations,
//! and each image is written out as a real cache directory and recovered by the real component
//! in the real host. The component must recover exactly what the native engine recovers from
//! the same image — which `guest/tests/engine/power_cut.rs` checks against the durability
//! oracle for thousands of cuts — and every key the last flush held must be there.
//!
//! `PCACHE_POWER_CUTS_WASI=N` sets the number of images (default 200).

use persistent_cache::{CacheOptions, Expiry, PersistentCache, DATA_DIRECTORY};
use persistent_cache_guest::storage::sim::SimStorage;
use persistent_cache_guest::storage::{Storage, StorageFile};
use persistent_cache_guest::{Engine, EngineOptions, ManualTime};
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

const LIMIT: u64 = 64 * 1024;

/// The image's files (top level only: `damaged/` is never read) written into `dir`.
fn materialize(image: &SimStorage, dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    for name in image.list().unwrap() {
        let file = image.open_read_only(&name).unwrap();
        let mut bytes = vec![0; file.size().unwrap() as usize];
        file.read_exact_at(&mut bytes, 0).unwrap();
        std::fs::write(dir.join(&name), bytes).unwrap();
    }
}

/// What the native engine recovers from `image`: every key with its value.
fn native_recovery(image: SimStorage, keys: &[String]) -> BTreeMap<String, Vec<u8>> {
    let options = EngineOptions {
        size_limit: LIMIT,
        ..EngineOptions::default()
    };
    // The component reads the wall clock; no TTLs here, so any fixed time will do.
    let mut e = Engine::open(image, ManualTime::at(1_700_000_000_000), options).unwrap();
    keys.iter()
        .filter_map(|k| e.get(k).unwrap().map(|v| (k.clone(), v)))
        .collect()
}

#[tokio::test]
async fn the_component_recovers_power_cut_images_as_the_native_engine_does() {
    let images: usize = std::env::var("PCACHE_POWER_CUTS_WASI")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200);
    let keys: Vec<String> = (0..40).map(|i| format!("k{i}")).collect();
    let disk = SimStorage::new();
    let options = EngineOptions {
        size_limit: LIMIT,
        ..EngineOptions::default()
    };
    let clock = ManualTime::at(1_700_000_000_000);
    let mut e = Engine::open(disk.clone(), clock.clone(), options).unwrap();
    let mut rng = fastrand::Rng::with_seed(0x90_4E2C_u64);
    // Cuts spread over the run, several images each.
    disk.capture_every(7, 1, 0xC0FFEE);
    // Values as of the last flush, and the keys written since (or being written).
    let mut flushed: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    let mut written_since = BTreeSet::new();
    let (mut checked, mut step, mut must_survive) = (0, 0, 0);
    while checked < images {
        step += 1;
        let mut flushed_now = None;
        let key = &keys[rng.usize(..keys.len())];
        match rng.u8(..10) {
            0 => {
                written_since.insert(key.clone());
                e.delete(key).unwrap();
            }
            1 => {
                e.flush().unwrap();
                // Takes effect after this step's images are judged: they were taken during
                // the flush, when the previous one was still the last.
                flushed_now = Some(
                    keys.iter()
                        .filter_map(|k| e.get(k).unwrap().map(|v| (k.clone(), v)))
                        .collect(),
                );
            }
            _ => {
                written_since.insert(key.clone());
                let value = format!("{key}@{step}").repeat(rng.usize(1..60));
                e.set(key, value.as_bytes(), None).unwrap();
            }
        }
        for captured in disk.take_captured() {
            if checked >= images {
                break;
            }
            let what = format!("mutation {} (seed {:#x})", captured.mutation, captured.seed);
            let dir = tempfile::tempdir().unwrap();
            materialize(&captured.disk, &dir.path().join(DATA_DIRECTORY));
            let expected = native_recovery(captured.disk, &keys);
            let cache = PersistentCache::open(CacheOptions::new(dir.path()).size_limit(LIMIT))
                .await
                .unwrap_or_else(|err| panic!("{what}: the component could not open: {err}"));
            let mut got = BTreeMap::new();
            for k in &keys {
                if let Some(v) = cache.get_raw(k).await.unwrap() {
                    got.insert(k.clone(), v);
                }
            }
            cache
                .set_raw("after", b"recovered", Expiry::Never)
                .await
                .unwrap();
            cache.close().await.unwrap();
            assert!(
                got == expected,
                "{what}: the component recovered {:?}, the native engine {:?}",
                got.keys().collect::<Vec<_>>(),
                expected.keys().collect::<Vec<_>>()
            );
            for (k, v) in &flushed {
                if !written_since.contains(k) {
                    assert_eq!(got.get(k), Some(v), "{what}: {k} was flushed and lost");
                    must_survive += 1;
                }
            }
            checked += 1;
        }
        if let Some(now) = flushed_now {
            flushed = now;
            written_since.clear();
        }
    }
    assert!(must_survive > images, "too few flushed keys were checked");
    println!(
        "power cuts through WASI: {checked} images recovered by the component as natively \
         ({step} steps, {must_survive} flushed entries found)"
    );
}
