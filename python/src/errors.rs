//! `persistent_cache::Error` as the Python exceptions of `persistent_cache.errors`.
//!
//! The classes are defined in Python (`persistent_cache/errors.py`), so that each can also be
//! the built-in exception it is a kind of (`InvalidKeyError` is a `ValueError`, `CacheIOError`
//! an `OSError`, ...); this module looks them up once and raises them.

use persistent_cache::Error;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::PyModule;

fn errors_module(py: Python<'_>) -> PyResult<&Bound<'_, PyModule>> {
    static MODULE: PyOnceLock<Py<PyModule>> = PyOnceLock::new();
    Ok(MODULE
        .get_or_try_init(py, || {
            py.import("persistent_cache.errors").map(Bound::unbind)
        })?
        .bind(py))
}

/// An instance of the exception class `name` of `persistent_cache.errors`, made with `args`.
fn raise<'py, A>(py: Python<'py>, name: &str, args: A) -> PyErr
where
    A: IntoPyObject<'py, Target = pyo3::types::PyTuple, Output = Bound<'py, pyo3::types::PyTuple>>,
{
    let class = match errors_module(py).and_then(|m| m.getattr(name)) {
        Ok(class) => class,
        Err(err) => return err,
    };
    let args = match args.into_pyobject(py) {
        Ok(args) => args,
        Err(err) => return err.into(),
    };
    match class.call1(args) {
        Ok(instance) => PyErr::from_value(instance),
        Err(err) => err,
    }
}

/// The Python exception for `err`: one class per variant of `persistent_cache::Error`, each a
/// `CacheError`, carrying the Rust error's message and its fields as attributes.
pub fn to_py(py: Python<'_>, err: Error) -> PyErr {
    let message = err.to_string();
    match err {
        Error::InvalidKey(_) => raise(py, "InvalidKeyError", (message,)),
        Error::ValueTooLarge { size, limit } => {
            raise(py, "ValueTooLargeError", (message, size, limit))
        }
        Error::InvalidTtl(_) => raise(py, "InvalidTtlError", (message,)),
        Error::Io(io) => {
            let errno = io.raw_os_error();
            raise(py, "CacheIOError", (errno, message))
        }
        Error::ReadOnly => raise(py, "ReadOnlyError", (message,)),
        Error::Corrupt(_) => raise(py, "CorruptError", (message,)),
        Error::IncompatibleFormat(_) => raise(py, "IncompatibleFormatError", (message,)),
        Error::NotACounter(_) => raise(py, "NotACounterError", (message,)),
        Error::CounterOverflow(_) => raise(py, "CounterOverflowError", (message,)),
        Error::Closed => raise(py, "CacheClosedError", (message,)),
        Error::Config { variable, .. } => raise(py, "ConfigError", (message, variable)),
        Error::Directory { path, source } => raise(
            py,
            "DirectoryError",
            (source.raw_os_error(), message, path.display().to_string()),
        ),
        Error::Locked { path } => raise(py, "LockedError", (message, path.display().to_string())),
        Error::Serialize(_) => raise(py, "SerializeError", (message,)),
        Error::Deserialize(_) => raise(py, "DeserializeError", (message,)),
        Error::MemoryLimit { limit } => raise(py, "MemoryLimitError", (message, limit)),
        Error::TimeLimit { limit } => raise(py, "TimeLimitError", (message, limit.as_secs_f64())),
        Error::Wasm(_) => raise(py, "EngineError", (message,)),
        Error::Plugin { plugin, .. } => raise(py, "PluginError", (message, plugin)),
        // `Error` is non-exhaustive: a variant added later is still a CacheError.
        _ => raise(py, "CacheError", (message,)),
    }
}

/// `SerializeError` (a `CacheError` and a `TypeError`) with `message`.
pub fn serialize_error(py: Python<'_>, message: String) -> PyErr {
    raise(py, "SerializeError", (message,))
}

/// `DeserializeError` (a `CacheError` and a `ValueError`) with `message`.
pub fn deserialize_error(py: Python<'_>, message: String) -> PyErr {
    raise(py, "DeserializeError", (message,))
}
