//! Opt-in wall-clock split of forward passes by part (attention, router, experts, dense MLP,
//! lm_head), to see where decode time goes; off (one cached branch) unless `DEEPSEEK_PROFILE`
//! is set. Never allocates; parts running on the pool are timed from the calling thread.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::Instant;

/// A part of the forward pass that [`take`] reports separately.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    /// DeepSeek layers' MLA attention, projections included (Llama-family layers are not split).
    Attention,
    /// The MoE gate matmul and the routing decision.
    Router,
    /// A whole MoE block (router included; [`take`] reports experts = this - router).
    Moe,
    /// A dense SwiGLU feed-forward.
    DenseMlp,
    /// The output projection.
    LmHead,
}

static NANOS: [AtomicU64; 5] = [const { AtomicU64::new(0) }; 5];

/// Whether `DEEPSEEK_PROFILE` was set (non-empty, not `0`) when first asked.
pub fn enabled() -> bool {
    static ON: OnceLock<bool> = OnceLock::new();
    *ON.get_or_init(|| std::env::var("DEEPSEEK_PROFILE").is_ok_and(|v| !v.is_empty() && v != "0"))
}

/// A start time when profiling is on.
#[inline]
pub(crate) fn start() -> Option<Instant> {
    enabled().then(Instant::now)
}

/// Adds the time since `t` (from [`start`]) to `part`.
#[inline]
pub(crate) fn stop(part: Part, t: Option<Instant>) {
    if let Some(t) = t {
        NANOS[part as usize].fetch_add(t.elapsed().as_nanos() as u64, Ordering::Relaxed);
    }
}

/// Seconds spent per part since the last call, as (name, seconds): attention, router,
/// experts (routed and shared), dense MLP, lm_head. Resets the counters.
pub fn take() -> [(&'static str, f64); 5] {
    let s = |p: Part| NANOS[p as usize].swap(0, Ordering::Relaxed) as f64 * 1e-9;
    let (attn, router, moe, dense, head) = (
        s(Part::Attention),
        s(Part::Router),
        s(Part::Moe),
        s(Part::DenseMlp),
        s(Part::LmHead),
    );
    [
        ("attention", attn),
        ("router", router),
        ("experts", (moe - router).max(0.0)),
        ("dense_mlp", dense),
        ("lm_head", head),
    ]
}
