//! Fuzzes random operation sequences against a simple in-memory model with a fake clock:
//! every read matches the model exactly (the limit is never reached), across clean and
//! crashing reopens. The `eviction_keeps_the_size_invariant...` property test covers eviction.
#![no_main]

use libfuzzer_sys::fuzz_target;
use persistent_cache_guest::storage::StdStorage;
use persistent_cache_guest::{TimeSource, Engine, EngineOptions, ManualTime};
use std::collections::HashMap;

fn open(dir: &std::path::Path, clock: &ManualTime) -> Engine<StdStorage, ManualTime> {
    let options = EngineOptions {
        size_limit: 1 << 30,
        ..EngineOptions::default()
    };
    Engine::open(StdStorage::new(dir).unwrap(), clock.clone(), options).unwrap()
}

fuzz_target!(|data: &[u8]| {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualTime::at(1_700_000_000_000);
    let mut engine = open(dir.path(), &clock);
    let mut model: HashMap<u8, (Vec<u8>, u64)> = HashMap::new();
    for (step, op) in data.chunks_exact(3).enumerate().take(500) {
        let key = op[1] % 16;
        let name = format!("key/{key}");
        let now = clock.now_ms();
        let live = model
            .get(&key)
            .filter(|(_, exp)| *exp == 0 || now < *exp)
            .map(|(v, _)| v.clone());
        match op[0] % 8 {
            0..=2 => {
                let value = vec![step as u8; op[2] as usize * 4];
                let ttl = (op[0] % 3 == 0).then_some(u64::from(op[2]) * 10);
                engine.set(&name, &value, ttl).unwrap();
                let expires = ttl.map_or(0, |ms| (now + ms).max(1));
                model.insert(key, (value, expires));
            }
            3 => assert_eq!(engine.get(&name).unwrap(), live),
            4 => {
                assert_eq!(engine.delete(&name).unwrap(), live.is_some());
                model.remove(&key);
            }
            5 => clock.advance(u64::from(op[2]) * 10),
            6 => {
                if op[2] % 2 == 0 {
                    engine.close().unwrap();
                } else {
                    drop(engine);
                }
                engine = open(dir.path(), &clock);
            }
            _ => {
                if op[2] == 0 {
                    engine.clear().unwrap();
                    model.clear();
                }
            }
        }
    }
});
