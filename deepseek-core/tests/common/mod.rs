//! Golden fixtures written by `tools/make_fixtures.py` from transformers, and comparisons that
//! name the first tensor that differs (as llm.c's test_gpt2 does).

#![allow(dead_code)]

use std::path::PathBuf;

use safetensors::tensor::{Dtype, SafeTensors, TensorView};

use deepseek_core::{Error, LoadOptions, Model, Session};

/// Largest absolute logit error accepted against transformers' float32 output. Float32
/// reassociation gives ~1e-5 on these fixtures; a wrong rope layout, a missing YaRN factor or a
/// wrong routing decision moves logits by 1e-2 or more.
pub const LOGIT_TOL: f32 = 1e-3;

/// The fixture folder `name`.
pub fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

/// One fixture's golden outputs.
pub struct Golden {
    /// Prompt ids.
    pub input_ids: Vec<u32>,
    /// transformers' greedy continuation of the prompt.
    pub greedy_ids: Vec<u32>,
    /// `[T, V]` logits over prompt + continuation.
    pub logits: Vec<f32>,
    /// `[L + 1, T, H]` hidden states.
    pub hidden_states: Vec<f32>,
    /// Vocabulary size.
    pub vocab: usize,
    /// Hidden size.
    pub hidden: usize,
}

impl Golden {
    /// Reads `golden.safetensors` of fixture `name`.
    pub fn load(name: &str) -> Golden {
        let bytes =
            std::fs::read(fixture(name).join("golden.safetensors")).expect("golden.safetensors");
        let st = SafeTensors::deserialize(&bytes).expect("valid golden.safetensors");
        let ids = |n: &str| -> Vec<u32> {
            let t = st.tensor(n).unwrap();
            assert_eq!(t.dtype(), Dtype::I64);
            t.data()
                .chunks_exact(8)
                .map(|c| i64::from_le_bytes(c.try_into().unwrap()) as u32)
                .collect()
        };
        let f32s = |n: &str| -> (Vec<f32>, Vec<usize>) {
            let t = st.tensor(n).unwrap();
            assert_eq!(t.dtype(), Dtype::F32);
            (
                t.data()
                    .chunks_exact(4)
                    .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
                    .collect(),
                t.shape().to_vec(),
            )
        };
        let (logits, ls) = f32s("logits");
        let (hidden_states, hs) = f32s("hidden_states");
        Golden {
            input_ids: ids("input_ids"),
            greedy_ids: ids("greedy_ids"),
            logits,
            hidden_states,
            vocab: ls[1],
            hidden: hs[2],
        }
    }

    /// Prompt followed by the greedy continuation.
    pub fn all_ids(&self) -> Vec<u32> {
        [self.input_ids.clone(), self.greedy_ids.clone()].concat()
    }
}

/// Largest absolute difference.
pub fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "length mismatch");
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

/// Panics naming the first row (position) whose values differ by more than `tol`.
pub fn assert_rows_close(what: &str, got: &[f32], want: &[f32], width: usize, tol: f32) -> f32 {
    assert_eq!(
        got.len(),
        want.len(),
        "{what}: length {} vs {}",
        got.len(),
        want.len()
    );
    for (i, (g, w)) in got.chunks(width).zip(want.chunks(width)).enumerate() {
        let d = max_abs_diff(g, w);
        assert!(
            d <= tol,
            "{what}: position {i} differs by {d:e} (tol {tol:e}); got {:?}.. want {:?}..",
            &g[..4.min(g.len())],
            &w[..4.min(w.len())]
        );
    }
    max_abs_diff(got, want)
}

/// Index of the largest value (lowest index on ties).
/// Cosine similarity of two logit rows.
pub fn cosine(a: &[f32], b: &[f32]) -> f64 {
    let (mut ab, mut aa, mut bb) = (0f64, 0f64, 0f64);
    for (x, y) in a.iter().zip(b) {
        ab += *x as f64 * *y as f64;
        aa += *x as f64 * *x as f64;
        bb += *y as f64 * *y as f64;
    }
    ab / (aa.sqrt() * bb.sqrt())
}

/// Smallest per-position cosine between `[rows, width]` logits.
pub fn min_cosine(got: &[f32], want: &[f32], width: usize) -> f64 {
    got.chunks_exact(width)
        .zip(want.chunks_exact(width))
        .map(|(a, b)| cosine(a, b))
        .fold(1.0, f64::min)
}

pub fn argmax(v: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &x) in v.iter().enumerate() {
        if x > v[best] {
            best = i;
        }
    }
    best as u32
}

/// A scratch copy of fixture `name` that a test may break (removed on drop).
pub struct FixtureCopy(pub PathBuf);

impl FixtureCopy {
    pub fn of(name: &str, tag: &str) -> FixtureCopy {
        let dir =
            std::env::temp_dir().join(format!("deepseek-test-{}-{name}-{tag}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        for e in std::fs::read_dir(fixture(name)).unwrap() {
            let e = e.unwrap();
            std::fs::copy(e.path(), dir.join(e.file_name())).unwrap();
        }
        FixtureCopy(dir)
    }

    pub fn path(&self, file: &str) -> PathBuf {
        self.0.join(file)
    }

    pub fn edit_config(&self, f: impl FnOnce(&mut serde_json::Value)) {
        let p = self.path("config.json");
        let mut v: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap();
        f(&mut v);
        std::fs::write(p, v.to_string()).unwrap();
    }

    /// Rewrites model.safetensors through `f(name, dtype, shape, data)`; `None` drops the tensor.
    pub fn edit_weights(
        &self,
        f: impl Fn(&str, Dtype, &[usize], &[u8]) -> Option<(Dtype, Vec<usize>, Vec<u8>)>,
    ) {
        let p = self.path("model.safetensors");
        let bytes = std::fs::read(&p).unwrap();
        let st = SafeTensors::deserialize(&bytes).unwrap();
        let kept: Vec<(String, Dtype, Vec<usize>, Vec<u8>)> = st
            .tensors()
            .into_iter()
            .filter_map(|(n, t)| {
                f(&n, t.dtype(), t.shape(), t.data()).map(|(d, s, b)| (n, d, s, b))
            })
            .collect();
        let views: Vec<(String, TensorView<'_>)> = kept
            .iter()
            .map(|(n, d, s, b)| (n.clone(), TensorView::new(*d, s.clone(), b).unwrap()))
            .collect();
        safetensors::serialize_to_file(views, None, &p).unwrap();
    }

    pub fn load(&self) -> Result<Model, Error> {
        Model::load(
            &self.0,
            LoadOptions {
                threads: Some(1),
                ..Default::default()
            },
        )
    }
}

impl Drop for FixtureCopy {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Logits at every position, feeding `ids` one token at a time.
pub fn token_by_token(s: &mut Session, ids: &[u32]) -> Vec<f32> {
    let mut got = Vec::new();
    for &id in ids {
        got.extend_from_slice(s.eval(&[id]).unwrap());
    }
    got
}

/// Logits at every position: a 7-token prompt, then chunks of 3 and single tokens (the mix of
/// cached and new positions that chat turns produce).
pub fn chunked(s: &mut Session, ids: &[u32]) -> Vec<f32> {
    let mut got = s.eval_all(&ids[..7]).unwrap().to_vec();
    let mut i = 7;
    while i < ids.len() {
        let step = if i % 2 == 0 { 3 } else { 1 }.min(ids.len() - i);
        got.extend_from_slice(s.eval_all(&ids[i..i + step]).unwrap());
        i += step;
    }
    got
}

/// `n` greedy tokens after `prompt`.
pub fn greedy(s: &mut Session, prompt: &[u32], n: usize) -> Vec<u32> {
    let mut next = argmax(s.eval(prompt).unwrap());
    let mut out = vec![next];
    while out.len() < n {
        next = argmax(s.eval(&[next]).unwrap());
        out.push(next);
    }
    out
}
