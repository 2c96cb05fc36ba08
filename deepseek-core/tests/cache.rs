//! The KV cache formats against transformers' float32 logits on every golden fixture (DeepSeek
//! MLA on both attention paths, and the GQA families), and attention at depth beyond one
//! decode chunk: the same whatever the thread count and the same token by token as in one
//! prefill.
//!
//! Bars: f32 within 1e-3 (exact up to summation order); q8_0 a logit cosine of at least 0.999
//! everywhere; bf16 the same greedy tokens everywhere and a cosine of at least 0.9999. bf16's
//! largest logit error is 2.5e-2 to 1.5e-1 on these tiny random models (logits up to ~20),
//! above the 1e-2 first hoped for (f16 storage would give 3e-3 to 2e-2), so f32 stays the
//! default; and on `v3_fp8`, whose router margins (0.0036) are below bf16's noise, one routing
//! decision flips at one position: printed, not held to the cosine bar.

mod common;

use std::sync::Arc;

use common::{fixture, greedy, max_abs_diff, min_cosine, token_by_token, FixtureCopy, Golden};
use deepseek_core::{AttentionPath, CacheDtype, LoadOptions, Model, Session, SessionOptions};

const FIXTURES: &[(&str, bool)] = &[
    ("v3_tiny", true),
    ("v2_lite_tiny", true),
    ("v2_group_tiny", true),
    ("v3_fp8", true),
    ("v3_quant", true),
    ("qwen2_tiny", false),
    ("llama3_tiny", false),
    ("qwen3_tiny", false),
];

/// Smallest per-position logit cosine a bf16 cache may give.
const BF16_COSINE: f64 = 0.9999;
/// Smallest per-position logit cosine a q8_0 cache may give.
const Q8_0_COSINE: f64 = 0.999;
/// Fixtures whose router margins are below a 16-bit cache's noise (see the module doc).
const SMALL_ROUTER_MARGINS: &[&str] = &["v3_fp8"];

fn model(dir: impl AsRef<std::path::Path>, threads: usize) -> Arc<Model> {
    let dir = dir.as_ref();
    Arc::new(
        Model::load(
            dir,
            LoadOptions {
                threads: Some(threads),
                ..Default::default()
            },
        )
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display())),
    )
}

fn session(m: &Arc<Model>, path: AttentionPath, dtype: CacheDtype) -> Session {
    Session::new(
        m.clone(),
        SessionOptions {
            attention: path,
            cache_dtype: dtype,
            ..Default::default()
        },
    )
    .unwrap()
}

/// Logits of every cache format against transformers, in one prefill and token by token, on
/// both MLA paths; prints the numbers the README reports.
#[test]
fn every_cache_format_meets_its_bar_on_every_fixture() {
    for &(name, mla) in FIXTURES {
        let g = Golden::load(name);
        let m = model(fixture(name), 2);
        let ids = g.all_ids();
        let paths: &[AttentionPath] = if mla {
            &[AttentionPath::Absorbed, AttentionPath::Expanded]
        } else {
            &[AttentionPath::Auto]
        };
        for &path in paths {
            // The f32 cache's logits: what the smaller formats are measured against as well.
            let exact = session(&m, path, CacheDtype::F32)
                .eval_all(&ids)
                .unwrap()
                .to_vec();
            for dtype in CacheDtype::ALL {
                let prefill = session(&m, path, dtype).eval_all(&ids).unwrap().to_vec();
                let step = token_by_token(&mut session(&m, path, dtype), &ids);
                let err = max_abs_diff(&prefill, &g.logits).max(max_abs_diff(&step, &g.logits));
                let cos = min_cosine(&prefill, &g.logits, g.vocab)
                    .min(min_cosine(&step, &g.logits, g.vocab));
                let vs_f32 = max_abs_diff(&prefill, &exact).max(max_abs_diff(&step, &exact));
                let cos_f32 =
                    min_cosine(&prefill, &exact, g.vocab).min(min_cosine(&step, &exact, g.vocab));
                let run = greedy(
                    &mut session(&m, path, dtype),
                    &g.input_ids,
                    g.greedy_ids.len(),
                );
                let same = run == g.greedy_ids;
                println!(
                    "{name} {path:?} cache {dtype}: vs transformers max logit error {err:.2e}, \
                     min cosine {cos:.6}; vs the f32 cache max logit difference {vs_f32:.2e}, \
                     min cosine {cos_f32:.6}; greedy {}",
                    if same { "identical" } else { "DIFFERS" }
                );
                match dtype {
                    CacheDtype::F32 => assert!(err <= 1e-3, "{name} {path:?} f32: {err}"),
                    CacheDtype::BF16 => {
                        assert!(same, "{name} {path:?} bf16: greedy tokens differ");
                        assert!(
                            cos >= BF16_COSINE || SMALL_ROUTER_MARGINS.contains(&name),
                            "{name} {path:?} bf16: cosine {cos}"
                        );
                    }
                    CacheDtype::Q8_0 => {
                        assert!(cos >= Q8_0_COSINE, "{name} {path:?} q8_0: cosine {cos}")
                    }
                }
            }
        }
    }
}

/// A fixture whose context reaches past one decode chunk (256 positions), so a decoded token's
/// attention is split across chunks and merged.
fn long_fixture(name: &str) -> FixtureCopy {
    let f = FixtureCopy::of(name, "long");
    f.edit_config(|c| c["max_position_embeddings"] = serde_json::json!(2048));
    f
}

/// Decoding at depth splits the cache into chunks merged in a fixed order: one thread and two
/// give identical logits, and token-by-token decoding (merged chunks) agrees with one prefill
/// (one pass) for every format.
#[test]
fn decode_at_depth_merges_chunks_exactly() {
    for (name, path) in [
        ("v3_tiny", AttentionPath::Absorbed),
        ("qwen2_tiny", AttentionPath::Auto),
    ] {
        let f = long_fixture(name);
        let ids: Vec<u32> = (0..700u32).map(|i| (i * 7919 + 13) % 512).collect();
        let (one, two) = (model(&f.0, 1), model(&f.0, 2));
        for dtype in CacheDtype::ALL {
            let mut a = session(&one, path, dtype);
            let mut b = session(&two, path, dtype);
            a.eval(&ids[..690]).unwrap();
            b.eval(&ids[..690]).unwrap();
            let step_a = token_by_token(&mut a, &ids[690..]);
            let step_b = token_by_token(&mut b, &ids[690..]);
            assert!(
                step_a == step_b,
                "{name} {dtype}: threads change the logits"
            );
            let mut c = session(&two, path, dtype);
            c.eval(&ids[..690]).unwrap();
            let all = c.eval_all(&ids[690..]).unwrap();
            let d = max_abs_diff(&step_a, all);
            println!(
                "{name} {dtype}: decode at depth 690 vs prefill: max logit difference {d:.2e}"
            );
            assert!(d < 1e-3, "{name} {dtype}: chunked decode differs by {d}");
        }
    }
}

/// Cache memory per token is what the format says, for MLA and GQA rows, padding included
/// where a part is narrower than a Q8_0 block.
#[test]
fn cache_bytes_follow_the_format() {
    for (name, parts) in [("v3_tiny", vec![32usize, 8]), ("qwen2_tiny", vec![16; 4])] {
        let m = model(fixture(name), 1);
        let layers = m.config().num_hidden_layers;
        for dtype in CacheDtype::ALL {
            let mut s = session(&m, AttentionPath::Auto, dtype);
            let values: usize = parts
                .iter()
                .map(|p| p.next_multiple_of(dtype.align()))
                .sum();
            assert_eq!(s.cache_dtype(), dtype);
            assert_eq!(
                s.cache_bytes_per_token(),
                dtype.bytes(values) * layers,
                "{name}"
            );
            s.eval(&[3, 4, 5]).unwrap();
            assert_eq!(s.cache_bytes(), 3 * s.cache_bytes_per_token());
            assert_eq!(s.cache_bytes_allocated(), 256 * s.cache_bytes_per_token());
        }
    }
}
