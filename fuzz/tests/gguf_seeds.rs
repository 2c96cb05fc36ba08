//! The gguf target's seeds (`corpus/gguf/`): the two tiny fixtures written as GGUF by our own
//! writer with a 16-token byte-level BPE vocabulary and sampling defaults in the metadata (a
//! few kilobytes each, so mutations start from files that load, tokenize and run), and the
//! header of llama.cpp's smallest converted fixture (its key names, value types and tensor
//! infos; without its data section).
//! `cargo test --manifest-path fuzz/Cargo.toml --test gguf_seeds -- --ignored` rewrites them.

use std::path::{Path, PathBuf};

use deepseek_core::loader::gguf::{Header, Value};
use deepseek_core::loader::{gguf_vocab::tokenizer_from_gguf, save_gguf, GgufModel};
use deepseek_core::{LoadOptions, Model, Session, SessionOptions, WeightDtype};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).to_path_buf()
}

/// `tokenizer.*` and `general.sampling.*` metadata for a 16-token vocabulary: BOS, EOS, a
/// think tag, letters and digits with three merges, all ids below the tiny models' vocab_size.
fn vocab() -> Vec<(String, Value)> {
    let tokens = [
        "<｜begin▁of▁sentence｜>",
        "<｜end▁of▁sentence｜>",
        "<think>",
        "a",
        "b",
        "c",
        "ab",
        "abc",
        "Ġ",
        "Ġa",
        "1",
        "2",
        "+",
        "=",
        "Ċ",
        "<unused>",
    ];
    let types = [3, 3, 4, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 5];
    let strings =
        |v: &[&str]| Value::Array(v.iter().map(|s| Value::String(s.to_string())).collect());
    vec![
        ("tokenizer.ggml.model".into(), Value::String("gpt2".into())),
        ("tokenizer.ggml.pre".into(), Value::String("deepseek-v3".into())),
        ("tokenizer.ggml.tokens".into(), strings(&tokens)),
        (
            "tokenizer.ggml.token_type".into(),
            Value::Array(types.iter().map(|&t| Value::I32(t)).collect()),
        ),
        ("tokenizer.ggml.merges".into(), strings(&["a b", "ab c", "Ġ a"])),
        ("tokenizer.ggml.bos_token_id".into(), Value::U32(0)),
        ("tokenizer.ggml.eos_token_id".into(), Value::U32(1)),
        ("tokenizer.ggml.add_bos_token".into(), Value::Bool(true)),
        (
            "tokenizer.chat_template".into(),
            Value::String(
                "{{ bos_token }}{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
                    .into(),
            ),
        ),
        ("general.sampling.temp".into(), Value::F32(0.6)),
        ("general.sampling.top_p".into(), Value::F32(0.95)),
        ("general.sampling.top_k".into(), Value::I32(20)),
    ]
}

const TINY: [(&str, WeightDtype, &str); 3] = [
    ("tiny_qwen2", WeightDtype::F32, "tiny_qwen2-F32.gguf"),
    ("tiny_v3", WeightDtype::F32, "tiny_v3-F32.gguf"),
    ("tiny_qwen2", WeightDtype::Q8_0, "tiny_qwen2-Q8_0.gguf"),
];

/// llama.cpp's converter output whose header is the third seed.
const LLAMA_CPP: &str = "../deepseek-core/tests/fixtures/gguf/v3_tiny-legacy-Q8_0-pure.gguf";
const LLAMA_CPP_HEADER: &str = "v3_tiny-legacy-Q8_0-pure.header.gguf";

#[test]
#[ignore = "rewrites corpus/gguf/ (run by hand)"]
fn write_gguf_seeds() {
    let out = root().join("corpus/gguf");
    std::fs::create_dir_all(&out).unwrap();
    for (family, dtype, name) in TINY {
        let model =
            Model::load(root().join("fixtures").join(family), LoadOptions::default()).unwrap();
        save_gguf(model.network(), dtype, vocab(), 1, &out.join(name)).unwrap();
    }
    let bytes = std::fs::read(root().join(LLAMA_CPP)).unwrap();
    let header = Header::parse(&bytes).unwrap();
    std::fs::write(out.join(LLAMA_CPP_HEADER), &bytes[..header.data_offset]).unwrap();
}

/// The tiny seeds load, tokenize with their metadata's vocabulary, and run: the target's
/// mutations start from files that reach every stage.
#[test]
fn tiny_gguf_seeds_load_tokenize_and_run() {
    for (_, _, name) in TINY {
        let path = root().join("corpus/gguf").join(name);
        let file = GgufModel::open(&path).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(file.generation_config().unwrap().is_some(), "{name}");
        let tok = tokenizer_from_gguf(file.first()).unwrap_or_else(|e| panic!("{name}: {e}"));
        // abc, Ġ, ab: the merge "a b" outranks "Ġ a".
        assert_eq!(tok.encode("abc ab", false).unwrap(), [7, 8, 6], "{name}");
        let model =
            Model::load(&path, LoadOptions::default()).unwrap_or_else(|e| panic!("{name}: {e}"));
        let mut session = Session::new(model.into(), SessionOptions::default()).unwrap();
        let logits = session.eval(&[0, 7, 9]).unwrap();
        assert_eq!(logits.len(), 16, "{name}");
        assert!(logits.iter().all(|x| x.is_finite()), "{name}");
    }
    let header = std::fs::read(root().join("corpus/gguf").join(LLAMA_CPP_HEADER)).unwrap();
    // Metadata and tensor infos parse; only the data section is missing.
    let err = Header::parse(&header).unwrap_err();
    assert!(err.contains("outside the 0-byte data section"), "{err}");
}
