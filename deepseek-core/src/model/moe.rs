//! DeepSeekMoE: routed experts chosen per token by the gate, plus always-on shared experts.
//!
//! Tokens are grouped by expert so each chosen expert runs once over all its tokens; an
//! expert no token chose is never touched.

use super::mlp::{Mlp, MlpScratch};
use super::router::{route, RouterConfig, RouterScratch};
use super::{grow, linear::Linear};
use crate::kernels::{axpy, Pool};
use crate::profile::{self, Part};

/// Up to this many tokens, experts run one per worker; beyond, each expert's matrices are
/// split across the workers (prefill has enough rows per expert to share).
const EXPERT_PARALLEL_MAX_TOKENS: usize = 8;

/// Marks the shared experts among the parts of the expert-parallel path.
const SHARED: usize = usize::MAX;

/// One MoE feed-forward block.
#[derive(Debug, Clone)]
pub struct Moe {
    /// Router weight `[E, hidden]` (kept exact: routing decisions must match the reference).
    pub gate: Linear,
    /// V3's `e_score_correction_bias` (selection only).
    pub e_score_correction_bias: Option<Vec<f32>>,
    /// The routing rule.
    pub router: RouterConfig,
    /// Routed experts.
    pub experts: Vec<Mlp>,
    /// Shared experts fused into one MLP.
    pub shared_experts: Option<Mlp>,
}

/// Buffers for [`Moe::forward`], kept across calls.
#[derive(Debug, Default)]
pub struct MoeScratch {
    logits: Vec<f32>,
    choices: Vec<(usize, f32)>,
    router: RouterScratch,
    /// Per expert, the (token, weight) pairs routed to it, concatenated.
    order: Vec<(usize, f32)>,
    starts: Vec<usize>,
    fill: Vec<usize>,
    /// Expert-parallel path: which expert each part is, and where parts start in `ye`.
    parts: Vec<usize>,
    bounds: Vec<usize>,
    xe: Vec<f32>,
    ye: Vec<f32>,
    mlp: MlpScratch,
}

impl Moe {
    /// `out: [n, hidden]` = sum over chosen experts of weight * expert(x) + shared(x).
    pub fn forward(&self, pool: &Pool, x: &[f32], n: usize, s: &mut MoeScratch, out: &mut [f32]) {
        let h = self.gate.in_features();
        let e = self.router.n_routed_experts;
        let k = self.router.top_k;

        // logits: [n, E]
        let t_router = profile::start();
        let logits = grow(&mut s.logits, n * e);
        self.gate.forward(pool, x, n, logits);
        s.choices.clear();
        s.choices.resize(n * k, (0, 0.0));
        for t in 0..n {
            let bias = self.e_score_correction_bias.as_deref();
            route(
                &self.router,
                &logits[t * e..][..e],
                bias,
                &mut s.router,
                &mut s.choices[t * k..][..k],
            );
        }

        profile::stop(Part::Router, t_router);

        // Counting sort of (token, weight) by expert.
        s.starts.clear();
        s.starts.resize(e + 1, 0);
        for &(ex, _) in &s.choices {
            s.starts[ex + 1] += 1;
        }
        for i in 0..e {
            s.starts[i + 1] += s.starts[i];
        }
        s.order.clear();
        s.order.resize(n * k, (0, 0.0));
        s.fill.clear();
        s.fill.extend_from_slice(&s.starts);
        for (i, &(ex, w)) in s.choices.iter().enumerate() {
            s.order[s.fill[ex]] = (i / k, w);
            s.fill[ex] += 1;
        }

        out[..n * h].fill(0.0);
        if n <= EXPERT_PARALLEL_MAX_TOKENS && pool.threads() > 1 {
            self.experts_in_parallel(pool, x, n, s, out);
            return;
        }
        for (ex, expert) in self.experts.iter().enumerate() {
            let routed = &s.order[s.starts[ex]..s.starts[ex + 1]];
            if routed.is_empty() {
                continue;
            }
            let m = routed.len();
            let xe = grow(&mut s.xe, m * h);
            for (j, &(t, _)) in routed.iter().enumerate() {
                xe[j * h..][..h].copy_from_slice(&x[t * h..][..h]);
            }
            let ye = grow(&mut s.ye, m * h);
            expert.forward(pool, xe, m, &mut s.mlp, ye);
            for (j, &(t, w)) in routed.iter().enumerate() {
                axpy(w, &ye[j * h..][..h], &mut out[t * h..][..h]);
            }
        }

        if let Some(shared) = &self.shared_experts {
            let ye = grow(&mut s.ye, n * h);
            shared.forward(pool, x, n, &mut s.mlp, ye);
            for (o, y) in out.iter_mut().zip(ye.iter()) {
                *o += y;
            }
        }
    }

    /// Few tokens (decode): each worker runs whole experts (the shared one included) on its own,
    /// so one dispatch covers the layer instead of one per matrix. Same sums, same order.
    fn experts_in_parallel(
        &self,
        pool: &Pool,
        x: &[f32],
        n: usize,
        s: &mut MoeScratch,
        out: &mut [f32],
    ) {
        let h = self.gate.in_features();
        let MoeScratch {
            order,
            starts,
            xe,
            ye,
            parts,
            bounds,
            ..
        } = s;
        // Inputs of every routed (token, expert) pair, in expert order.
        let xe = grow(xe, order.len() * h);
        for (j, &(t, _)) in order.iter().enumerate() {
            xe[j * h..][..h].copy_from_slice(&x[t * h..][..h]);
        }
        // One part per active expert: [output m x h | gate m x inter | up m x inter].
        parts.clear();
        bounds.clear();
        bounds.push(0);
        let mut work = 0;
        for (ex, expert) in self.experts.iter().enumerate() {
            let m = starts[ex + 1] - starts[ex];
            if m > 0 {
                parts.push(ex);
                let size = m * (h + 2 * expert.intermediate_size());
                bounds.push(bounds[bounds.len() - 1] + size);
                work += 3 * m * h * expert.intermediate_size();
            }
        }
        if let Some(shared) = &self.shared_experts {
            parts.push(SHARED);
            bounds.push(bounds[bounds.len() - 1] + n * (h + 2 * shared.intermediate_size()));
            work += 3 * n * h * shared.intermediate_size();
        }
        let buf = grow(ye, bounds[bounds.len() - 1]);
        let (parts, starts, xe) = (&*parts, &*starts, &*xe);
        pool.for_each_part(buf, bounds, work / parts.len().max(1), |p, part| {
            let serial = Pool::serial();
            let (expert, input, m) = match parts[p] {
                SHARED => (
                    self.shared_experts
                        .as_ref()
                        .expect("shared part without shared experts"),
                    x,
                    n,
                ),
                ex => (
                    &self.experts[ex],
                    &xe[starts[ex] * h..starts[ex + 1] * h],
                    starts[ex + 1] - starts[ex],
                ),
            };
            let inter = expert.intermediate_size();
            let (y, rest) = part.split_at_mut(m * h);
            let (gate, up) = rest.split_at_mut(m * inter);
            expert.forward_with(&serial, input, m, gate, up, y);
        });
        for (p, &ex) in parts.iter().enumerate() {
            let y = &buf[bounds[p]..];
            if ex == SHARED {
                for (o, v) in out[..n * h].iter_mut().zip(y) {
                    *o += v;
                }
            } else {
                for (j, &(t, w)) in order[starts[ex]..starts[ex + 1]].iter().enumerate() {
                    axpy(w, &y[j * h..][..h], &mut out[t * h..][..h]);
                }
            }
        }
    }
}
