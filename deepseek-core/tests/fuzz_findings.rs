//! Inputs the fuzz targets (fuzz/, `tools/fuzz.sh`) found to crash, hang or exhaust memory,
//! each replayed through the public API. A finding not fixed yet is `#[ignore]`d with its
//! description; the fix removes the `ignore`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use deepseek_core::kernels::MAX_THREADS;
use deepseek_core::{Error, LoadOptions, Model, Session, SessionOptions};

fn nano() -> std::path::PathBuf {
    std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../models/r1-nano")
}

/// Seen while writing the capi target, whose ds_session_new / ds_model_load ops pass any u32 as
/// `threads`: the pool spawned workers one by one until the OS refused (vm.max_map_count allows
/// about 32k thread stacks here), so a hostile count cost seconds and hundreds of MB before the
/// error. Now a count above MAX_THREADS is an InvalidArgument before any thread starts.
#[test]
fn huge_thread_counts_fail_at_once() {
    let model = Arc::new(
        Model::load(
            nano(),
            LoadOptions {
                threads: Some(1),
                ..LoadOptions::default()
            },
        )
        .unwrap(),
    );
    for threads in [MAX_THREADS + 1, 3_735_928_559, usize::MAX] {
        let start = Instant::now();
        let options = SessionOptions {
            threads: Some(threads),
            ..SessionOptions::default()
        };
        let err = Session::new(model.clone(), options).unwrap_err();
        assert!(matches!(err, Error::InvalidArgument(_)), "{err}");
        assert!(err.to_string().contains("maximum"), "{err}");
        let err = Model::load(
            nano(),
            LoadOptions {
                threads: Some(threads),
                ..LoadOptions::default()
            },
        )
        .unwrap_err();
        assert!(matches!(err, Error::InvalidArgument(_)), "{err}");
        assert!(start.elapsed() < Duration::from_secs(5));
    }
}

/// A small word-level tokenizer.json whose `decoder` value is `decoder`.
fn tokenizer_json_with_decoder(decoder: &str) -> String {
    format!(
        r#"{{"version": "1.0", "truncation": null, "padding": null, "added_tokens": [],
  "normalizer": null, "pre_tokenizer": {{"type": "Whitespace"}}, "post_processor": null,
  "decoder": {decoder},
  "model": {{"type": "WordLevel", "vocab": {{"hello": 0, "[UNK]": 1}}, "unk_token": "[UNK]"}}}}"#
    )
}

/// Well-formed JSON of the wrong shape is an error today; the finding below is malformed JSON.
#[test]
fn a_wrong_decoder_object_is_a_tokenizer_error() {
    let json = tokenizer_json_with_decoder(r#"{"type": "NoSuchDecoder"}"#);
    let err = deepseek_core::Tokenizer::from_json(json.as_bytes(), None).unwrap_err();
    assert!(matches!(err, Error::Tokenizer(_)), "{err}");
}

/// tokenizer_json target (crash-366b37a3... in fuzz/regressions/tokenizer_json/: tokenizer.json
/// files whose `decoder` holds a JSON syntax error: a control character in a string, an
/// invalid \u escape, a bare word). tokenizers 0.23.2 `.expect`s its untagged decoder helper
/// (src/decoders/mod.rs:90), so these panicked inside `Tokenizer::from_json`; every call into
/// tokenizers now runs under catch_unwind and the panic is an Error::Tokenizer.
#[test]
fn a_syntax_error_inside_the_decoder_is_a_tokenizer_error() {
    for decoder in ["[1,]", "\"\u{1}\"", "{\"type\": nope}", "\"\\ud800x\""] {
        let json = tokenizer_json_with_decoder(decoder);
        let result = std::panic::catch_unwind(|| {
            deepseek_core::Tokenizer::from_json(json.as_bytes(), None).map(|_| ())
        });
        match result {
            Ok(Err(Error::Tokenizer(_))) => {}
            Ok(other) => panic!("decoder {decoder:?}: {other:?}"),
            Err(_) => panic!("decoder {decoder:?}: Tokenizer::from_json panicked"),
        }
    }
}

/// A scratch model folder: the fuzz crate's tiny `family` weights under `config`.
fn tiny_model(family: &str, tag: &str, config: &serde_json::Value) -> std::path::PathBuf {
    let src = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz/fixtures")
        .join(family);
    let dir = std::env::temp_dir().join(format!("ds-finding-{}-{tag}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy(src.join("model.safetensors"), dir.join("model.safetensors")).unwrap();
    std::fs::write(dir.join("config.json"), config.to_string()).unwrap();
    dir
}

fn tiny_config(family: &str) -> serde_json::Value {
    let path = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz/fixtures")
        .join(family)
        .join("config.json");
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// config_json target (oom-26f9b9b2... in fuzz/regressions/config_json/: ASan refused a 122 GB
/// malloc for `num_hidden_layers` = 140737095 in a qwen2 config). The config passes every size
/// check (its weights and cache would fit in the address space), and the loaders used to call
/// `Vec::with_capacity(num_hidden_layers)` before reading a layer. Now the layers grow as they
/// load, and the first layer the checkpoint lacks is the error, for both families.
#[test]
fn a_huge_layer_count_is_an_error_not_an_allocation() {
    for family in ["tiny_qwen2", "tiny_v3"] {
        let mut config = tiny_config(family);
        let real = config["num_hidden_layers"].as_u64().unwrap();
        config["num_hidden_layers"] = serde_json::json!(140_737_095u64);
        let dir = tiny_model(family, "layers", &config);
        let result = std::panic::catch_unwind(|| {
            Model::load(
                &dir,
                LoadOptions {
                    threads: Some(1),
                    ..LoadOptions::default()
                },
            )
            .map(|_| ())
        });
        let _ = std::fs::remove_dir_all(&dir);
        match result {
            // The first layer the file lacks.
            Ok(Err(Error::MissingTensor(name))) => {
                assert!(name.contains(&format!("layers.{real}.")), "{name}")
            }
            Ok(other) => panic!("{family}: {other:?}"),
            Err(_) => panic!("{family}: Model::load panicked"),
        }
    }
}
