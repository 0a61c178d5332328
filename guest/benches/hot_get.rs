//! Timings of the reads and writes that go through the in-memory LRU structures (the index and
//! the hot value cache), on real files: `cargo bench -p persistent-cache-guest --bench hot_get`.
//!
//! No benchmark framework: each case runs a fixed number of operations and prints the mean
//! time per operation (best of three runs), so two builds can be compared on one machine.

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

/// Fills a cache with `keys` values of `len` bytes, then times `ops` operations of `op`.
fn case(
    name: &str,
    size_limit: u64,
    keys: u64,
    len: usize,
    ops: u64,
    op: fn(&mut BenchEngine, &str, &[u8]),
) {
    let mut best = Duration::MAX;
    for _ in 0..3 {
        let dir = tempfile::tempdir().unwrap();
        let mut e = open(dir.path(), size_limit);
        let value = vec![7u8; len];
        for k in 0..keys {
            e.set(&format!("key:{k}"), &value, None).unwrap();
        }
        let names: Vec<String> = (0..keys).map(|k| format!("key:{k}")).collect();
        let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
        let start = Instant::now();
        for _ in 0..ops {
            op(&mut e, &names[rng.below(keys) as usize], &value);
        }
        best = best.min(start.elapsed());
    }
    let per_op = best.as_nanos() as f64 / ops as f64;
    println!("{name:<48} {per_op:>9.0} ns/op");
}

fn main() {
    let get = |e: &mut BenchEngine, k: &str, _: &[u8]| {
        black_box(e.get(k).unwrap());
    };
    let set = |e: &mut BenchEngine, k: &str, v: &[u8]| e.set(k, v, None).unwrap();
    // Every value fits the hot cache: gets never read the disk.
    case(
        "get, all hot (10k x 100 B)",
        1 << 30,
        10_000,
        100,
        2_000_000,
        get,
    );
    case(
        "get, all hot (200k x 32 B)",
        1 << 30,
        200_000,
        32,
        2_000_000,
        get,
    );
    // A hot cache of 4 MiB over 12 MB of values: most gets read the disk and churn the cache.
    case(
        "get, a third hot (12k x 1 KiB, 4 MiB hot)",
        16 << 20,
        12_000,
        1024,
        500_000,
        get,
    );
    // Overwrites: each replaces a hot value (and appends a record).
    case(
        "set, overwrite (10k x 100 B)",
        1 << 30,
        10_000,
        100,
        500_000,
        set,
    );
}
