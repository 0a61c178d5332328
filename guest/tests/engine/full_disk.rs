//! A full disk (the simulated disk's capacity): an operation that fails changed nothing, and
//! one that changed the cache reports success; `close` succeeds once the data is synced, even
//! when the index snapshot cannot be rewritten; nothing is lost once space is back.

use crate::common::{Rng, T0};
use persistent_cache_guest::storage::sim::SimStorage;
use persistent_cache_guest::{counter, Engine, EngineOptions, Error, ManualTime};
use std::collections::BTreeMap;

type Model = BTreeMap<String, Vec<u8>>;

fn open(disk: &SimStorage, clock: &ManualTime) -> Engine<SimStorage, ManualTime> {
    let options = EngineOptions {
        // Small: eviction and compaction run (and fail on the full disk) while writes succeed.
        size_limit: 32 * 1024,
        ..EngineOptions::default()
    };
    Engine::open(disk.clone(), clock.clone(), options).unwrap()
}

/// Every key the engine holds, with its value.
fn state(e: &mut Engine<SimStorage, ManualTime>) -> Model {
    e.keys("", None, usize::MAX)
        .into_iter()
        .map(|key| {
            let value = e.get(&key).unwrap().expect("a listed key reads");
            (key, value)
        })
        .collect()
}

/// Every key the engine holds reads its model value (eviction may have dropped others).
fn check(e: &mut Engine<SimStorage, ManualTime>, model: &Model, what: &str) -> Model {
    let now = state(e);
    for (key, value) in &now {
        assert_eq!(model.get(key), Some(value), "{what}: {key}");
    }
    now
}

#[test]
fn on_a_full_disk_an_error_means_nothing_changed_and_a_change_reports_success() {
    let (mut failures, mut successes) = (0, 0);
    for seed in 0..8u64 {
        let disk = SimStorage::new();
        let clock = ManualTime::at(T0);
        let mut e = open(&disk, &clock);
        let mut model = Model::new();
        // Close to the limit: the writes below make eviction and compaction run.
        for i in 0..28 {
            let value = vec![i as u8; 1000];
            e.set(&format!("k{i}"), &value, None).unwrap();
            model.insert(format!("k{i}"), value);
        }
        e.flush().unwrap();
        // Room for a few more records, then nothing.
        disk.set_capacity(Some(disk.stored_bytes() + 2_000 + 1_000 * seed));
        let mut rng = Rng(0x5EED ^ seed);
        let mut held = state(&mut e);
        for step in 0..60 {
            let key = format!("k{}", rng.below(30));
            let what = format!("seed {seed} step {step}");
            let before = model.clone();
            let outcome = match rng.below(6) {
                0 | 1 => {
                    let value = vec![step as u8; 200 + rng.below(1500) as usize];
                    e.set(&key, &value, None)
                        .map(|()| drop(model.insert(key.clone(), value)))
                }
                2 => e.delete(&key).map(|_| drop(model.remove(&key))),
                3 => e.incr("n", 1, 0, None).map(|n| {
                    model.insert("n".into(), counter::encode(n));
                }),
                4 => e
                    .delete_prefix("k1")
                    .map(|_| model.retain(|k, _| !k.starts_with("k1"))),
                _ => e.pop(&key).map(|_| drop(model.remove(&key))),
            };
            match outcome {
                Ok(()) => successes += 1,
                Err(Error::Io { kind, .. }) => {
                    assert_eq!(kind, std::io::ErrorKind::StorageFull, "{what}");
                    assert_eq!(model, before);
                    assert!(
                        state(&mut e) == held,
                        "{what}: a failed operation changed the cache"
                    );
                    failures += 1;
                }
                Err(other) => panic!("{what}: {other:?}"),
            }
            held = check(&mut e, &model, &what);
        }
        e.close()
            .expect("close succeeds: the data is synced, the snapshot is optional");
        disk.set_capacity(None);
        let mut e = open(&disk, &clock);
        let after = check(&mut e, &model, &format!("seed {seed} after reopening"));
        assert!(after == held, "seed {seed}: reopening changed the cache");
        e.set("more", b"room again", None).unwrap();
    }
    println!("full disk: {failures} operations refused, {successes} done");
    assert!(failures > 50 && successes > 20, "{failures} / {successes}");
}
