//! Text generation on a session: `ds_generate` (a raw prompt) and `ds_chat` (messages through
//! the chat template), streaming UTF-8 deltas to a C callback. Translation only: the core's
//! `Generator` runs the prefill + decode loop on the session's cache and reuses the prefix the
//! cache shares with the new prompt.

use std::ffi::{c_char, c_void};
use std::sync::atomic::Ordering;

use deepseek_core::{
    CancelCheck, EventKind, FinishReason, GenerateParams, GenerationResult, Generator, LogitsHook,
    LogitsProcessor, Message, ResponseFormat, Session, Stream, ToolCall, ToolChoice,
};
use serde_json::Value;

use crate::ds_token;
use crate::session::{ds_session, Cache};
use crate::status::{arg_ref, arg_str, ds_status, guard, Failure};

/// Asked "stop now?" during long work (see ds_generate_params.abort_callback): return true to
/// stop. It runs on the thread that called ds_generate / ds_chat, often (keep it cheap: read
/// a flag set by another thread or a signal handler), and must not unwind or longjmp out.
pub type ds_abort_cb = Option<unsafe extern "C" fn(user_data: *mut c_void) -> bool>;

/// A step of the sampler chain (see ds_generate_params.logits_processor): called before each
/// token is chosen with the `n_generated` ids generated so far in this request and the
/// `n_vocab` logits, which it may edit in place (`-INFINITY` bans a token; NaN or +INFINITY is
/// an error). Return true to go on; false fails the call with DS_ERR_INVALID_ARGUMENT. Runs on
/// the calling thread; must not unwind or longjmp out.
pub type ds_logits_cb = Option<
    unsafe extern "C" fn(
        user_data: *mut c_void,
        generated: *const ds_token,
        n_generated: usize,
        logits: *mut f32,
        n_vocab: usize,
    ) -> bool,
>;

/// How to generate. Get one from ds_generate_default_params() and change what you need.
/// A negative sampling value means the checkpoint's default: generation_config.json's value
/// (R1: temperature 0.6, top_p 0.95), or the neutral one if it sets none (temperature 1, no
/// truncation, no penalty). Set temperature to 0 for greedy decoding.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct ds_generate_params {
    /// Most tokens to generate (0: generation_config.json's max_new_tokens if set, else until
    /// an EOS token, a stop string or the full context).
    pub max_tokens: usize,
    /// Softmax temperature, >= 0; 0 is greedy (argmax).
    pub temperature: f32,
    /// Keep only the top_k most likely tokens (0: off).
    pub top_k: i32,
    /// Keep the most likely tokens whose probabilities reach top_p, in (0, 1] (1: off).
    pub top_p: f32,
    /// Drop tokens less likely than min_p times the most likely one, in [0, 1] (0: off).
    pub min_p: f32,
    /// Divide positive (multiply negative) logits of tokens already in the prompt or output,
    /// > 0 (1: off).
    pub repetition_penalty: f32,
    /// Subtract frequency_penalty * count from each generated token's logit, in [-2, 2]
    /// (0: off; never the checkpoint's default).
    pub frequency_penalty: f32,
    /// Subtract presence_penalty from each token generated at least once, in [-2, 2] (0: off;
    /// never the checkpoint's default).
    pub presence_penalty: f32,
    /// Seed of the sampler's random stream, used if has_seed (else a fresh random seed).
    pub seed: u64,
    /// Whether seed is set: the same seed, prompt and params give the same text.
    pub has_seed: bool,
    /// n_stop UTF-8 strings that end the output; the first one found is cut off with what
    /// follows and never reaches the callback. May be NULL if n_stop is 0. Read during the call
    /// only.
    pub stop: *const *const c_char,
    /// Number of stop strings.
    pub n_stop: usize,
    /// Polled while ds_chat renders the chat template (every few pieces of output), before
    /// each 512-token chunk of the prompt and before each generated token; returning true
    /// stops the call: during rendering it fails with DS_ERR_CANCELLED and the session is
    /// unchanged, later it succeeds with DS_FINISH_CANCELLED (the cache keeps the prompt
    /// chunks evaluated so far). NULL: never stops this way. A template loop that writes
    /// nothing is not polled; its render budget bounds it.
    pub abort_callback: ds_abort_cb,
    /// Passed to abort_callback.
    pub abort_callback_data: *mut c_void,
    /// The tools the model may call (ds_chat): OpenAI's `tools` list as JSON text,
    /// `[{"type": "function", "function": {"name", "description", "parameters"}}, ...]`,
    /// rendered by the chat template; its calls come back as DS_EVENT_TOOL_CALL events. NULL:
    /// no tools. Read during the call only.
    pub tools_json: *const c_char,
    /// OpenAI's `tool_choice` as JSON text: `"auto"`, `"none"`, `"required"` or
    /// `{"type": "function", "function": {"name": ...}}` (forced by a grammar). NULL: auto.
    pub tool_choice_json: *const c_char,
    /// OpenAI's `response_format` as JSON text: `{"type": "json_object"}`,
    /// `{"type": "json_schema", "json_schema": {"schema": {...}}}`, `{"type": "regex",
    /// "regex": ...}` or `{"type": "lark", "grammar": ...}`, enforced on the answer at every
    /// token (the reasoning stays free). NULL: free text.
    pub response_format_json: *const c_char,
    /// Extra chat-template variables as a JSON object, e.g. `{"thinking": false}` for V3.1.
    /// NULL: none.
    pub chat_template_kwargs_json: *const c_char,
    /// Most tokens of reasoning: past them `</think>` is forced and the answer follows (0: no
    /// reasoning; negative: no limit).
    pub max_reasoning_tokens: i64,
    /// Runs before each token is chosen, after logit bias and penalties and before a
    /// constraint's mask (see ds_logits_cb). NULL: none.
    pub logits_processor: ds_logits_cb,
    /// Passed to logits_processor.
    pub logits_processor_data: *mut c_void,
}

/// The defaults: the checkpoint's sampling (negative values), no token limit, no seed, no stop
/// strings.
#[no_mangle]
pub extern "C" fn ds_generate_default_params() -> ds_generate_params {
    ds_generate_params {
        max_tokens: 0,
        temperature: -1.0,
        top_k: -1,
        top_p: -1.0,
        min_p: -1.0,
        repetition_penalty: -1.0,
        frequency_penalty: 0.0,
        presence_penalty: 0.0,
        seed: 0,
        has_seed: false,
        stop: std::ptr::null(),
        n_stop: 0,
        abort_callback: None,
        abort_callback_data: std::ptr::null_mut(),
        tools_json: std::ptr::null(),
        tool_choice_json: std::ptr::null(),
        response_format_json: std::ptr::null(),
        chat_template_kwargs_json: std::ptr::null(),
        max_reasoning_tokens: -1,
        logits_processor: None,
        logits_processor_data: std::ptr::null_mut(),
    }
}

/// A C abort callback and its data, as the core's cancel check.
struct Abort {
    callback: unsafe extern "C" fn(*mut c_void) -> bool,
    data: *mut c_void,
}

// SAFETY: the core polls a cancel check only on the thread driving the generation, i.e. the
// thread inside ds_generate / ds_chat, and the params holding it are dropped before the call
// returns; the data pointer is only handed back to the caller's callback, as documented.
unsafe impl Send for Abort {}
// SAFETY: as above: never shared with another thread while in use.
unsafe impl Sync for Abort {}

/// A C logits callback and its data, as a core logits processor.
struct CLogits {
    callback: unsafe extern "C" fn(*mut c_void, *const ds_token, usize, *mut f32, usize) -> bool,
    data: *mut c_void,
}

// SAFETY: as for Abort: called only on the thread inside ds_generate / ds_chat, and dropped
// with the params before the call returns.
unsafe impl Send for CLogits {}

impl LogitsProcessor for CLogits {
    fn process(&mut self, generated: &[u32], logits: &mut [f32]) -> deepseek_core::Result<()> {
        // SAFETY: a valid callback by contract; both buffers live and are sized as passed.
        let ok = unsafe {
            (self.callback)(
                self.data,
                generated.as_ptr(),
                generated.len(),
                logits.as_mut_ptr(),
                logits.len(),
            )
        };
        if ok {
            Ok(())
        } else {
            Err(deepseek_core::Error::InvalidArgument(
                "the logits processor returned false".into(),
            ))
        }
    }
}

impl Abort {
    fn check(&self) -> bool {
        // SAFETY: a valid callback by contract, called with the caller's own data.
        unsafe { (self.callback)(self.data) }
    }
}

/// Which part of the reply a text delta belongs to.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ds_event_kind {
    /// The answer.
    DS_EVENT_CONTENT = 0,
    /// Reasoning: the text inside <think> ... </think> (R1 and its distills), tags left out.
    DS_EVENT_REASONING = 1,
    /// A complete tool call (when params.tools_json is set), as OpenAI's JSON object
    /// `{"id": "call_...", "type": "function", "function": {"name": ..., "arguments": "..."}}`
    /// (arguments: JSON text). Delivered once each, in order, when the reply has ended; the
    /// markup never reaches DS_EVENT_CONTENT. Pass the calls back (ds_message.tool_calls_json)
    /// with the assistant turn, and each result as a "tool" message naming its id.
    DS_EVENT_TOOL_CALL = 2,
}

/// Why a generation ended.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ds_finish_reason {
    /// It did not: the call failed.
    DS_FINISH_NONE = 0,
    /// An EOS token or a stop string.
    DS_FINISH_STOP = 1,
    /// max_tokens reached, or the session's context is full.
    DS_FINISH_LENGTH = 2,
    /// The callback returned false.
    DS_FINISH_CANCELLED = 3,
    /// The model called tools (DS_EVENT_TOOL_CALL events): run them and send the results.
    DS_FINISH_TOOL_CALLS = 4,
}

/// What a generation did (written by ds_generate and ds_chat, also when they fail).
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct ds_generate_result {
    /// Why it ended (DS_FINISH_NONE if the call failed).
    pub finish_reason: ds_finish_reason,
    /// Tokens in the prompt.
    pub prompt_tokens: usize,
    /// Prompt tokens already in the session's cache, not evaluated again; the call evaluated
    /// prompt_tokens - cached_tokens.
    pub cached_tokens: usize,
    /// Tokens generated (a final EOS token included).
    pub completion_tokens: usize,
    /// Seconds evaluating the prompt and choosing the first token.
    pub prefill_secs: f64,
    /// Seconds producing the other tokens.
    pub decode_secs: f64,
    /// Evaluated prompt tokens per second.
    pub prefill_tok_s: f64,
    /// Generated tokens per second after the first.
    pub decode_tok_s: f64,
}

/// One message of a conversation: role ("system", "user", "assistant" or "tool") and content,
/// both NUL-terminated UTF-8. For earlier assistant turns, pass the answer (the content
/// deltas); R1's template drops their reasoning anyway. The last two fields may be NULL (a
/// `{role, content}` initializer leaves them so).
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct ds_message {
    /// The speaker.
    pub role: *const c_char,
    /// The text (may be "" for an assistant turn that only calls tools).
    pub content: *const c_char,
    /// An assistant turn's tool calls: a JSON list of the DS_EVENT_TOOL_CALL objects it
    /// received. NULL: none.
    pub tool_calls_json: *const c_char,
    /// A "tool" turn: the id of the call it answers. NULL: none.
    pub tool_call_id: *const c_char,
}

/// Receives each piece of generated text: `len` bytes of UTF-8 at `text` (whole characters,
/// never empty; NUL-terminated for convenience, but the text may contain NULs of its own) that
/// belong to `kind`. The text is valid only during the call. Return true to continue, false to
/// stop (the generation then ends with DS_FINISH_CANCELLED and the call succeeds).
/// It runs on the thread that called ds_generate / ds_chat and may call the library, but calls
/// on the same session fail with DS_ERR_SESSION_BUSY and it must not free that session. It must
/// not unwind (throw a C++ exception) or longjmp out: catch everything inside it.
pub type ds_event_cb = Option<
    unsafe extern "C" fn(
        user_data: *mut c_void,
        kind: ds_event_kind,
        text: *const c_char,
        len: usize,
    ) -> bool,
>;

impl ds_generate_result {
    fn empty() -> Self {
        ds_generate_result {
            finish_reason: ds_finish_reason::DS_FINISH_NONE,
            prompt_tokens: 0,
            cached_tokens: 0,
            completion_tokens: 0,
            prefill_secs: 0.0,
            decode_secs: 0.0,
            prefill_tok_s: 0.0,
            decode_tok_s: 0.0,
        }
    }

    fn from_core(r: &GenerationResult) -> Self {
        let u = &r.usage;
        ds_generate_result {
            finish_reason: match r.finish_reason {
                FinishReason::Stop => ds_finish_reason::DS_FINISH_STOP,
                FinishReason::Length => ds_finish_reason::DS_FINISH_LENGTH,
                FinishReason::Cancelled => ds_finish_reason::DS_FINISH_CANCELLED,
                FinishReason::ToolCalls => ds_finish_reason::DS_FINISH_TOOL_CALLS,
            },
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

/// An optional JSON-text argument, parsed.
///
/// # Safety
/// `ptr` is NULL or a NUL-terminated string.
unsafe fn json_arg(ptr: *const c_char, what: &str) -> Result<Option<Value>, Failure> {
    if ptr.is_null() {
        return Ok(None);
    }
    // SAFETY: a NUL-terminated string by contract.
    let text = unsafe { arg_str(ptr, what) }?;
    serde_json::from_str(text)
        .map(Some)
        .map_err(|e| Failure::invalid(format!("{what} is not JSON: {e}")))
}

/// The core's params: `p`'s values, the generator's defaults where `p` asks for them.
///
/// # Safety
/// `p.stop` is NULL or holds `p.n_stop` pointers, each NULL or a NUL-terminated string.
unsafe fn core_params(p: &ds_generate_params, gen: &Generator) -> Result<GenerateParams, Failure> {
    let defaults = gen.default_params();
    let mut sampling = defaults.sampling;
    let or_default = |value: f32, default: f32| if value < 0.0 { default } else { value };
    sampling.temperature = or_default(p.temperature, sampling.temperature);
    sampling.top_p = or_default(p.top_p, sampling.top_p);
    sampling.min_p = or_default(p.min_p, sampling.min_p);
    sampling.repetition_penalty = or_default(p.repetition_penalty, sampling.repetition_penalty);
    if p.top_k >= 0 {
        sampling.top_k = p.top_k as usize;
    }
    sampling.frequency_penalty = p.frequency_penalty;
    sampling.presence_penalty = p.presence_penalty;
    sampling.seed = p.has_seed.then_some(p.seed);
    let stop = match (p.stop.is_null(), p.n_stop) {
        (_, 0) => Vec::new(),
        (true, _) => return Err(Failure::null("params.stop")),
        (false, n) => {
            if n > isize::MAX as usize / size_of::<*const c_char>() {
                return Err(Failure::invalid(format!("params.n_stop {n} is too large")));
            }
            // SAFETY: `stop` holds `n_stop` readable pointers by contract.
            let ptrs = unsafe { std::slice::from_raw_parts(p.stop, n) };
            ptrs.iter()
                .enumerate()
                // SAFETY: each NULL or a NUL-terminated string by contract.
                .map(|(i, &s)| unsafe { arg_str(s, &format!("params.stop[{i}]")) }.map(Into::into))
                .collect::<Result<_, _>>()?
        }
    };
    let cancel = p.abort_callback.map(|callback| {
        let abort = Abort {
            callback,
            data: p.abort_callback_data,
        };
        CancelCheck::new(move || abort.check())
    });
    // SAFETY (the four below): each NULL or a NUL-terminated string by contract.
    let tools = match unsafe { json_arg(p.tools_json, "params.tools_json") }? {
        None => None,
        Some(Value::Array(list)) => Some(list),
        Some(_) => return Err(Failure::invalid("params.tools_json must be a JSON list")),
    };
    let tool_choice = match unsafe { json_arg(p.tool_choice_json, "params.tool_choice_json") }? {
        None => ToolChoice::Auto,
        Some(v) => ToolChoice::from_json(&v)?,
    };
    let response_format =
        match unsafe { json_arg(p.response_format_json, "params.response_format_json") }? {
            None => ResponseFormat::Text,
            Some(v) => ResponseFormat::from_json(&v)?,
        };
    let chat_template_kwargs = match unsafe {
        json_arg(
            p.chat_template_kwargs_json,
            "params.chat_template_kwargs_json",
        )
    }? {
        None => serde_json::Map::new(),
        Some(Value::Object(map)) => map,
        Some(_) => {
            return Err(Failure::invalid(
                "params.chat_template_kwargs_json must be a JSON object",
            ))
        }
    };
    let params = GenerateParams {
        max_tokens: (p.max_tokens != 0)
            .then_some(p.max_tokens)
            .or(defaults.max_tokens),
        stop,
        sampling,
        cancel,
        tools,
        tool_choice,
        response_format,
        chat_template_kwargs,
        max_reasoning_tokens: usize::try_from(p.max_reasoning_tokens).ok(),
        logits_processors: p
            .logits_processor
            .map(|callback| {
                LogitsHook::new(CLogits {
                    callback,
                    data: p.logits_processor_data,
                })
            })
            .into_iter()
            .collect(),
    };
    params.validate()?;
    Ok(params)
}

/// The body of ds_generate and ds_chat: takes the session, starts a stream with `start` and
/// forwards its events to `cb`.
///
/// # Safety
/// The pointers follow ds_generate's contract.
unsafe fn generate(
    session: *mut ds_session,
    params: *const ds_generate_params,
    cb: ds_event_cb,
    user_data: *mut c_void,
    out: *mut ds_generate_result,
    start: impl for<'a> FnOnce(
        &Generator,
        &'a mut Session,
        &'a mut Vec<u32>,
        &GenerateParams,
    ) -> deepseek_core::Result<Stream<'a>>,
) -> Result<(), Failure> {
    // SAFETY: NULL or a live session by contract.
    let s = unsafe { arg_ref(session, "session") }?;
    let gen = s.text.generator()?;
    // SAFETY: NULL or a valid params struct by contract.
    let p = unsafe { params.as_ref() }
        .copied()
        .unwrap_or_else(|| ds_generate_default_params());
    // SAFETY: forwarded contract.
    let params = unsafe { core_params(&p, &gen) }?;
    let mut cache = s.lock()?;
    let Cache { session, tokens } = &mut *cache;
    let result = start(&gen, session, tokens, &params).and_then(|stream| {
        let mut text = Vec::new();
        let mut send = |kind: ds_event_kind, piece: &str| {
            let Some(cb) = cb else { return true };
            // NUL-terminated for C callers that print with %s.
            text.clear();
            text.extend_from_slice(piece.as_bytes());
            text.push(0);
            // SAFETY: a valid callback by contract; the text lives until it returns.
            unsafe { cb(user_data, kind, text.as_ptr().cast(), piece.len()) }
        };
        let result = stream.run(|event| match event.kind {
            EventKind::Content => send(ds_event_kind::DS_EVENT_CONTENT, &event.text),
            EventKind::Reasoning => send(ds_event_kind::DS_EVENT_REASONING, &event.text),
            // Whole calls are delivered below, from the final parse.
            EventKind::ToolCall => true,
        })?;
        for call in &result.tool_calls {
            // The reply has ended: what the callback returns changes nothing.
            send(
                ds_event_kind::DS_EVENT_TOOL_CALL,
                &call.to_json().to_string(),
            );
        }
        Ok(result)
    });
    s.len.store(cache.session.len(), Ordering::Release);
    let result = result?;
    if !out.is_null() {
        // SAFETY: non-NULL and writable by contract.
        unsafe { out.write(ds_generate_result::from_core(&result)) };
    }
    Ok(())
}

/// OpenAI's `tool_calls` list (`[{"id", "type": "function", "function": {"name",
/// "arguments"}}]`, as DS_EVENT_TOOL_CALL delivers them) as typed calls.
fn tool_calls(v: &Value, what: &str) -> Result<Vec<ToolCall>, Failure> {
    let shape =
        r#"[{"id": ..., "type": "function", "function": {"name": ..., "arguments": "..."}}]"#;
    let list = v
        .as_array()
        .ok_or_else(|| Failure::invalid(format!("{what} must be a JSON list like {shape}")))?;
    list.iter()
        .enumerate()
        .map(|(j, c)| {
            let bad = || Failure::invalid(format!("{what}[{j}] must look like {shape}"));
            let f = c.get("function").ok_or_else(bad)?;
            let name = f.get("name").and_then(Value::as_str).ok_or_else(bad)?;
            let arguments = match f.get("arguments") {
                Some(Value::String(a)) => a.clone(),
                Some(o @ Value::Object(_)) => o.to_string(),
                None => "{}".into(),
                Some(_) => return Err(bad()),
            };
            let id = c.get("id").and_then(Value::as_str).unwrap_or_default();
            Ok(ToolCall::new(id, name, arguments))
        })
        .collect()
}

/// Writes an empty result to `out` (if not NULL) so a failed call leaves no stale values.
///
/// # Safety
/// `out` is NULL or writable.
unsafe fn clear(out: *mut ds_generate_result) {
    if !out.is_null() {
        // SAFETY: non-NULL and writable by contract.
        unsafe { out.write(ds_generate_result::empty()) };
    }
}

/// Continues the raw UTF-8 `prompt` (NUL-terminated; BOS is added as ds_tokenize with
/// add_special does) on `session`, calling `cb` with each text delta; `params` and `cb` may be
/// NULL (defaults; no streaming), and `result`, if not NULL, receives the finish reason and
/// counts. The session's cache is reused: the tokens it shares as a prefix with the prompt are
/// not evaluated again, the rest of it is dropped. Afterwards it holds the prompt and every
/// generated token but the last. A prompt that ends inside an open <think> section streams
/// DS_EVENT_REASONING first. The session is held for the whole call (ds_session_len shows the
/// length before it); a request rejected before generating (bad params, a prompt longer than
/// the context: DS_ERR_CONTEXT_OVERFLOW) leaves the session unchanged.
/// DS_ERR_NO_TOKENIZER if the model has no tokenizer. params->abort_callback can stop it while
/// it evaluates the prompt or generates (DS_FINISH_CANCELLED).
#[no_mangle]
pub unsafe extern "C" fn ds_generate(
    session: *mut ds_session,
    prompt: *const c_char,
    params: *const ds_generate_params,
    cb: ds_event_cb,
    user_data: *mut c_void,
    result: *mut ds_generate_result,
) -> ds_status {
    guard("ds_generate", || {
        // SAFETY: NULL or writable by contract.
        unsafe { clear(result) };
        if session.is_null() {
            return Err(Failure::null("session"));
        }
        // SAFETY: NULL or a NUL-terminated string by contract.
        let prompt = unsafe { arg_str(prompt, "prompt") }?;
        // SAFETY: forwarded contract.
        unsafe {
            generate(
                session,
                params,
                cb,
                user_data,
                result,
                |gen, s, cached, p| gen.stream_on(s, cached, prompt, p),
            )
        }
    })
}

/// Answers a conversation: renders the `n_messages` messages with the model's chat template
/// (with the generation prompt; R1's opens <think>, so reasoning streams first) and generates
/// as ds_generate does. Pass the whole conversation each turn, earlier replies included: the
/// session's cache keeps what the new rendering shares with it, so only the new turn is
/// evaluated (ds_generate_result.cached_tokens says how much was reused). The template renders
/// on a budget (DS_ERR_TEMPLATE if it needs more); params->abort_callback can stop it while it
/// renders (DS_ERR_CANCELLED), evaluates the prompt or generates (DS_FINISH_CANCELLED).
#[no_mangle]
pub unsafe extern "C" fn ds_chat(
    session: *mut ds_session,
    messages: *const ds_message,
    n_messages: usize,
    params: *const ds_generate_params,
    cb: ds_event_cb,
    user_data: *mut c_void,
    result: *mut ds_generate_result,
) -> ds_status {
    guard("ds_chat", || {
        // SAFETY: NULL or writable by contract.
        unsafe { clear(result) };
        if session.is_null() {
            return Err(Failure::null("session"));
        }
        if messages.is_null() {
            return Err(Failure::null("messages"));
        }
        if n_messages == 0 {
            return Err(Failure::invalid("n_messages is 0"));
        }
        if n_messages > isize::MAX as usize / size_of::<ds_message>() {
            return Err(Failure::invalid(format!(
                "n_messages {n_messages} is too large"
            )));
        }
        // SAFETY: `messages` holds `n_messages` readable messages by contract.
        let raw = unsafe { std::slice::from_raw_parts(messages, n_messages) };
        let messages = raw
            .iter()
            .enumerate()
            .map(|(i, m)| {
                // SAFETY: each field NULL or a NUL-terminated string by contract.
                let role = unsafe { arg_str(m.role, &format!("messages[{i}].role")) }?;
                // SAFETY: as above.
                let content = unsafe { arg_str(m.content, &format!("messages[{i}].content")) }?;
                let mut message = Message::new(role, content);
                let what = format!("messages[{i}].tool_calls_json");
                // SAFETY: NULL or a NUL-terminated string by contract.
                if let Some(calls) = unsafe { json_arg(m.tool_calls_json, &what) }? {
                    message.tool_calls = tool_calls(&calls, &what)?;
                }
                if !m.tool_call_id.is_null() {
                    let what = format!("messages[{i}].tool_call_id");
                    // SAFETY: a NUL-terminated string by contract.
                    message.tool_call_id = Some(unsafe { arg_str(m.tool_call_id, &what) }?.into());
                }
                Ok(message)
            })
            .collect::<Result<Vec<_>, Failure>>()?;
        // SAFETY: forwarded contract.
        unsafe {
            generate(
                session,
                params,
                cb,
                user_data,
                result,
                |gen, s, cached, p| gen.chat_stream_on(s, cached, &messages, p),
            )
        }
    })
}
