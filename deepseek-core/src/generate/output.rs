//! From generated token ids to tagged deltas: incremental UTF-8-safe detokenisation, stop
//! strings (never emitted, not even partly), R1's `<think>` ... `</think>` reasoning split and
//! DeepSeek's tool-call markup in the answer ([`tools`](super::tools)). Pure text processing:
//! no model, no sampling.

use std::collections::VecDeque;

use super::tools::{Piece, ToolCallSplitter};
use crate::error::Result;
use crate::template::ToolCall;
use crate::tokenizer::{StreamDecoder, Tokenizer};

/// Opens a reasoning section (R1, R1-Distill, QwQ).
pub const THINK_OPEN: &str = "<think>";
/// Closes a reasoning section.
pub const THINK_CLOSE: &str = "</think>";

/// Which part of the answer a delta belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    /// Text inside `<think>` ... `</think>` (OpenAI's `reasoning_content`).
    Reasoning,
    /// The answer proper (`content`).
    Content,
    /// A tool call (OpenAI's `tool_calls` deltas): see [`Event::tool_call`].
    ToolCall,
}

/// Which tool call a [`EventKind::ToolCall`] event belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ToolCallDelta {
    /// The call's position in the reply (0, 1, ...).
    pub index: usize,
    /// Set on the call's first event: its id.
    pub id: Option<String>,
    /// Set on the call's first event: the function's name.
    pub name: Option<String>,
}

/// A piece of streamed output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// Reasoning, answer or tool call.
    pub kind: EventKind,
    /// The new text: whole UTF-8 characters. Never empty for reasoning and content; for a tool
    /// call, a piece of its arguments' JSON text (empty on a call's first event when no
    /// arguments have come yet).
    pub text: String,
    /// For [`EventKind::ToolCall`]: the call's index, and on its first event its id and name.
    pub tool_call: Option<ToolCallDelta>,
}

/// Whether a prompt leaves the model inside a reasoning section (R1's template ends the
/// generation prompt with `<think>\n`).
pub fn prompt_opens_reasoning(prompt: &str) -> bool {
    prompt.trim_end().ends_with(THINK_OPEN)
}

/// Length of the longest suffix of `text` that is a proper prefix of `pattern` (a match that may
/// complete with more text).
fn partial_suffix(text: &str, pattern: &str) -> usize {
    let max = text.len().min(pattern.len().saturating_sub(1));
    (1..=max)
        .rev()
        .find(|&n| {
            text.is_char_boundary(text.len() - n) && pattern.starts_with(&text[text.len() - n..])
        })
        .unwrap_or(0)
}

/// Holds back text that may be the start of a stop string; cuts the output at the first one.
#[derive(Debug, Default)]
struct StopMatcher {
    stops: Vec<String>,
    held: String,
    stopped: bool,
}

impl StopMatcher {
    /// Appends `delta`, moves the text that can no longer start a stop string to `out`.
    fn push(&mut self, delta: &str, out: &mut String) {
        if self.stopped {
            return;
        }
        if self.stops.is_empty() {
            out.push_str(delta);
            return;
        }
        self.held.push_str(delta);
        let first = self
            .stops
            .iter()
            .filter_map(|s| self.held.find(s.as_str()))
            .min();
        if let Some(at) = first {
            out.push_str(&self.held[..at]);
            self.held.clear();
            self.stopped = true;
            return;
        }
        let keep = self
            .stops
            .iter()
            .map(|s| partial_suffix(&self.held, s))
            .max()
            .unwrap_or(0);
        let release = self.held.len() - keep;
        out.push_str(&self.held[..release]);
        self.held.drain(..release);
    }

    /// End of output: held text was not a stop string after all.
    fn finish(&mut self, out: &mut String) {
        out.push_str(&self.held);
        self.held.clear();
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Nothing seen yet: the output may open with `<think>`.
    Start,
    Reasoning,
    Content,
}

/// Splits text into reasoning and content at R1's think tags. Leading whitespace of each
/// section and trailing whitespace of the reasoning are dropped (the tags' `\n`s).
#[derive(Debug)]
struct ReasoningSplitter {
    phase: Phase,
    held: String,
    /// Drop whitespace until the section's first other character.
    strip: bool,
    entered: bool,
}

impl ReasoningSplitter {
    fn new(in_reasoning: bool) -> Self {
        ReasoningSplitter {
            phase: if in_reasoning {
                Phase::Reasoning
            } else {
                Phase::Start
            },
            held: String::new(),
            strip: in_reasoning,
            entered: in_reasoning,
        }
    }

    fn push(&mut self, text: &str, emit: &mut impl FnMut(EventKind, &str)) {
        match self.phase {
            Phase::Start => {
                self.held.push_str(text);
                let t = self.held.trim_start();
                if t.is_empty() || (t.len() < THINK_OPEN.len() && THINK_OPEN.starts_with(t)) {
                    return;
                }
                let held = std::mem::take(&mut self.held);
                match held.trim_start().strip_prefix(THINK_OPEN) {
                    Some(rest) => {
                        self.phase = Phase::Reasoning;
                        self.entered = true;
                        self.strip = true;
                        self.push(rest, emit);
                    }
                    None => {
                        self.phase = Phase::Content;
                        emit(EventKind::Content, &held);
                    }
                }
            }
            Phase::Reasoning => {
                let text = if self.strip { text.trim_start() } else { text };
                if text.is_empty() {
                    return;
                }
                self.strip = false;
                self.held.push_str(text);
                if let Some(at) = self.held.find(THINK_CLOSE) {
                    let held = std::mem::take(&mut self.held);
                    emit(EventKind::Reasoning, held[..at].trim_end());
                    self.phase = Phase::Content;
                    self.strip = true;
                    self.push(&held[at + THINK_CLOSE.len()..], emit);
                    return;
                }
                // Hold a possible start of `</think>` and the whitespace before it.
                let keep = partial_suffix(&self.held, THINK_CLOSE);
                let body_end = self.held.len() - keep;
                let release = self.held[..body_end].trim_end().len();
                emit(EventKind::Reasoning, &self.held[..release]);
                self.held.drain(..release);
            }
            Phase::Content => {
                let text = if self.strip { text.trim_start() } else { text };
                if !text.is_empty() {
                    self.strip = false;
                    emit(EventKind::Content, text);
                }
            }
        }
    }

    fn finish(&mut self, emit: &mut impl FnMut(EventKind, &str)) {
        let held = std::mem::take(&mut self.held);
        match self.phase {
            Phase::Start => emit(EventKind::Content, &held),
            Phase::Reasoning => emit(EventKind::Reasoning, held.trim_end()),
            Phase::Content => {}
        }
    }
}

/// Turns generated token ids into [`Event`]s: detokenises incrementally (whole UTF-8 characters,
/// special tokens skipped), cuts at the first stop string, splits reasoning from content and,
/// when enabled ([`with_tool_calls`](Self::with_tool_calls)), tool calls from content.
/// What [`Generator`](super::Generator) runs on every token; usable alone on scripted ids.
#[derive(Debug)]
pub struct OutputParser {
    decoder: StreamDecoder,
    stop: StopMatcher,
    splitter: ReasoningSplitter,
    tools: Option<ToolCallSplitter>,
    decoded: String,
    released: String,
    text: String,
    sink: Sink,
    finished: bool,
}

/// Where the parts of the output accumulate.
#[derive(Debug, Default)]
struct Sink {
    reasoning: String,
    content: String,
    calls: Vec<ToolCall>,
}

impl OutputParser {
    /// A parser for `tokenizer`'s ids that stops at any of `stop` and starts inside a reasoning
    /// section if `in_reasoning` (see [`prompt_opens_reasoning`]).
    pub fn new(tokenizer: &Tokenizer, stop: &[String], in_reasoning: bool) -> Self {
        OutputParser {
            decoder: tokenizer.stream_decoder(),
            stop: StopMatcher {
                stops: stop.iter().filter(|s| !s.is_empty()).cloned().collect(),
                ..Default::default()
            },
            splitter: ReasoningSplitter::new(in_reasoning),
            tools: None,
            decoded: String::new(),
            released: String::new(),
            text: String::new(),
            sink: Sink::default(),
            finished: false,
        }
    }

    /// Parses DeepSeek's tool-call markup out of the answer (R1 and V3.1 forms, misspelled
    /// markers included) into [`tool_calls`](Self::tool_calls) and
    /// [`EventKind::ToolCall`] events. Off by default: without tools, markup stays text.
    pub fn with_tool_calls(mut self, on: bool) -> Self {
        self.tools = on.then(ToolCallSplitter::new);
        self
    }

    /// Adds one generated token; its events (zero or more) are appended to `events`.
    pub fn push(&mut self, id: u32, events: &mut VecDeque<Event>) -> Result<()> {
        if self.finished {
            return Ok(());
        }
        self.decoded.clear();
        self.decoder.push(id, &mut self.decoded)?;
        self.released.clear();
        self.stop.push(&self.decoded, &mut self.released);
        self.split(events);
        if self.stop.stopped {
            self.end(events);
        }
        Ok(())
    }

    /// End of generation: releases held-back text (an incomplete character becomes U+FFFD).
    pub fn finish(&mut self, events: &mut VecDeque<Event>) {
        if self.finished {
            return;
        }
        self.decoded.clear();
        self.decoder.finish(&mut self.decoded);
        self.released.clear();
        self.stop.push(&self.decoded, &mut self.released);
        if !self.stop.stopped {
            self.stop.finish(&mut self.released);
        }
        self.split(events);
        self.end(events);
    }

    fn split(&mut self, events: &mut VecDeque<Event>) {
        self.text.push_str(&self.released);
        let (sink, tools) = (&mut self.sink, &mut self.tools);
        self.splitter.push(&self.released, &mut |kind, text| {
            route(kind, text, tools, sink, events)
        });
    }

    fn end(&mut self, events: &mut VecDeque<Event>) {
        let (sink, tools) = (&mut self.sink, &mut self.tools);
        self.splitter
            .finish(&mut |kind, text| route(kind, text, tools, sink, events));
        if let Some(t) = tools {
            t.finish(&mut |p| piece(p, sink, events));
        }
        self.finished = true;
    }

    /// Whether a stop string ended the output.
    pub fn stopped(&self) -> bool {
        self.stop.stopped
    }

    /// Whether the output has left its reasoning section (or never had one): what comes now
    /// is the answer.
    pub fn in_answer(&self) -> bool {
        self.splitter.phase == Phase::Content
    }

    /// Whether the output is inside a reasoning section.
    pub fn in_reasoning(&self) -> bool {
        self.splitter.phase == Phase::Reasoning
    }

    /// The raw text so far, tags included, stop string excluded.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// The reasoning so far (`None` if no reasoning section was opened).
    pub fn reasoning(&self) -> Option<&str> {
        self.splitter
            .entered
            .then_some(self.sink.reasoning.as_str())
    }

    /// The answer so far (tool-call markup excluded when tool calls are parsed).
    pub fn content(&self) -> &str {
        &self.sink.content
    }

    /// The tool calls so far (the last may still be growing).
    pub fn tool_calls(&self) -> &[ToolCall] {
        &self.sink.calls
    }
}

/// Sends reasoning on, and content through the tool-call splitter when there is one.
fn route(
    kind: EventKind,
    text: &str,
    tools: &mut Option<ToolCallSplitter>,
    sink: &mut Sink,
    events: &mut VecDeque<Event>,
) {
    match (kind, tools) {
        (EventKind::Content, Some(t)) => t.push(text, &mut |p| piece(p, sink, events)),
        _ => emit(kind, text, sink, events),
    }
}

fn piece(p: Piece<'_>, sink: &mut Sink, events: &mut VecDeque<Event>) {
    match p {
        Piece::Content(text) => emit(EventKind::Content, text, sink, events),
        Piece::CallStart(index, name) => {
            let id = new_call_id();
            sink.calls.push(ToolCall::new(id.clone(), name, ""));
            events.push_back(Event {
                kind: EventKind::ToolCall,
                text: String::new(),
                tool_call: Some(ToolCallDelta {
                    index,
                    id: Some(id),
                    name: Some(name.to_string()),
                }),
            });
        }
        Piece::Args(index, text) => {
            if let Some(call) = sink.calls.get_mut(index) {
                call.arguments.push_str(text);
            }
            match events.back_mut() {
                Some(last)
                    if last.kind == EventKind::ToolCall
                        && last.tool_call.as_ref().is_some_and(|d| d.index == index) =>
                {
                    last.text.push_str(text)
                }
                _ => events.push_back(Event {
                    kind: EventKind::ToolCall,
                    text: text.to_string(),
                    tool_call: Some(ToolCallDelta {
                        index,
                        id: None,
                        name: None,
                    }),
                }),
            }
        }
    }
}

/// A fresh OpenAI-style call id: `call_` and 24 hex digits, unique within a process run.
fn new_call_id() -> String {
    use std::hash::{BuildHasher, Hasher};
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(n);
    let a = h.finish();
    h.write_u64(a);
    format!("call_{:016x}{:08x}", a, h.finish() as u32)
}

fn emit(kind: EventKind, text: &str, sink: &mut Sink, events: &mut VecDeque<Event>) {
    if text.is_empty() {
        return;
    }
    match kind {
        EventKind::Reasoning => sink.reasoning.push_str(text),
        EventKind::Content => sink.content.push_str(text),
        EventKind::ToolCall => return,
    }
    // Merge with the previous delta of the same kind when the consumer has not taken it yet.
    match events.back_mut() {
        Some(last) if last.kind == kind => last.text.push_str(text),
        _ => events.push_back(Event {
            kind,
            text: text.to_string(),
            tool_call: None,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run_splitter(
        in_reasoning: bool,
        pieces: &[&str],
    ) -> (String, String, Vec<(EventKind, String)>) {
        let mut s = ReasoningSplitter::new(in_reasoning);
        let mut ev = Vec::new();
        let mut f = |k, t: &str| {
            if !t.is_empty() {
                ev.push((k, t.to_string()))
            }
        };
        for p in pieces {
            s.push(p, &mut f);
        }
        s.finish(&mut f);
        let cat = |k| {
            ev.iter()
                .filter(|e| e.0 == k)
                .map(|e| e.1.as_str())
                .collect::<String>()
        };
        (
            cat(EventKind::Reasoning),
            cat(EventKind::Content),
            ev.clone(),
        )
    }

    #[test]
    fn splitter_handles_tags_split_anywhere() {
        let full = "<think>\nStep 1.\nStep 2.\n</think>\n\nThe answer is 4.";
        for cut in 0..=full.len() {
            for cut2 in cut..=full.len() {
                let (r, c, _) =
                    run_splitter(false, &[&full[..cut], &full[cut..cut2], &full[cut2..]]);
                assert_eq!(
                    (r.as_str(), c.as_str()),
                    ("Step 1.\nStep 2.", "The answer is 4."),
                    "cuts {cut} {cut2}"
                );
            }
        }
    }

    #[test]
    fn splitter_forced_open_and_unclosed() {
        let (r, c, _) = run_splitter(true, &["Hmm", " </thi", "nk>", "\n\nYes"]);
        assert_eq!((r.as_str(), c.as_str()), ("Hmm", "Yes"));
        let (r, c, _) = run_splitter(true, &["never ", "closed\n", "</th"]);
        assert_eq!((r.as_str(), c.as_str()), ("never closed\n</th", ""));
        let (r, c, _) = run_splitter(false, &["  <thi", "s is not a tag"]);
        assert_eq!((r.as_str(), c.as_str()), ("", "  <this is not a tag"));
        let (r, c, _) = run_splitter(false, &["plain </think> text"]);
        assert_eq!((r.as_str(), c.as_str()), ("", "plain </think> text"));
    }

    #[test]
    fn stop_matcher_never_leaks_a_partial_stop() {
        let text = "abc STOP here";
        for cut in 0..=text.len() {
            let mut m = StopMatcher {
                stops: vec!["STOP".into(), "xyz".into()],
                ..Default::default()
            };
            let mut out = String::new();
            m.push(&text[..cut], &mut out);
            assert!("abc ".starts_with(out.as_str()), "cut {cut}: {out:?}");
            m.push(&text[cut..], &mut out);
            assert!(m.stopped);
            assert_eq!(out, "abc ");
        }
        let mut m = StopMatcher {
            stops: vec!["STOP".into()],
            ..Default::default()
        };
        let mut out = String::new();
        m.push("end ST", &mut out);
        assert_eq!(out, "end ");
        m.finish(&mut out);
        assert_eq!(out, "end ST");
    }
}
