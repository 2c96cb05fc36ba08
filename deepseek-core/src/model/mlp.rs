//! SwiGLU feed-forward: `down(silu(gate(x)) * up(x))` (dense layers, experts, shared experts).

use super::{grow, linear::Linear};
use crate::kernels::{self, Pool};

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
        self.forward_with(pool, x, n, gate, up, out);
    }

    /// [`forward`](Self::forward) with caller-provided `[n, intermediate]` buffers.
    pub fn forward_with(
        &self,
        pool: &Pool,
        x: &[f32],
        n: usize,
        gate: &mut [f32],
        up: &mut [f32],
        out: &mut [f32],
    ) {
        kernels::matmul_pair(
            pool,
            &self.gate_proj.weight,
            &self.up_proj.weight,
            x,
            n,
            gate,
            up,
        );
        for (g, u) in gate.iter_mut().zip(up.iter()) {
            *g = *g / (1.0 + (-*g).exp()) * u;
        }
        self.down_proj.forward(pool, gate, n, out);
    }

    /// Width of the hidden SwiGLU layer.
    pub fn intermediate_size(&self) -> usize {
        self.gate_proj.out_features()
    }
}
