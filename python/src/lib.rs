//! The `persistent_cache._native` extension module: PersistentCache for Python (see
//! `persistent_cache/__init__.py` for the API users call, and `docs/python.md`).

mod bridge;
mod cache;
mod cbor;
mod errors;

use pyo3::prelude::*;

/// Encodes `value` as the cache stores it (CBOR); for tests and tools.
#[pyfunction]
#[pyo3(signature = (value, *, pickle=false))]
fn encode<'py>(
    py: Python<'py>,
    value: &Bound<'py, PyAny>,
    pickle: bool,
) -> PyResult<Bound<'py, pyo3::types::PyBytes>> {
    let pickle = if pickle {
        cbor::Pickle::Allow
    } else {
        cbor::Pickle::Refuse
    };
    Ok(pyo3::types::PyBytes::new(py, &cbor::encode(value, pickle)?))
}

/// Decodes bytes the cache stores (CBOR) into a Python value; for tests and tools.
#[pyfunction]
#[pyo3(signature = (data, *, pickle=false))]
fn decode<'py>(py: Python<'py>, data: &[u8], pickle: bool) -> PyResult<Bound<'py, PyAny>> {
    let pickle = if pickle {
        cbor::Pickle::Allow
    } else {
        cbor::Pickle::Refuse
    };
    cbor::decode(py, data, pickle)
}

#[pymodule]
fn _native(module: &Bound<'_, PyModule>) -> PyResult<()> {
    // Two workers: they only wait for engine calls moved to blocking threads and hand the
    // results to the event loop; the engine work runs on the caller's or a blocking thread.
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    builder
        .worker_threads(2)
        .thread_name("pcache-py")
        .enable_all();
    pyo3_async_runtimes::tokio::init(builder);
    module.add_class::<cache::NativeCache>()?;
    module.add_class::<bridge::Pending>()?;
    module.add_function(wrap_pyfunction!(encode, module)?)?;
    module.add_function(wrap_pyfunction!(decode, module)?)?;
    module.add("PICKLE_TAG", cbor::PICKLE_TAG)?;
    module.add("MAX_DEPTH", cbor::MAX_DEPTH)?;
    module.add("YIELD_EVERY", bridge::YIELD_EVERY)?;
    Ok(())
}
