//! The fuzz corpus as tests (stable toolchain, no libFuzzer): every committed seed
//! (`corpus/<target>/`) and every fixed crasher (`regressions/<target>/`) runs through its
//! target's body, and the tiny fixtures the seeds are built on load and run, so the targets
//! start from inputs that reach the model builder and a forward pass.

use std::path::Path;

use deepseek_core::{LoadOptions, Model, Session, SessionOptions};

type Target = fn(&[u8]);

const TARGETS: [(&str, Target); 10] = [
    ("safetensors", deepseek_fuzz::safetensors),
    ("safetensors_index", deepseek_fuzz::safetensors_index),
    ("config_json", deepseek_fuzz::config_json),
    ("generation_config", deepseek_fuzz::generation_config),
    ("tokenizer_json", deepseek_fuzz::tokenizer_json),
    ("tokenizer_text", deepseek_fuzz::tokenizer_text),
    ("tokenizer_config", deepseek_fuzz::tokenizer_config),
    ("chat_template", deepseek_fuzz::chat_template),
    ("capi", deepseek_fuzz::capi),
    ("gguf", deepseek_fuzz::gguf),
];

fn replay(dir: &str) -> usize {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join(dir);
    let mut n = 0;
    for (name, target) in TARGETS {
        let Ok(entries) = std::fs::read_dir(root.join(name)) else {
            continue;
        };
        let mut files: Vec<_> = entries.map(|e| e.unwrap().path()).collect();
        files.sort();
        for file in files {
            let data = std::fs::read(&file).unwrap();
            eprintln!("{name}: {}", file.display());
            target(&data);
            n += 1;
        }
    }
    n
}

#[test]
fn seed_corpus_replays() {
    assert!(replay("corpus") > 0, "no seeds found");
}

#[test]
fn regressions_replay() {
    replay("regressions");
}

/// Open findings (`findings/<target>/`): each fails until fixed (the owner's check; each is also
/// an ignored test in deepseek-core/tests/fuzz_findings.rs). A fixed one moves to regressions/.
#[test]
#[ignore = "open fuzz findings"]
fn findings_replay() {
    replay("findings");
}

/// The safetensors seeds are these fixtures (plain and FP8-with-block-scales for V3): each
/// loads under its config in every format the target picks, and evaluates.
#[test]
fn tiny_fixtures_load_and_run() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures");
    for family in ["tiny_qwen2", "tiny_v3"] {
        let model = Model::load(root.join(family), LoadOptions::default())
            .unwrap_or_else(|e| panic!("{family}: {e}"));
        let mut session = Session::new(model.into(), SessionOptions::default()).unwrap();
        let logits = session.eval(&[1, 2, 3]).unwrap();
        assert_eq!(logits.len(), 16);
        assert!(logits.iter().all(|x| x.is_finite()), "{family}: {logits:?}");
    }
}
