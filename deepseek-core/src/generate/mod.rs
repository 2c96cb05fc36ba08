//! Text generation: wires a [`Session`] (the latent KV cache), a [`Tokenizer`], a
//! [`ChatTemplate`] and a [`Sampler`] into a prefill + decode loop that streams tagged text
//! deltas and stops on EOS, stop strings, `max_tokens` or the context length.
//!
//! ```no_run
//! use deepseek_core::{Generator, LoadOptions, Message};
//!
//! let gen = Generator::load("path/to/DeepSeek-R1", None, LoadOptions::default())?;
//! let params = gen.default_params(); // temperature 0.6, top-p 0.95 from generation_config.json
//! for event in gen.chat_stream(&[Message::user("Why is the sky blue?")], &params)? {
//!     print!("{}", event?.text);
//! }
//! # Ok::<(), deepseek_core::Error>(())
//! ```

mod chat;
mod output;
mod tools;

use std::collections::VecDeque;
use std::path::Path;
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use serde_json::Value;

pub use chat::ChatSession;
use chat::ChatState;
pub use output::{
    prompt_opens_reasoning, Event, EventKind, OutputParser, ToolCallDelta, THINK_CLOSE, THINK_OPEN,
};

use crate::constraint::{
    tool_call_grammar, Constraint, GrammarCompiler, ResponseFormat, ToolCallFormat, ToolChoice,
};
use crate::error::{Error, Result};
use crate::sampling::{GenerationConfig, LogitsHook, Sampler, SamplingParams};
use crate::session::{LoadOptions, Model, Session, SessionOptions};
use crate::template::{ChatTemplate, Message, TemplateOptions, ToolCall};
use crate::tokenizer::Tokenizer;

/// Prompt tokens evaluated per forward call (bounds the activations of a long prefill).
const PREFILL_CHUNK: usize = 512;

/// A caller's "stop now?" check, polled during long work: while the chat template renders
/// (every few pieces of output), before each prefill chunk and before each decoded token.
/// Returning true stops: before generation starts the call fails with [`Error::Cancelled`];
/// after, generation ends with [`FinishReason::Cancelled`]. It runs on the thread that drives
/// the generation and should be cheap (a flag, a Ctrl-C check).
#[derive(Clone)]
pub struct CancelCheck(Arc<dyn Fn() -> bool + Send + Sync>);

impl CancelCheck {
    /// A check that calls `f`.
    pub fn new(f: impl Fn() -> bool + Send + Sync + 'static) -> Self {
        CancelCheck(Arc::new(f))
    }

    /// Whether the caller asks to stop.
    pub fn is_cancelled(&self) -> bool {
        (self.0)()
    }
}

impl std::fmt::Debug for CancelCheck {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CancelCheck")
    }
}

impl PartialEq for CancelCheck {
    /// The same check (a closure has no other equality).
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

/// What to generate.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct GenerateParams {
    /// Most tokens to generate (`None`: until EOS, a stop string or the context is full).
    pub max_tokens: Option<usize>,
    /// Strings that end the output; the first one found is cut off with everything after it.
    pub stop: Vec<String>,
    /// How to pick tokens.
    pub sampling: SamplingParams,
    /// Polled during rendering, prefill and decoding; true stops (see [`CancelCheck`]).
    pub cancel: Option<CancelCheck>,
    /// Tools the model may call (OpenAI `tools` entries), rendered by the chat template as
    /// transformers does; with tools, tool calls are parsed out of the answer into
    /// [`GenerationResult::tool_calls`] and [`EventKind::ToolCall`] events.
    pub tools: Option<Vec<Value>>,
    /// Whether the model may, must or must not call tools.
    pub tool_choice: ToolChoice,
    /// Extra chat-template variables, e.g. `{"thinking": true}` for V3.1.
    pub chat_template_kwargs: serde_json::Map<String, Value>,
    /// What the answer must be (JSON, a schema, a regex, a grammar); enforced token by token
    /// after the reasoning, which stays free.
    pub response_format: ResponseFormat,
    /// Most tokens of reasoning: past them `</think>` is forced and the answer follows
    /// (`Some(0)`: no reasoning at all).
    pub max_reasoning_tokens: Option<usize>,
    /// The caller's logits processors, run in order after the penalties.
    pub logits_processors: Vec<LogitsHook>,
}

impl GenerateParams {
    /// The tools and template kwargs as the chat template receives them.
    pub fn template_options(&self) -> TemplateOptions {
        TemplateOptions {
            tools: self.tools.clone(),
            kwargs: self.chat_template_kwargs.clone(),
        }
    }

    /// Whether tool calls are parsed out of the answer.
    fn parses_tool_calls(&self) -> bool {
        self.tools.as_ref().is_some_and(|t| !t.is_empty()) && self.tool_choice != ToolChoice::None
    }
}

impl GenerateParams {
    /// Whether the cancel check (if any) asks to stop.
    fn cancelled(&self) -> bool {
        self.cancel.as_ref().is_some_and(CancelCheck::is_cancelled)
    }
}

impl GenerateParams {
    /// Checks every value's range.
    pub fn validate(&self) -> Result<()> {
        if self.max_tokens == Some(0) {
            return Err(Error::InvalidParameter {
                name: "max_tokens".into(),
                message: "must be >= 1".into(),
            });
        }
        if self.stop.iter().any(String::is_empty) {
            return Err(Error::InvalidParameter {
                name: "stop".into(),
                message: "stop strings must not be empty".into(),
            });
        }
        if let Some(tools) = &self.tools {
            validate_tools(tools)?;
        }
        self.template_options().validate()?;
        self.sampling.validate()
    }
}

/// Checks OpenAI `tools` entries: `{"type": "function", "function": {"name", "description"?,
/// "parameters"?}}`, names unique and free of the markup's characters, parameters a schema
/// object. A bad tool would otherwise render into the prompt, or fail only once a call is forced.
fn validate_tools(tools: &[Value]) -> Result<()> {
    let bad = |i: usize, message: String| Error::InvalidParameter {
        name: "tools".into(),
        message: format!("tools[{i}]: {message}"),
    };
    let mut names = std::collections::HashSet::new();
    for (i, tool) in tools.iter().enumerate() {
        let Some(obj) = tool.as_object() else {
            return Err(bad(i, "is not a JSON object".into()));
        };
        match obj.get("type").and_then(Value::as_str) {
            Some("function") => {}
            Some(other) => return Err(bad(i, format!("type {other:?} (only \"function\")"))),
            None => return Err(bad(i, "needs \"type\": \"function\"".into())),
        }
        let Some(f) = obj.get("function").and_then(Value::as_object) else {
            return Err(bad(i, "needs a \"function\" object".into()));
        };
        let name = match f.get("name").and_then(Value::as_str) {
            Some(n) if !n.is_empty() => n,
            _ => return Err(bad(i, "function needs a non-empty string \"name\"".into())),
        };
        if name
            .chars()
            .any(|c| c.is_whitespace() || c == '<' || c == '>' || c == '｜')
        {
            return Err(bad(
                i,
                format!("function name {name:?} has whitespace or markup characters"),
            ));
        }
        if !names.insert(name) {
            return Err(bad(i, format!("function name {name:?} appears twice")));
        }
        if let Some(p) = f.get("parameters") {
            if !(p.is_object() || p.is_boolean()) {
                return Err(bad(
                    i,
                    "function \"parameters\" must be a JSON schema object".into(),
                ));
            }
        }
        if let Some(d) = f.get("description") {
            if !d.is_string() {
                return Err(bad(i, "function \"description\" must be a string".into()));
            }
        }
    }
    Ok(())
}

/// Why generation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FinishReason {
    /// An EOS token or a stop string.
    Stop,
    /// `max_tokens` reached or the context is full.
    Length,
    /// The model called tools (and then stopped): run them and send the results.
    ToolCalls,
    /// The consumer stopped it (callback returned `false`, [`Stream::cancel`], or the stream
    /// was dropped early).
    Cancelled,
}

impl FinishReason {
    /// OpenAI's name: `stop`, `length`, `tool_calls` or `cancelled`.
    pub fn as_str(self) -> &'static str {
        match self {
            FinishReason::Stop => "stop",
            FinishReason::Length => "length",
            FinishReason::ToolCalls => "tool_calls",
            FinishReason::Cancelled => "cancelled",
        }
    }
}

/// Token counts and timings of one generation.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Usage {
    /// Tokens in the prompt.
    pub prompt_tokens: usize,
    /// Prompt tokens found in the KV cache and not evaluated again (chat sessions).
    pub cached_tokens: usize,
    /// Tokens generated (an EOS token included).
    pub completion_tokens: usize,
    /// Seconds evaluating the prompt and choosing the first token.
    pub prefill_secs: f64,
    /// Seconds producing the other tokens.
    pub decode_secs: f64,
    /// Evaluated prompt tokens per second.
    pub prefill_tok_s: f64,
    /// Tokens per second after the first one.
    pub decode_tok_s: f64,
}

/// The outcome of a generation.
#[derive(Debug, Clone, PartialEq)]
pub struct GenerationResult {
    /// The raw generated text (think tags included, stop string and EOS excluded).
    pub text: String,
    /// The reasoning section (`None` if none was opened).
    pub reasoning_content: Option<String>,
    /// The answer (tool-call markup excluded).
    pub content: String,
    /// The tools the model called (empty unless tools were given).
    pub tool_calls: Vec<ToolCall>,
    /// The generated token ids (a final EOS included).
    pub tokens: Vec<u32>,
    /// Why it ended.
    pub finish_reason: FinishReason,
    /// Counts and timings.
    pub usage: Usage,
}

/// What a checkpoint says about text: its tokenizer (special tokens and chat template
/// included) and its decoding defaults. The one place every binding reads them from.
#[derive(Debug, Clone, Default)]
pub struct TextAssets {
    /// The tokenizer, if the checkpoint has one.
    pub tokenizer: Option<Tokenizer>,
    /// Decoding defaults, if the checkpoint gives any.
    pub generation: Option<GenerationConfig>,
}

impl TextAssets {
    /// The text side of the checkpoint at `path`: a folder's `tokenizer.json` (with
    /// `tokenizer_config.json`) and `generation_config.json`, or a GGUF file's `tokenizer.*` and
    /// `general.sampling.*` metadata. `tokenizer` (a folder or a GGUF file) overrides where the
    /// tokenizer comes from. A checkpoint without a tokenizer gives `None`; a malformed one is
    /// an error.
    pub fn load(path: &Path, tokenizer: Option<&Path>) -> Result<Self> {
        let mut assets = TextAssets::default();
        if path.is_file() {
            let file = crate::loader::GgufModel::open(path)?;
            assets.generation = file.generation_config()?;
            if tokenizer.is_none() && file.first().get("tokenizer.ggml.model").is_some() {
                let t = crate::loader::gguf_vocab::tokenizer_from_gguf(file.first())?;
                assets.tokenizer = Some(t);
            }
        } else {
            let gc = path.join("generation_config.json");
            if gc.is_file() {
                assets.generation = Some(GenerationConfig::from_file(&gc)?);
            }
            if tokenizer.is_none() && path.join("tokenizer.json").is_file() {
                assets.tokenizer = Some(Tokenizer::from_dir(path)?);
            }
        }
        if let Some(t) = tokenizer {
            assets.tokenizer = Some(Self::tokenizer_at(t)?);
        }
        Ok(assets)
    }

    /// The tokenizer of a folder (`tokenizer.json` + `tokenizer_config.json`) or of a GGUF
    /// file's `tokenizer.*` metadata.
    pub fn tokenizer_at(path: &Path) -> Result<Tokenizer> {
        if path.is_file() {
            let file = crate::loader::GgufFile::open(path)?;
            crate::loader::gguf_vocab::tokenizer_from_gguf(&file)
        } else {
            Tokenizer::from_dir(path)
        }
    }

    /// The error for a checkpoint at `path` that has no tokenizer.
    pub fn missing(path: &Path) -> Error {
        if path.is_file() {
            Error::Gguf {
                path: path.to_path_buf(),
                message: "no tokenizer.ggml.* metadata: give a tokenizer folder".into(),
            }
        } else {
            Error::io(
                path.join("tokenizer.json"),
                std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    "no tokenizer in the model folder",
                ),
            )
        }
    }
}

/// A model with its tokenizer, chat template and generation defaults. Cloning is cheap (shared).
#[derive(Debug, Clone)]
pub struct Generator {
    model: Arc<Model>,
    tokenizer: Tokenizer,
    template: ChatTemplate,
    generation: GenerationConfig,
    eos: Arc<[u32]>,
    /// Ids below the tokenizer's vocab_size that no token has: never sampled.
    holes: Arc<[u32]>,
    session_options: SessionOptions,
    /// The tool-call markup of the template.
    tool_format: ToolCallFormat,
    /// Grammar compiler for structured output, built on first use.
    compiler: Arc<OnceLock<std::result::Result<Arc<GrammarCompiler>, String>>>,
}

impl Generator {
    /// Wires `model` and `tokenizer`; the chat template is the tokenizer's (or R1's).
    /// EOS ids are the tokenizer's and the model config's.
    pub fn new(model: Arc<Model>, tokenizer: Tokenizer) -> Result<Self> {
        let vocab = model.config().vocab_size;
        if tokenizer.vocab_size() > vocab {
            return Err(Error::InvalidArgument(format!(
                "the tokenizer has {} token ids but the model's vocab_size is {vocab}",
                tokenizer.vocab_size()
            )));
        }
        let template = ChatTemplate::for_tokenizer(&tokenizer)?;
        check_eos(&tokenizer, &model.config().eos_token_ids, "config.json")?;
        let mut eos = tokenizer.eos_ids();
        eos.extend(&model.config().eos_token_ids);
        eos.sort_unstable();
        eos.dedup();
        let holes = (0..tokenizer.vocab_size() as u32)
            .filter(|&id| !tokenizer.contains(id))
            .collect();
        Ok(Generator {
            model,
            tokenizer,
            generation: GenerationConfig::default(),
            eos: eos.into(),
            holes,
            session_options: SessionOptions::default(),
            tool_format: ToolCallFormat::detect(template.source()),
            compiler: Arc::new(OnceLock::new()),
            template,
        })
    }

    /// Loads the model at `path` (a folder or a GGUF file) with its tokenizer and decoding
    /// defaults ([`TextAssets::load`]; `tokenizer` overrides where the tokenizer comes from).
    pub fn load(
        path: impl AsRef<Path>,
        tokenizer: Option<&Path>,
        options: LoadOptions,
    ) -> Result<Self> {
        let path = path.as_ref();
        let model = Arc::new(Model::load(path, options)?);
        let text = TextAssets::load(path, tokenizer)?;
        let tokenizer = text.tokenizer.ok_or_else(|| TextAssets::missing(path))?;
        let gen = Self::new(model, tokenizer)?;
        match text.generation {
            Some(config) => gen.with_generation_config(config),
            None => Ok(gen),
        }
    }

    /// Uses `config`'s sampling defaults and adds its EOS ids, which must be tokens of the
    /// tokenizer ([`Error::Config`] otherwise: generation could never stop on them).
    pub fn with_generation_config(mut self, config: GenerationConfig) -> Result<Self> {
        check_eos(
            &self.tokenizer,
            &config.eos_token_ids,
            "generation_config.json",
        )?;
        let mut eos = self.eos.to_vec();
        eos.extend(&config.eos_token_ids);
        eos.sort_unstable();
        eos.dedup();
        self.eos = eos.into();
        self.generation = config;
        self.compiler = Arc::new(OnceLock::new());
        Ok(self)
    }

    /// Uses `template` for chat prompts.
    pub fn with_template(mut self, template: ChatTemplate) -> Self {
        self.tool_format = ToolCallFormat::detect(template.source());
        self.template = template;
        self
    }

    /// Uses `format` to force tool calls (detected from the template otherwise).
    pub fn with_tool_call_format(mut self, format: ToolCallFormat) -> Self {
        self.tool_format = format;
        self
    }

    /// The tool-call markup forced calls are written in.
    pub fn tool_call_format(&self) -> ToolCallFormat {
        self.tool_format
    }

    /// The grammar compiler of this generator's tokenizer (built on first use, then shared).
    pub fn grammar_compiler(&self) -> Result<Arc<GrammarCompiler>> {
        self.compiler
            .get_or_init(|| {
                GrammarCompiler::new(&self.tokenizer, &self.eos)
                    .map(Arc::new)
                    .map_err(|e| e.to_string())
            })
            .clone()
            .map_err(Error::InvalidArgument)
    }

    /// Options of the sessions this generator opens (context length, threads).
    pub fn with_session_options(mut self, options: SessionOptions) -> Self {
        self.session_options = options;
        self
    }

    /// The model.
    pub fn model(&self) -> &Arc<Model> {
        &self.model
    }

    /// The tokenizer.
    pub fn tokenizer(&self) -> &Tokenizer {
        &self.tokenizer
    }

    /// The chat template.
    pub fn template(&self) -> &ChatTemplate {
        &self.template
    }

    /// Token ids that end generation.
    pub fn eos_ids(&self) -> &[u32] {
        &self.eos
    }

    /// Parameters with the checkpoint's defaults (generation_config.json; R1: temperature 0.6,
    /// top-p 0.95).
    pub fn default_params(&self) -> GenerateParams {
        GenerateParams {
            max_tokens: self.generation.max_new_tokens,
            stop: Vec::new(),
            sampling: self.generation.sampling.clone(),
            ..Default::default()
        }
    }

    /// A fresh session with this generator's options.
    pub fn new_session(&self) -> Result<Session> {
        Session::new(self.model.clone(), self.session_options.clone())
    }

    /// The ids a raw prompt is evaluated as: its encoding, after BOS when the tokenizer config
    /// asks for one (`add_bos_token`) and the text does not already start with it.
    pub fn prompt_tokens(&self, prompt: &str) -> Result<Vec<u32>> {
        let mut ids = self.tokenizer.encode(prompt, true)?;
        if let (true, Some(bos)) = (self.tokenizer.add_bos_token(), self.tokenizer.bos_id()) {
            if ids.first() != Some(&bos) {
                ids.insert(0, bos);
            }
        }
        Ok(ids)
    }

    /// The ids of a conversation's prompt: the rendered template (with the generation prompt),
    /// encoded without adding special tokens, as `apply_chat_template` does.
    pub fn chat_tokens(&self, messages: &[Message]) -> Result<(String, Vec<u32>)> {
        self.chat_tokens_for(messages, &GenerateParams::default())
    }

    /// [`chat_tokens`](Self::chat_tokens), rendering under `params`' cancel check.
    fn chat_tokens_for(
        &self,
        messages: &[Message],
        params: &GenerateParams,
    ) -> Result<(String, Vec<u32>)> {
        let text =
            self.template
                .render_with(messages, true, &params.template_options(), &|| {
                    params.cancelled()
                })?;
        let ids = self.tokenizer.encode(&text, false)?;
        Ok((text, ids))
    }

    /// Continues a raw text prompt.
    pub fn generate(&self, prompt: &str, params: &GenerateParams) -> Result<GenerationResult> {
        self.stream(prompt, params)?.into_result()
    }

    /// Continues a raw text prompt, calling `on_event` with each delta; returning `false` stops
    /// generation ([`FinishReason::Cancelled`]; the result still holds all text generated).
    pub fn generate_with(
        &self,
        prompt: &str,
        params: &GenerateParams,
        on_event: impl FnMut(&Event) -> bool,
    ) -> Result<GenerationResult> {
        self.stream(prompt, params)?.run(on_event)
    }

    /// Continues a raw text prompt as an iterator of deltas.
    pub fn stream(&self, prompt: &str, params: &GenerateParams) -> Result<Stream<'static>> {
        let ids = self.prompt_tokens(prompt)?;
        self.start_owned(ids, prompt_opens_reasoning(prompt), params)
    }

    /// Continues a prompt given as token ids.
    pub fn stream_tokens(
        &self,
        prompt: &[u32],
        params: &GenerateParams,
    ) -> Result<Stream<'static>> {
        let text = self.tokenizer.decode(prompt, false)?;
        self.start_owned(prompt.to_vec(), prompt_opens_reasoning(&text), params)
    }

    /// Answers a conversation (one turn, a fresh cache; see [`ChatSession`] to keep one).
    pub fn chat(&self, messages: &[Message], params: &GenerateParams) -> Result<GenerationResult> {
        self.chat_stream(messages, params)?.into_result()
    }

    /// Answers a conversation as an iterator of deltas.
    pub fn chat_stream(
        &self,
        messages: &[Message],
        params: &GenerateParams,
    ) -> Result<Stream<'static>> {
        let (text, ids) = self.chat_tokens_for(messages, params)?;
        self.start_owned(ids, prompt_opens_reasoning(&text), params)
    }

    /// A multi-turn conversation that keeps its KV cache between turns.
    pub fn chat_session(&self) -> Result<ChatSession> {
        ChatSession::new(self)
    }

    /// Continues a raw text prompt on a caller's `session`, reusing its cache: `cached` must
    /// be a prefix of the ids `session`'s cache holds (empty is always right). The longest
    /// common prefix of `cached` and the prompt is kept, the rest of the cache dropped, and
    /// only the remaining prompt tokens are evaluated; the stream appends what it evaluates to
    /// `cached`. For a session that outlives one request (e.g. the C API's `ds_session`).
    pub fn stream_on<'a>(
        &self,
        session: &'a mut Session,
        cached: &'a mut Vec<u32>,
        prompt: &str,
        params: &GenerateParams,
    ) -> Result<Stream<'a>> {
        let ids = self.prompt_tokens(prompt)?;
        let target = Target::Borrowed { session, cached };
        self.start_reusing(target, ids, prompt_opens_reasoning(prompt), params)
    }

    /// Answers a conversation on a caller's `session`, reusing its cache as
    /// [`stream_on`](Self::stream_on) does (what [`ChatSession`] does with its own session).
    pub fn chat_stream_on<'a>(
        &self,
        session: &'a mut Session,
        cached: &'a mut Vec<u32>,
        messages: &[Message],
        params: &GenerateParams,
    ) -> Result<Stream<'a>> {
        let (text, ids) = self.chat_tokens_for(messages, params)?;
        let target = Target::Borrowed { session, cached };
        self.start_reusing(target, ids, prompt_opens_reasoning(&text), params)
    }

    /// Checks the request, then keeps the cached prefix `target` shares with `prompt` and
    /// starts a stream over the rest. On error the session is unchanged.
    fn start_reusing<'a>(
        &self,
        mut target: Target<'a>,
        prompt: Vec<u32>,
        in_reasoning: bool,
        params: &GenerateParams,
    ) -> Result<Stream<'a>> {
        // The sampler first: it checks the params, and a refused request must find the cache
        // as it was (reuse_cache drops what the prompt does not share).
        let sampler = self.sampler(&prompt, params)?;
        let keep = self.reuse_cache(&mut target, &prompt, params)?;
        Ok(self.launch(target, sampler, prompt, keep, in_reasoning, params))
    }

    /// Checks the request, then keeps the cached prefix `target` shares with `prompt` and
    /// drops the rest of the cache; returns how many tokens it kept. On error the session is
    /// unchanged.
    fn reuse_cache(
        &self,
        target: &mut Target<'_>,
        prompt: &[u32],
        params: &GenerateParams,
    ) -> Result<usize> {
        params.validate()?;
        if prompt.is_empty() {
            return Err(Error::InvalidArgument("empty prompt".into()));
        }
        let (session, cached) = target.cache();
        if cached.len() > session.len() {
            // Not a record of this cache: trust none of it.
            cached.clear();
        }
        let mut keep = cached
            .iter()
            .zip(prompt)
            .take_while(|(a, b)| a == b)
            .count();
        // The last prompt token is evaluated again for its logits if everything is cached.
        keep = keep.min(prompt.len() - 1);
        let limit = session.context_length();
        if prompt.len() > limit {
            return Err(Error::ContextOverflow {
                cached: keep,
                new: prompt.len() - keep,
                limit,
            });
        }
        session.truncate(keep)?;
        cached.truncate(keep);
        Ok(keep)
    }

    fn start_owned(
        &self,
        prompt: Vec<u32>,
        in_reasoning: bool,
        params: &GenerateParams,
    ) -> Result<Stream<'static>> {
        let session = Box::new(self.new_session()?);
        self.start(Target::Owned(session), prompt, 0, in_reasoning, params)
    }

    /// A stream over `target` whose cache already holds `prompt[..cached]`.
    fn start<'a>(
        &self,
        target: Target<'a>,
        prompt: Vec<u32>,
        cached: usize,
        in_reasoning: bool,
        params: &GenerateParams,
    ) -> Result<Stream<'a>> {
        let sampler = self.sampler(&prompt, params)?;
        let mut target = target;
        // Refused before any forward pass (a caller's session was checked by reuse_cache).
        let limit = target.session().context_length();
        if prompt.len() > limit {
            return Err(Error::ContextOverflow {
                cached,
                new: prompt.len() - cached,
                limit,
            });
        }
        Ok(self.launch(target, sampler, prompt, cached, in_reasoning, params))
    }

    /// Checks the request and builds its sampler and constraint (everything about starting
    /// that can fail).
    fn sampler(&self, prompt: &[u32], params: &GenerateParams) -> Result<Picker> {
        params.validate()?;
        if prompt.is_empty() {
            return Err(Error::InvalidArgument("empty prompt".into()));
        }
        let vocab = self.tokenizer.vocab_size();
        if let Some((id, _)) = params
            .sampling
            .logit_bias
            .iter()
            .find(|(id, _)| *id as usize >= vocab)
        {
            return Err(Error::InvalidParameter {
                name: "logit_bias".into(),
                message: format!(
                    "token id {id} is out of range (the tokenizer has {vocab} ids; the rows \
                     past them are padding, never sampled)"
                ),
            });
        }
        let mut sampling = params.sampling.clone();
        sampling
            .logit_bias
            .extend(self.holes.iter().map(|&id| (id, f32::NEG_INFINITY)));
        if params.tool_choice == ToolChoice::None {
            // No tool calls: the markers that open them are never sampled.
            for marker in ["<｜tool▁calls▁begin｜>", "<｜tool▁call▁begin｜>"] {
                if let Some(id) = self.tokenizer.token_to_id(marker) {
                    sampling.logit_bias.push((id, f32::NEG_INFINITY));
                }
            }
        }
        let mut sampler = Sampler::with_processors(sampling, params.logits_processors.clone())?;
        sampler.add_prompt(prompt);
        let constraint = self.constraint(params)?;
        let close_reasoning = match params.max_reasoning_tokens {
            Some(_) => self.tokenizer.encode("\n</think>\n\n", false)?,
            None => Vec::new(),
        };
        Ok(Picker {
            sampler,
            guard: constraint.map(|c| Guard {
                constraint: c,
                think_open: self.tokenizer.token_to_id(THINK_OPEN).into_iter().collect(),
                leading: 0,
            }),
            close_reasoning,
        })
    }

    /// The request's constraint: forced tool calls, or its response format (with tool calls
    /// as an alternative when tools are offered).
    fn constraint(&self, params: &GenerateParams) -> Result<Option<Constraint>> {
        let tools = params.tools.as_deref().unwrap_or_default();
        let forced = match &params.tool_choice {
            ToolChoice::Required => Some(None),
            ToolChoice::Function(name) => Some(Some(name.as_str())),
            ToolChoice::Auto | ToolChoice::None => None,
        };
        let json_answer = matches!(
            params.response_format,
            ResponseFormat::JsonObject | ResponseFormat::JsonSchema(_)
        );
        let grammar = match forced {
            Some(only) => Some(tool_call_grammar(
                &self.tokenizer,
                self.tool_format,
                tools,
                only,
                None,
            )?),
            None if json_answer && params.parses_tool_calls() => Some(tool_call_grammar(
                &self.tokenizer,
                self.tool_format,
                tools,
                None,
                Some(&params.response_format),
            )?),
            None => None,
        };
        if grammar.is_none() && params.response_format.is_text() {
            return Ok(None);
        }
        let compiler = self.grammar_compiler()?;
        match grammar {
            Some(g) => compiler.lark(&g).map(Some),
            None => compiler.response_format(&params.response_format),
        }
    }

    /// A stream over `target` whose cache already holds `prompt[..cached]`, with a `sampler`
    /// from [`sampler`](Self::sampler).
    fn launch<'a>(
        &self,
        target: Target<'a>,
        picker: Picker,
        prompt: Vec<u32>,
        cached: usize,
        in_reasoning: bool,
        params: &GenerateParams,
    ) -> Stream<'a> {
        debug_assert!(cached < prompt.len());
        Stream {
            target,
            cancel: params.cancel.clone(),
            tokenizer_vocab: self.tokenizer.vocab_size(),
            eos: self.eos.clone(),
            max_tokens: params.max_tokens,
            sampler: picker.sampler,
            guard: picker.guard,
            max_reasoning: params.max_reasoning_tokens,
            reasoning_tokens: 0,
            close_reasoning: picker.close_reasoning,
            forced: VecDeque::new(),
            parser: OutputParser::new(&self.tokenizer, &params.stop, in_reasoning)
                .with_tool_calls(params.parses_tool_calls()),
            prompt,
            cached,
            tokens: Vec::new(),
            events: VecDeque::new(),
            finish: None,
            failed: false,
            prefill_secs: 0.0,
            decode_secs: 0.0,
        }
    }
}

/// A request's token chooser: the sampler chain, the constraint on the answer and the tokens
/// that close a reasoning section past its budget.
struct Picker {
    sampler: Sampler,
    guard: Option<Guard>,
    close_reasoning: Vec<u32>,
}

/// Most whitespace-only tokens allowed before a constrained answer starts (R1 writes `\n\n`
/// after `</think>`).
const LEADING_WHITESPACE: usize = 2;

/// The constraint on the answer and where the answer stands.
struct Guard {
    constraint: Constraint,
    /// `<think>`, allowed while the output may still open a reasoning section.
    think_open: Vec<u32>,
    /// Whitespace tokens taken before the answer started.
    leading: usize,
}

impl Guard {
    /// Masks `logits` for the next token of the answer; `may_open` while the output has not
    /// started (it may still open a reasoning section).
    fn apply(&mut self, logits: &mut [f32], may_open: bool) -> Result<()> {
        let before = self.constraint.consumed() == 0;
        let extra: &[u32] = if may_open && before {
            &self.think_open
        } else {
            &[]
        };
        self.constraint
            .apply(logits, extra, before && self.leading < LEADING_WHITESPACE)
    }

    /// Advances over the chosen `id`: the grammar's token, or leading whitespace / `<think>`.
    fn accept(&mut self, id: u32) -> Result<()> {
        if self.constraint.allows(id) {
            self.constraint.commit(id)
        } else if self.think_open.contains(&id) {
            Ok(())
        } else {
            self.leading += 1;
            Ok(())
        }
    }
}

/// The session a stream runs on: its own, a chat session's or a caller's (whose token record
/// it updates).
enum Target<'a> {
    Owned(Box<Session>),
    Chat(&'a mut ChatState),
    Borrowed {
        session: &'a mut Session,
        cached: &'a mut Vec<u32>,
    },
    /// A chat session moved into the stream ([`ChatSession::into_stream`]).
    OwnedChat(Box<ChatSession>),
    /// The chat session went back to the caller ([`Stream::into_chat_session`]); the stream
    /// has ended and never steps again.
    Released,
}

impl Target<'_> {
    fn session(&mut self) -> &mut Session {
        match self {
            Target::Owned(s) => s,
            Target::Chat(c) => &mut c.session,
            Target::Borrowed { session, .. } => session,
            Target::OwnedChat(c) => &mut c.state.session,
            Target::Released => unreachable!("a released stream never steps"),
        }
    }

    /// The session and its token record (a reused cache; never `Owned`).
    fn cache(&mut self) -> (&mut Session, &mut Vec<u32>) {
        match self {
            Target::Owned(_) | Target::Released => unreachable!("an owned session starts empty"),
            Target::Chat(c) => (&mut c.session, &mut c.cached),
            Target::Borrowed { session, cached } => (session, cached),
            Target::OwnedChat(c) => (&mut c.state.session, &mut c.state.cached),
        }
    }

    /// Notes tokens just appended to the cache.
    fn record(&mut self, ids: &[u32]) {
        match self {
            Target::Owned(_) | Target::Released => {}
            Target::Chat(c) => c.cached.extend_from_slice(ids),
            Target::Borrowed { cached, .. } => cached.extend_from_slice(ids),
            Target::OwnedChat(c) => c.state.cached.extend_from_slice(ids),
        }
    }

    /// The conversation a reply joins, if any.
    fn chat(&mut self) -> Option<&mut ChatState> {
        match self {
            Target::Chat(c) => Some(c),
            Target::OwnedChat(c) => Some(&mut c.state),
            Target::Owned(_) | Target::Borrowed { .. } | Target::Released => None,
        }
    }
}

/// A generation in progress: an iterator of [`Event`]s (text deltas tagged reasoning or
/// content). Each `next` runs the model until a delta is ready. After the last event,
/// [`into_result`](Self::into_result) gives the full text, finish reason and usage.
pub struct Stream<'a> {
    target: Target<'a>,
    cancel: Option<CancelCheck>,
    tokenizer_vocab: usize,
    eos: Arc<[u32]>,
    max_tokens: Option<usize>,
    sampler: Sampler,
    guard: Option<Guard>,
    max_reasoning: Option<usize>,
    reasoning_tokens: usize,
    close_reasoning: Vec<u32>,
    /// Tokens to emit next instead of sampling (a reasoning section closed by its budget).
    forced: VecDeque<u32>,
    parser: OutputParser,
    prompt: Vec<u32>,
    cached: usize,
    tokens: Vec<u32>,
    events: VecDeque<Event>,
    finish: Option<FinishReason>,
    failed: bool,
    prefill_secs: f64,
    decode_secs: f64,
}

impl std::fmt::Debug for Stream<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stream")
            .field("prompt_tokens", &self.prompt.len())
            .field("tokens", &self.tokens.len())
            .field("finish", &self.finish)
            .finish()
    }
}

impl Stream<'_> {
    /// One forward pass (the whole prompt, chunk by chunk, the first time) and one sampled
    /// token; the cancel check is polled before each forward call.
    fn step(&mut self) -> Result<()> {
        if self.max_tokens.is_some_and(|m| self.tokens.len() >= m) {
            self.end(FinishReason::Length);
            return Ok(());
        }
        if self.forced.is_empty()
            && self.parser.in_reasoning()
            && self
                .max_reasoning
                .is_some_and(|m| self.reasoning_tokens >= m)
        {
            // Over budget: close the reasoning; the answer follows.
            self.forced.extend(&self.close_reasoning);
        }
        let t0 = Instant::now();
        let prefill = self.tokens.is_empty();
        let id = if prefill {
            // Every chunk but the last is PREFILL_CHUNK long; the last (with the logits) is
            // 1..=PREFILL_CHUNK long.
            let rest = self.prompt.len() - self.cached;
            let last_start = self.prompt.len() - (rest - 1) % PREFILL_CHUNK - 1;
            let mut at = self.cached;
            loop {
                if self.cancel.as_ref().is_some_and(CancelCheck::is_cancelled) {
                    self.prefill_secs += t0.elapsed().as_secs_f64();
                    self.end(FinishReason::Cancelled);
                    return Ok(());
                }
                if at == last_start {
                    break;
                }
                let chunk = &self.prompt[at..at + PREFILL_CHUNK];
                self.target.session().eval(chunk)?;
                // Recorded chunk by chunk: a cancelled prefill leaves a reusable cache.
                self.target.record(chunk);
                at += PREFILL_CHUNK;
            }
            let last = &self.prompt[last_start..];
            let logits = self.target.session().eval(last)?;
            let id = choose(
                &mut self.sampler,
                &mut self.guard,
                &mut self.forced,
                &self.parser,
                &logits[..self.tokenizer_vocab],
            )?;
            self.target.record(last);
            id
        } else {
            if self.cancel.as_ref().is_some_and(CancelCheck::is_cancelled) {
                self.end(FinishReason::Cancelled);
                return Ok(());
            }
            let session = self.target.session();
            if session.len() >= session.context_length() {
                self.end(FinishReason::Length);
                return Ok(());
            }
            let last = &self.tokens[self.tokens.len() - 1..];
            let logits = session.eval(last)?;
            let id = choose(
                &mut self.sampler,
                &mut self.guard,
                &mut self.forced,
                &self.parser,
                &logits[..self.tokenizer_vocab],
            )?;
            self.target.record(last);
            id
        };
        self.sampler.accept(id);
        if let Some(g) = self.guard.as_mut().filter(|_| !self.parser.in_reasoning()) {
            g.accept(id)?;
        }
        if self.parser.in_reasoning() {
            self.reasoning_tokens += 1;
        }
        self.tokens.push(id);
        if self.eos.contains(&id) {
            self.end(FinishReason::Stop);
        } else {
            self.parser.push(id, &mut self.events)?;
            if self.parser.stopped() {
                self.end(FinishReason::Stop);
            } else if self.forced.is_empty()
                && self.parser.in_reasoning()
                && self
                    .max_reasoning
                    .is_some_and(|m| self.reasoning_tokens >= m)
            {
                // Over budget: close the reasoning; the answer follows.
                self.forced.extend(&self.close_reasoning);
            }
        }
        let secs = t0.elapsed().as_secs_f64();
        if prefill {
            self.prefill_secs += secs;
        } else {
            self.decode_secs += secs;
        }
        Ok(())
    }

    fn end(&mut self, reason: FinishReason) {
        if self.finish.is_some() {
            return;
        }
        self.parser.finish(&mut self.events);
        let called = !self.parser.tool_calls().is_empty();
        self.finish = Some(match reason {
            FinishReason::Stop if called => FinishReason::ToolCalls,
            r => r,
        });
        if let Some(c) = self.target.chat() {
            c.messages.push(Message {
                role: "assistant".into(),
                content: self.parser.content().to_string(),
                reasoning_content: self.parser.reasoning().map(str::to_string),
                tool_calls: self.parser.tool_calls().to_vec(),
                ..Default::default()
            });
        }
    }

    /// Stops generating ([`FinishReason::Cancelled`]); held-back text is still delivered.
    pub fn cancel(&mut self) {
        if !self.failed {
            self.end(FinishReason::Cancelled);
        }
    }

    /// Generates at most one token: unless generation has ended, runs one forward pass (the
    /// whole prompt on the first call) and samples, queuing the deltas this completes for
    /// [`pop_event`](Self::pop_event). Returns whether generation goes on. For callers that
    /// must regain control between tokens (a binding checking for Ctrl-C); iterating runs it
    /// until a delta is ready.
    pub fn advance(&mut self) -> Result<bool> {
        if self.finish.is_some() || self.failed {
            return Ok(false);
        }
        if let Err(e) = self.step() {
            self.failed = true;
            return Err(e);
        }
        Ok(self.finish.is_none())
    }

    /// Takes the oldest delta [`advance`](Self::advance) queued.
    pub fn pop_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// Ends the stream ([`cancel`](Self::cancel)s it if unfinished) and gives back the
    /// conversation [`ChatSession::into_stream`] moved into it, the reply included; `None`
    /// for other streams.
    pub fn into_chat_session(mut self) -> Option<Box<ChatSession>> {
        self.cancel();
        match std::mem::replace(&mut self.target, Target::Released) {
            Target::OwnedChat(chat) => Some(chat),
            other => {
                self.target = other;
                None
            }
        }
    }

    /// Why generation ended, once it has.
    pub fn finish_reason(&self) -> Option<FinishReason> {
        self.finish
    }

    /// The tokens generated so far.
    pub fn tokens(&self) -> &[u32] {
        &self.tokens
    }

    /// Counts and timings so far.
    pub fn usage(&self) -> Usage {
        let evaluated = (self.prompt.len() - self.cached) as f64;
        let n = self.tokens.len();
        let rate = |count: f64, secs: f64| if secs > 0.0 { count / secs } else { 0.0 };
        Usage {
            prompt_tokens: self.prompt.len(),
            cached_tokens: self.cached,
            completion_tokens: n,
            prefill_secs: self.prefill_secs,
            decode_secs: self.decode_secs,
            prefill_tok_s: rate(evaluated, self.prefill_secs),
            decode_tok_s: rate(n.saturating_sub(1) as f64, self.decode_secs),
        }
    }

    /// Runs to the end (remaining events are dropped) and returns the result.
    pub fn into_result(mut self) -> Result<GenerationResult> {
        for event in self.by_ref() {
            event?;
        }
        self.result()
    }

    /// Runs to the end, calling `on_event` with each delta until it returns `false`.
    pub fn run(mut self, mut on_event: impl FnMut(&Event) -> bool) -> Result<GenerationResult> {
        while let Some(event) = self.next() {
            if !on_event(&event?) {
                self.cancel();
                break;
            }
        }
        self.into_result()
    }

    /// The outcome, once generation has ended (after the last event or
    /// [`advance`](Self::advance) returning `false`).
    pub fn result(&self) -> Result<GenerationResult> {
        let finish_reason = match (self.finish, self.failed) {
            (Some(f), false) => f,
            (_, true) => {
                return Err(Error::InvalidArgument(
                    "generation did not finish: an earlier call returned an error".into(),
                ))
            }
            (None, false) => {
                return Err(Error::InvalidArgument("generation has not finished".into()))
            }
        };
        Ok(GenerationResult {
            text: self.parser.text().to_string(),
            reasoning_content: self.parser.reasoning().map(str::to_string),
            content: self.parser.content().to_string(),
            tool_calls: self.parser.tool_calls().to_vec(),
            tokens: self.tokens.clone(),
            finish_reason,
            usage: self.usage(),
        })
    }
}

impl Iterator for Stream<'_> {
    type Item = Result<Event>;

    fn next(&mut self) -> Option<Result<Event>> {
        loop {
            if let Some(e) = self.events.pop_front() {
                return Some(Ok(e));
            }
            if self.finish.is_some() || self.failed {
                return None;
            }
            if let Err(e) = self.advance() {
                return Some(Err(e));
            }
        }
    }
}

impl Drop for Stream<'_> {
    /// Dropping an unfinished stream cancels it (a chat session then records the partial reply).
    fn drop(&mut self) {
        if self.finish.is_none() && !self.failed {
            self.end(FinishReason::Cancelled);
        }
    }
}

/// The next token: a forced one, or the sampler's pick (masked by the constraint outside
/// reasoning).
fn choose(
    sampler: &mut Sampler,
    guard: &mut Option<Guard>,
    forced: &mut VecDeque<u32>,
    parser: &OutputParser,
    logits: &[f32],
) -> Result<u32> {
    if let Some(id) = forced.pop_front() {
        return Ok(id);
    }
    match guard.as_mut().filter(|_| !parser.in_reasoning()) {
        Some(g) => {
            let may_open = !parser.in_answer();
            sampler.sample_with(logits, &mut |l| g.apply(l, may_open))
        }
        None => sampler.sample(logits),
    }
}

/// EOS ids from `file` must be tokens of `tokenizer`: only those are ever sampled (a model's
/// vocab_size may pad past the tokenizer's, as R1's 129280 rows do over 128815 ids).
fn check_eos(tokenizer: &Tokenizer, ids: &[u32], file: &str) -> Result<()> {
    match ids.iter().find(|&&id| !tokenizer.contains(id)) {
        None => Ok(()),
        Some(id) => Err(Error::config(
            "eos_token_id",
            format!(
                "token id {id} in {file} is not a token of the tokenizer ({} ids): generation \
                 could never stop on it",
                tokenizer.vocab_size()
            ),
        )),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::sampling::SamplingParams;

    /// The tiny V3 fixture with R1's vocabulary and tokenizer, on one thread.
    pub(crate) fn generator() -> Generator {
        let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
        let options = LoadOptions {
            threads: Some(1),
            ..Default::default()
        };
        let tokenizer = fixtures.join("tokenizers/deepseek-r1");
        Generator::load(fixtures.join("v3_r1tok"), Some(&tokenizer), options).unwrap()
    }

    /// Greedy decoding of at most `max_tokens` tokens.
    pub(crate) fn greedy(max_tokens: usize) -> GenerateParams {
        GenerateParams {
            max_tokens: Some(max_tokens),
            sampling: SamplingParams::greedy(),
            ..Default::default()
        }
    }

    #[test]
    fn generating_on_a_caller_session_reuses_its_cache() {
        let gen = generator();
        let mut session = gen.new_session().unwrap();
        let mut cached = Vec::new();
        let msgs = [Message::user("What is 1+1?")];
        let (_, prompt) = gen.chat_tokens(&msgs).unwrap();

        let stream = gen.chat_stream_on(&mut session, &mut cached, &msgs, &greedy(6));
        let r1 = stream.unwrap().into_result().unwrap();
        assert_eq!(r1.tokens, gen.chat(&msgs, &greedy(6)).unwrap().tokens);
        assert_eq!(r1.usage.cached_tokens, 0);
        // Everything evaluated is recorded: the prompt and all replies but the last.
        assert_eq!(cached[..prompt.len()], prompt[..]);
        assert_eq!(cached[prompt.len()..], r1.tokens[..5]);
        assert_eq!(cached.len(), session.len());

        // The same conversation again: all but the last prompt token come from the cache.
        let stream = gen.chat_stream_on(&mut session, &mut cached, &msgs, &greedy(6));
        let r2 = stream.unwrap().into_result().unwrap();
        assert_eq!(r2.tokens, r1.tokens);
        assert_eq!(r2.usage.cached_tokens, prompt.len() - 1);

        // A raw prompt shares only BOS with it; a record longer than the cache is not trusted.
        let stream = gen.stream_on(&mut session, &mut cached, "Once upon", &greedy(3));
        let r3 = stream.unwrap().into_result().unwrap();
        assert_eq!(r3.usage.cached_tokens, 1);
        assert_eq!(
            r3.tokens,
            gen.generate("Once upon", &greedy(3)).unwrap().tokens
        );
        cached.push(7);
        cached.push(7);
        session.truncate(2).unwrap();
        let stream = gen.stream_on(&mut session, &mut cached, "Once upon", &greedy(3));
        let r4 = stream.unwrap().into_result().unwrap();
        assert_eq!((r4.usage.cached_tokens, r4.tokens), (0, r3.tokens));
    }

    #[test]
    fn a_rejected_request_leaves_the_caller_session_unchanged() {
        let gen = generator().with_session_options(SessionOptions {
            context_length: Some(16),
            ..Default::default()
        });
        let mut session = gen.new_session().unwrap();
        let mut cached = Vec::new();
        let stream = gen.stream_on(&mut session, &mut cached, "Once upon", &greedy(2));
        stream.unwrap().into_result().unwrap();
        let before = cached.clone();
        let long = "word ".repeat(40);
        match gen.stream_on(&mut session, &mut cached, &long, &greedy(2)) {
            Err(Error::ContextOverflow { limit: 16, .. }) => {}
            other => panic!("{other:?}"),
        }
        match gen.stream_on(&mut session, &mut cached, "x", &greedy(0)) {
            Err(Error::InvalidParameter { .. }) => {}
            other => panic!("{other:?}"),
        }
        assert_eq!((cached.len(), session.len()), (before.len(), before.len()));
        assert_eq!(cached, before);
    }
}
