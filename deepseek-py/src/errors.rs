//! `deepseek_core::Error` -> Python exceptions: the Rust message verbatim, in a class found
//! through one table (error kind -> class). Every class derives from `DeepseekError`, and most
//! also from the builtin class a Python user would catch (`ValueError`, `OSError`, ...).

use deepseek_core::{Error, ErrorKind};
use pyo3::exceptions::{
    PyArithmeticError, PyException, PyFileNotFoundError, PyOSError, PyRuntimeError, PyValueError,
};
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyDict, PyTuple, PyType};

pyo3::create_exception!(
    deepseek_rs,
    DeepseekError,
    PyException,
    "Base class of every error deepseek_rs raises; the message is the Rust library's."
);

/// A `DeepseekError` subclass with more than one base or a base of ours, built once per
/// process (pyo3's `create_exception!` takes one builtin base only).
pub(crate) struct Class {
    cell: PyOnceLock<Py<PyType>>,
    name: &'static str,
    doc: &'static str,
    bases: for<'py> fn(Python<'py>) -> PyResult<Vec<Bound<'py, PyType>>>,
}

impl Class {
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

macro_rules! class {
    ($static:ident, $name:literal, $doc:literal, |$py:ident| $bases:expr) => {
        static $static: Class = Class {
            cell: PyOnceLock::new(),
            name: $name,
            doc: $doc,
            bases: |$py| Ok($bases),
        };
    };
}

class!(
    VALUE_ERROR,
    "DeepseekValueError",
    "A bad argument, token id or sampling parameter (a DeepseekError and a ValueError); the \
     base of the errors about model files, tokenizers, templates and context overflow.",
    |py| vec![
        py.get_type::<DeepseekError>(),
        py.get_type::<PyValueError>()
    ]
);
class!(
    CONTEXT_OVERFLOW,
    "DeepseekContextOverflowError",
    "The tokens would exceed the session's context length; the session is unchanged (a \
     DeepseekValueError).",
    |py| vec![VALUE_ERROR.get(py)?.clone()]
);
class!(
    MODEL_FILE,
    "DeepseekModelFileError",
    "A checkpoint file is malformed or unsupported: JSON, config field, architecture, \
     safetensors data, a missing or wrong-shaped tensor (a DeepseekValueError).",
    |py| vec![VALUE_ERROR.get(py)?.clone()]
);
class!(
    TOKENIZER,
    "DeepseekTokenizerError",
    "tokenizer.json or tokenizer_config.json is malformed, or the tokenizer failed on an input \
     (a DeepseekValueError).",
    |py| vec![VALUE_ERROR.get(py)?.clone()]
);
class!(
    TEMPLATE,
    "DeepseekTemplateError",
    "The chat template failed to compile or render, or needed more than its budget (a \
     DeepseekValueError).",
    |py| vec![VALUE_ERROR.get(py)?.clone()]
);
class!(
    SESSION_STATE,
    "DeepseekSessionStateError",
    "A saved session state is not one, is truncated or corrupt (checksum), of another format \
     version, or was computed by another model (a DeepseekValueError).",
    |py| vec![VALUE_ERROR.get(py)?.clone()]
);
class!(
    OS_ERROR,
    "DeepseekOSError",
    "A model file could not be read (a DeepseekError and an OSError).",
    |py| vec![py.get_type::<DeepseekError>(), py.get_type::<PyOSError>()]
);
class!(
    NOT_FOUND,
    "DeepseekFileNotFoundError",
    "A model folder or file does not exist (a DeepseekOSError and a FileNotFoundError).",
    |py| vec![
        OS_ERROR.get(py)?.clone(),
        py.get_type::<PyFileNotFoundError>()
    ]
);
class!(
    NUMERICAL,
    "DeepseekNumericalError",
    "The model produced NaN or infinite logits (non-finite weights or an overflow); the \
     session is unchanged (a DeepseekError and an ArithmeticError).",
    |py| vec![
        py.get_type::<DeepseekError>(),
        py.get_type::<PyArithmeticError>()
    ]
);
class!(
    BUSY,
    "DeepseekBusyError",
    "A Session or ChatSession is in use by another call (another thread, or an open stream); \
     nothing was done (a DeepseekError and a RuntimeError).",
    |py| vec![
        py.get_type::<DeepseekError>(),
        py.get_type::<PyRuntimeError>()
    ]
);
class!(
    CANCELLED,
    "DeepseekCancelledError",
    "The call was cancelled before generation started (Ctrl-C raises KeyboardInterrupt \
     instead).",
    |py| vec![py.get_type::<DeepseekError>()]
);

/// Every class, in the order the module lists them.
const CLASSES: [&Class; 11] = [
    &VALUE_ERROR,
    &CONTEXT_OVERFLOW,
    &MODEL_FILE,
    &TOKENIZER,
    &TEMPLATE,
    &SESSION_STATE,
    &OS_ERROR,
    &NOT_FOUND,
    &NUMERICAL,
    &BUSY,
    &CANCELLED,
];

/// The one table from core error kinds to classes; `to_py` reads it and the tests check it
/// against the README's bad-input table.
const CLASS_OF_KIND: [(ErrorKind, &Class); 19] = [
    (ErrorKind::NotFound, &NOT_FOUND),
    (ErrorKind::Io, &OS_ERROR),
    (ErrorKind::Json, &MODEL_FILE),
    (ErrorKind::UnsupportedArchitecture, &MODEL_FILE),
    (ErrorKind::Config, &MODEL_FILE),
    (ErrorKind::Safetensors, &MODEL_FILE),
    (ErrorKind::Gguf, &MODEL_FILE),
    (ErrorKind::MissingTensor, &MODEL_FILE),
    (ErrorKind::Shape, &MODEL_FILE),
    (ErrorKind::Dtype, &MODEL_FILE),
    (ErrorKind::InvalidArgument, &VALUE_ERROR),
    (ErrorKind::TokenOutOfRange, &VALUE_ERROR),
    (ErrorKind::ContextOverflow, &CONTEXT_OVERFLOW),
    (ErrorKind::Tokenizer, &TOKENIZER),
    (ErrorKind::Template, &TEMPLATE),
    (ErrorKind::InvalidParameter, &VALUE_ERROR),
    (ErrorKind::NonFiniteLogits, &NUMERICAL),
    (ErrorKind::Cancelled, &CANCELLED),
    (ErrorKind::SessionState, &SESSION_STATE),
];

fn class_of(kind: ErrorKind) -> &'static Class {
    CLASS_OF_KIND
        .iter()
        .find(|(k, _)| *k == kind)
        .map_or(&VALUE_ERROR, |&(_, c)| c)
}

/// The class an error of the kind named `kind` (`ErrorKind::name`, as in the README's table)
/// raises; for the tests.
#[pyfunction]
fn _error_class(py: Python<'_>, kind: &str) -> PyResult<Py<PyType>> {
    let kind = ErrorKind::from_name(kind)
        .ok_or_else(|| value_error(py, format!("no error kind {kind:?}")))?;
    Ok(class_of(kind).get(py)?.clone().unbind())
}

/// Adds the exception classes (and the table's test hook) to the module.
pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    m.add("DeepseekError", py.get_type::<DeepseekError>())?;
    for class in CLASSES {
        m.add(class.name, class.get(py)?)?;
    }
    m.add_function(wrap_pyfunction!(_error_class, m)?)?;
    Ok(())
}

fn raise(py: Python<'_>, class: &'static Class, message: String) -> PyErr {
    match class.get(py) {
        Ok(ty) => PyErr::from_type(ty.clone(), message),
        Err(e) => e,
    }
}

/// A `DeepseekValueError` with `message` (for arguments the binding itself checks).
pub fn value_error(py: Python<'_>, message: impl Into<String>) -> PyErr {
    raise(py, &VALUE_ERROR, message.into())
}

/// A `DeepseekBusyError` with `message`.
pub fn busy_error(py: Python<'_>, message: impl Into<String>) -> PyErr {
    raise(py, &BUSY, message.into())
}

/// Translates a core error through the table, keeping its message.
pub fn to_py(py: Python<'_>, e: Error) -> PyErr {
    raise(py, class_of(e.kind()), e.to_string())
}
