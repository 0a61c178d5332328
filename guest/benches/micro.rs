//! Criterion micro-benchmarks of the engine's hot paths:
//! `cargo bench -p persistent-cache-guest --bench micro` (about four minutes; append
//! `-- --quick` for a rough run in about a minute, or a filter such as `-- engine/`).
//!
//! Groups (each benchmark is named `group/case/size`):
//!
//! - `index`: the in-memory LRU index (`LruIndex`) holding 100 000 entries (keys `key:{i}`):
//!   `get` of a present key and of an absent one, `touch` (move to most recently used) and
//!   `insert` of a new key. Lookups go in a fixed pseudo-random order, not along memory.
//! - `record`: a put record with a 9-byte key and values of 100 B, 4 KiB and 1 MiB, encoded into
//!   a new buffer as every `set` does, and decoded with both checksums verified as every read
//!   from disk does.
//! - `checksum`: the hashes on those paths: crc32 (`crc32fast`; every record header's 19 bytes,
//!   and whole metadata and snapshot files), xxh3-64 (`xxhash-rust`; every record's key and
//!   value) over 100 B, 4 KiB and 1 MiB, and the index's key hasher (hashbrown's
//!   `DefaultHashBuilder`, i.e. foldhash; every lookup) over keys of 10 B, 100 B and 4 KiB.
//! - `engine`: `Engine<StdStorage, WallClock>` on real files in a temporary directory. `get`
//!   of a value in the hot value cache (100 B and 4 KiB), `get` of a 4 KiB value that must be
//!   read from its segment file (from the OS page cache: the files were just written), and
//!   `set` of new keys (100 B and 4 KiB values) with a size limit nothing is evicted under.
//!
//! Criterion reports a time per operation and, where sizes vary, bytes per second; it keeps
//! each run under `target/criterion/` and compares the next run with it. The other benchmark,
//! `hot_get`, needs no framework and times longer workloads through the same LRU structures
//! (it also runs under cachegrind); these cases isolate the pieces beneath them.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use persistent_cache_guest::format::{decode_record, encode_record, record_len, RecordKind};
use persistent_cache_guest::index::{LruIndex, Slot};
use persistent_cache_guest::storage::StdStorage;
use persistent_cache_guest::{Engine, EngineOptions, WallClock};
use std::hash::BuildHasher;
use std::hint::black_box;
use std::time::{Duration, Instant};

type BenchEngine = Engine<StdStorage, WallClock>;

/// Entries in the index of the `index` group.
const INDEX_ENTRIES: u64 = 100_000;
/// Keys looked up in a row before the lookup order repeats (a power of two: the next position
/// is a mask, not a division).
const ORDER_LEN: usize = 1 << 16;
/// The value sizes of the `record` and `checksum` groups.
const SIZES: [(usize, &str); 3] = [(100, "100B"), (4 << 10, "4KiB"), (1 << 20, "1MiB")];
/// The key of the `record` group's records.
const RECORD_KEY: &str = "key:12345";

/// A small xorshift generator: the same sequence in every run.
struct Rng(u64);

impl Rng {
    fn new() -> Self {
        Self(0x9E37_79B9_7F4A_7C15)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

/// `ORDER_LEN` keys `key:{i}`, `i` drawn from `from..to`, in a fixed pseudo-random order.
fn key_order(from: u64, to: u64) -> Vec<String> {
    let mut rng = Rng::new();
    (0..ORDER_LEN)
        .map(|_| format!("key:{}", from + rng.below(to - from)))
        .collect()
}

/// Where the index's `i`th entry claims to be: 128-byte records, 10 000 to a segment.
fn slot(i: u64) -> Slot {
    Slot {
        segment: (i / 10_000) as u32 + 1,
        offset: (i % 10_000) as u32 * 128,
        len: 128,
        expires_at: 0,
    }
}

fn index(c: &mut Criterion) {
    let mut index = LruIndex::default();
    for i in 0..INDEX_ENTRIES {
        index.insert(&format!("key:{i}"), slot(i));
    }
    let present = key_order(0, INDEX_ENTRIES);
    let absent = key_order(INDEX_ENTRIES, 2 * INDEX_ENTRIES);
    let mut group = c.benchmark_group("index");

    let mut at = 0;
    group.bench_function("get/present", |b| {
        b.iter(|| {
            at = (at + 1) & (ORDER_LEN - 1);
            index.get(black_box(&present[at])).unwrap()
        })
    });
    group.bench_function("get/absent", |b| {
        b.iter(|| {
            at = (at + 1) & (ORDER_LEN - 1);
            index.get(black_box(&absent[at]))
        })
    });
    group.bench_function("touch", |b| {
        b.iter(|| {
            at = (at + 1) & (ORDER_LEN - 1);
            index.touch(black_box(&present[at]));
        })
    });

    // Inserts of keys the index lacks, timed in batches; each batch's keys are removed again
    // (not timed), so the index stays between 100 000 and 104 096 entries.
    let new_keys: Vec<String> = (0..4096).map(|i| format!("new:{i}")).collect();
    group.bench_function("insert/new-key", |b| {
        b.iter_custom(|iters| {
            let mut timed = Duration::ZERO;
            let mut left = iters as usize;
            while left > 0 {
                let batch = &new_keys[..left.min(new_keys.len())];
                let start = Instant::now();
                for (i, key) in batch.iter().enumerate() {
                    black_box(index.insert(black_box(key), slot(i as u64)));
                }
                timed += start.elapsed();
                for key in batch {
                    index.remove(key);
                }
                left -= batch.len();
            }
            timed
        })
    });
    group.finish();
    assert_eq!(index.len() as u64, INDEX_ENTRIES);
}

/// A put record of `RECORD_KEY` and `value`, encoded as the engine encodes one for `set`.
fn encode_put(key: &str, value: &[u8]) -> Vec<u8> {
    let mut record = Vec::with_capacity(record_len(key.len(), value.len()) as usize);
    encode_record(&mut record, RecordKind::Put, key, value, 0);
    record
}

fn record(c: &mut Criterion) {
    let mut group = c.benchmark_group("record");
    for (size, label) in SIZES {
        let value = vec![0x5a; size];
        let record = encode_put(RECORD_KEY, &value);
        group.throughput(Throughput::Bytes(size as u64));
        group.bench_function(BenchmarkId::new("encode", label), |b| {
            b.iter(|| encode_put(black_box(RECORD_KEY), black_box(&value)))
        });
        // The check a read from disk makes (both checksums, then kind, key and length).
        group.bench_function(BenchmarkId::new("decode", label), |b| {
            b.iter(|| {
                let rec = decode_record(black_box(&record)).unwrap();
                rec.kind == RecordKind::Put && rec.key == RECORD_KEY && rec.len == record.len()
            })
        });
    }
    group.finish();
}

fn checksum(c: &mut Criterion) {
    let mut group = c.benchmark_group("checksum");
    for (size, label) in SIZES {
        let bytes = vec![0x5a; size];
        group.throughput(Throughput::Bytes(size as u64));
        group.bench_function(BenchmarkId::new("crc32", label), |b| {
            b.iter(|| crc32fast::hash(black_box(&bytes)))
        });
        group.bench_function(BenchmarkId::new("xxh3-64", label), |b| {
            b.iter(|| xxhash_rust::xxh3::xxh3_64(black_box(&bytes)))
        });
    }
    // What each record's header crc covers.
    let header = [0x5au8; 19];
    group.throughput(Throughput::Bytes(header.len() as u64));
    group.bench_function(BenchmarkId::new("crc32", "19B-header"), |b| {
        b.iter(|| crc32fast::hash(black_box(&header)))
    });
    // The index hashes `&str` keys (at most 4096 bytes) with hashbrown's default hasher.
    let hasher = hashbrown::DefaultHashBuilder::default();
    for (size, label) in [(10, "10B"), (100, "100B"), (4 << 10, "4KiB")] {
        let key = "k".repeat(size);
        group.throughput(Throughput::Bytes(size as u64));
        group.bench_function(BenchmarkId::new("index-key-hash", label), |b| {
            b.iter(|| hasher.hash_one(black_box(key.as_str())))
        });
    }
    group.finish();
}

/// An engine on a new temporary directory (kept alive by the returned guard).
fn open_engine(size_limit: u64) -> (tempfile::TempDir, BenchEngine) {
    let dir = tempfile::tempdir().unwrap();
    let options = EngineOptions {
        size_limit,
        ..EngineOptions::default()
    };
    let engine = Engine::open(StdStorage::new(dir.path()).unwrap(), WallClock, options).unwrap();
    (dir, engine)
}

/// An engine holding `keys` values of `len` bytes under `key:{i}`, none evicted.
fn filled_engine(size_limit: u64, keys: u64, len: usize) -> (tempfile::TempDir, BenchEngine) {
    let (dir, mut engine) = open_engine(size_limit);
    let value = vec![7u8; len];
    for i in 0..keys {
        engine.set(&format!("key:{i}"), &value, None).unwrap();
    }
    let stats = engine.stats();
    assert_eq!((stats.entries, stats.evicted), (keys, 0));
    (dir, engine)
}

fn engine(c: &mut Criterion) {
    let mut group = c.benchmark_group("engine");

    // Gets of values in the hot value cache: a size limit of 1 GiB gives it the most it can
    // have (32 MiB), more than every value takes, and `set` put each value there.
    for (keys, len, label) in [(10_000, 100, "100B"), (4_000, 4 << 10, "4KiB")] {
        let (_dir, mut engine) = filled_engine(1 << 30, keys, len);
        let order = key_order(0, keys);
        let mut at = 0;
        group.throughput(Throughput::Bytes(len as u64));
        group.bench_function(BenchmarkId::new("get/hot", label), |b| {
            b.iter(|| {
                at = (at + 1) & (ORDER_LEN - 1);
                engine.get(black_box(&order[at])).unwrap().unwrap()
            })
        });
    }

    // Gets that read the disk: with a 64 MiB limit the hot cache holds 16 MiB, about 4 000 of
    // the 10 000 values (41 MB of records, so nothing is evicted). Gets go round the keys in
    // order, so each key was last used 10 000 gets ago and its value has left the hot cache:
    // every get reads its record from the segment file, verifies it and caches the value
    // (pushing the least recently used value out).
    {
        const KEYS: u64 = 10_000;
        let (_dir, mut engine) = filled_engine(64 << 20, KEYS, 4 << 10);
        let keys: Vec<String> = (0..KEYS).map(|i| format!("key:{i}")).collect();
        let mut at = 0;
        group.throughput(Throughput::Bytes(4 << 10));
        group.bench_function(BenchmarkId::new("get/disk", "4KiB"), |b| {
            b.iter(|| {
                at = (at + 1) % keys.len();
                engine.get(black_box(&keys[at])).unwrap().unwrap()
            })
        });
        assert_eq!(engine.stats().evicted, 0);
    }

    // Sets of new keys. Each sample writes into a new directory with a size limit far above
    // what it writes (the limit only caps the volume; the hot cache stays at 32 MiB), so nothing
    // is evicted or compacted, and the directory is removed after the sample.
    for (len, label) in [(100, "100B"), (4 << 10, "4KiB")] {
        let value = vec![7u8; len];
        group.throughput(Throughput::Bytes(len as u64));
        group.bench_function(BenchmarkId::new("set/new-key", label), |b| {
            b.iter_custom(|iters| {
                let (_dir, mut engine) = open_engine(1 << 40);
                // The first write into a new engine costs some 80 µs (first allocations of the
                // index and of the file); the few-iteration samples of `--quick` would show
                // little else.
                engine.set("first", &value, None).unwrap();
                let keys: Vec<String> = (0..iters).map(|i| format!("key:{i}")).collect();
                let start = Instant::now();
                for key in &keys {
                    engine.set(black_box(key), black_box(&value), None).unwrap();
                }
                let timed = start.elapsed();
                assert_eq!(engine.stats().evicted, 0);
                timed
            })
        });
    }
    group.finish();
}

criterion_group!(benches, index, record, checksum, engine);
criterion_main!(benches);
