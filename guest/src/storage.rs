//! File access behind one small trait: `wasi:filesystem` in the component, `std::fs` natively.
//!
//! The engine only ever names files inside its one directory by the names in `format`; it
//! never turns a key into a path.

use std::io;

pub mod sim;

/// One open file of the cache directory.
pub trait StorageFile {
    /// Current size in bytes.
    fn size(&self) -> io::Result<u64>;
    /// Reads exactly `buf.len()` bytes at `offset`; `UnexpectedEof` if the file is shorter.
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()>;
    /// Writes all of `buf` at `offset`.
    fn write_all_at(&self, buf: &[u8], offset: u64) -> io::Result<()>;
    /// Truncates or extends the file to `len` bytes.
    fn set_len(&self, len: u64) -> io::Result<()>;
    /// Flushes the file's data to stable storage.
    fn sync_data(&self) -> io::Result<()>;
    /// Has the host read the `len` bytes at `offset` and check them against `body_hash` with
    /// `key` (see [`format::body_matches`](crate::format::body_matches)), keeping them for the
    /// running call's result, so they never pass through this process's memory. Storage
    /// without such a host (natively, or a host that does not offer it) declines.
    fn stage(&self, _offset: u64, _len: u32, _key: &str, _body_hash: u32) -> Staged {
        Staged::Declined
    }
}

/// What [`StorageFile::stage`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Staged {
    /// Read, checked and held by the host.
    Staged,
    /// Read, and not the body the hash announced: the record is damaged.
    Mismatch,
    /// Not done: the caller reads the bytes itself.
    Declined,
}

/// The cache directory.
pub trait Storage {
    type File: StorageFile;
    /// Opens `name` for reading and writing; creates it (empty) when `create` is true.
    fn open(&self, name: &str, create: bool) -> io::Result<Self::File>;
    /// Opens an existing `name` for reading only (writes through the file then fail); works
    /// on files and directories without write permission.
    fn open_read_only(&self, name: &str) -> io::Result<Self::File>;
    /// Names of the regular files in the directory.
    fn list(&self) -> io::Result<Vec<String>>;
    /// Removes `name`; a missing file is not an error.
    fn remove(&self, name: &str) -> io::Result<()>;
    /// Whether `name` exists (as anything; a symlink is not followed).
    fn exists(&self, name: &str) -> io::Result<bool>;
    /// Atomically replaces `to` with `from`.
    fn rename(&self, from: &str, to: &str) -> io::Result<()>;
    /// Flushes the directory's entries (new, renamed, removed files) to stable storage.
    fn sync_dir(&self) -> io::Result<()>;
    /// Creates the subdirectory `name` (an existing one is not an error); files are then moved
    /// into it with `rename(from, "name/file")`.
    fn create_dir(&self, name: &str) -> io::Result<()>;

    /// Reads a whole small file; `None` if it does not exist.
    fn read_file(&self, name: &str) -> io::Result<Option<Vec<u8>>> {
        let file = match self.open_read_only(name) {
            Ok(file) => file,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        let len = usize::try_from(file.size()?).map_err(io::Error::other)?;
        let mut buf = vec![0; len];
        file.read_exact_at(&mut buf, 0)?;
        Ok(Some(buf))
    }

    /// Replaces `name` with `bytes` atomically (write a temporary file, then rename).
    fn write_file_atomic(&self, name: &str, bytes: &[u8], sync: bool) -> io::Result<()> {
        let tmp = format!("{name}{}", crate::format::TMP_SUFFIX);
        let file = self.open(&tmp, true)?;
        file.set_len(0)?;
        file.write_all_at(bytes, 0)?;
        if sync {
            file.sync_data()?;
        }
        drop(file);
        self.rename(&tmp, name)?;
        if sync {
            self.sync_dir()?;
        }
        Ok(())
    }
}

#[cfg(not(target_arch = "wasm32"))]
pub use native::{StdFile, StdStorage};

#[cfg(not(target_arch = "wasm32"))]
mod native {
    use super::{Storage, StorageFile};
    use std::fs::{File, OpenOptions};
    use std::io;
    use std::os::unix::fs::FileExt;
    use std::path::PathBuf;

    /// A directory accessed through `std::fs` (native builds, tests and benchmarks).
    pub struct StdStorage {
        dir: PathBuf,
    }

    impl StdStorage {
        /// Uses `dir`, creating it if missing.
        pub fn new(dir: impl Into<PathBuf>) -> io::Result<Self> {
            let dir = dir.into();
            std::fs::create_dir_all(&dir)?;
            Ok(Self { dir })
        }
    }

    /// A file opened through `std::fs`.
    pub struct StdFile(File);

    impl StorageFile for StdFile {
        fn size(&self) -> io::Result<u64> {
            Ok(self.0.metadata()?.len())
        }
        fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
            FileExt::read_exact_at(&self.0, buf, offset)
        }
        fn write_all_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
            FileExt::write_all_at(&self.0, buf, offset)
        }
        fn set_len(&self, len: u64) -> io::Result<()> {
            self.0.set_len(len)
        }
        fn sync_data(&self) -> io::Result<()> {
            self.0.sync_data()
        }
    }

    impl Storage for StdStorage {
        type File = StdFile;
        fn open(&self, name: &str, create: bool) -> io::Result<StdFile> {
            OpenOptions::new()
                .read(true)
                .write(true)
                .create(create)
                .truncate(false)
                .open(self.dir.join(name))
                .map(StdFile)
        }
        fn open_read_only(&self, name: &str) -> io::Result<StdFile> {
            File::open(self.dir.join(name)).map(StdFile)
        }
        fn list(&self) -> io::Result<Vec<String>> {
            let mut names = Vec::new();
            for entry in std::fs::read_dir(&self.dir)? {
                let entry = entry?;
                if entry.file_type()?.is_file() {
                    if let Ok(name) = entry.file_name().into_string() {
                        names.push(name);
                    }
                }
            }
            Ok(names)
        }
        fn remove(&self, name: &str) -> io::Result<()> {
            match std::fs::remove_file(self.dir.join(name)) {
                Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
                other => other,
            }
        }
        fn exists(&self, name: &str) -> io::Result<bool> {
            match std::fs::symlink_metadata(self.dir.join(name)) {
                Ok(_) => Ok(true),
                Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
                Err(e) => Err(e),
            }
        }
        fn rename(&self, from: &str, to: &str) -> io::Result<()> {
            std::fs::rename(self.dir.join(from), self.dir.join(to))
        }
        fn sync_dir(&self) -> io::Result<()> {
            File::open(&self.dir)?.sync_all()
        }
        fn create_dir(&self, name: &str) -> io::Result<()> {
            match std::fs::create_dir(self.dir.join(name)) {
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
                other => other,
            }
        }
    }
}

#[cfg(target_arch = "wasm32")]
pub use wasi::{WasiFile, WasiStorage};

#[cfg(target_arch = "wasm32")]
mod wasi {
    //! Direct `wasi:filesystem` calls: no wasi-libc in between, one host call per operation,
    //! and no `mutate-directory` flag on file opens (which some hosts, like jco, refuse).
    use super::{Storage, StorageFile};
    use std::io;
    use wasip2::filesystem::preopens::get_directories;
    use wasip2::filesystem::types::{
        Descriptor, DescriptorFlags, DescriptorType, ErrorCode, OpenFlags, PathFlags,
    };

    fn io_error(code: ErrorCode) -> io::Error {
        let kind = match code {
            ErrorCode::NoEntry => io::ErrorKind::NotFound,
            ErrorCode::Access | ErrorCode::NotPermitted | ErrorCode::ReadOnly => {
                io::ErrorKind::PermissionDenied
            }
            ErrorCode::InsufficientSpace | ErrorCode::Quota => io::ErrorKind::StorageFull,
            ErrorCode::Exist => io::ErrorKind::AlreadyExists,
            ErrorCode::FileTooLarge => io::ErrorKind::FileTooLarge,
            _ => io::ErrorKind::Other,
        };
        io::Error::new(kind, format!("{} ({})", code.message(), code.name()))
    }

    /// The preopened directory, accessed through `wasi:filesystem`.
    pub struct WasiStorage {
        dir: Descriptor,
    }

    impl WasiStorage {
        /// The preopen whose guest path is `path`, reopened as ".".
        pub fn preopened(path: &str) -> io::Result<Self> {
            let preopen = get_directories()
                .into_iter()
                .find(|(_, name)| name == path)
                .map(|(dir, _)| dir)
                .ok_or_else(|| {
                    io::Error::new(
                        io::ErrorKind::NotFound,
                        format!("no preopened directory named {path:?}"),
                    )
                })?;
            // Work through a descriptor opened from the preopen, not the preopen itself: jco's
            // preview2-shim (dist/nodejs/filesystem.js) refuses `read-directory`, `sync` and
            // `stat` on a preopen descriptor, but allows them on a directory opened with
            // `open-at`. Only READ is asked for (the shim rejects `mutate-directory` on
            // `open-at`); creating, renaming and removing files inside still work, because
            // hosts give the child directory the preopen's permissions (wasmtime-wasi: `Dir`
            // inherits the parent's `DirPerms`).
            let dir = preopen
                .open_at(
                    PathFlags::empty(),
                    ".",
                    OpenFlags::DIRECTORY,
                    DescriptorFlags::READ,
                )
                .map_err(io_error)?;
            Ok(Self { dir })
        }
    }

    impl WasiStorage {
        /// Opens `name` inside the directory with these flags.
        fn open_file(
            &self,
            name: &str,
            open_flags: OpenFlags,
            access: DescriptorFlags,
        ) -> io::Result<WasiFile> {
            self.dir
                .open_at(PathFlags::empty(), name, open_flags, access)
                .map(WasiFile)
                .map_err(io_error)
        }
    }

    /// A file opened through `wasi:filesystem`.
    pub struct WasiFile(Descriptor);

    impl StorageFile for WasiFile {
        fn size(&self) -> io::Result<u64> {
            Ok(self.0.stat().map_err(io_error)?.size)
        }
        fn read_exact_at(&self, mut buf: &mut [u8], mut offset: u64) -> io::Result<()> {
            while !buf.is_empty() {
                let (data, _end) = self.0.read(buf.len() as u64, offset).map_err(io_error)?;
                if data.is_empty() {
                    return Err(io::ErrorKind::UnexpectedEof.into());
                }
                let n = data.len().min(buf.len());
                buf[..n].copy_from_slice(&data[..n]);
                buf = &mut buf[n..];
                offset += n as u64;
            }
            Ok(())
        }
        fn write_all_at(&self, mut buf: &[u8], mut offset: u64) -> io::Result<()> {
            while !buf.is_empty() {
                let n = self.0.write(buf, offset).map_err(io_error)? as usize;
                if n == 0 {
                    return Err(io::ErrorKind::WriteZero.into());
                }
                buf = &buf[n.min(buf.len())..];
                offset += n as u64;
            }
            Ok(())
        }
        fn set_len(&self, len: u64) -> io::Result<()> {
            self.0.set_size(len).map_err(io_error)
        }
        fn sync_data(&self) -> io::Result<()> {
            self.0.sync_data().map_err(io_error)
        }
        fn stage(&self, offset: u64, len: u32, key: &str, body_hash: u32) -> super::Staged {
            use crate::component::value_reader::{stage, Staged};
            match stage(&self.0, offset, len, key, body_hash) {
                Staged::Staged => super::Staged::Staged,
                Staged::Mismatch => super::Staged::Mismatch,
                Staged::Declined => super::Staged::Declined,
            }
        }
    }

    impl Storage for WasiStorage {
        type File = WasiFile;
        fn open(&self, name: &str, create: bool) -> io::Result<WasiFile> {
            let open_flags = if create {
                OpenFlags::CREATE
            } else {
                OpenFlags::empty()
            };
            self.open_file(
                name,
                open_flags,
                DescriptorFlags::READ | DescriptorFlags::WRITE,
            )
        }
        fn open_read_only(&self, name: &str) -> io::Result<WasiFile> {
            self.open_file(name, OpenFlags::empty(), DescriptorFlags::READ)
        }
        fn list(&self) -> io::Result<Vec<String>> {
            let stream = self.dir.read_directory().map_err(io_error)?;
            let mut names = Vec::new();
            while let Some(entry) = stream.read_directory_entry().map_err(io_error)? {
                if entry.type_ == DescriptorType::RegularFile {
                    names.push(entry.name);
                }
            }
            Ok(names)
        }
        fn remove(&self, name: &str) -> io::Result<()> {
            match self.dir.unlink_file_at(name) {
                Ok(()) | Err(ErrorCode::NoEntry) => Ok(()),
                Err(code) => Err(io_error(code)),
            }
        }
        fn exists(&self, name: &str) -> io::Result<bool> {
            match self.dir.stat_at(PathFlags::empty(), name) {
                Ok(_) => Ok(true),
                Err(ErrorCode::NoEntry) => Ok(false),
                Err(code) => Err(io_error(code)),
            }
        }
        fn rename(&self, from: &str, to: &str) -> io::Result<()> {
            self.dir.rename_at(from, &self.dir, to).map_err(io_error)
        }
        fn sync_dir(&self) -> io::Result<()> {
            self.dir.sync().map_err(io_error)
        }
        fn create_dir(&self, name: &str) -> io::Result<()> {
            match self.dir.create_directory_at(name) {
                Ok(()) | Err(ErrorCode::Exist) => Ok(()),
                Err(code) => Err(io_error(code)),
            }
        }
    }
}
