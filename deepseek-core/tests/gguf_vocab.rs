//! Tokenizers stored in GGUF files against their references: the real DeepSeek tokenizers
//! (tokenizer.json -> GGUF metadata -> GGUF file -> tokenizer) against transformers' ids on the
//! committed corpus, and GGUF vocabularies written by llama.cpp against llama.cpp's own
//! tokenizer test pairs (when `DEEPSEEK_LLAMA_CPP_MODELS` points at llama.cpp's `models/`).
//!
//! The corpus round trip alone would only show that our writer and reader agree with each
//! other; it means "a GGUF llama.cpp's converter writes tokenizes like the checkpoint" because
//! the unit tests of `loader::gguf_vocab` check our metadata against the converter's, key by key.

mod common;

use std::path::{Path, PathBuf};

use common::fixture;
use deepseek_core::loader::gguf::{Value, Writer};
use deepseek_core::loader::gguf_vocab::{gguf_vocab_metadata, tokenizer_from_gguf};
use deepseek_core::loader::GgufFile;
use deepseek_core::{Error, Tokenizer};
use serde_json::Value as Json;

/// A GGUF file in the temp folder, removed on drop.
struct TempGguf(PathBuf);

impl TempGguf {
    fn write(tag: &str, metadata: &[(String, Value)]) -> TempGguf {
        let path = std::env::temp_dir().join(format!(
            "deepseek-gguf-vocab-{}-{tag}.gguf",
            std::process::id()
        ));
        let mut w = Writer::new();
        w.set("general.architecture", Value::String("deepseek2".into()));
        for (k, v) in metadata {
            w.set(k, v.clone());
        }
        w.write(&path).unwrap();
        TempGguf(path)
    }

    fn open(&self) -> GgufFile {
        GgufFile::open(&self.0).unwrap()
    }
}

impl Drop for TempGguf {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn read_json(path: &Path) -> Json {
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

fn ids(v: &Json) -> Vec<u32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as u32)
        .collect()
}

/// The checkpoint's tokenizer and the one read back from a GGUF file our metadata describes.
fn through_gguf(name: &str, vocab_size: usize) -> (Tokenizer, Tokenizer) {
    let dir = fixture("tokenizers").join(name);
    let json = std::fs::read(dir.join("tokenizer.json")).unwrap();
    let config = std::fs::read(dir.join("tokenizer_config.json")).unwrap();
    let start = std::time::Instant::now();
    let original = Tokenizer::from_json(&json, Some(&config)).unwrap();
    eprintln!("{name}: Tokenizer::from_json took {:?}", start.elapsed());
    let metadata = gguf_vocab_metadata(&json, Some(&config), vocab_size).unwrap();
    let file = TempGguf::write(name, &metadata);
    let start = std::time::Instant::now();
    let from_gguf = tokenizer_from_gguf(&file.open()).unwrap();
    eprintln!("{name}: tokenizer_from_gguf took {:?}", start.elapsed());
    (original, from_gguf)
}

fn check_corpus(name: &str, vocab_size: usize) {
    let (original, tok) = through_gguf(name, vocab_size);
    let corpus = read_json(&fixture("tokenizers").join("corpus.json"));
    let exp = &corpus["expected"][name];
    let strings = corpus["strings"].as_array().unwrap();
    for (i, s) in strings.iter().enumerate() {
        let s = s.as_str().unwrap();
        let want = ids(&exp["ids"][i]);
        assert_eq!(tok.encode(s, false).unwrap(), want, "{name}: encode({s:?})");
        assert_eq!(
            tok.encode(s, true).unwrap(),
            ids(&exp["ids_add_special"][i]),
            "{name}: encode({s:?}, add_special)"
        );
        assert_eq!(
            tok.decode(&want, false).unwrap(),
            exp["decoded"][i].as_str().unwrap(),
            "{name}: decode of {s:?}"
        );
        assert_eq!(
            tok.decode(&want, true).unwrap(),
            exp["decoded_skip_special"][i].as_str().unwrap(),
            "{name}: decode(skip) of {s:?}"
        );
    }
    // Everything else the generation layer reads from a tokenizer.
    assert_eq!(tok.vocab_size(), original.vocab_size(), "{name}");
    for id in 0..original.vocab_size() as u32 + 2 {
        assert_eq!(tok.contains(id), original.contains(id), "{name}: id {id}");
        assert_eq!(
            tok.is_special(id),
            original.is_special(id),
            "{name}: id {id}"
        );
        assert_eq!(
            tok.id_to_token(id),
            original.id_to_token(id),
            "{name}: id {id}"
        );
    }
    assert_eq!(tok.bos_id(), original.bos_id(), "{name}");
    assert_eq!(tok.eos_ids(), original.eos_ids(), "{name}");
    assert_eq!(tok.chat_template(), original.chat_template(), "{name}");
    for special in ["bos_token", "eos_token", "pad_token", "unk_token"] {
        assert_eq!(
            tok.special_token(special),
            original.special_token(special),
            "{name}: {special}"
        );
    }
    // The converter writes add_bos_token = false: the post-processor adds no BOS, and gguf-py
    // trusts it over tokenizer_config.json (which says true).
    assert!(original.add_bos_token());
    assert!(!tok.add_bos_token());
}

#[test]
fn r1_tokenizer_survives_gguf() {
    check_corpus("deepseek-r1", 129280);
}

#[test]
fn distill_qwen_tokenizer_survives_gguf() {
    check_corpus("deepseek-r1-distill-qwen-7b", 152064);
}

#[test]
fn distill_llama_tokenizer_survives_gguf() {
    check_corpus("deepseek-r1-distill-llama-8b", 128256);
}

/// llama.cpp's `.inp` file: tests separated as `tests/test-tokenizer-0.cpp` separates them.
fn read_inputs(path: &Path) -> Vec<String> {
    let raw = std::fs::read_to_string(path).unwrap();
    let sep = "\n__ggml_vocab_test__\n";
    let mut out = Vec::new();
    let mut rest = raw.as_str();
    while !rest.is_empty() {
        match rest.find(sep) {
            Some(at) => {
                out.push(rest[..at].to_string());
                rest = &rest[at + sep.len()..];
            }
            None => {
                out.push(rest.to_string());
                break;
            }
        }
    }
    out
}

/// llama.cpp's `.out` file: one line of space-separated ids per test.
fn read_outputs(path: &Path) -> Vec<Vec<u32>> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| l.split_whitespace().map(|t| t.parse().unwrap()).collect())
        .collect()
}

/// llama.cpp's tokenizer test pairs: `models/ggml-vocab-*.gguf` with `.inp`/`.out` (ids made by
/// transformers from the original tokenizers; `tests/test-tokenizer-0.cpp` tokenizes with
/// add_special and parse_special off, and no input holds a special token). Every vocabulary we
/// read must give those ids; every other one must be refused with a `Gguf` error naming its
/// model or pre-tokenizer. Runs when `DEEPSEEK_LLAMA_CPP_MODELS` names that folder (as
/// `.ci/llama-vocab.sh` does); skipped otherwise.
#[test]
fn llama_cpp_vocab_pairs() {
    let Some(dir) = std::env::var_os("DEEPSEEK_LLAMA_CPP_MODELS") else {
        eprintln!("DEEPSEEK_LLAMA_CPP_MODELS is not set: llama.cpp's vocab pairs skipped");
        return;
    };
    let dir = PathBuf::from(dir);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("DEEPSEEK_LLAMA_CPP_MODELS={}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| {
            let name = p.file_name().unwrap().to_string_lossy();
            name.starts_with("ggml-vocab-") && name.ends_with(".gguf")
        })
        .collect();
    files.sort();
    let mut tested = Vec::new();
    let mut failures = Vec::new();
    for path in &files {
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        let file = GgufFile::open(path).unwrap();
        let meta = |k: &str| {
            file.get(k)
                .and_then(Value::as_str)
                .unwrap_or("(none)")
                .to_string()
        };
        let (model, pre) = (meta("tokenizer.ggml.model"), meta("tokenizer.ggml.pre"));
        let tok = match tokenizer_from_gguf(&file) {
            Ok(tok) => tok,
            Err(Error::Gguf { message, .. }) => {
                assert!(
                    (model != "gpt2" && message.contains(&format!("`{model}`")))
                        || message.contains(&format!("`{pre}`"))
                        || (pre == "(none)" && message.contains("tokenizer.ggml.pre")),
                    "{name}: the error does not name model {model} / pre {pre}: {message}"
                );
                eprintln!("{name}: refused ({message})");
                continue;
            }
            Err(e) => panic!("{name}: not a GGUF error: {e}"),
        };
        let inp = path.with_extension("gguf.inp");
        if !inp.exists() {
            eprintln!("{name} (pre {pre}): read, no test pairs");
            continue;
        }
        let inputs = read_inputs(&inp);
        let outputs = read_outputs(&path.with_extension("gguf.out"));
        assert_eq!(
            inputs.len(),
            outputs.len(),
            "{name}: .inp and .out disagree"
        );
        let mut passed = 0;
        for (text, want) in inputs.iter().zip(&outputs) {
            let got = tok.encode(text, false).unwrap();
            if &got == want {
                passed += 1;
            } else {
                failures.push(format!("{name}: {text:?}: got {got:?}, want {want:?}"));
            }
        }
        eprintln!("{name} (pre {pre}): {passed}/{} pairs", inputs.len());
        tested.push(pre);
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    for pre in ["qwen2", "llama-bpe"] {
        assert!(
            tested.iter().any(|p| p == pre),
            "no `{pre}` vocabulary with test pairs in {}",
            dir.display()
        );
    }
}

/// llama.cpp's own tokenization of the corpus (`fixtures/gguf/tokenizer-*.golden.json`: llama-cpp-
/// python's `tokenize(text, add_bos, special=True)` on the converter's vocab-only GGUFs, made by
/// `tools/make_gguf_fixtures.py`). R1 is read from the converter's file itself; R1-Distill-Qwen's
/// file is not committed, so ours (whose metadata equals the converter's) stands in. llama.cpp
/// and we must agree wherever llama.cpp agrees with transformers; the one place it does not is
/// Qwen2's NFC normalizer, which llama.cpp skips (a decomposed "é" in one corpus string).
#[test]
fn llama_cpp_tokenizes_the_corpus_as_we_do() {
    let corpus = read_json(&fixture("tokenizers").join("corpus.json"));
    for (name, vocab_size, file, llama_cpp_differs) in [
        (
            "deepseek-r1",
            129280,
            Some("vocab-deepseek-r1.gguf"),
            &[][..],
        ),
        ("deepseek-r1-distill-qwen-7b", 152064, None, &[19][..]),
    ] {
        let golden = fixture("gguf").join(format!("tokenizer-{name}.golden.json"));
        if !golden.exists() {
            eprintln!("{}: absent, skipped", golden.display());
            continue;
        }
        let golden = read_json(&golden);
        let tok = match file {
            Some(f) => {
                tokenizer_from_gguf(&GgufFile::open(fixture("gguf").join(f)).unwrap()).unwrap()
            }
            None => through_gguf(name, vocab_size).1,
        };
        let strings = corpus["strings"].as_array().unwrap();
        assert_eq!(
            &golden["strings"], &corpus["strings"],
            "{name}: corpus changed"
        );
        let transformers = &corpus["expected"][name]["ids"];
        let mut differs = Vec::new();
        for (i, s) in strings.iter().enumerate() {
            let ours = tok.encode(s.as_str().unwrap(), false).unwrap();
            assert_eq!(ours, ids(&transformers[i]), "{name}: string {i}");
            let theirs = ids(&golden["ids_no_bos"][i]);
            if ours != theirs {
                differs.push(i);
            }
            // llama.cpp prepends BOS exactly when the file's add_bos_token says so.
            let with_bos = ids(&golden["ids_with_bos"][i]);
            assert_eq!(
                with_bos != theirs,
                tok.add_bos_token(),
                "{name}: string {i}"
            );
        }
        assert_eq!(
            differs, llama_cpp_differs,
            "{name}: strings where llama.cpp differs"
        );
        let prompt = golden["prompt"].as_str().unwrap();
        assert_eq!(
            tok.encode(prompt, false).unwrap(),
            ids(&golden["prompt_ids"]),
            "{name}: prompt"
        );
    }
}
