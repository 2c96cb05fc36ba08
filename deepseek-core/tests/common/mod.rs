//! Golden fixtures written by `tools/make_fixtures.py` from transformers, and comparisons that
//! name the first tensor that differs (as llm.c's test_gpt2 does).

#![allow(dead_code)]

use std::path::PathBuf;

use safetensors::tensor::{Dtype, SafeTensors};

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
pub fn argmax(v: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &x) in v.iter().enumerate() {
        if x > v[best] {
            best = i;
        }
    }
    best as u32
}
