//! The guest component's native code: compiled once per process, optionally cached on disk.
//!
//! Compiling the component with cranelift takes most of a second; deserializing cached native
//! code takes a few milliseconds. The cache file is named by a hash of the component bytes, the
//! wasmtime version and the engine's compatibility settings, lives outside the cache directory,
//! and is replaced whenever wasmtime refuses it.

use std::hash::{DefaultHasher, Hash, Hasher};
use std::path::{Path, PathBuf};

use wasmtime::component::Component;
use wasmtime::Engine;

/// The guest component built from `guest/` by `build.rs`.
pub(crate) static EMBEDDED_COMPONENT: &[u8] = include_bytes!(env!("PCACHE_GUEST_WASM"));

/// Compiles `bytes` for `engine`, or loads the native code cached for them in `code_cache`.
///
/// Edge cases: no cache directory → plain compile; an unreadable, stale or damaged cache file
/// → compile and rewrite it; a cache directory that cannot be written → compile, log, go on.
pub(crate) fn load_component(
    engine: &Engine,
    bytes: &[u8],
    code_cache: Option<&Path>,
) -> wasmtime::Result<Component> {
    let Some(dir) = code_cache else {
        return Component::new(engine, bytes);
    };
    let path = cache_file(engine, bytes, dir);
    if path.is_file() {
        // SAFETY: the file is one this function wrote with `Component::serialize` for a
        // component of identical bytes; wasmtime checks its header (version, target, engine
        // settings) and refuses a mismatch, and a refused file is simply rewritten below.
        match unsafe { Component::deserialize_file(engine, &path) } {
            Ok(component) => return Ok(component),
            Err(err) => {
                tracing::debug!(path = %path.display(), error = %err, "stale compiled code; recompiling")
            }
        }
    }
    let component = Component::new(engine, bytes)?;
    if let Err(err) = store(&component, &path) {
        tracing::warn!(path = %path.display(), error = %err, "cannot cache the compiled component");
    }
    Ok(component)
}

/// Where the native code for `bytes` compiled by `engine` is cached inside `dir`.
fn cache_file(engine: &Engine, bytes: &[u8], dir: &Path) -> PathBuf {
    let mut hasher = DefaultHasher::new();
    bytes.hash(&mut hasher);
    engine.precompile_compatibility_hash().hash(&mut hasher);
    env!("CARGO_PKG_VERSION").hash(&mut hasher);
    dir.join(format!("guest-{:016x}.cwasm", hasher.finish()))
}

/// Writes the serialized component next to `path`, then renames it into place.
fn store(component: &Component, path: &Path) -> anyhow::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    std::fs::write(&tmp, component.serialize()?)?;
    std::fs::rename(&tmp, path)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cached_code_is_reused_and_a_damaged_file_is_replaced() {
        let engine = Engine::default();
        let dir = tempfile::tempdir().unwrap();
        let bytes = EMBEDDED_COMPONENT;
        load_component(&engine, bytes, Some(dir.path())).unwrap();
        let path = cache_file(&engine, bytes, dir.path());
        let written = std::fs::read(&path).unwrap();
        assert!(!written.is_empty());
        load_component(&engine, bytes, Some(dir.path())).unwrap();
        std::fs::write(&path, b"not native code").unwrap();
        load_component(&engine, bytes, Some(dir.path())).unwrap();
        assert_eq!(
            std::fs::read(&path).unwrap(),
            written,
            "rewritten after damage"
        );
    }
}
