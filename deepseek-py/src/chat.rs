//! `deepseek_rs.ChatSession`: a multi-turn conversation that keeps its KV cache between turns.
//!
//! The core conversation lives in a slot; a reply takes it out for as long as it runs (a
//! stream owns it until it ends, is closed or is dropped, then hands it back), so the lock is
//! only ever held for a move and never across a GIL release.

use std::sync::{Mutex, MutexGuard, PoisonError};

use deepseek_core::{ChatSession, Message};
use pyo3::prelude::*;
use pyo3::types::PyList;

use crate::convert::{count, message_list, Int};
use crate::errors::{busy_error, to_py};
use crate::generate::{result_or_stream, Driver, Interrupt, Options};
use crate::model::{parse_cache_dtype, PyModel};

/// A conversation with a Model that keeps its KV cache between turns: each `send` evaluates
/// only the tokens the cache does not already hold (see `usage.cached_tokens`).
///
/// `system` is an optional system prompt (kept by `reset()`); `context_length`, `threads` and
/// `cache_dtype` ("f32", "bf16", "q8_0") default to the model's. Replies join `messages`
/// with the answer as `content` and the reasoning as `reasoning_content` (R1's template
/// drops earlier turns' reasoning). One reply at a time: while a streamed reply is open,
/// other calls raise DeepseekBusyError (a RuntimeError).
#[pyclass(module = "deepseek_rs", name = "ChatSession", frozen)]
pub struct PyChatSession {
    model: Py<PyModel>,
    system: Option<String>,
    /// `None` while a reply holds the conversation.
    slot: Mutex<Option<Box<ChatSession>>>,
}

fn busy() -> PyErr {
    Python::attach(|py| {
        busy_error(
            py,
            "the ChatSession is busy: a streamed reply is still open (exhaust or close() it) \
             or a reply is being generated on another thread",
        )
    })
}

impl PyChatSession {
    /// Returns the conversation a finished reply held.
    pub(crate) fn give_back(&self, chat: Box<ChatSession>) {
        *self.lock() = Some(chat);
    }

    fn lock(&self) -> MutexGuard<'_, Option<Box<ChatSession>>> {
        self.slot.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn with<R>(&self, f: impl FnOnce(&mut ChatSession) -> R) -> PyResult<R> {
        let mut slot = self.lock();
        let chat = slot.as_mut().ok_or_else(busy)?;
        Ok(f(chat))
    }
}

#[pymethods]
impl PyChatSession {
    #[new]
    #[pyo3(signature = (
        model, system = None, context_length = None, threads = None, cache_dtype = None
    ))]
    fn new(
        model: Bound<'_, PyModel>,
        system: Option<String>,
        context_length: Option<Int>,
        threads: Option<Int>,
        cache_dtype: Option<&str>,
    ) -> PyResult<Self> {
        let py = model.py();
        let m = model.get();
        let options = m.options(
            count(py, "context_length", context_length)?,
            count(py, "threads", threads)?,
            parse_cache_dtype(py, cache_dtype)?,
        );
        let generator = m.generator(py)?.clone().with_session_options(options);
        let mut chat = generator.chat_session().map_err(|e| to_py(py, e))?;
        if let Some(s) = &system {
            chat.push(Message::system(s.as_str()));
        }
        Ok(PyChatSession {
            model: model.unbind(),
            system,
            slot: Mutex::new(Some(Box::new(chat))),
        })
    }

    /// Sends a user message and returns the reply as a GenerationResult, or with
    /// `stream=True` as a GenerationStream of chunks (the reply joins `messages` when the
    /// stream ends or is closed). Keywords as in `Model.generate`, and the agent ones of
    /// `Model.chat` (tools, tool_choice, response_format, max_reasoning_tokens,
    /// chat_template_kwargs, logits_processors); the reply's `tool_calls` join `messages`
    /// with it.
    #[pyo3(signature = (
        text, *, max_tokens = None, temperature = None, top_p = None, top_k = None,
        min_p = None, repetition_penalty = None, frequency_penalty = None,
        presence_penalty = None, logit_bias = None, seed = None, stop = None, stream = false,
        tools = None, tool_choice = None, response_format = None, max_reasoning_tokens = None,
        chat_template_kwargs = None, logits_processors = None
    ))]
    fn send(
        slf: &Bound<'_, Self>,
        text: &str,
        max_tokens: Option<Int>,
        temperature: Option<f64>,
        top_p: Option<f64>,
        top_k: Option<Int>,
        min_p: Option<f64>,
        repetition_penalty: Option<f64>,
        frequency_penalty: Option<f64>,
        presence_penalty: Option<f64>,
        logit_bias: Option<&Bound<'_, PyAny>>,
        seed: Option<&Bound<'_, PyAny>>,
        stop: Option<&Bound<'_, PyAny>>,
        stream: bool,
        tools: Option<&Bound<'_, PyAny>>,
        tool_choice: Option<&Bound<'_, PyAny>>,
        response_format: Option<&Bound<'_, PyAny>>,
        max_reasoning_tokens: Option<Int>,
        chat_template_kwargs: Option<&Bound<'_, PyAny>>,
        logits_processors: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Py<PyAny>> {
        let py = slf.py();
        let this = slf.get();
        let defaults = this.model.get().generator(py)?.default_params();
        let interrupt = Interrupt::default();
        let params = Options {
            max_tokens,
            temperature,
            top_p,
            top_k,
            min_p,
            repetition_penalty,
            frequency_penalty,
            presence_penalty,
            logit_bias,
            seed,
            stop,
            tools,
            tool_choice,
            response_format,
            max_reasoning_tokens,
            chat_template_kwargs,
            logits_processors,
        }
        .resolve(py, defaults, &interrupt)?;
        let chat = this.lock().take().ok_or_else(busy)?;
        // Rendering runs without the GIL (and may stop on Ctrl-C).
        let reply = match py.detach(|| chat.into_stream(text, &params)) {
            Ok(reply) => reply,
            Err((chat, e)) => {
                this.give_back(chat);
                return Err(interrupt.to_py(py, e));
            }
        };
        let driver = Driver::new(reply, Some(slf.clone().unbind()), interrupt);
        result_or_stream(py, driver, stream)
    }

    /// The conversation so far, as a new list of `{"role", "content"[, "reasoning_content"]}`
    /// dicts.
    #[getter]
    fn messages<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        let messages = self.with(|c| c.messages().to_vec())?;
        message_list(py, &messages)
    }

    /// Forgets the conversation and the cache; the system prompt stays.
    fn reset(&self) -> PyResult<()> {
        self.with(|c| {
            c.reset();
            if let Some(s) = &self.system {
                c.push(Message::system(s.as_str()));
            }
        })
    }

    /// Tokens held in the KV cache (reused by the next `send` where the prompt matches).
    #[getter]
    fn n_tokens(&self) -> PyResult<usize> {
        self.with(|c| c.cached_tokens().len())
    }

    /// The system prompt, or None.
    #[getter]
    fn system(&self) -> Option<String> {
        self.system.clone()
    }

    /// The Model this conversation runs.
    #[getter]
    fn model(&self, py: Python<'_>) -> Py<PyModel> {
        self.model.clone_ref(py)
    }

    fn __repr__(&self) -> String {
        match self.slot.try_lock().as_deref() {
            Ok(Some(c)) => format!(
                "ChatSession(messages={}, n_tokens={})",
                c.messages().len(),
                c.cached_tokens().len()
            ),
            _ => "ChatSession(busy)".to_string(),
        }
    }
}
