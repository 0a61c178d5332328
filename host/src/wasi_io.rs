//! `wasi:io/streams` for synchronous guests, without a tokio runtime.
//!
//! The guest has no real stdio (its streams are wasmtime-wasi's sinks and empty inputs), but
//! Rust's panic handler writes its message to stderr with `blocking-write-and-flush`, and
//! wasmtime-wasi's synchronous bindings run that through tokio's `block_on`, which panics on a
//! thread that already runs an async runtime — where light calls run. As `wasi_fs` does for the
//! filesystem, this shadows the blocking stream functions with versions that poll inline.
//!
//! The trait impls below are wasmtime-wasi 48's `p2/host/io.rs` (Apache-2.0 WITH
//! LLVM-exception) with `in_tokio` replaced by `poll_inline`, on a wrapper type (the upstream
//! impls are on `ResourceTable` itself).

#![allow(clippy::needless_question_mark)] // kept as in the upstream file

use wasmtime::component::{HasData, Resource, ResourceTable};
use wasmtime_wasi::p2::bindings::io::streams::{
    Host as AsyncHost, HostInputStream as AsyncHostInputStream,
    HostOutputStream as AsyncHostOutputStream,
};
use wasmtime_wasi::p2::bindings::sync::io::poll::Pollable;
use wasmtime_wasi::p2::bindings::sync::io::streams::{self, InputStream, OutputStream};
use wasmtime_wasi::p2::{StreamError, StreamResult};

use crate::runtime::GuestState;
use crate::wasi_fs::poll_inline;

/// The resource table the shadowing bindings receive.
pub(crate) struct InlineIo<'a>(&'a mut ResourceTable);

/// Marker for `add_to_linker`: the data is an [`InlineIo`].
pub(crate) struct InlineIoData;

impl HasData for InlineIoData {
    type Data<'a> = InlineIo<'a>;
}

/// Replaces wasmtime-wasi's `wasi:io/streams` in `linker` with the inline-polling one.
pub(crate) fn shadow_streams(
    linker: &mut wasmtime::component::Linker<GuestState>,
) -> wasmtime::Result<()> {
    linker.allow_shadowing(true);
    streams::add_to_linker::<GuestState, InlineIoData>(linker, |state| InlineIo(&mut state.table))?;
    linker.allow_shadowing(false);
    Ok(())
}

impl streams::Host for InlineIo<'_> {
    fn convert_stream_error(&mut self, err: StreamError) -> wasmtime::Result<streams::StreamError> {
        Ok(AsyncHost::convert_stream_error(self.0, err)?.into())
    }
}

impl streams::HostOutputStream for InlineIo<'_> {
    fn drop(&mut self, stream: Resource<OutputStream>) -> wasmtime::Result<()> {
        poll_inline(async { AsyncHostOutputStream::drop(self.0, stream).await })
    }

    fn check_write(&mut self, stream: Resource<OutputStream>) -> StreamResult<u64> {
        Ok(AsyncHostOutputStream::check_write(self.0, stream)?)
    }

    fn write(&mut self, stream: Resource<OutputStream>, bytes: Vec<u8>) -> StreamResult<()> {
        Ok(AsyncHostOutputStream::write(self.0, stream, bytes)?)
    }

    fn blocking_write_and_flush(
        &mut self,
        stream: Resource<OutputStream>,
        bytes: Vec<u8>,
    ) -> StreamResult<()> {
        poll_inline(async {
            AsyncHostOutputStream::blocking_write_and_flush(self.0, stream, bytes).await
        })
    }

    fn blocking_write_zeroes_and_flush(
        &mut self,
        stream: Resource<OutputStream>,
        len: u64,
    ) -> StreamResult<()> {
        poll_inline(async {
            AsyncHostOutputStream::blocking_write_zeroes_and_flush(self.0, stream, len).await
        })
    }

    fn subscribe(
        &mut self,
        stream: Resource<OutputStream>,
    ) -> wasmtime::Result<Resource<Pollable>> {
        Ok(AsyncHostOutputStream::subscribe(self.0, stream)?)
    }

    fn write_zeroes(&mut self, stream: Resource<OutputStream>, len: u64) -> StreamResult<()> {
        Ok(AsyncHostOutputStream::write_zeroes(self.0, stream, len)?)
    }

    fn flush(&mut self, stream: Resource<OutputStream>) -> StreamResult<()> {
        Ok(AsyncHostOutputStream::flush(
            self.0,
            Resource::new_borrow(stream.rep()),
        )?)
    }

    fn blocking_flush(&mut self, stream: Resource<OutputStream>) -> StreamResult<()> {
        poll_inline(async {
            AsyncHostOutputStream::blocking_flush(self.0, Resource::new_borrow(stream.rep())).await
        })
    }

    fn splice(
        &mut self,
        dst: Resource<OutputStream>,
        src: Resource<InputStream>,
        len: u64,
    ) -> StreamResult<u64> {
        AsyncHostOutputStream::splice(self.0, dst, src, len)
    }

    fn blocking_splice(
        &mut self,
        dst: Resource<OutputStream>,
        src: Resource<InputStream>,
        len: u64,
    ) -> StreamResult<u64> {
        poll_inline(async { AsyncHostOutputStream::blocking_splice(self.0, dst, src, len).await })
    }
}

impl streams::HostInputStream for InlineIo<'_> {
    fn drop(&mut self, stream: Resource<InputStream>) -> wasmtime::Result<()> {
        poll_inline(async { AsyncHostInputStream::drop(self.0, stream).await })
    }

    fn read(&mut self, stream: Resource<InputStream>, len: u64) -> StreamResult<Vec<u8>> {
        AsyncHostInputStream::read(self.0, stream, len)
    }

    fn blocking_read(&mut self, stream: Resource<InputStream>, len: u64) -> StreamResult<Vec<u8>> {
        poll_inline(async { AsyncHostInputStream::blocking_read(self.0, stream, len).await })
    }

    fn skip(&mut self, stream: Resource<InputStream>, len: u64) -> StreamResult<u64> {
        AsyncHostInputStream::skip(self.0, stream, len)
    }

    fn blocking_skip(&mut self, stream: Resource<InputStream>, len: u64) -> StreamResult<u64> {
        poll_inline(async { AsyncHostInputStream::blocking_skip(self.0, stream, len).await })
    }

    fn subscribe(&mut self, stream: Resource<InputStream>) -> wasmtime::Result<Resource<Pollable>> {
        AsyncHostInputStream::subscribe(self.0, stream)
    }
}
