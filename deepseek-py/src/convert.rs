//! Python values <-> Rust values at the boundary: token ids in, numpy float32 arrays out, counts.
//! numpy is used through its Python API, so the extension needs no numpy headers or crate.

use pyo3::exceptions::{PyOverflowError, PyTypeError};
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyByteArray, PyBytes, PyString};

use crate::errors::value_error;

/// The `numpy` module, imported once.
pub fn numpy(py: Python<'_>) -> PyResult<&Bound<'_, PyModule>> {
    static NUMPY: PyOnceLock<Py<PyModule>> = PyOnceLock::new();
    let module = NUMPY.get_or_try_init(py, || PyModule::import(py, "numpy").map(Bound::unbind))?;
    Ok(module.bind(py))
}

/// Token ids from a sequence of ints or a 1-D integer numpy array.
///
/// Negative ids and ids that do not fit a `u32` are a `ValueError` here; ids `>= vocab_size`
/// are left to the core, which names the id and its position.
pub fn token_ids(obj: &Bound<'_, PyAny>, vocab_size: usize) -> PyResult<Vec<u32>> {
    let py = obj.py();
    if obj.is_instance_of::<PyString>() || obj.is_instance_of::<PyBytes>() {
        return Err(PyTypeError::new_err(
            "ids must be a sequence of ints or a 1-D integer numpy array, not a string",
        ));
    }
    let np = numpy(py)?;
    let list;
    let seq = if obj.is_instance(&np.getattr(intern!(py, "ndarray"))?)? {
        let ndim: usize = obj.getattr(intern!(py, "ndim"))?.extract()?;
        if ndim != 1 {
            let shape = obj.getattr(intern!(py, "shape"))?;
            return Err(value_error(
                py,
                format!("ids must be a 1-D array, got shape {shape}"),
            ));
        }
        let dtype = obj.getattr(intern!(py, "dtype"))?;
        let kind: String = dtype.getattr(intern!(py, "kind"))?.extract()?;
        if kind != "i" && kind != "u" {
            return Err(PyTypeError::new_err(format!(
                "ids must be an integer array, got dtype {dtype}"
            )));
        }
        list = obj.call_method0(intern!(py, "tolist"))?;
        &list
    } else {
        obj
    };
    let items = seq.try_iter().map_err(|_| {
        PyTypeError::new_err(format!(
            "ids must be a sequence of ints or a 1-D integer numpy array, not {}",
            type_name(obj)
        ))
    })?;
    let mut ids = Vec::with_capacity(seq.len().unwrap_or(0));
    for (position, item) in items.enumerate() {
        let item = item?;
        let id: i64 = item.extract().map_err(|e: PyErr| {
            if e.is_instance_of::<PyOverflowError>(py) {
                value_error(
                    py,
                    format!(
                        "token id {item} at position {position} is out of range \
                         (vocab_size {vocab_size})"
                    ),
                )
            } else {
                PyTypeError::new_err(format!(
                    "ids must be ints: item {position} is {}",
                    type_name(&item)
                ))
            }
        })?;
        let id = u32::try_from(id).map_err(|_| {
            let why = if id < 0 {
                "is negative".to_string()
            } else {
                format!("is out of range (vocab_size {vocab_size})")
            };
            value_error(py, format!("token id {id} at position {position} {why}"))
        })?;
        ids.push(id);
    }
    Ok(ids)
}

fn type_name(obj: &Bound<'_, PyAny>) -> String {
    obj.get_type()
        .name()
        .map(|n| n.to_string())
        .unwrap_or_else(|_| "?".into())
}

/// A new, writable numpy float32 array of `shape` holding a copy of `data`.
pub fn f32_array<'py>(
    py: Python<'py>,
    data: &[f32],
    shape: &[usize],
) -> PyResult<Bound<'py, PyAny>> {
    debug_assert_eq!(shape.iter().product::<usize>(), data.len());
    // One copy into a bytearray, which numpy then wraps without copying (and keeps alive).
    let bytes = PyByteArray::new_with(py, std::mem::size_of_val(data), |buf| {
        for (dst, x) in buf.chunks_exact_mut(4).zip(data) {
            dst.copy_from_slice(&x.to_ne_bytes());
        }
        Ok(())
    })?;
    let array =
        numpy(py)?.call_method1(intern!(py, "frombuffer"), (bytes, intern!(py, "float32")))?;
    if shape.len() == 1 {
        return Ok(array);
    }
    array.call_method1(intern!(py, "reshape"), (shape.to_vec(),))
}

/// An optional count argument (`threads`, `context_length`): `None` or an int `>= 1`.
pub fn count(py: Python<'_>, name: &str, value: Option<i64>) -> PyResult<Option<usize>> {
    match value {
        None => Ok(None),
        Some(n) if n >= 1 => usize::try_from(n)
            .map(Some)
            .map_err(|_| value_error(py, format!("{name} {n} is too large"))),
        Some(n) => Err(value_error(py, format!("{name} must be >= 1, found {n}"))),
    }
}
