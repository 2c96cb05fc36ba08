//! Runtime formats against transformers' float32 goldens: how far each format moves the logits.

mod common;

use std::sync::Arc;

use common::{argmax, fixture, Golden};
use deepseek_core::{LoadOptions, Model, Session, SessionOptions, WeightDtype};

const FIXTURES: &[&str] = &[
    "v3_tiny",
    "v2_lite_tiny",
    "v2_group_tiny",
    "v3_fp8",
    "v3_sharded_bf16",
];

fn cosine(a: &[f32], b: &[f32]) -> f64 {
    let (mut ab, mut aa, mut bb) = (0f64, 0f64, 0f64);
    for (x, y) in a.iter().zip(b) {
        ab += *x as f64 * *y as f64;
        aa += *x as f64 * *x as f64;
        bb += *y as f64 * *y as f64;
    }
    ab / (aa.sqrt() * bb.sqrt())
}

struct Report {
    min_cosine: f64,
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
    let (mut min_cosine, mut agree) = (1f64, 0usize);
    let rows = g.all_ids().len();
    for r in 0..rows {
        let (got, want) = (
            &logits[r * g.vocab..][..g.vocab],
            &g.logits[r * g.vocab..][..g.vocab],
        );
        min_cosine = min_cosine.min(cosine(got, want));
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
