//! SwiGLU feed-forward: `down(silu(gate(x)) * up(x))` (dense layers, experts, shared experts).

use super::{grow, linear::Linear};
use crate::kernels::Pool;

/// One SwiGLU MLP.
#[derive(Debug, Clone)]
pub struct Mlp {
    /// `[intermediate, hidden]`.
    pub gate_proj: Linear,
    /// `[intermediate, hidden]`.
    pub up_proj: Linear,
    /// `[hidden, intermediate]`.
    pub down_proj: Linear,
}

/// Buffers for [`Mlp::forward`], kept across calls.
#[derive(Debug, Default)]
pub struct MlpScratch {
    gate: Vec<f32>,
    up: Vec<f32>,
}

impl Mlp {
    /// `out: [n, hidden] = down(silu(gate(x)) * up(x))` for `x: [n, hidden]`.
    pub fn forward(&self, pool: &Pool, x: &[f32], n: usize, s: &mut MlpScratch, out: &mut [f32]) {
        let inter = self.gate_proj.out_features();
        let gate = grow(&mut s.gate, n * inter);
        let up = grow(&mut s.up, n * inter);
        self.gate_proj.forward(pool, x, n, gate);
        self.up_proj.forward(pool, x, n, up);
        for (g, u) in gate.iter_mut().zip(up.iter()) {
            *g = *g / (1.0 + (-*g).exp()) * u;
        }
        self.down_proj.forward(pool, gate, n, out);
    }
}
