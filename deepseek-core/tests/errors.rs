//! Bad inputs give a clear error naming the culprit, never a panic or a silent wrong answer.

mod common;

use std::sync::Arc;

use common::{fixture, FixtureCopy as Scratch};
use deepseek_core::{Error, LoadOptions, Model, Session, SessionOptions};
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
