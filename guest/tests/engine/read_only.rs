//! Read-only opens: every read works, every write is refused with `ReadOnly`, and nothing on
//! disk changes, checked three ways: real files and directory made read-only (which stops a
//! non-root writer), a storage that records every call able to write, and the bytes, sizes,
//! modification times and modes of every file compared before and after.

use crate::common::{fresh, get, open, open_with, segment_paths, NO_LIMIT, T0};
use persistent_cache_guest::format::{self, RecordKind};
use persistent_cache_guest::storage::{StdFile, StdStorage, Storage, StorageFile};
use persistent_cache_guest::{Engine, EngineOptions, Error, ManualTime};
use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::rc::Rc;
use std::time::SystemTime;

/// The calls able to write that a storage saw, in order.
type Calls = Rc<RefCell<Vec<String>>>;

/// A directory that serves reads and records (and refuses) every call that could write.
struct NoWrites {
    inner: StdStorage,
    calls: Calls,
}

struct NoWritesFile {
    inner: StdFile,
    calls: Calls,
}

fn refuse(calls: &Calls, call: String) -> io::Error {
    calls.borrow_mut().push(call);
    io::Error::new(io::ErrorKind::PermissionDenied, "a read-only engine wrote")
}

impl StorageFile for NoWritesFile {
    fn size(&self) -> io::Result<u64> {
        self.inner.size()
    }
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        self.inner.read_exact_at(buf, offset)
    }
    fn write_all_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        Err(refuse(
            &self.calls,
            format!("write {} at {offset}", buf.len()),
        ))
    }
    fn set_len(&self, len: u64) -> io::Result<()> {
        Err(refuse(&self.calls, format!("set_len {len}")))
    }
    fn sync_data(&self) -> io::Result<()> {
        Err(refuse(&self.calls, "sync_data".into()))
    }
}

impl Storage for NoWrites {
    type File = NoWritesFile;
    fn open(&self, name: &str, create: bool) -> io::Result<NoWritesFile> {
        Err(refuse(
            &self.calls,
            format!("open {name} for writing (create: {create})"),
        ))
    }
    fn open_read_only(&self, name: &str) -> io::Result<NoWritesFile> {
        Ok(NoWritesFile {
            inner: self.inner.open_read_only(name)?,
            calls: Rc::clone(&self.calls),
        })
    }
    fn list(&self) -> io::Result<Vec<String>> {
        self.inner.list()
    }
    fn exists(&self, name: &str) -> io::Result<bool> {
        self.inner.exists(name)
    }
    fn remove(&self, name: &str) -> io::Result<()> {
        Err(refuse(&self.calls, format!("remove {name}")))
    }
    fn rename(&self, from: &str, to: &str) -> io::Result<()> {
        Err(refuse(&self.calls, format!("rename {from} {to}")))
    }
    fn sync_dir(&self) -> io::Result<()> {
        Err(refuse(&self.calls, "sync_dir".into()))
    }
    fn create_dir(&self, name: &str) -> io::Result<()> {
        Err(refuse(&self.calls, format!("create_dir {name}")))
    }
}

fn read_only(size_limit: u64) -> EngineOptions {
    EngineOptions {
        size_limit,
        read_only: true,
        ..EngineOptions::default()
    }
}

/// Opens `dir` read-only through `NoWrites`; returns the engine and the calls it will record.
fn open_watched(
    dir: &Path,
    clock: &ManualTime,
    size_limit: u64,
) -> (Result<Engine<NoWrites, ManualTime>, Error>, Calls) {
    let calls = Calls::default();
    let storage = NoWrites {
        inner: StdStorage::new(dir).unwrap(),
        calls: Rc::clone(&calls),
    };
    (
        Engine::open(storage, clock.clone(), read_only(size_limit)),
        calls,
    )
}

/// Every file of `dir` (and `dir` itself, as "."): bytes, modification time and mode.
fn disk_state(dir: &Path) -> BTreeMap<String, (Vec<u8>, SystemTime, u32)> {
    let meta = fs::metadata(dir).unwrap();
    let mut state = BTreeMap::from([(
        ".".to_string(),
        (
            Vec::new(),
            meta.modified().unwrap(),
            meta.permissions().mode(),
        ),
    )]);
    for entry in fs::read_dir(dir).unwrap() {
        let entry = entry.unwrap();
        let meta = entry.metadata().unwrap();
        let bytes = fs::read(entry.path()).unwrap();
        let stamp = (bytes, meta.modified().unwrap(), meta.permissions().mode());
        state.insert(entry.file_name().into_string().unwrap(), stamp);
    }
    state
}

/// Sets the mode of every file in `dir` to `file_mode`, and of `dir` to `dir_mode`.
fn set_modes(dir: &Path, file_mode: u32, dir_mode: u32) {
    for entry in fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        fs::set_permissions(&path, fs::Permissions::from_mode(file_mode)).unwrap();
    }
    fs::set_permissions(dir, fs::Permissions::from_mode(dir_mode)).unwrap();
}

/// Every operation that may write, each of which must fail with `ReadOnly` read-only.
fn assert_every_write_is_refused<S: Storage>(e: &mut Engine<S, ManualTime>, present: &str) {
    let refused = [
        ("set", e.set("new", b"v", None).err()),
        ("set, invalid key", e.set("", b"v", None).err()),
        ("add, absent", e.add("new", b"v", None).err()),
        ("add, present", e.add(present, b"v", None).err()),
        ("touch", e.touch(present, Some(1_000)).err()),
        ("touch, miss", e.touch("new", None).err()),
        ("delete", e.delete(present).err()),
        ("pop", e.pop(present).err()),
        ("incr", e.incr("counter", 1, 0, None).err()),
        ("delete_prefix", e.delete_prefix("k").err()),
        ("delete_prefix, all", e.delete_prefix("").err()),
        ("clear", e.clear().err()),
    ];
    for (op, err) in refused {
        assert_eq!(err, Some(Error::ReadOnly), "{op}");
    }
}

/// A directory the way crashes leave them: a snapshot, records after it, a torn record at the
/// end of the log, and a half-written snapshot file. Returns what each key holds.
fn a_used_directory(dir: &Path, clock: &ManualTime) -> HashMap<String, Option<Vec<u8>>> {
    let mut expected = HashMap::new();
    let mut e = open(dir, clock);
    for i in 0..40 {
        let value = vec![i as u8; 1000];
        e.set(&format!("k{i}"), &value, None).unwrap();
        expected.insert(format!("k{i}"), Some(value));
    }
    e.set("gone", b"deleted", None).unwrap();
    e.delete("gone").unwrap();
    expected.insert("gone".into(), None);
    e.set("ttl", b"expires", Some(1_000)).unwrap();
    expected.insert("ttl".into(), Some(b"expires".to_vec()));
    e.close().unwrap();

    let mut e = open(dir, clock);
    for i in 40..50 {
        let value = vec![i as u8; 1000];
        e.set(&format!("k{i}"), &value, None).unwrap();
        expected.insert(format!("k{i}"), Some(value));
    }
    e.set("k0", b"overwritten", None).unwrap();
    expected.insert("k0".into(), Some(b"overwritten".to_vec()));
    e.delete("k1").unwrap();
    expected.insert("k1".into(), None);
    drop(e); // a crash: the log goes on past the snapshot

    let seg = segment_paths(dir).pop().unwrap();
    let mut torn = Vec::new();
    format::encode_record(&mut torn, RecordKind::Put, "torn", &[9u8; 300], 0);
    let mut bytes = fs::read(&seg).unwrap();
    bytes.extend_from_slice(&torn[..torn.len() / 2]);
    fs::write(&seg, bytes).unwrap();
    expected.insert("torn".into(), None);
    let half_written = format!("{}{}", format::SNAPSHOT_FILE, format::TMP_SUFFIX);
    fs::write(dir.join(half_written), b"half a snapshot").unwrap();
    expected
}

#[test]
fn a_read_only_open_reads_everything_and_changes_nothing_on_disk() {
    let dir = crate::common::scratch_dir();
    let clock = ManualTime::at(T0);
    let expected = a_used_directory(dir.path(), &clock);
    // Read-only files in a read-only directory: a writer that is not root fails on them.
    set_modes(dir.path(), 0o400, 0o500);
    let before = disk_state(dir.path());
    // A limit far below the volume: a writing open would evict and compact at once.
    let limit = 16 * 1024;

    let (opened, calls) = open_watched(dir.path(), &clock, limit);
    let mut e = opened.unwrap();
    for (key, value) in &expected {
        assert_eq!(&e.get(key).unwrap(), value, "{key}");
        assert_eq!(e.contains(key).unwrap(), value.is_some(), "{key}");
    }
    let mut keys: Vec<String> = expected
        .iter()
        .filter(|(_, v)| v.is_some())
        .map(|(k, _)| k.clone())
        .collect();
    keys.sort();
    assert_eq!(e.keys("", None, 100), keys);
    assert_eq!(e.keys("", Some("k3"), 2), ["k30", "k31"]);
    let stats = e.stats();
    assert_eq!(stats.entries, keys.len() as u64);
    assert!(stats.volume > limit, "nothing is evicted: {stats:?}");
    assert_eq!(stats.evicted, 0);

    assert_every_write_is_refused(&mut e, "k2");
    assert_eq!(
        get(&mut e, "k2"),
        Some(vec![2u8; 1000]),
        "refused writes change nothing"
    );
    clock.advance(1_000);
    assert_eq!(e.expire(), 1, "expire works in memory");
    assert_eq!(get(&mut e, "ttl"), None);
    e.flush().unwrap();
    e.close().unwrap();
    assert_eq!(*calls.borrow(), Vec::<String>::new(), "calls able to write");

    // The same through plain files: opening them for writing would fail unless root.
    let storage = StdStorage::new(dir.path()).unwrap();
    let mut e = Engine::open(storage, clock.clone(), read_only(limit)).unwrap();
    assert_eq!(get(&mut e, "k0"), Some(b"overwritten".to_vec()));
    assert_every_write_is_refused(&mut e, "k3");
    e.close().unwrap();

    assert!(before == disk_state(dir.path()), "the directory changed");
    set_modes(dir.path(), 0o600, 0o700);
    // A writing open still finds and makes the repairs read-only mode left undone.
    let seg = segment_paths(dir.path()).pop().unwrap();
    let torn_len = fs::metadata(&seg).unwrap().len();
    let mut e = open(dir.path(), &clock);
    assert!(
        fs::metadata(&seg).unwrap().len() < torn_len,
        "torn tail cut"
    );
    assert!(!dir.path().join("index.hint.tmp").exists());
    assert_eq!(get(&mut e, "k0"), Some(b"overwritten".to_vec()));
    assert_eq!(get(&mut e, "k1"), None);
}

#[test]
fn damage_costs_its_records_and_read_only_repairs_nothing() {
    // A 64 KiB limit makes 8 KiB segments: the fillers push "after" into a later segment.
    let limit = 64 * 1024;
    let (dir, clock, mut e) = fresh(limit);
    e.set("k", b"old value", None).unwrap();
    e.set("before", b"stored before the damage", None).unwrap();
    e.delete("k").unwrap();
    for i in 0..10 {
        e.set(&format!("fill{i}"), &[1u8; 1000], None).unwrap();
    }
    e.set("after", b"stored after the damage", None).unwrap();
    drop(e);
    // Flip a bit in the tombstone's key: its checksum fails with valid records after it.
    let first = segment_paths(dir.path()).remove(0);
    let mut bytes = fs::read(&first).unwrap();
    let tombstone = bytes
        .windows(1 + format::RECORD_HEADER_LEN)
        .position(|w| w[8] == RecordKind::Delete as u8 && w[format::RECORD_HEADER_LEN] == b'k')
        .unwrap();
    bytes[tombstone + format::RECORD_HEADER_LEN] ^= 1;
    fs::write(&first, &bytes).unwrap();
    let before = disk_state(dir.path());

    let (opened, calls) = open_watched(dir.path(), &clock, limit);
    let mut e = opened.unwrap();
    let reads =
        |e: &mut Engine<NoWrites, ManualTime>| ["k", "before", "after"].map(|key| get(e, key));
    let read_only_reads = reads(&mut e);
    assert_eq!(e.stats().damaged, 1);
    assert_eq!(
        read_only_reads[1..],
        [
            Some(b"stored before the damage".to_vec()),
            Some(b"stored after the damage".to_vec())
        ],
        "only the damaged records are lost"
    );
    // The damaged tombstone was never flushed: the value it deleted may come back.
    assert!(matches!(
        read_only_reads[0].as_deref(),
        None | Some(b"old value")
    ));
    e.close().unwrap();
    assert_eq!(*calls.borrow(), Vec::<String>::new(), "calls able to write");
    assert!(before == disk_state(dir.path()), "the directory changed");
    // A writing open reads the same, and compacts the damaged segment away (its intact records
    // copied forward) so that the records older than the damage are gone for good.
    let mut e = open_with(dir.path(), &clock, limit);
    assert_eq!(
        ["k", "before", "after"].map(|key| get(&mut e, key)),
        read_only_reads
    );
    assert!(!first.exists());
}

#[test]
fn a_read_only_open_of_an_empty_directory_is_an_empty_cache_and_writes_nothing() {
    let dir = crate::common::scratch_dir();
    let clock = ManualTime::at(T0);
    let (opened, calls) = open_watched(dir.path(), &clock, 1 << 20);
    let mut e = opened.unwrap();
    assert_eq!(e.get("k").unwrap(), None);
    assert!(e.keys("", None, 10).is_empty());
    assert_eq!(e.stats().entries, 0);
    assert_every_write_is_refused(&mut e, "k");
    e.close().unwrap();
    assert_eq!(*calls.borrow(), Vec::<String>::new(), "calls able to write");
    assert_eq!(
        fs::read_dir(dir.path()).unwrap().count(),
        0,
        "no file created"
    );
}

#[test]
fn a_read_only_open_refuses_what_a_writing_open_refuses_and_reads_old_formats() {
    let (dir, clock, mut e) = fresh(NO_LIMIT);
    e.set("k", b"v", None).unwrap();
    e.close().unwrap();
    let meta = dir.path().join(format::META_FILE);
    // Older versions are read as they are: `recovery::version_1_and_2_directories_...`.
    fs::write(
        &meta,
        format::encode_meta_version(format::FORMAT_VERSION + 1),
    )
    .unwrap();
    let err = open_watched(dir.path(), &clock, 1 << 20).0.err();
    assert!(matches!(err, Some(Error::IncompatibleFormat(_))), "{err:?}");
    fs::write(&meta, b"garbage").unwrap();
    let err = open_watched(dir.path(), &clock, 1 << 20).0.err();
    assert!(matches!(err, Some(Error::Corrupt(_))), "{err:?}");
}
