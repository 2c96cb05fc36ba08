//! Agents against references: chat templates rendering tools, tool calls and template kwargs
//! byte for byte as transformers does (R1's, R1-0528's and V3.1's official templates and
//! llama.cpp's), with goldens from `tools/make_template_fixtures.py`.

mod common;

use std::collections::VecDeque;
use std::sync::OnceLock;

use common::fixture;
use deepseek_core::generate::OutputParser;
use deepseek_core::{
    ChatTemplate, Error, Event, EventKind, Message, TemplateOptions, Tokenizer, ToolCall,
};
use serde_json::Value;

fn read_json(path: &std::path::Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn r1_tokenizer() -> &'static Tokenizer {
    static TOK: OnceLock<Tokenizer> = OnceLock::new();
    TOK.get_or_init(|| Tokenizer::from_dir(fixture("tokenizers").join("deepseek-r1")).unwrap())
}

/// A template fixture by the name the generator gives it, with R1's special tokens.
fn template(name: &str) -> ChatTemplate {
    let source = match name {
        "deepseek-r1" => r1_tokenizer().chat_template().unwrap().to_string(),
        n if n.starts_with("llama.cpp/") => {
            std::fs::read_to_string(fixture("templates").join(n)).unwrap()
        }
        n => {
            let config = read_json(&fixture("templates").join(n).join("tokenizer_config.json"));
            config["chat_template"].as_str().unwrap().to_string()
        }
    };
    ChatTemplate::new(&source)
        .unwrap()
        .with_special_token("bos_token", "<｜begin▁of▁sentence｜>")
        .with_special_token("eos_token", "<｜end▁of▁sentence｜>")
}

fn opt_str(v: &Value, key: &str) -> Option<String> {
    v.get(key).map(|x| x.as_str().unwrap().to_string())
}

/// A message of the fixtures (OpenAI's dict shape) as a [`Message`].
fn message(v: &Value) -> Message {
    let tool_calls = v
        .get("tool_calls")
        .map(|calls| {
            calls
                .as_array()
                .unwrap()
                .iter()
                .map(|c| {
                    assert_eq!(c["type"], "function");
                    ToolCall::new(
                        c["id"].as_str().unwrap(),
                        c["function"]["name"].as_str().unwrap(),
                        c["function"]["arguments"].as_str().unwrap(),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    Message {
        role: v["role"].as_str().unwrap().into(),
        content: v["content"].as_str().unwrap().into(),
        reasoning_content: opt_str(v, "reasoning_content"),
        tool_calls,
        tool_call_id: opt_str(v, "tool_call_id"),
        name: opt_str(v, "name"),
    }
}

#[test]
fn tool_templates_render_as_transformers() {
    let golden = read_json(&fixture("templates").join("tool_cases.json"));
    let cases = golden["cases"].as_array().unwrap();
    assert!(cases.len() >= 60, "{} cases", cases.len());
    let mut templates = std::collections::HashMap::new();
    let (mut same, mut errors, mut eager_map) = (0, 0, 0);
    for case in cases {
        let tname = case["template"].as_str().unwrap();
        let t = templates
            .entry(tname.to_string())
            .or_insert_with(|| template(tname));
        let messages: Vec<Message> = case["messages"]
            .as_array()
            .unwrap()
            .iter()
            .map(message)
            .collect();
        let options = TemplateOptions {
            tools: case["tools"].as_array().cloned(),
            kwargs: case["kwargs"].as_object().unwrap().clone(),
        };
        let agp = case["add_generation_prompt"].as_bool().unwrap();
        let got = t.render_with(&messages, agp, &options, &|| false);
        let what = format!("{tname} / {}", case["name"].as_str().unwrap());
        match (case.get("text"), got) {
            (Some(want), Ok(text)) => {
                assert_eq!(text, want.as_str().unwrap(), "{what}");
                let ids: Vec<u32> = case["ids"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|x| x.as_u64().unwrap() as u32)
                    .collect();
                assert_eq!(r1_tokenizer().encode(&text, false).unwrap(), ids, "{what}");
                same += 1;
            }
            (None, Err(Error::Template(_))) if case.get("text_with_eager_map").is_none() => {
                errors += 1
            }
            // Jinja2's lazy `map` makes json.dumps fail where MiniJinja's eager one (like
            // llama.cpp's engine) renders: compare with transformers' render of the same
            // template with the map made a list.
            (None, Ok(text)) if case.get("text_with_eager_map").is_some() => {
                assert_eq!(
                    text,
                    case["text_with_eager_map"].as_str().unwrap(),
                    "{what}"
                );
                eager_map += 1;
            }
            (want, got) => panic!("{what}: expected {want:?}, got {got:?}"),
        }
    }
    assert_eq!(same + errors + eager_map, cases.len());
    println!("{same} byte-identical, {errors} refused as transformers, {eager_map} eager-map");
    assert!(same >= 50, "{same} byte-identical renders");
}

#[test]
fn template_kwargs_may_not_replace_the_render_inputs() {
    let t = template("deepseek-v3.1");
    let mut kwargs = serde_json::Map::new();
    kwargs.insert("messages".into(), Value::Array(vec![]));
    let options = TemplateOptions {
        tools: None,
        kwargs,
    };
    match t.render_with(&[Message::user("hi")], true, &options, &|| false) {
        Err(Error::InvalidParameter { name, .. }) => assert_eq!(name, "chat_template_kwargs"),
        other => panic!("{other:?}"),
    }
}

// ------------------------------------------------------------------------------------------
// Tool calls out: the parser on a corpus of outputs in both formats
// ------------------------------------------------------------------------------------------

/// What events add up to: (reasoning, content, [(id, name, arguments)]).
fn replay(events: &[Event]) -> (String, String, Vec<(String, String, String)>) {
    let (mut reasoning, mut content) = (String::new(), String::new());
    let mut calls: Vec<(String, String, String)> = Vec::new();
    for e in events {
        match e.kind {
            EventKind::Reasoning => reasoning.push_str(&e.text),
            EventKind::Content => content.push_str(&e.text),
            EventKind::ToolCall => {
                let d = e
                    .tool_call
                    .as_ref()
                    .expect("tool-call events say which call");
                if let (Some(id), Some(name)) = (&d.id, &d.name) {
                    assert_eq!(d.index, calls.len(), "calls start in order");
                    calls.push((id.clone(), name.clone(), String::new()));
                }
                calls[d.index].2.push_str(&e.text);
            }
        }
    }
    (reasoning, content, calls)
}

#[test]
fn tool_call_corpus_parses_token_by_token() {
    let corpus = read_json(&fixture("tool_calls").join("corpus.json"));
    let cases = corpus["cases"].as_array().unwrap();
    assert!(cases.len() >= 20);
    let tok = r1_tokenizer();
    let mut calls_seen = 0;
    for case in cases {
        let name = case["name"].as_str().unwrap();
        let text = case["text"].as_str().unwrap();
        let ids = tok.encode(text, false).unwrap();
        let mut parser = OutputParser::new(tok, &[], case["in_reasoning"].as_bool().unwrap())
            .with_tool_calls(true);
        let mut events = VecDeque::new();
        let mut all = Vec::new();
        for &id in &ids {
            parser.push(id, &mut events).unwrap();
            // Streaming: every event is final when it is delivered.
            all.extend(events.drain(..));
        }
        parser.finish(&mut events);
        all.extend(events.drain(..));
        let want_calls: Vec<(String, String)> = case["tool_calls"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| {
                (
                    c["name"].as_str().unwrap().to_string(),
                    c["arguments"].as_str().unwrap().to_string(),
                )
            })
            .collect();
        let got_calls: Vec<(String, String)> = parser
            .tool_calls()
            .iter()
            .map(|c| (c.name.clone(), c.arguments.clone()))
            .collect();
        assert_eq!(got_calls, want_calls, "{name}: tool calls");
        assert_eq!(
            parser.reasoning(),
            case["reasoning"].as_str(),
            "{name}: reasoning"
        );
        assert_eq!(
            parser.content(),
            case["content"].as_str().unwrap(),
            "{name}"
        );
        // The streamed events add up to the same, ids included.
        let (r, c, calls) = replay(&all);
        assert_eq!(
            r,
            parser.reasoning().unwrap_or(""),
            "{name}: streamed reasoning"
        );
        assert_eq!(c, parser.content(), "{name}: streamed content");
        let final_calls: Vec<(String, String, String)> = parser
            .tool_calls()
            .iter()
            .map(|t| (t.id.clone(), t.name.clone(), t.arguments.clone()))
            .collect();
        assert_eq!(calls, final_calls, "{name}: streamed calls");
        for call in parser.tool_calls() {
            assert!(call.id.starts_with("call_") && call.id.len() > 10);
            // Complete calls carry JSON arguments equal to the expected ones.
            if !name.contains("truncated") {
                assert!(call.arguments_json().is_some(), "{name}: {call:?}");
            }
        }
        // No piece of markup in the answer or the reasoning.
        for part in [parser.content(), parser.reasoning().unwrap_or("")] {
            assert!(!part.contains("｜"), "{name}: markup leaked: {part:?}");
        }
        calls_seen += want_calls.len();
    }
    assert!(calls_seen >= 18, "{calls_seen} calls in the corpus");
}

/// One corpus case's expected outcome.
struct Expected {
    name: String,
    text: String,
    in_reasoning: bool,
    reasoning: Option<String>,
    content: String,
    calls: Vec<(String, String)>,
}

fn corpus() -> Vec<Expected> {
    let corpus = read_json(&fixture("tool_calls").join("corpus.json"));
    corpus["cases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|case| Expected {
            name: case["name"].as_str().unwrap().into(),
            text: case["text"].as_str().unwrap().into(),
            in_reasoning: case["in_reasoning"].as_bool().unwrap(),
            reasoning: case["reasoning"].as_str().map(Into::into),
            content: case["content"].as_str().unwrap().into(),
            calls: case["tool_calls"]
                .as_array()
                .unwrap()
                .iter()
                .map(|c| {
                    (
                        c["name"].as_str().unwrap().to_string(),
                        c["arguments"].as_str().unwrap().to_string(),
                    )
                })
                .collect(),
        })
        .collect()
}

/// Parses `ids` as a stream; checks at every step that nothing delivered is ever taken back
/// (the content so far is a prefix of the final content, with no piece of markup) and that
/// the result is the case's. `how` names the split in failures.
fn stream_and_check(tok: &Tokenizer, case: &Expected, ids: &[u32], how: &str) {
    let mut parser = OutputParser::new(tok, &[], case.in_reasoning).with_tool_calls(true);
    let mut events = VecDeque::new();
    let mut all = Vec::new();
    for &id in ids {
        parser.push(id, &mut events).unwrap();
        all.extend(events.drain(..));
        let (_, content, _) = replay(&all);
        assert!(
            case.content.starts_with(&content) && !content.contains('｜'),
            "{} ({how}): content so far {content:?} is not a prefix of {:?}",
            case.name,
            case.content
        );
    }
    parser.finish(&mut events);
    all.extend(events.drain(..));
    let (reasoning, content, calls) = replay(&all);
    let what = format!("{} ({how})", case.name);
    assert_eq!(content, case.content, "{what}: content");
    assert_eq!(
        reasoning,
        case.reasoning.clone().unwrap_or_default(),
        "{what}: reasoning"
    );
    let calls: Vec<(String, String)> = calls.into_iter().map(|(_, n, a)| (n, a)).collect();
    assert_eq!(calls, case.calls, "{what}: calls");
}

/// A token id for each byte value: R1's byte-level vocabulary has one per byte.
fn byte_tokens(tok: &Tokenizer) -> Vec<u32> {
    let mut by_byte = vec![u32::MAX; 256];
    for id in 0..tok.vocab_size() as u32 {
        if let Some([b]) = tok.token_bytes(id) {
            if by_byte[*b as usize] == u32::MAX {
                by_byte[*b as usize] = id;
            }
        }
    }
    assert!(
        by_byte.iter().all(|&id| id != u32::MAX),
        "a byte has no token"
    );
    by_byte
}

#[test]
fn tool_call_corpus_streams_split_at_every_byte() {
    // Every byte its own token: every byte position is a token boundary, inside the markers
    // (correct and misspelled), inside multi-byte characters, inside the JSON.
    let tok = r1_tokenizer();
    let by_byte = byte_tokens(tok);
    let cases = corpus();
    for case in &cases {
        let ids: Vec<u32> = case.text.bytes().map(|b| by_byte[b as usize]).collect();
        stream_and_check(tok, case, &ids, "one byte per token");
    }
    // Real tokens on both sides of a split at each character boundary: the tokenizer's own
    // pieces, with the text cut where a stream may deliver it.
    let mut splits = 0;
    for case in &cases {
        for (i, _) in case.text.char_indices().skip(1) {
            let mut ids = tok.encode(&case.text[..i], false).unwrap();
            ids.extend(tok.encode(&case.text[i..], false).unwrap());
            stream_and_check(tok, case, &ids, &format!("split at byte {i}"));
            splits += 1;
        }
    }
    assert!(splits > 1000, "{splits} splits");
}

#[test]
fn without_tools_the_markup_stays_text() {
    // The parser is off unless tools are given: the text is the model's, markers included.
    let tok = r1_tokenizer();
    let text =
        "<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>get_time<｜tool▁sep｜>{}<｜tool▁call▁end｜>";
    let mut parser = OutputParser::new(tok, &[], false);
    let mut events = VecDeque::new();
    for id in tok.encode(text, false).unwrap() {
        parser.push(id, &mut events).unwrap();
    }
    parser.finish(&mut events);
    assert_eq!(parser.content(), text);
    assert!(parser.tool_calls().is_empty());
}

// ------------------------------------------------------------------------------------------
// Structured output: every answer parses and validates; the cost of the mask
// ------------------------------------------------------------------------------------------

/// The test set of schemas (every keyword family structured-output users lean on), shared with
/// the Python tests, which validate answers with the jsonschema package.
fn schemas() -> Vec<(String, Value)> {
    let file = read_json(&fixture("structured").join("schemas.json"));
    file["schemas"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

/// Deterministic "logits": a seeded xorshift, so the grammar (not the model) decides what is
/// valid. Like a real model it leans towards closing what it opened (tokens with `"`, `}`, `]`
/// and the end), or unbounded schemas (`{"type": "object"}`) would run on forever.
struct NoiseModel {
    state: u64,
    bonus: Vec<f32>,
}

impl NoiseModel {
    fn new(tok: &Tokenizer, seed: u64) -> Self {
        let eos = tok.eos_ids();
        let bonus = (0..tok.vocab_size() as u32)
            .map(|id| match tok.token_bytes(id) {
                _ if eos.contains(&id) => 16.0,
                Some(b) if b.iter().any(|c| matches!(c, b'"' | b'}' | b']')) => 6.0,
                _ => 0.0,
            })
            .collect();
        NoiseModel {
            state: seed | 1,
            bonus,
        }
    }

    fn fill(&mut self, logits: &mut [f32]) {
        for (l, b) in logits.iter_mut().zip(&self.bonus) {
            self.state ^= self.state << 13;
            self.state ^= self.state >> 7;
            self.state ^= self.state << 17;
            *l = (self.state >> 40) as f32 / (1u64 << 24) as f32 * 8.0 + b;
        }
    }
}

#[test]
fn json_schema_answers_always_parse() {
    use deepseek_core::constraint::GrammarCompiler;
    use deepseek_core::{ResponseFormat, Sampler, SamplingParams};
    use std::time::Instant;

    let tok = r1_tokenizer();
    let eos = tok.eos_ids();
    let t0 = Instant::now();
    let compiler = GrammarCompiler::new(tok, &eos).unwrap();
    let build = t0.elapsed();
    let mut logits = vec![0.0f32; tok.vocab_size()];
    let mut mask_times = Vec::new();
    let (mut runs, mut valid) = (0, 0);
    for (name, schema) in schemas() {
        for seed in 1..=4u64 {
            let format = ResponseFormat::JsonSchema(schema.clone());
            let mut c = compiler.response_format(&format).unwrap().unwrap();
            let mut model = NoiseModel::new(
                tok,
                seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ name.len() as u64,
            );
            let mut sampler = Sampler::new(SamplingParams {
                seed: Some(seed),
                ..Default::default()
            })
            .unwrap();
            let mut ids = Vec::new();
            let finished = loop {
                if ids.len() >= 400 {
                    break false;
                }
                model.fill(&mut logits);
                let mut spent = None;
                let id = sampler
                    .sample_with(&logits, &mut |l| {
                        let t = Instant::now();
                        let r = c.apply(l, &[], false);
                        spent = Some(t.elapsed());
                        r
                    })
                    .unwrap();
                mask_times.extend(spent);
                if eos.contains(&id) {
                    break true;
                }
                c.commit(id).unwrap();
                sampler.accept(id);
                ids.push(id);
            };
            runs += 1;
            assert!(finished, "{name} seed {seed}: no end after 400 tokens");
            let text = tok.decode(&ids, true).unwrap();
            let value: Value = serde_json::from_str(&text)
                .unwrap_or_else(|e| panic!("{name} seed {seed}: {e}: {text:?}"));
            // Validation against the schema is the jsonschema package's job, on the same
            // schemas (deepseek-py/tests/test_tools.py): an independent validator, without
            // compiling one into every `cargo test`.
            assert!(
                value.is_object() || value.is_array(),
                "{name} seed {seed}: {text}"
            );
            valid += 1;
        }
    }
    mask_times.sort();
    let n = mask_times.len();
    let mean = mask_times.iter().sum::<std::time::Duration>() / n as u32;
    println!(
        "structured output: {valid}/{runs} answers parse over {} schemas; token trie built in \
         {build:?}; mask per token over {} ids: mean {mean:?}, p50 {:?}, p99 {:?}, max {:?} \
         ({n} tokens)",
        schemas().len(),
        tok.vocab_size(),
        mask_times[n / 2],
        mask_times[n * 99 / 100],
        mask_times[n - 1]
    );
    assert_eq!(valid, runs);
}

// ------------------------------------------------------------------------------------------
// End to end on a model: v3_r1tok (tiny, random) with R1's tokenizer and template
// ------------------------------------------------------------------------------------------

fn generator() -> &'static deepseek_core::Generator {
    static GEN: OnceLock<deepseek_core::Generator> = OnceLock::new();
    GEN.get_or_init(|| {
        deepseek_core::Generator::load(
            fixture("v3_r1tok"),
            Some(&fixture("tokenizers").join("deepseek-r1")),
            deepseek_core::LoadOptions {
                threads: Some(1),
                ..Default::default()
            },
        )
        .unwrap()
    })
}

fn greedy(max_tokens: usize) -> deepseek_core::GenerateParams {
    deepseek_core::GenerateParams {
        max_tokens: Some(max_tokens),
        sampling: deepseek_core::SamplingParams::greedy(),
        ..Default::default()
    }
}

fn weather_tool() -> Value {
    serde_json::json!({"type": "function", "function": {"name": "get_weather",
        "parameters": {"type": "object", "properties": {"city": {"type": "string", "maxLength": 8}},
                       "required": ["city"], "additionalProperties": false}}})
}

#[test]
fn forced_tool_call_comes_back_typed_and_round_trips() {
    use deepseek_core::{FinishReason, GenerateParams, ToolChoice};
    let g = generator();
    let params = GenerateParams {
        tools: Some(vec![weather_tool()]),
        tool_choice: ToolChoice::Required,
        // The random model would reason forever: straight to the answer.
        max_reasoning_tokens: Some(0),
        ..greedy(80)
    };
    let ask = [Message::user("Weather in Paris?")];
    let r = g.chat(&ask, &params).unwrap();
    assert_eq!(r.finish_reason, FinishReason::ToolCalls, "{:?}", r.text);
    let [call] = r.tool_calls.as_slice() else {
        panic!("{:?}", r.tool_calls)
    };
    assert_eq!(call.name, "get_weather");
    let args = call.arguments_json().expect("JSON arguments");
    assert_eq!(
        args.as_object().unwrap().keys().collect::<Vec<_>>(),
        ["city"]
    );
    assert!(!r.content.contains('｜'), "{:?}", r.content);
    // The OpenAI form, and back through the template in the next turn.
    let json = call.to_json();
    assert_eq!(json["function"]["name"], "get_weather");
    let turn = [
        Message::user("Weather in Paris?"),
        Message {
            role: "assistant".into(),
            tool_calls: r.tool_calls.clone(),
            ..Default::default()
        },
        Message {
            role: "tool".into(),
            content: "{\"temp_c\": 21}".into(),
            tool_call_id: Some(call.id.clone()),
            ..Default::default()
        },
    ];
    let prompt = g
        .template()
        .render_with(&turn, true, &params.template_options(), &|| false)
        .unwrap();
    // R1's template writes the call as the model did, and the result as a tool output.
    assert!(
        prompt.contains(&format!(
            "function<｜tool▁sep｜>get_weather\n```json\n{}\n```",
            call.arguments
        )),
        "{prompt}"
    );
    assert!(
        prompt.contains("<｜tool▁output▁begin｜>{\"temp_c\": 21}<｜tool▁output▁end｜>"),
        "{prompt}"
    );
}

#[test]
fn logits_processors_run_in_the_chain_and_see_the_output() {
    use deepseek_core::LogitsHook;
    use std::sync::{Arc, Mutex};
    let g = generator();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    let only: u32 = g.tokenizer().encode(" yes", false).unwrap()[0];
    // Allows one token only: the output must be that token, whatever the model prefers.
    let hook = LogitsHook::new(move |generated: &[u32], logits: &mut [f32]| {
        log.lock().unwrap().push(generated.len());
        for (id, l) in logits.iter_mut().enumerate() {
            if id as u32 != only {
                *l = f32::NEG_INFINITY;
            }
        }
        Ok(())
    });
    let params = deepseek_core::GenerateParams {
        logits_processors: vec![hook],
        ..greedy(4)
    };
    let r = g.generate("Hello", &params).unwrap();
    assert_eq!(r.tokens, vec![only; 4]);
    assert_eq!(
        *seen.lock().unwrap(),
        vec![0, 1, 2, 3],
        "called once per token with the output so far"
    );
    // A processor's error stops the generation with it.
    let failing = LogitsHook::new(|_: &[u32], _: &mut [f32]| {
        Err(Error::InvalidArgument("processor says no".into()))
    });
    let params = deepseek_core::GenerateParams {
        logits_processors: vec![failing],
        ..greedy(4)
    };
    let err = g.generate("Hello", &params).unwrap_err();
    assert!(err.to_string().contains("processor says no"), "{err}");
}

#[test]
fn the_reasoning_budget_closes_think_and_the_answer_follows() {
    let g = generator();
    let ask = [Message::user("What is 1+1?")];
    // Without a budget the random model is still reasoning after 24 tokens.
    let free = g.chat(&ask, &greedy(24)).unwrap();
    assert_eq!(free.content, "", "{:?}", free.text);
    for budget in [0usize, 3, 10] {
        let r = g
            .chat(
                &ask,
                &deepseek_core::GenerateParams {
                    max_reasoning_tokens: Some(budget),
                    ..greedy(24)
                },
            )
            .unwrap();
        let reasoning = r.reasoning_content.clone().unwrap_or_default();
        let n = g.tokenizer().encode(&reasoning, false).unwrap().len();
        assert!(
            n <= budget + 2,
            "budget {budget}: {n} reasoning tokens: {reasoning:?}"
        );
        assert!(r.text.contains("</think>"), "budget {budget}: {:?}", r.text);
        assert!(
            !r.content.is_empty(),
            "budget {budget}: no answer after </think>"
        );
    }
}

#[test]
fn regex_and_lark_formats_hold_at_every_token() {
    use deepseek_core::constraint::GrammarCompiler;
    use deepseek_core::{ResponseFormat, Sampler, SamplingParams};
    let tok = r1_tokenizer();
    let eos = tok.eos_ids();
    let compiler = GrammarCompiler::new(tok, &eos).unwrap();
    let formats = [
        ResponseFormat::Regex("[0-9]{3}-[a-z]{2}".into()),
        ResponseFormat::Lark(
            "start: answer \" because \" reason\nanswer: \"yes\" | \"no\"\nreason: /[a-z]{1,6}/"
                .into(),
        ),
    ];
    let mut logits = vec![0.0f32; tok.vocab_size()];
    for (k, format) in formats.iter().enumerate() {
        for seed in 1..=5u64 {
            let mut c = compiler.response_format(format).unwrap().unwrap();
            let mut model = NoiseModel::new(tok, seed * 7 + k as u64);
            let mut sampler = Sampler::new(SamplingParams {
                seed: Some(seed),
                ..Default::default()
            })
            .unwrap();
            let mut ids = Vec::new();
            for _ in 0..64 {
                model.fill(&mut logits);
                let id = sampler
                    .sample_with(&logits, &mut |l| c.apply(l, &[], false))
                    .unwrap();
                if eos.contains(&id) {
                    break;
                }
                c.commit(id).unwrap();
                sampler.accept(id);
                ids.push(id);
            }
            let text = tok.decode(&ids, true).unwrap();
            let ok = match k {
                0 => {
                    let b = text.as_bytes();
                    b.len() == 6
                        && b[..3].iter().all(u8::is_ascii_digit)
                        && b[3] == b'-'
                        && b[4..].iter().all(u8::is_ascii_lowercase)
                }
                _ => {
                    let (answer, reason) = text.split_once(" because ").unwrap_or(("", ""));
                    matches!(answer, "yes" | "no")
                        && (1..=6).contains(&reason.len())
                        && reason.bytes().all(|b| b.is_ascii_lowercase())
                }
            };
            assert!(ok, "{format:?} seed {seed}: {text:?}");
        }
    }
}
