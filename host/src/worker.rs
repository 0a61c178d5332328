//! `GuestThread`: runs one cache's guest on a dedicated thread, outside any async runtime.
//!
//! wasmtime-wasi's synchronous bindings drive their filesystem calls with a Tokio `block_on`,
//! which panics on a thread that is running an async runtime. Each open cache therefore owns a
//! thread that holds its guest and executes calls sent to it, in order.

use std::path::PathBuf;
use std::sync::mpsc;
use std::thread::JoinHandle;

use crate::error::{Error, Result};
use crate::options::CacheOptions;
use crate::runtime::Guest;

/// Native stack for guest threads: room for wasm frames plus host calls.
const GUEST_THREAD_STACK_BYTES: usize = 8 * 1024 * 1024;

/// A unit of work for the guest thread.
type Job = Box<dyn FnOnce(&mut GuestWorker) + Send>;

/// The handle to a running guest thread.
pub(crate) struct GuestThread {
    jobs: mpsc::Sender<Job>,
    thread: JoinHandle<()>,
}

impl GuestThread {
    /// Starts a thread, instantiates a guest on `directory` there and opens the cache.
    ///
    /// Blocks until the cache is open (or failed to open).
    pub(crate) fn start(directory: PathBuf, options: CacheOptions) -> Result<GuestThread> {
        let (jobs, job_queue) = mpsc::channel::<Job>();
        let (opened_tx, opened_rx) = mpsc::sync_channel::<Result<()>>(1);
        let thread_name = format!("pcache-guest:{}", directory.display());
        let thread = std::thread::Builder::new()
            .name(thread_name)
            .stack_size(GUEST_THREAD_STACK_BYTES)
            .spawn(move || {
                let guest = match start_guest(&directory, &options) {
                    Ok(guest) => guest,
                    Err(err) => {
                        let _ = opened_tx.send(Err(err));
                        return;
                    }
                };
                let _ = opened_tx.send(Ok(()));
                let mut worker = GuestWorker {
                    slot: GuestSlot::Ready(guest),
                    directory,
                    options,
                };
                while let Ok(job) = job_queue.recv() {
                    job(&mut worker);
                }
                if let Err(err) = worker.close() {
                    tracing::warn!(directory = %worker.directory.display(), error = %err, "closing the cache failed");
                }
            })
            .map_err(|err| Error::Wasm(format!("cannot start the cache's guest thread: {err}")))?;
        let opened = opened_rx.recv().unwrap_or_else(|_| Err(thread_stopped()));
        match opened {
            Ok(()) => Ok(GuestThread { jobs, thread }),
            Err(err) => {
                let _ = thread.join();
                Err(err)
            }
        }
    }

    /// Runs `operation` on the guest thread and waits (asynchronously) for its result.
    ///
    /// The guest is restarted first if an earlier call trapped, and replaced afterwards if this
    /// call traps.
    pub(crate) fn submit<T: Send + 'static>(
        &self,
        operation: impl FnOnce(&mut Guest) -> Result<T> + Send + 'static,
    ) -> tokio::sync::oneshot::Receiver<Result<T>> {
        let (reply, result) = tokio::sync::oneshot::channel();
        let job: Job = Box::new(move |worker| {
            let _ = reply.send(worker.call(operation));
        });
        // If the thread is gone the job (and `reply`) is dropped, which the receiver reports.
        let _ = self.jobs.send(job);
        result
    }

    /// Closes the cache (flushing it), stops the thread and waits for it.
    pub(crate) fn close(self) -> Result<()> {
        let (reply, result) = mpsc::sync_channel(1);
        let job: Job = Box::new(move |worker| {
            let _ = reply.send(worker.close());
        });
        let closed = match self.jobs.send(job) {
            Ok(()) => result.recv().unwrap_or_else(|_| Err(thread_stopped())),
            Err(_) => Err(thread_stopped()),
        };
        drop(self.jobs);
        if self.thread.join().is_err() {
            return Err(thread_stopped());
        }
        closed
    }
}

/// The error reported when the guest thread died (a panic on it).
pub(crate) fn thread_stopped() -> Error {
    Error::Wasm("the cache's guest thread stopped unexpectedly".to_owned())
}

enum GuestSlot {
    /// A working guest with the cache open.
    Ready(Box<Guest>),
    /// The previous guest trapped and restarting it failed; the next call tries again.
    NeedsRestart,
    /// The cache was closed.
    Closed,
}

/// The guest thread's state: the guest and what is needed to restart it.
struct GuestWorker {
    slot: GuestSlot,
    directory: PathBuf,
    options: CacheOptions,
}

impl GuestWorker {
    fn call<T>(&mut self, operation: impl FnOnce(&mut Guest) -> Result<T>) -> Result<T> {
        if matches!(self.slot, GuestSlot::NeedsRestart) {
            self.slot = GuestSlot::Ready(start_guest(&self.directory, &self.options)?);
        }
        let GuestSlot::Ready(guest) = &mut self.slot else {
            return Err(Error::Closed);
        };
        let result = operation(guest);
        if guest.trapped() {
            // Drop the broken instance (and its open files) before starting a new one.
            self.slot = GuestSlot::NeedsRestart;
            if let Err(err) = &result {
                tracing::warn!(directory = %self.directory.display(), error = %err, "the cache guest trapped; restarting it");
            }
            match start_guest(&self.directory, &self.options) {
                Ok(guest) => self.slot = GuestSlot::Ready(guest),
                Err(err) => {
                    tracing::warn!(directory = %self.directory.display(), error = %err, "cannot restart the cache guest; will retry on the next call");
                }
            }
        }
        result
    }

    fn close(&mut self) -> Result<()> {
        match std::mem::replace(&mut self.slot, GuestSlot::Closed) {
            GuestSlot::Ready(mut guest) if !guest.trapped() => guest.close(),
            GuestSlot::Ready(_) | GuestSlot::NeedsRestart | GuestSlot::Closed => Ok(()),
        }
    }
}

/// Instantiates a guest on `directory` and opens the cache in it.
fn start_guest(directory: &std::path::Path, options: &CacheOptions) -> Result<Box<Guest>> {
    let mut guest = Box::new(Guest::instantiate(directory, options)?);
    guest.open(options.size_limit, options.sync)?;
    Ok(guest)
}
