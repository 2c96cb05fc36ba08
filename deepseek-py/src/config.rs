//! The validated [`Config`] as a dict with Hugging Face `config.json` field names (defaults
//! filled in), so Python code reads it as it would read the checkpoint's own config.

use deepseek_core::config::{
    Architecture, DeepseekConfig, ModelType, RopeScaling, ScoringFunc, TopkMethod, Yarn,
};
use deepseek_core::Config;
use pyo3::prelude::*;
use pyo3::types::PyDict;

/// `f32` fields as the decimal the config wrote (`0.707`, not `0.7070000171661377`).
fn f32_as_written(x: f32) -> f64 {
    x.to_string().parse().unwrap_or(x as f64)
}

/// YaRN's fields as config.json writes them; `tag` names the variant's key (DeepSeek configs
/// write `type`, the Qwen and Llama ones `rope_type`).
fn yarn_dict<'py>(py: Python<'py>, y: &Yarn, tag: &str) -> PyResult<Bound<'py, PyDict>> {
    let r = PyDict::new(py);
    r.set_item(tag, "yarn")?;
    r.set_item("factor", y.factor)?;
    r.set_item(
        "original_max_position_embeddings",
        y.original_max_position_embeddings,
    )?;
    r.set_item("beta_fast", y.beta_fast)?;
    r.set_item("beta_slow", y.beta_slow)?;
    r.set_item("mscale", y.mscale)?;
    r.set_item("mscale_all_dim", y.mscale_all_dim)?;
    Ok(r)
}

/// `config` as a new dict.
pub fn to_dict<'py>(py: Python<'py>, c: &Config) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    d.set_item("model_type", c.model_type.as_str())?;
    d.set_item("vocab_size", c.vocab_size)?;
    d.set_item("hidden_size", c.hidden_size)?;
    d.set_item("intermediate_size", c.intermediate_size)?;
    d.set_item("num_hidden_layers", c.num_hidden_layers)?;
    d.set_item("num_attention_heads", c.num_attention_heads)?;
    match &c.architecture {
        Architecture::Deepseek(ds) => deepseek_items(py, &d, c, ds)?,
        Architecture::Llama(l) => {
            d.set_item("num_key_value_heads", l.num_key_value_heads)?;
            d.set_item("head_dim", l.head_dim)?;
            d.set_item("rope_theta", c.rope_theta)?;
            let rope_scaling = match &l.rope_scaling {
                None => None,
                Some(RopeScaling::Yarn(y)) => {
                    let r = yarn_dict(py, y, "rope_type")?;
                    r.set_item("attention_factor", y.attention_factor)?;
                    Some(r)
                }
                Some(RopeScaling::Llama3(s)) => {
                    let r = PyDict::new(py);
                    r.set_item("rope_type", "llama3")?;
                    r.set_item("factor", s.factor)?;
                    r.set_item("low_freq_factor", s.low_freq_factor)?;
                    r.set_item("high_freq_factor", s.high_freq_factor)?;
                    r.set_item(
                        "original_max_position_embeddings",
                        s.original_max_position_embeddings,
                    )?;
                    Some(r)
                }
            };
            d.set_item("rope_scaling", rope_scaling)?;
            d.set_item("rms_norm_eps", c.rms_norm_eps)?;
            if c.model_type != ModelType::Qwen2 {
                d.set_item("attention_bias", l.o_bias)?;
            }
        }
    }
    d.set_item("tie_word_embeddings", c.tie_word_embeddings)?;
    d.set_item("max_position_embeddings", c.max_position_embeddings)?;
    let quantization = match &c.quantization {
        None => None,
        Some(q) => {
            let r = PyDict::new(py);
            r.set_item("quant_method", "fp8")?;
            r.set_item("fmt", "e4m3")?;
            r.set_item("weight_block_size", q.weight_block_size.to_vec())?;
            Some(r)
        }
    };
    d.set_item("quantization_config", quantization)?;
    d.set_item("bos_token_id", c.bos_token_id)?;
    // One id stays an int, several a list, as in config.json.
    match c.eos_token_ids.as_slice() {
        [] => d.set_item("eos_token_id", None::<u32>)?,
        [id] => d.set_item("eos_token_id", id)?,
        ids => d.set_item("eos_token_id", ids.to_vec())?,
    }
    Ok(d)
}

/// The DeepSeek fields, in config.json's order.
fn deepseek_items<'py>(
    py: Python<'py>,
    d: &Bound<'py, PyDict>,
    c: &Config,
    ds: &DeepseekConfig,
) -> PyResult<()> {
    d.set_item("q_lora_rank", ds.q_lora_rank)?;
    d.set_item("kv_lora_rank", ds.kv_lora_rank)?;
    d.set_item("qk_nope_head_dim", ds.qk_nope_head_dim)?;
    d.set_item("qk_rope_head_dim", ds.qk_rope_head_dim)?;
    d.set_item("v_head_dim", ds.v_head_dim)?;
    d.set_item("rope_theta", c.rope_theta)?;
    let rope_scaling = match &ds.rope_scaling {
        None => None,
        Some(y) => Some(yarn_dict(py, y, "type")?),
    };
    d.set_item("rope_scaling", rope_scaling)?;
    d.set_item("rms_norm_eps", c.rms_norm_eps)?;
    // HF keeps the MoE fields at the top level; a dense model has `n_routed_experts: null`.
    d.set_item(
        "n_routed_experts",
        ds.moe.as_ref().map(|m| m.n_routed_experts),
    )?;
    if let Some(m) = &ds.moe {
        d.set_item("n_shared_experts", m.n_shared_experts)?;
        d.set_item("num_experts_per_tok", m.num_experts_per_tok)?;
        d.set_item("moe_intermediate_size", m.moe_intermediate_size)?;
        let topk_method = match m.topk_method {
            TopkMethod::Greedy => "greedy",
            TopkMethod::GroupLimitedGreedy => "group_limited_greedy",
            TopkMethod::NoauxTc => "noaux_tc",
        };
        d.set_item("topk_method", topk_method)?;
        let scoring_func = match m.scoring_func {
            ScoringFunc::Softmax => "softmax",
            ScoringFunc::Sigmoid => "sigmoid",
        };
        d.set_item("scoring_func", scoring_func)?;
        d.set_item("n_group", m.n_group)?;
        d.set_item("topk_group", m.topk_group)?;
        d.set_item("norm_topk_prob", m.norm_topk_prob)?;
        d.set_item(
            "routed_scaling_factor",
            f32_as_written(m.routed_scaling_factor),
        )?;
    }
    d.set_item("first_k_dense_replace", ds.first_k_dense_replace)?;
    d.set_item("moe_layer_freq", ds.moe_layer_freq)?;
    Ok(())
}
