//! Runtime formats against transformers' float32 goldens: how far each format moves the logits.

mod common;

use std::sync::Arc;

use common::{argmax, cosine, fixture, Golden};
use deepseek_core::loader::{Checkpoint, TensorSource};
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
        assert!(
            e41 < 0.95 * e40,
            "{name}: q4_1 weight error {e41} vs q4_0 {e40}"
        );
        assert!(q40.min_cosine > 0.5 && q41.top1_agreement > 0.5, "{name}");
    }
}
