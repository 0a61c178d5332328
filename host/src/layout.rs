//! The cache directory's layout: the host's lock file, the engine's data subdirectory, plugin
//! stores, their private modes, and the migration from the flat layout of earlier versions.
//!
//! ```text
//! <dir>/              created 0700 (0770 with group access)
//!   .lock             the host's advisory lock; opened without following symlinks, 0600
//!   data/             the engine's files, the only directory the sandboxed guest sees
//!   plugins/<name>/   one plugin's store: a cache directory with this same layout
//! ```
//!
//! Everything the host opens below `<dir>` is opened without following a symlink planted
//! there: `.lock` with `O_NOFOLLOW`, `data/` and `plugins/…` only if they are real
//! directories. Before `data/` existed, the engine's files lay in `<dir>` itself and the guest
//! could reach `.lock`; [`data_directory`] moves them into `data/` (one rename each, under the
//! lock, resumed after a crash) before the engine starts.

use std::fs::{self, DirBuilder, File, OpenOptions, TryLockError};
use std::io;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use persistent_cache_guest::format::{
    parse_segment_file_name, META_FILE, SNAPSHOT_FILE, TMP_SUFFIX,
};

use crate::error::{Error, Result};

/// Name of the advisory lock file inside the cache directory.
pub const LOCK_FILE_NAME: &str = ".lock";
/// Name of the subdirectory that holds the engine's files (the guest's only preopen).
pub const DATA_DIRECTORY: &str = "data";

/// The permission bits of what the host and the engine create in a cache directory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Modes {
    /// Directories: 0700, or 0770 with group access.
    pub(crate) directory: u32,
    /// Files: 0600, or 0660 with group access.
    pub(crate) file: u32,
}

impl Modes {
    /// Private to the user, or shared with the directory's group too.
    pub(crate) fn new(group_access: bool) -> Modes {
        if group_access {
            Modes {
                directory: 0o770,
                file: 0o660,
            }
        } else {
            Modes {
                directory: 0o700,
                file: 0o600,
            }
        }
    }
}

fn directory_error(path: &Path) -> impl FnOnce(io::Error) -> Error + '_ {
    move |source| Error::Directory {
        path: path.to_path_buf(),
        source,
    }
}

/// Creates the cache directory if needed (missing parents as usual, the directory itself
/// with `modes.directory`) and returns its canonical path.
///
/// Edge cases: an existing directory keeps its mode (it is the user's); a path through a
/// symlink is followed (the user named it); a file in the way → [`Error::Directory`].
pub(crate) fn create_cache_directory(directory: &Path, modes: Modes) -> Result<PathBuf> {
    let error = directory_error(directory);
    if let Some(parent) = directory.parent().filter(|p| !p.as_os_str().is_empty()) {
        fs::create_dir_all(parent).map_err(directory_error(directory))?;
    }
    match make_directory(directory, modes.directory) {
        Ok(()) => {}
        Err(err) if err.kind() == io::ErrorKind::AlreadyExists => {}
        Err(err) => return Err(error(err)),
    }
    existing_cache_directory(directory)
}

/// Creates the directory `path` with exactly `mode` (not masked by the umask).
fn make_directory(path: &Path, mode: u32) -> io::Result<()> {
    DirBuilder::new().mode(mode).create(path)?;
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
}

/// The subdirectory `name` of `parent`, created with `mode` if missing.
///
/// Edge cases: a symlink, file or anything but a real directory under that name →
/// [`Error::Directory`] saying so (it is never followed).
pub(crate) fn real_subdirectory(parent: &Path, name: &str, mode: u32) -> Result<PathBuf> {
    let path = parent.join(name);
    match make_directory(&path, mode) {
        Ok(()) => return Ok(path),
        Err(err) if err.kind() == io::ErrorKind::AlreadyExists => {}
        Err(err) => return Err(directory_error(&path)(err)),
    }
    let kind = fs::symlink_metadata(&path)
        .map_err(directory_error(&path))?
        .file_type();
    if kind.is_symlink() {
        return Err(directory_error(&path)(io::Error::new(
            io::ErrorKind::InvalidInput,
            "is a symlink; refusing to follow it out of the cache directory",
        )));
    }
    if !kind.is_dir() {
        return Err(directory_error(&path)(io::Error::new(
            io::ErrorKind::NotADirectory,
            "is not a directory",
        )));
    }
    Ok(path)
}

/// How long [`lock`] keeps trying a held directory lock before reporting `Locked`. A child
/// process forked by this one shares the lock until it calls `exec`, so a cache closed and
/// reopened while another thread spawns a process can find its own lock briefly held.
const LOCK_WAIT: Duration = Duration::from_millis(250);

/// Takes the advisory lock on `<directory>/.lock` for as long as the cache is open, retrying for
/// up to [`LOCK_WAIT`]: exclusive with `exclusive` (no other process may open the directory),
/// else shared with every other non-exclusive opener (each write then takes the write lock,
/// see `sharing.rs`). `read_only` opens `.lock` read-only and never creates it.
///
/// Edge cases: another process holds it (exclusively, or at all when we want it exclusively)
/// → [`Error::Locked`]; `.lock` is a symlink (or not a regular file) → [`Error::Directory`],
/// and nothing is created at the symlink's target; `read_only` and no `.lock` →
/// [`Error::Directory`] (not a cache directory).
pub(crate) fn lock(
    directory: &Path,
    modes: Modes,
    read_only: bool,
    exclusive: bool,
) -> Result<File> {
    let started = Instant::now();
    loop {
        match try_lock(directory, modes, read_only, exclusive) {
            Err(Error::Locked { .. }) if started.elapsed() < LOCK_WAIT => {
                std::thread::sleep(Duration::from_millis(2));
            }
            outcome => return outcome,
        }
    }
}

/// Opens one of the host's own files in a cache directory (`.lock`, `.write-lock`) for reading
/// and, unless `read_only`, writing — created with `modes` if missing — without following a
/// symlink planted there. Edge cases: a symlink → an error saying so; not a regular file →
/// `InvalidInput`; `read_only` and missing → `NotFound`.
pub(crate) fn open_host_file(path: &Path, modes: Modes, read_only: bool) -> io::Result<File> {
    let file = OpenOptions::new()
        .read(true)
        .write(!read_only)
        .create(!read_only)
        .truncate(false)
        .mode(modes.file)
        .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
        .open(path)
        .map_err(|source| {
            if source.raw_os_error() == Some(rustix::io::Errno::LOOP.raw_os_error()) {
                io::Error::new(source.kind(), "is a symlink; refusing to follow it")
            } else {
                source
            }
        })?;
    if !file.metadata()?.is_file() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "is not a regular file",
        ));
    }
    Ok(file)
}

/// One attempt at the advisory lock on `<directory>/.lock` (see [`lock`]).
fn try_lock(directory: &Path, modes: Modes, read_only: bool, exclusive: bool) -> Result<File> {
    let path = directory.join(LOCK_FILE_NAME);
    let file = open_host_file(&path, modes, read_only).map_err(|source| Error::Directory {
        path: path.clone(),
        source,
    })?;
    let meta = file.metadata().map_err(directory_error(&path))?;
    if !read_only && meta.permissions().mode() & 0o777 != modes.file {
        // The umask may have narrowed a group mode; an older version made it 0644.
        if let Err(err) = file.set_permissions(fs::Permissions::from_mode(modes.file)) {
            tracing::debug!(path = %path.display(), error = %err, "cannot set the lock file's mode");
        }
    }
    let locked = if exclusive && !read_only {
        file.try_lock()
    } else {
        file.try_lock_shared()
    };
    match locked {
        Ok(()) => Ok(file),
        Err(TryLockError::WouldBlock) => Err(Error::Locked {
            path: directory.to_path_buf(),
        }),
        Err(TryLockError::Error(source)) => Err(Error::Directory { path, source }),
    }
}

/// The canonical path of `directory`, which must exist already (a read-only open creates
/// nothing).
///
/// Edge cases: missing, or not a directory → [`Error::Directory`].
pub(crate) fn existing_cache_directory(directory: &Path) -> Result<PathBuf> {
    let canonical = fs::canonicalize(directory).map_err(directory_error(directory))?;
    if !canonical.is_dir() {
        return Err(directory_error(directory)(io::Error::new(
            io::ErrorKind::NotADirectory,
            "is not a directory",
        )));
    }
    Ok(canonical)
}

/// The engine's existing data directory `<directory>/data`, for a read-only open: nothing is
/// created or moved.
///
/// Edge cases: `data` missing, a symlink or a file → [`Error::Directory`] (a cache of the flat
/// layout of version 0.2 must be opened for writing once, to move its files).
pub(crate) fn existing_data_directory(directory: &Path) -> Result<PathBuf> {
    let data = directory.join(DATA_DIRECTORY);
    let meta = fs::symlink_metadata(&data).map_err(directory_error(&data))?;
    if !meta.is_dir() {
        return Err(directory_error(&data)(io::Error::new(
            io::ErrorKind::InvalidInput,
            "is not a real directory",
        )));
    }
    Ok(data)
}

/// True for the names of files the engine owns (what the flat layout kept in `<dir>`).
fn is_engine_file(name: &str) -> bool {
    let base = name.strip_suffix(TMP_SUFFIX).unwrap_or(name);
    base == META_FILE || base == SNAPSHOT_FILE || parse_segment_file_name(base).is_some()
}

/// The engine's data directory `<directory>/data`, created if missing, with any engine files
/// of the flat layout moved into it first. Call it with the directory lock held.
///
/// Edge cases: `data` is a symlink or a file → [`Error::Directory`]; an engine file that is a
/// symlink is not moved (the engine ignores it); a migration cut short by a crash is resumed
/// (each file is one rename, and a file is never in both places).
pub(crate) fn data_directory(directory: &Path, modes: Modes) -> Result<PathBuf> {
    let data = real_subdirectory(directory, DATA_DIRECTORY, modes.directory)?;
    let entries = fs::read_dir(directory).map_err(directory_error(directory))?;
    let mut moved = 0usize;
    for entry in entries {
        let entry = entry.map_err(directory_error(directory))?;
        let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
            continue;
        };
        let is_file = entry.file_type().is_ok_and(|kind| kind.is_file());
        if !is_file || !is_engine_file(&name) {
            continue;
        }
        let from = entry.path();
        fs::rename(&from, data.join(&name)).map_err(directory_error(&from))?;
        moved += 1;
    }
    if moved > 0 {
        tracing::info!(directory = %directory.display(), files = moved, "moved the engine's files into data/ (layout of version 0.2)");
    }
    Ok(data)
}

/// The plugin stores under `directory/plugins/` (real directories only; symlinks and files
/// there are skipped), by name.
///
/// Edge cases: no `plugins/` → empty; an unreadable one → its I/O error.
pub(crate) fn plugin_stores(directory: &Path) -> io::Result<Vec<(String, PathBuf)>> {
    let plugins = directory.join(crate::plugin::PLUGINS_DIRECTORY);
    let entries = match fs::read_dir(&plugins) {
        Ok(entries) => entries,
        Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(err) => return Err(err),
    };
    let mut stores = Vec::new();
    for entry in entries {
        let entry = entry?;
        let is_dir = entry.file_type().is_ok_and(|kind| kind.is_dir());
        if let (true, Some(name)) = (is_dir, entry.file_name().to_str()) {
            stores.push((name.to_owned(), entry.path()));
        }
    }
    stores.sort();
    Ok(stores)
}

/// Bytes the engine's files of the cache directory `directory` occupy (what its `volume`
/// counts), read from the file sizes; 0 for a directory without data.
pub(crate) fn engine_bytes(directory: &Path) -> u64 {
    [directory.join(DATA_DIRECTORY), directory.to_path_buf()]
        .iter()
        .filter_map(|dir| fs::read_dir(dir).ok())
        .flatten()
        .flatten()
        .filter(|entry| entry.file_name().to_str().is_some_and(is_engine_file))
        .filter_map(|entry| entry.metadata().ok())
        .filter(fs::Metadata::is_file)
        .map(|meta| meta.len())
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lock_is_exclusive_or_shared_and_released_on_drop() {
        let dir = tempfile::tempdir().expect("tempdir");
        let modes = Modes::new(false);
        let held = lock(dir.path(), modes, false, true).expect("first lock");
        for exclusive in [true, false] {
            assert!(matches!(
                lock(dir.path(), modes, false, exclusive),
                Err(Error::Locked { path }) if path == dir.path()
            ));
        }
        drop(held);
        // Shared openers share; an exclusive one waits for them all.
        let shared = lock(dir.path(), modes, false, false).expect("shared");
        let also = lock(dir.path(), modes, false, false).expect("shared too");
        assert!(matches!(
            lock(dir.path(), modes, false, true),
            Err(Error::Locked { .. })
        ));
        drop((shared, also));
        assert!(lock(dir.path(), modes, false, true).is_ok());
        let mode = fs::metadata(dir.path().join(LOCK_FILE_NAME))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn a_symlinked_lock_file_is_refused_and_its_target_never_created() {
        let dir = tempfile::tempdir().expect("tempdir");
        let target = dir.path().join("anywhere");
        let cache = dir.path().join("cache");
        fs::create_dir(&cache).unwrap();
        std::os::unix::fs::symlink(&target, cache.join(LOCK_FILE_NAME)).unwrap();
        match lock(&cache, Modes::new(false), false, false) {
            Err(Error::Directory { source, .. }) => {
                assert!(source.to_string().contains("symlink"), "{source}")
            }
            other => panic!("expected a directory error, got {other:?}"),
        }
        assert!(!target.exists(), "the symlink's target was created");
    }

    #[test]
    fn unusable_directory_is_a_directory_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("not-a-dir");
        fs::write(&file, b"x").expect("write file");
        assert!(matches!(
            create_cache_directory(&file.join("cache"), Modes::new(false)),
            Err(Error::Directory { .. })
        ));
        assert!(matches!(
            create_cache_directory(&file, Modes::new(false)),
            Err(Error::Directory { .. })
        ));
    }

    #[test]
    fn new_directories_are_private_or_group_shared() {
        let dir = tempfile::tempdir().expect("tempdir");
        for (group, want) in [(false, 0o700), (true, 0o770)] {
            let path = dir.path().join(format!("c{group}")).join("cache");
            let created = create_cache_directory(&path, Modes::new(group)).unwrap();
            let data = data_directory(&created, Modes::new(group)).unwrap();
            for made in [created, data] {
                let mode = fs::metadata(&made).unwrap().permissions().mode() & 0o777;
                assert_eq!(mode, want, "{}", made.display());
            }
        }
    }

    #[test]
    fn flat_layout_files_move_into_data_and_others_stay() {
        let dir = tempfile::tempdir().expect("tempdir");
        let d = dir.path();
        for name in [
            "pcache.meta",
            "index.hint",
            "index.hint.tmp",
            "0000000001.seg",
            "0000000002.seg",
            "notes.txt",
            "1.seg",
        ] {
            fs::write(d.join(name), name).unwrap();
        }
        std::os::unix::fs::symlink("/etc/passwd", d.join("0000000003.seg")).unwrap();
        let data = data_directory(d, Modes::new(false)).unwrap();
        let mut moved: Vec<String> = fs::read_dir(&data)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        moved.sort();
        assert_eq!(
            moved,
            [
                "0000000001.seg",
                "0000000002.seg",
                "index.hint",
                "index.hint.tmp",
                "pcache.meta"
            ]
        );
        assert_eq!(fs::read(data.join("index.hint")).unwrap(), b"index.hint");
        assert!(d.join("notes.txt").is_file() && d.join("1.seg").is_file());
        assert!(fs::symlink_metadata(d.join("0000000003.seg")).is_ok());
        // Idempotent; and a symlinked data directory is refused.
        data_directory(d, Modes::new(false)).unwrap();
        let other = tempfile::tempdir().unwrap();
        let planted = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(other.path(), planted.path().join(DATA_DIRECTORY)).unwrap();
        assert!(matches!(
            data_directory(planted.path(), Modes::new(false)),
            Err(Error::Directory { .. })
        ));
    }
}
