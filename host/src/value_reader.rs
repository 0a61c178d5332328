//! `pcache:cache/value-reader`: the host reads a big value for the engine, natively, so that
//! it never passes through the component's memory (the engine still decides which bytes).
//!
//! Issue 8's rules hold: the host reads only a byte range of a file the guest already opened
//! (a descriptor it borrows), never a path; it allocates at most the file's size and the
//! cache's size limit (no value is bigger); and it hands back bytes only when they match the
//! hash the guest gave.

use std::os::unix::fs::FileExt;

use wasmtime::component::{HasData, Linker, Resource};
use wasmtime_wasi::filesystem::Descriptor;
use wasmtime_wasi::OpenMode;

use crate::bindings::value_reader::{self, Staged};
use crate::runtime::GuestState;

/// Marker for `add_to_linker`: the data is the [`GuestState`] itself.
struct StateData;

impl HasData for StateData {
    type Data<'a> = &'a mut GuestState;
}

/// Defines `value-reader` in `linker`.
pub(crate) fn add_to_linker(linker: &mut Linker<GuestState>) -> wasmtime::Result<()> {
    value_reader::add_to_linker::<GuestState, StateData>(linker, |state| state)
}

impl value_reader::Host for GuestState {
    /// Edge cases: a descriptor that is not a file opened for reading, a range past the file's
    /// end or larger than the size limit, or a failed read → `declined` (the guest reads it
    /// and reports the error itself); bytes that do not match → `mismatch`.
    fn stage(
        &mut self,
        file: Resource<Descriptor>,
        offset: u64,
        len: u32,
        key: String,
        body_hash: u32,
    ) -> Staged {
        self.staged = None;
        let Ok(Descriptor::File(file)) = self.table.get(&file) else {
            return Staged::Declined;
        };
        if !file.open_mode.contains(OpenMode::READ) || u64::from(len) > self.stage_max {
            return Staged::Declined;
        }
        let fits = file.file.metadata().is_ok_and(|m| {
            offset
                .checked_add(u64::from(len))
                .is_some_and(|end| end <= m.len())
        });
        if !fits {
            return Staged::Declined;
        }
        let mut bytes = vec![0; len as usize];
        if file.file.read_exact_at(&mut bytes, offset).is_err() {
            return Staged::Declined;
        }
        if !persistent_cache_guest::format::body_matches(key.as_bytes(), &bytes, body_hash) {
            return Staged::Mismatch;
        }
        self.staged = Some(bytes);
        Staged::Staged
    }
}
