//! Chat templates: a checkpoint's own Jinja `chat_template`, rendered with MiniJinja the way
//! transformers' `apply_chat_template` renders it (trim_blocks, lstrip_blocks, loop controls,
//! Python string methods, `raise_exception`), or DeepSeek-R1's when a checkpoint has none.
//! A template is code from a file: every render runs on a budget (MiniJinja fuel and an output
//! cap, both proportional to the conversation) and polls the caller's cancel check. Never sees
//! the model.

mod pyjson;

use std::collections::BTreeMap;
use std::io::Write;
use std::sync::Arc;

use minijinja::{Environment, Value};

use crate::error::{Error, Result};
use crate::tokenizer::Tokenizer;

/// DeepSeek-R1's published chat template (tokenizer_config.json of deepseek-ai/DeepSeek-R1): no
/// default system prompt, earlier turns lose everything up to `</think>`, and the generation
/// prompt ends with `<｜Assistant｜><think>\n`.
pub const DEEPSEEK_R1_TEMPLATE: &str = concat!(
    r#"{% if not add_generation_prompt is defined %}{% set add_generation_prompt = false %}"#,
    r#"{% endif %}"#,
    r#"{% set ns = namespace(is_first=false, is_tool=false, is_output_first=true, system_prompt='', is_first_sp=true) %}"#,
    r#"{%- for message in messages %}{%- if message['role'] == 'system' %}"#,
    r#"{%- if ns.is_first_sp %}"#,
    r#"{% set ns.system_prompt = ns.system_prompt + message['content'] %}"#,
    r#"{% set ns.is_first_sp = false %}{%- else %}"#,
    r#"{% set ns.system_prompt = ns.system_prompt + '\n\n' + message['content'] %}{%- endif %}"#,
    r#"{%- endif %}{%- endfor %}{{ bos_token }}{{ ns.system_prompt }}"#,
    r#"{%- for message in messages %}{%- if message['role'] == 'user' %}"#,
    r#"{%- set ns.is_tool = false -%}{{'<｜User｜>' + message['content']}}{%- endif %}"#,
    r#"{%- if message['role'] == 'assistant' and 'tool_calls' in message %}"#,
    r#"{%- set ns.is_tool = false -%}{%- for tool in message['tool_calls'] %}"#,
    r#"{%- if not ns.is_first %}"#,
    r#"{%- if message['content'] is none %}{{'<｜Assistant｜><｜tool▁calls▁begin｜><｜tool▁call▁begin｜>' + tool['type'] + '<｜tool▁sep｜>' + tool['function']['name'] + '\n' + '```json' + '\n' + tool['function']['arguments'] + '\n' + '```' + '<｜tool▁call▁end｜>'}}"#,
    r#"{%- else %}{{'<｜Assistant｜>' + message['content'] + '<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>' + tool['type'] + '<｜tool▁sep｜>' + tool['function']['name'] + '\n' + '```json' + '\n' + tool['function']['arguments'] + '\n' + '```' + '<｜tool▁call▁end｜>'}}"#,
    r#"{%- endif %}{%- set ns.is_first = true -%}"#,
    r#"{%- else %}{{'\n' + '<｜tool▁call▁begin｜>' + tool['type'] + '<｜tool▁sep｜>' + tool['function']['name'] + '\n' + '```json' + '\n' + tool['function']['arguments'] + '\n' + '```' + '<｜tool▁call▁end｜>'}}"#,
    r#"{%- endif %}{%- endfor %}{{'<｜tool▁calls▁end｜><｜end▁of▁sentence｜>'}}{%- endif %}"#,
    r#"{%- if message['role'] == 'assistant' and 'tool_calls' not in message %}"#,
    r#"{%- if ns.is_tool %}{{'<｜tool▁outputs▁end｜>' + message['content'] + '<｜end▁of▁sentence｜>'}}"#,
    r#"{%- set ns.is_tool = false -%}{%- else %}{% set content = message['content'] %}"#,
    r#"{% if '</think>' in content %}{% set content = content.split('</think>')[-1] %}"#,
    r#"{% endif %}{{'<｜Assistant｜>' + content + '<｜end▁of▁sentence｜>'}}{%- endif %}{%- endif %}"#,
    r#"{%- if message['role'] == 'tool' %}{%- set ns.is_tool = true -%}"#,
    r#"{%- if ns.is_output_first %}{{'<｜tool▁outputs▁begin｜><｜tool▁output▁begin｜>' + message['content'] + '<｜tool▁output▁end｜>'}}"#,
    r#"{%- set ns.is_output_first = false %}"#,
    r#"{%- else %}{{'<｜tool▁output▁begin｜>' + message['content'] + '<｜tool▁output▁end｜>'}}"#,
    r#"{%- endif %}{%- endif %}{%- endfor -%}{% if ns.is_tool %}{{'<｜tool▁outputs▁end｜>'}}"#,
    r#"{% endif %}{% if add_generation_prompt and not ns.is_tool %}{{'<｜Assistant｜><think>\n'}}"#,
    r#"{% endif %}"#,
);

/// A call of a function tool: OpenAI's `{"id", "type": "function", "function": {"name",
/// "arguments"}}`, as an assistant turn carries it and as the output parser returns it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ToolCall {
    /// The call's id (`call_...`); a tool result names it in `tool_call_id`. Empty: none.
    pub id: String,
    /// The function's name.
    pub name: String,
    /// The arguments as JSON text (OpenAI's form: a string holding a JSON object).
    pub arguments: String,
}

impl ToolCall {
    /// A call of `name` with `arguments` (JSON text) and `id`.
    pub fn new(
        id: impl Into<String>,
        name: impl Into<String>,
        arguments: impl Into<String>,
    ) -> Self {
        ToolCall {
            id: id.into(),
            name: name.into(),
            arguments: arguments.into(),
        }
    }

    /// The arguments parsed as JSON (`None` if they are not valid JSON).
    pub fn arguments_json(&self) -> Option<serde_json::Value> {
        serde_json::from_str(&self.arguments).ok()
    }

    /// OpenAI's form: `{"id", "type": "function", "function": {"name", "arguments"}}` (no
    /// `id` key when the id is empty).
    pub fn to_json(&self) -> serde_json::Value {
        let mut call = serde_json::Map::new();
        if !self.id.is_empty() {
            call.insert("id".into(), self.id.clone().into());
        }
        call.insert("type".into(), "function".into());
        let mut function = serde_json::Map::new();
        function.insert("name".into(), self.name.clone().into());
        function.insert("arguments".into(), self.arguments.clone().into());
        call.insert("function".into(), function.into());
        call.into()
    }

    fn to_value(&self) -> Value {
        let function = Value::from_pairs([
            ("name", Value::from(self.name.as_str())),
            ("arguments", Value::from(self.arguments.as_str())),
        ]);
        let mut pairs = Vec::with_capacity(3);
        if !self.id.is_empty() {
            pairs.push(("id", Value::from(self.id.as_str())));
        }
        pairs.push(("type", Value::from("function")));
        pairs.push(("function", function));
        Value::from_pairs(pairs)
    }
}

/// One turn of a conversation.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Message {
    /// `system`, `user`, `assistant` or `tool`.
    pub role: String,
    /// The text of the turn (for an assistant turn, may include a `<think>` block). An
    /// assistant turn that only calls tools has empty content (OpenAI's `null`; see
    /// [`ChatTemplate::render_with`]).
    pub content: String,
    /// An assistant turn's reasoning, passed to templates that use it (R1's ignores it).
    pub reasoning_content: Option<String>,
    /// The tools an assistant turn calls (rendered by the template as `tool_calls`).
    pub tool_calls: Vec<ToolCall>,
    /// For a `tool` turn: the id of the call it answers.
    pub tool_call_id: Option<String>,
    /// An optional name of the speaker (OpenAI's `name`; for a `tool` turn, the function).
    pub name: Option<String>,
}

impl Message {
    /// A message with `role` and `content`.
    pub fn new(role: impl Into<String>, content: impl Into<String>) -> Self {
        Message {
            role: role.into(),
            content: content.into(),
            ..Default::default()
        }
    }

    /// A system message.
    pub fn system(content: impl Into<String>) -> Self {
        Self::new("system", content)
    }

    /// A user message.
    pub fn user(content: impl Into<String>) -> Self {
        Self::new("user", content)
    }

    /// An assistant message.
    pub fn assistant(content: impl Into<String>) -> Self {
        Self::new("assistant", content)
    }

    /// An assistant turn calling tools (`content` may be empty).
    pub fn assistant_tool_calls(content: impl Into<String>, calls: Vec<ToolCall>) -> Self {
        Message {
            tool_calls: calls,
            ..Self::new("assistant", content)
        }
    }

    /// A tool's result, answering the call with id `tool_call_id`.
    pub fn tool(tool_call_id: impl Into<String>, content: impl Into<String>) -> Self {
        Message {
            tool_call_id: Some(tool_call_id.into()),
            ..Self::new("tool", content)
        }
    }

    /// Bytes of text the message brings to a render (for its budget).
    fn input_bytes(&self) -> usize {
        let calls: usize = self
            .tool_calls
            .iter()
            .map(|c| c.id.len() + c.name.len() + c.arguments.len())
            .fold(0, usize::saturating_add);
        [
            self.role.len(),
            self.content.len(),
            self.reasoning_content.as_ref().map_or(0, String::len),
            self.tool_call_id.as_ref().map_or(0, String::len),
            self.name.as_ref().map_or(0, String::len),
            calls,
        ]
        .into_iter()
        .fold(0, usize::saturating_add)
    }

    /// The message as transformers hands it to a template: keys in the order a Python dict
    /// built from OpenAI's fields has them, unset fields absent (templates test `'key' in
    /// message`), and reasoning also under `thinking`, as transformers 5 aliases it.
    fn to_value(&self) -> Value {
        let mut pairs: Vec<(&str, Value)> = Vec::with_capacity(7);
        if let Some(r) = &self.reasoning_content {
            pairs.push(("thinking", Value::from(r.as_str())));
        }
        pairs.push(("role", Value::from(self.role.as_str())));
        pairs.push(("content", Value::from(self.content.as_str())));
        if let Some(r) = &self.reasoning_content {
            pairs.push(("reasoning_content", Value::from(r.as_str())));
        }
        if !self.tool_calls.is_empty() {
            let calls: Vec<Value> = self.tool_calls.iter().map(ToolCall::to_value).collect();
            pairs.push(("tool_calls", Value::from(calls)));
        }
        if let Some(id) = &self.tool_call_id {
            pairs.push(("tool_call_id", Value::from(id.as_str())));
        }
        if let Some(name) = &self.name {
            pairs.push(("name", Value::from(name.as_str())));
        }
        Value::from_pairs(pairs)
    }
}

/// What a render passes to the template besides the messages: the `tools` list and extra
/// variables (`chat_template_kwargs`, e.g. V3.1's `thinking`), as transformers'
/// `apply_chat_template(messages, tools=..., **kwargs)` does.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TemplateOptions {
    /// OpenAI `tools` entries (`{"type": "function", "function": {"name", "description",
    /// "parameters"}}`), passed as they are; `None` renders `tools` as `none`, as
    /// transformers does when no tools are given.
    pub tools: Option<Vec<serde_json::Value>>,
    /// Extra template variables; they may override the special-token strings (`bos_token`)
    /// but not `messages`, `tools`, `documents` or `add_generation_prompt`.
    pub kwargs: serde_json::Map<String, serde_json::Value>,
}

/// Template variables [`TemplateOptions::kwargs`] may not set (transformers passes them itself).
const RESERVED_KWARGS: [&str; 4] = ["messages", "tools", "documents", "add_generation_prompt"];

impl TemplateOptions {
    /// Checks that no keyword argument takes a name the render sets itself.
    pub fn validate(&self) -> Result<()> {
        if let Some(k) = self
            .kwargs
            .keys()
            .find(|k| RESERVED_KWARGS.contains(&k.as_str()))
        {
            return Err(Error::InvalidParameter {
                name: "chat_template_kwargs".into(),
                message: format!("{k:?} is set by the render itself"),
            });
        }
        Ok(())
    }

    fn input_bytes(&self) -> usize {
        let json = |v: &serde_json::Value| v.to_string().len();
        let tools: usize = self.tools.iter().flatten().map(json).sum();
        let kwargs: usize = self.kwargs.iter().map(|(k, v)| k.len() + json(v)).sum();
        tools.saturating_add(kwargs)
    }
}

/// A JSON value as the template sees it: maps keep their key order (Python dicts do).
pub(crate) fn json_to_value(v: &serde_json::Value) -> Value {
    match v {
        serde_json::Value::Null => Value::from(()),
        serde_json::Value::Bool(b) => Value::from(*b),
        serde_json::Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                Value::from(i)
            } else if let Some(u) = n.as_u64() {
                Value::from(u)
            } else {
                Value::from(n.as_f64().unwrap_or(f64::NAN))
            }
        }
        serde_json::Value::String(s) => Value::from(s.as_str()),
        serde_json::Value::Array(a) => Value::from(a.iter().map(json_to_value).collect::<Vec<_>>()),
        serde_json::Value::Object(o) => Value::from_pairs(
            o.iter()
                .map(|(k, v)| (k.as_str(), json_to_value(v)))
                .collect::<Vec<_>>(),
        ),
    }
}

/// A compiled chat template plus the special-token strings it is rendered with.
#[derive(Clone)]
pub struct ChatTemplate {
    env: Arc<Environment<'static>>,
    source: Arc<str>,
    special_tokens: Vec<(&'static str, String)>,
}

impl std::fmt::Debug for ChatTemplate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChatTemplate")
            .field("source_len", &self.source.len())
            .field("special_tokens", &self.special_tokens)
            .finish()
    }
}

const NAME: &str = "chat_template";

/// Fuel every render may spend whatever the conversation (one fuel is one instruction or 64
/// bytes of data created). R1's template spends about 60 per message, so this is ample for
/// any real template on a short conversation, while a hostile loop stops after ~40 ms and
/// ~64 MB of strings.
pub const RENDER_FUEL_BASE: u64 = 1_000_000;
/// Extra fuel per message (R1's template: ~60; every template in the fixtures: <= 80).
pub const RENDER_FUEL_PER_MESSAGE: u64 = 500;
/// Input bytes (message text and special tokens) that buy one more fuel: a template may copy
/// its input about 16 times over.
pub const RENDER_INPUT_BYTES_PER_FUEL: u64 = 4;
/// Output every render may write whatever the conversation.
pub const RENDER_OUTPUT_BASE: usize = 1 << 20;
/// Extra output per message (R1's template adds ~40 bytes of markup per message).
pub const RENDER_OUTPUT_PER_MESSAGE: usize = 1024;
/// Extra output per input byte.
pub const RENDER_OUTPUT_PER_INPUT_BYTE: usize = 4;
/// Output writes between two polls of the cancel check.
const WRITES_PER_CANCEL_POLL: u32 = 64;

/// What one render may spend: fuel and output bytes, both a fixed base plus a share per
/// message and per input byte, so the limits are deterministic and grow with the
/// conversation, never with the template.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RenderBudget {
    /// MiniJinja fuel.
    pub fuel: u64,
    /// Bytes of rendered text.
    pub output: usize,
}

impl RenderBudget {
    fn for_input(messages: usize, input_bytes: usize) -> Self {
        let (m, b) = (messages as u64, input_bytes as u64);
        RenderBudget {
            fuel: RENDER_FUEL_BASE
                .saturating_add(m.saturating_mul(RENDER_FUEL_PER_MESSAGE))
                .saturating_add(b / RENDER_INPUT_BYTES_PER_FUEL),
            output: RENDER_OUTPUT_BASE
                .saturating_add(messages.saturating_mul(RENDER_OUTPUT_PER_MESSAGE))
                .saturating_add(input_bytes.saturating_mul(RENDER_OUTPUT_PER_INPUT_BYTE)),
        }
    }
}

/// Why a render stopped early, as noted by [`CappedOutput`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stop {
    TooLong,
    Cancelled,
}

/// The render's output: refuses to grow past `limit` and polls `cancel` every few writes,
/// failing the write (and so the render) with the reason noted in `stop`.
struct CappedOutput<'a> {
    text: Vec<u8>,
    limit: usize,
    writes: u32,
    cancel: &'a dyn Fn() -> bool,
    stop: Option<Stop>,
}

impl Write for CappedOutput<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.writes = self.writes.wrapping_add(1);
        if self.writes.is_multiple_of(WRITES_PER_CANCEL_POLL) && (self.cancel)() {
            self.stop = Some(Stop::Cancelled);
            return Err(std::io::Error::other("cancelled"));
        }
        if buf.len() > self.limit - self.text.len() {
            self.stop = Some(Stop::TooLong);
            return Err(std::io::Error::other("output limit"));
        }
        self.text.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl ChatTemplate {
    /// Compiles `source`; syntax errors are reported here, not at render time.
    pub fn new(source: &str) -> Result<Self> {
        let mut env = Environment::new();
        // transformers: jinja2 ImmutableSandboxedEnvironment(trim_blocks=True,
        // lstrip_blocks=True, extensions=[loopcontrols]) + raise_exception.
        env.set_syntax(
            minijinja::syntax::SyntaxConfig::builder()
                .trim_blocks(true)
                .lstrip_blocks(true)
                .build()
                .map_err(|e| Error::Template(e.to_string()))?,
        );
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function(
            "raise_exception",
            |msg: String| -> std::result::Result<Value, minijinja::Error> {
                Err(minijinja::Error::new(
                    minijinja::ErrorKind::InvalidOperation,
                    msg,
                ))
            },
        );
        // transformers replaces Jinja's HTML-escaping tojson with json.dumps.
        env.add_filter("tojson", pyjson::tojson);
        env.add_template_owned(NAME, source.to_string())
            .map_err(|e| Error::Template(describe(&e)))?;
        Ok(ChatTemplate {
            env: Arc::new(env),
            source: source.into(),
            special_tokens: Vec::new(),
        })
    }

    /// DeepSeek-R1's template with R1's BOS/EOS strings.
    pub fn deepseek_r1() -> Self {
        let mut t = Self::new(DEEPSEEK_R1_TEMPLATE).expect("the built-in template compiles");
        t.special_tokens = vec![
            ("bos_token", "<｜begin▁of▁sentence｜>".to_string()),
            ("eos_token", "<｜end▁of▁sentence｜>".to_string()),
        ];
        t
    }

    /// The tokenizer's own template (or R1's if it has none), rendered with its special tokens.
    pub fn for_tokenizer(tokenizer: &Tokenizer) -> Result<Self> {
        let mut t = match tokenizer.chat_template() {
            Some(source) => Self::new(source)?,
            None => Self::deepseek_r1(),
        };
        let names = ["bos_token", "eos_token", "pad_token", "unk_token"];
        let found: Vec<_> = names
            .into_iter()
            .filter_map(|n| tokenizer.special_token(n).map(|s| (n, s.to_string())))
            .collect();
        if !found.is_empty() {
            t.special_tokens = found;
        }
        Ok(t)
    }

    /// Sets the string a special-token variable (`bos_token`, `eos_token`, ...) renders as.
    pub fn with_special_token(mut self, name: &'static str, text: impl Into<String>) -> Self {
        self.special_tokens.retain(|(n, _)| *n != name);
        self.special_tokens.push((name, text.into()));
        self
    }

    /// The Jinja source.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// Renders `messages`; with `add_generation_prompt` the text ends where the assistant's
    /// reply begins. An empty conversation is an error, as in transformers. The render runs on
    /// [`budget`](Self::budget): a template that needs more fails with [`Error::Template`].
    pub fn render(&self, messages: &[Message], add_generation_prompt: bool) -> Result<String> {
        self.render_cancellable(messages, add_generation_prompt, &|| false)
    }

    /// [`render`](Self::render), polling `cancel` before it starts and every few pieces of
    /// output; when it returns true the render stops with [`Error::Cancelled`]. A template
    /// that loops without writing is not polled: its fuel budget bounds it instead.
    pub fn render_cancellable(
        &self,
        messages: &[Message],
        add_generation_prompt: bool,
        cancel: &dyn Fn() -> bool,
    ) -> Result<String> {
        self.render_with(
            messages,
            add_generation_prompt,
            &TemplateOptions::default(),
            cancel,
        )
    }

    /// [`render_cancellable`](Self::render_cancellable) with tools and extra template
    /// variables, as transformers' `apply_chat_template(messages, tools=tools, **kwargs)`.
    /// The template sees what transformers gives it: `messages` (OpenAI's keys; an assistant
    /// turn's `tool_calls` with `arguments` as JSON text), `tools` (`none` when not given),
    /// `documents` (`none`), `add_generation_prompt`, the special-token strings and the
    /// kwargs. An assistant turn with tool calls and no text gets `content` `""` where OpenAI
    /// sends `null`: DeepSeek's templates render both alike (transformers 4), while
    /// transformers 5 drops null keys and then fails on them.
    pub fn render_with(
        &self,
        messages: &[Message],
        add_generation_prompt: bool,
        options: &TemplateOptions,
        cancel: &dyn Fn() -> bool,
    ) -> Result<String> {
        if messages.is_empty() {
            return Err(Error::InvalidArgument(
                "cannot apply a chat template to an empty conversation".into(),
            ));
        }
        options.validate()?;
        if cancel() {
            return Err(Error::Cancelled);
        }
        let budget = self.budget_with(messages, options);
        let mut ctx: BTreeMap<String, Value> = BTreeMap::new();
        ctx.insert(
            "messages".into(),
            Value::from(messages.iter().map(Message::to_value).collect::<Vec<_>>()),
        );
        ctx.insert(
            "add_generation_prompt".into(),
            Value::from(add_generation_prompt),
        );
        let tools = options.tools.as_ref().map_or(Value::from(()), |t| {
            Value::from(t.iter().map(json_to_value).collect::<Vec<_>>())
        });
        ctx.insert("tools".into(), tools);
        ctx.insert("documents".into(), Value::from(()));
        for (name, text) in &self.special_tokens {
            ctx.insert(name.to_string(), Value::from(text.as_str()));
        }
        for (name, value) in &options.kwargs {
            ctx.insert(name.clone(), json_to_value(value));
        }
        // The fuel is per render, so each render gets its own (cheap, shared-state) copy of
        // the environment.
        let mut env = (*self.env).clone();
        env.set_fuel(Some(budget.fuel));
        let template = env
            .get_template(NAME)
            .map_err(|e| Error::Template(describe(&e)))?;
        let mut out = CappedOutput {
            text: Vec::new(),
            limit: budget.output,
            writes: 0,
            cancel,
            stop: None,
        };
        let rendered = template.render_captured_to(Value::from(ctx), &mut out);
        match (rendered, out.stop) {
            (Ok(_), _) => {}
            (Err(_), Some(Stop::Cancelled)) => return Err(Error::Cancelled),
            (Err(_), Some(Stop::TooLong)) => {
                return Err(Error::Template(format!(
                    "the rendered prompt exceeds its limit of {} bytes for {} messages \
                     (the template writes far more than the conversation holds)",
                    budget.output,
                    messages.len()
                )))
            }
            (Err(e), None) if e.kind() == minijinja::ErrorKind::OutOfFuel => {
                return Err(Error::Template(format!(
                    "rendering used up its budget of {} fuel for {} messages (the template \
                     runs too long or builds too much data for this conversation)",
                    budget.fuel,
                    messages.len()
                )))
            }
            (Err(e), None) => return Err(Error::Template(describe(&e))),
        }
        String::from_utf8(out.text)
            .map_err(|e| Error::Template(format!("rendered text is not UTF-8: {e}")))
    }

    /// The fuel and output a render of `messages` may use (see [`RenderBudget`]).
    pub fn budget(&self, messages: &[Message]) -> RenderBudget {
        self.budget_with(messages, &TemplateOptions::default())
    }

    /// The fuel and output a render of `messages` with `options` may use: tools and kwargs
    /// count as input bytes.
    pub fn budget_with(&self, messages: &[Message], options: &TemplateOptions) -> RenderBudget {
        let message_bytes: usize = messages
            .iter()
            .map(Message::input_bytes)
            .fold(0, usize::saturating_add);
        let special_bytes: usize = self.special_tokens.iter().map(|(_, t)| t.len()).sum();
        let input = message_bytes
            .saturating_add(special_bytes)
            .saturating_add(options.input_bytes());
        RenderBudget::for_input(messages.len(), input)
    }
}

/// The error with its cause chain on one line.
fn describe(e: &minijinja::Error) -> String {
    let mut s = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        s.push_str(": ");
        s.push_str(&cause.to_string());
        source = cause.source();
    }
    s
}
