//! GGUF models: a checkpoint written as GGUF (our writer, llama.cpp's names and layouts: split
//! `kv_b`, stacked experts, permuted Llama q/k, `rope_freqs`) and read back gives transformers'
//! logits, for every family; a converted checkpoint carries its tokenizer and sampling
//! defaults; hostile GGUF files give typed errors.

mod common;

use std::path::PathBuf;
use std::sync::Arc;

use common::{assert_rows_close, fixture, greedy, min_cosine, Golden, LOGIT_TOL};
use deepseek_core::loader::{convert_to_gguf, save_gguf, Opened};
use deepseek_core::{
    AttentionPath, Error, GenerateParams, Generator, LoadOptions, Message, Model, SamplingParams,
    Session, SessionOptions, WeightDtype,
};

/// Every fixture with transformers goldens, across the families and their variants.
const FIXTURES: &[&str] = &[
    "v3_tiny",
    "v2_lite_tiny",
    "v2_group_tiny",
    "v3_sharded_bf16",
    "qwen2_tiny",
    "qwen2_tied",
    "llama3_tiny",
    "llama3_sharded_bf16",
    "qwen3_tiny",
];

fn temp(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("deepseek-gguf-{}-{name}.gguf", std::process::id()))
}

/// Writes fixture `name` as GGUF at `dtype` and returns the path.
fn write(name: &str, dtype: WeightDtype) -> PathBuf {
    let opened = Opened::open(fixture(name)).unwrap();
    let net = opened.build(WeightDtype::Auto, 1).unwrap();
    let path = temp(&format!("{name}-{dtype:?}"));
    save_gguf(&net, dtype, Vec::new(), 1, &path).unwrap_or_else(|e| panic!("{name}: {e}"));
    path
}

fn load(path: &PathBuf) -> Arc<Model> {
    Arc::new(
        Model::load(
            path,
            LoadOptions {
                threads: Some(1),
                ..Default::default()
            },
        )
        .unwrap_or_else(|e| panic!("{}: {e}", path.display())),
    )
}

#[test]
fn gguf_written_at_full_precision_gives_transformers_logits() {
    for name in FIXTURES {
        let g = Golden::load(name);
        let path = write(name, WeightDtype::Auto);
        let m = load(&path);
        for attention in [AttentionPath::Absorbed, AttentionPath::Expanded] {
            let mut s = Session::new(
                m.clone(),
                SessionOptions {
                    attention,
                    ..Default::default()
                },
            )
            .unwrap();
            let logits = s.eval_all(&g.all_ids()).unwrap().to_vec();
            let d = assert_rows_close(
                &format!("{name} ({attention:?}) from GGUF"),
                &logits,
                &g.logits,
                g.vocab,
                LOGIT_TOL,
            );
            println!("{name} {attention:?}: max logit error {d:e}");
        }
        let mut s = Session::new(m.clone(), SessionOptions::default()).unwrap();
        assert_eq!(
            greedy(&mut s, &g.input_ids, g.greedy_ids.len()),
            g.greedy_ids,
            "{name}: greedy continuation from GGUF"
        );
        std::fs::remove_file(&path).unwrap();
    }
}

#[test]
fn fp8_is_written_as_bf16_within_its_rounding() {
    // ggml has no FP8 block format: the converter's answer, BF16, rounds each product.
    let g = Golden::load("v3_fp8");
    let path = write("v3_fp8", WeightDtype::Auto);
    let m = load(&path);
    let logits = Session::new(m, SessionOptions::default())
        .unwrap()
        .eval_all(&g.all_ids())
        .unwrap()
        .to_vec();
    let c = min_cosine(&logits, &g.logits, g.vocab);
    println!("v3_fp8 as BF16 GGUF: min cosine {c:.6}");
    assert!(c > 0.999, "v3_fp8 BF16 GGUF cosine {c}");
    std::fs::remove_file(&path).unwrap();
}

#[test]
fn gguf_written_at_q8_0_runs_as_stored_and_meets_the_q8_0_bar() {
    for name in ["v3_quant", "v2_quant"] {
        let path = write(name, WeightDtype::Q8_0);
        let from_gguf = load(&path);
        let from_dir = Arc::new(
            Model::load(
                fixture(name),
                LoadOptions {
                    threads: Some(1),
                    dtype: WeightDtype::Q8_0,
                },
            )
            .unwrap(),
        );
        // kv_b is split per head in GGUF; all else has the folder's q8_0 bytes, run as stored.
        let (a, b) = (
            from_gguf.weight_bytes_per_token(),
            from_dir.weight_bytes_per_token(),
        );
        assert!(a.abs_diff(b) * 50 < b, "{name}: {a} vs {b} bytes per token");
        let g = Golden::load(name);
        let mut s = Session::new(from_gguf, SessionOptions::default()).unwrap();
        let logits = s.eval_all(&g.all_ids()).unwrap().to_vec();
        let c = min_cosine(&logits, &g.logits, g.vocab);
        println!("{name}: q8_0 GGUF min cosine {c:.6} vs transformers");
        // The bar quantized.rs sets for q8_0 folders.
        assert!(c >= 0.999, "{name}: q8_0 GGUF cosine {c}");
        s.reset();
        assert_eq!(
            greedy(&mut s, &g.input_ids, g.greedy_ids.len()),
            g.greedy_ids,
            "{name}: q8_0 GGUF greedy continuation"
        );
        std::fs::remove_file(&path).unwrap();
    }
}

#[test]
fn hostile_gguf_files_give_typed_errors() {
    let path = write("v3_tiny", WeightDtype::Auto);
    let bytes = std::fs::read(&path).unwrap();
    let bad = temp("hostile");
    let try_load = |b: &[u8]| {
        std::fs::write(&bad, b).unwrap();
        Model::load(&bad, LoadOptions::default())
    };
    // Truncated anywhere: a GGUF error, never a panic.
    for cut in [0, 3, 8, 23, 100, bytes.len() / 2, bytes.len() - 1] {
        match try_load(&bytes[..cut]) {
            Err(Error::Gguf { .. }) => {}
            other => panic!("cut at {cut}: {other:?}"),
        }
    }
    // Unknown architecture names itself.
    let mut b = bytes.clone();
    let at = b
        .windows(9)
        .position(|w| w == b"deepseek2")
        .expect("architecture string");
    b[at..at + 9].copy_from_slice(b"mamba2xyz");
    match try_load(&b) {
        Err(Error::UnsupportedArchitecture(s)) => assert!(s.contains("mamba2xyz"), "{s}"),
        other => panic!("{other:?}"),
    }
    std::fs::remove_file(&path).unwrap();
    let _ = std::fs::remove_file(&bad);
}

fn chat_greedy(gen: &Generator) -> (String, Vec<u32>) {
    let msgs = [Message::user("What is 1+1?")];
    let (text, _) = gen.chat_tokens(&msgs).unwrap();
    let params = GenerateParams {
        max_tokens: Some(16),
        sampling: SamplingParams::greedy(),
        ..Default::default()
    };
    (text, gen.chat(&msgs, &params).unwrap().tokens)
}

fn golden_r1tok() -> (String, Vec<u32>) {
    let v: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(fixture("v3_r1tok").join("golden.json")).unwrap(),
    )
    .unwrap();
    let ids = v["greedy_ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as u32)
        .collect();
    (v["prompt"].as_str().unwrap().to_string(), ids)
}

/// A folder converted to GGUF (weights, R1's tokenizer and generation_config as llama.cpp's
/// converter writes them) chats exactly as transformers did on the folder: the template and
/// special tokens from the GGUF metadata, then the same greedy tokens.
#[test]
fn a_converted_gguf_carries_its_tokenizer_template_and_sampling_defaults() {
    let dir = tempdir("convert");
    let gguf = dir.join("r1tok.gguf");
    convert_to_gguf(
        &fixture("v3_r1tok"),
        &gguf,
        WeightDtype::Auto,
        Some(&fixture("tokenizers/deepseek-r1")),
        1,
    )
    .unwrap();
    let opts = LoadOptions {
        threads: Some(1),
        ..Default::default()
    };
    let gen = Generator::load(&gguf, None, opts.clone()).unwrap();
    let (prompt, want) = golden_r1tok();
    assert_eq!(chat_greedy(&gen), (prompt, want));
    // R1's generation_config.json: temperature 0.6, top_p 0.95, now general.sampling.*.
    let d = gen.default_params().sampling;
    assert_eq!((d.temperature, d.top_p), (0.6, 0.95));
    // The folder model with llama.cpp's own vocabulary GGUF as its tokenizer: the same chat.
    let gen = Generator::load(
        fixture("v3_r1tok"),
        Some(&fixture("gguf/vocab-deepseek-r1.gguf")),
        opts,
    )
    .unwrap();
    assert_eq!(chat_greedy(&gen), golden_r1tok());
    std::fs::remove_dir_all(&dir).unwrap();
}

fn tempdir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("deepseek-gguf-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}
