//! The generation layer against transformers: real DeepSeek tokenizers on a corpus, R1's chat
//! template, and end-to-end generation on `v3_r1tok` (a tiny random DeepSeek-V3 with R1's
//! vocabulary) driven by the real R1 tokenizer. Fixtures: `tools/fetch_tokenizers.py` and
//! `tools/make_template_fixtures.py`.

mod common;

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

use common::fixture;
use deepseek_core::generate::{prompt_opens_reasoning, OutputParser};
use deepseek_core::template::DEEPSEEK_R1_TEMPLATE;
use deepseek_core::{
    CancelCheck, ChatTemplate, Error, Event, EventKind, FinishReason, GenerateParams,
    GenerationConfig, Generator, LoadOptions, Message, Model, Sampler, SamplingParams,
    SessionOptions, Tokenizer,
};
use serde_json::Value;

const R1: &str = "deepseek-r1";
const QWEN: &str = "deepseek-r1-distill-qwen-7b";
const LLAMA: &str = "deepseek-r1-distill-llama-8b";

fn tokenizer_dir(name: &str) -> PathBuf {
    fixture("tokenizers").join(name)
}

fn tokenizer(name: &str) -> &'static Tokenizer {
    static R1_TOK: OnceLock<Tokenizer> = OnceLock::new();
    static QWEN_TOK: OnceLock<Tokenizer> = OnceLock::new();
    static LLAMA_TOK: OnceLock<Tokenizer> = OnceLock::new();
    let cell = match name {
        R1 => &R1_TOK,
        QWEN => &QWEN_TOK,
        LLAMA => &LLAMA_TOK,
        _ => panic!("no tokenizer fixture {name}"),
    };
    cell.get_or_init(|| Tokenizer::from_dir(tokenizer_dir(name)).expect("tokenizer loads"))
}

/// `v3_r1tok` with the R1 tokenizer and R1's generation_config.json.
fn generator() -> &'static Generator {
    static GEN: OnceLock<Generator> = OnceLock::new();
    GEN.get_or_init(|| {
        Generator::load(
            fixture("v3_r1tok"),
            Some(&tokenizer_dir(R1)),
            LoadOptions {
                threads: Some(1),
                ..Default::default()
            },
        )
        .expect("v3_r1tok + R1 tokenizer load")
    })
}

fn read_json(path: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn ids(v: &Value) -> Vec<u32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as u32)
        .collect()
}

fn messages(v: &Value) -> Vec<Message> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|m| Message {
            role: m["role"].as_str().unwrap().into(),
            content: m["content"].as_str().unwrap().into(),
            reasoning_content: m
                .get("reasoning_content")
                .map(|r| r.as_str().unwrap().into()),
            ..Default::default()
        })
        .collect()
}

fn greedy(max_tokens: usize) -> GenerateParams {
    GenerateParams {
        max_tokens: Some(max_tokens),
        sampling: SamplingParams::greedy(),
        ..Default::default()
    }
}

/// A scratch folder removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> Self {
        let p = std::env::temp_dir().join(format!("deepseek-gen-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

// ------------------------------------------------------------------------------------------
// Tokenizers vs transformers' AutoTokenizer
// ------------------------------------------------------------------------------------------

fn check_corpus(name: &str) {
    let corpus = read_json(&fixture("tokenizers").join("corpus.json"));
    let tok = tokenizer(name);
    let exp = &corpus["expected"][name];
    let strings = corpus["strings"].as_array().unwrap();
    assert!(strings.len() >= 25);
    for (i, s) in strings.iter().enumerate() {
        let s = s.as_str().unwrap();
        let want = ids(&exp["ids"][i]);
        let got = tok.encode(s, false).unwrap();
        assert_eq!(got, want, "{name}: encode({s:?})");
        let got = tok.encode(s, true).unwrap();
        assert_eq!(
            got,
            ids(&exp["ids_add_special"][i]),
            "{name}: encode({s:?}, add_special)"
        );
        let dec = tok.decode(&want, false).unwrap();
        assert_eq!(
            dec,
            exp["decoded"][i].as_str().unwrap(),
            "{name}: decode of {s:?}"
        );
        let dec = tok.decode(&want, true).unwrap();
        assert_eq!(
            dec,
            exp["decoded_skip_special"][i].as_str().unwrap(),
            "{name}: decode(skip) of {s:?}"
        );
    }
}

#[test]
fn r1_tokenizer_matches_transformers_on_corpus() {
    check_corpus(R1);
}

#[test]
fn distill_qwen_tokenizer_matches_transformers_on_corpus() {
    check_corpus(QWEN);
}

#[test]
fn distill_llama_tokenizer_matches_transformers_on_corpus() {
    check_corpus(LLAMA);
}

#[test]
fn r1_tokenizer_special_tokens() {
    let tok = tokenizer(R1);
    assert_eq!(tok.vocab_size(), 128815);
    assert_eq!(tok.bos_id(), Some(0));
    assert_eq!(tok.eos_ids(), [1]);
    assert!(tok.add_bos_token());
    assert_eq!(tok.token_to_id("<think>"), Some(128798));
    assert_eq!(tok.token_to_id("</think>"), Some(128799));
    assert_eq!(tok.token_to_id("<｜User｜>"), Some(128803));
    assert_eq!(tok.id_to_token(128804).as_deref(), Some("<｜Assistant｜>"));
    assert!(tok.is_special(0) && tok.is_special(1) && !tok.is_special(128798));
    // REFERENCE.md's example.
    let text = "<｜begin▁of▁sentence｜><｜User｜>Hello, world! 12345 你好<｜Assistant｜><think>\n";
    assert_eq!(
        tok.encode(text, false).unwrap(),
        [0, 128803, 19923, 14, 2058, 3, 223, 6895, 1883, 223, 30594, 128804, 128798, 201]
    );
    let qwen = tokenizer(QWEN);
    assert_eq!(
        (qwen.bos_id(), qwen.eos_ids()),
        (Some(151646), vec![151643])
    );
    assert_eq!(qwen.token_to_id("<think>"), Some(151648));
    assert!(matches!(
        tok.decode(&[200_000], false),
        Err(Error::TokenOutOfRange { id: 200_000, .. })
    ));
}

#[test]
fn distill_llama_tokenizer_special_tokens() {
    let tok = tokenizer(LLAMA);
    assert_eq!(tok.vocab_size(), 128256);
    assert_eq!((tok.bos_id(), tok.eos_ids()), (Some(128000), vec![128001]));
    assert!(tok.add_bos_token());
    assert_eq!(tok.token_to_id("<｜User｜>"), Some(128011));
    assert_eq!(tok.token_to_id("<｜Assistant｜>"), Some(128012));
    assert_eq!(tok.token_to_id("<think>"), Some(128013));
    assert_eq!(tok.id_to_token(128014).as_deref(), Some("</think>"));
    assert!(tok.is_special(128000) && tok.is_special(128001) && !tok.is_special(128013));
    // R1's REFERENCE.md example through AutoTokenizer (transformers 5.24.0).
    let text = "<｜begin▁of▁sentence｜><｜User｜>Hello, world! 12345 你好<｜Assistant｜><think>\n";
    assert_eq!(
        tok.encode(text, false).unwrap(),
        [128000, 128011, 9906, 11, 1917, 0, 220, 4513, 1774, 118195, 53901, 128012, 128013, 198]
    );
    // Same template as the Qwen distill, and it is not R1's.
    let tmpl = tok.chat_template().unwrap();
    assert_eq!(Some(tmpl), tokenizer(QWEN).chat_template());
    assert_ne!(tmpl, DEEPSEEK_R1_TEMPLATE);
}

#[test]
fn missing_or_malformed_tokenizer_files_are_errors() {
    let dir = TempDir::new("tok-errors");
    match Tokenizer::from_dir(&dir.0) {
        Err(Error::Io { path, .. }) => assert!(path.ends_with("tokenizer.json")),
        other => panic!("expected an Io error naming tokenizer.json, got {other:?}"),
    }
    std::fs::write(dir.0.join("tokenizer.json"), "{\"not\": \"a tokenizer\"}").unwrap();
    match Tokenizer::from_dir(&dir.0) {
        Err(Error::Tokenizer(m)) => assert!(m.contains("tokenizer.json"), "{m}"),
        other => panic!("expected a Tokenizer error, got {other:?}"),
    }
    let real = std::fs::read(tokenizer_dir(R1).join("tokenizer.json")).unwrap();
    std::fs::write(dir.0.join("tokenizer.json"), &real).unwrap();
    std::fs::write(dir.0.join("tokenizer_config.json"), "{ broken").unwrap();
    match Tokenizer::from_dir(&dir.0) {
        Err(Error::Json { path, .. }) => assert!(path.ends_with("tokenizer_config.json")),
        other => panic!("expected a Json error, got {other:?}"),
    }
    std::fs::write(
        dir.0.join("tokenizer_config.json"),
        r#"{"bos_token": "<nope>"}"#,
    )
    .unwrap();
    match Tokenizer::from_dir(&dir.0) {
        Err(Error::Tokenizer(m)) => assert!(m.contains("<nope>"), "{m}"),
        other => panic!("expected a Tokenizer error, got {other:?}"),
    }
    std::fs::write(
        dir.0.join("tokenizer_config.json"),
        r#"{"add_bos_token": "yes"}"#,
    )
    .unwrap();
    assert!(matches!(
        Tokenizer::from_dir(&dir.0),
        Err(Error::Json { .. })
    ));
    // Without a config the tokenizer still works; chat falls back to R1's template.
    std::fs::remove_file(dir.0.join("tokenizer_config.json")).unwrap();
    let bare = Tokenizer::from_dir(&dir.0).unwrap();
    assert_eq!((bare.bos_id(), bare.chat_template()), (None, None));
    let t = ChatTemplate::for_tokenizer(&bare).unwrap();
    assert_eq!(t.source(), DEEPSEEK_R1_TEMPLATE);
    assert_eq!(
        t.render(&[Message::user("hi")], true).unwrap(),
        "<｜begin▁of▁sentence｜><｜User｜>hi<｜Assistant｜><think>\n"
    );
}

/// Every corpus string streamed token by token: whole characters only, same text as decode.
#[test]
fn stream_decoder_never_splits_characters() {
    let corpus = read_json(&fixture("tokenizers").join("corpus.json"));
    for name in [R1, QWEN, LLAMA] {
        let tok = tokenizer(name);
        let mut split_chars = 0;
        for s in corpus["strings"].as_array().unwrap() {
            let ids = tok.encode(s.as_str().unwrap(), false).unwrap();
            let mut d = tok.stream_decoder();
            let mut all = String::new();
            for &id in &ids {
                let mut delta = String::new();
                d.push(id, &mut delta).unwrap();
                assert!(
                    !delta.contains('\u{FFFD}'),
                    "{name}: broken UTF-8 in {delta:?}"
                );
                let raw = tok.decode(&[id], false).unwrap();
                if raw.contains('\u{FFFD}') {
                    split_chars += 1; // this token alone is part of a character
                }
                all.push_str(&delta);
            }
            d.finish(&mut all);
            assert_eq!(all, tok.decode(&ids, true).unwrap(), "{name}");
        }
        assert!(
            split_chars > 10,
            "{name}: the corpus must split characters across tokens"
        );
    }
}

/// Arbitrary id sequences (partial UTF-8 anywhere): streaming equals decode.
#[test]
fn stream_decoder_equals_decode_on_random_ids() {
    let tok = tokenizer(R1);
    let mut x = 0x2545F4914F6CDD1Du64;
    let mut rand = |n: u32| {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        (x % n as u64) as u32
    };
    // Byte tokens (single bytes of multi-byte characters) are ids whose bytes are one byte >= 0x80.
    let bytes: Vec<u32> = (0..tok.vocab_size() as u32)
        .filter(|&id| {
            tok.id_to_token(id).is_some_and(|t| {
                t.chars().count() == 1 && t.chars().next().unwrap() as u32 >= 0x100
            })
        })
        .collect();
    assert!(bytes.len() > 60, "{}", bytes.len());
    for _ in 0..200 {
        let n = 1 + rand(12) as usize;
        let seq: Vec<u32> = (0..n)
            .map(|_| {
                if rand(2) == 0 {
                    bytes[rand(bytes.len() as u32) as usize]
                } else {
                    rand(tok.vocab_size() as u32)
                }
            })
            .collect();
        let mut d = tok.stream_decoder();
        let mut all = String::new();
        for &id in &seq {
            d.push(id, &mut all).unwrap();
        }
        d.finish(&mut all);
        assert_eq!(all, tok.decode(&seq, true).unwrap(), "{seq:?}");
    }
}

// ------------------------------------------------------------------------------------------
// Chat templates vs apply_chat_template
// ------------------------------------------------------------------------------------------

#[test]
fn chat_templates_match_transformers() {
    let cases = read_json(&fixture("templates").join("cases.json"));
    let cases = cases["cases"].as_array().unwrap();
    assert!(cases.len() >= 30);
    let mut think_history = 0;
    let mut per_tokenizer = std::collections::BTreeMap::new();
    for case in cases {
        let name = case["tokenizer"].as_str().unwrap();
        *per_tokenizer.entry(name).or_insert(0) += 1;
        let tok = tokenizer(name);
        let template = ChatTemplate::for_tokenizer(tok).unwrap();
        let msgs = messages(&case["messages"]);
        let agp = case["add_generation_prompt"].as_bool().unwrap();
        let text = template.render(&msgs, agp).unwrap();
        let label = format!("{name}/{}", case["name"].as_str().unwrap());
        assert_eq!(text, case["text"].as_str().unwrap(), "{label}");
        assert_eq!(
            tok.encode(&text, false).unwrap(),
            ids(&case["ids"]),
            "{label}"
        );
        if msgs.iter().any(|m| m.content.contains("</think>")) {
            think_history += 1;
            assert!(
                !text.contains("</think>"),
                "{label}: reasoning must be dropped from history"
            );
        }
    }
    assert!(think_history >= 6);
    // Every tokenizer renders every conversation.
    assert_eq!(
        per_tokenizer.keys().copied().collect::<Vec<_>>(),
        [R1, LLAMA, QWEN]
    );
    assert!(per_tokenizer.values().all(|&n| n == per_tokenizer[R1]));
}

#[test]
fn builtin_template_is_r1s() {
    assert_eq!(tokenizer(R1).chat_template(), Some(DEEPSEEK_R1_TEMPLATE));
    let t = ChatTemplate::deepseek_r1();
    let msgs = [
        Message::system("S"),
        Message::user("Hi"),
        Message::assistant("<think>\nhmm\n</think>\n\nHello"),
        Message::user("Bye"),
    ];
    assert_eq!(
        t.render(&msgs, true).unwrap(),
        "<｜begin▁of▁sentence｜>S<｜User｜>Hi<｜Assistant｜>\n\nHello<｜end▁of▁sentence｜><｜User｜>Bye<｜Assistant｜><think>\n"
    );
}

#[test]
fn template_engine_behaves_like_transformers() {
    assert!(matches!(
        ChatTemplate::new("{% if %}"),
        Err(Error::Template(_))
    ));
    let t = ChatTemplate::new("{{ raise_exception('no system role') }}").unwrap();
    match t.render(&[Message::user("x")], false) {
        Err(Error::Template(m)) => assert!(m.contains("no system role"), "{m}"),
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        ChatTemplate::deepseek_r1().render(&[], true),
        Err(Error::InvalidArgument(_))
    ));
    // Python string methods (pycompat) and loop controls, as transformers allows.
    let t = ChatTemplate::new(
        "{% for m in messages %}{% if loop.index > 1 %}{% break %}{% endif %}{{ m.content.strip().upper() }}{% endfor %}",
    )
    .unwrap();
    assert_eq!(
        t.render(&[Message::user(" a "), Message::user("b")], false)
            .unwrap(),
        "A"
    );
    // trim_blocks + lstrip_blocks: the expected text is jinja2's under transformers' settings.
    let t = ChatTemplate::new(
        "{% for m in messages %}\n    {% if m.role == 'user' %}\n  {{ m.content | trim }}|{{ m.content.split('b') | length }}\n    {% endif %}\n{% endfor %}",
    )
    .unwrap();
    let msgs = [
        Message::user(" ab "),
        Message::system("x"),
        Message::user("bb"),
    ];
    assert_eq!(t.render(&msgs, false).unwrap(), "  ab|2\n  bb|3\n");
}

// ------------------------------------------------------------------------------------------
// Sampling
// ------------------------------------------------------------------------------------------

fn draw(params: SamplingParams, logits: &[f32], n: usize) -> Vec<usize> {
    let mut s = Sampler::new(params).unwrap();
    let mut counts = vec![0; logits.len()];
    for _ in 0..n {
        counts[s.sample(logits).unwrap() as usize] += 1;
    }
    counts
}

#[test]
fn greedy_with_bias_and_penalties() {
    let logits = [1.0, 3.0, 2.0, -1.0];
    let mut s = Sampler::new(SamplingParams::greedy()).unwrap();
    assert_eq!(s.sample(&logits).unwrap(), 1);
    let mut s = Sampler::new(SamplingParams {
        logit_bias: vec![(1, f32::NEG_INFINITY)],
        ..SamplingParams::greedy()
    })
    .unwrap();
    assert_eq!(s.sample(&logits).unwrap(), 2);
    // Repetition penalty 2 on a prompt token: 3 / 2 = 1.5 < 2.
    let mut s = Sampler::new(SamplingParams {
        repetition_penalty: 2.0,
        ..SamplingParams::greedy()
    })
    .unwrap();
    s.add_prompt(&[1]);
    assert_eq!(s.sample(&logits).unwrap(), 2);
    // Frequency 0.3 per occurrence + presence 0.5 once, on generated tokens only.
    let mut s = Sampler::new(SamplingParams {
        frequency_penalty: 0.3,
        presence_penalty: 0.5,
        ..SamplingParams::greedy()
    })
    .unwrap();
    s.add_prompt(&[1]); // prompt tokens do not count for frequency/presence
    assert_eq!(s.sample(&logits).unwrap(), 1);
    s.accept(1); // 3 - 0.3 - 0.5 = 2.2 > 2
    assert_eq!(s.sample(&logits).unwrap(), 1);
    s.accept(1); // 3 - 0.6 - 0.5 = 1.9 < 2
    assert_eq!(s.sample(&logits).unwrap(), 2);
    s.reset();
    assert_eq!(s.sample(&logits).unwrap(), 1);
}

#[test]
fn sampling_follows_softmax_and_truncation() {
    let logits = [2.0f32, 1.0, 0.5, 0.0, -1.0];
    let n = 40_000;
    let base = SamplingParams {
        seed: Some(1),
        ..Default::default()
    };
    let z: f32 = logits.iter().map(|l| l.exp()).sum();
    let counts = draw(base.clone(), &logits, n);
    for (i, &c) in counts.iter().enumerate() {
        let p = logits[i].exp() / z;
        assert!(
            (c as f32 / n as f32 - p).abs() < 0.01,
            "token {i}: {c} vs p {p}"
        );
    }
    // Temperature 0.5 squares the odds of 0 vs 1: e^2.
    let c = draw(
        SamplingParams {
            temperature: 0.5,
            ..base.clone()
        },
        &logits,
        n,
    );
    let ratio = c[0] as f32 / c[1] as f32;
    assert!((ratio / 2f32.exp() - 1.0).abs() < 0.1, "{ratio}");
    let c = draw(
        SamplingParams {
            top_k: 2,
            ..base.clone()
        },
        &logits,
        n,
    );
    assert!(
        c[0] > 0 && c[1] > 0 && c[2..].iter().all(|&x| x == 0),
        "{c:?}"
    );
    // p = [.53 .20 .12 .07 .03]: top_p 0.8 keeps 3 tokens.
    let c = draw(
        SamplingParams {
            top_p: 0.8,
            ..base.clone()
        },
        &logits,
        n,
    );
    assert!(
        c[..3].iter().all(|&x| x > 0) && c[3..].iter().all(|&x| x == 0),
        "{c:?}"
    );
    // A flat distribution: the nucleus of top_p 0.5 is 500 of 1000 tokens (ties broken by id).
    let flat = vec![0.5f32; 1000];
    let c = draw(
        SamplingParams {
            top_p: 0.5,
            ..base.clone()
        },
        &flat,
        n,
    );
    assert!(c[..500].iter().all(|&x| x > 0) && c[500..].iter().all(|&x| x == 0));
    // min_p 0.2: keep p >= 0.2 p_max, i.e. logit >= 2 + ln 0.2 = 0.39.
    let c = draw(
        SamplingParams {
            min_p: 0.2,
            ..base.clone()
        },
        &logits,
        n,
    );
    assert!(
        c[..3].iter().all(|&x| x > 0) && c[3..].iter().all(|&x| x == 0),
        "{c:?}"
    );
}

#[test]
fn sampling_is_seeded() {
    let logits: Vec<f32> = (0..1000)
        .map(|i| ((i * 7919) % 1000) as f32 / 300.0)
        .collect();
    let run = |seed| {
        let mut s = Sampler::new(SamplingParams {
            seed: Some(seed),
            top_p: 0.9,
            ..Default::default()
        })
        .unwrap();
        (0..50)
            .map(|_| s.sample(&logits).unwrap())
            .collect::<Vec<_>>()
    };
    assert_eq!(run(42), run(42));
    assert_ne!(run(42), run(43));
}

#[test]
fn invalid_sampling_parameters_are_errors() {
    let bad = [
        (
            "temperature",
            SamplingParams {
                temperature: -0.1,
                ..Default::default()
            },
        ),
        (
            "temperature",
            SamplingParams {
                temperature: f32::NAN,
                ..Default::default()
            },
        ),
        (
            "top_p",
            SamplingParams {
                top_p: 0.0,
                ..Default::default()
            },
        ),
        (
            "top_p",
            SamplingParams {
                top_p: 1.5,
                ..Default::default()
            },
        ),
        (
            "min_p",
            SamplingParams {
                min_p: 1.1,
                ..Default::default()
            },
        ),
        (
            "repetition_penalty",
            SamplingParams {
                repetition_penalty: 0.0,
                ..Default::default()
            },
        ),
        (
            "frequency_penalty",
            SamplingParams {
                frequency_penalty: 2.5,
                ..Default::default()
            },
        ),
        (
            "presence_penalty",
            SamplingParams {
                presence_penalty: f32::NAN,
                ..Default::default()
            },
        ),
        (
            "logit_bias",
            SamplingParams {
                logit_bias: vec![(0, f32::NAN)],
                ..Default::default()
            },
        ),
    ];
    for (name, p) in bad {
        match Sampler::new(p.clone()) {
            Err(Error::InvalidParameter { name: n, .. }) => assert_eq!(n, name),
            other => panic!("{p:?}: {other:?}"),
        }
    }
    let mut s = Sampler::new(SamplingParams {
        logit_bias: vec![(9, 1.0)],
        ..Default::default()
    })
    .unwrap();
    assert!(matches!(
        s.sample(&[0.0; 4]),
        Err(Error::InvalidParameter { .. })
    ));
    let mut s = Sampler::new(SamplingParams::greedy()).unwrap();
    assert!(s.sample(&[f32::NEG_INFINITY; 3]).is_err());
    let gen = generator();
    for p in [
        GenerateParams {
            max_tokens: Some(0),
            ..Default::default()
        },
        GenerateParams {
            stop: vec![String::new()],
            ..Default::default()
        },
        GenerateParams {
            sampling: SamplingParams {
                top_p: 2.0,
                ..Default::default()
            },
            ..Default::default()
        },
    ] {
        assert!(
            matches!(gen.generate("hi", &p), Err(Error::InvalidParameter { .. })),
            "{p:?}"
        );
    }
}

#[test]
fn generation_config_gives_defaults() {
    let gc =
        GenerationConfig::from_file(fixture("v3_r1tok").join("generation_config.json")).unwrap();
    assert_eq!(
        (
            gc.sampling.temperature,
            gc.sampling.top_p,
            gc.sampling.top_k
        ),
        (0.6, 0.95, 0)
    );
    assert_eq!(
        (gc.bos_token_id, gc.eos_token_ids.clone()),
        (Some(0), vec![1])
    );
    let p = generator().default_params();
    assert_eq!((p.sampling.temperature, p.sampling.top_p), (0.6, 0.95));
    let g =
        GenerationConfig::from_json_str(r#"{"temperature": 0.7, "eos_token_id": [1, 2]}"#).unwrap();
    assert!(
        g.sampling.is_greedy(),
        "no do_sample means greedy, as in transformers"
    );
    assert_eq!(g.eos_token_ids, [1, 2]);
    assert!(matches!(
        GenerationConfig::from_json_str("[1]"),
        Err(Error::Json { .. })
    ));
    assert!(matches!(
        GenerationConfig::from_json_str(r#"{"do_sample": true, "top_p": 0}"#),
        Err(Error::Config { .. })
    ));
    assert!(matches!(
        GenerationConfig::from_file("/nonexistent/generation_config.json"),
        Err(Error::Io { .. })
    ));
}

// ------------------------------------------------------------------------------------------
// Output parsing on scripted token sequences (real R1 tokenizer)
// ------------------------------------------------------------------------------------------

/// Feeds `text`'s tokens (R1 tokenizer) one by one; returns the events and the parser.
fn parse(text: &str, stop: &[&str], in_reasoning: bool) -> (Vec<Event>, OutputParser) {
    parse_with(R1, text, stop, in_reasoning)
}

/// [`parse`] with tokenizer `name`.
fn parse_with(
    name: &str,
    text: &str,
    stop: &[&str],
    in_reasoning: bool,
) -> (Vec<Event>, OutputParser) {
    let tok = tokenizer(name);
    let stop: Vec<String> = stop.iter().map(|s| s.to_string()).collect();
    let mut p = OutputParser::new(tok, &stop, in_reasoning);
    let mut q = VecDeque::new();
    let mut events = Vec::new();
    for id in tok.encode(text, false).unwrap() {
        p.push(id, &mut q).unwrap();
        events.extend(q.drain(..));
    }
    p.finish(&mut q);
    events.extend(q.drain(..));
    (events, p)
}

fn joined(events: &[Event], kind: EventKind) -> String {
    events
        .iter()
        .filter(|e| e.kind == kind)
        .map(|e| e.text.as_str())
        .collect()
}

#[test]
fn reasoning_is_split_from_content() {
    // The template forced `<think>\n`: the output only closes the tag.
    let (ev, p) = parse(
        "Let me think: 1+1 is 2. 😀\n</think>\n\nThe answer is **2**.",
        &[],
        true,
    );
    assert_eq!(
        joined(&ev, EventKind::Reasoning),
        "Let me think: 1+1 is 2. 😀"
    );
    assert_eq!(joined(&ev, EventKind::Content), "The answer is **2**.");
    assert_eq!(p.reasoning(), Some("Let me think: 1+1 is 2. 😀"));
    assert_eq!(p.content(), "The answer is **2**.");
    let first_content = ev
        .iter()
        .position(|e| e.kind == EventKind::Content)
        .unwrap();
    assert!(ev[..first_content]
        .iter()
        .all(|e| e.kind == EventKind::Reasoning));
    assert!(ev
        .iter()
        .all(|e| !e.text.is_empty() && !e.text.contains("think>")));
    assert!(ev.len() > 5, "streamed in pieces");
    // The model opens the tag itself.
    let (ev, p) = parse("<think>\nhmm\n</think>\n\nok", &[], false);
    assert_eq!(
        (joined(&ev, EventKind::Reasoning), p.content()),
        ("hmm".into(), "ok")
    );
    // Never closed (e.g. max_tokens hit): everything is reasoning.
    let (ev, p) = parse("still thinking about 你好", &[], true);
    assert_eq!(
        joined(&ev, EventKind::Reasoning),
        "still thinking about 你好"
    );
    assert_eq!(
        (p.reasoning(), p.content()),
        (Some("still thinking about 你好"), "")
    );
    // No reasoning at all.
    let (ev, p) = parse("Plain answer.", &[], false);
    assert_eq!(
        (joined(&ev, EventKind::Content), p.reasoning()),
        ("Plain answer.".into(), None)
    );
    assert!(prompt_opens_reasoning("<｜Assistant｜><think>\n"));
    assert!(!prompt_opens_reasoning(
        "<｜Assistant｜><think>\n\n</think>\n\n"
    ));
}

/// The distill tokenizers' `<think>`/`</think>` are single (non-special) added tokens of their own
/// ids; the split works on them as on R1's, after each one's own generation prompt.
#[test]
fn reasoning_split_works_on_distill_tokenizers() {
    for name in [QWEN, LLAMA] {
        let tok = tokenizer(name);
        let prompt = ChatTemplate::for_tokenizer(tok)
            .unwrap()
            .render(&[Message::user("1+1?")], true)
            .unwrap();
        assert!(prompt_opens_reasoning(&prompt), "{name}: {prompt:?}");
        let (open, close) = (
            tok.token_to_id("<think>").unwrap(),
            tok.token_to_id("</think>").unwrap(),
        );
        let text = "Let me think: 1+1 is 2. 😀\n</think>\n\nThe answer is **2**.";
        let ids = tok.encode(text, false).unwrap();
        assert_eq!(ids.iter().filter(|&&i| i == close).count(), 1, "{name}");
        let (ev, p) = parse_with(name, text, &[], true);
        assert_eq!(
            joined(&ev, EventKind::Reasoning),
            "Let me think: 1+1 is 2. 😀",
            "{name}"
        );
        assert_eq!(joined(&ev, EventKind::Content), "The answer is **2**.");
        assert_eq!(p.reasoning(), Some("Let me think: 1+1 is 2. 😀"));
        assert!(ev
            .iter()
            .all(|e| !e.text.is_empty() && !e.text.contains("think>")));
        // The model opens the tag itself; a stop string inside the answer.
        let text = "<think>\nhmm 你好\n</think>\n\nok END x";
        assert_eq!(tok.encode(text, false).unwrap()[0], open, "{name}");
        let (ev, p) = parse_with(name, text, &["END"], false);
        assert_eq!(
            (joined(&ev, EventKind::Reasoning), p.content(), p.stopped()),
            ("hmm 你好".into(), "ok ", true),
            "{name}"
        );
    }
}

#[test]
fn stop_strings_are_never_emitted() {
    let text = "Hello world, this is the END of it. 你好世界";
    for stop in ["END", "the END", "d, th", "世界", "好世"] {
        let (ev, p) = parse(text, &["never", stop], false);
        let want = &text[..text.find(stop).unwrap()];
        assert!(p.stopped(), "{stop}");
        assert_eq!(p.text(), want, "{stop}");
        let all: String = ev.iter().map(|e| e.text.as_str()).collect();
        assert_eq!(all, want, "{stop}");
    }
    // A partial stop string at the end is released when generation ends.
    let (ev, p) = parse("almost EN", &["END"], false);
    assert!(!p.stopped());
    assert_eq!(joined(&ev, EventKind::Content), "almost EN");
    // A stop string inside the reasoning ends it too.
    let (ev, p) = parse("abc STOP def</think>x", &["STOP"], true);
    assert_eq!(
        (joined(&ev, EventKind::Reasoning), p.content()),
        ("abc".into(), "")
    );
}

// ------------------------------------------------------------------------------------------
// End to end: v3_r1tok + the R1 tokenizer
// ------------------------------------------------------------------------------------------

#[test]
fn greedy_chat_matches_transformers() {
    let golden = read_json(&fixture("v3_r1tok").join("golden.json"));
    let gen = generator();
    let msgs = [Message::user("What is 1+1?")];
    let (text, prompt) = gen.chat_tokens(&msgs).unwrap();
    assert_eq!(text, golden["prompt"].as_str().unwrap());
    assert_eq!(prompt, ids(&golden["input_ids"]));
    let want = ids(&golden["greedy_ids"]);
    let mut events = Vec::new();
    let r = gen
        .chat_stream(&msgs, &greedy(want.len()))
        .unwrap()
        .run(|e| {
            events.push(e.clone());
            true
        })
        .unwrap();
    assert_eq!(r.tokens, want);
    assert_eq!(r.finish_reason, FinishReason::Length);
    assert_eq!(
        (
            r.usage.prompt_tokens,
            r.usage.cached_tokens,
            r.usage.completion_tokens
        ),
        (12, 0, 16)
    );
    assert!(r.usage.prefill_secs > 0.0 && r.usage.decode_secs > 0.0 && r.usage.decode_tok_s > 0.0);
    // The prompt forced `<think>\n` and the random model never closes it.
    assert_eq!(r.text, gen.tokenizer().decode(&want, true).unwrap());
    assert_eq!(r.reasoning_content.as_deref(), Some(r.text.trim()));
    assert_eq!(r.content, "");
    assert!(events.iter().all(|e| e.kind == EventKind::Reasoning));
    assert_eq!(
        events.iter().map(|e| e.text.as_str()).collect::<String>(),
        r.text.trim()
    );
}

#[test]
fn sampling_with_a_seed_is_reproducible() {
    let gen = generator();
    let params = |seed| GenerateParams {
        max_tokens: Some(12),
        sampling: SamplingParams {
            seed: Some(seed),
            ..gen.default_params().sampling
        },
        ..Default::default()
    };
    let a = gen.generate("Once upon a time", &params(7)).unwrap();
    let b = gen.generate("Once upon a time", &params(7)).unwrap();
    let c = gen.generate("Once upon a time", &params(8)).unwrap();
    assert_eq!(a.tokens, b.tokens);
    assert_eq!(a.text, b.text);
    assert_ne!(a.tokens, c.tokens);
    assert_eq!(a.tokens.len(), 12);
}

/// Random tokens (any bytes) at high temperature: deltas always join to the decoded text.
#[test]
fn streamed_text_is_valid_and_complete() {
    let gen = generator();
    let tok = gen.tokenizer();
    for seed in 0..6 {
        let params = GenerateParams {
            max_tokens: Some(24),
            sampling: SamplingParams {
                temperature: 1.5,
                seed: Some(seed),
                ..Default::default()
            },
            ..Default::default()
        };
        let mut stream = gen.stream("Tell me a story.", &params).unwrap();
        let mut all = String::new();
        for e in stream.by_ref() {
            all.push_str(&e.unwrap().text);
        }
        let r = stream.into_result().unwrap();
        assert!(
            r.tokens.iter().all(|&t| (t as usize) < tok.vocab_size()),
            "padding ids sampled"
        );
        let body: Vec<u32> = r
            .tokens
            .iter()
            .copied()
            .filter(|t| !gen.eos_ids().contains(t))
            .collect();
        assert_eq!(r.text, tok.decode(&body, true).unwrap(), "seed {seed}");
        assert_eq!(all, r.content, "seed {seed}: no reasoning in a raw prompt");
    }
}

#[test]
fn raw_prompts_start_with_bos() {
    let gen = generator();
    assert_eq!(gen.prompt_tokens("hi").unwrap(), [0, 6366]);
    assert_eq!(
        gen.prompt_tokens("<｜begin▁of▁sentence｜>hi").unwrap(),
        [0, 6366]
    );
}

#[test]
fn stop_string_ends_generation() {
    let gen = generator();
    let free = gen.generate("Once upon a time", &greedy(16)).unwrap();
    let chars: Vec<(usize, char)> = free.text.char_indices().collect();
    // A stop string from the middle of the free-running text, not occurring earlier.
    let (from, to) = (chars.len() / 2, chars.len() / 2 + 2);
    let stop = &free.text[chars[from].0..chars.get(to).map_or(free.text.len(), |c| c.0)];
    let at = free.text.find(stop).unwrap();
    let mut streamed = String::new();
    let r = gen
        .generate_with(
            "Once upon a time",
            &GenerateParams {
                stop: vec![stop.to_string()],
                ..greedy(16)
            },
            |e| {
                streamed.push_str(&e.text);
                true
            },
        )
        .unwrap();
    assert_eq!(r.finish_reason, FinishReason::Stop);
    assert_eq!(r.text, free.text[..at]);
    assert_eq!(streamed, r.content);
    assert!(!streamed.contains(stop));
    assert!(r.tokens.len() < free.tokens.len());
    assert_eq!(r.tokens[..], free.tokens[..r.tokens.len()]);
}

#[test]
fn eos_ends_generation() {
    let gen = generator();
    let params = GenerateParams {
        sampling: SamplingParams {
            logit_bias: vec![(1, 1e4)],
            ..SamplingParams::greedy()
        },
        max_tokens: Some(5),
        ..Default::default()
    };
    let r = gen.chat(&[Message::user("hi")], &params).unwrap();
    assert_eq!(
        (r.finish_reason, r.tokens.clone(), r.text.as_str()),
        (FinishReason::Stop, vec![1], "")
    );
    assert_eq!(r.usage.completion_tokens, 1);
}

#[test]
fn max_tokens_and_context_length_end_with_length() {
    let gen = generator();
    let r = gen.generate("hi", &greedy(3)).unwrap();
    assert_eq!((r.finish_reason, r.tokens.len()), (FinishReason::Length, 3));
    let prompt_len = gen.prompt_tokens("hi").unwrap().len();
    let small = gen.clone().with_session_options(SessionOptions {
        context_length: Some(prompt_len + 2),
        ..Default::default()
    });
    let r = small
        .generate(
            "hi",
            &GenerateParams {
                sampling: SamplingParams::greedy(),
                ..Default::default()
            },
        )
        .unwrap();
    // The last sampled token need not fit in the cache: context - prompt + 1 tokens.
    assert_eq!((r.finish_reason, r.tokens.len()), (FinishReason::Length, 3));
    let long = "word ".repeat(50);
    assert!(matches!(
        small.generate(&long, &greedy(1)),
        Err(Error::ContextOverflow { .. })
    ));
    assert!(
        matches!(gen.generate("", &greedy(1)).map(|_| ()), Ok(())),
        "BOS makes a prompt"
    );
    assert!(matches!(
        gen.stream_tokens(&[], &greedy(1)),
        Err(Error::InvalidArgument(_))
    ));
    assert!(
        matches!(
            gen.generate(
                "hi",
                &GenerateParams {
                    sampling: SamplingParams {
                        logit_bias: vec![(129_000, 1.0)],
                        ..Default::default()
                    },
                    ..greedy(1)
                }
            ),
            Err(Error::InvalidParameter { .. })
        ),
        "padding ids are outside the sampled vocabulary"
    );
}

#[test]
fn callback_returning_false_cancels() {
    let gen = generator();
    let mut calls = 0;
    let r = gen
        .generate_with("Once upon a time", &greedy(16), |_| {
            calls += 1;
            false
        })
        .unwrap();
    assert_eq!(calls, 1);
    assert_eq!(r.finish_reason, FinishReason::Cancelled);
    assert!(r.tokens.len() < 16);
}

#[test]
fn chat_session_reuses_the_cache() {
    let gen = generator();
    let mut chat = gen.chat_session().unwrap();
    chat.push(Message::system(
        "You are a helpful assistant. Be brief and precise.",
    ));
    let r1 = chat.send("What is 1+1?", &greedy(6)).unwrap();
    assert_eq!(r1.usage.cached_tokens, 0);
    assert_eq!(
        chat.session().len(),
        r1.usage.prompt_tokens + 5,
        "all but the last token cached"
    );
    assert_eq!(chat.cached_tokens().len(), chat.session().len());
    assert_eq!(chat.messages().len(), 3);
    assert_eq!(chat.messages()[2].role, "assistant");

    let before = chat.cached_tokens().to_vec();
    let mut next = chat.messages().to_vec();
    next.push(Message::user("And 2+2?"));
    let (_, prompt2) = gen.chat_tokens(&next).unwrap();
    let common = before
        .iter()
        .zip(&prompt2)
        .take_while(|(a, b)| a == b)
        .count();
    let r2 = chat.send("And 2+2?", &greedy(6)).unwrap();
    assert_eq!(r2.usage.prompt_tokens, prompt2.len());
    assert_eq!(
        r2.usage.cached_tokens, common,
        "only the new tokens are evaluated"
    );
    // R1's template drops the reply's reasoning: the cache is reused up to `<｜Assistant｜>`.
    assert!(
        common >= r1.usage.prompt_tokens - 2,
        "{common} vs {}",
        r1.usage.prompt_tokens
    );
    assert!(r2.usage.prompt_tokens - r2.usage.cached_tokens < r2.usage.prompt_tokens / 2);
    // Same tokens as answering the whole conversation from scratch.
    let fresh = gen.chat(&next, &greedy(6)).unwrap();
    assert_eq!(r2.tokens, fresh.tokens);

    // Re-sending after a reset evaluates everything again.
    chat.reset();
    assert_eq!(chat.session().len(), 0);
    let r3 = chat.send("What is 1+1?", &greedy(2)).unwrap();
    assert_eq!(r3.usage.cached_tokens, 0);
}

#[test]
fn dropped_chat_stream_keeps_the_partial_reply() {
    let gen = generator();
    let mut chat = gen.chat_session().unwrap();
    {
        let mut s = chat.send_stream("Hello", &greedy(8)).unwrap();
        let _ = s.next();
    }
    assert_eq!(chat.messages().len(), 2);
    assert_eq!(chat.messages()[1].role, "assistant");
    assert_eq!(chat.cached_tokens().len(), chat.session().len());
    // An invalid request leaves the conversation untouched.
    assert!(chat.send("x", &greedy(0)).is_err());
    assert_eq!(chat.messages().len(), 2);
}

#[test]
fn tokenizer_must_fit_the_model() {
    let small = Arc::new(
        Model::load(
            fixture("v3_tiny"),
            LoadOptions {
                threads: Some(1),
                ..Default::default()
            },
        )
        .unwrap(),
    );
    match Generator::new(small, tokenizer(R1).clone()) {
        Err(Error::InvalidArgument(m)) => assert!(m.contains("vocab_size"), "{m}"),
        other => panic!("{other:?}"),
    }
}

// ------------------------------------------------------------------------------------------
// Bad requests and bad generation configs are refused before any work; cancel checks
// ------------------------------------------------------------------------------------------

#[test]
fn a_prompt_longer_than_the_context_is_refused_at_once() {
    let gen = generator().clone().with_session_options(SessionOptions {
        context_length: Some(600),
        ..Default::default()
    });
    let long = "word ".repeat(1100);
    let ids = gen.prompt_tokens(&long).unwrap();
    let msgs = [Message::user(long.clone())];
    let (_, chat_ids) = gen.chat_tokens(&msgs).unwrap();
    assert!(ids.len() > 2 * 512, "needs more than two prefill chunks");
    let results = [
        (ids.len(), gen.generate(&long, &greedy(1)).map(|_| ())),
        (ids.len(), gen.stream_tokens(&ids, &greedy(1)).map(|_| ())),
        (
            chat_ids.len(),
            gen.chat_stream(&msgs, &greedy(1)).map(|_| ()),
        ),
    ];
    // Not "512 cached + 512 new" after filling the context chunk by chunk: the whole prompt.
    for (n, r) in results {
        match r {
            Err(Error::ContextOverflow {
                cached: 0,
                new,
                limit: 600,
            }) => assert_eq!(new, n),
            other => panic!("{other:?}"),
        }
    }
}

#[test]
fn generation_config_values_are_checked_at_load() {
    match GenerationConfig::from_json_str(r#"{"max_new_tokens": 0}"#) {
        Err(Error::Config { field, .. }) => assert_eq!(field, "max_new_tokens"),
        other => panic!("{other:?}"),
    }
    // Out-of-range sampling defaults are a bad config field, like any other.
    match GenerationConfig::from_json_str(r#"{"do_sample": true, "top_p": 0}"#) {
        Err(Error::Config { field, .. }) => assert_eq!(field, "top_p"),
        other => panic!("{other:?}"),
    }
    // A checkpoint folder with max_new_tokens 0 used to load, then fail every call.
    let dir = TempDir::new("max-new-tokens");
    for f in ["config.json", "model.safetensors"] {
        std::fs::copy(fixture("v3_r1tok").join(f), dir.0.join(f)).unwrap();
    }
    std::fs::write(
        dir.0.join("generation_config.json"),
        r#"{"eos_token_id": 1, "max_new_tokens": 0}"#,
    )
    .unwrap();
    let options = LoadOptions {
        threads: Some(1),
        ..Default::default()
    };
    match Generator::load(&dir.0, Some(&tokenizer_dir(R1)), options) {
        Err(Error::Config { field, .. }) => assert_eq!(field, "max_new_tokens"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn eos_ids_the_tokenizer_cannot_produce_are_refused() {
    // R1's config pads the vocabulary to 129280 rows; the tokenizer has 128815 ids, and only
    // those are ever sampled: an EOS id between the two could never end generation.
    let gc = GenerationConfig::from_json_str(r#"{"eos_token_id": [1, 129000]}"#).unwrap();
    match generator().clone().with_generation_config(gc) {
        Err(Error::Config { field, message }) => {
            assert_eq!(field, "eos_token_id");
            assert!(message.contains("129000"), "{message}");
        }
        other => panic!("{other:?}"),
    }
    let ok = GenerationConfig::from_json_str(r#"{"eos_token_id": [1]}"#).unwrap();
    assert!(generator().clone().with_generation_config(ok).is_ok());
}

#[test]
fn logit_bias_outside_the_tokenizer_is_refused_before_evaluating() {
    let p = GenerateParams {
        sampling: SamplingParams {
            logit_bias: vec![(129_000, 1.0)],
            ..Default::default()
        },
        ..greedy(1)
    };
    match generator().stream("hi", &p) {
        Err(Error::InvalidParameter { name, message }) => {
            assert_eq!(name, "logit_bias");
            assert!(message.contains("129000"), "{message}");
        }
        other => panic!("{other:?}"),
    }
}

/// A cancel check that says stop from its `n`-th poll on, and counts its polls.
fn cancel_after(n: usize) -> (CancelCheck, Arc<AtomicUsize>) {
    let polls = Arc::new(AtomicUsize::new(0));
    let p = polls.clone();
    (
        CancelCheck::new(move || p.fetch_add(1, Ordering::SeqCst) + 1 >= n),
        polls,
    )
}

#[test]
fn a_cancel_check_stops_rendering() {
    // A template that writes a lot: the check is polled while it renders.
    let flood =
        ChatTemplate::new("{% for i in range(100000) %}{{ messages[0].content }}{% endfor %}")
            .unwrap();
    let gen = generator().clone().with_template(flood);
    let (cancel, polls) = cancel_after(3);
    let params = GenerateParams {
        cancel: Some(cancel),
        ..greedy(4)
    };
    let msgs = [Message::user("x")];
    assert!(matches!(gen.chat(&msgs, &params), Err(Error::Cancelled)));
    assert_eq!(polls.load(Ordering::SeqCst), 3);
    // A chat session refused that way keeps its conversation as it was.
    let mut chat = gen.chat_session().unwrap();
    let (cancel, _) = cancel_after(1);
    let params = GenerateParams {
        cancel: Some(cancel),
        ..greedy(4)
    };
    assert!(matches!(chat.send("x", &params), Err(Error::Cancelled)));
    assert!(chat.messages().is_empty());
}

#[test]
fn a_cancel_check_stops_prefill_between_chunks() {
    let gen = generator();
    let prompt = "word ".repeat(990);
    let n = gen.prompt_tokens(&prompt).unwrap().len();
    assert!((513..1024).contains(&n), "{n}: one full chunk and a rest");
    let mut session = gen.new_session().unwrap();
    let mut cached = Vec::new();
    // Poll 1 (before the first chunk) goes on, poll 2 (before the rest) stops.
    let (cancel, _) = cancel_after(2);
    let params = GenerateParams {
        cancel: Some(cancel),
        ..greedy(4)
    };
    let r = gen
        .stream_on(&mut session, &mut cached, &prompt, &params)
        .unwrap()
        .into_result()
        .unwrap();
    assert_eq!(r.finish_reason, FinishReason::Cancelled);
    assert!(r.tokens.is_empty());
    // The chunk evaluated is kept and recorded, so the next call reuses it.
    assert_eq!((session.len(), cached.len()), (512, 512));
    let r = gen
        .stream_on(&mut session, &mut cached, &prompt, &greedy(2))
        .unwrap()
        .into_result()
        .unwrap();
    assert_eq!(r.usage.cached_tokens, 512);
    assert_eq!(r.tokens, gen.generate(&prompt, &greedy(2)).unwrap().tokens);
}

#[test]
fn a_rejected_turn_leaves_the_conversation_and_cache_unchanged() {
    let gen = generator().clone().with_session_options(SessionOptions {
        context_length: Some(64),
        ..Default::default()
    });
    let mut chat = gen.chat_session().unwrap();
    chat.send("What is 1+1?", &greedy(2)).unwrap();
    let (messages, cached) = (chat.messages().to_vec(), chat.cached_tokens().to_vec());
    // Too long for the context: refused, and the message does not stay in the conversation.
    assert!(matches!(
        chat.send(&"word ".repeat(100), &greedy(2)),
        Err(Error::ContextOverflow { .. })
    ));
    assert_eq!(chat.messages(), messages);
    // A bias outside the vocabulary is refused before the cache is touched.
    let bad_bias = GenerateParams {
        sampling: SamplingParams {
            logit_bias: vec![(200_000, 1.0)],
            ..Default::default()
        },
        ..greedy(2)
    };
    assert!(matches!(
        chat.send("And 2+2?", &bad_bias),
        Err(Error::InvalidParameter { .. })
    ));
    assert_eq!(chat.messages(), messages);
    assert_eq!(
        (chat.cached_tokens(), chat.session().len()),
        (&cached[..], cached.len())
    );
    // The next turn is answered as if the rejected ones never happened.
    let r = chat.send("And 2+2?", &greedy(2)).unwrap();
    let mut want = messages.clone();
    want.push(Message::user("And 2+2?"));
    assert_eq!(r.tokens, gen.chat(&want, &greedy(2)).unwrap().tokens);
}
