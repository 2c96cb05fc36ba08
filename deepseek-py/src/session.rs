//! `deepseek_rs.Session`: one conversation's cache, evaluated incrementally (like
//! llama-cpp-python's `Llama.eval`).
//!
//! Evaluation runs with the GIL released, one core call per Python call: other Python threads
//! run meanwhile, and a Ctrl-C that arrives during the call is raised as KeyboardInterrupt
//! when it returns. Loops over tokens (generation) detach per token and call
//! `py.check_signals()` between tokens, so they stop at a token boundary with the cache intact.
//!
//! A session is one conversation: a second thread calling it while a call runs gets
//! `DeepseekBusyError` at once (as C's DS_ERR_SESSION_BUSY) rather than waiting its turn,
//! because two threads' tokens interleaved into one cache in whatever order they win the lock
//! is never a result anyone wants; the error points at the bug instead.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard, TryLockError};

use deepseek_core::Session;
use pyo3::prelude::*;

use crate::convert::{f32_array, token_ids, Int};
use crate::errors::{busy_error, to_py, value_error};
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
/// by one thread at a time (a call while another runs raises DeepseekBusyError); open one per
/// thread.
#[pyclass(module = "deepseek_rs", name = "Session", frozen)]
pub struct PySession {
    session: Mutex<Session>,
    /// The cache length, readable while a call holds the session.
    len: AtomicUsize,
    context_length: usize,
    cache_bytes_per_token: usize,
    cache_dtype: deepseek_core::CacheDtype,
    vocab_size: usize,
    model: Py<PyModel>,
}

impl PySession {
    /// Wraps a core session opened on `model`.
    pub(crate) fn new(session: Session, model: Py<PyModel>) -> Self {
        PySession {
            len: AtomicUsize::new(session.len()),
            context_length: session.context_length(),
            cache_bytes_per_token: session.cache_bytes_per_token(),
            cache_dtype: session.cache_dtype(),
            vocab_size: session.model().config().vocab_size,
            session: Mutex::new(session),
            model,
        }
    }

    /// The session, or `DeepseekBusyError` if another call holds it.
    fn lock(&self, py: Python<'_>) -> PyResult<MutexGuard<'_, Session>> {
        match self.session.try_lock() {
            Ok(s) => Ok(s),
            // A panic inside a call (a bug) left it; the session's own calls keep it whole.
            Err(TryLockError::Poisoned(p)) => Ok(p.into_inner()),
            Err(TryLockError::WouldBlock) => Err(busy_error(
                py,
                "the Session is in use by another thread; a session is one conversation, \
                 used by one thread at a time (open one per thread)",
            )),
        }
    }

    /// Runs `f` on the session and records its new length.
    fn with<R>(&self, py: Python<'_>, f: impl FnOnce(&mut Session) -> R) -> PyResult<R> {
        let mut session = self.lock(py)?;
        let r = f(&mut session);
        self.len.store(session.len(), Ordering::Release);
        Ok(r)
    }
}

#[pymethods]
impl PySession {
    /// Appends `ids` to the cache and returns the float32 logits `[vocab_size]` after the last.
    fn eval<'py>(&self, py: Python<'py>, ids: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
        let ids = token_ids(ids, self.vocab_size)?;
        self.with(py, |s| eval(py, s, &ids, false))?
    }

    /// Appends `ids` and returns the float32 logits `[len(ids), vocab_size]` of every new position.
    fn eval_all<'py>(
        &self,
        py: Python<'py>,
        ids: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let ids = token_ids(ids, self.vocab_size)?;
        self.with(py, |s| eval(py, s, &ids, true))?
    }

    /// Forgets every cached token.
    fn reset(&self, py: Python<'_>) -> PyResult<()> {
        self.with(py, Session::reset)
    }

    /// Keeps only the first `n` cached tokens (e.g. to reuse a shared prompt prefix).
    fn truncate(&self, py: Python<'_>, n: Int) -> PyResult<()> {
        let n = n.get(py, "n")?;
        let n = usize::try_from(n)
            .map_err(|_| value_error(py, format!("cannot truncate to {n}: must be >= 0")))?;
        self.with(py, |s| s.truncate(n))?.map_err(|e| to_py(py, e))
    }

    /// Tokens in the cache (the position of the next token).
    #[getter]
    fn n_tokens(&self) -> usize {
        self.len.load(Ordering::Acquire)
    }

    /// The most tokens this session accepts.
    #[getter]
    fn context_length(&self) -> usize {
        self.context_length
    }

    /// Cache bytes per token: `(kv_lora_rank + qk_rope_head_dim) x layers` values (DeepSeek;
    /// K and V of every KV head otherwise) at 4 bytes (f32), 2 (bf16) or 34 per 32 (q8_0).
    #[getter]
    fn cache_bytes_per_token(&self) -> usize {
        self.cache_bytes_per_token
    }

    /// How the KV cache stores its rows: "f32", "bf16" or "q8_0".
    #[getter]
    fn cache_dtype(&self) -> &'static str {
        self.cache_dtype.name()
    }

    /// The token ids in the cache, in order.
    fn tokens(&self, py: Python<'_>) -> PyResult<Vec<u32>> {
        self.with(py, |s| s.tokens().to_vec())
    }

    /// Writes the tokens and KV cache (in its format) to `path`, with a header naming the model
    /// and a checksum; `Model.load_session(path)` reads it back. Written under a temporary name
    /// and renamed, so `path` never holds half a state.
    fn save(&self, py: Python<'_>, path: std::path::PathBuf) -> PyResult<()> {
        self.with(py, |s| py.detach(|| s.save(&path)))?
            .map_err(|e| to_py(py, e))
    }

    /// A new Session holding this one's tokens and cache without recomputing or copying it:
    /// both share the cache until one writes (then at most 256 tokens per layer are copied).
    /// Compute a shared prefix once (a system prompt, a document), then fork one per request.
    fn fork(&self, py: Python<'_>) -> PyResult<PySession> {
        let fork = self.with(py, |s| s.fork())?;
        Ok(PySession::new(fork, self.model.clone_ref(py)))
    }

    /// The Model this session runs.
    #[getter]
    fn model(&self, py: Python<'_>) -> Py<PyModel> {
        self.model.clone_ref(py)
    }

    fn __repr__(&self) -> String {
        format!(
            "Session(n_tokens={}, context_length={})",
            self.n_tokens(),
            self.context_length
        )
    }
}
