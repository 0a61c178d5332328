//! `wasi:filesystem` for synchronous guests, without a tokio runtime.
//!
//! wasmtime-wasi's synchronous bindings run every filesystem call through tokio's `block_on`,
//! which panics on a thread that already runs an async runtime and costs a thread hop
//! otherwise. With `allow_blocking_current_thread` the underlying async implementations finish
//! on their first poll, so this adapter polls them inline instead. It shadows the
//! `wasi:filesystem/types` functions that `add_to_linker_sync` defined; everything else (the
//! sandbox, the permissions, the preopens) is wasmtime-wasi's own code.
//!
//! The trait impls below are wasmtime-wasi 48's `p2/host/filesystem/sync.rs` (Apache-2.0 WITH
//! LLVM-exception) with `in_tokio` replaced by [`poll_inline`].

#![allow(clippy::needless_question_mark)] // kept as in the upstream file

use std::future::Future;
use std::os::unix::fs::PermissionsExt;
use std::task::{Context, Poll, Waker};
use wasmtime::component::HasData;

/// The filesystem view the shadowing bindings receive, and the mode files they create get.
pub(crate) struct InlineFs<'a>(pub(crate) WasiFilesystemCtxView<'a>, u32);

/// Marker for `add_to_linker`: the data is an [`InlineFs`].
pub(crate) struct InlineFsData;

impl HasData for InlineFsData {
    type Data<'a> = InlineFs<'a>;
}

/// Replaces wasmtime-wasi's `wasi:filesystem/types` in `linker` with the inline-polling one,
/// which also gives every file the guest creates the store's file mode (`0600` by default).
pub(crate) fn shadow_filesystem(
    linker: &mut wasmtime::component::Linker<GuestState>,
) -> wasmtime::Result<()> {
    linker.allow_shadowing(true);
    sync_filesystem::add_to_linker::<GuestState, InlineFsData>(linker, |state| {
        let mode = state.file_mode();
        InlineFs(
            wasmtime_wasi::filesystem::WasiFilesystemView::filesystem(state),
            mode,
        )
    })?;
    linker.allow_shadowing(false);
    Ok(())
}

/// Drives `future` to completion on this thread. With blocking allowed the filesystem futures
/// are ready at once; should one ever wait (on a blocking-pool task), this yields until done.
pub(crate) fn poll_inline<F: Future>(future: F) -> F::Output {
    let mut future = std::pin::pin!(future);
    let mut cx = Context::from_waker(Waker::noop());
    loop {
        if let Poll::Ready(output) = future.as_mut().poll(&mut cx) {
            return output;
        }
        std::thread::yield_now();
    }
}

use crate::runtime::GuestState;
use wasmtime::component::Resource;
use wasmtime_wasi::filesystem::{Descriptor, WasiFilesystemCtxView};
use wasmtime_wasi::p2::bindings::filesystem::types as async_filesystem;
use wasmtime_wasi::p2::bindings::sync::filesystem::types as sync_filesystem;
use wasmtime_wasi::p2::bindings::sync::io::streams;
use wasmtime_wasi::p2::{FsError, FsResult};

impl sync_filesystem::Host for InlineFs<'_> {
    fn convert_error_code(&mut self, err: FsError) -> wasmtime::Result<sync_filesystem::ErrorCode> {
        Ok(async_filesystem::Host::convert_error_code(&mut self.0, err)?.into())
    }

    fn filesystem_error_code(
        &mut self,
        err: Resource<streams::Error>,
    ) -> wasmtime::Result<Option<sync_filesystem::ErrorCode>> {
        Ok(async_filesystem::Host::filesystem_error_code(&mut self.0, err)?.map(|e| e.into()))
    }
}

impl sync_filesystem::HostDescriptor for InlineFs<'_> {
    fn advise(
        &mut self,
        fd: Resource<sync_filesystem::Descriptor>,
        offset: sync_filesystem::Filesize,
        len: sync_filesystem::Filesize,
        advice: sync_filesystem::Advice,
    ) -> FsResult<()> {
        poll_inline(async {
            async_filesystem::HostDescriptor::advise(&mut self.0, fd, offset, len, advice.into())
                .await
        })
    }

    fn sync_data(&mut self, fd: Resource<sync_filesystem::Descriptor>) -> FsResult<()> {
        poll_inline(async { async_filesystem::HostDescriptor::sync_data(&mut self.0, fd).await })
    }

    fn get_flags(
        &mut self,
        fd: Resource<sync_filesystem::Descriptor>,
    ) -> FsResult<sync_filesystem::DescriptorFlags> {
        Ok(poll_inline(async {
            async_filesystem::HostDescriptor::get_flags(&mut self.0, fd).await
        })?
        .into())
    }

    fn get_type(
        &mut self,
        fd: Resource<sync_filesystem::Descriptor>,
    ) -> FsResult<sync_filesystem::DescriptorType> {
        Ok(poll_inline(async {
            async_filesystem::HostDescriptor::get_type(&mut self.0, fd).await
        })?
        .into())
    }

    fn set_size(
        &mut self,
        fd: Resource<sync_filesystem::Descriptor>,
        size: sync_filesystem::Filesize,
    ) -> FsResult<()> {
        poll_inline(async {
            async_filesystem::HostDescriptor::set_size(&mut self.0, fd, size).await
        })
    }

    fn set_times(
        &mut self,
        fd: Resource<sync_filesystem::Descriptor>,
        atim: sync_filesystem::NewTimestamp,
        mtim: sync_filesystem::NewTimestamp,
    ) -> FsResult<()> {
        poll_inline(async {
            async_filesystem::HostDescriptor::set_times(&mut self.0, fd, atim.into(), mtim.into())
                .await
        })
    }

    fn read(
        &mut self,
        fd: Resource<sync_filesystem::Descriptor>,
        len: sync_filesystem::Filesize,
        offset: sync_filesystem::Filesize,
    ) -> FsResult<(Vec<u8>, bool)> {
        poll_inline(async {
            async_filesystem::HostDescriptor::read(&mut self.0, fd, len, offset).await
        })
    }

    fn write(
        &mut self,
        fd: Resource<sync_filesystem::Descriptor>,
        buf: Vec<u8>,
        offset: sync_filesystem::Filesize,
    ) -> FsResult<sync_filesystem::Filesize> {
        poll_inline(async {
            async_filesystem::HostDescriptor::write(&mut self.0, fd, buf, offset).await
        })
    }

    fn read_directory(
        &mut self,
        fd: Resource<sync_filesystem::Descriptor>,
    ) -> FsResult<Resource<sync_filesystem::DirectoryEntryStream>> {
        poll_inline(async {
            async_filesystem::HostDescriptor::read_directory(&mut self.0, fd).await
        })
    }

    fn sync(&mut self, fd: Resource<sync_filesystem::Descriptor>) -> FsResult<()> {
        poll_inline(async { async_filesystem::HostDescriptor::sync(&mut self.0, fd).await })
    }

    fn create_directory_at(
        &mut self,
        fd: Resource<sync_filesystem::Descriptor>,
        path: String,
    ) -> FsResult<()> {
        poll_inline(async {
            async_filesystem::HostDescriptor::create_directory_at(&mut self.0, fd, path).await
        })
    }

    fn stat(
        &mut self,
        fd: Resource<sync_filesystem::Descriptor>,
    ) -> FsResult<sync_filesystem::DescriptorStat> {
        Ok(
            poll_inline(async { async_filesystem::HostDescriptor::stat(&mut self.0, fd).await })?
                .into(),
        )
    }

    fn stat_at(
        &mut self,
        fd: Resource<sync_filesystem::Descriptor>,
        path_flags: sync_filesystem::PathFlags,
        path: String,
    ) -> FsResult<sync_filesystem::DescriptorStat> {
        Ok(poll_inline(async {
            async_filesystem::HostDescriptor::stat_at(&mut self.0, fd, path_flags.into(), path)
                .await
        })?
        .into())
    }

    fn set_times_at(
        &mut self,
        fd: Resource<sync_filesystem::Descriptor>,
        path_flags: sync_filesystem::PathFlags,
        path: String,
        atim: sync_filesystem::NewTimestamp,
        mtim: sync_filesystem::NewTimestamp,
    ) -> FsResult<()> {
        poll_inline(async {
            async_filesystem::HostDescriptor::set_times_at(
                &mut self.0,
                fd,
                path_flags.into(),
                path,
                atim.into(),
                mtim.into(),
            )
            .await
        })
    }

    fn link_at(
        &mut self,
        fd: Resource<sync_filesystem::Descriptor>,
        // TODO delete the path flags from this function
        old_path_flags: sync_filesystem::PathFlags,
        old_path: String,
        new_descriptor: Resource<sync_filesystem::Descriptor>,
        new_path: String,
    ) -> FsResult<()> {
        poll_inline(async {
            async_filesystem::HostDescriptor::link_at(
                &mut self.0,
                fd,
                old_path_flags.into(),
                old_path,
                new_descriptor,
                new_path,
            )
            .await
        })
    }

    fn open_at(
        &mut self,
        fd: Resource<sync_filesystem::Descriptor>,
        path_flags: sync_filesystem::PathFlags,
        path: String,
        oflags: sync_filesystem::OpenFlags,
        flags: sync_filesystem::DescriptorFlags,
    ) -> FsResult<Resource<sync_filesystem::Descriptor>> {
        let opened = poll_inline(async {
            async_filesystem::HostDescriptor::open_at(
                &mut self.0,
                fd,
                path_flags.into(),
                path,
                oflags.into(),
                flags.into(),
            )
            .await
        })?;
        // Not upstream: a file the guest may have just created gets the store's mode (cap-std
        // creates with 0666 & umask). Done on the open descriptor (fchmod), so no path is
        // looked up again; the directory is 0700 meanwhile, so nobody else saw it.
        if oflags.contains(sync_filesystem::OpenFlags::CREATE) {
            if let Ok(Descriptor::File(file)) = self.0.table.get(&opened) {
                let permissions = std::fs::Permissions::from_mode(self.1);
                if let Err(err) = file.file.set_permissions(permissions) {
                    tracing::warn!(error = %err, "cannot set the mode of a cache file");
                }
            }
        }
        Ok(opened)
    }

    fn drop(&mut self, fd: Resource<sync_filesystem::Descriptor>) -> wasmtime::Result<()> {
        async_filesystem::HostDescriptor::drop(&mut self.0, fd)
    }

    fn readlink_at(
        &mut self,
        fd: Resource<sync_filesystem::Descriptor>,
        path: String,
    ) -> FsResult<String> {
        poll_inline(async {
            async_filesystem::HostDescriptor::readlink_at(&mut self.0, fd, path).await
        })
    }

    fn remove_directory_at(
        &mut self,
        fd: Resource<sync_filesystem::Descriptor>,
        path: String,
    ) -> FsResult<()> {
        poll_inline(async {
            async_filesystem::HostDescriptor::remove_directory_at(&mut self.0, fd, path).await
        })
    }

    fn rename_at(
        &mut self,
        fd: Resource<sync_filesystem::Descriptor>,
        old_path: String,
        new_fd: Resource<sync_filesystem::Descriptor>,
        new_path: String,
    ) -> FsResult<()> {
        poll_inline(async {
            async_filesystem::HostDescriptor::rename_at(&mut self.0, fd, old_path, new_fd, new_path)
                .await
        })
    }

    fn symlink_at(
        &mut self,
        fd: Resource<sync_filesystem::Descriptor>,
        src_path: String,
        dest_path: String,
    ) -> FsResult<()> {
        poll_inline(async {
            async_filesystem::HostDescriptor::symlink_at(&mut self.0, fd, src_path, dest_path).await
        })
    }

    fn unlink_file_at(
        &mut self,
        fd: Resource<sync_filesystem::Descriptor>,
        path: String,
    ) -> FsResult<()> {
        poll_inline(async {
            async_filesystem::HostDescriptor::unlink_file_at(&mut self.0, fd, path).await
        })
    }

    fn read_via_stream(
        &mut self,
        fd: Resource<sync_filesystem::Descriptor>,
        offset: sync_filesystem::Filesize,
    ) -> FsResult<Resource<streams::InputStream>> {
        Ok(async_filesystem::HostDescriptor::read_via_stream(
            &mut self.0,
            fd,
            offset,
        )?)
    }

    fn write_via_stream(
        &mut self,
        fd: Resource<sync_filesystem::Descriptor>,
        offset: sync_filesystem::Filesize,
    ) -> FsResult<Resource<streams::OutputStream>> {
        Ok(async_filesystem::HostDescriptor::write_via_stream(
            &mut self.0,
            fd,
            offset,
        )?)
    }

    fn append_via_stream(
        &mut self,
        fd: Resource<sync_filesystem::Descriptor>,
    ) -> FsResult<Resource<streams::OutputStream>> {
        Ok(async_filesystem::HostDescriptor::append_via_stream(
            &mut self.0,
            fd,
        )?)
    }

    fn is_same_object(
        &mut self,
        a: Resource<sync_filesystem::Descriptor>,
        b: Resource<sync_filesystem::Descriptor>,
    ) -> wasmtime::Result<bool> {
        poll_inline(async {
            async_filesystem::HostDescriptor::is_same_object(&mut self.0, a, b).await
        })
    }
    fn metadata_hash(
        &mut self,
        fd: Resource<sync_filesystem::Descriptor>,
    ) -> FsResult<sync_filesystem::MetadataHashValue> {
        Ok(poll_inline(async {
            async_filesystem::HostDescriptor::metadata_hash(&mut self.0, fd).await
        })?
        .into())
    }
    fn metadata_hash_at(
        &mut self,
        fd: Resource<sync_filesystem::Descriptor>,
        path_flags: sync_filesystem::PathFlags,
        path: String,
    ) -> FsResult<sync_filesystem::MetadataHashValue> {
        Ok(poll_inline(async {
            async_filesystem::HostDescriptor::metadata_hash_at(
                &mut self.0,
                fd,
                path_flags.into(),
                path,
            )
            .await
        })?
        .into())
    }
}

impl sync_filesystem::HostDirectoryEntryStream for InlineFs<'_> {
    fn read_directory_entry(
        &mut self,
        stream: Resource<sync_filesystem::DirectoryEntryStream>,
    ) -> FsResult<Option<sync_filesystem::DirectoryEntry>> {
        Ok(poll_inline(async {
            async_filesystem::HostDirectoryEntryStream::read_directory_entry(&mut self.0, stream)
                .await
        })?
        .map(|e| e.into()))
    }

    fn drop(
        &mut self,
        stream: Resource<sync_filesystem::DirectoryEntryStream>,
    ) -> wasmtime::Result<()> {
        async_filesystem::HostDirectoryEntryStream::drop(&mut self.0, stream)
    }
}
