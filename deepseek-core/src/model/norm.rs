//! RMSNorm: `x / sqrt(mean(x^2) + eps) * weight`, in float32 as transformers computes it.

use crate::kernels::dot;

/// Root-mean-square layer norm with a learned per-channel weight.
#[derive(Debug, Clone)]
pub struct RmsNorm {
    weight: Vec<f32>,
    eps: f32,
}

impl RmsNorm {
    /// A norm over `weight.len()` channels.
    pub fn new(weight: Vec<f32>, eps: f64) -> Self {
        RmsNorm {
            weight,
            eps: eps as f32,
        }
    }

    /// The learned per-channel weight.
    pub fn weight(&self) -> &[f32] {
        &self.weight
    }

    /// The epsilon added to the mean square.
    pub fn eps(&self) -> f32 {
        self.eps
    }

    /// Normalises every row of `x` (rows of `weight.len()` values) into `out`.
    pub fn forward(&self, x: &[f32], out: &mut [f32]) {
        let d = self.weight.len();
        for (xr, or) in x.chunks_exact(d).zip(out.chunks_exact_mut(d)) {
            let inv = 1.0 / (dot(xr, xr) / d as f32 + self.eps).sqrt();
            for ((o, &v), &w) in or.iter_mut().zip(xr).zip(&self.weight) {
                *o = w * (v * inv);
            }
        }
    }

    /// Normalises every row of `x` in place.
    pub fn forward_inplace(&self, x: &mut [f32]) {
        let d = self.weight.len();
        for xr in x.chunks_exact_mut(d) {
            let inv = 1.0 / (dot(xr, xr) / d as f32 + self.eps).sqrt();
            for (v, &w) in xr.iter_mut().zip(&self.weight) {
                *v = w * (*v * inv);
            }
        }
    }
}
