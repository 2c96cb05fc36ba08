//! Rotary position embedding: DeepSeek's interleaved pairs or Llama's halves, with YaRN or
//! Llama 3 frequency scaling.
//!
//! DeepSeek rotates `(x[2i], x[2i+1])` by `pos * inv_freq[i]`. (transformers also permutes the
//! result to `[evens | odds]`; q and k get the same permutation, so scores are unchanged and
//! we keep the pairs in place.) Qwen2, Llama and Qwen3 rotate `(x[i], x[i + d/2])`
//! (transformers' `rotate_half`).

use crate::config::{Architecture, Config, Llama3Scaling, RopeScaling, Yarn};

/// Which dimensions of a head form a rotated pair.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RopeLayout {
    /// `(x[2i], x[2i+1])` (DeepSeek).
    Interleaved,
    /// `(x[i], x[i + d/2])` (Qwen2, Llama, Qwen3).
    Halves,
}

/// Per-pair inverse frequencies and the cos/sin multiplier for one model.
#[derive(Debug, Clone)]
pub struct Rope {
    inv_freq: Vec<f32>,
    attention_factor: f32,
    layout: RopeLayout,
}

impl Rope {
    /// The rotary table for `config` (plain RoPE, or the scaling `rope_scaling` asks for).
    pub fn new(config: &Config) -> Self {
        let base = config.rope_theta;
        let (d, layout, scaling) = match &config.architecture {
            Architecture::Deepseek(c) => (
                c.qk_rope_head_dim,
                RopeLayout::Interleaved,
                c.rope_scaling.as_ref().map(Scaling::Yarn),
            ),
            Architecture::Llama(c) => (
                c.head_dim,
                RopeLayout::Halves,
                c.rope_scaling.as_ref().map(|s| match s {
                    RopeScaling::Yarn(y) => Scaling::Yarn(y),
                    RopeScaling::Llama3(l) => Scaling::Llama3(l),
                }),
            ),
        };
        let inv: Vec<f64> = (0..d / 2)
            .map(|i| 1.0 / base.powf((2 * i) as f64 / d as f64))
            .collect();
        let (inv_freq, attention_factor) = match scaling {
            None => (inv, 1.0),
            Some(Scaling::Yarn(y)) => (yarn(&inv, d, base, y), y.attention_factor),
            Some(Scaling::Llama3(s)) => (llama3(&inv, s), 1.0),
        };
        Rope {
            inv_freq: inv_freq.iter().map(|&f| f as f32).collect(),
            attention_factor: attention_factor as f32,
            layout,
        }
    }

    /// This table with the rotated pairs laid out as `layout` (for weights whose q/k rows a
    /// converter permuted, as llama.cpp does for Llama).
    pub fn with_layout(mut self, layout: RopeLayout) -> Self {
        self.layout = layout;
        self
    }

    /// This table with each inverse frequency divided by its factor (GGUF's `rope_freqs`,
    /// llama.cpp's form of Llama 3 scaling); `None` unless there is one factor per pair.
    pub fn with_freq_factors(mut self, factors: &[f32]) -> Option<Self> {
        if factors.len() != self.inv_freq.len() {
            return None;
        }
        for (f, &k) in self.inv_freq.iter_mut().zip(factors) {
            *f /= k;
        }
        Some(self)
    }

    /// The inverse frequencies, one per rotated pair.
    pub fn inv_freq(&self) -> &[f32] {
        &self.inv_freq
    }

    /// How pairs are laid out in a head.
    pub fn layout(&self) -> RopeLayout {
        self.layout
    }

    /// Rotates each pair of `x` (one head's rotated part) for position `pos`.
    pub fn apply(&self, x: &mut [f32], pos: usize) {
        debug_assert_eq!(x.len(), 2 * self.inv_freq.len());
        let p = pos as f32;
        let rotate = |a: &mut f32, b: &mut f32, f: f32| {
            let (sin, cos) = (p * f).sin_cos();
            let (cos, sin) = (cos * self.attention_factor, sin * self.attention_factor);
            let (x0, x1) = (*a, *b);
            *a = x0 * cos - x1 * sin;
            *b = x1 * cos + x0 * sin;
        };
        match self.layout {
            RopeLayout::Interleaved => {
                for (pair, &f) in x.chunks_exact_mut(2).zip(&self.inv_freq) {
                    let (a, b) = pair.split_at_mut(1);
                    rotate(&mut a[0], &mut b[0], f);
                }
            }
            RopeLayout::Halves => {
                let (lo, hi) = x.split_at_mut(self.inv_freq.len());
                for ((a, b), &f) in lo.iter_mut().zip(hi.iter_mut()).zip(&self.inv_freq) {
                    rotate(a, b, f);
                }
            }
        }
    }
}

/// The scaling rules, borrowed from either family's config.
enum Scaling<'a> {
    Yarn(&'a Yarn),
    Llama3(&'a Llama3Scaling),
}

/// YaRN: interpolate low frequencies by `factor`, keep high ones, ramp in between.
fn yarn(inv: &[f64], d: usize, base: f64, y: &Yarn) -> Vec<f64> {
    let orig = y.original_max_position_embeddings as f64;
    let correction_dim = |rotations: f64| {
        d as f64 * (orig / (rotations * 2.0 * std::f64::consts::PI)).ln() / (2.0 * base.ln())
    };
    let (low, high) = (correction_dim(y.beta_fast), correction_dim(y.beta_slow));
    let (low, high) = if y.truncate {
        (low.floor(), high.ceil())
    } else {
        (low, high)
    };
    let (low, high) = (low.max(0.0), high.min(d as f64 - 1.0));
    let high = if low == high { high + 0.001 } else { high };
    inv.iter()
        .enumerate()
        .map(|(i, &f)| {
            let ramp = ((i as f64 - low) / (high - low)).clamp(0.0, 1.0);
            f / y.factor * ramp + f * (1.0 - ramp)
        })
        .collect()
}

/// Llama 3: divide long wavelengths by `factor`, keep short ones, blend in between.
fn llama3(inv: &[f64], s: &Llama3Scaling) -> Vec<f64> {
    let orig = s.original_max_position_embeddings as f64;
    let low_freq_wavelen = orig / s.low_freq_factor;
    let high_freq_wavelen = orig / s.high_freq_factor;
    inv.iter()
        .map(|&f| {
            let wavelen = 2.0 * std::f64::consts::PI / f;
            if wavelen < high_freq_wavelen {
                f
            } else if wavelen > low_freq_wavelen {
                f / s.factor
            } else {
                let smooth =
                    (orig / wavelen - s.low_freq_factor) / (s.high_freq_factor - s.low_freq_factor);
                (1.0 - smooth) * f / s.factor + smooth * f
            }
        })
        .collect()
}
