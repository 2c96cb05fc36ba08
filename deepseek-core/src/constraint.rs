//! Structured output: what the answer must look like ([`ResponseFormat`]: JSON, a JSON
//! schema, a regex or a Lark grammar; [`ToolChoice`] forcing DeepSeek's tool-call markup) and
//! the per-token mask that enforces it, computed by llguidance (the engine llama.cpp and vLLM
//! use) over a token trie built from our own [`Tokenizer`]. Never sees the model.

use std::sync::Arc;

use llguidance::api::TopLevelGrammar;
use llguidance::toktrie::{SimpleVob, TokEnv, TokRxInfo, TokTrie, TokenizerEnv};
use llguidance::{Matcher, ParserFactory};
use serde_json::Value;

use crate::error::{Error, Result};
use crate::tokenizer::Tokenizer;

/// What the answer (the text after the reasoning) must be, as OpenAI's `response_format`
/// plus regexes and Lark grammars.
#[derive(Debug, Clone, PartialEq, Default)]
pub enum ResponseFormat {
    /// Free text.
    #[default]
    Text,
    /// Any JSON object (`{"type": "json_object"}`).
    JsonObject,
    /// JSON valid against this schema (`{"type": "json_schema", "json_schema": {"schema": ...}}`).
    JsonSchema(Value),
    /// Text matching this regular expression (Rust regex syntax, anchored at both ends).
    Regex(String),
    /// Text in this grammar (llguidance's Lark syntax; may embed `%json {...}`).
    Lark(String),
}

/// `schema` with llguidance's layout options set unless it sets its own (`x-guidance`): JSON
/// in Python's `json.dumps` layout (`, ` and `: `, no other whitespace between tokens), as
/// DeepSeek's templates render arguments. Free whitespace would let a model pad forever.
fn with_layout(schema: &Value) -> Value {
    let mut s = schema.clone();
    if let Some(obj) = s.as_object_mut() {
        obj.entry("x-guidance").or_insert_with(|| {
            serde_json::json!({
                "whitespace_flexible": false,
                "item_separator": ", ",
                "key_separator": ": "
            })
        });
    }
    s
}

fn bad_format(message: impl Into<String>) -> Error {
    Error::InvalidParameter {
        name: "response_format".into(),
        message: message.into(),
    }
}

impl ResponseFormat {
    /// Reads OpenAI's `response_format` object: `{"type": "text"}`, `{"type": "json_object"}`,
    /// `{"type": "json_schema", "json_schema": {"name": ..., "schema": {...}}}` (a bare
    /// `"schema"` is accepted too), and the extensions `{"type": "regex", "regex": "..."}`
    /// and `{"type": "lark", "grammar": "..."}` (alias `"grammar"`).
    pub fn from_json(v: &Value) -> Result<Self> {
        let ty = v
            .get("type")
            .and_then(Value::as_str)
            .ok_or_else(|| bad_format("must be an object with a string \"type\""))?;
        let text = |key: &str| -> Result<String> {
            v.get(key)
                .and_then(Value::as_str)
                .map(str::to_string)
                .ok_or_else(|| bad_format(format!("type {ty:?} needs a string {key:?}")))
        };
        match ty {
            "text" => Ok(ResponseFormat::Text),
            "json_object" => Ok(ResponseFormat::JsonObject),
            "json_schema" => {
                let schema = v
                    .get("json_schema")
                    .and_then(|j| j.get("schema"))
                    .or_else(|| v.get("schema"))
                    .ok_or_else(|| {
                        bad_format("json_schema needs {\"json_schema\": {\"schema\": {...}}}")
                    })?;
                if !(schema.is_object() || schema.is_boolean()) {
                    return Err(bad_format("the schema must be a JSON object"));
                }
                Ok(ResponseFormat::JsonSchema(schema.clone()))
            }
            "regex" => Ok(ResponseFormat::Regex(
                text("regex").or_else(|_| text("pattern"))?,
            )),
            "lark" | "grammar" => Ok(ResponseFormat::Lark(text("grammar")?)),
            other => Err(bad_format(format!(
                "unknown type {other:?} (text, json_object, json_schema, regex, lark)"
            ))),
        }
    }

    /// Whether the answer is free.
    pub fn is_text(&self) -> bool {
        *self == ResponseFormat::Text
    }

    /// The answer's grammar as a Lark rule body (`None` for free text).
    fn lark_body(&self) -> Option<String> {
        match self {
            ResponseFormat::Text => None,
            ResponseFormat::JsonObject => Some(format!(
                "%json {}",
                with_layout(&serde_json::json!({"type": "object"}))
            )),
            ResponseFormat::JsonSchema(s) => Some(format!("%json {}", with_layout(s))),
            // A regex is one terminal; a Lark grammar brings its own rules.
            ResponseFormat::Regex(_) | ResponseFormat::Lark(_) => None,
        }
    }

    fn grammar(&self) -> Option<TopLevelGrammar> {
        match self {
            ResponseFormat::Text => None,
            ResponseFormat::JsonObject => Some(TopLevelGrammar::from_json_schema(with_layout(
                &serde_json::json!({"type": "object"}),
            ))),
            ResponseFormat::JsonSchema(s) => {
                Some(TopLevelGrammar::from_json_schema(with_layout(s)))
            }
            ResponseFormat::Regex(r) => Some(TopLevelGrammar::from_regex(r)),
            ResponseFormat::Lark(g) => Some(TopLevelGrammar::from_lark(g.clone())),
        }
    }
}

/// Whether the model may, must or must not call tools (OpenAI's `tool_choice`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum ToolChoice {
    /// The model decides (the default when tools are given).
    #[default]
    Auto,
    /// No tool calls: the markers that open them are banned.
    None,
    /// At least one tool call, forced by a grammar of the template's tool-call markup.
    Required,
    /// A call of this function, forced likewise.
    Function(String),
}

impl ToolChoice {
    /// Reads OpenAI's `tool_choice`: `"auto"`, `"none"`, `"required"` or
    /// `{"type": "function", "function": {"name": ...}}`.
    pub fn from_json(v: &Value) -> Result<Self> {
        let bad = |m: &str| Error::InvalidParameter {
            name: "tool_choice".into(),
            message: m.into(),
        };
        match v {
            Value::String(s) => match s.as_str() {
                "auto" => Ok(ToolChoice::Auto),
                "none" => Ok(ToolChoice::None),
                "required" => Ok(ToolChoice::Required),
                _ => Err(bad("must be \"auto\", \"none\", \"required\" or a function")),
            },
            Value::Object(_) => v
                .get("function")
                .and_then(|f| f.get("name"))
                .and_then(Value::as_str)
                .map(|n| ToolChoice::Function(n.to_string()))
                .ok_or_else(|| bad("a function choice is {\"type\": \"function\", \"function\": {\"name\": ...}}")),
            _ => Err(bad("must be a string or an object")),
        }
    }
}

/// Which tool-call markup a checkpoint's template uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ToolCallFormat {
    /// R1, R1-0528, V3-0324: `function<｜tool▁sep｜>NAME\n```json\nARGS\n```.
    R1,
    /// V3.1: `NAME<｜tool▁sep｜>ARGS`.
    V31,
}

impl ToolCallFormat {
    /// The format a template writes tool calls in (R1's unless it writes them V3.1's way).
    pub fn detect(template_source: &str) -> Self {
        let v31 = template_source.contains("'<｜tool▁call▁begin｜>'+ tool['function']['name']")
            || template_source.contains("'<｜tool▁call▁begin｜>' + tool['function']['name']")
            || (template_source.contains("<｜tool▁sep｜>") && !template_source.contains("```json"));
        if v31 {
            ToolCallFormat::V31
        } else {
            ToolCallFormat::R1
        }
    }
}

/// The tool-call markers as Lark terminals: the token that writes each (`<[id]>`), or, for a
/// vocabulary without it (a small byte-level one such as r1-nano's), its text spelled out.
struct Markers {
    calls_begin: String,
    calls_end: String,
    call_begin: String,
    call_end: String,
    sep: String,
}

impl Markers {
    fn of(tokenizer: &Tokenizer) -> Self {
        let m = |t: &str| match tokenizer.token_to_id(t) {
            Some(id) => format!("<[{id}]>"),
            None => lark_str(t),
        };
        Markers {
            calls_begin: m("<｜tool▁calls▁begin｜>"),
            calls_end: m("<｜tool▁calls▁end｜>"),
            call_begin: m("<｜tool▁call▁begin｜>"),
            call_end: m("<｜tool▁call▁end｜>"),
            sep: m("<｜tool▁sep｜>"),
        }
    }
}

/// A Lark string literal.
fn lark_str(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// The Lark grammar of one or more calls of `tools` (OpenAI tool objects) in `format`, each
/// call's arguments valid against its function's `parameters` schema; with `answer`, a
/// non-call answer of that grammar body is allowed instead.
pub fn tool_call_grammar(
    tokenizer: &Tokenizer,
    format: ToolCallFormat,
    tools: &[Value],
    only: Option<&str>,
    answer: Option<&ResponseFormat>,
) -> Result<String> {
    let m = Markers::of(tokenizer);
    let mut alternatives = Vec::new();
    for tool in tools {
        let f = tool.get("function").unwrap_or(tool);
        let Some(name) = f.get("name").and_then(Value::as_str) else {
            return Err(Error::InvalidParameter {
                name: "tools".into(),
                message: "every tool needs {\"function\": {\"name\": ...}}".into(),
            });
        };
        if only.is_some_and(|o| o != name) {
            continue;
        }
        let schema = with_layout(
            f.get("parameters")
                .unwrap_or(&serde_json::json!({"type": "object"})),
        );
        let call = match format {
            ToolCallFormat::R1 => format!(
                "{} \"function\" {} {} %json {} \"\\n```\" {}",
                m.call_begin,
                m.sep,
                lark_str(&format!("{name}\n```json\n")),
                schema,
                m.call_end
            ),
            ToolCallFormat::V31 => format!(
                "{} {} {} %json {} {}",
                m.call_begin,
                lark_str(name),
                m.sep,
                schema,
                m.call_end
            ),
        };
        alternatives.push(call);
    }
    if alternatives.is_empty() {
        return Err(Error::InvalidParameter {
            name: "tool_choice".into(),
            message: match only {
                Some(o) => format!("no tool named {o:?} among the tools"),
                None => "tool calls were required but no tools were given".into(),
            },
        });
    }
    let joiner = match format {
        ToolCallFormat::R1 => "\"\\n\" ",
        ToolCallFormat::V31 => "",
    };
    let more = if only.is_some() {
        String::new()
    } else {
        format!("({joiner}call)*")
    };
    let mut g = format!(
        "calls: {} call {more} {}\ncall: {}\n",
        m.calls_begin,
        m.calls_end,
        alternatives.join("\n    | ")
    );
    match answer.and_then(|a| a.lark_body().or_else(|| a.grammar().map(|_| String::new()))) {
        Some(body) if !body.is_empty() => g = format!("start: calls | answer\nanswer: {body}\n{g}"),
        Some(_) => {
            return Err(Error::InvalidParameter {
                name: "response_format".into(),
                message: "regex and Lark formats cannot be combined with forced tool calls".into(),
            })
        }
        None => g = format!("start: calls\n{g}"),
    }
    Ok(g)
}

/// llguidance's view of our tokenizer: the bytes of every token in a trie. Added tokens that
/// are special or markup (`<think>`, `<｜tool▁sep｜>`) are marked so a grammar reaches them
/// only by id, never by spelling them out.
struct TokenizerView {
    trie: TokTrie,
    tokenizer: Tokenizer,
}

impl TokenizerEnv for TokenizerView {
    fn tok_trie(&self) -> &TokTrie {
        &self.trie
    }

    fn tokenize_bytes(&self, s: &[u8]) -> Vec<u32> {
        self.trie.tokenize_with_greedy_fallback(s, |s| {
            self.tokenizer.encode(s, false).unwrap_or_default()
        })
    }
}

/// Compiles grammars for one tokenizer. Built once per [`Generator`](crate::Generator) (a
/// trie of the vocabulary; about a second for R1's 128k tokens) and shared.
pub struct GrammarCompiler {
    factory: ParserFactory,
    tokenizer: Tokenizer,
    /// Per id: 1 if the token is only whitespace (allowed before an answer starts).
    whitespace: Vec<bool>,
    vocab: usize,
    eos: Vec<u32>,
    trie_eos: u32,
}

impl std::fmt::Debug for GrammarCompiler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GrammarCompiler")
            .field("vocab", &self.vocab)
            .finish()
    }
}

impl GrammarCompiler {
    /// The compiler for `tokenizer`, whose generation ends on any of `eos`.
    pub fn new(tokenizer: &Tokenizer, eos: &[u32]) -> Result<Self> {
        let vocab = tokenizer.vocab_size();
        let Some(&first_eos) = eos.first() else {
            return Err(Error::InvalidArgument(
                "structured output needs an end-of-sequence token".into(),
            ));
        };
        if tokenizer.token_bytes(first_eos).is_none()
            && vocab > 0
            && tokenizer.token_bytes(0).is_none()
        {
            return Err(Error::InvalidArgument(
                "structured output needs a byte-level BPE tokenizer".into(),
            ));
        }
        let mut words: Vec<Vec<u8>> = (0..vocab as u32)
            .map(|id| {
                tokenizer
                    .token_bytes(id)
                    .map(<[u8]>::to_vec)
                    .unwrap_or_default()
            })
            .collect();
        for (id, text, special) in tokenizer.added_tokens() {
            let markup = text.starts_with('<') && text.ends_with('>') && text.len() > 2;
            if let Some(w) = words.get_mut(id as usize) {
                if special || markup {
                    let mut b = vec![TokTrie::SPECIAL_TOKEN_MARKER];
                    b.extend_from_slice(text.as_bytes());
                    *w = b;
                }
            }
        }
        for &e in eos {
            // EOS ids are special whatever the tokenizer says: a grammar never spells them.
            if let Some(w) = words.get_mut(e as usize) {
                if w.first() != Some(&TokTrie::SPECIAL_TOKEN_MARKER) {
                    w.insert(0, TokTrie::SPECIAL_TOKEN_MARKER);
                }
            }
        }
        let whitespace = words
            .iter()
            .map(|w| !w.is_empty() && w.iter().all(|b| matches!(b, b' ' | b'\n' | b'\t' | b'\r')))
            .collect();
        let trie = TokTrie::from(&TokRxInfo::new(vocab as u32, first_eos), &words);
        let env: TokEnv = Arc::new(TokenizerView {
            trie,
            tokenizer: tokenizer.clone(),
        });
        let mut factory =
            ParserFactory::new_simple(&env).map_err(|e| Error::InvalidArgument(e.to_string()))?;
        factory.quiet();
        Ok(GrammarCompiler {
            factory,
            tokenizer: tokenizer.clone(),
            whitespace,
            vocab,
            eos: eos.to_vec(),
            trie_eos: first_eos,
        })
    }

    /// The tokenizer it compiles for.
    pub fn tokenizer(&self) -> &Tokenizer {
        &self.tokenizer
    }

    /// A constraint enforcing `format` (`None` for free text).
    pub fn response_format(&self, format: &ResponseFormat) -> Result<Option<Constraint>> {
        match format.grammar() {
            None => Ok(None),
            Some(g) => self.compile(g).map(Some),
        }
    }

    /// A constraint enforcing a Lark grammar (e.g. from [`tool_call_grammar`]).
    pub fn lark(&self, grammar: &str) -> Result<Constraint> {
        self.compile(TopLevelGrammar::from_lark(grammar.to_string()))
    }

    fn compile(&self, grammar: TopLevelGrammar) -> Result<Constraint> {
        let parser = self
            .factory
            .create_parser(grammar)
            .map_err(|e| bad_format(format!("the grammar does not compile: {e}")))?;
        let matcher = Matcher::new(Ok(parser));
        if let Some(e) = matcher.get_error() {
            return Err(bad_format(format!("the grammar does not compile: {e}")));
        }
        Ok(Constraint {
            matcher,
            mask: None,
            whitespace: self.whitespace.clone(),
            vocab: self.vocab,
            eos: self.eos.clone(),
            trie_eos: self.trie_eos,
            consumed: 0,
        })
    }
}

/// One request's grammar state: masks the logits of every token the grammar does not allow
/// next and advances on the token chosen.
pub struct Constraint {
    matcher: Matcher,
    mask: Option<SimpleVob>,
    whitespace: Vec<bool>,
    vocab: usize,
    eos: Vec<u32>,
    trie_eos: u32,
    consumed: usize,
}

impl std::fmt::Debug for Constraint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Constraint")
            .field("consumed", &self.consumed)
            .finish()
    }
}

impl Constraint {
    fn failed(&self, what: &str) -> Error {
        Error::InvalidArgument(format!(
            "structured output: {what}: {}",
            self.matcher
                .get_error()
                .unwrap_or_else(|| "no token is allowed".into())
        ))
    }

    /// Sets the logit of every token the grammar does not allow next to `-inf`, except the
    /// `extra` ones (e.g. `<think>` before an answer starts) and, while `leading_whitespace`,
    /// whitespace-only tokens. When the grammar is complete, EOS ids are what it allows.
    pub fn apply(
        &mut self,
        logits: &mut [f32],
        extra: &[u32],
        leading_whitespace: bool,
    ) -> Result<()> {
        if logits.len() != self.vocab {
            return Err(Error::InvalidArgument(format!(
                "constraint over {} tokens given {} logits",
                self.vocab,
                logits.len()
            )));
        }
        // A finished grammar (e.g. `{}` for `{"type": "object"}`) stops the parser; what it
        // allows then is the end, not an error.
        let mask = self
            .matcher
            .compute_mask_or_eos()
            .map_err(|_| self.failed("no continuation"))?;
        let eos_ok = mask.is_allowed(self.trie_eos);
        for (id, l) in logits.iter_mut().enumerate() {
            let id32 = id as u32;
            if mask.is_allowed(id32)
                || (leading_whitespace && self.whitespace[id])
                || (eos_ok && self.eos.contains(&id32))
                || extra.contains(&id32)
            {
                continue;
            }
            *l = f32::NEG_INFINITY;
        }
        self.mask = Some(mask);
        Ok(())
    }

    /// Whether the last mask allowed `id` (EOS included when the grammar is complete).
    pub fn allows(&self, id: u32) -> bool {
        self.mask.as_ref().is_some_and(|m| {
            m.is_allowed(id) || (m.is_allowed(self.trie_eos) && self.eos.contains(&id))
        })
    }

    /// Advances the grammar over `id` (which it must allow).
    pub fn commit(&mut self, id: u32) -> Result<()> {
        if self.matcher.is_stopped() && self.eos.contains(&id) && self.matcher.get_error().is_none()
        {
            self.consumed += 1;
            return Ok(());
        }
        let id = if self.eos.contains(&id) {
            self.trie_eos
        } else {
            id
        };
        self.matcher
            .consume_token(id)
            .map_err(|_| self.failed("the token does not fit the grammar"))?;
        self.consumed += 1;
        Ok(())
    }

    /// Tokens the grammar has consumed.
    pub fn consumed(&self) -> usize {
        self.consumed
    }

    /// Whether the text so far is a complete sentence of the grammar.
    pub fn is_accepting(&mut self) -> bool {
        if self.matcher.is_stopped() {
            return self.matcher.get_error().is_none();
        }
        self.matcher.is_accepting().unwrap_or(false)
    }
}
