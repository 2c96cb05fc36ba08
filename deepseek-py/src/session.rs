//! `deepseek_rs.Session`: one conversation's cache, evaluated incrementally (like
//! llama-cpp-python's `Llama.eval`).
//!
//! Evaluation runs with the GIL released, one core call per Python call: other Python threads
//! run meanwhile, and a Ctrl-C that arrives during the call is raised as KeyboardInterrupt
//! when it returns. Loops over tokens (generation) detach per token and call
//! `py.check_signals()` between tokens, so they stop at a token boundary with the cache intact.

use deepseek_core::Session;
use pyo3::prelude::*;

use crate::convert::{f32_array, token_ids};
use crate::errors::{to_py, value_error};
use crate::model::PyModel;

/// Evaluates `ids` with the GIL released; returns the last position's logits `[vocab]`, or
/// every new position's `[len(ids), vocab]` with `all`.
pub(crate) fn eval<'py>(
    py: Python<'py>,
    session: &mut Session,
    ids: &[u32],
    all: bool,
) -> PyResult<Bound<'py, PyAny>> {
    let vocab = session.model().config().vocab_size;
    // One call is one uninterruptible forward pass; a pending Ctrl-C is raised on return.
    let logits = py
        .detach(|| {
            if all {
                session.eval_all(ids)
            } else {
                session.eval(ids)
            }
        })
        .map_err(|e| to_py(py, e))?;
    if all {
        f32_array(py, logits, &[ids.len(), vocab])
    } else {
        f32_array(py, logits, &[vocab])
    }
}

/// An evaluation context over a Model: the latent KV cache of the tokens fed so far.
///
/// Open one with `Model.new_session()`. Each `eval` appends to the cache. A session is used
/// by one thread at a time (a concurrent call raises RuntimeError); open one per thread.
#[pyclass(module = "deepseek_rs", name = "Session")]
pub struct PySession {
    session: Session,
    model: Py<PyModel>,
}

impl PySession {
    /// Wraps a core session opened on `model`.
    pub(crate) fn new(session: Session, model: Py<PyModel>) -> Self {
        PySession { session, model }
    }
}

#[pymethods]
impl PySession {
    /// Appends `ids` to the cache and returns the float32 logits `[vocab_size]` after the last.
    fn eval<'py>(
        &mut self,
        py: Python<'py>,
        ids: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let ids = token_ids(ids, self.session.model().config().vocab_size)?;
        eval(py, &mut self.session, &ids, false)
    }

    /// Appends `ids` and returns the float32 logits `[len(ids), vocab_size]` of every new position.
    fn eval_all<'py>(
        &mut self,
        py: Python<'py>,
        ids: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let ids = token_ids(ids, self.session.model().config().vocab_size)?;
        eval(py, &mut self.session, &ids, true)
    }

    /// Forgets every cached token.
    fn reset(&mut self) {
        self.session.reset();
    }

    /// Keeps only the first `n` cached tokens (e.g. to reuse a shared prompt prefix).
    fn truncate(&mut self, py: Python<'_>, n: i64) -> PyResult<()> {
        let n = usize::try_from(n)
            .map_err(|_| value_error(py, format!("cannot truncate to {n}: must be >= 0")))?;
        self.session.truncate(n).map_err(|e| to_py(py, e))
    }

    /// Tokens in the cache (the position of the next token).
    #[getter]
    fn n_tokens(&self) -> usize {
        self.session.len()
    }

    /// The most tokens this session accepts.
    #[getter]
    fn context_length(&self) -> usize {
        self.session.context_length()
    }

    /// Cache bytes per token: `(kv_lora_rank + qk_rope_head_dim) x layers x 4`.
    #[getter]
    fn cache_bytes_per_token(&self) -> usize {
        self.session.cache_bytes_per_token()
    }

    /// The Model this session runs.
    #[getter]
    fn model(&self, py: Python<'_>) -> Py<PyModel> {
        self.model.clone_ref(py)
    }

    fn __repr__(&self) -> String {
        format!(
            "Session(n_tokens={}, context_length={})",
            self.session.len(),
            self.session.context_length()
        )
    }
}
