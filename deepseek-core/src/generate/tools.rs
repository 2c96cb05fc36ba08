//! Tool calls out of the answer text, while it streams: DeepSeek's markup in both its forms,
//! R1 / R1-0528 / V3-0324
//! (`<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>function<｜tool▁sep｜>NAME\n```json\nARGS\n```<｜tool▁call▁end｜>...<｜tool▁calls▁end｜>`)
//! and V3.1 (`<｜tool▁call▁begin｜>NAME<｜tool▁sep｜>ARGS<｜tool▁call▁end｜>`), tolerant of the
//! misspelled markers models emit (`<｜tool_calls_begin｜>`, `<｜tool calls begin｜>`,
//! `<｜tool▁calls｜>`, ASCII bars). Text that may still become a marker is held back, so no
//! piece of markup ever reaches the content. Pure text processing.

/// What the splitter found in a piece of answer text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Piece<'a> {
    /// Answer text.
    Content(&'a str),
    /// A tool call begins: its index and function name.
    CallStart(usize, &'a str),
    /// A piece of the current call's arguments (JSON text).
    Args(usize, &'a str),
}

/// The markers, by their words.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Marker {
    CallsBegin,
    CallsEnd,
    CallBegin,
    CallEnd,
    Sep,
}

const MARKERS: [(&str, Marker); 6] = [
    ("tool calls begin", Marker::CallsBegin),
    ("tool calls", Marker::CallsBegin),
    ("tool calls end", Marker::CallsEnd),
    ("tool call begin", Marker::CallBegin),
    ("tool call end", Marker::CallEnd),
    ("tool sep", Marker::Sep),
];

/// Longest marker body accepted (bytes), misspelled separators included.
const MAX_BODY: usize = 64;
/// Longest header (`function` or a V3.1 function name) before `<｜tool▁sep｜>`.
const MAX_HEADER: usize = 256;

#[derive(Debug, PartialEq, Eq)]
enum Scan {
    /// Not a marker: ordinary text.
    No,
    /// Could become a marker with more text.
    Partial,
    /// A marker of this many bytes.
    Found(Marker, usize),
}

/// Reads a marker at the start of `s` (which starts with `<`): `<`, a bar (`｜` or `|`),
/// words joined by `▁`, `_`, `\_` or spaces, a bar and `>`.
fn scan(s: &str) -> Scan {
    let Some(rest) = s.strip_prefix('<') else {
        return Scan::No;
    };
    if rest.is_empty() || "｜".starts_with(rest) {
        return Scan::Partial;
    }
    let bar = if rest.starts_with('｜') {
        '｜'.len_utf8()
    } else if rest.starts_with('|') {
        1
    } else {
        return Scan::No;
    };
    let body_and_rest = &rest[bar..];
    let mut norm = String::new();
    let mut i = 0;
    let bytes = body_and_rest.as_bytes();
    while i < body_and_rest.len() {
        let tail = &body_and_rest[i..];
        if tail.starts_with('｜') || tail.starts_with('|') {
            let bar_len = if tail.starts_with('｜') {
                '｜'.len_utf8()
            } else {
                1
            };
            let after = &tail[bar_len..];
            if after.is_empty() {
                return if known_prefix(&norm, true) {
                    Scan::Partial
                } else {
                    Scan::No
                };
            }
            if !after.starts_with('>') {
                return Scan::No;
            }
            let name = norm.trim_end();
            return match MARKERS.iter().find(|(n, _)| *n == name) {
                Some((_, m)) => Scan::Found(*m, 1 + bar + i + bar_len + 1),
                None => Scan::No,
            };
        }
        if i >= MAX_BODY {
            return Scan::No;
        }
        let (sep, len) = if tail.starts_with("\\_") {
            (true, 2)
        } else if tail.starts_with('▁') {
            (true, '▁'.len_utf8())
        } else if bytes[i] == b'_' || bytes[i] == b' ' {
            (true, 1)
        } else if bytes[i].is_ascii_alphabetic() {
            (false, 1)
        } else if tail == "\\" || "▁".starts_with(tail) {
            // An incomplete separator at the very end.
            return if known_prefix(&norm, false) {
                Scan::Partial
            } else {
                Scan::No
            };
        } else {
            return Scan::No;
        };
        if sep {
            if !norm.ends_with(' ') {
                norm.push(' ');
            }
        } else {
            norm.push(bytes[i].to_ascii_lowercase() as char);
        }
        if !known_prefix(&norm, false) {
            return Scan::No;
        }
        i += len;
    }
    Scan::Partial
}

/// Whether `norm` (normalised words so far) can still become a known marker body.
fn known_prefix(norm: &str, complete: bool) -> bool {
    let norm = if complete { norm.trim_end() } else { norm };
    MARKERS.iter().any(|(n, _)| n.starts_with(norm))
}

/// The first marker in `s` at or after byte `from`, or the start of a possible marker at its
/// end (`Err(at)`: hold from there).
fn find_marker(s: &str, from: usize) -> Option<Result<(usize, Marker, usize), usize>> {
    let mut at = from;
    while let Some(off) = s[at..].find('<') {
        let i = at + off;
        match scan(&s[i..]) {
            Scan::Found(m, len) => return Some(Ok((i, m, len))),
            Scan::Partial => return Some(Err(i)),
            Scan::No => at = i + 1,
        }
    }
    None
}

/// Length of the longest suffix of `s` that is a proper prefix of `pattern`.
fn partial_suffix(s: &str, pattern: &str) -> usize {
    let max = s.len().min(pattern.len().saturating_sub(1));
    (1..=max)
        .rev()
        .find(|&n| s.is_char_boundary(s.len() - n) && pattern.starts_with(&s[s.len() - n..]))
        .unwrap_or(0)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Answer text; a calls-begin or call-begin marker starts the calls.
    Content,
    /// Between calls: a call-begin or calls-end marker is expected.
    Calls,
    /// After call-begin: `function` (R1) or the name (V3.1), up to the separator.
    Header,
    /// R1: the function name, up to the end of its line.
    Name,
    /// R1: the opening fence (```` ```json ````), if any.
    Fence,
    /// The arguments, up to the closing fence (R1) or the call-end marker.
    Args { fenced: bool },
    /// R1: after the closing fence, up to call-end.
    CloseCall,
}

/// Splits answer text into content and tool calls (see the module docs).
#[derive(Debug)]
pub(crate) struct ToolCallSplitter {
    state: State,
    held: String,
    calls: usize,
    /// Whether the current call's arguments have started (their leading whitespace is dropped).
    args_started: bool,
    /// Whether the current call's name was reported.
    call_open: bool,
}

impl ToolCallSplitter {
    pub(crate) fn new() -> Self {
        ToolCallSplitter {
            state: State::Content,
            held: String::new(),
            calls: 0,
            args_started: false,
            call_open: false,
        }
    }

    pub(crate) fn push(&mut self, text: &str, emit: &mut impl FnMut(Piece<'_>)) {
        self.held.push_str(text);
        self.run(emit, false);
    }

    /// End of the answer: held text is released (content as it is; an unterminated call's
    /// arguments as far as they go; incomplete markup dropped).
    pub(crate) fn finish(&mut self, emit: &mut impl FnMut(Piece<'_>)) {
        self.run(emit, true);
        let held = std::mem::take(&mut self.held);
        match self.state {
            State::Content if !held.is_empty() => emit(Piece::Content(&held)),
            State::Args { .. } if self.call_open => {
                let args = held.trim_end();
                let args = if self.args_started {
                    args
                } else {
                    args.trim_start()
                };
                if !args.is_empty() {
                    emit(Piece::Args(self.calls - 1, args));
                }
            }
            _ => {}
        }
    }

    /// Consumes as much of `held` as can be decided.
    fn run(&mut self, emit: &mut impl FnMut(Piece<'_>), at_end: bool) {
        loop {
            let progressed = match self.state {
                State::Content => self.content(emit, at_end),
                State::Calls => self.between_calls(emit),
                State::Header => self.header(emit),
                State::Name => self.name(emit),
                State::Fence => self.fence(at_end),
                State::Args { fenced } => self.args(fenced, emit, at_end),
                State::CloseCall => self.close_call(),
            };
            if !progressed {
                return;
            }
        }
    }

    fn drain(&mut self, n: usize) {
        self.held.drain(..n);
    }

    fn content(&mut self, emit: &mut impl FnMut(Piece<'_>), at_end: bool) -> bool {
        match find_marker(&self.held, 0) {
            Some(Ok((i, m @ (Marker::CallsBegin | Marker::CallBegin), len))) => {
                // Whitespace before the calls is the markup's, not the answer's.
                let text = self.held[..i].trim_end();
                if !text.is_empty() {
                    emit(Piece::Content(text));
                }
                self.drain(i + len);
                self.state = if m == Marker::CallBegin {
                    self.begin_call()
                } else {
                    State::Calls
                };
                true
            }
            Some(Ok((i, _, len))) => {
                // A stray marker in the answer is markup all the same: never shown.
                let text = self.held[..i].to_string();
                if !text.is_empty() {
                    emit(Piece::Content(&text));
                }
                self.drain(i + len);
                true
            }
            Some(Err(i)) if !at_end => {
                self.release_content(i, emit);
                false
            }
            _ => {
                if !at_end {
                    let end = self.held.len();
                    self.release_content(end, emit);
                }
                false
            }
        }
    }

    /// Emits `held[..upto]` as content, keeping its trailing whitespace back (it is dropped
    /// if tool calls follow).
    fn release_content(&mut self, upto: usize, emit: &mut impl FnMut(Piece<'_>)) {
        let release = self.held[..upto].trim_end().len();
        if release > 0 {
            emit(Piece::Content(&self.held[..release]));
            self.drain(release);
        }
    }

    fn begin_call(&mut self) -> State {
        self.args_started = false;
        self.call_open = false;
        State::Header
    }

    fn between_calls(&mut self, emit: &mut impl FnMut(Piece<'_>)) -> bool {
        let ws = self.held.len() - self.held.trim_start().len();
        self.drain(ws);
        if self.held.is_empty() {
            return false;
        }
        match scan(&self.held) {
            Scan::Found(Marker::CallBegin, len) => {
                self.drain(len);
                self.state = self.begin_call();
                true
            }
            Scan::Found(Marker::CallsEnd, len) => {
                self.drain(len);
                self.state = State::Content;
                true
            }
            Scan::Found(_, len) => {
                self.drain(len);
                true
            }
            Scan::Partial => false,
            Scan::No => {
                // Not markup after all: the rest is answer text.
                self.state = State::Content;
                let _ = emit;
                true
            }
        }
    }

    fn header(&mut self, emit: &mut impl FnMut(Piece<'_>)) -> bool {
        match find_marker(&self.held, 0) {
            Some(Ok((i, Marker::Sep, len))) => {
                let header = self.held[..i].trim().to_string();
                self.drain(i + len);
                if header == "function" || header.is_empty() {
                    self.state = State::Name;
                } else {
                    self.start(&header, emit);
                    self.state = State::Args { fenced: false };
                }
                true
            }
            Some(Ok((i, m, len))) => {
                // A call without a separator: give it up.
                self.drain(i + len);
                self.state = if m == Marker::CallBegin {
                    self.begin_call()
                } else {
                    State::Calls
                };
                true
            }
            _ => {
                if self.held.len() > MAX_HEADER {
                    // Not a call header: show it as text.
                    self.state = State::Content;
                    return true;
                }
                false
            }
        }
    }

    fn start(&mut self, name: &str, emit: &mut impl FnMut(Piece<'_>)) {
        emit(Piece::CallStart(self.calls, name));
        self.calls += 1;
        self.call_open = true;
    }

    fn name(&mut self, emit: &mut impl FnMut(Piece<'_>)) -> bool {
        // The name ends at its line's end, or where a fence or a marker starts.
        let end = [
            self.held.find('\n'),
            self.held.find("```"),
            self.held.find('<'),
        ]
        .into_iter()
        .flatten()
        .min();
        let Some(end) = end else {
            if self.held.len() > MAX_HEADER {
                self.state = State::Content;
                return true;
            }
            return false;
        };
        let name = self.held[..end].trim().to_string();
        self.drain(end);
        self.start(&name, emit);
        self.state = State::Fence;
        true
    }

    fn fence(&mut self, at_end: bool) -> bool {
        let ws = self.held.len() - self.held.trim_start().len();
        let rest = &self.held[ws..];
        if rest.is_empty() {
            return false;
        }
        for opener in ["```json", "```"] {
            if let Some(after) = rest.strip_prefix(opener) {
                if opener == "```" && "json".starts_with(after) && !after.is_empty() && !at_end {
                    return false;
                }
                if after.is_empty() && !at_end {
                    return false; // a language name may follow
                }
                let n = ws + opener.len();
                self.drain(n);
                self.state = State::Args { fenced: true };
                return true;
            }
        }
        if "```json".starts_with(rest) && !at_end {
            return false;
        }
        self.state = State::Args { fenced: false };
        true
    }

    fn args(&mut self, fenced: bool, emit: &mut impl FnMut(Piece<'_>), at_end: bool) -> bool {
        let index = self.calls - 1;
        if !self.args_started {
            let ws = self.held.len() - self.held.trim_start().len();
            self.drain(ws);
            if self.held.is_empty() {
                return false;
            }
            self.args_started = true;
        }
        let fence = if fenced { self.held.find("```") } else { None };
        let marker = find_marker(&self.held, 0);
        let marker_at = match marker {
            Some(Ok((i, _, _))) | Some(Err(i)) => Some(i),
            None => None,
        };
        if let Some(f) = fence.filter(|&f| marker_at.is_none_or(|m| f < m)) {
            let args = self.held[..f].trim_end();
            if !args.is_empty() {
                emit(Piece::Args(index, args));
            }
            self.drain(f + 3);
            self.state = State::CloseCall;
            return true;
        }
        if let Some(Ok((i, m, len))) = marker {
            let args = self.held[..i].trim_end();
            if !args.is_empty() {
                emit(Piece::Args(index, args));
            }
            self.drain(i + len);
            self.state = match m {
                Marker::CallEnd => State::Calls,
                Marker::CallsEnd => State::Content,
                Marker::CallBegin => self.begin_call(),
                _ => State::Calls,
            };
            return true;
        }
        if at_end {
            return false;
        }
        // Release what can no longer be the start of the fence or a marker, nor trailing
        // whitespace before them.
        let mut keep_from = marker_at.unwrap_or(self.held.len());
        if fenced {
            keep_from = keep_from.min(self.held.len() - partial_suffix(&self.held, "```"));
        }
        let release = self.held[..keep_from].trim_end().len();
        if release > 0 {
            emit(Piece::Args(index, &self.held[..release]));
            self.drain(release);
        }
        false
    }

    fn close_call(&mut self) -> bool {
        let ws = self.held.len() - self.held.trim_start().len();
        self.drain(ws);
        if self.held.is_empty() {
            return false;
        }
        match scan(&self.held) {
            Scan::Found(m, len) => {
                self.drain(len);
                self.state = match m {
                    Marker::CallsEnd => State::Content,
                    Marker::CallBegin => self.begin_call(),
                    _ => State::Calls,
                };
                true
            }
            Scan::Partial => false,
            Scan::No => {
                self.state = State::Calls;
                true
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// (content, [(name, args)]) of `pieces` pushed one after another.
    fn run(pieces: &[&str]) -> (String, Vec<(String, String)>) {
        let mut s = ToolCallSplitter::new();
        let mut content = String::new();
        let mut calls: Vec<(String, String)> = Vec::new();
        let mut sink = |p: Piece<'_>| match p {
            Piece::Content(t) => content.push_str(t),
            Piece::CallStart(i, n) => {
                assert_eq!(i, calls.len());
                calls.push((n.to_string(), String::new()))
            }
            Piece::Args(i, a) => calls[i].1.push_str(a),
        };
        for p in pieces {
            s.push(p, &mut sink);
        }
        s.finish(&mut sink);
        (content, calls)
    }

    fn every_split(text: &str, want: &(String, Vec<(String, String)>)) {
        let cuts: Vec<usize> = (0..=text.len())
            .filter(|&i| text.is_char_boundary(i))
            .collect();
        for &a in &cuts {
            for &b in cuts.iter().filter(|&&b| b >= a) {
                let got = run(&[&text[..a], &text[a..b], &text[b..]]);
                assert_eq!(&got, want, "cuts {a} {b} of {text:?}");
            }
        }
    }

    #[test]
    fn markers_and_misspellings() {
        let m = "<｜tool▁calls▁begin｜>";
        assert_eq!(
            scan(&format!("{m}x")),
            Scan::Found(Marker::CallsBegin, m.len())
        );
        for m in [
            "<｜tool_calls_begin｜>",
            "<｜tool calls begin｜>",
            "<｜tool\\_calls\\_begin｜>",
            "<｜tool▁calls｜>",
            "<|tool▁calls▁begin|>",
        ] {
            assert!(
                matches!(scan(m), Scan::Found(Marker::CallsBegin, n) if n == m.len()),
                "{m}"
            );
        }
        assert_eq!(scan("<｜tool▁ca"), Scan::Partial);
        assert_eq!(scan("<"), Scan::Partial);
        assert_eq!(scan("<think>"), Scan::No);
        assert_eq!(scan("<｜User｜>"), Scan::No);
        assert_eq!(scan("<｜tool▁output▁begin｜>"), Scan::No);
        assert_eq!(scan("< 3"), Scan::No);
    }

    #[test]
    fn r1_and_v31_calls_split_anywhere() {
        let r1 = "Checking.\n<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>function<｜tool▁sep｜>get_weather\n```json\n{\"city\": \"Paris\"}\n```<｜tool▁call▁end｜>\n<｜tool▁call▁begin｜>function<｜tool▁sep｜>calc\n```json\n{\"e\": \"1`2\"}```<｜tool▁call▁end｜><｜tool▁calls▁end｜>";
        let want = (
            "Checking.".to_string(),
            vec![
                (
                    "get_weather".to_string(),
                    "{\"city\": \"Paris\"}".to_string(),
                ),
                ("calc".to_string(), "{\"e\": \"1`2\"}".to_string()),
            ],
        );
        every_split(r1, &want);
        let v31 = "<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>get_time<｜tool▁sep｜>{\"city\": \"Tokyo\"}<｜tool▁call▁end｜><｜tool▁calls▁end｜>";
        every_split(
            v31,
            &(
                String::new(),
                vec![("get_time".into(), "{\"city\": \"Tokyo\"}".into())],
            ),
        );
    }

    #[test]
    fn plain_text_passes_untouched() {
        for text in [
            "a < b and c <| d",
            "x <｜User｜> y",
            "ends with <｜tool",
            "  spaced  \n",
        ] {
            let (content, calls) = run(&[text]);
            assert!(calls.is_empty());
            // An unfinished marker at the very end is markup cut short: dropped only if it
            // could still be one.
            if text.ends_with("<｜tool") {
                assert_eq!(content, "ends with <｜tool");
            } else {
                assert_eq!(content, text);
            }
        }
    }
}
