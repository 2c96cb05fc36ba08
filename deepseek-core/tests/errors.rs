//! Bad inputs give a clear error naming the culprit, never a panic or a silent wrong answer.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{fixture, FixtureCopy as Scratch};
use deepseek_core::{
    ChatTemplate, Error, GenerateParams, Generator, LoadOptions, Message, Model, Sampler,
    SamplingParams, Session, SessionOptions, Tokenizer,
};
use safetensors::tensor::Dtype;

fn err_text(r: Result<Model, Error>) -> (Error, String) {
    let e = r.expect_err("loading should fail");
    let s = e.to_string();
    (e, s)
}

#[test]
fn missing_folder_and_missing_weights() {
    let (e, s) = err_text(Model::load("/nonexistent/deepseek", LoadOptions::default()));
    assert!(
        matches!(e, Error::Io { .. }) && s.contains("/nonexistent/deepseek"),
        "{s}"
    );

    let d = Scratch::of("v3_tiny", "noweights");
    std::fs::remove_file(d.path("model.safetensors")).unwrap();
    let (e, s) = err_text(d.load());
    assert!(
        matches!(e, Error::Io { .. }) && s.contains("model.safetensors"),
        "{s}"
    );

    let d = Scratch::of("v3_tiny", "noconfig");
    std::fs::remove_file(d.path("config.json")).unwrap();
    let (_, s) = err_text(d.load());
    assert!(s.contains("config.json"), "{s}");
}

#[test]
fn truncated_empty_and_garbage_safetensors() {
    let d = Scratch::of("v3_tiny", "trunc");
    let p = d.path("model.safetensors");
    let len = std::fs::metadata(&p).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&p)
        .unwrap()
        .set_len(len - 100)
        .unwrap();
    let (e, s) = err_text(d.load());
    assert!(
        matches!(e, Error::Safetensors { .. }) && s.contains("model.safetensors"),
        "{s}"
    );

    std::fs::write(&p, b"").unwrap();
    assert!(matches!(d.load(), Err(Error::Safetensors { .. })));

    let mut garbage = 40u64.to_le_bytes().to_vec();
    garbage.extend_from_slice(b"{\"a\": {\"dtype\": \"F32\", \"shape\": [1000]");
    std::fs::write(&p, garbage).unwrap();
    assert!(matches!(d.load(), Err(Error::Safetensors { .. })));

    // A header claiming a huge size must not be trusted.
    std::fs::write(&p, u64::MAX.to_le_bytes()).unwrap();
    assert!(matches!(d.load(), Err(Error::Safetensors { .. })));
}

#[test]
fn missing_shard_and_corrupt_index() {
    let d = Scratch::of("v3_sharded_bf16", "shard");
    std::fs::remove_file(d.path("model-00002-of-00003.safetensors")).unwrap();
    let (e, s) = err_text(d.load());
    assert!(
        matches!(e, Error::Io { .. }) && s.contains("model-00002-of-00003.safetensors"),
        "{s}"
    );

    let d = Scratch::of("v3_sharded_bf16", "index");
    std::fs::write(
        d.path("model.safetensors.index.json"),
        "{\"weight_map\": 3}",
    )
    .unwrap();
    let (e, s) = err_text(d.load());
    assert!(
        matches!(e, Error::Json { .. }) && s.contains("weight_map"),
        "{s}"
    );

    std::fs::write(d.path("model.safetensors.index.json"), "not json").unwrap();
    assert!(matches!(d.load(), Err(Error::Json { .. })));

    std::fs::write(
        d.path("model.safetensors.index.json"),
        r#"{"weight_map": {"x": "../etc/passwd"}}"#,
    )
    .unwrap();
    assert!(matches!(d.load(), Err(Error::Json { .. })));
}

#[test]
fn config_that_disagrees_with_the_weights() {
    // Wrong shape: the config's kv_lora_rank no longer matches the tensors.
    let d = Scratch::of("v3_tiny", "shape");
    d.edit_config(|c| c["kv_lora_rank"] = 16.into());
    let (e, s) = err_text(d.load());
    assert!(
        matches!(e, Error::Shape { .. }) && s.contains("kv_a_proj_with_mqa"),
        "{s}"
    );

    // More layers than the checkpoint has: the first missing tensor is named.
    let d = Scratch::of("v3_tiny", "layers");
    d.edit_config(|c| {
        c["num_hidden_layers"] = 4.into();
        c["num_nextn_predict_layers"] = 0.into();
    });
    let (e, s) = err_text(d.load());
    assert!(
        matches!(e, Error::MissingTensor(_)) && s.contains("model.layers.3."),
        "{s}"
    );

    // Fewer layers than the checkpoint has, and no MTP layer declared: not silently ignored.
    let d = Scratch::of("v3_tiny", "fewer");
    d.edit_config(|c| {
        c["num_hidden_layers"] = 2.into();
        c["num_nextn_predict_layers"] = 0.into();
    });
    let (_, s) = err_text(d.load());
    assert!(s.contains("model.layers.2."), "{s}");

    // Unknown architecture and bad values name themselves.
    let d = Scratch::of("v3_tiny", "arch");
    d.edit_config(|c| c["model_type"] = "mamba".into());
    let (e, s) = err_text(d.load());
    assert!(
        matches!(e, Error::UnsupportedArchitecture(_)) && s.contains("mamba"),
        "{s}"
    );
    d.edit_config(|c| {
        c["model_type"] = "deepseek_v3".into();
        c["topk_group"] = 9.into();
    });
    assert!(err_text(d.load()).1.contains("topk_group"));

    // An activation other than SiLU used to load and give SiLU's logits.
    let d = Scratch::of("v3_tiny", "act");
    d.edit_config(|c| c["hidden_act"] = "gelu".into());
    let (e, s) = err_text(d.load());
    assert!(
        matches!(&e, Error::Config { field, .. } if field == "hidden_act") && s.contains("gelu"),
        "{s}"
    );
}

#[test]
fn missing_tensor_and_unsupported_dtype() {
    let d = Scratch::of("v3_tiny", "missing");
    d.edit_weights(|n, dt, s, b| {
        (n != "model.layers.1.mlp.gate.e_score_correction_bias")
            .then(|| (dt, s.to_vec(), b.to_vec()))
    });
    let (e, s) = err_text(d.load());
    assert!(
        matches!(e, Error::MissingTensor(_)) && s.contains("e_score_correction_bias"),
        "{s}"
    );

    let d = Scratch::of("v3_tiny", "dtype");
    d.edit_weights(|n, dt, s, b| {
        let dt = if n == "model.norm.weight" {
            Dtype::I32
        } else {
            dt
        };
        Some((dt, s.to_vec(), b.to_vec()))
    });
    let (e, s) = err_text(d.load());
    assert!(
        matches!(e, Error::Dtype { .. }) && s.contains("model.norm.weight"),
        "{s}"
    );
}

#[test]
fn fp8_needs_its_scales_and_its_config() {
    let d = Scratch::of("v3_fp8", "noscale");
    d.edit_weights(|n, dt, s, b| {
        (n != "model.layers.0.self_attn.o_proj.weight_scale_inv")
            .then(|| (dt, s.to_vec(), b.to_vec()))
    });
    let (e, s) = err_text(d.load());
    assert!(
        matches!(e, Error::Dtype { .. }) && s.contains("o_proj"),
        "{s}"
    );

    let d = Scratch::of("v3_fp8", "noconfig");
    d.edit_config(|c| {
        c.as_object_mut().unwrap().remove("quantization_config");
    });
    let (_, s) = err_text(d.load());
    assert!(s.contains("quantization_config"), "{s}");

    let d = Scratch::of("v3_fp8", "badscale");
    d.edit_weights(|n, dt, s, b| {
        let s = if n == "model.layers.0.mlp.down_proj.weight_scale_inv" {
            vec![s[0] * s[1]]
        } else {
            s.to_vec()
        };
        Some((dt, s, b.to_vec()))
    });
    let (e, s) = err_text(d.load());
    assert!(
        matches!(e, Error::Shape { .. }) && s.contains("down_proj.weight_scale_inv"),
        "{s}"
    );
}

fn tiny_session(opts: SessionOptions) -> Result<Session, Error> {
    let m = Arc::new(
        Model::load(
            fixture("v3_tiny"),
            LoadOptions {
                threads: Some(1),
                ..Default::default()
            },
        )
        .unwrap(),
    );
    Session::new(m, opts)
}

#[test]
fn bad_session_inputs() {
    let mut s = tiny_session(SessionOptions {
        context_length: Some(8),
        ..Default::default()
    })
    .unwrap();
    assert!(matches!(s.eval(&[]), Err(Error::InvalidArgument(_))));
    match s.eval(&[1, 2, 512]) {
        Err(Error::TokenOutOfRange {
            id: 512,
            position: 2,
            vocab_size: 512,
        }) => {}
        other => panic!("{other:?}"),
    }
    assert_eq!(s.len(), 0, "a rejected call leaves the cache untouched");
    s.eval(&[1, 2, 3, 4, 5, 6]).unwrap();
    match s.eval(&[1, 2, 3]) {
        Err(Error::ContextOverflow {
            cached: 6,
            new: 3,
            limit: 8,
        }) => {}
        other => panic!("{other:?}"),
    }
    assert_eq!(s.len(), 6);
    s.eval(&[7, 8]).unwrap();
    assert!(s.truncate(9).is_err());

    assert!(matches!(
        tiny_session(SessionOptions {
            context_length: Some(0),
            ..Default::default()
        }),
        Err(Error::InvalidArgument(_))
    ));
    assert!(matches!(
        tiny_session(SessionOptions {
            context_length: Some(257),
            ..Default::default()
        }),
        Err(Error::InvalidArgument(_))
    ));
    assert!(matches!(
        tiny_session(SessionOptions {
            threads: Some(0),
            ..Default::default()
        }),
        Err(Error::InvalidArgument(_))
    ));
    assert!(matches!(
        Model::load(
            fixture("v3_tiny"),
            LoadOptions {
                threads: Some(0),
                ..Default::default()
            }
        ),
        Err(Error::InvalidArgument(_))
    ));
}

#[test]
fn mtp_layer_is_skipped() {
    // v3_fp8 carries R1-style model.layers.{num_hidden_layers}.* tensors.
    let m = Model::load(
        fixture("v3_fp8"),
        LoadOptions {
            threads: Some(1),
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(
        m.transformer().unwrap().layers.len(),
        m.config().num_hidden_layers
    );
}

/// Rewrites the index of a sharded copy through `f` on its `weight_map`.
fn edit_index(d: &Scratch, f: impl FnOnce(&mut serde_json::Map<String, serde_json::Value>)) {
    let p = d.path("model.safetensors.index.json");
    let mut v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap();
    f(v["weight_map"].as_object_mut().unwrap());
    std::fs::write(p, v.to_string()).unwrap();
}

#[test]
fn the_shard_index_is_honoured_exactly() {
    let name = "model.layers.0.self_attn.kv_b_proj.weight";
    let other = "model-00002-of-00003.safetensors";

    // The index places a tensor in a shard that does not hold it.
    let d = Scratch::of("v3_sharded_bf16", "wrongshard");
    edit_index(&d, |m| {
        m.insert(name.into(), other.into());
    });
    let (e, s) = err_text(d.load());
    assert!(
        matches!(e, Error::Safetensors { .. }) && s.contains(name) && s.contains(other),
        "{s}"
    );

    // A tensor stored in a shard but missing from the index.
    let d = Scratch::of("v3_sharded_bf16", "unlisted");
    edit_index(&d, |m| {
        m.remove(name);
    });
    let (e, s) = err_text(d.load());
    assert!(
        matches!(e, Error::Safetensors { .. }) && s.contains(name) && s.contains("not listed"),
        "{s}"
    );

    // The same tensor stored in two shards: never "whichever loads last wins".
    let d = Scratch::of("v3_sharded_bf16", "twice");
    let first = d.path("model-00001-of-00003.safetensors");
    let second = d.path(other);
    let bytes = std::fs::read(&first).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let dup = st.tensor(name).unwrap();
    let bytes2 = std::fs::read(&second).unwrap();
    let st2 = safetensors::SafeTensors::deserialize(&bytes2).unwrap();
    let mut views: Vec<(String, safetensors::tensor::TensorView<'_>)> = st2.tensors();
    views.push((name.to_string(), dup));
    safetensors::serialize_to_file(views, None, &second).unwrap();
    let (e, s) = err_text(d.load());
    assert!(
        matches!(e, Error::Safetensors { .. }) && s.contains(name),
        "{s}"
    );
}

#[test]
fn a_layer_count_no_checkpoint_backs_fails_without_allocating() {
    // 10^9 layers used to abort the process on a capacity taken from the config.
    let d = Scratch::of("v3_tiny", "billion");
    d.edit_config(|c| c["num_hidden_layers"] = 1_000_000_000u64.into());
    let (e, s) = err_text(d.load());
    // Layer 2 exists (the MTP layer's decoder part): layer 3 is the first missing.
    assert!(
        matches!(e, Error::MissingTensor(_)) && s.contains("model.layers.3."),
        "{s}"
    );
}

#[test]
fn tied_embeddings_with_a_different_stored_head_are_refused() {
    // qwen3_tiny stores its own lm_head; claiming it is tied contradicts the weights.
    let d = Scratch::of("qwen3_tiny", "tied");
    d.edit_config(|c| c["tie_word_embeddings"] = true.into());
    let (e, s) = err_text(d.load());
    assert!(
        matches!(e, Error::Config { .. }) && s.contains("tie_word_embeddings"),
        "{s}"
    );
    // A stored head that is an exact copy of the embedding is what transformers would use.
    d.edit_weights(|n, dt, s, b| {
        if n == "lm_head.weight" {
            return None;
        }
        Some((dt, s.to_vec(), b.to_vec()))
    });
    let bytes = std::fs::read(d.path("model.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let embed = st.tensor("model.embed_tokens.weight").unwrap();
    let mut views = st.tensors();
    views.push(("lm_head.weight".to_string(), embed));
    safetensors::serialize_to_file(views, None, &d.path("model.safetensors")).unwrap();
    assert!(d.load().is_ok());
}

// ------------------------------------------------------------------------------------------
// Hostile chat templates
// ------------------------------------------------------------------------------------------

fn template_error(source: &str, messages: &[Message]) -> String {
    let t = ChatTemplate::new(source).unwrap();
    let started = Instant::now();
    let r = t.render(messages, true);
    // Generous for a loaded CI machine: unbounded, these never finish (or exhaust memory).
    assert!(started.elapsed() < Duration::from_secs(20), "{source}");
    match r {
        Err(Error::Template(m)) => m,
        other => panic!("{source}: {other:?}"),
    }
}

#[test]
fn hostile_templates_stop_on_their_budget() {
    let hi = [Message::user("hi")];
    // Doubling a string: 2^64 bytes unbounded.
    let m = template_error(
        "{% set ns = namespace(s='x') %}{% for i in range(64) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}{{ ns.s|length }}",
        &hi,
    );
    assert!(m.contains("fuel"), "{m}");
    // Nested loops that write nothing: 10^15 iterations.
    let m = template_error(
        "{% for a in range(100000) %}{% for b in range(100000) %}{% for c in range(100000) %}{% endfor %}{% endfor %}{% endfor %}",
        &hi,
    );
    assert!(m.contains("fuel"), "{m}");
    // A flood of output: each write is cheap in fuel, the output cap stops it first.
    let m = template_error(
        "{% for a in range(100000) %}{% for b in range(100000) %}{{ messages[0].content * 1000 }}{% endfor %}{% endfor %}",
        &hi,
    );
    assert!(m.contains("exceeds its limit"), "{m}");
    // One huge allocation up front.
    let m = template_error("{{ 'x' * 10000000000 }}", &hi);
    assert!(m.contains("fuel"), "{m}");
}

#[test]
fn real_templates_fit_their_budget_on_long_conversations() {
    let t = ChatTemplate::deepseek_r1();
    // 30000 short turns (more than R1's 163840-token context holds) and one huge message.
    let many: Vec<Message> = (0..30_000)
        .map(|i| match i % 2 {
            0 => Message::user(format!("question {i}")),
            _ => Message::assistant(format!("<think>\nhmm\n</think>\n\nanswer {i}")),
        })
        .collect();
    let text = t.render(&many, true).unwrap();
    assert!(text.ends_with("<｜Assistant｜><think>\n") && text.contains("answer 29999"));
    let huge = [
        Message::system("s".repeat(1 << 20)),
        Message::user("u".repeat(1 << 20)),
    ];
    assert_eq!(t.render(&huge, true).unwrap().len(), (2 << 20) + 66);
}

#[test]
fn rendering_polls_the_cancel_check() {
    let t = ChatTemplate::new(
        "{% for a in range(100000) %}{% for b in range(100000) %}x{% endfor %}{% endfor %}",
    )
    .unwrap();
    let polls = AtomicUsize::new(0);
    let started = Instant::now();
    let r = t.render_cancellable(&[Message::user("hi")], true, &|| {
        polls.fetch_add(1, Ordering::Relaxed) >= 3
    });
    assert!(matches!(r, Err(Error::Cancelled)), "{r:?}");
    assert_eq!(polls.load(Ordering::Relaxed), 4);
    assert!(started.elapsed() < Duration::from_secs(5));
    // A check that is already set stops the render before it starts.
    let r = ChatTemplate::deepseek_r1().render_cancellable(&[Message::user("hi")], true, &|| true);
    assert!(matches!(r, Err(Error::Cancelled)), "{r:?}");
}

// ------------------------------------------------------------------------------------------
// Hostile tokenizers
// ------------------------------------------------------------------------------------------

/// A byte-level BPE tokenizer whose pre-tokenizer splits on `pattern` (a Regex, run by onig).
fn tokenizer_with_split(pattern: &str) -> Tokenizer {
    let json = serde_json::json!({
        "version": "1.0", "truncation": null, "padding": null, "added_tokens": [],
        "normalizer": null,
        "pre_tokenizer": {"type": "Split", "pattern": {"Regex": pattern},
                          "behavior": "Isolated", "invert": false},
        "post_processor": null, "decoder": null,
        "model": {"type": "BPE", "dropout": null, "unk_token": null,
            "continuing_subword_prefix": null, "end_of_word_suffix": null, "fuse_unk": false,
            "byte_fallback": false, "ignore_merges": false,
            "vocab": {"a": 0, "b": 1, "c": 2}, "merges": []}
    });
    Tokenizer::from_json(json.to_string().as_bytes(), None).unwrap()
}

#[test]
fn catastrophic_tokenizer_regex_is_an_error_not_a_panic() {
    // Exponential backtracking: onig gives up at its retry limit, and the onig crate panics.
    let tok = tokenizer_with_split("(a|aa)+c");
    let text = format!("{}b", "a".repeat(60));
    let r = std::panic::catch_unwind(|| tok.encode(&text, false));
    match r {
        Ok(Err(Error::Tokenizer(m))) => assert!(m.contains("retry"), "{m}"),
        Ok(other) => panic!("{other:?}"),
        Err(_) => panic!("the tokenizer panicked through the API"),
    }
    // The tokenizer still works on ordinary text afterwards.
    assert_eq!(tok.encode("abc", false).unwrap(), [0, 1, 2]);
}

#[test]
fn sparse_token_ids_are_refused_before_allocating() {
    // A token with id 4e9: per-id tables would take 4 GB (kinds) and 16 GB (bytes).
    let json = serde_json::json!({
        "version": "1.0", "truncation": null, "padding": null, "added_tokens": [],
        "normalizer": null, "pre_tokenizer": null, "post_processor": null,
        "decoder": {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": false,
                    "use_regex": false},
        "model": {"type": "BPE", "dropout": null, "unk_token": null,
            "continuing_subword_prefix": null, "end_of_word_suffix": null, "fuse_unk": false,
            "byte_fallback": false, "ignore_merges": false,
            "vocab": {"a": 0, "b": 4_000_000_000u32}, "merges": []}
    });
    match Tokenizer::from_json(json.to_string().as_bytes(), None) {
        Err(Error::Tokenizer(m)) => assert!(m.contains("too sparse"), "{m}"),
        other => panic!("{other:?}"),
    }
}

// ------------------------------------------------------------------------------------------
// Non-finite weights
// ------------------------------------------------------------------------------------------

/// `value` as the bytes of every element of an F32 tensor of `len` bytes.
fn f32_bytes(value: f32, len: usize) -> Vec<u8> {
    value.to_le_bytes().repeat(len / 4)
}

#[test]
fn non_finite_weights_give_a_typed_error_not_garbage() {
    // +inf in the embedding row of token 5: only positions that see it go wrong.
    let d = Scratch::of("v3_tiny", "inf");
    d.edit_weights(|n, dt, s, b| {
        let mut b = b.to_vec();
        if n == "model.embed_tokens.weight" {
            assert_eq!(dt, Dtype::F32);
            let row = s[1] * 4;
            b[5 * row..6 * row].copy_from_slice(&f32_bytes(f32::INFINITY, row));
        }
        Some((dt, s.to_vec(), b))
    });
    let model = Arc::new(d.load().unwrap());
    let mut s = Session::new(model, SessionOptions::default()).unwrap();
    s.eval(&[1, 2]).unwrap();
    match s.eval_all(&[3, 5, 4]).map(<[f32]>::len) {
        Err(Error::NonFiniteLogits { position: 3 }) => {}
        other => panic!("{other:?}"),
    }
    assert_eq!(s.len(), 2, "a failed call leaves the cache as it was");
    match s.eval(&[5]).map(<[f32]>::len) {
        Err(Error::NonFiniteLogits { position: 2 }) => {}
        other => panic!("{other:?}"),
    }
    assert_eq!(s.len(), 2);
    // The session goes on from where it was.
    s.eval(&[3]).unwrap();

    // NaN in the final norm: every logit is NaN, and generation reports it instead of
    // sampling garbage.
    let d = Scratch::of("v3_r1tok", "nan");
    d.edit_weights(|n, dt, s, b| {
        let b = match n {
            "model.norm.weight" => f32_bytes(f32::NAN, b.len()),
            _ => b.to_vec(),
        };
        Some((dt, s.to_vec(), b))
    });
    let model = Arc::new(d.load().unwrap());
    let tokenizer = Tokenizer::from_dir(fixture("tokenizers").join("deepseek-r1")).unwrap();
    let gen = Generator::new(model, tokenizer).unwrap();
    let params = GenerateParams {
        max_tokens: Some(4),
        sampling: SamplingParams::greedy(),
        ..Default::default()
    };
    match gen.generate("hi", &params) {
        Err(Error::NonFiniteLogits { .. }) => {}
        other => panic!("{other:?}"),
    }
}

#[test]
fn the_sampler_refuses_nan_and_positive_infinity() {
    let mut s = Sampler::new(SamplingParams::greedy()).unwrap();
    for bad in [f32::NAN, f32::INFINITY] {
        assert!(matches!(
            s.sample(&[0.0, bad, 1.0]),
            Err(Error::InvalidArgument(_))
        ));
    }
    // -inf is a banned token, not an error.
    assert_eq!(s.sample(&[0.0, f32::NEG_INFINITY, 1.0]).unwrap(), 2);
}
