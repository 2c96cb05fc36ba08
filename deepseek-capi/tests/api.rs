//! The C ABI end to end, called from Rust: transformers' greedy continuations come out of
//! ds_eval for every float32 fixture, and one model serves sessions on several threads at once.
//! (The error paths are exercised from C, under valgrind, by tests/c/errors.c.)

use std::ffi::{CStr, CString};
use std::path::PathBuf;
use std::ptr;

use deepseek::*;

const FIXTURES: &[&str] = &["v3_tiny", "v2_lite_tiny", "v2_group_tiny"];

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../deepseek-core/tests/fixtures")
        .join(name)
}

/// `input_ids` and `greedy_ids` of a fixture's golden.safetensors.
fn golden(name: &str) -> (Vec<ds_token>, Vec<ds_token>) {
    let bytes = std::fs::read(fixture(name).join("golden.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let ids = |key: &str| -> Vec<ds_token> {
        let t = st.tensor(key).unwrap();
        assert_eq!(t.dtype(), safetensors::Dtype::I64, "{name}: {key}");
        t.data()
            .chunks_exact(8)
            .map(|b| i64::from_le_bytes(b.try_into().unwrap()) as ds_token)
            .collect()
    };
    (ids("input_ids"), ids("greedy_ids"))
}

fn last_error() -> String {
    // SAFETY: ds_last_error never returns NULL; copied before the next call.
    unsafe { CStr::from_ptr(ds_last_error()) }
        .to_string_lossy()
        .into_owned()
}

fn check(status: ds_status) {
    assert_eq!(status, ds_status::DS_OK, "{}", last_error());
}

/// Frees the model on drop.
struct Model(*mut ds_model);
// SAFETY: ds_model is immutable and documented as shareable across threads.
unsafe impl Sync for Model {}
impl Drop for Model {
    fn drop(&mut self) {
        // SAFETY: from ds_model_load, freed once.
        unsafe { ds_model_free(self.0) }
    }
}

fn load(name: &str, threads: u32) -> Model {
    load_as(name, threads, DS_WEIGHT_DTYPE_AUTO)
}

fn load_as(name: &str, threads: u32, dtype: ds_weight_dtype) -> Model {
    let path = CString::new(fixture(name).to_str().unwrap()).unwrap();
    let params = ds_model_params { threads, dtype };
    let mut m = ptr::null_mut();
    // SAFETY: valid string, params and out pointer.
    check(unsafe { ds_model_load(path.as_ptr(), &params, &mut m) });
    Model(m)
}

/// Greedy decoding through ds_eval, as examples/c/generate.c does it.
fn greedy(model: &Model, prompt: &[ds_token], n: usize, attention: ds_attention) -> Vec<ds_token> {
    // SAFETY: every pointer below is valid for the call; the session is freed once.
    unsafe {
        let vocab = ds_model_vocab_size(model.0);
        let params = ds_session_params {
            attention,
            ..ds_session_default_params()
        };
        let mut s = ptr::null_mut();
        check(ds_session_new(model.0, &params, &mut s));
        let mut logits = vec![f32::NAN; vocab];
        check(ds_eval(
            s,
            prompt.as_ptr(),
            prompt.len(),
            logits.as_mut_ptr(),
            vocab,
        ));
        let mut out = Vec::new();
        while out.len() < n {
            let next = logits
                .iter()
                .enumerate()
                .max_by(|a, b| a.1.total_cmp(b.1).then(b.0.cmp(&a.0)))
                .unwrap()
                .0 as ds_token;
            out.push(next);
            check(ds_eval(s, &next, 1, logits.as_mut_ptr(), vocab));
        }
        assert_eq!(ds_session_len(s), prompt.len() + n);
        ds_session_free(s);
        out
    }
}

#[test]
fn greedy_continuations_match_transformers() {
    for name in FIXTURES {
        let (prompt, expected) = golden(name);
        let model = load(name, 1);
        for attention in [
            DS_ATTENTION_AUTO,
            DS_ATTENTION_ABSORBED,
            DS_ATTENTION_EXPANDED,
        ] {
            let got = greedy(&model, &prompt, expected.len(), attention);
            assert_eq!(got, expected, "{name}, attention {attention}");
        }
    }
}

#[test]
fn every_weight_dtype_loads_and_f32_is_exact() {
    let (prompt, expected) = golden("v3_tiny");
    let f32_model = load_as("v3_tiny", 1, DS_WEIGHT_DTYPE_F32);
    assert_eq!(
        greedy(&f32_model, &prompt, expected.len(), DS_ATTENTION_AUTO),
        expected
    );
    for dtype in [
        DS_WEIGHT_DTYPE_BF16,
        DS_WEIGHT_DTYPE_F16,
        DS_WEIGHT_DTYPE_Q8_0,
        DS_WEIGHT_DTYPE_Q4_0,
        DS_WEIGHT_DTYPE_Q4_1,
        DS_WEIGHT_DTYPE_Q4_K,
        DS_WEIGHT_DTYPE_Q6_K,
        DS_WEIGHT_DTYPE_Q4_K_M,
    ] {
        let model = load_as("v3_tiny", 1, dtype);
        assert_eq!(greedy(&model, &prompt, 4, DS_ATTENTION_AUTO).len(), 4);
    }
}

#[test]
fn one_model_serves_sessions_on_many_threads() {
    let (prompt, expected) = golden("v3_tiny");
    let model = load("v3_tiny", 2);
    std::thread::scope(|scope| {
        let runs: Vec<_> = (0..3)
            .map(|_| scope.spawn(|| greedy(&model, &prompt, expected.len(), DS_ATTENTION_AUTO)))
            .collect();
        for r in runs {
            assert_eq!(r.join().unwrap(), expected);
        }
    });
}

#[test]
fn model_info_comes_from_config_json() {
    let model = load("v3_tiny", 1);
    // SAFETY: a live model; the eos buffer holds 4 tokens.
    unsafe {
        assert_eq!(ds_model_vocab_size(model.0), 512);
        assert_eq!(ds_model_context_length(model.0), 256);
        assert_eq!(ds_model_bos_token(model.0), 0);
        let mut eos = [DS_TOKEN_NONE; 4];
        assert_eq!(ds_model_eos_tokens(model.0, eos.as_mut_ptr(), eos.len()), 1);
        assert_eq!(eos, [1, DS_TOKEN_NONE, DS_TOKEN_NONE, DS_TOKEN_NONE]);
        assert!(ds_model_is_eos(model.0, 1) && !ds_model_is_eos(model.0, 0));
    }
}

/// Every cache format through the params, and a session saved, restored and forked: the
/// restored and forked sessions continue with the logits the original gives; a corrupt file,
/// another model's file and bad params are typed statuses.
#[test]
fn cache_formats_save_restore_and_fork() {
    let model = load("v3_tiny", 1);
    let other = load("v2_lite_tiny", 1);
    let dir = std::env::temp_dir();
    let path = dir.join(format!("deepseek-capi-state-{}.dss", std::process::id()));
    let cpath = CString::new(path.to_str().unwrap()).unwrap();
    // SAFETY: every pointer below is valid for its call; sessions are freed once.
    unsafe {
        let vocab = ds_model_vocab_size(model.0);
        let logits_after = |s: *mut ds_session, ids: &[ds_token]| -> Vec<f32> {
            let mut out = vec![f32::NAN; vocab];
            check(ds_eval(s, ids.as_ptr(), ids.len(), out.as_mut_ptr(), vocab));
            out
        };
        for dtype in [DS_CACHE_F32, DS_CACHE_BF16, DS_CACHE_Q8_0] {
            let params = ds_session_params {
                cache_dtype: dtype,
                ..ds_session_default_params()
            };
            let mut a = ptr::null_mut();
            check(ds_session_new(model.0, &params, &mut a));
            assert_eq!(ds_session_cache_dtype(a), dtype);
            logits_after(a, &[3, 14, 15, 92, 65]);
            check(ds_session_save(a, cpath.as_ptr()));
            let (mut b, mut f) = (ptr::null_mut(), ptr::null_mut());
            check(ds_session_restore(
                model.0,
                cpath.as_ptr(),
                ptr::null(),
                &mut b,
            ));
            check(ds_session_fork(a, &mut f));
            assert_eq!((ds_session_len(b), ds_session_len(f)), (5, 5));
            assert_eq!(ds_session_cache_dtype(b), dtype, "the saved format wins");
            let want = logits_after(a, &[35, 89]);
            assert_eq!(logits_after(b, &[35, 89]), want, "restored, cache {dtype}");
            assert_eq!(logits_after(f, &[35, 89]), want, "forked, cache {dtype}");
            for s in [a, b, f] {
                ds_session_free(s);
            }
        }
        // Another model's state, a corrupt one, a missing one, bad params.
        let mut s = ptr::null_mut();
        let state = ds_status::DS_ERR_SESSION_STATE;
        assert_eq!(
            ds_session_restore(other.0, cpath.as_ptr(), ptr::null(), &mut s),
            state
        );
        assert!(
            s.is_null() && last_error().contains("another model"),
            "{}",
            last_error()
        );
        let mut bytes = std::fs::read(&path).unwrap();
        let mid = bytes.len() / 2;
        bytes[mid] ^= 0x20;
        std::fs::write(&path, &bytes).unwrap();
        assert_eq!(
            ds_session_restore(model.0, cpath.as_ptr(), ptr::null(), &mut s),
            state
        );
        std::fs::remove_file(&path).unwrap();
        assert_eq!(
            ds_session_restore(model.0, cpath.as_ptr(), ptr::null(), &mut s),
            ds_status::DS_ERR_IO
        );
        let bad = ds_session_params {
            cache_dtype: 7,
            ..ds_session_default_params()
        };
        assert_eq!(
            ds_session_new(model.0, &bad, &mut s),
            ds_status::DS_ERR_INVALID_ARGUMENT
        );
        assert!(last_error().contains("cache_dtype 7"), "{}", last_error());
        assert_eq!(
            ds_session_save(ptr::null(), cpath.as_ptr()),
            ds_status::DS_ERR_NULL_POINTER
        );
        assert_eq!(
            ds_session_fork(ptr::null(), &mut s),
            ds_status::DS_ERR_NULL_POINTER
        );
    }
}

/// The version in the workspace manifest, which every front door must report.
fn workspace_version() -> String {
    let manifest = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../Cargo.toml"));
    let manifest = manifest.unwrap();
    let package = &manifest[manifest.find("[workspace.package]").unwrap()..];
    let line = package.lines().find(|l| l.starts_with("version")).unwrap();
    line.split('"').nth(1).unwrap().to_owned()
}

#[test]
fn ds_version_is_the_crates_version() {
    // SAFETY: ds_version returns a static NUL-terminated string.
    let v = unsafe { CStr::from_ptr(ds_version()) }.to_str().unwrap();
    assert_eq!(v, workspace_version());
    assert_eq!(v, deepseek_core::VERSION);
}
