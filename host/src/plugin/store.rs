//! The plugin stores of a cache (`<dir>/plugins/<name>/`): their options, their share of the
//! plugin budget, and clearing them.

use crate::cache::PersistentCache;
use crate::error::{Error, Result};
use crate::layout;
use crate::options::CacheOptions;
use crate::shared::{off_runtime, open_options, SharedCache};
use crate::PluginFailure;

/// The smallest store a plugin gets: 64 KiB (with less of the plugin budget left, it does not run).
pub const MIN_PLUGIN_STORE: u64 = 64 << 10;

impl SharedCache {
    /// The options of the store of the plugin `name` run on this cache: its directory under
    /// `plugins/`, this cache's clock, component, code cache, modes and time limit, and
    /// `size_limit` (which only applies if this opens the store first).
    pub(crate) fn plugin_store_options(&self, name: &str, size_limit: u64) -> CacheOptions {
        let parent = &self.options;
        let directory = self.directory.join(super::PLUGINS_DIRECTORY).join(name);
        let mut options = CacheOptions::new(directory)
            .size_limit(size_limit.max(1))
            .component(parent.component_path().cloned())
            .code_cache(parent.code_cache_ref().cloned())
            .group_access(parent.group_access_value())
            .time_limit(parent.time_limit_value())
            .plugin_budget(0);
        options = options.clock(parent.clock_ref().clone());
        options
    }

    /// Empties every plugin store (blocking): each is opened (or shared, if a plugin runs now)
    /// and cleared.
    ///
    /// Edge cases: a store that cannot be cleared (another process has it open) is skipped
    /// with a warning, the others are still cleared, and the first such error is returned.
    pub(crate) fn clear_plugin_stores(&self) -> Result<()> {
        let stores = layout::plugin_stores(&self.directory).map_err(Error::Io)?;
        let mut first_error = None;
        for (name, _) in stores {
            // Its size limit does not matter: the store is emptied and closed at once.
            let options = self.plugin_store_options(&name, MIN_PLUGIN_STORE);
            let cleared = SharedCache::open(options).and_then(|store| {
                // A plugin store's own entries (plugins do not run plugins).
                let cleared = store.call(crate::shared::WRITES, |guest| guest.clear());
                cleared.and(SharedCache::close(store))
            });
            if let Err(err) = cleared {
                tracing::warn!(plugin = %name, error = %err, "cannot clear a plugin's store");
                first_error.get_or_insert(err);
            }
        }
        first_error.map_or(Ok(()), Err)
    }
}

impl PersistentCache {
    /// Makes the directories of plugin `name`'s store (real ones: a symlink planted under
    /// `plugins/` is refused, never followed) and returns the size limit the store gets:
    /// `wanted`, or less if that is all the plugin budget leaves after the other plugins'
    /// stores (their size limit while open in this process, else the bytes they hold on disk).
    ///
    /// Edge cases: a symlink or file in the way → [`Error::Directory`]; less than
    /// [`MIN_PLUGIN_STORE`] left → [`PluginFailure::Budget`] naming what holds the budget; an
    /// unreadable `plugins/` → [`Error::Io`].
    pub(crate) async fn prepare_plugin_store(&self, name: &str, wanted: u64) -> Result<u64> {
        let directory = self.inner.directory.clone();
        let mode = self.inner.options.modes().directory;
        let others = {
            let name = name.to_owned();
            off_runtime(move || {
                let parent = layout::real_subdirectory(&directory, super::PLUGINS_DIRECTORY, mode)?;
                layout::real_subdirectory(&parent, &name, mode)?;
                let stores = layout::plugin_stores(&directory).map_err(Error::Io)?;
                Ok(stores
                    .into_iter()
                    .filter(|(other, _)| *other != name)
                    .map(|(_, path)| {
                        let open = std::fs::canonicalize(&path)
                            .ok()
                            .and_then(|canonical| open_options(&canonical));
                        open.map_or_else(|| layout::engine_bytes(&path), |o| o.size_limit_value())
                    })
                    .fold(0u64, u64::saturating_add))
            })
            .await?
        };
        let budget = self.inner.options.plugin_budget_value();
        let left = budget.saturating_sub(others);
        if left < MIN_PLUGIN_STORE {
            return Err(Error::Plugin {
                plugin: name.to_owned(),
                failure: PluginFailure::Budget(format!(
                    "the other plugins' stores hold {others} of the {budget}-byte plugin budget \
                     (clear the cache or raise CacheOptions::plugin_budget)"
                )),
            });
        }
        Ok(wanted.min(left))
    }
}
