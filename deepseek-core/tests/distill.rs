//! The R1-Distill architectures (Qwen2, Llama 3, Qwen3) against transformers' float32
//! Qwen2/Llama/Qwen3ForCausalLM on tiny random checkpoints (see tools/make_distill_fixtures.py):
//! every layer's hidden states, logits at every position in one prefill and token by token,
//! 16-token greedy runs, the KV cache size, and the config errors these families add; and the
//! generation layer end to end on `qwen2_r1tok` with the real R1-Distill-Qwen tokenizer.

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use common::{
    assert_rows_close, chunked, fixture, greedy, max_abs_diff, token_by_token,
    FixtureCopy as Scratch, Golden, LOGIT_TOL,
};
use deepseek_core::config::Architecture;
use deepseek_core::model::Network;
use deepseek_core::{
    Config, Error, FinishReason, GenerateParams, Generator, LoadOptions, Message, Model,
    SamplingParams, Session, SessionOptions, WeightDtype,
};
use safetensors::tensor::{Dtype, SafeTensors, TensorView};

const FIXTURES: &[&str] = &[
    "qwen2_tiny",
    "qwen2_tied",
    "llama3_tiny",
    "llama3_sharded_bf16",
    "qwen3_tiny",
];

fn load(
    dir: impl Into<PathBuf>,
    threads: usize,
    dtype: WeightDtype,
) -> deepseek_core::Result<Model> {
    Model::load(
        dir.into(),
        LoadOptions {
            threads: Some(threads),
            dtype,
        },
    )
}

fn model(name: &str, threads: usize) -> Arc<Model> {
    Arc::new(
        load(fixture(name), threads, WeightDtype::Auto).unwrap_or_else(|e| panic!("{name}: {e}")),
    )
}

fn session(m: &Arc<Model>) -> Session {
    Session::new(m.clone(), SessionOptions::default()).unwrap()
}

#[test]
fn fixtures_are_the_families_they_claim() {
    for name in FIXTURES {
        let m = model(name, 1);
        let l = m
            .config()
            .llama()
            .unwrap_or_else(|| panic!("{name}: not Llama-family"));
        assert!(matches!(m.network(), Network::Llama(_)) && m.transformer().is_none());
        assert!(m.weight_bytes_per_token() > 0);
        match *name {
            "qwen2_tiny" | "qwen2_tied" => assert!(l.qkv_bias && !l.qk_norm),
            "qwen3_tiny" => assert!(l.qk_norm && l.head_dim * m.config().num_attention_heads != 64),
            _ => assert!(!l.qkv_bias && l.rope_scaling.is_some()),
        }
        assert_eq!(m.config().tie_word_embeddings, *name == "qwen2_tied");
    }
}

#[test]
fn hidden_states_match_transformers_layer_by_layer() {
    for name in FIXTURES {
        let g = Golden::load(name);
        let m = model(name, 1);
        let ids = g.all_ids();
        let trace = session(&m).trace(&ids).unwrap();
        let per = ids.len() * g.hidden;
        let mut worst = 0f32;
        // The last golden entry is after the final norm: checked through the logits.
        for l in 0..m.config().num_hidden_layers {
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
        println!("{name}: max hidden-state error {worst:e}");
    }
}

#[test]
fn prefill_logits_match_at_every_position() {
    for name in FIXTURES {
        let g = Golden::load(name);
        for threads in [1, 2] {
            let m = model(name, threads);
            let got = session(&m).eval_all(&g.all_ids()).unwrap().to_vec();
            let d = assert_rows_close(
                &format!("{name} prefill t{threads}"),
                &got,
                &g.logits,
                g.vocab,
                LOGIT_TOL,
            );
            println!("{name}: prefill threads {threads}: max logit error {d:e}");
        }
    }
}

#[test]
fn token_by_token_logits_match_at_every_position() {
    for name in FIXTURES {
        let g = Golden::load(name);
        let m = model(name, 2);
        let got = token_by_token(&mut session(&m), &g.all_ids());
        let d = assert_rows_close(
            &format!("{name} token-by-token"),
            &got,
            &g.logits,
            g.vocab,
            LOGIT_TOL,
        );
        println!("{name}: token by token: max logit error {d:e}");
    }
}

#[test]
fn prefill_then_decode_in_chunks_matches() {
    for name in FIXTURES {
        let g = Golden::load(name);
        let m = model(name, 2);
        let ids = g.all_ids();
        let mut s = session(&m);
        let got = chunked(&mut s, &ids);
        assert_rows_close(
            &format!("{name} chunked"),
            &got,
            &g.logits,
            g.vocab,
            LOGIT_TOL,
        );
        // Roll back and redo the tail: the cache is reused exactly.
        s.truncate(9).unwrap();
        let again = s.eval_all(&ids[9..]).unwrap().to_vec();
        assert_rows_close(
            &format!("{name} after truncate"),
            &again,
            &g.logits[9 * g.vocab..],
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
        let out = greedy(&mut session(&m), &g.input_ids, g.greedy_ids.len());
        assert_eq!(
            out, g.greedy_ids,
            "{name}: greedy continuation differs from transformers"
        );
    }
}

#[test]
fn kv_cache_holds_k_and_v_per_kv_head() {
    for name in FIXTURES {
        let m = model(name, 1);
        let c = m.config();
        let l = c.llama().unwrap();
        let per_token = 2 * l.num_key_value_heads * l.head_dim * c.num_hidden_layers * 4;
        let mut s = session(&m);
        assert_eq!(s.cache_bytes_per_token(), per_token, "{name}");
        s.eval(&[3, 4, 5, 6, 7]).unwrap();
        assert_eq!(s.cache_bytes(), 5 * per_token, "{name}");
        assert!(
            l.num_key_value_heads < c.num_attention_heads,
            "{name}: not GQA"
        );
    }
}

/// transformers ignores YaRN's `attn_factor`; we apply it (as vLLM does). The golden logits come
/// from transformers with the equivalent `attention_factor`; without `attn_factor` in the
/// config we match transformers on the config as written.
#[test]
fn qwen3_yarn_attn_factor_is_applied_and_optional() {
    let name = "qwen3_tiny";
    let g = Golden::load(name);
    let bytes = std::fs::read(fixture(name).join("golden.safetensors")).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let t = st.tensor("logits_transformers_default").unwrap();
    assert_eq!(t.dtype(), Dtype::F32);
    let want: Vec<f32> = t
        .data()
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect();
    assert!(
        max_abs_diff(&want, &g.logits) > 0.05,
        "attn_factor changes nothing here"
    );

    let d = Scratch::of(name, "no-attn-factor");
    d.edit_config(|c| {
        c["rope_scaling"]
            .as_object_mut()
            .unwrap()
            .remove("attn_factor");
    });
    let m = Arc::new(load(&d.0, 1, WeightDtype::Auto).unwrap());
    let got = session(&m).eval_all(&g.all_ids()).unwrap().to_vec();
    let e = assert_rows_close("qwen3 without attn_factor", &got, &want, g.vocab, LOGIT_TOL);
    println!("{name} without attn_factor: max logit error {e:e}");
}

#[test]
fn runtime_formats_convert_at_load() {
    // F32 storage converted to each runtime format as it loads: exact for f32, and the worst
    // position's logits keep their direction for the others (4-bit on 64-wide rows is coarse).
    let name = "qwen2_tiny";
    let g = Golden::load(name);
    let ids = g.all_ids();
    let min_cosine = |got: &[f32]| {
        got.chunks(g.vocab)
            .zip(g.logits.chunks(g.vocab))
            .map(|(a, b)| {
                let dot = |x: &[f32], y: &[f32]| x.iter().zip(y).map(|(p, q)| p * q).sum::<f32>();
                dot(a, b) / (dot(a, a) * dot(b, b)).sqrt()
            })
            .fold(1f32, f32::min)
    };
    for (dtype, cosine) in [
        (WeightDtype::BF16, 0.9999),
        (WeightDtype::F16, 0.99999),
        (WeightDtype::Q8_0, 0.999),
        (WeightDtype::Q4_0, 0.95),
    ] {
        let m = Arc::new(load(fixture(name), 2, dtype).unwrap());
        let got = session(&m).eval_all(&ids).unwrap().to_vec();
        let c = min_cosine(&got);
        println!(
            "{name} as {dtype:?}: min cosine {c}, max logit error {:e}",
            max_abs_diff(&got, &g.logits)
        );
        assert!(
            c >= cosine,
            "{name} as {dtype:?}: min cosine {c} < {cosine}"
        );
    }
    let m = Arc::new(load(fixture(name), 2, WeightDtype::F32).unwrap());
    let got = session(&m).eval_all(&ids).unwrap().to_vec();
    assert_rows_close("f32", &got, &g.logits, g.vocab, LOGIT_TOL);
}

#[test]
fn unsupported_settings_name_the_field() {
    let field_of = |r: deepseek_core::Result<Model>| match r {
        Err(Error::Config { field, message }) => format!("{field}: {message}"),
        Err(e) => panic!("expected a config error, got {e}"),
        Ok(_) => panic!("expected a config error, loaded"),
    };

    let d = Scratch::of("qwen2_tiny", "sliding");
    d.edit_config(|c| c["use_sliding_window"] = true.into());
    let e = field_of(load(&d.0, 1, WeightDtype::Auto));
    assert!(e.starts_with("use_sliding_window:"), "{e}");

    let d = Scratch::of("llama3_tiny", "rope");
    d.edit_config(|c| c["rope_scaling"]["rope_type"] = "longrope".into());
    let e = field_of(load(&d.0, 1, WeightDtype::Auto));
    assert!(
        e.starts_with("rope_scaling.rope_type:") && e.contains("longrope"),
        "{e}"
    );

    let d = Scratch::of("llama3_sharded_bf16", "rope");
    d.edit_config(|c| c["rope_parameters"]["rope_type"] = "dynamic".into());
    let e = field_of(load(&d.0, 1, WeightDtype::Auto));
    assert!(e.starts_with("rope_parameters.rope_type:"), "{e}");

    // A Qwen3 config without head_dim means 128 (transformers' default): the weights disagree.
    let d = Scratch::of("qwen3_tiny", "head-dim");
    d.edit_config(|c| {
        c.as_object_mut().unwrap().remove("head_dim");
    });
    let err = load(&d.0, 1, WeightDtype::Auto).unwrap_err().to_string();
    assert!(
        err.contains("q_proj.weight") && err.contains("512"),
        "{err}"
    );

    // Tied config but the file has an lm_head: a checkpoint/config mismatch is not silent
    // either way round; untied config without lm_head names the tensor.
    let d = Scratch::of("qwen2_tied", "untied");
    d.edit_config(|c| c["tie_word_embeddings"] = false.into());
    let err = load(&d.0, 1, WeightDtype::Auto).unwrap_err();
    assert!(
        matches!(&err, Error::MissingTensor(n) if n == "lm_head.weight"),
        "{err}"
    );
}

#[test]
fn config_is_parsed_per_family() {
    let m = model("llama3_sharded_bf16", 1);
    let Architecture::Llama(l) = &m.config().architecture else {
        panic!("not llama")
    };
    assert_eq!((l.num_key_value_heads, l.head_dim), (2, 16));
    // The Hub form and the save_pretrained form describe the same model.
    let hub = model("llama3_tiny", 1);
    assert_eq!(hub.config().architecture, m.config().architecture);
    assert_eq!(hub.config().rope_theta, 500000.0);
}

// ------------------------------------------------------------------------------------------
// End to end: qwen2_r1tok + the R1-Distill-Qwen tokenizer
// ------------------------------------------------------------------------------------------

fn fnv1a(name: &str) -> u64 {
    name.bytes().fold(0xCBF2_9CE4_8422_2325, |h, b| {
        (h ^ b as u64).wrapping_mul(0x0100_0000_01B3)
    })
}

fn splitmix64(x: u64) -> u64 {
    let z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    let z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The weights of `qwen2_r1tok`, as `hash_weights` in tools/make_distill_fixtures.py computes
/// them: `k * 2^-shift` with `k` in [-128, 127] from a hash of name, salt and index (norms
/// `1 + k / 1024`), all exact in f32, written to `dir/model.safetensors`.
fn write_hash_weights(dir: &Path, c: &Config, salt: u64) {
    let l = c.llama().unwrap();
    let (h, v, i) = (c.hidden_size, c.vocab_size, c.intermediate_size);
    let (q, kv) = (
        c.num_attention_heads * l.head_dim,
        l.num_key_value_heads * l.head_dim,
    );
    let mut specs: Vec<(String, Vec<usize>, Option<i32>)> =
        vec![("model.embed_tokens.weight".into(), vec![v, h], Some(6))];
    for layer in 0..c.num_hidden_layers {
        let p = format!("model.layers.{layer}.");
        let a = format!("{p}self_attn.");
        for (name, shape, shift) in [
            (format!("{a}q_proj.weight"), vec![q, h], Some(7)),
            (format!("{a}q_proj.bias"), vec![q], Some(8)),
            (format!("{a}k_proj.weight"), vec![kv, h], Some(7)),
            (format!("{a}k_proj.bias"), vec![kv], Some(8)),
            (format!("{a}v_proj.weight"), vec![kv, h], Some(7)),
            (format!("{a}v_proj.bias"), vec![kv], Some(8)),
            (format!("{a}o_proj.weight"), vec![h, q], Some(7)),
            (format!("{p}mlp.gate_proj.weight"), vec![i, h], Some(7)),
            (format!("{p}mlp.up_proj.weight"), vec![i, h], Some(7)),
            (format!("{p}mlp.down_proj.weight"), vec![h, i], Some(8)),
            (format!("{p}input_layernorm.weight"), vec![h], None),
            (format!("{p}post_attention_layernorm.weight"), vec![h], None),
        ] {
            specs.push((name, shape, shift));
        }
    }
    specs.push(("model.norm.weight".into(), vec![h], None));
    let data: Vec<(String, Vec<usize>, Vec<u8>)> = specs
        .into_iter()
        .map(|(name, shape, shift)| {
            let n: usize = shape.iter().product();
            let base = fnv1a(&name).wrapping_add(salt.wrapping_mul(0x9E37_79B9_7F4A_7C15));
            let bytes = (0..n as u64)
                .flat_map(|j| {
                    let k = (splitmix64(base.wrapping_add(j)) >> 56) as f32 - 128.0;
                    let x = match shift {
                        Some(s) => k / (1u32 << s) as f32,
                        None => 1.0 + k / 1024.0,
                    };
                    x.to_le_bytes()
                })
                .collect();
            (name, shape, bytes)
        })
        .collect();
    let views: Vec<(String, TensorView<'_>)> = data
        .iter()
        .map(|(n, s, b)| {
            (
                n.clone(),
                TensorView::new(Dtype::F32, s.clone(), b).unwrap(),
            )
        })
        .collect();
    safetensors::serialize_to_file(views, None, &dir.join("model.safetensors")).unwrap();
}

#[test]
fn generator_runs_r1_distill_qwen_end_to_end() {
    let golden: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(fixture("qwen2_r1tok").join("golden.json")).unwrap(),
    )
    .unwrap();
    let ids = |k: &str| -> Vec<u32> {
        golden[k]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_u64().unwrap() as u32)
            .collect()
    };
    let d = Scratch::of("qwen2_r1tok", "e2e");
    let config = Config::from_file(d.0.join("config.json")).unwrap();
    write_hash_weights(&d.0, &config, golden["salt"].as_u64().unwrap());
    let gen = Generator::load(
        &d.0,
        Some(&fixture("tokenizers").join("deepseek-r1-distill-qwen-7b")),
        LoadOptions {
            threads: Some(1),
            ..Default::default()
        },
    )
    .unwrap();
    // The real checkpoint's config.json and generation_config.json disagree on bos; eos 151643
    // (`<｜end▁of▁sentence｜>`) comes from both, and sampling defaults from the latter.
    assert!(gen.eos_ids().contains(&151643));
    let defaults = gen.default_params().sampling;
    assert_eq!((defaults.temperature, defaults.top_p), (0.6, 0.95));

    let msgs = [Message::user("What is 1+1?")];
    let (text, prompt) = gen.chat_tokens(&msgs).unwrap();
    assert_eq!(text, golden["prompt"].as_str().unwrap());
    assert_eq!(prompt, ids("input_ids"));
    let want = ids("greedy_ids");
    let params = GenerateParams {
        max_tokens: Some(want.len()),
        sampling: SamplingParams::greedy(),
        ..Default::default()
    };
    let r = gen.chat(&msgs, &params).unwrap();
    assert_eq!(
        r.tokens, want,
        "greedy continuation differs from transformers"
    );
    assert_eq!(r.finish_reason, FinishReason::Length);
    assert_eq!(r.text, golden["greedy_text"].as_str().unwrap());
    // The template opened `<think>`; the random model never closes it.
    assert_eq!(r.reasoning_content.as_deref(), Some(r.text.trim()));
    assert_eq!(r.content, "");
}

/// As for MLA: heads attended in parallel give bit-identical logits to one thread.
#[test]
fn parallel_heads_equal_one_thread_at_long_context() {
    let ids: Vec<u32> = (0..250u32).map(|i| (i * 7919 + 13) % 512).collect();
    let one = session(&model("qwen2_tiny", 1))
        .eval_all(&ids)
        .unwrap()
        .to_vec();
    let two = session(&model("qwen2_tiny", 2))
        .eval_all(&ids)
        .unwrap()
        .to_vec();
    assert!(one == two, "threads change the logits");
}
