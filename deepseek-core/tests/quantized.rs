//! Runtime formats against transformers' float32 goldens: how far each format moves the logits.

mod common;

use std::sync::Arc;

use common::{argmax, cosine, fixture, Golden};
use deepseek_core::loader::{save_gguf, Checkpoint, Opened, TensorSource};
use deepseek_core::quant::Weight;
use deepseek_core::{LoadOptions, Model, Session, SessionOptions, WeightDtype};

const FIXTURES: &[&str] = &[
    "v3_tiny",
    "v2_lite_tiny",
    "v2_group_tiny",
    "v3_fp8",
    "v3_sharded_bf16",
];

/// RMS error of every quantisable matrix of fixture `name` after conversion to `dtype`.
fn weight_rms(name: &str, dtype: WeightDtype) -> f64 {
    let ckpt = Checkpoint::open(fixture(name)).unwrap();
    let (mut err, mut count) = (0f64, 0usize);
    for tensor in ckpt.names() {
        let t = ckpt.get(&tensor).unwrap().unwrap();
        if t.shape.len() != 2 || !t.shape[1].is_multiple_of(32) || tensor.contains("embed_tokens") {
            continue;
        }
        let w = Weight::from_f32(t.shape[0], t.shape[1], &t.to_f32().unwrap());
        let (exact, q) = (w.to_f32(), w.convert(dtype).to_f32());
        err += exact
            .iter()
            .zip(&q)
            .map(|(a, b)| ((a - b) as f64).powi(2))
            .sum::<f64>();
        count += exact.len();
    }
    (err / count as f64).sqrt()
}

struct Report {
    min_cosine: f64,
    mean_cosine: f64,
    top1_agreement: f64,
    greedy_identical: bool,
}

/// `logits` (`[T, vocab]` over the golden prompt + continuation) against the reference; the
/// continuation counts as identical when every step's top-1 is the golden next token (then a
/// free-running greedy decode would produce it).
fn report(g: &Golden, logits: &[f32]) -> Report {
    let (mut min_cosine, mut sum_cosine, mut agree) = (1f64, 0f64, 0usize);
    let rows = g.all_ids().len();
    for r in 0..rows {
        let (got, want) = (
            &logits[r * g.vocab..][..g.vocab],
            &g.logits[r * g.vocab..][..g.vocab],
        );
        min_cosine = min_cosine.min(cosine(got, want));
        sum_cosine += cosine(got, want);
        agree += (argmax(got) == argmax(want)) as usize;
    }
    let p = g.input_ids.len();
    let greedy_identical = g
        .greedy_ids
        .iter()
        .enumerate()
        .all(|(i, &t)| argmax(&logits[(p - 1 + i) * g.vocab..][..g.vocab]) == t);
    Report {
        min_cosine,
        mean_cosine: sum_cosine / rows as f64,
        top1_agreement: agree as f64 / rows as f64,
        greedy_identical,
    }
}

fn measure(name: &str, dtype: WeightDtype) -> Report {
    let g = Golden::load(name);
    let m = Arc::new(
        Model::load(
            fixture(name),
            LoadOptions {
                threads: Some(2),
                dtype,
            },
        )
        .unwrap(),
    );
    let mut s = Session::new(m.clone(), SessionOptions::default()).unwrap();
    let logits = s.eval_all(&g.all_ids()).unwrap().to_vec();
    let (mut min_cosine, mut sum_cosine, mut agree) = (1f64, 0f64, 0usize);
    let rows = g.all_ids().len();
    for r in 0..rows {
        let (got, want) = (
            &logits[r * g.vocab..][..g.vocab],
            &g.logits[r * g.vocab..][..g.vocab],
        );
        min_cosine = min_cosine.min(cosine(got, want));
        sum_cosine += cosine(got, want);
        agree += (argmax(got) == argmax(want)) as usize;
    }
    let mut s = Session::new(m, SessionOptions::default()).unwrap();
    let mut next = argmax(s.eval(&g.input_ids).unwrap());
    let mut out = vec![next];
    while out.len() < g.greedy_ids.len() {
        next = argmax(s.eval(&[next]).unwrap());
        out.push(next);
    }
    Report {
        min_cosine,
        mean_cosine: sum_cosine / rows as f64,
        top1_agreement: agree as f64 / rows as f64,
        greedy_identical: out == g.greedy_ids,
    }
}

#[test]
fn bf16_and_f16_stay_within_rounding_of_the_reference() {
    for name in FIXTURES {
        for dtype in [WeightDtype::BF16, WeightDtype::F16, WeightDtype::F32] {
            let r = measure(name, dtype);
            println!(
                "{name} {dtype:?}: min cosine {:.6}, top-1 {:.3}, greedy identical {}",
                r.min_cosine, r.top1_agreement, r.greedy_identical
            );
            assert!(
                r.min_cosine > 0.999,
                "{name} {dtype:?}: cosine {}",
                r.min_cosine
            );
        }
    }
}

/// Fixtures made for quantisation (tools/make_fixtures.py: router gaps >= 0.05, logit gaps >=
/// 0.6, so 8-bit noise cannot flip a decision).
const QUANT_FIXTURES: &[&str] = &["v3_quant", "v2_quant"];

#[test]
fn q8_0_meets_the_bar_on_quantisation_fixtures() {
    for name in QUANT_FIXTURES {
        let r = measure(name, WeightDtype::Q8_0);
        println!(
            "{name} Q8_0: min cosine {:.6}, top-1 {:.3}, greedy identical {}",
            r.min_cosine, r.top1_agreement, r.greedy_identical
        );
        assert!(
            r.min_cosine >= 0.999,
            "{name}: q8_0 cosine {}",
            r.min_cosine
        );
        assert!(
            r.greedy_identical,
            "{name}: q8_0 greedy continuation differs"
        );
    }
}

#[test]
fn four_bit_formats_report() {
    // Q4_1 (scale + minimum) must beat Q4_0 (scale only) on every fixture; both are bounded
    // loosely (4-bit weights move these tiny models' logits a lot).
    for name in QUANT_FIXTURES {
        let q40 = measure(name, WeightDtype::Q4_0);
        let q41 = measure(name, WeightDtype::Q4_1);
        for (dtype, r) in [("Q4_0", &q40), ("Q4_1", &q41)] {
            println!(
                "{name} {dtype}: min cosine {:.6}, mean cosine {:.6}, top-1 {:.3}, greedy identical {}",
                r.min_cosine, r.mean_cosine, r.top1_agreement, r.greedy_identical
            );
        }
        // End to end the two are within noise on these tiny random models; the weights are where
        // accuracy is decided, and there Q4_1 must be clearly better on this checkpoint.
        let (e40, e41) = (
            weight_rms(name, WeightDtype::Q4_0),
            weight_rms(name, WeightDtype::Q4_1),
        );
        println!("{name}: weight RMS error q4_0 {e40:.5}, q4_1 {e41:.5}");
        let (e4k, e6k) = (
            weight_rms(name, WeightDtype::Q4_K),
            weight_rms(name, WeightDtype::Q6_K),
        );
        println!("{name}: weight RMS error q4_k {e4k:.5}, q6_k {e6k:.5}");
        assert!(e4k < e41, "{name}: q4_k weight error {e4k} vs q4_1 {e41}");
        assert!(
            e6k < 0.3 * e4k,
            "{name}: q6_k weight error {e6k} vs q4_k {e4k}"
        );
        assert!(
            e41 < 0.95 * e40,
            "{name}: q4_1 weight error {e41} vs q4_0 {e40}"
        );
        assert!(q40.min_cosine > 0.5 && q41.top1_agreement > 0.5, "{name}");
    }
}

/// llama.cpp's logits from tests/fixtures/kquants/ (tools/make_kquant_fixtures.py stage `q4km`).
fn llama_logits(file: &str) -> Vec<f32> {
    let bytes = std::fs::read(fixture("kquants").join(file)).expect(file);
    bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect()
}

#[test]
fn k_quants_against_the_reference_and_llama_cpp() {
    // The K-quants against the float32 reference, next to the 32-weight formats, and against
    // llama.cpp running llama-quantize's own Q4_K_M of the same checkpoint (made from our F32
    // GGUF of the fixture, with llama.cpp's Q4_K_M rule and no imatrix).
    for name in QUANT_FIXTURES {
        let g = Golden::load(name);
        let mut rows = Vec::new();
        for (label, dtype) in [
            ("q8_0", WeightDtype::Q8_0),
            ("q6_k", WeightDtype::Q6_K),
            ("q4_k_m", WeightDtype::Q4_K_M),
            ("q4_k", WeightDtype::Q4_K),
            ("q4_1", WeightDtype::Q4_1),
            ("q4_0", WeightDtype::Q4_0),
        ] {
            rows.push((label.to_string(), measure(name, dtype)));
        }
        let llama = report(&g, &llama_logits(&format!("{name}-q4_k_m.llama.f32")));
        let llama_ours = report(&g, &llama_logits(&format!("{name}-ours-q4_k_m.llama.f32")));
        rows.push(("llama.cpp Q4_K_M (llama-quantize)".into(), llama));
        rows.push(("llama.cpp on our q4_k_m GGUF".into(), llama_ours));
        for (label, r) in &rows {
            println!(
                "{name} {label}: min cosine {:.6}, mean cosine {:.6}, top-1 {:.3}, greedy identical {}",
                r.min_cosine, r.mean_cosine, r.top1_agreement, r.greedy_identical
            );
        }
        let get = |l: &str| &rows.iter().find(|(x, _)| x == l).unwrap().1;
        let (q6k, q4km, q4k) = (get("q6_k"), get("q4_k_m"), get("q4_k"));
        let (llama, llama_ours) = (
            get("llama.cpp Q4_K_M (llama-quantize)"),
            get("llama.cpp on our q4_k_m GGUF"),
        );
        // The same GGUF in both engines: our q4_k_m file, run by us and by llama.cpp.
        let path = std::env::temp_dir().join(format!(
            "deepseek-quantized-{name}-{}.gguf",
            std::process::id()
        ));
        let net = Opened::open(fixture(name))
            .unwrap()
            .build(WeightDtype::Auto, 2)
            .unwrap();
        let vocab = vec![(
            "tokenizer.ggml.model".to_string(),
            deepseek_core::loader::gguf::Value::String("none".into()),
        )];
        save_gguf(&net, WeightDtype::Q4_K_M, vocab, 2, &path).unwrap();
        let m = Arc::new(Model::load(&path, LoadOptions::default()).unwrap());
        std::fs::remove_file(&path).unwrap();
        let mut s = Session::new(m, SessionOptions::default()).unwrap();
        let ours_on_file = s.eval_all(&g.all_ids()).unwrap().to_vec();
        let theirs = llama_logits(&format!("{name}-ours-q4_k_m.llama.f32"));
        let (close, rows_n) = (
            (0..g.all_ids().len())
                .filter(|r| {
                    let w = g.vocab;
                    cosine(&ours_on_file[r * w..][..w], &theirs[r * w..][..w]) >= 0.999
                })
                .count(),
            g.all_ids().len(),
        );
        println!(
            "{name}: our q4_k_m GGUF, us vs llama.cpp: cosine >= 0.999 on {close} of {rows_n} rows"
        );
        assert!(
            close + 1 >= rows_n,
            "{name}: our engine and llama.cpp part on {} rows of the same q4_k_m file",
            rows_n - close
        );
        assert!(
            q6k.min_cosine >= 0.997 && q6k.top1_agreement == 1.0 && q6k.greedy_identical,
            "{name}: q6_k min cosine {}, top-1 {}",
            q6k.min_cosine,
            q6k.top1_agreement
        );
        // 256-weight super-blocks with searched scales beat the 32-weight 4-bit formats.
        let (q41, q40) = (get("q4_1"), get("q4_0"));
        for (label, r) in [("q4_k", q4k), ("q4_k_m", q4km)] {
            assert!(
                r.mean_cosine > q41.mean_cosine && r.mean_cosine > q40.mean_cosine,
                "{name}: {label} mean cosine {} vs q4_1 {} / q4_0 {}",
                r.mean_cosine,
                q41.mean_cosine,
                q40.mean_cosine
            );
        }
        // No worse than llama.cpp's own Q4_K_M of the same checkpoint, in our engine and in
        // llama.cpp's (the embedding we keep as stored is where the files differ most).
        for (label, r) in [
            ("q4_k_m", q4km),
            ("our q4_k_m GGUF in llama.cpp", llama_ours),
        ] {
            assert!(
                r.mean_cosine >= llama.mean_cosine,
                "{name}: {label} mean cosine {} vs llama.cpp Q4_K_M {}",
                r.mean_cosine,
                llama.mean_cosine
            );
        }
        assert!(
            q4km.min_cosine >= llama.min_cosine && q4km.top1_agreement >= llama.top1_agreement,
            "{name}: q4_k_m min cosine {} top-1 {} vs llama.cpp Q4_K_M {} / {}",
            q4km.min_cosine,
            q4km.top1_agreement,
            llama.min_cosine,
            llama.top1_agreement
        );
    }
}
