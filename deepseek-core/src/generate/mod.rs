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

use std::collections::VecDeque;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

pub use chat::ChatSession;
use chat::ChatState;
pub use output::{prompt_opens_reasoning, Event, EventKind, OutputParser, THINK_CLOSE, THINK_OPEN};

use crate::error::{Error, Result};
use crate::sampling::{GenerationConfig, Sampler, SamplingParams};
use crate::session::{LoadOptions, Model, Session, SessionOptions};
use crate::template::{ChatTemplate, Message};
use crate::tokenizer::Tokenizer;

/// Prompt tokens evaluated per forward call (bounds the activations of a long prefill).
const PREFILL_CHUNK: usize = 512;

/// What to generate.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct GenerateParams {
    /// Most tokens to generate (`None`: until EOS, a stop string or the context is full).
    pub max_tokens: Option<usize>,
    /// Strings that end the output; the first one found is cut off with everything after it.
    pub stop: Vec<String>,
    /// How to pick tokens.
    pub sampling: SamplingParams,
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
        self.sampling.validate()
    }
}

/// Why generation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FinishReason {
    /// An EOS token or a stop string.
    Stop,
    /// `max_tokens` reached or the context is full.
    Length,
    /// The consumer stopped it (callback returned `false`, [`Stream::cancel`], or the stream
    /// was dropped early).
    Cancelled,
}

impl FinishReason {
    /// OpenAI's name: `stop`, `length` or `cancelled`.
    pub fn as_str(self) -> &'static str {
        match self {
            FinishReason::Stop => "stop",
            FinishReason::Length => "length",
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
    /// The answer.
    pub content: String,
    /// The generated token ids (a final EOS included).
    pub tokens: Vec<u32>,
    /// Why it ended.
    pub finish_reason: FinishReason,
    /// Counts and timings.
    pub usage: Usage,
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
            template,
            generation: GenerationConfig::default(),
            eos: eos.into(),
            holes,
            session_options: SessionOptions::default(),
        })
    }

    /// Loads the model from `model_dir`, the tokenizer from `tokenizer_dir` (default:
    /// `model_dir`) and, if present, `generation_config.json` from `model_dir`.
    pub fn load(
        model_dir: impl AsRef<Path>,
        tokenizer_dir: Option<&Path>,
        options: LoadOptions,
    ) -> Result<Self> {
        let model_dir = model_dir.as_ref();
        let model = Arc::new(Model::load(model_dir, options)?);
        let tokenizer = Tokenizer::from_dir(tokenizer_dir.unwrap_or(model_dir))?;
        let mut gen = Self::new(model, tokenizer)?;
        let gc = model_dir.join("generation_config.json");
        if gc.is_file() {
            gen = gen.with_generation_config(GenerationConfig::from_file(&gc)?);
        }
        Ok(gen)
    }

    /// Uses `config`'s sampling defaults and adds its EOS ids.
    pub fn with_generation_config(mut self, config: GenerationConfig) -> Self {
        let mut eos = self.eos.to_vec();
        eos.extend(&config.eos_token_ids);
        eos.sort_unstable();
        eos.dedup();
        self.eos = eos.into();
        self.generation = config;
        self
    }

    /// Uses `template` for chat prompts.
    pub fn with_template(mut self, template: ChatTemplate) -> Self {
        self.template = template;
        self
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
        let text = self.template.render(messages, true)?;
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
        let (text, ids) = self.chat_tokens(messages)?;
        self.start_owned(ids, prompt_opens_reasoning(&text), params)
    }

    /// A multi-turn conversation that keeps its KV cache between turns.
    pub fn chat_session(&self) -> Result<ChatSession> {
        ChatSession::new(self)
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
        params.validate()?;
        if prompt.is_empty() {
            return Err(Error::InvalidArgument("empty prompt".into()));
        }
        debug_assert!(cached < prompt.len());
        let mut sampling = params.sampling.clone();
        sampling
            .logit_bias
            .extend(self.holes.iter().map(|&id| (id, f32::NEG_INFINITY)));
        let mut sampler = Sampler::new(sampling)?;
        sampler.add_prompt(&prompt);
        Ok(Stream {
            target,
            tokenizer_vocab: self.tokenizer.vocab_size(),
            eos: self.eos.clone(),
            max_tokens: params.max_tokens,
            sampler,
            parser: OutputParser::new(&self.tokenizer, &params.stop, in_reasoning),
            prompt,
            cached,
            tokens: Vec::new(),
            events: VecDeque::new(),
            finish: None,
            failed: false,
            prefill_secs: 0.0,
            decode_secs: 0.0,
        })
    }
}

/// The session a stream runs on: its own, or a chat session's (whose token record it updates).
enum Target<'a> {
    Owned(Box<Session>),
    Chat(&'a mut ChatState),
}

impl Target<'_> {
    fn session(&mut self) -> &mut Session {
        match self {
            Target::Owned(s) => s,
            Target::Chat(c) => &mut c.session,
        }
    }

    /// Notes tokens just appended to the cache.
    fn record(&mut self, ids: &[u32]) {
        if let Target::Chat(c) = self {
            c.cached.extend_from_slice(ids);
        }
    }
}

/// A generation in progress: an iterator of [`Event`]s (text deltas tagged reasoning or
/// content). Each `next` runs the model until a delta is ready. After the last event,
/// [`into_result`](Self::into_result) gives the full text, finish reason and usage.
pub struct Stream<'a> {
    target: Target<'a>,
    tokenizer_vocab: usize,
    eos: Arc<[u32]>,
    max_tokens: Option<usize>,
    sampler: Sampler,
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
    /// One forward pass and one sampled token.
    fn step(&mut self) -> Result<()> {
        if self.max_tokens.is_some_and(|m| self.tokens.len() >= m) {
            self.end(FinishReason::Length);
            return Ok(());
        }
        let t0 = Instant::now();
        let prefill = self.tokens.is_empty();
        let session = self.target.session();
        let (id, evaluated) = if prefill {
            let rest = &self.prompt[self.cached..];
            let (head, last) = rest.split_at(rest.len() - (rest.len() - 1) % PREFILL_CHUNK - 1);
            for chunk in head.chunks(PREFILL_CHUNK) {
                session.eval(chunk)?;
            }
            let logits = session.eval(last)?;
            (self.sampler.sample(&logits[..self.tokenizer_vocab])?, rest)
        } else {
            if session.len() >= session.context_length() {
                self.end(FinishReason::Length);
                return Ok(());
            }
            let last = &self.tokens[self.tokens.len() - 1..];
            let logits = session.eval(last)?;
            (self.sampler.sample(&logits[..self.tokenizer_vocab])?, last)
        };
        self.target.record(evaluated);
        self.sampler.accept(id);
        self.tokens.push(id);
        if self.eos.contains(&id) {
            self.end(FinishReason::Stop);
        } else {
            self.parser.push(id, &mut self.events)?;
            if self.parser.stopped() {
                self.end(FinishReason::Stop);
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
        self.finish = Some(reason);
        if let Target::Chat(c) = &mut self.target {
            c.messages.push(Message {
                role: "assistant".into(),
                content: self.parser.content().to_string(),
                reasoning_content: self.parser.reasoning().map(str::to_string),
            });
        }
    }

    /// Stops generating ([`FinishReason::Cancelled`]); held-back text is still delivered.
    pub fn cancel(&mut self) {
        if !self.failed {
            self.end(FinishReason::Cancelled);
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

    fn result(&self) -> Result<GenerationResult> {
        let finish_reason = match (self.finish, self.failed) {
            (Some(f), false) => f,
            _ => {
                return Err(Error::InvalidArgument(
                    "generation did not finish: an earlier call returned an error".into(),
                ))
            }
        };
        Ok(GenerationResult {
            text: self.parser.text().to_string(),
            reasoning_content: self.parser.reasoning().map(str::to_string),
            content: self.parser.content().to_string(),
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
            if let Err(e) = self.step() {
                self.failed = true;
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
