//! Unit tests of the GGUF <-> tokenizer translation: our metadata against llama.cpp's
//! converter (goldens made by `tools/make_gguf_vocab_goldens.py`), the converter's fingerprints,
//! and every malformed vocabulary as a typed error. The corpus round trips and llama.cpp's own
//! tokenizer test pairs are integration tests (`tests/gguf_vocab.rs`).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use super::*;
use crate::loader::gguf::Writer;

const MODELS: [&str; 3] = [
    "deepseek-r1",
    "deepseek-r1-distill-qwen-7b",
    "deepseek-r1-distill-llama-8b",
];

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn tokenizer_files(name: &str) -> (Vec<u8>, Vec<u8>) {
    let dir = fixtures().join("tokenizers").join(name);
    (
        std::fs::read(dir.join("tokenizer.json")).unwrap(),
        std::fs::read(dir.join("tokenizer_config.json")).unwrap(),
    )
}

fn goldens() -> Json {
    let path = fixtures().join("gguf_vocab/converter.json");
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

/// `tools/make_gguf_vocab_goldens.py`'s digest: sha256 of the type tag, NUL, the value's body.
fn digest(v: &Value) -> (String, String) {
    fn tag(v: &Value) -> String {
        match v {
            Value::U8(_) => "u8".into(),
            Value::I8(_) => "i8".into(),
            Value::U16(_) => "u16".into(),
            Value::I16(_) => "i16".into(),
            Value::U32(_) => "u32".into(),
            Value::I32(_) => "i32".into(),
            Value::U64(_) => "u64".into(),
            Value::I64(_) => "i64".into(),
            Value::F32(_) => "f32".into(),
            Value::F64(_) => "f64".into(),
            Value::Bool(_) => "bool".into(),
            Value::String(_) => "str".into(),
            Value::Array(a) => format!("arr:{}", a.first().map_or("u8".into(), tag)),
        }
    }
    fn body(v: &Value, out: &mut Vec<u8>) {
        match v {
            Value::String(s) => out.extend_from_slice(s.as_bytes()),
            Value::Bool(b) => out.push(if *b { b'1' } else { b'0' }),
            Value::Array(items) => {
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(0);
                    }
                    body(item, out);
                }
            }
            v => out.extend_from_slice(v.as_i64().expect("integer").to_string().as_bytes()),
        }
    }
    let tag = tag(v);
    let mut bytes = tag.clone().into_bytes();
    bytes.push(0);
    body(v, &mut bytes);
    (tag, sha256_hex(&bytes))
}

#[test]
fn sha256_matches_fips_examples() {
    assert_eq!(
        sha256_hex(b""),
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    );
    assert_eq!(
        sha256_hex(b"abc"),
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    );
    // Two blocks: the length lands in a padding block of its own.
    assert_eq!(
        sha256_hex(b"abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq"),
        "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1"
    );
    assert_eq!(
        sha256_hex(&[b'a'; 1000]),
        "41edece42d63e8d9bf515a9ba6932e1c20cbc9f5a5d134645adb5db1b9737ea3"
    );
}

/// Every `tokenizer.*` key llama.cpp's converter writes for the real tokenizers, in its order,
/// with its type and value.
#[test]
fn metadata_matches_llama_cpps_converter() {
    let golden = goldens();
    for name in MODELS {
        let entry = &golden["models"][name];
        let vocab_size = entry["vocab_size"].as_u64().unwrap() as usize;
        let (json, config) = tokenizer_files(name);
        let ours = gguf_vocab_metadata(&json, Some(&config), vocab_size).unwrap();
        let theirs: Vec<(&str, &str, &str)> = entry["keys"]
            .as_array()
            .unwrap()
            .iter()
            .map(|k| {
                (
                    k[0].as_str().unwrap(),
                    k[1].as_str().unwrap(),
                    k[2].as_str().unwrap(),
                )
            })
            .collect();
        let our_keys: Vec<&str> = ours.iter().map(|(k, _)| k.as_str()).collect();
        let their_keys: Vec<&str> = theirs.iter().map(|k| k.0).collect();
        assert_eq!(our_keys, their_keys, "{name}: keys");
        for ((key, value), (_, tag, hash)) in ours.iter().zip(&theirs) {
            let (our_tag, our_hash) = digest(value);
            assert_eq!(our_tag, *tag, "{name}: type of {key}");
            assert_eq!(our_hash, *hash, "{name}: value of {key}");
        }
        let pre = ours
            .iter()
            .find(|(k, _)| k == "tokenizer.ggml.pre")
            .unwrap();
        assert_eq!(pre.1.as_str(), entry["pre"].as_str(), "{name}");
    }
}

/// The converter names these tokenizers by a fingerprint that depends on whether
/// `tokenizer.encode` prepends BOS: transformers 4 does for `LlamaTokenizerFast` configs, 5 loads
/// them as `TokenizersBackend` and does not. Without BOS we too find the converter's names, except
/// for R1-Distill-Llama: its fingerprint is then Smaug's, a name for which llama.cpp applies every
/// merge while the tokenizer ignores merges for words in its vocabulary, so we refuse it.
#[test]
fn fingerprints_follow_the_converter_under_both_transformers() {
    let golden = goldens();
    for name in MODELS {
        let entry = &golden["models"][name];
        let (json, config) = tokenizer_files(name);
        let mut config: Json = serde_json::from_slice(&config).unwrap();
        config["tokenizer_class"] = "TokenizersBackend".into();
        let config = serde_json::to_vec(&config).unwrap();
        let t5 = entry["pre_transformers_5"].as_str().unwrap();
        match gguf_vocab_metadata(&json, Some(&config), 160_000) {
            Ok(meta) => {
                let pre = &meta
                    .iter()
                    .find(|(k, _)| k == "tokenizer.ggml.pre")
                    .unwrap()
                    .1;
                assert_eq!(pre.as_str(), Some(t5), "{name} under transformers 5");
            }
            Err(e) => {
                assert_eq!(name, "deepseek-r1-distill-llama-8b");
                assert_eq!(t5, "smaug-bpe");
                assert!(e.to_string().contains("`smaug-bpe`"), "{e}");
            }
        }
    }
}

/// The per-family lists of CONTROL tokens that stay non-special are exactly the added tokens
/// the real tokenizer.json files mark non-special although they look special.
#[test]
fn non_special_control_lists_match_the_checkpoints() {
    for name in MODELS {
        let (json, _) = tokenizer_files(name);
        let tj: Json = serde_json::from_slice(&json).unwrap();
        let pre = identify(&tj, tj["model"].as_object().unwrap()).unwrap();
        let want: Vec<String> = added_tokens(&tj)
            .unwrap()
            .into_iter()
            .filter(|a| !a.special && looks_special(&a.content))
            .map(|a| a.content)
            .collect();
        assert_eq!(pre.non_special(), want, "{name}");
    }
}

/// Each supported name selects the pre-tokenizer llama.cpp selects for it.
#[test]
fn pre_names_resolve() {
    for name in PRE_NAMES {
        assert!(Pre::from_name(name).is_some(), "{name}");
    }
    for p in Pre::ALL {
        assert_eq!(Pre::from_name(p.canonical_name()), Some(p));
        assert!(PRE_NAMES.contains(&p.canonical_name()));
    }
    assert_eq!(Pre::from_name("default"), None);
}

// ---------------------------------------------------------------------------------------------
// A synthetic vocabulary through a real GGUF file
// ---------------------------------------------------------------------------------------------

fn strings(items: &[&str]) -> Value {
    Value::Array(items.iter().map(|s| Value::String(s.to_string())).collect())
}

/// ids: 0 `<s>` 1 `</s>` (CONTROL), 2 a, 3 b, 4 c, 5 ab, 6 abc, 7 Ġ, 8 Ġa (NORMAL), 9 `<think>`
/// (USER_DEFINED), 10 `<｜User｜>` (CONTROL, non-special in DeepSeek-V3's family), 11 `[PAD11]`.
fn synthetic() -> Vec<(String, Value)> {
    let types = [3, 3, 1, 1, 1, 1, 1, 1, 1, 4, 3, 5];
    vec![
        ("tokenizer.ggml.model".into(), Value::String("gpt2".into())),
        (
            "tokenizer.ggml.pre".into(),
            Value::String("deepseek-v3".into()),
        ),
        (
            "tokenizer.ggml.tokens".into(),
            strings(&[
                "<s>",
                "</s>",
                "a",
                "b",
                "c",
                "ab",
                "abc",
                "Ġ",
                "Ġa",
                "<think>",
                "<｜User｜>",
                "[PAD11]",
            ]),
        ),
        (
            "tokenizer.ggml.token_type".into(),
            Value::Array(types.iter().map(|&t| Value::I32(t)).collect()),
        ),
        (
            "tokenizer.ggml.merges".into(),
            strings(&["a b", "ab c", "Ġ a"]),
        ),
        ("tokenizer.ggml.bos_token_id".into(), Value::U32(0)),
        ("tokenizer.ggml.eos_token_id".into(), Value::U32(1)),
        ("tokenizer.ggml.add_bos_token".into(), Value::Bool(true)),
        (
            "tokenizer.chat_template".into(),
            Value::String("{{ bos_token }}".into()),
        ),
    ]
}

/// A GGUF file holding `meta`, removed on drop.
struct Temp(PathBuf);

impl Temp {
    fn new(meta: &[(String, Value)]) -> Temp {
        static N: AtomicUsize = AtomicUsize::new(0);
        let path = std::env::temp_dir().join(format!(
            "deepseek-gguf-vocab-unit-{}-{}.gguf",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let mut w = Writer::new();
        for (k, v) in meta {
            w.set(k, v.clone());
        }
        w.write(&path).unwrap();
        Temp(path)
    }
}

impl Drop for Temp {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn load(meta: &[(String, Value)]) -> Result<Tokenizer> {
    let file = Temp::new(meta);
    tokenizer_from_gguf(&GgufFile::open(&file.0).unwrap())
}

fn with(key: &str, value: Option<Value>) -> Vec<(String, Value)> {
    let mut meta = synthetic();
    meta.retain(|(k, _)| k != key);
    if let Some(v) = value {
        meta.push((key.into(), v));
    }
    meta
}

#[test]
fn synthetic_vocabulary_round_trips() {
    let tok = load(&synthetic()).unwrap();
    // "abc" merges a+b then ab+c; " ab" is one word, Ġab, where a+b (rank 0) beats Ġ+a (rank 2);
    // <think> and <｜User｜> are added tokens.
    assert_eq!(
        tok.encode("abc ab<think><｜User｜><s>", false).unwrap(),
        [6, 7, 5, 9, 10, 0]
    );
    assert_eq!(tok.encode(" a", false).unwrap(), [8]);
    assert_eq!(tok.vocab_size(), 11);
    assert!(!tok.contains(11), "UNUSED padding is no token");
    assert!(tok.is_special(0) && tok.is_special(1));
    assert!(!tok.is_special(9) && !tok.is_special(10) && !tok.is_special(6));
    assert_eq!((tok.bos_id(), tok.eos_ids()), (Some(0), vec![1]));
    assert!(tok.add_bos_token() && !tok.add_eos_token());
    assert_eq!(tok.chat_template(), Some("{{ bos_token }}"));
    assert_eq!(
        tok.decode(&[0, 6, 8, 9, 10, 1], true).unwrap(),
        "abc a<think><｜User｜>"
    );
    assert!(matches!(
        tok.decode(&[11], false),
        Err(Error::TokenOutOfRange { id: 11, .. })
    ));
    // Under Qwen2's name the same table gets Qwen2's pre-tokenizer, and <｜User｜> is non-special
    // there too; without add_bos_token, llama.cpp's default for Llama 3 names is true.
    let tok = load(&with(
        "tokenizer.ggml.pre",
        Some(Value::String("deepseek-r1-qwen".into())),
    ))
    .unwrap();
    assert!(!tok.is_special(10));
    let meta: Vec<_> = with("tokenizer.ggml.add_bos_token", None)
        .into_iter()
        .map(|(k, v)| match k.as_str() {
            "tokenizer.ggml.pre" => (k, Value::String("llama-bpe".into())),
            _ => (k, v),
        })
        .collect();
    assert!(load(&meta).unwrap().add_bos_token());
    // gpt-2 has no such list: every CONTROL token is special.
    let tok = load(&with(
        "tokenizer.ggml.pre",
        Some(Value::String("gpt-2".into())),
    ))
    .unwrap();
    assert!(tok.is_special(10));
}

/// Every malformed vocabulary is an `Error::Gguf` naming what is wrong, never a panic.
#[test]
fn malformed_vocabularies_are_typed_errors() {
    let tokens = |t: &[&str]| Some(strings(t));
    let types = |t: &[i32]| Some(Value::Array(t.iter().map(|&x| Value::I32(x)).collect()));
    let twelve = [3, 3, 1, 1, 1, 1, 1, 1, 1, 4, 3, 5];
    let cases: Vec<(Vec<(String, Value)>, &str)> = vec![
        (
            with("tokenizer.ggml.model", None),
            "tokenizer.ggml.model` is missing",
        ),
        (
            with("tokenizer.ggml.model", Some(Value::String("llama".into()))),
            "`llama`",
        ),
        (
            with("tokenizer.ggml.model", Some(Value::U32(2))),
            "should be a string",
        ),
        (
            with("tokenizer.ggml.pre", None),
            "tokenizer.ggml.pre` is missing",
        ),
        (
            with("tokenizer.ggml.pre", Some(Value::String("falcon".into()))),
            "`falcon`",
        ),
        (
            with("tokenizer.ggml.pre", Some(Value::String("default".into()))),
            "`default`",
        ),
        (
            with("tokenizer.ggml.tokens", None),
            "tokenizer.ggml.tokens` is missing",
        ),
        (
            with("tokenizer.ggml.tokens", Some(Value::U32(1))),
            "should be an array",
        ),
        (
            with(
                "tokenizer.ggml.tokens",
                Some(Value::Array(vec![Value::U32(1); 12])),
            ),
            "array of strings",
        ),
        (
            with("tokenizer.ggml.tokens", Some(Value::Array(vec![]))),
            "is empty",
        ),
        (
            with("tokenizer.ggml.token_type", None),
            "token_type` is missing",
        ),
        (
            with("tokenizer.ggml.token_type", types(&twelve[..11])),
            "has 11 entries",
        ),
        (
            with(
                "tokenizer.ggml.token_type",
                Some(Value::Array(vec![Value::U32(1); 12])),
            ),
            "array of i32",
        ),
        (
            with("tokenizer.ggml.token_type", types(&[6; 12])),
            "has type 6",
        ),
        (with("tokenizer.ggml.merges", None), "merges` is missing"),
        (
            with("tokenizer.ggml.merges", tokens(&["a x"])),
            "names \"x\"",
        ),
        (
            with("tokenizer.ggml.merges", tokens(&["b c"])),
            "makes \"bc\"",
        ),
        (
            with("tokenizer.ggml.merges", tokens(&["abc"])),
            "separated by a space",
        ),
        (
            with("tokenizer.ggml.merges", tokens(&[""])),
            "separated by a space",
        ),
        (
            with("tokenizer.ggml.merges", tokens(&["a b", "a b"])),
            "appears twice",
        ),
        (
            with("tokenizer.ggml.bos_token_id", Some(Value::U32(12))),
            "out of range",
        ),
        (
            with("tokenizer.ggml.bos_token_id", Some(Value::U32(11))),
            "unused",
        ),
        (
            with("tokenizer.ggml.bos_token_id", Some(Value::I32(-1))),
            "token id",
        ),
        (
            with(
                "tokenizer.ggml.eos_token_id",
                Some(Value::String("1".into())),
            ),
            "token id",
        ),
        (
            with(
                "tokenizer.ggml.padding_token_id",
                Some(Value::U64(u64::MAX)),
            ),
            "out of range",
        ),
        (
            with("tokenizer.ggml.add_bos_token", Some(Value::U32(1))),
            "should be a bool",
        ),
        (
            with("tokenizer.chat_template", Some(Value::U32(1))),
            "should be a string",
        ),
        (
            with(
                "tokenizer.ggml.normalizer.lowercase",
                Some(Value::Bool(true)),
            ),
            "not supported",
        ),
        (
            with(
                "tokenizer.ggml.tokens",
                tokens(&[
                    "<s>", "</s>", "a", "b", "c", "ab", "abc", "Ġ", "Ġa", "<think>", "a", "x",
                ]),
            ),
            "tokens 2 and 10",
        ),
        (
            with(
                "tokenizer.ggml.tokens",
                tokens(&[
                    "<s>", "", "a", "b", "c", "ab", "abc", "Ġ", "Ġa", "<think>", "u", "x",
                ]),
            ),
            "token 1 is empty",
        ),
    ];
    for (meta, needle) in cases {
        match load(&meta) {
            Err(Error::Gguf { message, .. }) => {
                assert!(message.contains(needle), "{message:?} lacks {needle:?}")
            }
            other => panic!("expected a GGUF error containing {needle:?}, got {other:?}"),
        }
    }
}

/// Any key of the synthetic vocabulary given a value of any other shape: an error, never a panic.
#[test]
fn every_key_with_every_wrong_shape_is_an_error() {
    let wrong = [
        Value::U8(7),
        Value::I32(-7),
        Value::U64(u64::MAX),
        Value::F32(0.5),
        Value::Bool(true),
        Value::String(String::new()),
        Value::String("gpt2".into()),
        Value::Array(vec![]),
        Value::Array(vec![Value::I32(3); 12]),
        Value::Array(vec![Value::String("a b".into()); 12]),
        Value::Array(vec![Value::Array(vec![Value::U8(1)])]),
    ];
    for (key, original) in synthetic() {
        for value in &wrong {
            if *value == original {
                continue;
            }
            let result = load(&with(&key, Some(value.clone())));
            // A few substitutes are valid (another bool, an id of another real token).
            if let Err(e) = result {
                assert!(matches!(e, Error::Gguf { .. }), "{key} = {value:?}: {e}");
            }
        }
    }
}

#[test]
fn unsupported_tokenizer_files_are_typed_errors() {
    let (json, config) = tokenizer_files("deepseek-r1-distill-qwen-7b");
    let edit = |f: &dyn Fn(&mut Json)| {
        let mut tj: Json = serde_json::from_slice(&json).unwrap();
        f(&mut tj);
        serde_json::to_vec(&tj).unwrap()
    };
    let err = |json: &[u8], vocab: usize| {
        gguf_vocab_metadata(json, Some(&config), vocab)
            .unwrap_err()
            .to_string()
    };
    assert!(matches!(
        gguf_vocab_metadata(b"{", None, 10),
        Err(Error::Json { .. })
    ));
    assert!(err(&json, 1000).contains("not below the model's vocab_size 1000"));
    assert!(err(&json, usize::MAX).contains("larger than"));
    let no_nfc = edit(&|tj| tj["normalizer"] = Json::Null);
    assert!(err(&no_nfc, 152064).contains("not those of a pre-tokenizer"));
    let metaspace = edit(
        &|tj| tj["pre_tokenizer"] = json!({"type": "Metaspace", "replacement": "▁", "prepend_scheme": "first", "split": false}),
    );
    assert!(err(&metaspace, 152064).contains("not those of a pre-tokenizer"));
    let fallback = edit(&|tj| tj["model"]["byte_fallback"] = true.into());
    assert!(err(&fallback, 152064).contains("byte_fallback"));
    let lstrip = edit(&|tj| tj["added_tokens"][0]["lstrip"] = true.into());
    assert!(err(&lstrip, 152064).contains("lstrip"));
    let wordpiece = edit(&|tj| tj["model"]["type"] = "WordPiece".into());
    assert!(err(&wordpiece, 152064).contains("not BPE"));
    assert!(matches!(
        gguf_vocab_metadata(&json, Some(b"[]"), 152064),
        Err(Error::Json { .. })
    ));
}
