//! `<dir>/settings.json`: the size limit and default TTL stored with a cache, so that a
//! process opening it without saying (a `pcache` command, a second service) uses what the
//! cache was created with, as diskcache does; an opener that says something else updates it.
//!
//! The host's file, outside `data/` (the engine never sees it), written atomically (a
//! temporary file, synced, renamed). A damaged or unreadable file is reported in a warning and
//! treated as missing: settings are never a reason a cache cannot open.

use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::options::CacheOptions;

/// Name of the settings file inside the cache directory.
pub const SETTINGS_FILE_NAME: &str = "settings.json";

/// The largest settings file read (it is a few dozen bytes).
const SETTINGS_MAX: u64 = 4096;

/// What the file holds.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
struct Stored {
    size_limit: u64,
    /// Milliseconds; `null`: entries without a TTL never expire.
    default_ttl_ms: Option<u64>,
}

/// `options` with the size limit and default TTL it leaves unset taken from the settings
/// stored in `directory`; stores the resulting settings when they differ from the file (a new
/// cache, or an opener that set something else). Read-only: stores nothing.
///
/// Edge cases: a missing, damaged, oversized or symlinked file counts as missing (damaged: a
/// warning); failing to store is a warning, not an error.
pub(crate) fn resolve(directory: &Path, options: CacheOptions) -> CacheOptions {
    let path = directory.join(SETTINGS_FILE_NAME);
    let stored = read(&path);
    let mut options = options;
    if let Some(stored) = stored {
        if options.size_limit_setting().is_none() {
            options = options.size_limit(stored.size_limit);
        }
        if !options.default_ttl_is_set() {
            options = options.default_ttl(stored.default_ttl_ms.map(Duration::from_millis));
        }
    }
    let now = Stored {
        size_limit: options.size_limit_value(),
        default_ttl_ms: options
            .default_ttl_value()
            .map(|ttl| u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX)),
    };
    if stored != Some(now) && !options.read_only_value() {
        if let Err(err) = write(directory, &now, options.modes().file) {
            tracing::warn!(path = %path.display(), error = %err, "cannot store the cache's settings");
        }
    }
    options
}

/// The stored settings, if the file is there and sound.
fn read(path: &Path) -> Option<Stored> {
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
        .open(path)
        .ok()?;
    let mut bytes = Vec::new();
    let read =
        std::io::Read::read_to_end(&mut std::io::Read::take(file, SETTINGS_MAX + 1), &mut bytes);
    let parsed = read.map_err(|e| e.to_string()).and_then(|_| {
        if bytes.len() as u64 > SETTINGS_MAX {
            Err(format!("it is over {SETTINGS_MAX} bytes"))
        } else {
            serde_json::from_slice::<Stored>(&bytes).map_err(|e| e.to_string())
        }
    });
    match parsed {
        Ok(stored) => Some(stored),
        Err(why) => {
            tracing::warn!(path = %path.display(), error = %why, "ignoring the cache's damaged settings file");
            None
        }
    }
}

/// Replaces the settings file atomically.
fn write(directory: &Path, stored: &Stored, mode: u32) -> std::io::Result<()> {
    let tmp = directory.join(format!("{SETTINGS_FILE_NAME}.tmp"));
    let _ = std::fs::remove_file(&tmp);
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
        .open(&tmp)?;
    file.write_all(&serde_json::to_vec(stored).map_err(std::io::Error::other)?)?;
    file.write_all(b"\n")?;
    file.sync_all()?;
    std::fs::rename(&tmp, directory.join(SETTINGS_FILE_NAME))?;
    std::fs::File::open(directory)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_opener_without_settings_uses_the_stored_ones_and_an_explicit_one_updates_them() {
        let dir = tempfile::tempdir().unwrap();
        let created = resolve(
            dir.path(),
            CacheOptions::new(dir.path())
                .size_limit(100 << 20)
                .default_ttl(Some(Duration::from_secs(60))),
        );
        assert_eq!(created.size_limit_value(), 100 << 20);
        let later = resolve(dir.path(), CacheOptions::new(dir.path()));
        assert_eq!(later.size_limit_value(), 100 << 20);
        assert_eq!(later.default_ttl_value(), Some(Duration::from_secs(60)));
        let changed = resolve(
            dir.path(),
            CacheOptions::new(dir.path()).size_limit(1 << 20),
        );
        assert_eq!(changed.size_limit_value(), 1 << 20);
        assert_eq!(changed.default_ttl_value(), Some(Duration::from_secs(60)));
        let after = resolve(dir.path(), CacheOptions::new(dir.path()).default_ttl(None));
        assert_eq!(after.size_limit_value(), 1 << 20);
        assert_eq!(after.default_ttl_value(), None);
        assert_eq!(
            resolve(dir.path(), CacheOptions::new(dir.path())).default_ttl_value(),
            None
        );
    }

    #[test]
    fn a_damaged_settings_file_is_ignored_and_replaced() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(SETTINGS_FILE_NAME), b"{not json").unwrap();
        let opened = resolve(dir.path(), CacheOptions::new(dir.path()));
        assert_eq!(
            opened.size_limit_value(),
            CacheOptions::new("x").size_limit_value()
        );
        let text = std::fs::read_to_string(dir.path().join(SETTINGS_FILE_NAME)).unwrap();
        assert!(text.contains("size_limit"), "{text}");
        // A huge file is not read into memory.
        std::fs::write(dir.path().join(SETTINGS_FILE_NAME), vec![b' '; 1 << 20]).unwrap();
        let opened = resolve(dir.path(), CacheOptions::new(dir.path()).read_only(true));
        assert_eq!(
            opened.size_limit_value(),
            CacheOptions::new("x").size_limit_value()
        );
    }
}
