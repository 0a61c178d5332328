//! Timings of the reads and writes that go through the in-memory LRU structures (the index and
//! the hot value cache), on real files: `cargo bench -p persistent-cache-guest --bench hot_get`.
//!
//! No benchmark framework: each case runs a fixed number of operations and prints the mean
//! time per operation (best of `HOT_GET_RUNS`, default 3, runs), so two builds can be compared
//! on one machine. An argument picks the cases whose name contains it; `HOT_GET_OPS_PERCENT`
//! (default 100) scales the timed operations, so that runs under `valgrind --tool=cachegrind`
//! at 0 and at N percent count the instructions of the timed part alone (on a shared machine
//! that is steadier than time).

use persistent_cache_guest::storage::StdStorage;
use persistent_cache_guest::{Engine, EngineOptions, WallClock};
use std::hint::black_box;
use std::time::{Duration, Instant};

type BenchEngine = Engine<StdStorage, WallClock>;

fn open(dir: &std::path::Path, size_limit: u64) -> BenchEngine {
    let options = EngineOptions {
        size_limit,
        ..EngineOptions::default()
    };
    Engine::open(StdStorage::new(dir).unwrap(), WallClock, options).unwrap()
}

/// A small xorshift generator: the same key sequence in every run.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

/// Which cases run, how often, and how many operations (see the module docs).
struct Settings {
    filter: Option<String>,
    runs: u32,
    ops_percent: u64,
}

impl Settings {
    fn from_env() -> Self {
        let number = |name: &str, default: u64| {
            std::env::var(name)
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(default)
        };
        Self {
            // `cargo bench` passes `--bench`; any other argument is a filter.
            filter: std::env::args().skip(1).find(|a| !a.starts_with("--")),
            runs: number("HOT_GET_RUNS", 3).clamp(1, 100) as u32,
            ops_percent: number("HOT_GET_OPS_PERCENT", 100),
        }
    }
}

/// One case: a cache filled with `keys` values of `len` bytes, then `ops` timed calls of `op`.
struct Case {
    name: &'static str,
    size_limit: u64,
    keys: u64,
    len: usize,
    ops: u64,
    op: fn(&mut BenchEngine, &str, &[u8]),
}

impl Case {
    fn run(&self, settings: &Settings) {
        if let Some(filter) = &settings.filter {
            if !self.name.contains(filter.as_str()) {
                return;
            }
        }
        let ops = self.ops * settings.ops_percent / 100;
        let names: Vec<String> = (0..self.keys).map(|k| format!("key:{k}")).collect();
        let value = vec![7u8; self.len];
        let mut best = Duration::MAX;
        for _ in 0..settings.runs {
            let dir = tempfile::tempdir().unwrap();
            let mut e = open(dir.path(), self.size_limit);
            for name in &names {
                e.set(name, &value, None).unwrap();
            }
            let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
            let start = Instant::now();
            for _ in 0..ops {
                (self.op)(&mut e, &names[rng.below(self.keys) as usize], &value);
            }
            best = best.min(start.elapsed());
        }
        let per_op = best.as_nanos() as f64 / ops.max(1) as f64;
        println!("{:<44} {per_op:>9.0} ns/op", self.name);
    }
}

fn get(e: &mut BenchEngine, key: &str, _: &[u8]) {
    black_box(e.get(key).unwrap());
}

fn set(e: &mut BenchEngine, key: &str, value: &[u8]) {
    e.set(key, value, None).unwrap();
}

fn main() {
    let settings = Settings::from_env();
    let cases = [
        // Every value fits the hot cache: gets never read the disk.
        Case {
            name: "get, all hot (10k x 100 B)",
            size_limit: 1 << 30,
            keys: 10_000,
            len: 100,
            ops: 2_000_000,
            op: get,
        },
        Case {
            name: "get, all hot (200k x 32 B)",
            size_limit: 1 << 30,
            keys: 200_000,
            len: 32,
            ops: 2_000_000,
            op: get,
        },
        // A hot cache of 4 MiB over 12 MB of values: most gets read the disk and churn it.
        Case {
            name: "get, a third hot (12k x 1 KiB, 4 MiB hot)",
            size_limit: 16 << 20,
            keys: 12_000,
            len: 1024,
            ops: 500_000,
            op: get,
        },
        // Overwrites: each replaces a hot value (and appends a record).
        Case {
            name: "set, overwrite (10k x 100 B)",
            size_limit: 1 << 30,
            keys: 10_000,
            len: 100,
            ops: 500_000,
            op: set,
        },
    ];
    for case in &cases {
        case.run(&settings);
    }
}
