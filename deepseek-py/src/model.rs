//! `deepseek_rs.Model`: a loaded checkpoint (immutable, shared by its sessions) plus the defaults
//! its sessions start from, and its tokenizer when one is found (the text and generation API).

use std::path::PathBuf;
use std::sync::Arc;

use deepseek_core::{
    CacheDtype, GenerationConfig, Generator, LoadOptions, Model, Session, SessionOptions,
    TextAssets, Tokenizer, WeightDtype,
};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyString};

use crate::convert::{self, count, token_ids, Int};
use crate::errors::{to_py, value_error};
use crate::generate::{
    result_or_stream, Driver, Envelope, Interrupt, Options, PyChatCompletionStream,
};
use crate::session::PySession;
use crate::tokenizer::PyTokenizer;

/// A DeepSeek V2/V3/R1 (or R1-Distill) checkpoint loaded from a Hugging Face folder or a GGUF
/// file.
///
/// `path` is the folder with `config.json` and the safetensors (single or sharded), or a
/// `.gguf` file (the first part of a split file). `dtype` is the weight format: "auto" (each
/// tensor as the checkpoint stores it, memory-mapped), "f32", "bf16", "f16", "q8_0", "q4_0",
/// "q4_1", "q4_k", "q6_k" or "q4_k_m" (converted while loading; the K-quants are quantised as
/// llama.cpp's llama-quantize does, and "q4_k_m" is its Q4_K_M mix).
/// `threads` sizes the default worker pool (default: all cores); `context_length` is the
/// default limit of the sessions it opens and of `logits` (default: the model's maximum).
/// `cache_dtype` is how those sessions store the KV cache: "f32" (exact, the default),
/// "bf16" (half the memory) or "q8_0" (34 bytes per 32 values).
/// `tokenizer` is the folder with `tokenizer.json` or a GGUF file with tokenizer metadata
/// (default: `path`); without one the model still evaluates ids, and only the text methods
/// raise. `generation_config.json` in the folder (or `general.sampling.*` in a GGUF file)
/// sets the sampling defaults.
///
/// Weights are memory-mapped and never change: one Model serves many sessions and threads.
#[pyclass(module = "deepseek_rs", name = "Model", frozen)]
pub struct PyModel {
    pub(crate) model: Arc<Model>,
    path: PathBuf,
    pub(crate) context_length: usize,
    cache_dtype: CacheDtype,
    /// The text layer, or why there is none.
    generator: Result<Generator, String>,
    tokenizer: Option<Py<PyTokenizer>>,
}

impl PyModel {
    /// A core session with this model's defaults, overridden where given.
    pub(crate) fn open(
        &self,
        py: Python<'_>,
        context_length: Option<usize>,
        threads: Option<usize>,
    ) -> PyResult<Session> {
        let options = self.options(context_length, threads, None);
        Session::new(self.model.clone(), options).map_err(|e| to_py(py, e))
    }

    /// Session options with this model's defaults, overridden where given.
    pub(crate) fn options(
        &self,
        context_length: Option<usize>,
        threads: Option<usize>,
        cache_dtype: Option<CacheDtype>,
    ) -> SessionOptions {
        SessionOptions {
            context_length: Some(context_length.unwrap_or(self.context_length)),
            threads,
            cache_dtype: cache_dtype.unwrap_or(self.cache_dtype),
            ..SessionOptions::default()
        }
    }

    /// The generator, or a ValueError saying why the text API is unavailable.
    pub(crate) fn generator(&self, py: Python<'_>) -> PyResult<&Generator> {
        self.generator
            .as_ref()
            .map_err(|why| value_error(py, why.clone()))
    }
}

/// The format a `cache_dtype=` keyword names (`None`: the model's), or a DeepseekValueError.
pub(crate) fn parse_cache_dtype(
    py: Python<'_>,
    name: Option<&str>,
) -> PyResult<Option<CacheDtype>> {
    name.map(str::parse::<CacheDtype>)
        .transpose()
        .map_err(|e| to_py(py, e))
}

/// The text layer of `model`: its tokenizer with the checkpoint's decoding defaults.
fn text_layer(
    model: &Arc<Model>,
    tokenizer: Tokenizer,
    generation: Option<GenerationConfig>,
    context_length: usize,
    cache_dtype: CacheDtype,
) -> deepseek_core::Result<Generator> {
    let generator =
        Generator::new(model.clone(), tokenizer)?.with_session_options(SessionOptions {
            context_length: Some(context_length),
            cache_dtype,
            ..SessionOptions::default()
        });
    match generation {
        Some(config) => generator.with_generation_config(config),
        None => Ok(generator),
    }
}

#[pymethods]
impl PyModel {
    #[new]
    #[pyo3(signature = (
        path, dtype = "auto", threads = None, context_length = None, tokenizer = None,
        cache_dtype = "f32"
    ))]
    fn new(
        py: Python<'_>,
        path: PathBuf,
        dtype: &str,
        threads: Option<Int>,
        context_length: Option<Int>,
        tokenizer: Option<PathBuf>,
        cache_dtype: &str,
    ) -> PyResult<Self> {
        let dtype: WeightDtype = dtype.parse().map_err(|e| to_py(py, e))?;
        let cache_dtype: CacheDtype = cache_dtype.parse().map_err(|e| to_py(py, e))?;
        let threads = count(py, "threads", threads)?;
        let context_length = count(py, "context_length", context_length)?;
        let (model, tok) = py
            .detach(|| {
                let model = Model::load(&path, LoadOptions { threads, dtype })?;
                Ok((model, TextAssets::load(&path, tokenizer.as_deref())?))
            })
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
        let context_length = probe.context_length();
        let (generator, tokenizer) = match tok.tokenizer {
            Some(t) => {
                let generator = text_layer(&model, t, tok.generation, context_length, cache_dtype)
                    .map_err(|e| to_py(py, e))?;
                let wrapped = PyTokenizer::new(
                    generator.tokenizer().clone(),
                    generator.template().clone(),
                    Some(tokenizer.unwrap_or_else(|| path.clone())),
                );
                (Ok(generator), Some(Py::new(py, wrapped)?))
            }
            None => {
                let why = format!(
                    "no tokenizer: {} has no tokenizer (tokenizer.json, or tokenizer.* \
                     metadata in a GGUF file), so the text API (tokenize, generate, chat, ...) \
                     is unavailable; pass tokenizer=DIR to Model(...) if the tokenizer lives \
                     elsewhere",
                    path.display()
                );
                (Err(why), None)
            }
        };
        Ok(PyModel {
            context_length,
            cache_dtype,
            model,
            path,
            generator,
            tokenizer,
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
    /// `context_length`, `threads` and `cache_dtype` ("f32", "bf16", "q8_0") default to the
    /// model's; a session with its own `threads` runs on its own worker pool.
    #[pyo3(signature = (context_length = None, threads = None, cache_dtype = None))]
    fn new_session(
        slf: &Bound<'_, Self>,
        context_length: Option<Int>,
        threads: Option<Int>,
        cache_dtype: Option<&str>,
    ) -> PyResult<PySession> {
        let py = slf.py();
        let context_length = count(py, "context_length", context_length)?;
        let threads = count(py, "threads", threads)?;
        let cache_dtype = parse_cache_dtype(py, cache_dtype)?;
        let options = slf.get().options(context_length, threads, cache_dtype);
        let session = Session::new(slf.get().model.clone(), options).map_err(|e| to_py(py, e))?;
        Ok(PySession::new(session, slf.clone().unbind()))
    }

    /// A session holding the tokens and KV cache saved at `path` by `Session.save`.
    ///
    /// The cache keeps the format it was saved in. A file that is not a state, is truncated or
    /// corrupt, or was saved from another model raises DeepseekSessionStateError; more tokens
    /// than `context_length` raises DeepseekContextOverflowError.
    #[pyo3(signature = (path, context_length = None, threads = None))]
    fn load_session(
        slf: &Bound<'_, Self>,
        path: PathBuf,
        context_length: Option<Int>,
        threads: Option<Int>,
    ) -> PyResult<PySession> {
        let py = slf.py();
        let context_length = count(py, "context_length", context_length)?;
        let threads = count(py, "threads", threads)?;
        let options = slf.get().options(context_length, threads, None);
        let model = slf.get().model.clone();
        let session = py
            .detach(|| Session::restore(model, &path, options))
            .map_err(|e| to_py(py, e))?;
        Ok(PySession::new(session, slf.clone().unbind()))
    }

    /// Token ids of `text` as `generate` evaluates them: with `add_special`, BOS first if the
    /// tokenizer config asks for it (`add_bos_token`) and the text does not start with it.
    /// Special-token strings in the text become their ids.
    #[pyo3(signature = (text, add_special = true))]
    fn tokenize(&self, py: Python<'_>, text: &str, add_special: bool) -> PyResult<Vec<u32>> {
        let generator = self.generator(py)?;
        py.detach(|| {
            if add_special {
                generator.prompt_tokens(text)
            } else {
                generator.tokenizer().encode(text, false)
            }
        })
        .map_err(|e| to_py(py, e))
    }

    /// The text of `ids`; `skip_special=True` drops special tokens such as BOS and EOS.
    #[pyo3(signature = (ids, skip_special = false))]
    fn detokenize(&self, ids: &Bound<'_, PyAny>, skip_special: bool) -> PyResult<String> {
        let py = ids.py();
        let tokenizer = self.generator(py)?.tokenizer();
        let ids = token_ids(ids, tokenizer.vocab_size())?;
        py.detach(|| tokenizer.decode(&ids, skip_special))
            .map_err(|e| to_py(py, e))
    }

    /// Renders a conversation (`[{"role": ..., "content": ...}, ...]`) with the chat template,
    /// as `chat` does; with `add_generation_prompt` the text ends where the reply begins.
    #[pyo3(signature = (messages, add_generation_prompt = true))]
    fn apply_chat_template(
        &self,
        messages: &Bound<'_, PyAny>,
        add_generation_prompt: bool,
    ) -> PyResult<String> {
        let py = messages.py();
        let template = self.generator(py)?.template();
        let messages = convert::messages(messages)?;
        Interrupt::default().render(py, template, &messages, add_generation_prompt)
    }

    /// Continues `prompt` (a string, or token ids used as they are) and returns a
    /// GenerationResult, or with `stream=True` a GenerationStream of chunks.
    ///
    /// Unset keywords keep the checkpoint's defaults (generation_config.json; otherwise
    /// temperature 1 and no truncation). `max_tokens`: most tokens to generate (default: until
    /// EOS, a stop string or the context length). `temperature` 0 is greedy; `top_k` 0, `top_p`
    /// 1 and `min_p` 0 are off; `repetition_penalty` 1 and the frequency/presence penalties 0
    /// are off. `logit_bias` maps token ids to values added to their logits (`-inf` bans).
    /// `seed` makes sampling reproducible. `stop`: a string or list of strings that end the
    /// output (not included). Output after a prompt ending in `<think>` is reasoning until
    /// `</think>`. Generation releases the GIL; Ctrl-C stops it at the next token.
    #[pyo3(signature = (
        prompt, *, max_tokens = None, temperature = None, top_p = None, top_k = None,
        min_p = None, repetition_penalty = None, frequency_penalty = None,
        presence_penalty = None, logit_bias = None, seed = None, stop = None, stream = false
    ))]
    fn generate(
        &self,
        prompt: &Bound<'_, PyAny>,
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
    ) -> PyResult<Py<PyAny>> {
        let py = prompt.py();
        let generator = self.generator(py)?;
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
            ..Options::default()
        }
        .resolve(py, generator.default_params(), &interrupt)?;
        let started = match prompt.cast::<PyString>() {
            Ok(text) => {
                let text = text.to_cow()?;
                py.detach(|| generator.stream(&text, &params))
            }
            Err(_) => {
                let ids = token_ids(prompt, self.vocab_size())?;
                py.detach(|| generator.stream_tokens(&ids, &params))
            }
        };
        let started = started.map_err(|e| interrupt.to_py(py, e))?;
        let driver = Driver::new(started, None, interrupt);
        result_or_stream(py, driver, stream)
    }

    /// Answers a conversation (`[{"role": ..., "content": ...}, ...]`) in OpenAI's shape, like
    /// llama-cpp-python's `create_chat_completion`: `{"id", "object": "chat.completion",
    /// "created", "model", "choices": [{"index": 0, "message": {"role": "assistant",
    /// "content", "reasoning_content"}, "finish_reason"}], "usage"}`. With `stream=True`, a
    /// ChatCompletionStream of `chat.completion.chunk` dicts. Each call starts from an empty
    /// cache (ChatSession keeps one between turns). Keywords as in `generate`, and OpenAI's
    /// agent ones: `tools` (a list of `{"type": "function", "function": {"name", "description",
    /// "parameters"}}`, rendered by the chat template) makes calls come back as
    /// `message["tool_calls"]` (`[{"id", "type": "function", "function": {"name",
    /// "arguments"}}]`, arguments a JSON string) with finish_reason "tool_calls"; `tool_choice`
    /// "auto", "none", "required" or `{"type": "function", "function": {"name": ...}}` (forced
    /// by a grammar); `response_format` `{"type": "json_object"}`, `{"type": "json_schema",
    /// "json_schema": {"schema": {...}}}`, `{"type": "regex", "regex": ...}` or `{"type":
    /// "lark", "grammar": ...}`, enforced on the answer at every token (the reasoning stays
    /// free); `max_reasoning_tokens` (past it `</think>` is forced; 0: no reasoning);
    /// `chat_template_kwargs` (extra template variables, e.g. `{"thinking": False}` for V3.1).
    /// Messages may carry `tool_calls` (assistant) and `tool_call_id` (role "tool").
    /// `logits_processors`: callables `f(generated_ids, logits)` run before each token is
    /// chosen, editing the float32 numpy array in place or returning a new one.
    #[pyo3(signature = (
        messages, *, max_tokens = None, temperature = None, top_p = None, top_k = None,
        min_p = None, repetition_penalty = None, frequency_penalty = None,
        presence_penalty = None, logit_bias = None, seed = None, stop = None, stream = false,
        tools = None, tool_choice = None, response_format = None, max_reasoning_tokens = None,
        chat_template_kwargs = None, logits_processors = None
    ))]
    fn chat(
        &self,
        messages: &Bound<'_, PyAny>,
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
        let py = messages.py();
        let generator = self.generator(py)?;
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
        .resolve(py, generator.default_params(), &interrupt)?;
        let messages = convert::messages(messages)?;
        let started = py
            .detach(|| generator.chat_stream(&messages, &params))
            .map_err(|e| interrupt.to_py(py, e))?;
        let driver = Driver::new(started, None, interrupt);
        let envelope = Envelope::new(self.path.display().to_string());
        if stream {
            return Ok(Py::new(py, PyChatCompletionStream::new(driver, envelope))?.into_any());
        }
        let r = driver.finish(py)?;
        Ok(envelope.completion(py, &r)?.into_any().unbind())
    }

    /// The tokenizer (with the chat template), or None if the model has none.
    #[getter]
    fn tokenizer(&self, py: Python<'_>) -> Option<Py<PyTokenizer>> {
        self.tokenizer.as_ref().map(|t| t.clone_ref(py))
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
