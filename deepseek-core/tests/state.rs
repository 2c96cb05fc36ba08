//! Session state on disk and forks: a restored session continues exactly as the saved one
//! would have, in every cache format, for MLA and GQA; a forked prefix continues exactly as a
//! session that computed it; files from another model, corrupt, truncated or hostile files are
//! typed errors.

mod common;

use std::path::PathBuf;
use std::sync::Arc;

use common::{fixture, token_by_token, FixtureCopy};
use deepseek_core::{CacheDtype, Error, LoadOptions, Model, Session, SessionOptions, WeightDtype};

fn model(name: &str, dtype: WeightDtype) -> Arc<Model> {
    Arc::new(
        Model::load(
            fixture(name),
            LoadOptions {
                threads: Some(2),
                dtype,
            },
        )
        .unwrap_or_else(|e| panic!("{name}: {e}")),
    )
}

fn options(dtype: CacheDtype) -> SessionOptions {
    SessionOptions {
        cache_dtype: dtype,
        ..Default::default()
    }
}

/// A temporary file path, removed on drop.
struct TempFile(PathBuf);

impl TempFile {
    fn new(tag: &str) -> TempFile {
        TempFile(
            std::env::temp_dir().join(format!("deepseek-state-{}-{tag}.dss", std::process::id())),
        )
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn ids(n: usize, seed: u32) -> Vec<u32> {
    (0..n as u32)
        .map(|i| (i * 7919 + seed * 31 + 13) % 500)
        .collect()
}

#[test]
fn a_restored_session_continues_exactly_as_the_saved_one() {
    for name in ["v3_tiny", "qwen2_tiny"] {
        let m = model(name, WeightDtype::Auto);
        for dtype in CacheDtype::ALL {
            let f = TempFile::new(&format!("{name}-{dtype}"));
            let (prefix, rest) = (ids(40, 1), ids(8, 2));
            let mut a = Session::new(m.clone(), options(dtype)).unwrap();
            a.eval(&prefix).unwrap();
            a.save(&f.0).unwrap();
            let want = token_by_token(&mut a, &rest);
            // The saved format wins over the options' (documented): ask for another one.
            let other = if dtype == CacheDtype::F32 {
                CacheDtype::Q8_0
            } else {
                CacheDtype::F32
            };
            let mut b = Session::restore(m.clone(), &f.0, options(other)).unwrap();
            assert_eq!(b.cache_dtype(), dtype);
            assert_eq!(b.tokens(), &prefix[..]);
            assert_eq!(b.len(), prefix.len());
            let got = token_by_token(&mut b, &rest);
            assert!(got == want, "{name} {dtype}: restored session differs");
            assert_eq!(b.tokens(), &[prefix.clone(), rest.clone()].concat()[..]);
        }
    }
}

#[test]
fn a_forked_prefix_continues_exactly_as_a_session_that_computed_it() {
    for name in ["v3_tiny", "qwen2_tiny"] {
        // A prefix longer than a page (256 tokens), so forks share a whole page and copy the
        // last one: the fixture's context is raised for it.
        let long = FixtureCopy::of(name, "fork");
        long.edit_config(|c| c["max_position_embeddings"] = serde_json::json!(1024));
        let m = Arc::new(long.load().unwrap());
        for dtype in CacheDtype::ALL {
            let prefix = ids(300, 3);
            let mut shared = Session::new(m.clone(), options(dtype)).unwrap();
            shared.eval(&prefix).unwrap();
            let before = shared.cache_bytes_allocated();
            let mut forks: Vec<Session> = (0..3).map(|_| shared.fork()).collect();
            for (k, fork) in forks.iter_mut().enumerate() {
                let turn = ids(6, 10 + k as u32);
                let got = fork.eval_all(&turn).unwrap().to_vec();
                let mut fresh = Session::new(m.clone(), options(dtype)).unwrap();
                fresh.eval(&prefix).unwrap();
                let want = fresh.eval_all(&turn).unwrap();
                assert!(
                    got == want,
                    "{name} {dtype}: fork {k} differs from a fresh session"
                );
                assert_eq!(fork.len(), prefix.len() + 6);
            }
            // The parent is untouched by its forks' writes and continues as before.
            let turn = ids(4, 20);
            let got = shared.eval_all(&turn).unwrap().to_vec();
            let mut fresh = Session::new(m.clone(), options(dtype)).unwrap();
            fresh.eval(&prefix).unwrap();
            assert!(
                got == fresh.eval_all(&turn).unwrap(),
                "{name} {dtype}: parent"
            );
            assert_eq!(before, shared.cache_bytes_allocated());
        }
    }
}

fn saved(name: &str, dtype: CacheDtype, tag: &str) -> (Arc<Model>, TempFile, Vec<u8>) {
    let m = model(name, WeightDtype::Auto);
    let f = TempFile::new(tag);
    let mut s = Session::new(m.clone(), options(dtype)).unwrap();
    s.eval(&ids(12, 4)).unwrap();
    s.save(&f.0).unwrap();
    let bytes = std::fs::read(&f.0).unwrap();
    (m, f, bytes)
}

fn restore_bytes(m: &Arc<Model>, f: &TempFile, bytes: &[u8]) -> Result<Session, Error> {
    std::fs::write(&f.0, bytes).unwrap();
    Session::restore(m.clone(), &f.0, SessionOptions::default())
}

fn state_error(r: Result<Session, Error>, want: &str, what: &str) {
    match r {
        Err(Error::SessionState { message, .. }) => {
            assert!(message.contains(want), "{what}: {message:?} lacks {want:?}")
        }
        Err(e) => panic!("{what}: expected a session state error, got {e}"),
        Ok(_) => panic!("{what}: restored"),
    }
}

#[test]
fn another_models_state_is_refused_by_name() {
    let (_, f, bytes) = saved("v3_tiny", CacheDtype::BF16, "other");
    // Another architecture, the same architecture with other weights, and the same weights
    // stored in another format.
    let v2 = model("v2_lite_tiny", WeightDtype::Auto);
    state_error(
        restore_bytes(&v2, &f, &bytes),
        "another model",
        "v2_lite_tiny",
    );
    let copy = FixtureCopy::of("v3_tiny", "state-weights");
    copy.edit_weights(|name, dtype, shape, data| {
        let mut data = data.to_vec();
        if name.ends_with("layers.0.self_attn.kv_a_proj_with_mqa.weight") {
            data[0] ^= 0x40;
        }
        Some((dtype, shape.to_vec(), data))
    });
    let other = Arc::new(copy.load().unwrap());
    state_error(
        restore_bytes(&other, &f, &bytes),
        "another model",
        "edited weights",
    );
    let bf16 = model("v3_tiny", WeightDtype::BF16);
    state_error(
        restore_bytes(&bf16, &f, &bytes),
        "another model",
        "bf16 weights",
    );
}

#[test]
fn corrupt_truncated_and_hostile_files_are_typed_errors() {
    let (m, f, bytes) = saved("v3_tiny", CacheDtype::Q8_0, "corrupt");
    assert!(restore_bytes(&m, &f, &bytes).is_ok());
    // Every truncation, never a panic.
    for len in 0..bytes.len() {
        let r = restore_bytes(&m, &f, &bytes[..len]);
        assert!(
            matches!(r, Err(Error::SessionState { .. })),
            "truncated to {len}: {:?}",
            r.err()
        );
    }
    let mut longer = bytes.clone();
    longer.push(0);
    state_error(restore_bytes(&m, &f, &longer), "bytes", "trailing byte");
    // A flipped bit anywhere in the cache rows is caught by the checksum.
    for at in [bytes.len() / 2, bytes.len() - 9] {
        let mut b = bytes.clone();
        b[at] ^= 0x10;
        state_error(
            restore_bytes(&m, &f, &b),
            "checksum",
            &format!("flip at {at}"),
        );
    }
    let mut b = bytes.clone();
    b[..8].copy_from_slice(b"GGUF\0\0\0\0");
    state_error(restore_bytes(&m, &f, &b), "not a deepseek-rs", "magic");
    let mut b = bytes.clone();
    b[8] = 2;
    state_error(restore_bytes(&m, &f, &b), "version 2", "version");
    // Header fields (offsets after magic, version and header length): huge header length,
    // layer count, part count, format id.
    let mut b = bytes.clone();
    b[12..16].copy_from_slice(&u32::MAX.to_le_bytes());
    state_error(restore_bytes(&m, &f, &b), "header of", "header length");
    let mut b = bytes.clone();
    b[24] = 99;
    state_error(restore_bytes(&m, &f, &b), "layers", "layers");
    let mut b = bytes.clone();
    b[28..32].copy_from_slice(&u32::MAX.to_le_bytes());
    state_error(restore_bytes(&m, &f, &b), "row parts", "parts");
    let mut b = bytes.clone();
    b[40] = 7;
    state_error(restore_bytes(&m, &f, &b), "format id 7", "format");
    // A token count far beyond the context is refused before anything is allocated.
    let mut b = bytes.clone();
    b[45..53].copy_from_slice(&(u64::MAX / 2).to_le_bytes());
    match restore_bytes(&m, &f, &b) {
        Err(Error::ContextOverflow { limit, .. }) => assert_eq!(limit, 256),
        other => panic!("token count: {:?}", other.err()),
    }
    // A shorter context than the state holds.
    std::fs::write(&f.0, &bytes).unwrap();
    let r = Session::restore(
        m.clone(),
        &f.0,
        SessionOptions {
            context_length: Some(8),
            ..Default::default()
        },
    );
    assert!(
        matches!(r, Err(Error::ContextOverflow { .. })),
        "{:?}",
        r.err()
    );
    // A missing file is an I/O error naming it.
    let gone = f.0.with_extension("missing");
    match Session::restore(m, &gone, SessionOptions::default()) {
        Err(Error::Io { path, .. }) => assert_eq!(path, gone),
        other => panic!("missing file: {:?}", other.err()),
    }
}
