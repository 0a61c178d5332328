//! Python values to CBOR and back, in the encoding the Rust API's serde/ciborium uses.
//!
//! | Python | CBOR (RFC 8949) | Rust (serde) reads it as |
//! |---|---|---|
//! | `None` | simple 22 (null) | `()`, `Option::None` |
//! | `bool` | simple 20/21 | `bool` |
//! | `int` | major 0/1; beyond 64 bits a bignum (tag 2/3) | `i64`, `u64`, `i128` |
//! | `float` | the shortest float that keeps the value (as ciborium writes) | `f64` |
//! | `str` | text string | `String` |
//! | `bytes`, `bytearray`, `memoryview` | byte string | `serde_bytes::ByteBuf`, `ciborium::Value` |
//! | `list`, `tuple` | array (read back as a `list`) | `Vec<T>`, tuples |
//! | `dict` | map, in insertion order (array keys read back as tuples) | structs, `HashMap` |
//!
//! With `pickle=True` only, any other object is stored as its pickle in a byte string under
//! tag [`PICKLE_TAG`]; without it, such an object is a `TypeError` naming its type and where
//! it is in the value, and a stored pickle is refused on read (nothing is unpickled).
//!
//! Reading is bounded: every length is checked against the bytes that remain before anything
//! is allocated, and nesting deeper than [`MAX_DEPTH`] is refused, so no stored value can make
//! the reader allocate without bound or overflow its stack.

use ciborium_ll::{Encoder, Header};
use pyo3::exceptions::PyTypeError;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{
    PyBool, PyByteArray, PyBytes, PyDict, PyFloat, PyInt, PyList, PyMemoryView, PyString, PyTuple,
};

use crate::errors;

/// The CBOR tag of a pickled object (`pickle=True` only): "pick" in ASCII, in the
/// first-come-first-served range of the IANA registry (unregistered).
pub const PICKLE_TAG: u64 = 0x7069_636b;

/// The deepest nesting of lists, tuples and dicts written or read. Deeper values (or a list
/// that contains itself) are refused instead of overflowing the stack.
pub const MAX_DEPTH: usize = 256;

const TAG_POSITIVE_BIGNUM: u64 = 2;
const TAG_NEGATIVE_BIGNUM: u64 = 3;

/// Whether objects CBOR cannot hold are pickled (`pickle=True`) or refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pickle {
    Refuse,
    Allow,
}

/// `value` as CBOR bytes.
///
/// Edge cases: an object of an unsupported type (a `set`, a `datetime`, a class instance...)
/// → `SerializeError` (a `TypeError`) naming the type and where it sits (`value["a"][2]`),
/// unless `pickle` allows it; nesting deeper than [`MAX_DEPTH`] (a list containing itself) →
/// `SerializeError`; a dict key of an unsupported type → the same.
pub fn encode(value: &Bound<'_, PyAny>, pickle: Pickle) -> PyResult<Vec<u8>> {
    let mut out = Vec::with_capacity(64);
    let mut path = Vec::new();
    Writer {
        out: Encoder::from(&mut out),
        pickle,
        path: &mut path,
    }
    .value(value, 0)?;
    Ok(out)
}

/// Where in the value an element is, for error messages: `["users"][1]`.
enum Step {
    Index(usize),
    Key(String),
}

struct Writer<'a> {
    out: Encoder<&'a mut Vec<u8>>,
    pickle: Pickle,
    path: &'a mut Vec<Step>,
}

impl Writer<'_> {
    fn push(&mut self, header: Header) {
        // Writing to a Vec cannot fail.
        let _ = self.out.push(header);
    }

    fn raw(&mut self, bytes: &[u8]) {
        use ciborium_io::Write;
        let _ = self.out.write_all(bytes);
    }

    fn location(&self) -> String {
        let mut at = String::from("value");
        for step in self.path.iter() {
            match step {
                Step::Index(i) => at.push_str(&format!("[{i}]")),
                Step::Key(k) => at.push_str(&format!("[{k}]")),
            }
        }
        at
    }

    fn value(&mut self, value: &Bound<'_, PyAny>, depth: usize) -> PyResult<()> {
        // Exact types first: the common cases cost one pointer comparison each.
        if let Ok(text) = value.cast_exact::<PyString>() {
            let text = text.to_str()?;
            self.push(Header::Text(Some(text.len())));
            self.raw(text.as_bytes());
            return Ok(());
        }
        if value.is_none() {
            self.push(Header::Simple(ciborium_ll::simple::NULL));
            return Ok(());
        }
        if let Ok(flag) = value.cast::<PyBool>() {
            let simple = if flag.is_true() {
                ciborium_ll::simple::TRUE
            } else {
                ciborium_ll::simple::FALSE
            };
            self.push(Header::Simple(simple));
            return Ok(());
        }
        if let Ok(int) = value.cast::<PyInt>() {
            return self.int(int);
        }
        if let Ok(float) = value.cast::<PyFloat>() {
            self.push(Header::Float(float.value()));
            return Ok(());
        }
        if let Ok(bytes) = value.cast::<PyBytes>() {
            let bytes = bytes.as_bytes();
            self.push(Header::Bytes(Some(bytes.len())));
            self.raw(bytes);
            return Ok(());
        }
        if let Ok(text) = value.cast::<PyString>() {
            // A str subclass (a StrEnum member): stored as its text.
            let text = text.to_str()?;
            self.push(Header::Text(Some(text.len())));
            self.raw(text.as_bytes());
            return Ok(());
        }
        if depth >= MAX_DEPTH {
            return Err(errors::serialize_error(
                value.py(),
                format!(
                    "{} nests deeper than {MAX_DEPTH} levels (does it contain itself?)",
                    self.location()
                ),
            ));
        }
        if let Ok(dict) = value.cast::<PyDict>() {
            self.push(Header::Map(Some(dict.len())));
            for (key, item) in dict.iter() {
                self.key(&key, depth + 1)?;
                self.path.push(Step::Key(
                    key.repr().map(|r| r.to_string()).unwrap_or_default(),
                ));
                self.value(&item, depth + 1)?;
                self.path.pop();
            }
            return Ok(());
        }
        if let Ok(list) = value.cast::<PyList>() {
            self.push(Header::Array(Some(list.len())));
            // Indexing (not an iterator): the length written is the length read, even if
            // another thread could change the list meanwhile (it cannot: the GIL is held).
            for (i, item) in list.iter().enumerate() {
                self.path.push(Step::Index(i));
                self.value(&item, depth + 1)?;
                self.path.pop();
            }
            return Ok(());
        }
        if let Ok(tuple) = value.cast::<PyTuple>() {
            self.push(Header::Array(Some(tuple.len())));
            for (i, item) in tuple.iter().enumerate() {
                self.path.push(Step::Index(i));
                self.value(&item, depth + 1)?;
                self.path.pop();
            }
            return Ok(());
        }
        if let Ok(array) = value.cast::<PyByteArray>() {
            let bytes = array.to_vec();
            self.push(Header::Bytes(Some(bytes.len())));
            self.raw(&bytes);
            return Ok(());
        }
        if value.cast::<PyMemoryView>().is_ok() {
            let bytes: Vec<u8> = value
                .py()
                .import("builtins")?
                .getattr("bytes")?
                .call1((value,))?
                .extract()?;
            self.push(Header::Bytes(Some(bytes.len())));
            self.raw(&bytes);
            return Ok(());
        }
        self.other(value)
    }

    /// A dict key: the same types as values, but only the hashable ones can come back.
    fn key(&mut self, key: &Bound<'_, PyAny>, depth: usize) -> PyResult<()> {
        self.path.push(Step::Key(
            key.repr().map(|r| r.to_string()).unwrap_or_default(),
        ));
        let result = self.value(key, depth);
        self.path.pop();
        result
    }

    fn int(&mut self, int: &Bound<'_, PyInt>) -> PyResult<()> {
        if let Ok(small) = int.extract::<i64>() {
            let header = if small >= 0 {
                Header::Positive(small as u64)
            } else {
                Header::Negative(!(small as u64))
            };
            self.push(header);
            return Ok(());
        }
        if let Ok(big) = int.extract::<u64>() {
            self.push(Header::Positive(big));
            return Ok(());
        }
        // Beyond 64 bits: a bignum, as ciborium writes i128/u128 (and as RFC 8949 says):
        // tag 2 with the magnitude, or tag 3 with -1 - n, in big-endian bytes.
        let py = int.py();
        let negative = int.lt(0)?;
        let magnitude = if negative {
            int.neg()?.call_method1("__sub__", (1,))?
        } else {
            int.clone().into_any()
        };
        let bits: usize = magnitude.call_method0("bit_length")?.extract()?;
        let bytes = magnitude
            .call_method1("to_bytes", (bits.div_ceil(8), "big"))?
            .cast_into::<PyBytes>()?;
        let _ = py;
        self.push(Header::Tag(if negative {
            TAG_NEGATIVE_BIGNUM
        } else {
            TAG_POSITIVE_BIGNUM
        }));
        let bytes = bytes.as_bytes();
        self.push(Header::Bytes(Some(bytes.len())));
        self.raw(bytes);
        Ok(())
    }

    /// An object CBOR cannot hold: its pickle under [`PICKLE_TAG`] if allowed, else a
    /// `TypeError` naming it.
    fn other(&mut self, value: &Bound<'_, PyAny>) -> PyResult<()> {
        let py = value.py();
        let type_name = value
            .get_type()
            .fully_qualified_name()
            .map(|n| n.to_string())
            .unwrap_or_else(|_| "?".into());
        if self.pickle == Pickle::Refuse {
            return Err(errors::serialize_error(
                py,
                format!(
                    "cannot store {} of type '{type_name}': persistent_cache stores dict, list, \
                     tuple, str, bytes, int, float, bool and None (as CBOR); convert it, or open \
                     the cache with pickle=True (see the risk in docs/python.md)",
                    self.location()
                ),
            ));
        }
        let pickled = pickle_module(py)?
            .call_method1("dumps", (value,))?
            .cast_into::<PyBytes>()?;
        self.push(Header::Tag(PICKLE_TAG));
        let bytes = pickled.as_bytes();
        self.push(Header::Bytes(Some(bytes.len())));
        self.raw(bytes);
        Ok(())
    }
}

fn pickle_module(py: Python<'_>) -> PyResult<&Bound<'_, PyModule>> {
    static PICKLE: PyOnceLock<Py<PyModule>> = PyOnceLock::new();
    Ok(PICKLE
        .get_or_try_init(py, || py.import("pickle").map(Bound::unbind))?
        .bind(py))
}

/// The Python value `bytes` encode.
///
/// Edge cases: bytes that are not one complete CBOR item of the supported kinds (truncated,
/// trailing bytes, invalid UTF-8 text, an undefined simple value, nesting deeper than
/// [`MAX_DEPTH`]) → `DeserializeError` saying where; a pickled object with `pickle`
/// refusing → `DeserializeError` (it is not unpickled); other tags are read through (their
/// content is returned).
pub fn decode<'py>(py: Python<'py>, bytes: &[u8], pickle: Pickle) -> PyResult<Bound<'py, PyAny>> {
    let mut reader = Reader {
        py,
        bytes,
        at: 0,
        pickle,
    };
    let value = reader.item(0)?;
    if reader.at != bytes.len() {
        return Err(reader.error("trailing bytes after the value"));
    }
    Ok(value)
}

struct Reader<'a, 'py> {
    py: Python<'py>,
    bytes: &'a [u8],
    at: usize,
    pickle: Pickle,
}

/// What an initial byte announces.
enum Head {
    Unsigned(u64),
    Negative(u64),
    Bytes(Option<u64>),
    Text(Option<u64>),
    Array(Option<u64>),
    Map(Option<u64>),
    Tag(u64),
    Simple(u8),
    Float(f64),
    Break,
}

impl<'a, 'py> Reader<'a, 'py> {
    fn error(&self, what: &str) -> PyErr {
        errors::deserialize_error(
            self.py,
            format!(
                "the stored value is not CBOR this package reads: {what} (at byte {} of {})",
                self.at,
                self.bytes.len()
            ),
        )
    }

    fn take(&mut self, len: u64) -> PyResult<&'a [u8]> {
        let left = self.bytes.len() - self.at;
        if len > left as u64 {
            return Err(self.error("truncated"));
        }
        let start = self.at;
        self.at += len as usize;
        Ok(&self.bytes[start..self.at])
    }

    fn head(&mut self) -> PyResult<Head> {
        let initial = self.take(1)?[0];
        let (major, minor) = (initial >> 5, initial & 0x1f);
        let argument = match minor {
            0..=23 => Some(u64::from(minor)),
            24 => Some(u64::from(self.take(1)?[0])),
            25 => Some(u64::from(u16::from_be_bytes(
                self.take(2)?.try_into().unwrap(),
            ))),
            26 => Some(u64::from(u32::from_be_bytes(
                self.take(4)?.try_into().unwrap(),
            ))),
            27 => Some(u64::from_be_bytes(self.take(8)?.try_into().unwrap())),
            31 => None,
            _ => return Err(self.error("reserved additional information")),
        };
        let definite =
            |argument: Option<u64>| argument.ok_or_else(|| self.error("indefinite length"));
        Ok(match major {
            0 => Head::Unsigned(definite(argument)?),
            1 => Head::Negative(definite(argument)?),
            2 => Head::Bytes(argument),
            3 => Head::Text(argument),
            4 => Head::Array(argument),
            5 => Head::Map(argument),
            6 => Head::Tag(definite(argument)?),
            _ => match (minor, argument) {
                (25, Some(bits)) => Head::Float(f16_to_f64(bits as u16)),
                (26, Some(bits)) => Head::Float(f64::from(f32::from_bits(bits as u32))),
                (27, Some(bits)) => Head::Float(f64::from_bits(bits)),
                (31, None) => Head::Break,
                (_, Some(simple)) if minor <= 24 => Head::Simple(simple as u8),
                _ => return Err(self.error("malformed simple value")),
            },
        })
    }

    /// The bytes of a byte or text string (joined, if sent in chunks).
    fn string(&mut self, len: Option<u64>, text: bool) -> PyResult<std::borrow::Cow<'a, [u8]>> {
        if let Some(len) = len {
            return Ok(std::borrow::Cow::Borrowed(self.take(len)?));
        }
        let mut joined = Vec::new();
        loop {
            match self.head()? {
                Head::Break => return Ok(std::borrow::Cow::Owned(joined)),
                Head::Bytes(Some(len)) if !text => joined.extend_from_slice(self.take(len)?),
                Head::Text(Some(len)) if text => joined.extend_from_slice(self.take(len)?),
                _ => return Err(self.error("a chunk of an indefinite string is not a string")),
            }
        }
    }

    fn item(&mut self, depth: usize) -> PyResult<Bound<'py, PyAny>> {
        let head = self.head()?;
        self.item_from(head, depth)
    }

    fn item_from(&mut self, head: Head, depth: usize) -> PyResult<Bound<'py, PyAny>> {
        let py = self.py;
        Ok(match head {
            Head::Unsigned(n) => n.into_pyobject(py)?.into_any(),
            Head::Negative(n) => {
                if n < (1 << 63) {
                    (!n as i64).into_pyobject(py)?.into_any()
                } else {
                    (-1i128 - i128::from(n)).into_pyobject(py)?.into_any()
                }
            }
            Head::Float(f) => PyFloat::new(py, f).into_any(),
            Head::Bytes(len) => {
                let bytes = self.string(len, false)?;
                PyBytes::new(py, &bytes).into_any()
            }
            Head::Text(len) => {
                let bytes = self.string(len, true)?;
                let text = std::str::from_utf8(&bytes)
                    .map_err(|_| self.error("a text string is not valid UTF-8"))?;
                PyString::new(py, text).into_any()
            }
            Head::Simple(simple) => match simple {
                ciborium_ll::simple::FALSE => PyBool::new(py, false).to_owned().into_any(),
                ciborium_ll::simple::TRUE => PyBool::new(py, true).to_owned().into_any(),
                ciborium_ll::simple::NULL | ciborium_ll::simple::UNDEFINED => {
                    py.None().into_bound(py)
                }
                _ => return Err(self.error("an unassigned simple value")),
            },
            Head::Break => return Err(self.error("an unexpected break")),
            // Tags nest too (a tag's content is an item): a run of tags counts as depth.
            Head::Array(_) | Head::Map(_) | Head::Tag(_) if depth >= MAX_DEPTH => {
                return Err(self.error(&format!("nested deeper than {MAX_DEPTH} levels")));
            }
            Head::Array(len) => {
                let list = PyList::empty(py);
                match len {
                    Some(len) => {
                        // Each element takes at least a byte: a length beyond the bytes left
                        // is a lie, refused before the loop.
                        self.check_count(len, 1)?;
                        for _ in 0..len {
                            list.append(self.item(depth + 1)?)?;
                        }
                    }
                    None => loop {
                        match self.head()? {
                            Head::Break => break,
                            head => list.append(self.item_from(head, depth + 1)?)?,
                        }
                    },
                }
                list.into_any()
            }
            Head::Map(len) => {
                let dict = PyDict::new(py);
                match len {
                    Some(len) => {
                        self.check_count(len, 2)?;
                        for _ in 0..len {
                            let key = self.key(depth + 1)?;
                            dict.set_item(key, self.item(depth + 1)?)?;
                        }
                    }
                    None => loop {
                        match self.head()? {
                            Head::Break => break,
                            head => {
                                let key = self.item_from(head, depth + 1)?;
                                let key = hashable(key)?;
                                dict.set_item(key, self.item(depth + 1)?)?;
                            }
                        }
                    },
                }
                dict.into_any()
            }
            Head::Tag(tag) => self.tagged(tag, depth + 1)?,
        })
    }

    fn check_count(&self, count: u64, bytes_each: u64) -> PyResult<()> {
        let left = (self.bytes.len() - self.at) as u64;
        if count.saturating_mul(bytes_each) > left {
            return Err(self.error("a length longer than the bytes left"));
        }
        Ok(())
    }

    fn key(&mut self, depth: usize) -> PyResult<Bound<'py, PyAny>> {
        let key = self.item(depth)?;
        hashable(key)
    }

    fn tagged(&mut self, tag: u64, depth: usize) -> PyResult<Bound<'py, PyAny>> {
        let py = self.py;
        match tag {
            TAG_POSITIVE_BIGNUM | TAG_NEGATIVE_BIGNUM => {
                let Head::Bytes(len) = self.head()? else {
                    return Err(self.error("a bignum that is not a byte string"));
                };
                let magnitude = self.string(len, false)?;
                let int_type = py.get_type::<PyInt>();
                let n =
                    int_type.call_method1("from_bytes", (PyBytes::new(py, &magnitude), "big"))?;
                if tag == TAG_POSITIVE_BIGNUM {
                    Ok(n)
                } else {
                    Ok(n.neg()?.call_method1("__sub__", (1,))?)
                }
            }
            PICKLE_TAG => {
                let Head::Bytes(len) = self.head()? else {
                    return Err(self.error("a pickle that is not a byte string"));
                };
                let pickled = self.string(len, false)?;
                if self.pickle == Pickle::Refuse {
                    return Err(errors::deserialize_error(
                        py,
                        "the stored value holds a pickled object; it is not unpickled unless the \
                         cache is opened with pickle=True, which lets whoever can write the \
                         cache directory run code in this process"
                            .into(),
                    ));
                }
                pickle_module(py)?.call_method1("loads", (PyBytes::new(py, &pickled),))
            }
            // Any other tag (a date, a URI...): its content.
            _ => self.item(depth),
        }
    }
}

/// A decoded map key as Python can use it: a list (a CBOR array key) becomes a tuple.
fn hashable(key: Bound<'_, PyAny>) -> PyResult<Bound<'_, PyAny>> {
    if let Ok(list) = key.cast::<PyList>() {
        let items = list.iter().map(hashable).collect::<PyResult<Vec<_>>>()?;
        return Ok(PyTuple::new(key.py(), items)?.into_any());
    }
    if key.cast::<PyDict>().is_ok() {
        return Err(PyTypeError::new_err(
            "a stored map has a map as a key, which Python cannot use as a dict key",
        ));
    }
    Ok(key)
}

/// An IEEE 754 half-precision float's value.
fn f16_to_f64(bits: u16) -> f64 {
    let sign = if bits & 0x8000 != 0 { -1.0 } else { 1.0 };
    let exponent = i32::from((bits >> 10) & 0x1f);
    let fraction = f64::from(bits & 0x3ff);
    sign * match exponent {
        0 => fraction * 2f64.powi(-24),
        0x1f if fraction == 0.0 => f64::INFINITY,
        0x1f => f64::NAN,
        _ => (1.0 + fraction / 1024.0) * 2f64.powi(exponent - 15),
    }
}
