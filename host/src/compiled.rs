//! Components' native code: compiled once per process, and optionally kept between processes
//! in a private, authenticated code cache.
//!
//! Loading native code runs it in the host process, outside the sandbox, so nothing in the
//! code cache is trusted by its name or its place:
//!
//! - The directory must be a real directory (not a symlink), owned by this user and closed to
//!   group and others (it is created `0700`); otherwise it is not used (one warning) and the
//!   component is compiled in memory.
//! - Each file is `MAGIC | HMAC-SHA256(key, identity ‖ code) | code`. The identity is the
//!   SHA-256 of the component bytes, wasmtime's compatibility hash and this crate's version, so
//!   a valid file of another component, version or engine under this name fails the check too.
//!   The key is 32 random bytes in a key file *outside* the directory (`0600`, owner-checked,
//!   never followed through a symlink), so whoever can write the directory but not the key
//!   file cannot forge a file that loads.
//! - A file is opened without following symlinks, read whole (bounded), checked, and
//!   deserialized from that in-memory copy: truncating or replacing the file later cannot reach
//!   the running process (no memory map of the file, so no SIGBUS), and nothing changes
//!   between the check and the use.
//! - A new file is written to a fresh `0600` temp file in the directory and renamed into place;
//!   a failed write removes its temp file. A file that fails any check is recompiled and
//!   replaced.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use wasmtime::component::Component;
use wasmtime::Engine;

/// The guest component, built (without DWARF) from the `persistent-cache-guest` package by `build.rs`.
pub(crate) static EMBEDDED_COMPONENT: &[u8] = include_bytes!(env!("PCACHE_GUEST_WASM"));

/// The largest component file read (`--component`, plugins): 256 MiB. The cache guest is
/// about 300 KB; a component this large is a mistake or an attack (`/dev/zero`).
pub const MAX_COMPONENT_BYTES: u64 = 256 << 20;

/// The largest code cache file read: 1 GiB (native code is a few times the wasm).
const MAX_CODE_BYTES: u64 = 1 << 30;

/// The first bytes of every code cache file; the version digit changes with the layout.
const MAGIC: &[u8; 8] = b"PCCODE1\0";

/// Length of the key and of the MAC.
const KEY_LEN: usize = 32;

type HmacSha256 = Hmac<Sha256>;

/// Where compiled native code is kept between processes, and the key file that authenticates it.
///
/// Both must be private to this user: the directory is used only if it is a real directory
/// owned by this user with mode `0700` (or stricter), the key file only if it is a regular
/// file owned by this user with mode `0600`. Both are created so when missing. Keep the key
/// file outside the directory (and out of anything that copies the directory around, such as
/// a CI cache): a code file is loaded only if it carries a MAC made with this key.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct CodeCache {
    directory: PathBuf,
    key_file: PathBuf,
}

impl CodeCache {
    /// Native code in `directory`, authenticated with the key in `key_file` (created on first
    /// use). Nothing is checked until a component is loaded.
    pub fn new(directory: impl Into<PathBuf>, key_file: impl Into<PathBuf>) -> CodeCache {
        CodeCache {
            directory: directory.into(),
            key_file: key_file.into(),
        }
    }

    /// This user's code cache: `$XDG_CACHE_HOME/persistent-cache` (`~/.cache/…`), keyed by
    /// `$XDG_DATA_HOME/persistent-cache/code-cache.key` (`~/.local/share/…`); `None` when the
    /// home directory is unknown. Read from the real environment only (never from `.env`,
    /// which [`CacheOptions::from_env`](crate::CacheOptions::from_env) does not apply to the
    /// process).
    pub fn for_user() -> Option<CodeCache> {
        let directory = dirs::cache_dir()?.join("persistent-cache");
        let key_file = dirs::data_local_dir()?
            .join("persistent-cache")
            .join("code-cache.key");
        Some(CodeCache::new(directory, key_file))
    }

    /// The directory holding the native code files.
    pub fn directory(&self) -> &Path {
        &self.directory
    }

    /// The key file.
    pub fn key_file(&self) -> &Path {
        &self.key_file
    }
}

/// Reads the component file at `path`, refusing more than [`MAX_COMPONENT_BYTES`].
///
/// Edge cases: a missing or unreadable file → its I/O error; a directory → an error; a file
/// (or device, pipe) longer than the cap → `InvalidData` naming the cap, after reading at most
/// one byte past it.
pub(crate) fn read_component(path: &Path) -> io::Result<Vec<u8>> {
    read_bounded(File::open(path)?, MAX_COMPONENT_BYTES, "a component")
}

/// Reads all of `file`, failing once more than `limit` bytes arrive.
fn read_bounded(file: File, limit: u64, what: &str) -> io::Result<Vec<u8>> {
    let hint = file.metadata().map_or(0, |meta| meta.len().min(limit));
    let mut bytes = Vec::with_capacity(usize::try_from(hint).unwrap_or(0));
    file.take(limit + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > limit {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("larger than {} MiB, the most {what} may be", limit >> 20),
        ));
    }
    Ok(bytes)
}

/// Compiles `bytes` for `engine`, or loads the native code cached for them in `code_cache`.
///
/// Edge cases: no code cache → plain compile; a code cache directory or key file that is not
/// private (wrong owner, open mode, a symlink) → compile without it, with a warning; a missing,
/// unreadable, foreign, forged, stale or damaged code file → compile and replace it; a
/// directory that cannot be written → compile, warn, go on.
pub(crate) fn load_component(
    engine: &Engine,
    bytes: &[u8],
    code_cache: Option<&CodeCache>,
) -> wasmtime::Result<Component> {
    let Some(cache) = code_cache else {
        return Component::new(engine, bytes);
    };
    let key = match prepare(cache) {
        Ok(key) => key,
        Err(err) => {
            tracing::warn!(directory = %cache.directory.display(), error = %err, "not using the code cache; compiling");
            return Component::new(engine, bytes);
        }
    };
    let identity = identity(engine, bytes);
    let path = cache.directory.join(file_name(&identity));
    match read_verified(&path, &key, &identity) {
        Ok(Some(code)) => {
            // SAFETY: `code` carries a MAC made with this user's private key over exactly
            // these bytes and this component's identity, so it is native code this crate
            // serialized for this component and engine (nobody without the key can make such
            // a file). It was read into memory before the check, so it cannot change between
            // the check and the use. wasmtime still checks its header and refuses a mismatch.
            match unsafe { Component::deserialize(engine, &code) } {
                Ok(component) => return Ok(component),
                Err(err) => {
                    tracing::debug!(path = %path.display(), error = %err, "cached code refused; recompiling")
                }
            }
        }
        Ok(None) => {}
        Err(err) => {
            tracing::debug!(path = %path.display(), error = %err, "cached code not usable; recompiling")
        }
    }
    let component = Component::new(engine, bytes)?;
    if let Err(err) = store(&component, &path, &key, &identity) {
        tracing::warn!(path = %path.display(), error = %err, "cannot cache the compiled component");
    }
    Ok(component)
}

/// Checks (creating if needed) the code cache directory and returns the key.
fn prepare(cache: &CodeCache) -> io::Result<[u8; KEY_LEN]> {
    ensure_private_dir(&cache.directory)?;
    load_or_create_key(&cache.key_file)
}

/// This process's effective user id.
fn euid() -> u32 {
    rustix::process::geteuid().as_raw()
}

/// Creates `dir` (and missing parents) with mode `0700`, then checks that it is a real
/// directory owned by this user with no permissions for group or others.
pub(crate) fn ensure_private_dir(dir: &Path) -> io::Result<()> {
    match fs::symlink_metadata(dir) {
        Err(err) if err.kind() == io::ErrorKind::NotFound => {
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)?;
        }
        Err(err) => return Err(err),
        Ok(_) => {}
    }
    let meta = fs::symlink_metadata(dir)?;
    if meta.is_dir() && meta.uid() == euid() && meta.mode() & 0o077 != 0 {
        // Ours but open to others (versions before 0.2 created it 0755): close it. What others
        // may have put in it meanwhile fails the MAC check, so nothing in it is trusted.
        tracing::info!(directory = %dir.display(), "making the code cache directory private (0700)");
        fs::set_permissions(dir, fs::Permissions::from_mode(0o700))?;
        return check_private(dir, &fs::symlink_metadata(dir)?, true);
    }
    check_private(dir, &meta, true)
}

/// Refuses anything but a private directory (`want_dir`) or regular file of this user.
fn check_private(path: &Path, meta: &fs::Metadata, want_dir: bool) -> io::Result<()> {
    let refuse = |why: String| {
        Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!("{} {why}", path.display()),
        ))
    };
    let kind = meta.file_type();
    if kind.is_symlink() {
        return refuse("is a symlink".to_owned());
    }
    if want_dir && !kind.is_dir() {
        return refuse("is not a directory".to_owned());
    }
    if !want_dir && !kind.is_file() {
        return refuse("is not a regular file".to_owned());
    }
    if meta.uid() != euid() {
        return refuse(format!(
            "belongs to uid {}, not to this user (uid {})",
            meta.uid(),
            euid()
        ));
    }
    if meta.mode() & 0o077 != 0 {
        return refuse(format!(
            "has mode {:04o}: group or others may use it (want {})",
            meta.mode() & 0o7777,
            if want_dir { "0700" } else { "0600" }
        ));
    }
    Ok(())
}

/// Opens `path` for reading without following a symlink in its last component.
fn open_nofollow(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .read(true)
        .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
        .open(path)
}

/// The key in `path`, created (32 random bytes, mode `0600`, atomically) if missing.
fn load_or_create_key(path: &Path) -> io::Result<[u8; KEY_LEN]> {
    if let Some(parent) = path.parent() {
        ensure_private_dir(parent)?;
    }
    for _ in 0..3 {
        match open_nofollow(path) {
            Ok(file) => {
                let meta = file.metadata()?;
                if meta.is_file() && meta.uid() == euid() && meta.mode() & 0o077 != 0 {
                    // Ours, but others could read it: it may be known, so it is replaced
                    // (the code it signed is recompiled once).
                    tracing::warn!(path = %path.display(), "the code cache key was readable by others; making a new one");
                    fs::remove_file(path)?;
                    continue;
                }
                check_private(path, &meta, false)?;
                let bytes = read_bounded(file, KEY_LEN as u64, "a key file")?;
                return <[u8; KEY_LEN]>::try_from(bytes.as_slice()).map_err(|_| {
                    io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!("{} is not a {KEY_LEN}-byte key", path.display()),
                    )
                });
            }
            Err(err) if err.kind() == io::ErrorKind::NotFound => {
                let mut key = [0u8; KEY_LEN];
                getrandom::fill(&mut key).map_err(io::Error::other)?;
                let dir = path.parent().unwrap_or(Path::new("."));
                let mut tmp = tempfile::Builder::new()
                    .prefix(".key-")
                    .permissions(fs::Permissions::from_mode(0o600))
                    .tempfile_in(dir)?;
                tmp.write_all(&key)?;
                tmp.as_file().sync_all()?;
                // No clobbering: if another process made the key first, use that one.
                match tmp.persist_noclobber(path) {
                    Ok(_) => return Ok(key),
                    Err(err) if err.error.kind() == io::ErrorKind::AlreadyExists => continue,
                    Err(err) => return Err(err.error),
                }
            }
            Err(err) => return Err(err),
        }
    }
    Err(io::Error::other(format!(
        "{} keeps changing while it is read",
        path.display()
    )))
}

/// The SHA-256 of `bytes`; for the embedded component, the digest `build.rs` computed.
fn component_digest(bytes: &[u8]) -> [u8; 32] {
    let embedded = std::ptr::eq(bytes, EMBEDDED_COMPONENT);
    let precomputed = env!("PCACHE_GUEST_SHA256");
    if embedded && precomputed.len() == 64 {
        let mut digest = [0u8; 32];
        for (i, byte) in digest.iter_mut().enumerate() {
            // `build.rs` wrote 64 lowercase hex digits.
            *byte = u8::from_str_radix(&precomputed[2 * i..2 * i + 2], 16).unwrap_or(0);
        }
        return digest;
    }
    Sha256::digest(bytes).into()
}

/// What a code file must be for: the component bytes, the engine's settings, this crate.
fn identity(engine: &Engine, bytes: &[u8]) -> [u8; 32] {
    let mut hasher = Sha256::new();
    hasher.update(component_digest(bytes));
    let mut compat = std::hash::DefaultHasher::new();
    std::hash::Hash::hash(&engine.precompile_compatibility_hash(), &mut compat);
    hasher.update(std::hash::Hasher::finish(&compat).to_le_bytes());
    hasher.update(env!("CARGO_PKG_VERSION").as_bytes());
    hasher.finalize().into()
}

/// The file name of the code for `identity`.
fn file_name(identity: &[u8; 32]) -> String {
    let hex: String = identity[..16].iter().map(|b| format!("{b:02x}")).collect();
    format!("code-{hex}.cwasm")
}

/// The HMAC over `code` for `identity`, ready to finalize or verify.
fn mac_of(key: &[u8; KEY_LEN], identity: &[u8; 32], code: &[u8]) -> HmacSha256 {
    let mut mac = <HmacSha256 as Mac>::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(MAGIC);
    mac.update(identity);
    mac.update(code);
    mac
}

/// The MAC of `code` for `identity`.
fn mac(key: &[u8; KEY_LEN], identity: &[u8; 32], code: &[u8]) -> [u8; 32] {
    mac_of(key, identity, code).finalize().into_bytes().into()
}

/// The native code in `path` if it is present and carries a valid MAC; `None` if missing.
fn read_verified(
    path: &Path,
    key: &[u8; KEY_LEN],
    identity: &[u8; 32],
) -> io::Result<Option<Vec<u8>>> {
    let file = match open_nofollow(path) {
        Ok(file) => file,
        Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(err) => return Err(err),
    };
    check_private(path, &file.metadata()?, false)?;
    let mut bytes = read_bounded(file, MAX_CODE_BYTES, "a code cache file")?;
    let header = MAGIC.len() + 32;
    if bytes.len() < header || &bytes[..MAGIC.len()] != MAGIC {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "not a code cache file",
        ));
    }
    // Constant-time comparison (`verify_slice`), though timing reveals little here.
    mac_of(key, identity, &bytes[header..])
        .verify_slice(&bytes[MAGIC.len()..header])
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "MAC mismatch"))?;
    bytes.drain(..header);
    Ok(Some(bytes))
}

/// Writes the component's native code with its MAC to a fresh temp file, then renames it to
/// `path`. On any failure the temp file is removed (`NamedTempFile` deletes on drop).
fn store(
    component: &Component,
    path: &Path,
    key: &[u8; KEY_LEN],
    identity: &[u8; 32],
) -> anyhow::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let code = component.serialize()?;
    let mut tmp = tempfile::Builder::new()
        .prefix(".code-")
        .suffix(".tmp")
        .permissions(fs::Permissions::from_mode(0o600))
        .tempfile_in(dir)?;
    tmp.write_all(MAGIC)?;
    tmp.write_all(&mac(key, identity, &code))?;
    tmp.write_all(&code)?;
    tmp.persist(path).map_err(|err| err.error)?;
    remove_leftovers(dir);
    Ok(())
}

/// How old a temp file in the code cache must be before it counts as left behind by a killed
/// process.
const STALE_TEMP: std::time::Duration = std::time::Duration::from_secs(3600);

/// Removes what earlier versions and killed processes left in the code cache directory:
/// unauthenticated `guest-*.cwasm` files of versions before 0.2 (never loaded again), their
/// `*.tmp<pid>` files, and temp files of this version older than an hour.
fn remove_leftovers(dir: &Path) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        let legacy =
            name.starts_with("guest-") && (name.ends_with(".cwasm") || name.contains(".tmp"));
        let stale_temp = name.starts_with(".code-")
            && name.ends_with(".tmp")
            && entry
                .metadata()
                .and_then(|meta| meta.modified())
                .is_ok_and(|modified| modified.elapsed().is_ok_and(|age| age > STALE_TEMP));
        if legacy || stale_temp {
            let _ = fs::remove_file(entry.path());
        }
    }
}

#[cfg(test)]
mod tests;
