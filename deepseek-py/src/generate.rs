//! Generation results and streams: the keyword arguments shared by `Model.generate`,
//! `Model.chat` and `ChatSession.send`, the result classes, and the iterators that drive a core
//! [`Stream`] one token per GIL release (checking for Ctrl-C between tokens, and while the
//! template renders and the prompt is evaluated). The OpenAI-shaped dicts of `Model.chat` are
//! built here too.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use deepseek_core::{
    CancelCheck, ChatTemplate, Error, Event, EventKind, GenerateParams, GenerationResult,
    LogitsHook, LogitsProcessor, Message, ResponseFormat, Stream, ToolCall, ToolChoice, Usage,
};
use pyo3::exceptions::PyValueError;
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyBytes, PyDict, PyInt, PyList, PyMapping, PyString};

use crate::chat::PyChatSession;
use crate::convert::{count, Int};
use crate::errors::{to_py, value_error};

/// How often, at most, a generating call takes the GIL to look for Ctrl-C while it renders
/// or evaluates: often enough to feel immediate, rare enough to cost nothing.
const SIGNAL_POLL: Duration = Duration::from_millis(20);

/// Ctrl-C for one generating call. Its [`check`](Self::check) is the core's cancel check: at
/// most every [`SIGNAL_POLL`] it takes the GIL and runs Python's signal handlers (only the main
/// thread has any); the exception a handler raises (KeyboardInterrupt) is kept for the call to
/// raise once the core has stopped.
#[derive(Clone, Default)]
pub(crate) struct Interrupt {
    raised: Arc<Mutex<Option<PyErr>>>,
}

impl Interrupt {
    /// The core cancel check reporting to this interrupt.
    pub fn check(&self) -> CancelCheck {
        let raised = self.raised.clone();
        let last = Mutex::new(None::<Instant>);
        CancelCheck::new(move || {
            let mut raised = raised.lock().unwrap_or_else(PoisonError::into_inner);
            if raised.is_some() {
                return true;
            }
            let mut last = last.lock().unwrap_or_else(PoisonError::into_inner);
            if last.is_some_and(|t| t.elapsed() < SIGNAL_POLL) {
                return false;
            }
            *last = Some(Instant::now());
            *raised = Python::attach(|py| py.check_signals().err());
            raised.is_some()
        })
    }

    /// The exception a signal handler raised, if any (taken: raised once).
    pub fn take(&self) -> Option<PyErr> {
        self.raised
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
    }

    /// Renders `messages` with `template` without the GIL, stopping on Ctrl-C.
    pub fn render(
        &self,
        py: Python<'_>,
        template: &ChatTemplate,
        messages: &[Message],
        add_generation_prompt: bool,
    ) -> PyResult<String> {
        let check = self.check();
        py.detach(|| {
            template.render_cancellable(messages, add_generation_prompt, &|| check.is_cancelled())
        })
        .map_err(|e| self.to_py(py, e))
    }

    /// `e` as a Python exception, or the KeyboardInterrupt that caused it.
    pub fn to_py(&self, py: Python<'_>, e: Error) -> PyErr {
        match self.take() {
            Some(interrupt) => interrupt,
            None => to_py(py, e),
        }
    }
}

/// The keyword arguments of every generating call; `None` keeps the checkpoint's default
/// (generation_config.json). The agent ones (tools ... chat_template_kwargs) exist for the
/// calls that render a conversation.
#[derive(Default)]
pub(crate) struct Options<'a, 'py> {
    pub max_tokens: Option<Int>,
    pub temperature: Option<f64>,
    pub top_p: Option<f64>,
    pub top_k: Option<Int>,
    pub min_p: Option<f64>,
    pub repetition_penalty: Option<f64>,
    pub frequency_penalty: Option<f64>,
    pub presence_penalty: Option<f64>,
    pub logit_bias: Option<&'a Bound<'py, PyAny>>,
    pub seed: Option<&'a Bound<'py, PyAny>>,
    pub stop: Option<&'a Bound<'py, PyAny>>,
    pub tools: Option<&'a Bound<'py, PyAny>>,
    pub tool_choice: Option<&'a Bound<'py, PyAny>>,
    pub response_format: Option<&'a Bound<'py, PyAny>>,
    pub max_reasoning_tokens: Option<Int>,
    pub chat_template_kwargs: Option<&'a Bound<'py, PyAny>>,
    pub logits_processors: Option<&'a Bound<'py, PyAny>>,
}

impl Options<'_, '_> {
    /// `defaults` with the given values, cancelled by `interrupt`; ranges are checked (a
    /// `ValueError` names the culprit).
    pub fn resolve(
        self,
        py: Python<'_>,
        defaults: GenerateParams,
        interrupt: &Interrupt,
    ) -> PyResult<GenerateParams> {
        let mut p = defaults;
        p.cancel = Some(interrupt.check());
        if let Some(n) = self.max_tokens {
            p.max_tokens = count(py, "max_tokens", Some(n))?;
        }
        let s = &mut p.sampling;
        let floats = [
            (self.temperature, &mut s.temperature),
            (self.top_p, &mut s.top_p),
            (self.min_p, &mut s.min_p),
            (self.repetition_penalty, &mut s.repetition_penalty),
            (self.frequency_penalty, &mut s.frequency_penalty),
            (self.presence_penalty, &mut s.presence_penalty),
        ];
        for (given, field) in floats {
            if let Some(x) = given {
                *field = x as f32;
            }
        }
        if let Some(k) = self.top_k {
            let k = k.get(py, "top_k")?;
            s.top_k = usize::try_from(k)
                .map_err(|_| value_error(py, format!("top_k must be >= 0 (0: off), found {k}")))?;
        }
        if let Some(seed) = self.seed {
            s.seed = Some(seed.extract::<u64>().map_err(|_| {
                value_error(py, format!("seed must be an int in [0, 2**64), not {seed}"))
            })?);
        }
        if let Some(bias) = self.logit_bias {
            s.logit_bias = logit_bias(bias)?;
        }
        if let Some(stop) = self.stop {
            p.stop = stop_strings(stop)?;
        }
        if let Some(tools) = self.tools {
            match to_json(tools, "tools")? {
                serde_json::Value::Array(list) => p.tools = Some(list),
                _ => {
                    return Err(value_error(
                        py,
                        "tools must be a list of tool dicts".to_string(),
                    ))
                }
            }
        }
        if let Some(choice) = self.tool_choice {
            p.tool_choice = ToolChoice::from_json(&to_json(choice, "tool_choice")?)
                .map_err(|e| to_py(py, e))?;
        }
        if let Some(format) = self.response_format {
            p.response_format = ResponseFormat::from_json(&to_json(format, "response_format")?)
                .map_err(|e| to_py(py, e))?;
        }
        if let Some(n) = self.max_reasoning_tokens {
            let n = n.get(py, "max_reasoning_tokens")?;
            p.max_reasoning_tokens = Some(usize::try_from(n).map_err(|_| {
                value_error(py, format!("max_reasoning_tokens must be >= 0, found {n}"))
            })?);
        }
        if let Some(kwargs) = self.chat_template_kwargs {
            match to_json(kwargs, "chat_template_kwargs")? {
                serde_json::Value::Object(map) => p.chat_template_kwargs = map,
                _ => {
                    return Err(value_error(
                        py,
                        "chat_template_kwargs must be a dict".to_string(),
                    ))
                }
            }
        }
        if let Some(list) = self.logits_processors {
            for (i, f) in list.try_iter()?.enumerate() {
                let f = f?;
                if !f.is_callable() {
                    return Err(value_error(
                        py,
                        format!("logits_processors[{i}] is not callable"),
                    ));
                }
                p.logits_processors
                    .push(LogitsHook::new(PyLogitsProcessor(f.unbind())));
            }
        }
        p.validate().map_err(|e| to_py(py, e))?;
        Ok(p)
    }
}

/// A Python callable as a step of the sampler chain: called with the ids generated so far (a
/// list) and the logits (a fresh float32 numpy array, one per token id); it edits the array in
/// place or returns a new one of the same length. Its exception stops the generation.
struct PyLogitsProcessor(Py<PyAny>);

impl LogitsProcessor for PyLogitsProcessor {
    fn process(&mut self, generated: &[u32], logits: &mut [f32]) -> deepseek_core::Result<()> {
        Python::attach(|py| -> PyResult<()> {
            let np = crate::convert::numpy(py)?;
            let raw: Vec<u8> = logits.iter().flat_map(|x| x.to_le_bytes()).collect();
            let array = np
                .call_method1("frombuffer", (PyBytes::new(py, &raw), "<f4"))?
                .call_method0("copy")?;
            let ids = PyList::new(py, generated)?;
            let returned = self.0.call1(py, (ids, &array))?;
            let out = if returned.is_none(py) {
                array
            } else {
                returned.into_bound(py)
            };
            let out = np.call_method1("ascontiguousarray", (out, "<f4"))?;
            let bytes: Vec<u8> = out.call_method0("tobytes")?.extract()?;
            if bytes.len() != raw.len() {
                return Err(PyValueError::new_err(format!(
                    "returned {} logits, expected {}",
                    bytes.len() / 4,
                    logits.len()
                )));
            }
            for (l, b) in logits.iter_mut().zip(bytes.chunks_exact(4)) {
                *l = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
            }
            Ok(())
        })
        .map_err(|e| {
            deepseek_core::Error::InvalidArgument(Python::attach(|py| {
                format!("logits processor: {}: {}", e.get_type(py), e.value(py))
            }))
        })
    }
}

/// A JSON-able Python value (dicts, lists, str, int, float, bool, None) as JSON, through
/// Python's own `json` module (so what Python would send to an OpenAI server is what we get);
/// anything else, or NaN and infinities, is a `DeepseekValueError` naming `what`.
pub(crate) fn to_json(obj: &Bound<'_, PyAny>, what: &str) -> PyResult<serde_json::Value> {
    let py = obj.py();
    let kwargs = PyDict::new(py);
    kwargs.set_item("allow_nan", false)?;
    kwargs.set_item("ensure_ascii", false)?;
    let text: String = py
        .import("json")?
        .call_method("dumps", (obj,), Some(&kwargs))
        .and_then(|t| t.extract())
        .map_err(|e| value_error(py, format!("{what} is not JSON: {}", e.value(py))))?;
    serde_json::from_str(&text).map_err(|e| value_error(py, format!("{what} is not JSON: {e}")))
}

/// A tool call as OpenAI's dict: `{"id", "type": "function", "function": {"name",
/// "arguments"}}` (arguments: JSON text).
pub(crate) fn tool_call_dict<'py>(py: Python<'py>, c: &ToolCall) -> PyResult<Bound<'py, PyDict>> {
    let function = PyDict::new(py);
    function.set_item(intern!(py, "name"), &c.name)?;
    function.set_item(intern!(py, "arguments"), &c.arguments)?;
    let d = PyDict::new(py);
    d.set_item(intern!(py, "id"), &c.id)?;
    d.set_item(intern!(py, "type"), "function")?;
    d.set_item(intern!(py, "function"), function)?;
    Ok(d)
}

/// `{token_id: bias}`; ids may be ints or decimal strings (OpenAI's JSON form, exactly as
/// JSON writes them: no sign, spaces or leading zeros).
fn logit_bias(obj: &Bound<'_, PyAny>) -> PyResult<Vec<(u32, f32)>> {
    let py = obj.py();
    let map = obj
        .cast::<PyMapping>()
        .map_err(|_| value_error(py, "logit_bias must be a dict {token_id: bias}".to_string()))?;
    let mut out = Vec::new();
    for item in map.items()?.iter() {
        let (key, value): (Bound<'_, PyAny>, Bound<'_, PyAny>) = item.extract()?;
        let id = if key.is_instance_of::<PyBool>() {
            None
        } else if key.is_instance_of::<PyInt>() {
            key.extract::<u32>().ok()
        } else if let Ok(s) = key.cast::<PyString>() {
            let s = s.to_cow()?;
            s.parse::<u32>()
                .ok()
                .filter(|id| id.to_string() == s.as_ref())
        } else {
            None
        };
        let id = id.ok_or_else(|| {
            value_error(
                py,
                format!(
                    "logit_bias: {} is not a token id (an int, or its decimal string like \"7\")",
                    key.repr().map_or_else(|_| "?".into(), |r| r.to_string())
                ),
            )
        })?;
        let bias: f64 = value
            .extract()
            .map_err(|_| value_error(py, format!("logit_bias[{id}]: {value} is not a number")))?;
        out.push((id, bias as f32));
    }
    Ok(out)
}

/// A stop string or a sequence of them.
fn stop_strings(obj: &Bound<'_, PyAny>) -> PyResult<Vec<String>> {
    let py = obj.py();
    if let Ok(s) = obj.cast::<PyString>() {
        return Ok(vec![s.to_cow()?.into_owned()]);
    }
    let bad = || value_error(py, "stop must be a string or a list of strings".to_string());
    obj.try_iter()
        .map_err(|_| bad())?
        .map(|item| item?.extract::<String>().map_err(|_| bad()))
        .collect()
}

/// Token counts and timings of one generation.
#[pyclass(module = "deepseek_rs", name = "Usage", frozen, get_all)]
pub struct PyUsage {
    /// Tokens in the prompt.
    prompt_tokens: usize,
    /// Prompt tokens found in the KV cache and not evaluated again (chat sessions).
    cached_tokens: usize,
    /// Tokens generated (a final EOS included).
    completion_tokens: usize,
    /// Seconds evaluating the prompt and choosing the first token.
    prefill_secs: f64,
    /// Seconds producing the other tokens.
    decode_secs: f64,
    /// Evaluated prompt tokens per second.
    prefill_tok_s: f64,
    /// Tokens per second after the first one.
    decode_tok_s: f64,
}

impl From<&Usage> for PyUsage {
    fn from(u: &Usage) -> Self {
        PyUsage {
            prompt_tokens: u.prompt_tokens,
            cached_tokens: u.cached_tokens,
            completion_tokens: u.completion_tokens,
            prefill_secs: u.prefill_secs,
            decode_secs: u.decode_secs,
            prefill_tok_s: u.prefill_tok_s,
            decode_tok_s: u.decode_tok_s,
        }
    }
}

#[pymethods]
impl PyUsage {
    /// `prompt_tokens + completion_tokens`.
    #[getter]
    fn total_tokens(&self) -> usize {
        self.prompt_tokens + self.completion_tokens
    }

    fn __repr__(&self) -> String {
        format!(
            "Usage(prompt_tokens={}, cached_tokens={}, completion_tokens={}, \
             prefill_tok_s={:.1}, decode_tok_s={:.1})",
            self.prompt_tokens,
            self.cached_tokens,
            self.completion_tokens,
            self.prefill_tok_s,
            self.decode_tok_s
        )
    }
}

/// OpenAI's `usage` object, with `prompt_tokens_details.cached_tokens` and our timings.
fn usage_dict<'py>(py: Python<'py>, u: &Usage) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    d.set_item("prompt_tokens", u.prompt_tokens)?;
    d.set_item("completion_tokens", u.completion_tokens)?;
    d.set_item("total_tokens", u.prompt_tokens + u.completion_tokens)?;
    let details = PyDict::new(py);
    details.set_item("cached_tokens", u.cached_tokens)?;
    d.set_item("prompt_tokens_details", details)?;
    d.set_item("prefill_secs", u.prefill_secs)?;
    d.set_item("decode_secs", u.decode_secs)?;
    d.set_item("prefill_tok_s", u.prefill_tok_s)?;
    d.set_item("decode_tok_s", u.decode_tok_s)?;
    Ok(d)
}

/// The outcome of a generation.
///
/// `text` is the raw output (think tags included; stop string and EOS excluded); R1-style
/// output is split into `reasoning_content` (None if no reasoning section was opened) and
/// `content`, the answer.
#[pyclass(module = "deepseek_rs", name = "GenerationResult", frozen, get_all)]
pub struct PyGenerationResult {
    /// The raw generated text.
    text: String,
    /// The reasoning section, or None.
    reasoning_content: Option<String>,
    /// The answer.
    content: String,
    /// The generated token ids (a final EOS included).
    tokens: Vec<u32>,
    /// The tools the model called, as OpenAI's dicts (`{"id", "type": "function",
    /// "function": {"name", "arguments"}}`); empty unless tools were given.
    tool_calls: Py<PyList>,
    /// Why generation ended: "stop" (EOS or a stop string), "length" (max_tokens or the context
    /// length), "tool_calls" (the model called tools) or "cancelled" (a stream closed early).
    finish_reason: &'static str,
    /// Token counts and timings.
    usage: Py<PyUsage>,
}

impl PyGenerationResult {
    pub(crate) fn new(py: Python<'_>, r: &GenerationResult) -> PyResult<Self> {
        Ok(PyGenerationResult {
            text: r.text.clone(),
            reasoning_content: r.reasoning_content.clone(),
            content: r.content.clone(),
            tokens: r.tokens.clone(),
            tool_calls: tool_call_list(py, &r.tool_calls)?.unbind(),
            finish_reason: r.finish_reason.as_str(),
            usage: Py::new(py, PyUsage::from(&r.usage))?,
        })
    }
}

#[pymethods]
impl PyGenerationResult {
    fn __repr__(&self) -> String {
        let reasoning = match &self.reasoning_content {
            Some(r) => format!("{r:?}"),
            None => "None".into(),
        };
        format!(
            "GenerationResult(content={:?}, reasoning_content={reasoning}, \
             finish_reason={:?}, tokens={})",
            self.content,
            self.finish_reason,
            self.tokens.len()
        )
    }
}

/// Tool calls as a new list of OpenAI dicts.
fn tool_call_list<'py>(py: Python<'py>, calls: &[ToolCall]) -> PyResult<Bound<'py, PyList>> {
    let list = PyList::empty(py);
    for c in calls {
        list.append(tool_call_dict(py, c)?)?;
    }
    Ok(list)
}

fn kind_name(kind: EventKind) -> &'static str {
    match kind {
        EventKind::Reasoning => "reasoning",
        EventKind::Content => "content",
        EventKind::ToolCall => "tool_call",
    }
}

/// A piece of streamed text: whole characters, never empty except a tool call's first chunk.
#[pyclass(module = "deepseek_rs", name = "Chunk", frozen, get_all)]
pub struct PyChunk {
    /// "reasoning" (inside `<think>` ... `</think>`), "content" (the answer) or "tool_call"
    /// (a piece of a call's JSON arguments).
    kind: &'static str,
    /// The new text.
    text: String,
    /// For "tool_call": which call (0, 1, ...); else None.
    tool_call_index: Option<usize>,
    /// The call's id (`call_...`), on its first chunk; else None.
    tool_call_id: Option<String>,
    /// The function's name, on a call's first chunk.
    tool_name: Option<String>,
}

impl PyChunk {
    fn new(e: Event) -> Self {
        let (index, id, name) = match e.tool_call {
            Some(d) => (Some(d.index), d.id, d.name),
            None => (None, None, None),
        };
        PyChunk {
            kind: kind_name(e.kind),
            text: e.text,
            tool_call_index: index,
            tool_call_id: id,
            tool_name: name,
        }
    }
}

#[pymethods]
impl PyChunk {
    fn __repr__(&self) -> String {
        match self.tool_call_index {
            Some(i) => format!(
                "Chunk(kind={:?}, text={:?}, tool_call_index={i}, tool_name={:?})",
                self.kind, self.text, self.tool_name
            ),
            None => format!("Chunk(kind={:?}, text={:?})", self.kind, self.text),
        }
    }
}

/// Runs a core stream from Python: one token per GIL release, signals checked in between.
/// A chat session's stream owns its conversation; the driver hands it back to `owner` when the
/// stream ends, fails, is closed or is dropped.
pub(crate) struct Driver {
    stream: Option<Stream<'static>>,
    owner: Option<Py<PyChatSession>>,
    interrupt: Interrupt,
    result: Option<GenerationResult>,
}

impl Driver {
    /// Drives `stream`, whose params carry `interrupt`'s cancel check.
    pub fn new(
        stream: Stream<'static>,
        owner: Option<Py<PyChatSession>>,
        interrupt: Interrupt,
    ) -> Self {
        Driver {
            stream: Some(stream),
            owner,
            interrupt,
            result: None,
        }
    }

    /// The next delta; `None` once generation has ended (then `result` is set).
    pub fn next_event(&mut self, py: Python<'_>) -> PyResult<Option<Event>> {
        loop {
            let Some(stream) = self.stream.as_mut() else {
                return Ok(None);
            };
            if let Some(event) = stream.pop_event() {
                return Ok(Some(event));
            }
            if stream.finish_reason().is_some() {
                let result = stream.result().map_err(|e| to_py(py, e));
                self.release();
                self.result = Some(result?);
                return Ok(None);
            }
            // One forward pass (the whole prompt the first time) without the GIL; the cancel
            // check may have caught a Ctrl-C meanwhile.
            let advanced = py.detach(|| stream.advance());
            if let Some(interrupt) = self.interrupt.take() {
                stream.cancel();
                return Err(interrupt);
            }
            if let Err(e) = advanced {
                self.release();
                return Err(to_py(py, e));
            }
            if let Err(interrupt) = py.check_signals() {
                // Stop at this token boundary; the text so far is still delivered.
                stream.cancel();
                return Err(interrupt);
            }
        }
    }

    /// Runs to the end and returns the result.
    pub fn finish(mut self, py: Python<'_>) -> PyResult<GenerationResult> {
        while self.next_event(py)?.is_some() {}
        Ok(self.result.take().expect("a finished driver has a result"))
    }

    /// Stops generating now (the result says "cancelled"): frees the session or hands the
    /// conversation back.
    pub fn close(&mut self) {
        if let Some(stream) = self.stream.as_mut() {
            stream.cancel();
            self.result = stream.result().ok();
        }
        self.release();
    }

    fn release(&mut self) {
        let Some(stream) = self.stream.take() else {
            return;
        };
        if let (Some(chat), Some(owner)) = (stream.into_chat_session(), &self.owner) {
            owner.get().give_back(chat);
        }
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        self.release();
    }
}

/// An iterator of `Chunk`s from `Model.generate(..., stream=True)` or
/// `ChatSession.send(..., stream=True)`.
///
/// Each step runs the model (GIL released) until a chunk is ready; Ctrl-C stops it at the next
/// token. After the last chunk, `result` holds the full text, finish reason and usage.
/// `close()` (or dropping the iterator) stops generation and frees its session.
#[pyclass(module = "deepseek_rs", name = "GenerationStream")]
pub struct PyGenerationStream {
    driver: Driver,
    result: Option<Py<PyGenerationResult>>,
}

impl PyGenerationStream {
    pub(crate) fn new(driver: Driver) -> Self {
        PyGenerationStream {
            driver,
            result: None,
        }
    }
}

#[pymethods]
impl PyGenerationStream {
    fn __iter__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    fn __next__(&mut self, py: Python<'_>) -> PyResult<Option<PyChunk>> {
        Ok(self.driver.next_event(py)?.map(PyChunk::new))
    }

    /// Stops generating and frees the session (`result` then says "cancelled"); a chat
    /// session keeps the partial reply.
    fn close(&mut self) {
        self.driver.close();
    }

    /// The GenerationResult once the last chunk was taken, else None.
    #[getter]
    fn result(&mut self, py: Python<'_>) -> PyResult<Option<Py<PyGenerationResult>>> {
        if self.result.is_none() {
            if let Some(r) = &self.driver.result {
                self.result = Some(Py::new(py, PyGenerationResult::new(py, r)?)?);
            }
        }
        Ok(self.result.as_ref().map(|r| r.clone_ref(py)))
    }
}

/// What an OpenAI-shaped response names itself.
pub(crate) struct Envelope {
    id: String,
    created: u64,
    model: String,
}

impl Envelope {
    pub fn new(model: String) -> Self {
        use std::hash::{BuildHasher, Hasher};
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        let mut hex = String::new();
        for _ in 0..2 {
            let mut h = std::collections::hash_map::RandomState::new().build_hasher();
            h.write_u128(now.as_nanos());
            hex.push_str(&format!("{:016x}", h.finish()));
        }
        Envelope {
            id: format!("chatcmpl-{hex}"),
            created: now.as_secs(),
            model,
        }
    }

    fn dict<'py>(&self, py: Python<'py>, object: &str) -> PyResult<Bound<'py, PyDict>> {
        let d = PyDict::new(py);
        d.set_item("id", &self.id)?;
        d.set_item("object", object)?;
        d.set_item("created", self.created)?;
        d.set_item("model", &self.model)?;
        Ok(d)
    }

    /// `{"id", "object": "chat.completion", "created", "model", "choices": [...], "usage"}`.
    pub fn completion<'py>(
        &self,
        py: Python<'py>,
        r: &GenerationResult,
    ) -> PyResult<Bound<'py, PyDict>> {
        let message = PyDict::new(py);
        message.set_item("role", "assistant")?;
        // OpenAI's null content for a reply that only calls tools.
        if r.content.is_empty() && !r.tool_calls.is_empty() {
            message.set_item("content", py.None())?;
        } else {
            message.set_item("content", &r.content)?;
        }
        message.set_item("reasoning_content", &r.reasoning_content)?;
        if !r.tool_calls.is_empty() {
            message.set_item("tool_calls", tool_call_list(py, &r.tool_calls)?)?;
        }
        let choice = PyDict::new(py);
        choice.set_item("index", 0)?;
        choice.set_item("message", message)?;
        choice.set_item("logprobs", py.None())?;
        choice.set_item("finish_reason", r.finish_reason.as_str())?;
        let d = self.dict(py, "chat.completion")?;
        d.set_item("choices", PyList::new(py, [choice])?)?;
        d.set_item("usage", usage_dict(py, &r.usage)?)?;
        Ok(d)
    }

    /// A `chat.completion.chunk` with one choice.
    fn chunk<'py>(
        &self,
        py: Python<'py>,
        delta: Bound<'py, PyDict>,
        finish_reason: Option<&str>,
    ) -> PyResult<Bound<'py, PyDict>> {
        let choice = PyDict::new(py);
        choice.set_item("index", 0)?;
        choice.set_item("delta", delta)?;
        choice.set_item("logprobs", py.None())?;
        choice.set_item("finish_reason", finish_reason)?;
        let d = self.dict(py, "chat.completion.chunk")?;
        d.set_item("choices", PyList::new(py, [choice])?)?;
        Ok(d)
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Phase {
    Role,
    Deltas,
    Done,
}

/// An iterator of OpenAI `chat.completion.chunk` dicts from `Model.chat(..., stream=True)`.
///
/// The first chunk's delta is `{"role": "assistant"}`; then each delta holds a `content` or a
/// `reasoning_content` piece, or OpenAI's `tool_calls` delta (`[{"index", "id", "type",
/// "function": {"name", "arguments"}}]` on a call's first delta, then `[{"index", "function":
/// {"arguments": piece}}]`); the last has an empty delta, the `finish_reason` and `usage`.
/// Ctrl-C stops generation at the next token; `close()` (or dropping the iterator) stops it
/// and frees its session.
#[pyclass(module = "deepseek_rs", name = "ChatCompletionStream")]
pub struct PyChatCompletionStream {
    driver: Driver,
    envelope: Envelope,
    phase: Phase,
}

impl PyChatCompletionStream {
    pub(crate) fn new(driver: Driver, envelope: Envelope) -> Self {
        PyChatCompletionStream {
            driver,
            envelope,
            phase: Phase::Role,
        }
    }
}

#[pymethods]
impl PyChatCompletionStream {
    fn __iter__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    fn __next__<'py>(&mut self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyDict>>> {
        let delta = PyDict::new(py);
        match self.phase {
            Phase::Role => {
                self.phase = Phase::Deltas;
                delta.set_item(intern!(py, "role"), "assistant")?;
                self.envelope.chunk(py, delta, None).map(Some)
            }
            Phase::Deltas => match self.driver.next_event(py)? {
                Some(e) => {
                    match (e.kind, e.tool_call) {
                        (EventKind::ToolCall, Some(d)) => {
                            // OpenAI's tool-call delta: id, type and name on a call's first
                            // delta, then pieces of the arguments.
                            let function = PyDict::new(py);
                            if let Some(name) = d.name {
                                function.set_item(intern!(py, "name"), name)?;
                            }
                            function.set_item(intern!(py, "arguments"), e.text)?;
                            let call = PyDict::new(py);
                            call.set_item(intern!(py, "index"), d.index)?;
                            if let Some(id) = d.id {
                                call.set_item(intern!(py, "id"), id)?;
                                call.set_item(intern!(py, "type"), "function")?;
                            }
                            call.set_item(intern!(py, "function"), function)?;
                            delta.set_item(intern!(py, "tool_calls"), PyList::new(py, [call])?)?;
                        }
                        (EventKind::Reasoning, _) => {
                            delta.set_item(intern!(py, "reasoning_content"), e.text)?
                        }
                        (EventKind::Content | EventKind::ToolCall, _) => {
                            delta.set_item(intern!(py, "content"), e.text)?
                        }
                    }
                    self.envelope.chunk(py, delta, None).map(Some)
                }
                None => {
                    self.phase = Phase::Done;
                    let Some(r) = &self.driver.result else {
                        return Ok(None); // closed early
                    };
                    let last = self
                        .envelope
                        .chunk(py, delta, Some(r.finish_reason.as_str()))?;
                    last.set_item("usage", usage_dict(py, &r.usage)?)?;
                    Ok(Some(last))
                }
            },
            Phase::Done => Ok(None),
        }
    }

    /// Stops generating and frees the session; the iterator then ends.
    fn close(&mut self) {
        self.driver.close();
        self.phase = Phase::Done;
    }
}

/// `GenerationResult` or `GenerationStream`, as `stream` asks.
pub(crate) fn result_or_stream(
    py: Python<'_>,
    driver: Driver,
    stream: bool,
) -> PyResult<Py<PyAny>> {
    if stream {
        return Ok(Py::new(py, PyGenerationStream::new(driver))?.into_any());
    }
    let r = driver.finish(py)?;
    Ok(Py::new(py, PyGenerationResult::new(py, &r)?)?.into_any())
}
