//! `deepseek_core::Error` -> Python exceptions: the Rust message verbatim, a class that both the
//! builtin hierarchy (`ValueError`, `FileNotFoundError`) and `DeepseekError` catch.

use deepseek_core::Error;
use pyo3::exceptions::{PyException, PyFileNotFoundError, PyOSError, PyValueError};
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyDict, PyTuple, PyType};

pyo3::create_exception!(
    deepseek_rs,
    DeepseekError,
    PyException,
    "Base class of every error deepseek_rs raises; the message is the Rust library's."
);

/// A `DeepseekError` that is also a builtin exception class, built once per process (pyo3's
/// `create_exception!` takes one base only).
struct Dual {
    cell: PyOnceLock<Py<PyType>>,
    name: &'static str,
    doc: &'static str,
    bases: for<'py> fn(Python<'py>) -> PyResult<[Bound<'py, PyType>; 2]>,
}

impl Dual {
    fn get<'py>(&'static self, py: Python<'py>) -> PyResult<&'py Bound<'py, PyType>> {
        let ty = self.cell.get_or_try_init(py, || -> PyResult<Py<PyType>> {
            let ns = PyDict::new(py);
            ns.set_item("__doc__", self.doc)?;
            ns.set_item("__module__", "deepseek_rs")?;
            let bases = PyTuple::new(py, (self.bases)(py)?)?;
            let ty = py.get_type::<PyType>().call1((self.name, bases, ns))?;
            Ok(ty.cast_into::<PyType>()?.unbind())
        })?;
        Ok(ty.bind(py))
    }
}

static VALUE_ERROR: Dual = Dual {
    cell: PyOnceLock::new(),
    name: "DeepseekValueError",
    doc: "A bad argument, token id, sampling parameter, message list, context overflow or \
          config.json value (a DeepseekError and a ValueError).",
    bases: |py| {
        Ok([
            py.get_type::<DeepseekError>(),
            py.get_type::<PyValueError>(),
        ])
    },
};

static OS_ERROR: Dual = Dual {
    cell: PyOnceLock::new(),
    name: "DeepseekOSError",
    doc: "A model file could not be read (a DeepseekError and an OSError).",
    bases: |py| Ok([py.get_type::<DeepseekError>(), py.get_type::<PyOSError>()]),
};

static NOT_FOUND: Dual = Dual {
    cell: PyOnceLock::new(),
    name: "DeepseekFileNotFoundError",
    doc: "A model folder or file does not exist (a DeepseekOSError and a FileNotFoundError).",
    bases: |py| {
        Ok([
            OS_ERROR.get(py)?.clone(),
            py.get_type::<PyFileNotFoundError>(),
        ])
    },
};

/// Adds the exception classes to the module.
pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    m.add("DeepseekError", py.get_type::<DeepseekError>())?;
    for dual in [&VALUE_ERROR, &OS_ERROR, &NOT_FOUND] {
        m.add(dual.name, dual.get(py)?)?;
    }
    Ok(())
}

fn raise(py: Python<'_>, dual: &'static Dual, message: String) -> PyErr {
    match dual.get(py) {
        Ok(ty) => PyErr::from_type(ty.clone(), message),
        Err(e) => e,
    }
}

/// A `DeepseekValueError` with `message` (for arguments the binding itself checks).
pub fn value_error(py: Python<'_>, message: impl Into<String>) -> PyErr {
    raise(py, &VALUE_ERROR, message.into())
}

/// Translates a core error, keeping its message.
pub fn to_py(py: Python<'_>, e: Error) -> PyErr {
    let message = e.to_string();
    match e {
        Error::Io { source, .. } if source.kind() == std::io::ErrorKind::NotFound => {
            raise(py, &NOT_FOUND, message)
        }
        Error::Io { .. } => raise(py, &OS_ERROR, message),
        Error::InvalidArgument(_)
        | Error::TokenOutOfRange { .. }
        | Error::ContextOverflow { .. }
        | Error::Config { .. }
        | Error::Json { .. }
        | Error::UnsupportedArchitecture(_)
        | Error::InvalidParameter { .. }
        // A template that rejects the conversation (`raise_exception`) or fails to render it.
        | Error::Template(_) => raise(py, &VALUE_ERROR, message),
        // Corrupt or incomplete checkpoints, and variants added later.
        _ => DeepseekError::new_err(message),
    }
}
