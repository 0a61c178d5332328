//! Runs one cache call for asyncio: answered at once on the caller's thread when the engine can
//! (no thread hop, no event-loop round trip), else finished on the tokio runtime and delivered
//! to the event loop through `pyo3-async-runtimes`.
//!
//! The Rust API already runs a quick call inline on the thread that polls it, and moves slow
//! work (a value over 60 KiB, a sync, eviction, a busy engine) to a blocking thread. So each
//! call's future is polled once here, on the event loop's thread with the GIL released and the
//! tokio runtime entered: a quick call is `Ready` in microseconds and its value is returned as
//! is; otherwise the same future, already started, is handed to the runtime, and the caller
//! gets a [`Pending`] to await. The event loop is never blocked by slow work.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::task::{Context, Poll, Waker};

use pyo3::exceptions::PyStopIteration;
use pyo3::prelude::*;

use crate::cbor::{self, Pickle};
use crate::errors;

/// A call's result, turned into Python on the event loop's thread (a `Ready` call) or by
/// `pyo3-async-runtimes` with the GIL held (a pending one): a decoded value or the exception.
pub struct Outcome<R> {
    pub result: persistent_cache::Result<R>,
    pub pickle: Pickle,
}

/// How a call's Rust result becomes a Python value.
pub trait ToPython: Send + 'static {
    fn to_python<'py>(self, py: Python<'py>, pickle: Pickle) -> PyResult<Bound<'py, PyAny>>;
}

/// A stored value (`get`, `pop`): decoded from CBOR; `None` on a miss.
pub struct Found(pub Option<Vec<u8>>);

impl ToPython for Found {
    fn to_python<'py>(self, py: Python<'py>, pickle: Pickle) -> PyResult<Bound<'py, PyAny>> {
        match self.0 {
            None => Ok(py.None().into_bound(py)),
            Some(bytes) => cbor::decode(py, &bytes, pickle),
        }
    }
}

macro_rules! plain_to_python {
    ($($t:ty),*) => {$(
        impl ToPython for $t {
            fn to_python<'py>(self, py: Python<'py>, _: Pickle) -> PyResult<Bound<'py, PyAny>> {
                Ok(pyo3::IntoPyObjectExt::into_py_any(self, py)?.into_bound(py))
            }
        }
    )*};
}
plain_to_python!(bool, u64, i64, Vec<String>, ());

impl<'py, R: ToPython> IntoPyObject<'py> for Outcome<R> {
    type Target = PyAny;
    type Output = Bound<'py, PyAny>;
    type Error = PyErr;

    fn into_pyobject(self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        match self.result {
            Ok(value) => value.to_python(py, self.pickle),
            Err(err) => Err(errors::to_py(py, err)),
        }
    }
}

/// A call answered at once completes without suspending its task (as an uncontended
/// `asyncio.Lock` does). So that a task looping over such calls still lets the event loop run
/// (timers, I/O, other tasks), every `YIELD_EVERY`-th of them is returned as a [`Pending`]
/// that yields to the loop once before giving its value: tokio's cooperative budget, as the
/// Rust API spends it, for asyncio. A yield costs one event-loop turn (a few microseconds).
pub const YIELD_EVERY: u32 = 8;

static BUDGET: AtomicU32 = AtomicU32::new(YIELD_EVERY);

/// Spends one unit of the budget; true when it ran out (and was refilled).
fn budget_spent() -> bool {
    let left = BUDGET.fetch_sub(1, Ordering::Relaxed);
    if left <= 1 {
        BUDGET.store(YIELD_EVERY, Ordering::Relaxed);
        return true;
    }
    false
}

/// What an async call returns when it cannot simply return its value: awaiting it awaits the
/// `asyncio.Future` the runtime completes (the engine could not answer at once), or yields to
/// the event loop once and then gives the value it already has (the budget ran out).
#[pyclass(module = "persistent_cache._native", frozen)]
pub struct Pending {
    inner: PendingInner,
    /// For `Then`: whether the loop was yielded to.
    yielded: AtomicBool,
}

enum PendingInner {
    /// An `asyncio.Future`.
    Future(Py<PyAny>),
    /// The value (or the exception) to give after one yield.
    Then(PyResult<Py<PyAny>>),
}

#[pymethods]
impl Pending {
    fn __await__(slf: Bound<'_, Self>) -> PyResult<Bound<'_, PyAny>> {
        match &slf.get().inner {
            PendingInner::Future(future) => future.bind(slf.py()).call_method0("__await__"),
            PendingInner::Then(_) => Ok(slf.into_any()),
        }
    }

    /// Whether the call was answered at once (this only yields to the loop before giving the
    /// value) rather than finished on the runtime.
    #[getter]
    fn answered_at_once(&self) -> bool {
        matches!(self.inner, PendingInner::Then(_))
    }

    fn __next__(&self, py: Python<'_>) -> PyResult<Option<Py<PyAny>>> {
        let PendingInner::Then(result) = &self.inner else {
            return Err(pyo3::exceptions::PyTypeError::new_err("not an iterator"));
        };
        if !self.yielded.swap(true, Ordering::Relaxed) {
            // A bare yield (None): the asyncio task runs again on the loop's next turn.
            return Ok(Some(py.None()));
        }
        match result {
            // A 1-tuple: StopIteration(value), even when the value is itself a tuple.
            Ok(value) => Err(PyStopIteration::new_err((value.clone_ref(py),))),
            Err(err) => Err(err.clone_ref(py)),
        }
    }
}

type CallFuture<R> = Pin<Box<dyn Future<Output = persistent_cache::Result<R>> + Send>>;

/// Starts `call`: polls it once on this thread (GIL released, runtime entered). Ready: its
/// value, or the exception it raises. Not ready: a [`Pending`] whose future the runtime
/// completes.
///
/// Edge cases: a call that is not ready needs a running asyncio loop on this thread (the
/// package makes calls only from its coroutines, and `close` checks); without one,
/// `pyo3-async-runtimes`' `RuntimeError` (no running event loop) is raised, and the call is
/// dropped: one waiting for the engine never runs, one already on a blocking thread finishes.
pub fn start<R: ToPython>(
    py: Python<'_>,
    pickle: Pickle,
    call: impl Future<Output = persistent_cache::Result<R>> + Send + 'static,
) -> PyResult<Py<PyAny>> {
    let mut call: CallFuture<R> = Box::pin(call);
    let polled = py.detach(|| {
        let _runtime = pyo3_async_runtimes::tokio::get_runtime().enter();
        call.as_mut().poll(&mut Context::from_waker(Waker::noop()))
    });
    match polled {
        Poll::Ready(result) => {
            let value = Outcome { result, pickle }
                .into_pyobject(py)
                .map(Bound::unbind);
            if !budget_spent() {
                return value;
            }
            Ok(Py::new(
                py,
                Pending {
                    inner: PendingInner::Then(value),
                    yielded: AtomicBool::new(false),
                },
            )?
            .into_any())
        }
        Poll::Pending => {
            // The runtime polls it again with a real waker: a call waiting for the engine
            // takes its turn there, a call moved to a blocking thread is awaited there.
            let future = pyo3_async_runtimes::tokio::future_into_py(py, async move {
                let result = call.await;
                Ok(Outcome { result, pickle })
            })?;
            Ok(Py::new(
                py,
                Pending {
                    inner: PendingInner::Future(future.unbind()),
                    yielded: AtomicBool::new(false),
                },
            )?
            .into_any())
        }
    }
}
