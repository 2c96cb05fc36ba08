//! GGUF files as llama.cpp's `llama-quantize` writes them for the K-quant mixtures (Q4_K_M:
//! Q4_K and Q6_K matrices, Q5_0/Q8_0 where a row is not whole 256-weight super-blocks, F32
//! norms) load with every tensor in its stored format and run.

mod common;

use std::path::PathBuf;
use std::sync::Arc;

use common::{argmax, cosine, Golden};
use deepseek_core::loader::{save_gguf, DType, Opened};
use deepseek_core::quant::{Format, GgmlType};
use deepseek_core::{LoadOptions, Model, Session, SessionOptions, WeightDtype};

/// A file of `tests/fixtures/kquants/` (see tools/make_kquant_fixtures.py).
fn kquants(name: &str) -> PathBuf {
    common::fixture("kquants").join(name)
}

#[test]
fn mixed_format_gguf_from_llama_quantize_gives_llama_cpps_logits() {
    // One file, every format per tensor (Q2_K..Q6_K, IQ4_XS, IQ4_NL, Q4_0, Q4_1, Q5_0, Q5_1,
    // Q8_0, BF16, F32), written by llama-quantize; llama.cpp's logits on this same file.
    let path = kquants("v3_quant-kmix.gguf");
    let model = Arc::new(
        Model::load(
            &path,
            LoadOptions {
                threads: Some(2),
                ..Default::default()
            },
        )
        .unwrap_or_else(|e| panic!("{}: {e}", path.display())),
    );
    let t = model.transformer().expect("a DeepSeek model");
    // Run as stored (8-row groups interleaved, same bits): nothing was widened at load.
    assert!(matches!(t.embed_tokens.format(), Format::Q4_Kx8));
    assert!(matches!(t.lm_head.weight.format(), Format::Q6_Kx8));

    let g = Golden::load("v3_quant");
    let ids = g.all_ids();
    let want: Vec<f32> = std::fs::read(kquants("v3_quant-kmix.llama.f32"))
        .unwrap()
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    assert_eq!(want.len(), ids.len() * g.vocab);
    let got = Session::new(model, SessionOptions::default())
        .unwrap()
        .eval_all(&ids)
        .unwrap()
        .to_vec();
    let rows = ids.len();
    let (mut min_cos, mut close, mut agree, mut max_diff) = (1f64, 0, 0, 0f32);
    for r in 0..rows {
        let (a, b) = (
            &got[r * g.vocab..][..g.vocab],
            &want[r * g.vocab..][..g.vocab],
        );
        let c = cosine(a, b);
        min_cos = min_cos.min(c);
        close += usize::from(c >= 0.999);
        agree += usize::from(argmax(a) == argmax(b));
        max_diff = a
            .iter()
            .zip(b)
            .fold(max_diff, |m, (x, y)| m.max((x - y).abs()));
    }
    println!(
        "kmix vs llama.cpp: min cosine {min_cos:.6}, {close}/{rows} rows >= 0.999, top-1 \
         {agree}/{rows}, max |diff| {max_diff:.3}"
    );
    // Both sides quantise activations to 8 bits (ggml with f16 block scales for the 32-weight
    // formats, we with f32), so logits differ by that rounding (a pure Q8_0 file of the same
    // model: min cosine 0.9997, max |diff| 0.32), not by the weights' bits. On this tiny random
    // MoE a near-tie in the router can flip for a token and move its row a lot (a pure Q4_K_M
    // file: 3 of 23 rows at 0.92-0.94, the rest >= 0.9996), so a few rows may fall short.
    assert!(
        close * 10 >= rows * 9,
        "kmix: {close}/{rows} rows close to llama.cpp"
    );
    assert!(
        agree * 10 >= rows * 9,
        "kmix: top-1 agreement {agree}/{rows}"
    );
}

/// Not a test: writes fixture `v3_quant` as an F32 GGUF to `$KQUANT_F32_GGUF`, the input
/// tools/make_kquant_fixtures.py hands to llama-quantize.
#[test]
#[ignore]
fn write_v3_quant_f32_gguf() {
    let Ok(path) = std::env::var("KQUANT_F32_GGUF") else {
        return;
    };
    let opened = Opened::open(common::fixture("v3_quant")).unwrap();
    let net = opened.build(WeightDtype::Auto, 1).unwrap();
    save_gguf(&net, WeightDtype::F32, Vec::new(), 1, &PathBuf::from(path)).unwrap();
}

/// Not a test: writes fixture `$KQUANT_FIXTURE` as a GGUF at `$KQUANT_DTYPE` to
/// `$KQUANT_GGUF` (our writer and quantizers), for tools/make_kquant_fixtures.py stage `q4km`:
/// the F32 input of llama-quantize, and our own Q4_K_M file for llama.cpp to run.
#[test]
#[ignore]
fn write_fixture_gguf() {
    let (Ok(name), Ok(dtype), Ok(path)) = (
        std::env::var("KQUANT_FIXTURE"),
        std::env::var("KQUANT_DTYPE"),
        std::env::var("KQUANT_GGUF"),
    ) else {
        return;
    };
    let opened = Opened::open(common::fixture(&name)).unwrap();
    let net = opened.build(WeightDtype::Auto, 1).unwrap();
    let dtype: WeightDtype = dtype.parse().unwrap();
    // No vocabulary: llama.cpp loads the file without one when told so.
    let vocab = vec![(
        "tokenizer.ggml.model".to_string(),
        deepseek_core::loader::gguf::Value::String("none".into()),
    )];
    save_gguf(&net, dtype, vocab, 1, &PathBuf::from(path)).unwrap();
}

/// Our q4_k_m GGUF (dtype policy, writer and quantizers) against llama-quantize's Q4_K_M of the
/// same F32 file (tools/make_kquant_fixtures.py stage `q4km`): every tensor has llama.cpp's
/// ggml type and bytes, except `token_embd`, which our policy keeps exact (llama.cpp: Q4_K).
#[test]
fn q4_k_m_gguf_equals_llama_quantize_byte_for_byte() {
    for name in ["v3_quant", "v2_quant"] {
        let path = std::env::temp_dir().join(format!(
            "deepseek-kquants-{name}-{}.gguf",
            std::process::id()
        ));
        let net = Opened::open(common::fixture(name))
            .unwrap()
            .build(WeightDtype::Auto, 2)
            .unwrap();
        save_gguf(&net, WeightDtype::Q4_K_M, Vec::new(), 2, &path).unwrap();
        let ours = Opened::open(&path).unwrap();
        let llama = Opened::open(kquants(&format!("{name}-q4_k_m.gguf"))).unwrap();
        let (ours, llama) = (ours.source(), llama.source());
        let (mut a, mut b) = (ours.names(), llama.names());
        a.sort();
        b.sort();
        assert_eq!(a, b, "{name}: tensor names");
        let mut same = 0;
        for t in &b {
            let (o, l) = (
                ours.get(t).unwrap().unwrap(),
                llama.get(t).unwrap().unwrap(),
            );
            assert_eq!(o.shape, l.shape, "{name} {t}");
            if t == "token_embd.weight" {
                let exact = matches!(o.dtype, DType::F32 | DType::BF16 | DType::F16);
                assert!(exact, "{name}: our policy keeps the embedding as stored");
                continue;
            }
            if t.ends_with("attn_output.weight") {
                // llama.cpp's Mixtral rule: a model with exactly 8 experts (these fixtures; no
                // DeepSeek model) gets Q5_K attn_output, here its Q5_1 fallback. We do not
                // follow it: ours stays Q4_K (here its Q5_0 fallback).
                assert_eq!(
                    (o.dtype, l.dtype),
                    (DType::Ggml(GgmlType::Q5_0), DType::Ggml(GgmlType::Q5_1)),
                    "{name} {t}"
                );
                continue;
            }
            assert_eq!(o.dtype, l.dtype, "{name} {t}: ggml type");
            if let Some(i) = (0..o.bytes.len()).find(|&i| o.bytes[i] != l.bytes[i]) {
                panic!("{name} {t} ({:?}): first differing byte {i}", o.dtype);
            }
            same += 1;
        }
        println!("{name}: {same} tensors byte-identical to llama-quantize's Q4_K_M");
        std::fs::remove_file(&path).unwrap();
    }
}
