//! The MoE gate's decision as a pure function: router logits (+ correction bias) -> experts and weights.
//!
//! Kept free of tensors and threads so every rule (greedy, group-limited greedy, V3's noaux_tc)
//! is tested on hand-made scores. Ties go to the lower expert (and group) index.

use crate::config::{ModelType, MoeConfig, ScoringFunc, TopkMethod};

/// Everything the routing rule depends on.
#[derive(Debug, Clone)]
pub struct RouterConfig {
    /// Routed experts (E).
    pub n_routed_experts: usize,
    /// Experts per token (k).
    pub top_k: usize,
    /// Selection rule.
    pub topk_method: TopkMethod,
    /// Score function.
    pub scoring_func: ScoringFunc,
    /// Contiguous groups of experts.
    pub n_group: usize,
    /// Groups kept by the group-limited rules.
    pub topk_group: usize,
    /// Renormalise chosen weights.
    pub norm_topk_prob: bool,
    /// Multiplier on the weights.
    pub routed_scaling_factor: f32,
    /// V2 scales only un-normalised weights; V3 always scales (each as DeepSeek's own code does).
    pub scale_after_norm: bool,
}

impl RouterConfig {
    /// The router of a model's MoE layers.
    pub fn new(moe: &MoeConfig, model_type: ModelType) -> Self {
        RouterConfig {
            n_routed_experts: moe.n_routed_experts,
            top_k: moe.num_experts_per_tok,
            topk_method: moe.topk_method,
            scoring_func: moe.scoring_func,
            n_group: moe.n_group,
            topk_group: moe.topk_group,
            norm_topk_prob: moe.norm_topk_prob,
            routed_scaling_factor: moe.routed_scaling_factor,
            scale_after_norm: model_type == ModelType::DeepseekV3,
        }
    }
}

/// Reusable buffers so routing allocates nothing per token.
#[derive(Debug, Default, Clone)]
pub struct RouterScratch {
    scores: Vec<f32>,
    choice: Vec<f32>,
    groups: Vec<f32>,
    kept: Vec<bool>,
}

/// Picks `cfg.top_k` experts for one token from its router `logits` (length E).
///
/// `bias` is V3's `e_score_correction_bias`: it shifts which experts are chosen, never their
/// weights. Writes `(expert, weight)` pairs into `out` (length k), best first.
pub fn route(
    cfg: &RouterConfig,
    logits: &[f32],
    bias: Option<&[f32]>,
    scratch: &mut RouterScratch,
    out: &mut [(usize, f32)],
) {
    let e = cfg.n_routed_experts;
    assert!(
        logits.len() == e && out.len() == cfg.top_k,
        "route: wrong lengths"
    );
    let scores = &mut scratch.scores;
    scores.clear();
    match cfg.scoring_func {
        ScoringFunc::Softmax => {
            let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            scores.extend(logits.iter().map(|&l| (l - max).exp()));
            let sum: f32 = scores.iter().sum();
            scores.iter_mut().for_each(|s| *s /= sum);
        }
        ScoringFunc::Sigmoid => scores.extend(logits.iter().map(|&l| 1.0 / (1.0 + (-l).exp()))),
    }

    let choice = &mut scratch.choice;
    choice.clear();
    match (cfg.topk_method, bias) {
        (TopkMethod::NoauxTc, Some(b)) => choice.extend(scores.iter().zip(b).map(|(s, b)| s + b)),
        _ => choice.extend_from_slice(scores),
    }

    if cfg.topk_method != TopkMethod::Greedy && cfg.n_group > 1 {
        let per = e / cfg.n_group;
        let groups = &mut scratch.groups;
        groups.clear();
        for g in choice.chunks_exact(per) {
            groups.push(match cfg.topk_method {
                TopkMethod::NoauxTc => {
                    let (a, b) = top2(g);
                    a + b
                }
                _ => g.iter().copied().fold(f32::NEG_INFINITY, f32::max),
            });
        }
        // Keep the best `topk_group` groups; everything else can never be chosen.
        let kept = &mut scratch.kept;
        kept.clear();
        kept.resize(cfg.n_group, false);
        for _ in 0..cfg.topk_group {
            let best = argmax_where(groups, |i| !kept[i]);
            kept[best] = true;
        }
        for (g, chunk) in choice.chunks_exact_mut(per).enumerate() {
            if !kept[g] {
                chunk.fill(f32::NEG_INFINITY);
            }
        }
    }

    // Top-k by selection score; the weight is the unbiased score.
    for j in 0..cfg.top_k {
        let best = argmax_where(choice, |i| out[..j].iter().all(|&(x, _)| x != i));
        out[j] = (best, scores[best]);
    }

    let normalise = cfg.norm_topk_prob && (cfg.scale_after_norm || cfg.top_k > 1);
    if normalise {
        let sum: f32 = out.iter().map(|&(_, w)| w).sum::<f32>() + 1e-20;
        out.iter_mut().for_each(|(_, w)| *w /= sum);
    }
    if !normalise || cfg.scale_after_norm {
        out.iter_mut()
            .for_each(|(_, w)| *w *= cfg.routed_scaling_factor);
    }
}

/// The two largest values of `g` (which has at least two).
fn top2(g: &[f32]) -> (f32, f32) {
    let (mut a, mut b) = (f32::NEG_INFINITY, f32::NEG_INFINITY);
    for &x in g {
        if x > a {
            b = a;
            a = x;
        } else if x > b {
            b = x;
        }
    }
    (a, b)
}

/// Index of the largest value among indices allowed by `ok`; the lowest index wins ties.
fn argmax_where(v: &[f32], ok: impl Fn(usize) -> bool) -> usize {
    let mut best = usize::MAX;
    for (i, &x) in v.iter().enumerate() {
        if ok(i) && (best == usize::MAX || x > v[best]) {
            best = i;
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(
        method: TopkMethod,
        scoring: ScoringFunc,
        e: usize,
        k: usize,
        groups: (usize, usize),
    ) -> RouterConfig {
        RouterConfig {
            n_routed_experts: e,
            top_k: k,
            topk_method: method,
            scoring_func: scoring,
            n_group: groups.0,
            topk_group: groups.1,
            norm_topk_prob: false,
            routed_scaling_factor: 1.0,
            scale_after_norm: method == TopkMethod::NoauxTc,
        }
    }

    fn run(c: &RouterConfig, logits: &[f32], bias: Option<&[f32]>) -> Vec<(usize, f32)> {
        let mut out = vec![(0, 0.0); c.top_k];
        route(c, logits, bias, &mut RouterScratch::default(), &mut out);
        out
    }

    fn sigmoid(x: f32) -> f32 {
        1.0 / (1.0 + (-x).exp())
    }

    #[test]
    fn greedy_softmax_picks_top_probabilities() {
        let c = cfg(TopkMethod::Greedy, ScoringFunc::Softmax, 4, 2, (1, 1));
        let logits = [0.0, 2.0, 1.0, -1.0];
        let out = run(&c, &logits, None);
        let z: f32 = logits.iter().map(|l| l.exp()).sum();
        assert_eq!(out[0].0, 1);
        assert_eq!(out[1].0, 2);
        assert!((out[0].1 - 2f32.exp() / z).abs() < 1e-6);
        assert!((out[1].1 - 1f32.exp() / z).abs() < 1e-6);
    }

    #[test]
    fn v2_scaling_applies_only_without_normalisation() {
        let mut c = cfg(TopkMethod::Greedy, ScoringFunc::Softmax, 4, 2, (1, 1));
        c.routed_scaling_factor = 3.0;
        let logits = [0.0, 2.0, 1.0, -1.0];
        let plain = run(&c, &logits, None);
        c.norm_topk_prob = true;
        let normed = run(&c, &logits, None);
        let s = plain[0].1 + plain[1].1;
        assert!(
            (normed[0].1 - plain[0].1 / s).abs() < 1e-6,
            "normalised, not scaled"
        );
        c.norm_topk_prob = false;
        c.routed_scaling_factor = 1.0;
        let unscaled = run(&c, &logits, None);
        assert!((plain[0].1 - 3.0 * unscaled[0].1).abs() < 1e-6);
    }

    #[test]
    fn group_limited_greedy_masks_groups_by_their_max() {
        // 3 groups of 2; group maxima 0.9 (g0), 0.8 (g1), 0.85 (g2). Keep 2 groups: g0 and g2.
        // Expert 3 (g1) has the second best score overall but its group is dropped.
        let c = cfg(
            TopkMethod::GroupLimitedGreedy,
            ScoringFunc::Softmax,
            6,
            2,
            (3, 2),
        );
        let p = [0.9f32, 0.01, 0.8, 0.79, 0.05, 0.85];
        let logits: Vec<f32> = p.iter().map(|x| x.ln()).collect();
        let out = run(&c, &logits, None);
        assert_eq!(out.iter().map(|o| o.0).collect::<Vec<_>>(), vec![0, 5]);
        // Softmax of ln(p) is p / sum(p).
        let z: f32 = p.iter().sum();
        assert!((out[1].1 - 0.85 / z).abs() < 1e-6);
    }

    #[test]
    fn noaux_tc_bias_selects_but_does_not_weigh() {
        let mut c = cfg(TopkMethod::NoauxTc, ScoringFunc::Sigmoid, 4, 2, (1, 1));
        c.norm_topk_prob = true;
        c.routed_scaling_factor = 2.5;
        let logits = [1.0, 0.5, 0.0, -0.5];
        // A bias that lifts expert 3 above everything.
        let bias = [0.0, 0.0, 0.0, 1.0];
        let out = run(&c, &logits, Some(&bias));
        assert_eq!(out[0].0, 3);
        assert_eq!(out[1].0, 0);
        let (s3, s0) = (sigmoid(-0.5), sigmoid(1.0));
        assert!((out[0].1 - 2.5 * s3 / (s3 + s0)).abs() < 1e-6);
        assert!((out[1].1 - 2.5 * s0 / (s3 + s0)).abs() < 1e-6);
    }

    #[test]
    fn noaux_tc_groups_rank_by_top2_sum_with_negative_scores() {
        // Biases push every selection score negative: masked groups must still never win
        // (a 0.0 fill instead of -inf would pick them).
        let mut c = cfg(TopkMethod::NoauxTc, ScoringFunc::Sigmoid, 8, 2, (4, 2));
        c.norm_topk_prob = true;
        let logits = [0.0; 8];
        // choice = 0.5 + bias. Group sums of top-2: g0 = -1.0+-1.1, g1 = -0.2+-0.9, g2 = -0.5+-0.5, g3 = -0.3+-3.0.
        let bias = [-1.5, -1.6, -0.7, -1.4, -1.0, -1.0, -0.8, -3.5];
        let out = run(&c, &logits, Some(&bias));
        // Kept groups: g2 (-1.0) and g1 (-1.1). Best experts there: 2 (-0.2), then 4 (-0.5, lower index wins the tie with 5).
        assert_eq!(out.iter().map(|o| o.0).collect::<Vec<_>>(), vec![2, 4]);
        // Expert 6 (-0.3) beats expert 4 but sits in the dropped group g3.
        assert!((out[0].1 - 0.5).abs() < 1e-6 && (out[1].1 - 0.5).abs() < 1e-6);
    }

    #[test]
    fn ties_go_to_the_lower_index() {
        let c = cfg(TopkMethod::Greedy, ScoringFunc::Sigmoid, 5, 3, (1, 1));
        let out = run(&c, &[0.3, 0.7, 0.7, 0.7, 0.1], None);
        assert_eq!(out.iter().map(|o| o.0).collect::<Vec<_>>(), vec![1, 2, 3]);
    }
}
