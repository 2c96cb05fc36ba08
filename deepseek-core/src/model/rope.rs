//! Rotary position embedding over interleaved pairs, with YaRN frequency scaling.
//!
//! DeepSeek rotates `(x[2i], x[2i+1])` by `pos * inv_freq[i]`. (transformers also permutes the
//! result to `[evens | odds]`; q and k get the same permutation, so scores are unchanged and
//! we keep the pairs in place.)

use crate::config::{yarn_get_mscale, Config};

/// Per-pair inverse frequencies and the cos/sin multiplier for one model.
#[derive(Debug, Clone)]
pub struct Rope {
    inv_freq: Vec<f32>,
    attention_factor: f32,
}

impl Rope {
    /// The rotary table for `config` (plain RoPE, or YaRN when `rope_scaling` says so).
    pub fn new(config: &Config) -> Self {
        let d = config.qk_rope_head_dim;
        let base = config.rope_theta;
        let inv: Vec<f64> = (0..d / 2)
            .map(|i| 1.0 / base.powf((2 * i) as f64 / d as f64))
            .collect();
        let Some(y) = &config.rope_scaling else {
            return Rope {
                inv_freq: inv.iter().map(|&f| f as f32).collect(),
                attention_factor: 1.0,
            };
        };
        // YaRN: interpolate low frequencies by `factor`, keep high ones, ramp in between.
        let orig = y.original_max_position_embeddings as f64;
        let correction_dim = |rotations: f64| {
            d as f64 * (orig / (rotations * 2.0 * std::f64::consts::PI)).ln() / (2.0 * base.ln())
        };
        let low = correction_dim(y.beta_fast).floor().max(0.0);
        let high = correction_dim(y.beta_slow).ceil().min(d as f64 - 1.0);
        let high = if low == high { high + 0.001 } else { high };
        let inv_freq = inv
            .iter()
            .enumerate()
            .map(|(i, &f)| {
                let ramp = ((i as f64 - low) / (high - low)).clamp(0.0, 1.0);
                (f / y.factor * ramp + f * (1.0 - ramp)) as f32
            })
            .collect();
        let attention_factor = (yarn_get_mscale(y.factor, y.mscale)
            / yarn_get_mscale(y.factor, y.mscale_all_dim)) as f32;
        Rope {
            inv_freq,
            attention_factor,
        }
    }

    /// The inverse frequencies, one per rotated pair.
    pub fn inv_freq(&self) -> &[f32] {
        &self.inv_freq
    }

    /// Rotates each interleaved pair of `x` (one head's rope part) for position `pos`.
    pub fn apply(&self, x: &mut [f32], pos: usize) {
        debug_assert_eq!(x.len(), 2 * self.inv_freq.len());
        let p = pos as f32;
        for (pair, &f) in x.chunks_exact_mut(2).zip(&self.inv_freq) {
            let (sin, cos) = (p * f).sin_cos();
            let (cos, sin) = (cos * self.attention_factor, sin * self.attention_factor);
            let (a, b) = (pair[0], pair[1]);
            pair[0] = a * cos - b * sin;
            pair[1] = b * cos + a * sin;
        }
    }
}
