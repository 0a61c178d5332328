//! `SimStorage`: an in-memory disk that remembers what a power cut could leave behind.
//!
//! # What it models
//!
//! One directory of regular files, plus subdirectories made by `create_dir` that files can be
//! renamed into (`"sub/name"`), with the observable semantics of `StdStorage`: `open` without
//! `create` and `rename` of a missing source fail with `NotFound`; writes through
//! `open_read_only` fail (with `PermissionDenied`, as in wasi; std says `EBADF`); `list` names only the top level's regular
//! files; removing a missing file is fine; `rename` replaces its target; `read_exact_at` past
//! the end is `UnexpectedEof`; `set_len` truncates or zero-extends. Handles follow POSIX: a
//! handle refers to its inode, so writes through it still reach the inode after its file was
//! renamed or removed. Clones share one disk. With `set_capacity`, a write or `set_len` that
//! would grow the bytes stored (in files that are named or still open) past the capacity fails
//! with `StorageFull` and changes nothing.
//!
//! Not modelled: renaming or removing a directory (`Unsupported`, `IsADirectory`), opening a
//! directory as a file (`IsADirectory`), metadata other than the size, and per-directory syncs
//! (one `sync_dir` makes every directory operation durable, subdirectories included).
//!
//! # What a power cut keeps
//!
//! Every mutating call is recorded. Each inode has its *durable* content (as of its last
//! `sync_data`) plus the writes and `set_len`s made since; the directory has its durable
//! entries (as of the last `sync_dir`) plus the creates, renames, removes and `create_dir`s made
//! since. `sync_data` makes an inode's content durable but not its name; `sync_dir` makes the
//! names durable but no content. [`SimStorage::crash_image`] builds a new, independent disk
//! from the durable state plus a choice of the unsynced operations made by its seed, which
//! picks one of four modes for the data and, independently, one for the directory:
//!
//! - nothing unsynced is kept;
//! - everything is kept (as after SIGKILL: the OS still writes back what it was given);
//! - a prefix (per file, for data) of the unsynced operations is kept; for data, the next
//!   write is then torn;
//! - an independent random subset is kept (each operation lost with probability 1/2 or 1/8,
//!   per image); for data, a quarter of the kept writes are torn.
//!
//! A torn write keeps a random prefix of its bytes, or a random subset of its 512-byte sectors
//! (the file then still grows to the write's end); a torn `set_len` is lost. A hole that a kept
//! write leaves past the end of the file reads as zeros. A directory operation that no longer
//! applies (renaming a source that is not there, creating a name that exists, anything in a
//! subdirectory that was not kept) is dropped. So a rename can land without its data, a name
//! can exist without its data, and data can be durable under no name at all; an inode that no
//! kept entry names is gone.
//!
//! # How tests use it
//!
//! Make a disk with `SimStorage::new()` and hand a clone to `Engine::open`. Then either call
//! `crash_image(seed)` between engine operations, or call `capture_every(1, n, seed)` once to
//! have `n` images taken after every single mutating call, and drain them with
//! `take_captured()` after each engine operation (each comes with its mutation number and
//! seed, which reproduce it). Open each image with `Engine::open` and check what it holds
//! (`guest/tests/engine/power_cut.rs` does exactly that against an oracle). `mutations()`
//! counts the mutating calls so far.
//!
//! To extend it: a new kind of mutation gets a `DataOp` or `DirOp` variant, applied in one
//! place (`DataOp::apply`, `DirOp::apply`) for both the live disk and crash images; a new crash
//! mode gets a `Keep` variant, handled in `Inode::crash_content` and `Disk::crash_entries`.

use super::{Storage, StorageFile};
use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::io;
use std::rc::Rc;

/// The unit a torn write keeps or loses independently.
const SECTOR: u64 = 512;

/// An inode number.
type Ino = u64;

/// An in-memory disk that records what a power cut could keep (see the module docs); clones
/// share it.
#[derive(Clone, Default)]
pub struct SimStorage(Rc<RefCell<Disk>>);

/// A crash image taken by `capture_every`.
pub struct Captured {
    /// The number of mutating calls made when it was taken (the first call is 1).
    pub mutation: u64,
    /// The seed it was made with (`crash_image(seed)` at that point gives the same image).
    pub seed: u64,
    /// The image: a new, independent disk.
    pub disk: SimStorage,
}

/// An open file of a `SimStorage`: a handle on its inode, whatever its name is since.
pub struct SimFile {
    disk: SimStorage,
    ino: Ino,
    writable: bool,
}

/// What a directory entry names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Entry {
    File(Ino),
    Dir,
}

/// A change to an inode's content.
#[derive(Clone, Debug)]
enum DataOp {
    Write { offset: u64, bytes: Vec<u8> },
    SetLen(u64),
}

/// A change to the directory.
#[derive(Clone, Debug)]
enum DirOp {
    Create(String, Ino),
    Rename(String, String),
    Remove(String),
    CreateDir(String),
}

/// Which unsynced operations a crash image keeps.
#[derive(Clone, Copy, Debug)]
enum Keep {
    Nothing,
    Everything,
    Prefix,
    Subset { lose_one_in: u64 },
}

/// One file's content: what reads see, what is durable, and what happened in between.
#[derive(Default)]
struct Inode {
    current: Vec<u8>,
    durable: Vec<u8>,
    unsynced: Vec<DataOp>,
    handles: u32,
}

/// When `capture_every` takes images.
#[derive(Clone, Copy)]
struct CapturePlan {
    every: u64,
    images: usize,
    seed: u64,
}

/// The disk behind a `SimStorage` and its clones.
#[derive(Default)]
struct Disk {
    inodes: HashMap<Ino, Inode>,
    next_ino: Ino,
    entries: BTreeMap<String, Entry>,
    durable_entries: BTreeMap<String, Entry>,
    unsynced_dir: Vec<DirOp>,
    mutations: u64,
    capacity: Option<u64>,
    capture: Option<CapturePlan>,
    captured: Vec<Captured>,
}

/// SplitMix64, a tiny seeded generator: here so that the engine crate needs no RNG dependency.
struct SplitMix(u64);

impl SplitMix {
    /// The next pseudo-random number.
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A pseudo-random number below `n` (0 when `n` is 0).
    fn below(&mut self, n: u64) -> u64 {
        self.next().checked_rem(n).unwrap_or(0)
    }

    /// True with probability 1/`n`.
    fn one_in(&mut self, n: u64) -> bool {
        self.below(n) == 0
    }

    /// How many of `n` operations a prefix keeps: half the time one of the last few counts.
    fn prefix_len(&mut self, n: usize) -> usize {
        let n = n as u64;
        let kept = if self.one_in(2) {
            n - self.below(n.min(3) + 1)
        } else {
            self.below(n + 1)
        };
        kept as usize
    }
}

impl Keep {
    /// A mode chosen by `rng`, each of the four equally likely.
    fn pick(rng: &mut SplitMix) -> Self {
        match rng.below(4) {
            0 => Self::Nothing,
            1 => Self::Everything,
            2 => Self::Prefix,
            _ => Self::Subset {
                lose_one_in: if rng.one_in(2) { 2 } else { 8 },
            },
        }
    }
}

impl SimStorage {
    /// A new, empty disk.
    pub fn new() -> Self {
        Self::default()
    }

    /// A new, independent disk holding what a power cut now could leave (see the module docs).
    pub fn crash_image(&self, seed: u64) -> SimStorage {
        SimStorage(Rc::new(RefCell::new(self.0.borrow().crash_image(seed))))
    }

    /// The number of mutating calls made so far (writes, `set_len`s, syncs, creates, renames,
    /// removes, `create_dir`s; failed calls do not count).
    pub fn mutations(&self) -> u64 {
        self.0.borrow().mutations
    }

    /// From now on, after every `every`-th mutating call, takes `images_per_point` crash images
    /// (seeds derived from `seed`, the call's number and the image's number) for
    /// `take_captured`; `every` 0 stops capturing.
    pub fn capture_every(&self, every: u64, images_per_point: usize, seed: u64) {
        self.0.borrow_mut().capture = (every > 0).then_some(CapturePlan {
            every,
            images: images_per_point,
            seed,
        });
    }

    /// The crash images captured since the last call, oldest first.
    pub fn take_captured(&self) -> Vec<Captured> {
        std::mem::take(&mut self.0.borrow_mut().captured)
    }

    /// Makes writes and `set_len`s that would grow the stored bytes past `bytes` fail with
    /// `StorageFull`; `None` lifts the limit. Crash images inherit it.
    pub fn set_capacity(&self, bytes: Option<u64>) {
        self.0.borrow_mut().capacity = bytes;
    }

    /// Syncs the data of every top-level file whose name `pick` accepts, then the directory,
    /// as a host that syncs the engine's files from outside does (what the host's `LogSync`
    /// does between `maintain` steps).
    pub fn sync_files_then_dir(&self, pick: impl Fn(&str) -> bool) {
        let mut disk = self.0.borrow_mut();
        let picked: Vec<Ino> = disk
            .entries
            .iter()
            .filter(|(name, _)| !name.contains('/') && pick(name))
            .filter_map(|(_, entry)| match entry {
                Entry::File(ino) => Some(*ino),
                Entry::Dir => None,
            })
            .collect();
        for ino in picked {
            disk.sync_data(ino);
        }
        disk.sync_dir();
    }

    /// Bytes stored in files that are named or still open.
    pub fn stored_bytes(&self) -> u64 {
        self.0.borrow().stored_bytes()
    }

    /// A handle on inode `ino`.
    fn handle(&self, disk: &mut Disk, ino: Ino, writable: bool) -> SimFile {
        disk.inode(ino).handles += 1;
        SimFile {
            disk: self.clone(),
            ino,
            writable,
        }
    }
}

impl Storage for SimStorage {
    type File = SimFile;

    fn open(&self, name: &str, create: bool) -> io::Result<SimFile> {
        let mut disk = self.0.borrow_mut();
        let ino = match disk.file(name) {
            Err(e) if e.kind() == io::ErrorKind::NotFound && create => disk.create(name)?,
            other => other?,
        };
        Ok(self.handle(&mut disk, ino, true))
    }

    fn open_read_only(&self, name: &str) -> io::Result<SimFile> {
        let mut disk = self.0.borrow_mut();
        let ino = disk.file(name)?;
        Ok(self.handle(&mut disk, ino, false))
    }

    fn list(&self) -> io::Result<Vec<String>> {
        let disk = self.0.borrow();
        Ok(disk
            .entries
            .iter()
            .filter(|(name, entry)| !name.contains('/') && matches!(entry, Entry::File(_)))
            .map(|(name, _)| name.clone())
            .collect())
    }

    fn remove(&self, name: &str) -> io::Result<()> {
        let mut disk = self.0.borrow_mut();
        match disk.entries.get(name) {
            None => Ok(()),
            Some(Entry::Dir) => Err(error(io::ErrorKind::IsADirectory, name)),
            Some(Entry::File(_)) => {
                disk.record_dir(DirOp::Remove(name.to_owned()));
                Ok(())
            }
        }
    }

    fn exists(&self, name: &str) -> io::Result<bool> {
        Ok(self.0.borrow().entries.contains_key(name))
    }

    fn rename(&self, from: &str, to: &str) -> io::Result<()> {
        let mut disk = self.0.borrow_mut();
        match disk.entries.get(from) {
            None => return Err(error(io::ErrorKind::NotFound, from)),
            Some(Entry::Dir) => return Err(error(io::ErrorKind::Unsupported, from)),
            Some(Entry::File(_)) => {}
        }
        if disk.entries.get(to) == Some(&Entry::Dir) {
            return Err(error(io::ErrorKind::IsADirectory, to));
        }
        if !parent_exists(&disk.entries, to) {
            return Err(error(io::ErrorKind::NotFound, to));
        }
        if from != to {
            disk.record_dir(DirOp::Rename(from.to_owned(), to.to_owned()));
        }
        Ok(())
    }

    fn sync_dir(&self) -> io::Result<()> {
        self.0.borrow_mut().sync_dir();
        Ok(())
    }

    fn create_dir(&self, name: &str) -> io::Result<()> {
        let mut disk = self.0.borrow_mut();
        if disk.entries.contains_key(name) {
            return Ok(());
        }
        if !parent_exists(&disk.entries, name) {
            return Err(error(io::ErrorKind::NotFound, name));
        }
        disk.record_dir(DirOp::CreateDir(name.to_owned()));
        Ok(())
    }
}

impl SimFile {
    /// `PermissionDenied` unless the handle was opened for writing.
    fn check_writable(&self) -> io::Result<()> {
        if self.writable {
            Ok(())
        } else {
            Err(error(io::ErrorKind::PermissionDenied, "a read-only handle"))
        }
    }
}

impl StorageFile for SimFile {
    fn size(&self) -> io::Result<u64> {
        Ok(self.disk.0.borrow().inodes[&self.ino].current.len() as u64)
    }

    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        let disk = self.disk.0.borrow();
        let content = &disk.inodes[&self.ino].current;
        let start = usize::try_from(offset).unwrap_or(usize::MAX);
        match content.get(start..start.saturating_add(buf.len())) {
            Some(bytes) => {
                buf.copy_from_slice(bytes);
                Ok(())
            }
            None => Err(io::ErrorKind::UnexpectedEof.into()),
        }
    }

    fn write_all_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        self.check_writable()?;
        let op = DataOp::Write {
            offset,
            bytes: buf.to_vec(),
        };
        self.disk.0.borrow_mut().record_data(self.ino, op)
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        self.check_writable()?;
        self.disk
            .0
            .borrow_mut()
            .record_data(self.ino, DataOp::SetLen(len))
    }

    fn sync_data(&self) -> io::Result<()> {
        self.disk.0.borrow_mut().sync_data(self.ino);
        Ok(())
    }
}

impl Drop for SimFile {
    fn drop(&mut self) {
        self.disk.0.borrow_mut().inode(self.ino).handles -= 1;
    }
}

impl Disk {
    /// The inode `ino`, which exists while anything can still reach it.
    fn inode(&mut self, ino: Ino) -> &mut Inode {
        self.inodes.get_mut(&ino).expect("a reachable inode")
    }

    /// The inode that the file `name` names.
    fn file(&self, name: &str) -> io::Result<Ino> {
        match self.entries.get(name) {
            Some(Entry::File(ino)) => Ok(*ino),
            Some(Entry::Dir) => Err(error(io::ErrorKind::IsADirectory, name)),
            None => Err(error(io::ErrorKind::NotFound, name)),
        }
    }

    /// Creates the empty file `name` (its parent must exist).
    fn create(&mut self, name: &str) -> io::Result<Ino> {
        if !parent_exists(&self.entries, name) {
            return Err(error(io::ErrorKind::NotFound, name));
        }
        let ino = self.next_ino;
        self.next_ino += 1;
        self.inodes.insert(ino, Inode::default());
        self.record_dir(DirOp::Create(name.to_owned(), ino));
        Ok(ino)
    }

    /// Applies a checked directory operation and records it as unsynced.
    fn record_dir(&mut self, op: DirOp) {
        op.apply(&mut self.entries);
        self.unsynced_dir.push(op);
        self.mutated();
    }

    /// Applies a data operation to inode `ino` and records it as unsynced, unless it would
    /// grow the stored bytes past the capacity.
    fn record_data(&mut self, ino: Ino, op: DataOp) -> io::Result<()> {
        if let Some(capacity) = self.capacity {
            let len = self.inode(ino).current.len() as u64;
            let grows_by = op.end().saturating_sub(len);
            if grows_by > 0 && self.stored_bytes() + grows_by > capacity {
                return Err(error(io::ErrorKind::StorageFull, "the simulated disk"));
            }
        }
        let inode = self.inode(ino);
        op.apply(&mut inode.current);
        inode.unsynced.push(op);
        self.mutated();
        Ok(())
    }

    /// Makes inode `ino`'s content durable.
    fn sync_data(&mut self, ino: Ino) {
        let inode = self.inode(ino);
        inode.durable.clone_from(&inode.current);
        inode.unsynced.clear();
        self.mutated();
    }

    /// Makes every directory operation durable and forgets the inodes nothing reaches now.
    fn sync_dir(&mut self) {
        self.durable_entries.clone_from(&self.entries);
        self.unsynced_dir.clear();
        let named = named_inodes(&self.entries);
        self.inodes
            .retain(|ino, inode| inode.handles > 0 || named.contains(ino));
        self.mutated();
    }

    /// Bytes in the inodes that are named or open.
    fn stored_bytes(&self) -> u64 {
        let named = named_inodes(&self.entries);
        self.inodes
            .iter()
            .filter(|(ino, inode)| inode.handles > 0 || named.contains(ino))
            .map(|(_, inode)| inode.current.len() as u64)
            .sum()
    }

    /// Counts a mutating call and takes the crash images the capture plan asks for.
    fn mutated(&mut self) {
        self.mutations += 1;
        let Some(plan) = self.capture else {
            return;
        };
        if !self.mutations.is_multiple_of(plan.every) {
            return;
        }
        for image in 0..plan.images as u64 {
            let seed = mix(mix(plan.seed, self.mutations), image);
            let disk = SimStorage(Rc::new(RefCell::new(self.crash_image(seed))));
            self.captured.push(Captured {
                mutation: self.mutations,
                seed,
                disk,
            });
        }
    }

    /// What a power cut now could leave, as chosen by `seed`.
    fn crash_image(&self, seed: u64) -> Disk {
        let mut rng = SplitMix(seed);
        let data = Keep::pick(&mut rng);
        let dir = Keep::pick(&mut rng);
        let entries = self.crash_entries(dir, &mut rng);
        let mut inodes = HashMap::new();
        // In name order, so that the seed alone decides the image.
        for entry in entries.values() {
            if let Entry::File(ino) = *entry {
                let content = self.inodes[&ino].crash_content(data, &mut rng);
                inodes.insert(ino, Inode::holding(content));
            }
        }
        Disk {
            inodes,
            next_ino: self.next_ino,
            durable_entries: entries.clone(),
            entries,
            capacity: self.capacity,
            ..Disk::default()
        }
    }

    /// The directory entries a crash keeps in mode `keep`.
    fn crash_entries(&self, keep: Keep, rng: &mut SplitMix) -> BTreeMap<String, Entry> {
        let mut entries = self.durable_entries.clone();
        let ops = &self.unsynced_dir;
        match keep {
            Keep::Nothing => {}
            Keep::Everything => entries.clone_from(&self.entries),
            Keep::Prefix => {
                for op in &ops[..rng.prefix_len(ops.len())] {
                    op.apply(&mut entries);
                }
            }
            Keep::Subset { lose_one_in } => {
                for op in ops {
                    if !rng.one_in(lose_one_in) {
                        op.apply(&mut entries);
                    }
                }
            }
        }
        entries
    }
}

impl Inode {
    /// An inode whose content is all durable.
    fn holding(content: Vec<u8>) -> Self {
        Self {
            current: content.clone(),
            durable: content,
            ..Self::default()
        }
    }

    /// The content a crash keeps in mode `keep`.
    fn crash_content(&self, keep: Keep, rng: &mut SplitMix) -> Vec<u8> {
        let mut content = self.durable.clone();
        let ops = &self.unsynced;
        match keep {
            Keep::Nothing => {}
            Keep::Everything => content.clone_from(&self.current),
            Keep::Prefix => {
                let kept = rng.prefix_len(ops.len());
                for op in &ops[..kept] {
                    op.apply(&mut content);
                }
                if let Some(next) = ops.get(kept) {
                    next.apply_torn(&mut content, rng);
                }
            }
            Keep::Subset { lose_one_in } => {
                for op in ops {
                    if rng.one_in(lose_one_in) {
                        continue;
                    }
                    if rng.one_in(4) {
                        op.apply_torn(&mut content, rng);
                    } else {
                        op.apply(&mut content);
                    }
                }
            }
        }
        content
    }
}

impl DataOp {
    /// The file length this operation needs (a write's end, a `set_len`'s length).
    fn end(&self) -> u64 {
        match self {
            Self::Write { offset, bytes } if !bytes.is_empty() => offset + bytes.len() as u64,
            Self::Write { .. } => 0,
            Self::SetLen(len) => *len,
        }
    }

    /// Applies the operation to `content`.
    fn apply(&self, content: &mut Vec<u8>) {
        match self {
            Self::Write { offset, bytes } => write_at(content, *offset, bytes),
            Self::SetLen(len) => content.resize(to_usize(*len), 0),
        }
    }

    /// Applies a torn version: a write keeps a random prefix of its bytes or a random subset
    /// of its sectors (the file growing to the write's end); a `set_len` is lost.
    fn apply_torn(&self, content: &mut Vec<u8>, rng: &mut SplitMix) {
        let Self::Write { offset, bytes } = self else {
            return;
        };
        if rng.one_in(2) {
            let kept = rng.below(bytes.len() as u64) as usize;
            write_at(content, *offset, &bytes[..kept]);
            return;
        }
        let end = offset + bytes.len() as u64;
        if (content.len() as u64) < end {
            content.resize(to_usize(end), 0);
        }
        let mut at = *offset;
        while at < end {
            let sector_end = ((at / SECTOR + 1) * SECTOR).min(end);
            if rng.one_in(2) {
                let (from, to) = (to_usize(at - offset), to_usize(sector_end - offset));
                content[to_usize(at)..to_usize(sector_end)].copy_from_slice(&bytes[from..to]);
            }
            at = sector_end;
        }
    }
}

impl DirOp {
    /// Applies the operation to `entries`, or does nothing if it no longer applies.
    fn apply(&self, entries: &mut BTreeMap<String, Entry>) {
        match self {
            Self::Create(name, ino) => {
                if !entries.contains_key(name) && parent_exists(entries, name) {
                    entries.insert(name.clone(), Entry::File(*ino));
                }
            }
            Self::Rename(from, to) => {
                let Some(&Entry::File(ino)) = entries.get(from) else {
                    return;
                };
                if entries.get(to) != Some(&Entry::Dir) && parent_exists(entries, to) {
                    entries.remove(from);
                    entries.insert(to.clone(), Entry::File(ino));
                }
            }
            Self::Remove(name) => {
                if matches!(entries.get(name), Some(Entry::File(_))) {
                    entries.remove(name);
                }
            }
            Self::CreateDir(name) => {
                if !entries.contains_key(name) && parent_exists(entries, name) {
                    entries.insert(name.clone(), Entry::Dir);
                }
            }
        }
    }
}

/// A seed derived from `seed` and `n`, different for every pair in practice.
fn mix(seed: u64, n: u64) -> u64 {
    SplitMix(seed ^ SplitMix(n).next()).next()
}

/// Writes `bytes` into `content` at `offset`, zero-filling any gap before it.
fn write_at(content: &mut Vec<u8>, offset: u64, bytes: &[u8]) {
    if bytes.is_empty() {
        return;
    }
    let start = to_usize(offset);
    let end = start + bytes.len();
    if content.len() < end {
        content.resize(end, 0);
    }
    content[start..end].copy_from_slice(bytes);
}

/// True if the directory that would hold `name` exists.
fn parent_exists(entries: &BTreeMap<String, Entry>, name: &str) -> bool {
    match name.rsplit_once('/') {
        None => true,
        Some((parent, _)) => entries.get(parent) == Some(&Entry::Dir),
    }
}

/// The inodes that `entries` name.
fn named_inodes(entries: &BTreeMap<String, Entry>) -> HashSet<Ino> {
    entries
        .values()
        .filter_map(|entry| match entry {
            Entry::File(ino) => Some(*ino),
            Entry::Dir => None,
        })
        .collect()
}

/// A file offset or length as an index (the simulated disk lives in memory).
fn to_usize(n: u64) -> usize {
    usize::try_from(n).expect("a simulated file fits in memory")
}

/// An error of `kind` about `what`.
fn error(kind: io::ErrorKind, what: &str) -> io::Error {
    io::Error::new(kind, format!("{what}: {kind} (simulated disk)"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use io::ErrorKind::{NotFound, PermissionDenied, StorageFull, UnexpectedEof};

    /// The content of `name` on `disk`; `None` if there is no such file.
    fn read(disk: &SimStorage, name: &str) -> Option<Vec<u8>> {
        disk.read_file(name).unwrap()
    }

    /// Crash images of `disk` for seeds 0..200.
    fn images(disk: &SimStorage) -> Vec<SimStorage> {
        (0..200).map(|seed| disk.crash_image(seed)).collect()
    }

    /// The sorted `list` of `disk`.
    fn names(disk: &impl Storage) -> Vec<String> {
        let mut names = disk.list().unwrap();
        names.sort();
        names
    }

    /// A file `name` holding `bytes`, with both its data and its name synced.
    fn durable_file(disk: &SimStorage, name: &str, bytes: &[u8]) -> SimFile {
        let file = disk.open(name, true).unwrap();
        file.write_all_at(bytes, 0).unwrap();
        file.sync_data().unwrap();
        disk.sync_dir().unwrap();
        file
    }

    /// The contract `StdStorage` and `SimStorage` both keep.
    fn check_semantics(s: &impl Storage) {
        let kind = |r: io::Result<()>| r.unwrap_err().kind();
        assert_eq!(s.open("a", false).err().unwrap().kind(), NotFound);
        let a = s.open("a", true).unwrap();
        a.write_all_at(b"hello", 0).unwrap();
        assert_eq!(a.size().unwrap(), 5);
        assert_eq!(kind(a.read_exact_at(&mut [0; 3], 4)), UnexpectedEof);
        a.set_len(7).unwrap();
        assert_eq!(read_via(&a), b"hello\0\0");
        a.set_len(4).unwrap();
        let ro = s.open_read_only("a").unwrap();
        // std reports EBADF and EINVAL here, the simulated disk `PermissionDenied` (as wasi).
        assert!(ro.write_all_at(b"x", 0).is_err() && ro.set_len(0).is_err());
        assert_eq!(s.open_read_only("nope").err().unwrap().kind(), NotFound);
        s.create_dir("sub").unwrap();
        s.create_dir("sub").unwrap();
        assert_eq!(names(s), ["a"]);
        assert_eq!(kind(s.rename("nope", "b")), NotFound);
        s.rename("a", "b").unwrap();
        a.write_all_at(b"XY", 2).unwrap();
        assert_eq!(s.read_file("b").unwrap().unwrap(), b"heXY");
        s.open("c", true).unwrap().write_all_at(b"c", 0).unwrap();
        s.rename("c", "b").unwrap();
        assert_eq!(s.read_file("b").unwrap().unwrap(), b"c");
        a.write_all_at(b"!", 4).unwrap();
        assert_eq!(
            read_via(&a),
            b"heXY!",
            "a replaced file lives on through its handle"
        );
        s.rename("b", "sub/b").unwrap();
        assert_eq!(names(s), Vec::<String>::new());
        assert_eq!(s.read_file("sub/b").unwrap().unwrap(), b"c");
        s.remove("nope").unwrap();
        s.remove("sub/b").unwrap();
        assert_eq!(s.read_file("sub/b").unwrap(), None);
        s.write_file_atomic("m", b"meta", true).unwrap();
        assert_eq!(names(s), ["m"]);
        assert_eq!(s.read_file("m").unwrap().unwrap(), b"meta");
    }

    /// Everything `file` holds, read through the handle.
    fn read_via(file: &impl StorageFile) -> Vec<u8> {
        let mut buf = vec![0; file.size().unwrap() as usize];
        file.read_exact_at(&mut buf, 0).unwrap();
        buf
    }

    #[test]
    fn it_behaves_like_std_storage() {
        let dir = tempfile::tempdir().unwrap();
        check_semantics(&super::super::StdStorage::new(dir.path()).unwrap());
        check_semantics(&SimStorage::new());
    }

    #[test]
    fn writes_through_a_read_only_handle_are_permission_denied() {
        let disk = SimStorage::new();
        durable_file(&disk, "f", b"1");
        let ro = disk.open_read_only("f").unwrap();
        assert_eq!(
            ro.write_all_at(b"x", 0).unwrap_err().kind(),
            PermissionDenied
        );
        assert_eq!(ro.set_len(0).unwrap_err().kind(), PermissionDenied);
    }

    #[test]
    fn synced_data_survives_every_crash_and_unsynced_data_only_some() {
        let disk = SimStorage::new();
        let file = durable_file(&disk, "f", b"abc");
        file.write_all_at(b"def", 3).unwrap();
        let contents: Vec<Vec<u8>> = images(&disk)
            .iter()
            .map(|i| read(i, "f").unwrap())
            .collect();
        for c in &contents {
            assert!(c.len() <= 6 && c.starts_with(b"abc"), "{c:?}");
            assert!(c[3..]
                .iter()
                .zip(b"def")
                .all(|(got, want)| got == want || *got == 0));
        }
        assert!(contents.iter().any(|c| c == b"abc"), "lost");
        assert!(contents.iter().any(|c| c == b"abcdef"), "kept");
        assert!(contents.iter().any(|c| c == b"abcd"), "torn");
        assert!(
            contents.iter().any(|c| c == b"abc\0\0\0"),
            "grown without its data"
        );
    }

    #[test]
    fn a_lost_write_before_a_kept_one_leaves_zeros() {
        let disk = SimStorage::new();
        let file = durable_file(&disk, "f", b"");
        file.write_all_at(b"aaaa", 0).unwrap();
        file.write_all_at(b"bbbb", 4).unwrap();
        let contents: Vec<Vec<u8>> = images(&disk)
            .iter()
            .map(|i| read(i, "f").unwrap())
            .collect();
        assert!(contents.iter().any(|c| c == b"\0\0\0\0bbbb"));
    }

    #[test]
    fn a_new_name_needs_sync_dir_even_when_its_data_is_synced() {
        let disk = SimStorage::new();
        let file = disk.open("f", true).unwrap();
        file.write_all_at(b"data", 0).unwrap();
        file.sync_data().unwrap();
        let found: Vec<Vec<u8>> = images(&disk).iter().filter_map(|i| read(i, "f")).collect();
        assert!(!found.is_empty() && found.len() < 200, "{}", found.len());
        assert!(found.iter().all(|c| c == b"data"));
        disk.sync_dir().unwrap();
        assert!(images(&disk)
            .iter()
            .all(|i| read(i, "f").unwrap() == b"data"));
    }

    #[test]
    fn a_rename_can_land_without_its_data() {
        let disk = SimStorage::new();
        durable_file(&disk, "name", b"old");
        disk.open("tmp", true)
            .unwrap()
            .write_all_at(b"new", 0)
            .unwrap();
        disk.rename("tmp", "name").unwrap();
        disk.sync_dir().unwrap();
        let seen: HashSet<Vec<u8>> = images(&disk)
            .iter()
            .map(|i| read(i, "name").unwrap())
            .collect();
        assert!(
            seen.contains(&b""[..]) && seen.contains(&b"new"[..]),
            "{seen:?}"
        );
        assert!(!seen.contains(&b"old"[..]), "the rename was synced");
    }

    #[test]
    fn unsynced_directory_operations_are_kept_in_any_combination() {
        let disk = SimStorage::new();
        durable_file(&disk, "a", b"1");
        durable_file(&disk, "b", b"2");
        disk.remove("a").unwrap();
        disk.rename("b", "c").unwrap();
        let seen: HashSet<Vec<String>> = images(&disk).iter().map(names).collect();
        let expected: HashSet<Vec<String>> = [vec!["a", "b"], vec!["b"], vec!["a", "c"], vec!["c"]]
            .into_iter()
            .map(|v| v.into_iter().map(String::from).collect())
            .collect();
        assert_eq!(seen, expected);
    }

    #[test]
    fn a_handle_follows_its_inode_through_rename_and_remove() {
        let disk = SimStorage::new();
        let file = durable_file(&disk, "a", b"1");
        disk.rename("a", "b").unwrap();
        disk.sync_dir().unwrap();
        file.write_all_at(b"2", 1).unwrap();
        file.sync_data().unwrap();
        assert!(images(&disk).iter().all(|i| read(i, "b").unwrap() == b"12"));
        disk.remove("b").unwrap();
        disk.sync_dir().unwrap();
        file.write_all_at(b"3", 2).unwrap();
        assert_eq!(read_via(&file), b"123");
        assert!(images(&disk).iter().all(|i| names(i).is_empty()));
    }

    #[test]
    fn writes_past_the_capacity_fail_with_storage_full() {
        let disk = SimStorage::new();
        disk.set_capacity(Some(100));
        let a = disk.open("a", true).unwrap();
        a.write_all_at(&[1; 60], 0).unwrap();
        let b = disk.open("b", true).unwrap();
        let full = |r: io::Result<()>| r.unwrap_err().kind() == StorageFull;
        assert!(full(b.write_all_at(&[2; 50], 0)));
        assert_eq!(b.size().unwrap(), 0, "a failed write changes nothing");
        b.write_all_at(&[2; 40], 0).unwrap();
        assert!(full(b.set_len(41)));
        a.write_all_at(&[3; 60], 0).unwrap();
        a.set_len(10).unwrap();
        disk.remove("a").unwrap();
        assert_eq!(disk.stored_bytes(), 50, "an open file keeps its space");
        drop(a);
        assert_eq!(disk.stored_bytes(), 40);
        b.set_len(100).unwrap();
        disk.set_capacity(None);
        b.set_len(1000).unwrap();
    }

    #[test]
    fn capture_every_takes_images_after_each_mutation() {
        let disk = SimStorage::new();
        disk.capture_every(1, 2, 7);
        let file = disk.open("f", true).unwrap();
        file.write_all_at(b"x", 0).unwrap();
        file.sync_data().unwrap();
        let captured = disk.take_captured();
        let points: Vec<u64> = captured.iter().map(|c| c.mutation).collect();
        assert_eq!(points, [1, 1, 2, 2, 3, 3]);
        let seeds: HashSet<u64> = captured.iter().map(|c| c.seed).collect();
        assert_eq!(seeds.len(), 6);
        assert!(disk.take_captured().is_empty());
        disk.capture_every(0, 0, 0);
        disk.sync_dir().unwrap();
        assert!(disk.take_captured().is_empty());
        assert_eq!(disk.mutations(), 4);
    }
}
