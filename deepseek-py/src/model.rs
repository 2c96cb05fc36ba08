//! `deepseek_rs.Model`: a loaded checkpoint (immutable, shared by its sessions) plus the defaults
//! its sessions start from.

use std::path::PathBuf;
use std::sync::Arc;

use deepseek_core::{LoadOptions, Model, Session, SessionOptions, WeightDtype};
use pyo3::prelude::*;
use pyo3::types::PyDict;

use crate::convert::{count, token_ids};
use crate::errors::to_py;
use crate::session::PySession;

/// A DeepSeek V2/V3/R1 checkpoint loaded from a Hugging Face folder.
///
/// `path` is the folder with `config.json` and the safetensors (single or sharded). `dtype`
/// is the weight format: "auto" (each tensor as the checkpoint stores it, memory-mapped),
/// "f32", "bf16", "f16", "q8_0" or "q4_0" (converted while loading).
/// `threads` sizes the default worker pool (default: all cores); `context_length` is the
/// default limit of the sessions it opens and of `logits` (default: the model's maximum).
///
/// Weights are memory-mapped and never change: one Model serves many sessions and threads.
#[pyclass(module = "deepseek_rs", name = "Model", frozen)]
pub struct PyModel {
    pub(crate) model: Arc<Model>,
    path: PathBuf,
    context_length: usize,
}

impl PyModel {
    /// A core session with this model's defaults, overridden where given.
    pub(crate) fn open(
        &self,
        py: Python<'_>,
        context_length: Option<usize>,
        threads: Option<usize>,
    ) -> PyResult<Session> {
        let options = SessionOptions {
            context_length: Some(context_length.unwrap_or(self.context_length)),
            threads,
            ..SessionOptions::default()
        };
        Session::new(self.model.clone(), options).map_err(|e| to_py(py, e))
    }
}

#[pymethods]
impl PyModel {
    #[new]
    #[pyo3(signature = (path, dtype = "auto", threads = None, context_length = None))]
    fn new(
        py: Python<'_>,
        path: PathBuf,
        dtype: &str,
        threads: Option<i64>,
        context_length: Option<i64>,
    ) -> PyResult<Self> {
        let dtype: WeightDtype = dtype.parse().map_err(|e| to_py(py, e))?;
        let threads = count(py, "threads", threads)?;
        let context_length = count(py, "context_length", context_length)?;
        let model = py
            .detach(|| Model::load(&path, LoadOptions { threads, dtype }))
            .map_err(|e| to_py(py, e))?;
        let model = Arc::new(model);
        // A session is cheap to open (no cache yet); opening one validates context_length.
        let probe = Session::new(
            model.clone(),
            SessionOptions {
                context_length,
                ..SessionOptions::default()
            },
        )
        .map_err(|e| to_py(py, e))?;
        Ok(PyModel {
            context_length: probe.context_length(),
            model,
            path,
        })
    }

    /// Logits after `ids`, evaluated from an empty context (the model keeps no state).
    ///
    /// Returns float32 `[vocab_size]` for the last position, or `[len(ids), vocab_size]` for
    /// every position with `all=True`. `ids` is a sequence of ints or a 1-D integer array.
    #[pyo3(signature = (ids, all = false))]
    fn logits<'py>(
        &self,
        py: Python<'py>,
        ids: &Bound<'py, PyAny>,
        all: bool,
    ) -> PyResult<Bound<'py, PyAny>> {
        let ids = token_ids(ids, self.vocab_size())?;
        let mut session = self.open(py, None, None)?;
        crate::session::eval(py, &mut session, &ids, all)
    }

    /// A new session (an empty cache) for incremental evaluation.
    ///
    /// `context_length` and `threads` default to the model's; a session with its own
    /// `threads` runs on its own worker pool.
    #[pyo3(signature = (context_length = None, threads = None))]
    fn new_session(
        slf: &Bound<'_, Self>,
        context_length: Option<i64>,
        threads: Option<i64>,
    ) -> PyResult<PySession> {
        let py = slf.py();
        let context_length = count(py, "context_length", context_length)?;
        let threads = count(py, "threads", threads)?;
        let session = slf.get().open(py, context_length, threads)?;
        Ok(PySession::new(session, slf.clone().unbind()))
    }

    /// The validated config as a new dict with Hugging Face field names, defaults filled in.
    #[getter]
    fn config<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        crate::config::to_dict(py, self.model.config())
    }

    /// Number of token ids (rows of the logits).
    #[getter]
    fn vocab_size(&self) -> usize {
        self.model.config().vocab_size
    }

    /// Default context length of new sessions and of `logits`.
    #[getter]
    fn context_length(&self) -> usize {
        self.context_length
    }

    /// Worker threads of the default pool.
    #[getter]
    fn threads(&self) -> usize {
        self.model.threads()
    }

    /// The checkpoint folder, as given.
    #[getter]
    fn path(&self) -> PathBuf {
        self.path.clone()
    }

    fn __repr__(&self) -> String {
        format!(
            "Model({:?}, vocab_size={}, context_length={}, threads={})",
            self.path.display().to_string(),
            self.vocab_size(),
            self.context_length,
            self.threads()
        )
    }
}
