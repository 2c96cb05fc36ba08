//! deepseek-core against transformers' float32 DeepseekV2/V3ForCausalLM on tiny random
//! checkpoints (see tools/make_fixtures.py): every layer's hidden states, logits at every
//! position in one prefill and token by token, both attention paths, 16-token greedy runs.

mod common;

use std::sync::Arc;

use common::{assert_rows_close, chunked, fixture, greedy, token_by_token, Golden, LOGIT_TOL};
use deepseek_core::{AttentionPath, LoadOptions, Model, Session, SessionOptions};

const FIXTURES: &[&str] = &[
    "v3_tiny",
    "v2_lite_tiny",
    "v2_group_tiny",
    "v3_fp8",
    "v3_sharded_bf16",
];

fn model(name: &str, threads: usize) -> Arc<Model> {
    Arc::new(
        Model::load(
            fixture(name),
            LoadOptions {
                threads: Some(threads),
                ..Default::default()
            },
        )
        .unwrap_or_else(|e| panic!("{name}: {e}")),
    )
}

fn session(m: &Arc<Model>, path: AttentionPath) -> Session {
    Session::new(
        m.clone(),
        SessionOptions {
            attention: path,
            ..Default::default()
        },
    )
    .unwrap()
}

/// Every layer's input matches transformers' `hidden_states`, which names the first layer
/// that goes wrong when logits do.
fn check_hidden_states(name: &str) -> f32 {
    let g = Golden::load(name);
    let m = model(name, 1);
    let ids = g.all_ids();
    let trace = session(&m, AttentionPath::Auto).trace(&ids).unwrap();
    let per = ids.len() * g.hidden;
    let layers = m.config().num_hidden_layers;
    let mut worst = 0f32;
    // transformers' hidden_states: the embeddings, then each layer's output; the last entry is
    // after the final norm, which our trace does not include, so it is checked through the logits.
    for l in 0..layers {
        let want = &g.hidden_states[l * per..][..per];
        let scale = want.iter().fold(0f32, |a, v| a.max(v.abs())).max(1.0);
        let d = assert_rows_close(
            &format!("{name}: input of layer {l}"),
            &trace.hidden_states[l],
            want,
            g.hidden,
            1e-4 * scale,
        );
        worst = worst.max(d);
    }
    worst
}

#[test]
fn hidden_states_match_transformers_layer_by_layer() {
    for name in FIXTURES {
        let d = check_hidden_states(name);
        println!("{name}: max hidden-state error {d:e}");
    }
}

#[test]
fn prefill_logits_match_at_every_position() {
    for name in FIXTURES {
        let g = Golden::load(name);
        for path in [AttentionPath::Absorbed, AttentionPath::Expanded] {
            for threads in [1, 2] {
                let m = model(name, threads);
                let mut s = session(&m, path);
                let got = s.eval_all(&g.all_ids()).unwrap().to_vec();
                let d = assert_rows_close(
                    &format!("{name} prefill {path:?} t{threads}"),
                    &got,
                    &g.logits,
                    g.vocab,
                    LOGIT_TOL,
                );
                println!("{name}: prefill {path:?} threads {threads}: max logit error {d:e}");
            }
        }
    }
}

#[test]
fn token_by_token_logits_match_at_every_position() {
    for name in FIXTURES {
        let g = Golden::load(name);
        let m = model(name, 2);
        for path in [
            AttentionPath::Absorbed,
            AttentionPath::Expanded,
            AttentionPath::Auto,
        ] {
            let got = token_by_token(&mut session(&m, path), &g.all_ids());
            let d = assert_rows_close(
                &format!("{name} token-by-token {path:?}"),
                &got,
                &g.logits,
                g.vocab,
                LOGIT_TOL,
            );
            println!("{name}: token by token {path:?}: max logit error {d:e}");
        }
    }
}

#[test]
fn prefill_then_decode_in_chunks_matches() {
    // A prompt, then chunks of 3 and single tokens: the mix of cached and new positions that
    // chat turns produce.
    for name in FIXTURES {
        let g = Golden::load(name);
        let m = model(name, 2);
        let ids = g.all_ids();
        let got = chunked(&mut session(&m, AttentionPath::Auto), &ids);
        assert_rows_close(
            &format!("{name} chunked"),
            &got,
            &g.logits,
            g.vocab,
            LOGIT_TOL,
        );
    }
}

#[test]
fn greedy_continuation_is_identical() {
    for name in FIXTURES {
        let g = Golden::load(name);
        let m = model(name, 2);
        let out = greedy(
            &mut session(&m, AttentionPath::Auto),
            &g.input_ids,
            g.greedy_ids.len(),
        );
        assert_eq!(
            out, g.greedy_ids,
            "{name}: greedy continuation differs from transformers"
        );
    }
}

#[test]
fn latent_cache_costs_kv_lora_plus_rope_per_layer() {
    let m = model("v3_tiny", 1);
    let layers = m.config().num_hidden_layers;
    let c = m.config().deepseek().unwrap().clone();
    let mut s = session(&m, AttentionPath::Auto);
    let per_token = (c.kv_lora_rank + c.qk_rope_head_dim) * layers * 4;
    assert_eq!(s.cache_bytes_per_token(), per_token);
    s.eval(&[3, 4, 5, 6, 7]).unwrap();
    assert_eq!(s.cache_bytes(), 5 * per_token);
    // A plain multi-head cache would hold K (nope + rope) and V for every head.
    let mha = m.config().num_attention_heads * (c.qk_head_dim() + c.v_head_dim) * layers * 4;
    assert!(mha > per_token);
    println!("v3_tiny: latent cache {per_token} B/token vs {mha} B/token expanded");
}

#[test]
fn truncate_and_reset_reuse_the_cache_exactly() {
    let name = "v3_tiny";
    let g = Golden::load(name);
    let m = model(name, 1);
    let ids = g.all_ids();
    let mut s = session(&m, AttentionPath::Auto);
    s.eval(&ids[..10]).unwrap();
    // Roll back to 7 tokens and continue: same logits as never having gone further.
    s.truncate(7).unwrap();
    let got = s.eval_all(&ids[7..12]).unwrap().to_vec();
    assert_rows_close(
        "after truncate",
        &got,
        &g.logits[7 * g.vocab..12 * g.vocab],
        g.vocab,
        LOGIT_TOL,
    );
    s.reset();
    assert_eq!(s.len(), 0);
    let got = s.eval(&ids[..3]).unwrap().to_vec();
    assert_rows_close(
        "after reset",
        &got,
        &g.logits[2 * g.vocab..3 * g.vocab],
        g.vocab,
        LOGIT_TOL,
    );
    assert!(s.truncate(4).is_err());
}

/// Heads are attended in parallel once the context is long enough to be worth it: each head's
/// arithmetic is unchanged, so two threads give bit-identical logits to one (the one-thread
/// path is the one checked against transformers above).
#[test]
fn parallel_heads_equal_one_thread_at_long_context() {
    let ids: Vec<u32> = (0..250u32).map(|i| (i * 7919 + 13) % 512).collect();
    for path in [AttentionPath::Absorbed, AttentionPath::Expanded] {
        let one = session(&model("v3_tiny", 1), path)
            .eval_all(&ids)
            .unwrap()
            .to_vec();
        let two = session(&model("v3_tiny", 2), path)
            .eval_all(&ids)
            .unwrap()
            .to_vec();
        assert!(one == two, "{path:?}: threads change the logits");
    }
}
