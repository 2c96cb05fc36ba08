//! A bias-free linear layer `y = W x`; its quantisation lives in its [`Weight`].

use crate::kernels::{self, Pool};
use crate::quant::Weight;

/// `y = x W^T` for a batch of tokens.
#[derive(Debug, Clone)]
pub struct Linear {
    /// The `[out_features, in_features]` matrix.
    pub weight: Weight,
}

impl Linear {
    /// Output width.
    pub fn out_features(&self) -> usize {
        self.weight.rows()
    }

    /// Input width.
    pub fn in_features(&self) -> usize {
        self.weight.cols()
    }

    /// `y: [n, out] = x: [n, in] W^T`.
    pub fn forward(&self, pool: &Pool, x: &[f32], n: usize, y: &mut [f32]) {
        kernels::matmul(pool, &self.weight, 0..self.weight.rows(), x, n, y);
    }
}
