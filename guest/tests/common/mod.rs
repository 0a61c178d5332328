//! Helpers shared by the engine's native integration tests.
#![allow(dead_code)] // each test file uses its own subset

use persistent_cache_guest::format;
use persistent_cache_guest::storage::{StdStorage, Storage};
use persistent_cache_guest::{Engine, EngineOptions, ManualTime};
use std::path::{Path, PathBuf};

/// A fixed start time for manual clocks.
pub const T0: u64 = 1_700_000_000_000;

/// An engine on real files in `dir` with a manual clock.
pub type TestEngine = Engine<StdStorage, ManualTime>;

/// Opens `dir` with `size_limit` (no sync), panicking on failure.
pub fn open_with(dir: &Path, clock: &ManualTime, size_limit: u64) -> TestEngine {
    Engine::open(
        StdStorage::new(dir).unwrap(),
        clock.clone(),
        EngineOptions {
            size_limit,
            ..EngineOptions::default()
        },
    )
    .unwrap()
}

/// Opens `dir` shared with other engines (`EngineOptions::shared`) with `size_limit`, as a host
/// does: under the write lock (which the engine then counts as released).
pub fn open_shared(dir: &Path, clock: &ManualTime, size_limit: u64) -> TestEngine {
    Engine::open(
        StdStorage::new(dir).unwrap(),
        clock.clone(),
        EngineOptions {
            size_limit,
            shared: true,
            ..EngineOptions::default()
        },
    )
    .unwrap()
}

/// A size limit no test reaches: nothing is ever evicted.
pub const NO_LIMIT: u64 = 1 << 30;

/// Opens `dir` with a limit no test reaches (nothing is ever evicted).
pub fn open(dir: &Path, clock: &ManualTime) -> TestEngine {
    open_with(dir, clock, NO_LIMIT)
}

/// A new empty directory for a test, in memory-backed `/dev/shm` where there is one. The
/// engine syncs at every segment roll and compaction (a few ms each on this machine's disk);
/// these tests use tiny size limits, so segments roll every few writes and the syncs would
/// dominate their run time. What they assert does not depend on the disk; what a power cut
/// does to unsynced data is tested with the simulated disk (`storage::sim`).
pub fn scratch_dir() -> tempfile::TempDir {
    let shm = Path::new("/dev/shm");
    if shm.is_dir() {
        if let Ok(dir) = tempfile::tempdir_in(shm) {
            return dir;
        }
    }
    tempfile::tempdir().unwrap()
}

/// A new empty directory, a manual clock at `T0`, and an engine on them with `size_limit`.
pub fn fresh(size_limit: u64) -> (tempfile::TempDir, ManualTime, TestEngine) {
    let dir = scratch_dir();
    let clock = ManualTime::at(T0);
    let engine = open_with(dir.path(), &clock, size_limit);
    (dir, clock, engine)
}

/// Closes `e` cleanly (`clean`) or drops it without closing (a crash), then opens `dir` again.
pub fn reopen(
    e: TestEngine,
    clean: bool,
    dir: &Path,
    clock: &ManualTime,
    size_limit: u64,
) -> TestEngine {
    if clean {
        e.close().unwrap();
    } else {
        drop(e);
    }
    open_with(dir, clock, size_limit)
}

/// `e.get(key)`, panicking on an error.
pub fn get<S: Storage>(e: &mut Engine<S, ManualTime>, key: &str) -> Option<Vec<u8>> {
    e.get(key).unwrap()
}

/// Bytes of the engine's own files in `dir`, as the filesystem reports them.
pub fn bytes_on_disk(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap())
        .filter(|e| {
            let name = e.file_name().into_string().unwrap();
            name.ends_with(".seg") || name == format::SNAPSHOT_FILE || name == format::META_FILE
        })
        .map(|e| e.metadata().unwrap().len())
        .sum()
}

/// The segment files of `dir`, oldest first.
pub fn segment_paths(dir: &Path) -> Vec<PathBuf> {
    let mut segs: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "seg"))
        .collect();
    segs.sort();
    segs
}

/// A small xorshift generator: deterministic, no dependency.
pub struct Rng(pub u64);

impl Rng {
    /// The next pseudo-random number.
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// A pseudo-random number below `n`.
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}
