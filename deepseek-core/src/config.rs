//! `config.json` -> a validated [`Config`]: every field that changes the math, checked once here.
//!
//! Accepts both the Hub's form (`rope_theta` + `rope_scaling`, `torch_dtype`) and the form
//! transformers 5 writes (`rope_parameters`, `dtype`). Defaults follow transformers' config
//! classes for each `model_type`. Fields every architecture has live in [`Config`]; the rest in
//! its [`Architecture`] variant.

use std::path::Path;

use serde_json::{Map, Value};

use crate::error::{Error, Result};

/// The checkpoint's `model_type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModelType {
    /// `deepseek_v2` (V2, V2-Lite, V2.5).
    DeepseekV2,
    /// `deepseek_v3` (V3, R1).
    DeepseekV3,
    /// `qwen2` (R1-Distill-Qwen).
    Qwen2,
    /// `llama` (R1-Distill-Llama, Llama 3).
    Llama,
    /// `qwen3` (R1-0528-Qwen3).
    Qwen3,
}

impl ModelType {
    /// The `model_type` string of config.json.
    pub fn as_str(self) -> &'static str {
        match self {
            ModelType::DeepseekV2 => "deepseek_v2",
            ModelType::DeepseekV3 => "deepseek_v3",
            ModelType::Qwen2 => "qwen2",
            ModelType::Llama => "llama",
            ModelType::Qwen3 => "qwen3",
        }
    }
}

/// How the router picks experts (`topk_method`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TopkMethod {
    /// Plain top-k over all experts' scores.
    Greedy,
    /// Keep the `topk_group` groups with the best max score, then top-k inside them (V2).
    GroupLimitedGreedy,
    /// V3: top-k over `score + e_score_correction_bias` inside the `topk_group` groups whose
    /// top-2 biased scores sum highest; the bias steers selection only.
    NoauxTc,
}

/// How router logits become scores (`scoring_func`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScoringFunc {
    /// Softmax over all experts (V2).
    Softmax,
    /// Independent sigmoid per expert (V3).
    Sigmoid,
}

/// The routed-expert part of the config; absent for a dense model.
#[derive(Debug, Clone, PartialEq)]
pub struct MoeConfig {
    /// Number of routed experts.
    pub n_routed_experts: usize,
    /// Number of shared experts (fused into one MLP of width `moe_intermediate_size * n`).
    pub n_shared_experts: usize,
    /// Experts chosen per token (k).
    pub num_experts_per_tok: usize,
    /// Hidden width of each expert's SwiGLU.
    pub moe_intermediate_size: usize,
    /// Selection rule.
    pub topk_method: TopkMethod,
    /// Score function.
    pub scoring_func: ScoringFunc,
    /// Number of contiguous expert groups.
    pub n_group: usize,
    /// Groups kept per token by group-limited rules.
    pub topk_group: usize,
    /// Renormalise the chosen weights to sum to one.
    pub norm_topk_prob: bool,
    /// Multiplier on the routed weights.
    pub routed_scaling_factor: f32,
}

/// YaRN context extension (`rope_type` / `type` `"yarn"`).
#[derive(Debug, Clone, PartialEq)]
pub struct Yarn {
    /// Context extension factor.
    pub factor: f64,
    /// Context length the model was pretrained with.
    pub original_max_position_embeddings: usize,
    /// Rotations per context above which frequencies are kept (high frequencies).
    pub beta_fast: f64,
    /// Rotations per context below which frequencies are interpolated.
    pub beta_slow: f64,
    /// mscale for the rotary cos/sin (DeepSeek).
    pub mscale: f64,
    /// mscale for the softmax scale (DeepSeek).
    pub mscale_all_dim: f64,
    /// Round the ramp's ends to whole dimensions (`truncate`, default true).
    pub truncate: bool,
    /// The resolved multiplier on the rotary cos/sin (see [`Config::from_json_str`]'s rules).
    pub attention_factor: f64,
}

/// Llama 3's frequency-dependent RoPE scaling (`rope_type: "llama3"`).
#[derive(Debug, Clone, PartialEq)]
pub struct Llama3Scaling {
    /// Divisor of the low frequencies.
    pub factor: f64,
    /// Wavelengths above `original_max_position_embeddings / low_freq_factor` are divided.
    pub low_freq_factor: f64,
    /// Wavelengths below `original_max_position_embeddings / high_freq_factor` are kept.
    pub high_freq_factor: f64,
    /// Context length the model was pretrained with.
    pub original_max_position_embeddings: usize,
}

/// RoPE scaling of the Llama family.
#[derive(Debug, Clone, PartialEq)]
pub enum RopeScaling {
    /// YaRN (Qwen3).
    Yarn(Yarn),
    /// Llama 3.
    Llama3(Llama3Scaling),
}

/// FP8 block quantisation as declared by `quantization_config`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fp8Quantization {
    /// `weight_block_size`: rows x columns covered by one `weight_scale_inv` entry.
    pub weight_block_size: [usize; 2],
}

/// The DeepSeek V2/V3 part of the config: multi-head latent attention and experts.
#[derive(Debug, Clone, PartialEq)]
pub struct DeepseekConfig {
    /// Rank of the query compression; `None` means a plain `q_proj` (V2-Lite).
    pub q_lora_rank: Option<usize>,
    /// Rank of the compressed KV latent.
    pub kv_lora_rank: usize,
    /// Per-head query/key width without position information.
    pub qk_nope_head_dim: usize,
    /// Per-head query/key width that carries RoPE (shared key across heads).
    pub qk_rope_head_dim: usize,
    /// Per-head value width.
    pub v_head_dim: usize,
    /// YaRN scaling, if any.
    pub rope_scaling: Option<Yarn>,
    /// Routed experts, if the model has any.
    pub moe: Option<MoeConfig>,
    /// The first layers that are dense.
    pub first_k_dense_replace: usize,
    /// Every `moe_layer_freq`-th layer past the dense ones is MoE.
    pub moe_layer_freq: usize,
    /// Multi-token-prediction layers stored after the decoder layers (skipped by plain decoding).
    pub num_nextn_predict_layers: usize,
}

/// The Qwen2 / Llama / Qwen3 part of the config: grouped-query attention, dense SwiGLU.
#[derive(Debug, Clone, PartialEq)]
pub struct LlamaConfig {
    /// Key/value heads; each serves `num_attention_heads / num_key_value_heads` query heads.
    pub num_key_value_heads: usize,
    /// Per-head width of queries, keys and values (all of it rotated).
    pub head_dim: usize,
    /// RoPE scaling, if any.
    pub rope_scaling: Option<RopeScaling>,
    /// `q_proj`, `k_proj`, `v_proj` have biases (always for Qwen2, `attention_bias` otherwise).
    pub qkv_bias: bool,
    /// `o_proj` has a bias (`attention_bias` of Llama and Qwen3).
    pub o_bias: bool,
    /// Per-head RMSNorm of queries and keys before RoPE (`q_norm`, `k_norm`: Qwen3).
    pub qk_norm: bool,
}

/// What differs between the supported families.
#[derive(Debug, Clone, PartialEq)]
pub enum Architecture {
    /// DeepSeek V2 / V3 / R1.
    Deepseek(DeepseekConfig),
    /// Qwen2, Llama and Qwen3 (the R1-Distill models).
    Llama(LlamaConfig),
}

/// A validated model configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// The `model_type`.
    pub model_type: ModelType,
    /// Rows of the embedding and of lm_head.
    pub vocab_size: usize,
    /// Model width.
    pub hidden_size: usize,
    /// Width of the dense layers' SwiGLU.
    pub intermediate_size: usize,
    /// Decoder layers (DeepSeek's MTP layer is not counted).
    pub num_hidden_layers: usize,
    /// Attention (query) heads.
    pub num_attention_heads: usize,
    /// RoPE base.
    pub rope_theta: f64,
    /// Epsilon of the decoder RMSNorms (DeepSeek's q/kv latent norms always use 1e-6).
    pub rms_norm_eps: f64,
    /// lm_head shares the embedding matrix.
    pub tie_word_embeddings: bool,
    /// Longest context the model supports.
    pub max_position_embeddings: usize,
    /// FP8 block quantisation of the checkpoint, if declared.
    pub quantization: Option<Fp8Quantization>,
    /// Beginning-of-sequence token.
    pub bos_token_id: Option<u32>,
    /// End-of-sequence token(s).
    pub eos_token_ids: Vec<u32>,
    /// The family-specific part.
    pub architecture: Architecture,
}

/// Reads one field with its name in every error.
struct Fields<'a> {
    map: &'a Map<String, Value>,
}

impl<'a> Fields<'a> {
    fn get(&self, key: &str) -> Option<&'a Value> {
        self.map.get(key).filter(|v| !v.is_null())
    }

    fn usize_opt(&self, key: &str) -> Result<Option<usize>> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => v.as_u64().map(|n| Some(n as usize)).ok_or_else(|| {
                Error::config(key, format!("expected a non-negative integer, found {v}"))
            }),
        }
    }

    fn usize_req(&self, key: &str) -> Result<usize> {
        self.usize_opt(key)?
            .ok_or_else(|| Error::config(key, "missing"))
    }

    fn positive(&self, key: &str) -> Result<usize> {
        let n = self.usize_req(key)?;
        if n == 0 {
            return Err(Error::config(key, "must be > 0, found 0"));
        }
        Ok(n)
    }

    fn f64_opt(&self, key: &str) -> Result<Option<f64>> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => v
                .as_f64()
                .filter(|x| x.is_finite())
                .map(Some)
                .ok_or_else(|| Error::config(key, format!("expected a finite number, found {v}"))),
        }
    }

    fn bool_opt(&self, key: &str) -> Result<Option<bool>> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => v
                .as_bool()
                .map(Some)
                .ok_or_else(|| Error::config(key, format!("expected true or false, found {v}"))),
        }
    }

    fn str_opt(&self, key: &str) -> Result<Option<&'a str>> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => v
                .as_str()
                .map(Some)
                .ok_or_else(|| Error::config(key, format!("expected a string, found {v}"))),
        }
    }

    /// An id field that may be a single integer or a list of them (as `eos_token_id` can be).
    fn ids(&self, key: &str) -> Result<Vec<u32>> {
        let bad = |v: &Value| {
            Error::config(
                key,
                format!("expected a token id or a list of ids, found {v}"),
            )
        };
        match self.get(key) {
            None => Ok(Vec::new()),
            Some(Value::Array(items)) => items
                .iter()
                .map(|v| {
                    v.as_u64()
                        .and_then(|n| u32::try_from(n).ok())
                        .ok_or_else(|| bad(v))
                })
                .collect(),
            Some(v) => Ok(vec![v
                .as_u64()
                .and_then(|n| u32::try_from(n).ok())
                .ok_or_else(|| bad(v))?]),
        }
    }
}

impl Config {
    /// Reads and validates `config.json` at `path`.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        Self::from_json_str(&text).map_err(|e| match e {
            Error::Json { message, .. } => Error::Json {
                path: path.to_path_buf(),
                message,
            },
            other => other,
        })
    }

    /// Parses and validates the text of a `config.json`.
    ///
    /// YaRN's cos/sin multiplier ([`Yarn::attention_factor`]): DeepSeek keeps its own rule,
    /// `mscale(factor, mscale) / mscale(factor, mscale_all_dim)`. The Llama family follows
    /// transformers (`attention_factor` if given, else that ratio when both mscales are set,
    /// else `0.1 ln(factor) + 1`) and then multiplies by `attn_factor` (default 1), as vLLM and
    /// SGLang do and transformers does not: R1-0528-Qwen3-8B sets `attn_factor` to
    /// `1 / (0.1 ln 4 + 1)` to cancel YaRN's temperature, and DeepSeek serves it that way.
    pub fn from_json_str(text: &str) -> Result<Self> {
        let value: Value = serde_json::from_str(text).map_err(|e| Error::Json {
            path: "config.json".into(),
            message: e.to_string(),
        })?;
        let map = value.as_object().ok_or_else(|| Error::Json {
            path: "config.json".into(),
            message: "top level is not an object".into(),
        })?;
        Self::from_json_map(map)
    }

    /// Validates a config given as the parsed object of a `config.json` (GGUF metadata is
    /// translated into one, so both obey the same rules).
    pub(crate) fn from_json_map(map: &Map<String, Value>) -> Result<Self> {
        let f = Fields { map };
        let model_type = match f.str_opt("model_type")? {
            Some("deepseek_v2") => ModelType::DeepseekV2,
            Some("deepseek_v3") => ModelType::DeepseekV3,
            Some("qwen2") => ModelType::Qwen2,
            Some("llama") => ModelType::Llama,
            Some("qwen3") => ModelType::Qwen3,
            Some(other) => return Err(Error::UnsupportedArchitecture(other.to_string())),
            None => return Err(Error::config("model_type", "missing")),
        };
        let deepseek = matches!(model_type, ModelType::DeepseekV2 | ModelType::DeepseekV3);

        let hidden_size = f.positive("hidden_size")?;
        let num_hidden_layers = f.positive("num_hidden_layers")?;
        let num_attention_heads = f.positive("num_attention_heads")?;
        let max_position_embeddings = match (deepseek, f.usize_opt("max_position_embeddings")?) {
            (_, Some(0)) => {
                return Err(Error::config(
                    "max_position_embeddings",
                    "must be > 0, found 0",
                ))
            }
            (_, Some(n)) => n,
            (true, None) => return Err(Error::config("max_position_embeddings", "missing")),
            (false, None) if model_type == ModelType::Llama => 2048,
            (false, None) => 32768,
        };
        let rope = RopeSource::read(&f)?;
        let quantization = parse_quantization(&f)?;
        let rms_norm_eps = f.f64_opt("rms_norm_eps")?.unwrap_or(1e-6);
        if rms_norm_eps <= 0.0 {
            return Err(Error::config(
                "rms_norm_eps",
                format!("must be > 0, found {rms_norm_eps}"),
            ));
        }
        let architecture = if deepseek {
            Architecture::Deepseek(parse_deepseek(
                &f,
                &rope,
                model_type == ModelType::DeepseekV3,
                num_attention_heads,
            )?)
        } else {
            Architecture::Llama(parse_llama(
                &f,
                &rope,
                model_type,
                hidden_size,
                num_attention_heads,
                num_hidden_layers,
                max_position_embeddings,
            )?)
        };

        let vocab_size = f.positive("vocab_size")?;
        let bos_token_ids = f.ids("bos_token_id")?;
        let eos_token_ids = f.ids("eos_token_id")?;
        for (key, ids) in [
            ("bos_token_id", &bos_token_ids),
            ("eos_token_id", &eos_token_ids),
        ] {
            if let Some(&id) = ids.iter().find(|&&id| id as usize >= vocab_size) {
                return Err(Error::config(
                    key,
                    format!("token id {id} is not below vocab_size {vocab_size}"),
                ));
            }
        }
        let config = Config {
            model_type,
            vocab_size,
            hidden_size,
            intermediate_size: f.positive("intermediate_size")?,
            num_hidden_layers,
            num_attention_heads,
            rope_theta: rope.theta,
            rms_norm_eps,
            tie_word_embeddings: f.bool_opt("tie_word_embeddings")?.unwrap_or(false),
            max_position_embeddings,
            quantization,
            bos_token_id: bos_token_ids.first().copied(),
            eos_token_ids,
            architecture,
        };
        check_sizes(&config)?;
        Ok(config)
    }

    /// The DeepSeek part, if this is a DeepSeek model.
    pub fn deepseek(&self) -> Option<&DeepseekConfig> {
        match &self.architecture {
            Architecture::Deepseek(d) => Some(d),
            Architecture::Llama(_) => None,
        }
    }

    /// The Qwen2 / Llama / Qwen3 part, if this is one of those.
    pub fn llama(&self) -> Option<&LlamaConfig> {
        match &self.architecture {
            Architecture::Llama(l) => Some(l),
            Architecture::Deepseek(_) => None,
        }
    }
}

impl DeepseekConfig {
    /// Width of one head's query/key (`qk_nope_head_dim + qk_rope_head_dim`).
    pub fn qk_head_dim(&self) -> usize {
        self.qk_nope_head_dim + self.qk_rope_head_dim
    }

    /// Whether decoder layer `layer` uses routed experts (DeepSeek's rule).
    pub fn is_moe_layer(&self, layer: usize) -> bool {
        self.moe.is_some()
            && layer >= self.first_k_dense_replace
            && layer.is_multiple_of(self.moe_layer_freq)
    }

    /// The attention softmax scale: `qk_head_dim^-0.5`, times `mscale^2` under YaRN.
    pub fn softmax_scale(&self) -> f32 {
        let mut scale = (self.qk_head_dim() as f64).powf(-0.5);
        if let Some(y) = &self.rope_scaling {
            if y.mscale_all_dim != 0.0 {
                let m = yarn_get_mscale(y.factor, y.mscale_all_dim);
                scale *= m * m;
            }
        }
        scale as f32
    }
}

impl LlamaConfig {
    /// The attention softmax scale, `head_dim^-0.5` (YaRN's factor is in the cos/sin).
    pub fn softmax_scale(&self) -> f32 {
        (self.head_dim as f64).powf(-0.5) as f32
    }
}

/// YaRN's attention temperature: `0.1 * mscale * ln(factor) + 1` (1 when not extending).
pub(crate) fn yarn_get_mscale(factor: f64, mscale: f64) -> f64 {
    if factor <= 1.0 {
        1.0
    } else {
        0.1 * mscale * factor.ln() + 1.0
    }
}

fn parse_deepseek(
    f: &Fields<'_>,
    rope: &RopeSource<'_>,
    v3: bool,
    heads: usize,
) -> Result<DeepseekConfig> {
    check_silu(f)?;
    // transformers: q_a_proj, kv_a_proj_with_mqa and o_proj take `attention_bias`; V2's dense
    // MLPs (Llama's) take `mlp_bias`, V3's never have one.
    if f.bool_opt("attention_bias")? == Some(true) {
        return Err(Error::config(
            "attention_bias",
            "biased attention projections are not supported",
        ));
    }
    if !v3 && f.bool_opt("mlp_bias")? == Some(true) {
        return Err(Error::config("mlp_bias", "biased MLPs are not supported"));
    }
    // V3's `rope_interleave: false` rotates halves instead of pairs (V2 always interleaves).
    if v3 && f.bool_opt("rope_interleave")? == Some(false) {
        return Err(Error::config(
            "rope_interleave",
            "only interleaved RoPE (the layout DeepSeek checkpoints use) is supported",
        ));
    }
    // MLA expands one key and value per query head; transformers would repeat them
    // num_attention_heads / num_key_value_heads times.
    if let Some(n) = f.usize_opt("num_key_value_heads")? {
        if n != heads {
            return Err(Error::config(
                "num_key_value_heads",
                format!("must equal num_attention_heads {heads} for MLA, found {n}"),
            ));
        }
    }
    let q_lora_rank = f.usize_opt("q_lora_rank")?;
    if q_lora_rank == Some(0) {
        return Err(Error::config("q_lora_rank", "must be null or > 0, found 0"));
    }
    let qk_rope_head_dim = f.positive("qk_rope_head_dim")?;
    if !qk_rope_head_dim.is_multiple_of(2) {
        return Err(Error::config(
            "qk_rope_head_dim",
            format!("must be even, found {qk_rope_head_dim}"),
        ));
    }
    let rope_scaling = match rope.kind()? {
        None | Some("default") => None,
        Some("yarn") => Some(rope.yarn(4096, true)?),
        Some(other) => return Err(rope.unsupported(other, "DeepSeek models", "yarn, default")),
    };
    let moe = parse_moe(f, v3)?;
    let moe_layer_freq = f.usize_opt("moe_layer_freq")?.unwrap_or(1);
    if moe_layer_freq == 0 {
        return Err(Error::config("moe_layer_freq", "must be > 0, found 0"));
    }
    Ok(DeepseekConfig {
        q_lora_rank,
        kv_lora_rank: f.positive("kv_lora_rank")?,
        qk_nope_head_dim: f.positive("qk_nope_head_dim")?,
        qk_rope_head_dim,
        v_head_dim: f.positive("v_head_dim")?,
        rope_scaling,
        moe,
        first_k_dense_replace: f.usize_opt("first_k_dense_replace")?.unwrap_or(0),
        moe_layer_freq,
        num_nextn_predict_layers: f.usize_opt("num_nextn_predict_layers")?.unwrap_or(0),
    })
}

fn parse_llama(
    f: &Fields<'_>,
    rope: &RopeSource<'_>,
    model_type: ModelType,
    hidden_size: usize,
    heads: usize,
    layers: usize,
    max_position_embeddings: usize,
) -> Result<LlamaConfig> {
    let qwen = matches!(model_type, ModelType::Qwen2 | ModelType::Qwen3);
    // transformers: Qwen2/Qwen3 default to 32 KV heads when the key is absent and to
    // `num_attention_heads` when it is null; Llama to `num_attention_heads` either way.
    let num_key_value_heads = match f.usize_opt("num_key_value_heads")? {
        Some(n) => n,
        None if qwen && !f.map.contains_key("num_key_value_heads") => 32,
        None => heads,
    };
    if num_key_value_heads == 0 || !heads.is_multiple_of(num_key_value_heads) {
        return Err(Error::config(
            "num_key_value_heads",
            format!("must divide num_attention_heads {heads}, found {num_key_value_heads}"),
        ));
    }
    let head_dim = match f.usize_opt("head_dim")? {
        Some(d) => d,
        None if model_type == ModelType::Qwen3 => 128,
        None => hidden_size / heads,
    };
    if head_dim == 0 || !head_dim.is_multiple_of(2) {
        return Err(Error::config(
            "head_dim",
            format!("must be even and > 0, found {head_dim}"),
        ));
    }
    check_silu(f)?;
    if f.bool_opt("mlp_bias")? == Some(true) {
        return Err(Error::config("mlp_bias", "biased MLPs are not supported"));
    }
    let partial = match rope.params {
        Some((p, _)) => Fields { map: p }.f64_opt("partial_rotary_factor")?,
        None => None,
    };
    if let Some(x) = partial.or(f.f64_opt("partial_rotary_factor")?) {
        if x != 1.0 {
            return Err(Error::config(
                "partial_rotary_factor",
                format!("partial rotary embeddings are not supported, found {x}"),
            ));
        }
    }
    if qwen {
        check_no_sliding_window(f, layers)?;
    }
    let rope_scaling = match rope.kind()? {
        None | Some("default") => None,
        Some("yarn") => Some(RopeScaling::Yarn(
            rope.yarn(max_position_embeddings, false)?,
        )),
        Some("llama3") => Some(RopeScaling::Llama3(rope.llama3(max_position_embeddings)?)),
        Some(other) => {
            return Err(rope.unsupported(
                other,
                &format!("{} models", model_type.as_str()),
                "default, llama3, yarn",
            ))
        }
    };
    let attention_bias = f.bool_opt("attention_bias")?.unwrap_or(false);
    Ok(LlamaConfig {
        num_key_value_heads,
        head_dim,
        rope_scaling,
        // transformers' Qwen2 hard-codes q/k/v biases and no o_proj bias.
        qkv_bias: model_type == ModelType::Qwen2 || attention_bias,
        o_bias: model_type != ModelType::Qwen2 && attention_bias,
        qk_norm: model_type == ModelType::Qwen3,
    })
}

/// Every family's MLP is SwiGLU: `hidden_act` must be SiLU (`swish` is transformers' alias).
fn check_silu(f: &Fields<'_>) -> Result<()> {
    match f.str_opt("hidden_act")? {
        None | Some("silu") | Some("swish") => Ok(()),
        Some(other) => Err(Error::config(
            "hidden_act",
            format!("unsupported value {other:?} (supported: silu)"),
        )),
    }
}

/// The factors of one size the model forms from the config: (field or sum of fields, value).
type Factors<'a> = &'a [(&'a str, usize)];

/// Every weight matrix and the full-context cache the config implies: their sizes in bytes
/// must be representable, so no shape arithmetic downstream (loader, model, error messages)
/// can wrap. The first factor names the culprit field.
fn check_sizes(c: &Config) -> Result<()> {
    let sum = |a: (&str, usize), b: (&str, usize)| -> Result<usize> {
        a.1.checked_add(b.1).ok_or_else(|| {
            Error::config(a.0, format!("{} {} + {} {} overflows", a.0, a.1, b.0, b.1))
        })
    };
    let (vocab, hidden, heads) = (c.vocab_size, c.hidden_size, c.num_attention_heads);
    let (layers, context) = (c.num_hidden_layers, c.max_position_embeddings);
    let mut products: Vec<Vec<(&str, usize)>> = vec![
        vec![("vocab_size", vocab), ("hidden_size", hidden)],
        vec![
            ("intermediate_size", c.intermediate_size),
            ("hidden_size", hidden),
        ],
    ];
    match &c.architecture {
        Architecture::Deepseek(d) => {
            let qk = sum(
                ("qk_nope_head_dim", d.qk_nope_head_dim),
                ("qk_rope_head_dim", d.qk_rope_head_dim),
            )?;
            let kv_a = sum(
                ("kv_lora_rank", d.kv_lora_rank),
                ("qk_rope_head_dim", d.qk_rope_head_dim),
            )?;
            let kv_b = sum(
                ("qk_nope_head_dim", d.qk_nope_head_dim),
                ("v_head_dim", d.v_head_dim),
            )?;
            let q_in = match d.q_lora_rank {
                Some(q) => ("q_lora_rank", q),
                None => ("hidden_size", hidden),
            };
            products.extend([
                vec![("num_attention_heads", heads), ("qk_head_dim", qk), q_in],
                vec![
                    ("hidden_size", hidden),
                    ("kv_lora_rank + qk_rope_head_dim", kv_a),
                ],
                vec![
                    ("num_attention_heads", heads),
                    ("qk_nope_head_dim + v_head_dim", kv_b),
                    ("kv_lora_rank", d.kv_lora_rank),
                ],
                vec![
                    ("num_attention_heads", heads),
                    ("v_head_dim", d.v_head_dim),
                    ("hidden_size", hidden),
                ],
                vec![
                    ("max_position_embeddings", context),
                    ("num_hidden_layers", layers),
                    ("kv_lora_rank + qk_rope_head_dim", kv_a),
                ],
            ]);
            if let Some(q) = d.q_lora_rank {
                products.push(vec![("q_lora_rank", q), ("hidden_size", hidden)]);
            }
            if let Some(m) = &d.moe {
                products.extend([
                    vec![
                        ("n_routed_experts", m.n_routed_experts),
                        ("moe_intermediate_size", m.moe_intermediate_size),
                        ("hidden_size", hidden),
                    ],
                    vec![
                        ("n_shared_experts", m.n_shared_experts),
                        ("moe_intermediate_size", m.moe_intermediate_size),
                        ("hidden_size", hidden),
                    ],
                ]);
            }
        }
        Architecture::Llama(l) => products.extend([
            vec![
                ("num_attention_heads", heads),
                ("head_dim", l.head_dim),
                ("hidden_size", hidden),
            ],
            vec![
                ("num_key_value_heads", l.num_key_value_heads),
                ("head_dim", l.head_dim),
                ("hidden_size", hidden),
            ],
            vec![
                ("max_position_embeddings", context),
                ("num_hidden_layers", layers),
                ("num_key_value_heads", l.num_key_value_heads),
                ("head_dim", l.head_dim),
                ("2 (K and V)", 2),
            ],
        ]),
    }
    for factors in &products {
        check_product(factors)?;
    }
    Ok(())
}

/// The product of `factors` as float32 bytes fits in `isize` (Rust's limit on one allocation).
fn check_product(factors: Factors<'_>) -> Result<()> {
    let bytes = factors
        .iter()
        .try_fold(4usize, |acc, &(_, n)| acc.checked_mul(n))
        .filter(|&b| b <= isize::MAX as usize);
    if bytes.is_none() {
        let spelled: Vec<String> = factors.iter().map(|(k, n)| format!("{k} {n}")).collect();
        return Err(Error::config(
            factors[0].0,
            format!("{} x 4 bytes does not fit in memory", spelled.join(" x ")),
        ));
    }
    Ok(())
}

/// Qwen2/Qwen3 slide the attention window on layers `>= max_window_layers` when
/// `use_sliding_window` is true (or on the layers `layer_types` marks). We attend to the full
/// context only, so refuse rather than differ; `sliding_window` alone is ignored, as
/// transformers does.
fn check_no_sliding_window(f: &Fields<'_>, layers: usize) -> Result<()> {
    if f.bool_opt("use_sliding_window")? != Some(true) {
        return Ok(());
    }
    let sliding = match f.get("layer_types") {
        Some(Value::Array(types)) => types.iter().any(|t| t.as_str() != Some("full_attention")),
        Some(v) => {
            return Err(Error::config(
                "layer_types",
                format!("expected a list of strings, found {v}"),
            ))
        }
        // An absent `sliding_window` means transformers' default 4096; only null turns it off.
        None => {
            !matches!(f.map.get("sliding_window"), Some(Value::Null))
                && f.usize_opt("max_window_layers")?.unwrap_or(28) < layers
        }
    };
    if sliding {
        return Err(Error::config(
            "use_sliding_window",
            "sliding-window attention is not supported (set use_sliding_window to false)",
        ));
    }
    Ok(())
}

/// Where the RoPE settings are: transformers 5 folds `rope_theta` and the scaling into
/// `rope_parameters`; the Hub form has top-level `rope_theta` and `rope_scaling`.
struct RopeSource<'a> {
    theta: f64,
    /// The scaling object and the name of the field it came from.
    params: Option<(&'a Map<String, Value>, &'static str)>,
}

impl<'a> RopeSource<'a> {
    fn read(f: &Fields<'a>) -> Result<Self> {
        let (params, theta) = match f.get("rope_parameters") {
            Some(Value::Object(p)) => {
                let pf = Fields { map: p };
                let theta = pf.f64_opt("rope_theta")?.or(f.f64_opt("rope_theta")?);
                (Some((p, "rope_parameters")), theta)
            }
            Some(v) => {
                return Err(Error::config(
                    "rope_parameters",
                    format!("expected an object, found {v}"),
                ))
            }
            None => match f.get("rope_scaling") {
                Some(Value::Object(p)) => (Some((p, "rope_scaling")), f.f64_opt("rope_theta")?),
                Some(v) => {
                    return Err(Error::config(
                        "rope_scaling",
                        format!("expected an object or null, found {v}"),
                    ))
                }
                None => (None, f.f64_opt("rope_theta")?),
            },
        };
        let theta = theta.unwrap_or(10000.0);
        if theta <= 0.0 {
            return Err(Error::config(
                "rope_theta",
                format!("must be > 0, found {theta}"),
            ));
        }
        Ok(RopeSource { theta, params })
    }

    /// The scaling type (`rope_type`, or the older `type`), if any.
    fn kind(&self) -> Result<Option<&'a str>> {
        let Some((p, _)) = self.params else {
            return Ok(None);
        };
        let pf = Fields { map: p };
        Ok(pf.str_opt("rope_type")?.or(pf.str_opt("type")?))
    }

    fn unsupported(&self, kind: &str, models: &str, supported: &str) -> Error {
        let (p, field) = self
            .params
            .expect("a scaling type comes from a scaling object");
        let key = if p.contains_key("rope_type") {
            "rope_type"
        } else {
            "type"
        };
        Error::config(
            &format!("{field}.{key}"),
            format!("unsupported rope scaling {kind:?} for {models} (supported: {supported})"),
        )
    }

    /// A number of the scaling object, its errors naming `field.key`.
    fn num(&self, key: &str, default: Option<f64>) -> Result<f64> {
        let (p, field) = self.params.expect("called for a scaling object");
        let name = format!("{field}.{key}");
        Fields { map: p }
            .f64_opt(key)
            .map_err(|e| match e {
                Error::Config { message, .. } => Error::config(&name, message),
                e => e,
            })?
            .or(default)
            .ok_or_else(|| Error::config(&name, "missing"))
    }

    fn name(&self, key: &str) -> String {
        let (_, field) = self.params.expect("called for a scaling object");
        format!("{field}.{key}")
    }

    fn factor(&self) -> Result<f64> {
        let factor = self.num("factor", None)?;
        if factor < 1.0 {
            return Err(Error::config(
                &self.name("factor"),
                format!("must be >= 1, found {factor}"),
            ));
        }
        Ok(factor)
    }

    fn original_max_position_embeddings(&self, default: usize) -> Result<usize> {
        let orig = self.num("original_max_position_embeddings", Some(default as f64))?;
        if orig < 1.0 || orig.fract() != 0.0 {
            return Err(Error::config(
                &self.name("original_max_position_embeddings"),
                format!("must be a positive integer, found {orig}"),
            ));
        }
        Ok(orig as usize)
    }

    /// YaRN; `deepseek` selects DeepSeek's defaults and cos/sin rule, else transformers' (with
    /// `attn_factor` applied, see [`Config::from_json_str`]).
    fn yarn(&self, orig_default: usize, deepseek: bool) -> Result<Yarn> {
        let (p, _) = self.params.expect("called for a scaling object");
        let pf = Fields { map: p };
        let factor = self.factor()?;
        let has = |k: &str| pf.get(k).is_some();
        let (mscale, mscale_all_dim) = (
            self.num("mscale", Some(if deepseek { 1.0 } else { 0.0 }))?,
            self.num("mscale_all_dim", Some(0.0))?,
        );
        let attention_factor = if deepseek {
            yarn_get_mscale(factor, mscale) / yarn_get_mscale(factor, mscale_all_dim)
        } else {
            let base = if has("attention_factor") {
                self.num("attention_factor", None)?
            } else if mscale != 0.0 && mscale_all_dim != 0.0 {
                yarn_get_mscale(factor, mscale) / yarn_get_mscale(factor, mscale_all_dim)
            } else {
                yarn_get_mscale(factor, 1.0)
            };
            base * self.num("attn_factor", Some(1.0))?
        };
        let truncate = pf
            .bool_opt("truncate")
            .map_err(|e| match e {
                Error::Config { message, .. } => Error::config(&self.name("truncate"), message),
                e => e,
            })?
            .unwrap_or(true);
        let yarn = Yarn {
            factor,
            original_max_position_embeddings: self
                .original_max_position_embeddings(orig_default)?,
            beta_fast: self.num("beta_fast", Some(32.0))?,
            beta_slow: self.num("beta_slow", Some(1.0))?,
            mscale,
            mscale_all_dim,
            truncate,
            attention_factor,
        };
        if yarn.beta_fast <= 0.0 || yarn.beta_slow <= 0.0 {
            return Err(Error::config(
                &self.name("beta_fast"),
                "beta_fast and beta_slow must be > 0",
            ));
        }
        Ok(yarn)
    }

    fn llama3(&self, max_position_embeddings: usize) -> Result<Llama3Scaling> {
        let s = Llama3Scaling {
            factor: self.factor()?,
            low_freq_factor: self.num("low_freq_factor", None)?,
            high_freq_factor: self.num("high_freq_factor", None)?,
            original_max_position_embeddings: self
                .original_max_position_embeddings(max_position_embeddings)?,
        };
        if !(s.low_freq_factor > 0.0 && s.high_freq_factor > s.low_freq_factor) {
            return Err(Error::config(
                &self.name("high_freq_factor"),
                format!(
                    "need 0 < low_freq_factor < high_freq_factor, found {} and {}",
                    s.low_freq_factor, s.high_freq_factor
                ),
            ));
        }
        Ok(s)
    }
}

fn parse_moe(f: &Fields<'_>, v3: bool) -> Result<Option<MoeConfig>> {
    let Some(n_routed_experts) = f.usize_opt("n_routed_experts")? else {
        return Ok(None);
    };
    if n_routed_experts == 0 {
        return Err(Error::config(
            "n_routed_experts",
            "must be null or > 0, found 0",
        ));
    }
    let topk_method =
        match f
            .str_opt("topk_method")?
            .unwrap_or(if v3 { "noaux_tc" } else { "greedy" })
        {
            "greedy" => TopkMethod::Greedy,
            "group_limited_greedy" => TopkMethod::GroupLimitedGreedy,
            "noaux_tc" => TopkMethod::NoauxTc,
            other => {
                return Err(Error::config(
                    "topk_method",
                    format!(
                "unsupported value {other:?} (supported: greedy, group_limited_greedy, noaux_tc)"
            ),
                ))
            }
        };
    let scoring_func =
        match f
            .str_opt("scoring_func")?
            .unwrap_or(if v3 { "sigmoid" } else { "softmax" })
        {
            "softmax" => ScoringFunc::Softmax,
            "sigmoid" => ScoringFunc::Sigmoid,
            other => {
                return Err(Error::config(
                    "scoring_func",
                    format!("unsupported value {other:?} (supported: softmax, sigmoid)"),
                ))
            }
        };
    let k = f.positive("num_experts_per_tok")?;
    let n_group = f.usize_opt("n_group")?.unwrap_or(1);
    let topk_group = f.usize_opt("topk_group")?.unwrap_or(1);
    let grouped = topk_method != TopkMethod::Greedy;
    if grouped {
        if n_group == 0 || !n_routed_experts.is_multiple_of(n_group) {
            return Err(Error::config(
                "n_group",
                format!("must divide n_routed_experts {n_routed_experts}, found {n_group}"),
            ));
        }
        if topk_group == 0 || topk_group > n_group {
            return Err(Error::config(
                "topk_group",
                format!("must be in 1..={n_group}, found {topk_group}"),
            ));
        }
        if topk_method == TopkMethod::NoauxTc && n_routed_experts / n_group < 2 {
            return Err(Error::config(
                "n_group",
                "noaux_tc scores each group by its top 2 experts: groups need >= 2 experts",
            ));
        }
    }
    let reachable = if grouped {
        topk_group * (n_routed_experts / n_group)
    } else {
        n_routed_experts
    };
    if k > reachable {
        return Err(Error::config(
            "num_experts_per_tok",
            format!("{k} exceeds the {reachable} experts the router can reach"),
        ));
    }
    let routed_scaling_factor = f.f64_opt("routed_scaling_factor")?.unwrap_or(1.0);
    Ok(Some(MoeConfig {
        n_routed_experts,
        n_shared_experts: f.usize_opt("n_shared_experts")?.unwrap_or(0),
        num_experts_per_tok: k,
        moe_intermediate_size: f.positive("moe_intermediate_size")?,
        topk_method,
        scoring_func,
        n_group,
        topk_group,
        norm_topk_prob: f.bool_opt("norm_topk_prob")?.unwrap_or(v3),
        routed_scaling_factor: routed_scaling_factor as f32,
    }))
}

fn parse_quantization(f: &Fields<'_>) -> Result<Option<Fp8Quantization>> {
    let Some(q) = f.get("quantization_config") else {
        return Ok(None);
    };
    let q = q.as_object().ok_or_else(|| {
        Error::config(
            "quantization_config",
            format!("expected an object, found {q}"),
        )
    })?;
    let qf = Fields { map: q };
    match qf.str_opt("quant_method")? {
        Some("fp8") => {}
        other => {
            return Err(Error::config(
                "quantization_config.quant_method",
                format!("unsupported value {other:?} (supported: fp8)"),
            ))
        }
    }
    // Static schemes carry activation scales we would ignore; R1's is dynamic.
    match qf.str_opt("activation_scheme")? {
        None | Some("dynamic") => {}
        Some(other) => {
            return Err(Error::config(
                "quantization_config.activation_scheme",
                format!("unsupported value {other:?} (supported: dynamic)"),
            ))
        }
    }
    if let Some(fmt) = qf.str_opt("fmt")? {
        if fmt != "e4m3" {
            return Err(Error::config(
                "quantization_config.fmt",
                format!("unsupported value {fmt:?} (supported: e4m3)"),
            ));
        }
    }
    let block = match qf.get("weight_block_size") {
        Some(Value::Array(v)) if v.len() == 2 => {
            let dims: Option<Vec<usize>> = v
                .iter()
                .map(|x| x.as_u64().filter(|&n| n > 0).map(|n| n as usize))
                .collect();
            dims.ok_or_else(|| {
                Error::config(
                    "quantization_config.weight_block_size",
                    "expected two positive integers",
                )
            })?
        }
        Some(v) => {
            return Err(Error::config(
                "quantization_config.weight_block_size",
                format!("expected [rows, cols], found {v}"),
            ))
        }
        None => {
            return Err(Error::config(
                "quantization_config.weight_block_size",
                "missing (per-tensor FP8 is not supported)",
            ))
        }
    };
    Ok(Some(Fp8Quantization {
        weight_block_size: [block[0], block[1]],
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v3_json() -> serde_json::Value {
        serde_json::json!({
            "model_type": "deepseek_v3", "vocab_size": 100, "hidden_size": 16, "intermediate_size": 32,
            "moe_intermediate_size": 8, "num_hidden_layers": 2, "num_attention_heads": 2,
            "q_lora_rank": 8, "kv_lora_rank": 8, "qk_nope_head_dim": 4, "qk_rope_head_dim": 4,
            "v_head_dim": 4, "n_routed_experts": 8, "num_experts_per_tok": 2, "n_group": 4,
            "topk_group": 2, "n_shared_experts": 1, "first_k_dense_replace": 1,
            "max_position_embeddings": 64, "rope_theta": 10000,
            "rope_scaling": {"type": "yarn", "factor": 40, "original_max_position_embeddings": 4096,
                             "beta_fast": 32, "beta_slow": 1, "mscale": 1.0, "mscale_all_dim": 1.0},
            "eos_token_id": 1, "bos_token_id": 0
        })
    }

    fn parse(v: &serde_json::Value) -> Result<Config> {
        Config::from_json_str(&v.to_string())
    }

    #[test]
    fn hub_form_parses_with_v3_defaults() {
        let c = parse(&v3_json()).unwrap();
        let c = c.deepseek().unwrap();
        let moe = c.moe.as_ref().unwrap();
        assert_eq!(moe.topk_method, TopkMethod::NoauxTc);
        assert_eq!(moe.scoring_func, ScoringFunc::Sigmoid);
        assert!(moe.norm_topk_prob);
        assert!(!c.is_moe_layer(0) && c.is_moe_layer(1));
        let y = c.rope_scaling.as_ref().unwrap();
        assert_eq!(y.factor, 40.0);
        // As R1: qk_head_dim^-0.5 * (0.1 ln 40 + 1)^2.
        let m = 0.1 * 40f64.ln() + 1.0;
        assert!((c.softmax_scale() as f64 - m * m / 8f64.sqrt()).abs() < 1e-6);
    }

    #[test]
    fn transformers5_form_parses_the_same() {
        let mut v = v3_json();
        let o = v.as_object_mut().unwrap();
        let mut rp = o.remove("rope_scaling").unwrap();
        rp.as_object_mut().unwrap().remove("type");
        rp["rope_type"] = "yarn".into();
        rp["rope_theta"] = o.remove("rope_theta").unwrap();
        o.insert("rope_parameters".into(), rp);
        assert_eq!(parse(&v).unwrap(), parse(&v3_json()).unwrap());
    }

    #[test]
    fn errors_name_the_field() {
        let cases: Vec<(&str, serde_json::Value, &str)> = vec![
            ("model_type", "llama4".into(), "llama4"),
            ("hidden_size", "wide".into(), "hidden_size"),
            ("hidden_size", 0.into(), "hidden_size"),
            ("topk_method", "best".into(), "topk_method"),
            ("scoring_func", "relu".into(), "scoring_func"),
            ("n_group", 3.into(), "n_group"),
            ("topk_group", 5.into(), "topk_group"),
            ("num_experts_per_tok", 7.into(), "num_experts_per_tok"),
            ("qk_rope_head_dim", 5.into(), "qk_rope_head_dim"),
            (
                "rope_scaling",
                serde_json::json!({"type": "dynamic", "factor": 2}),
                "rope_scaling.type",
            ),
            (
                "quantization_config",
                serde_json::json!({"quant_method": "gptq"}),
                "quant_method",
            ),
            ("eos_token_id", "x".into(), "eos_token_id"),
        ];
        for (field, value, needle) in cases {
            let mut v = v3_json();
            v[field] = value;
            let err = parse(&v).unwrap_err().to_string();
            assert!(err.contains(needle), "{field}: {err}");
        }
        let mut v = v3_json();
        v.as_object_mut().unwrap().remove("kv_lora_rank");
        assert!(parse(&v).unwrap_err().to_string().contains("kv_lora_rank"));
        assert!(matches!(
            Config::from_json_str("{"),
            Err(Error::Json { .. })
        ));
    }

    /// Fields transformers honours that would change DeepSeek's math (or its meaning) if we
    /// ignored them.
    #[test]
    fn deepseek_fields_that_change_the_math_are_validated() {
        let cases: Vec<(&str, &str, serde_json::Value, &str)> = vec![
            ("deepseek_v3", "hidden_act", "gelu".into(), "hidden_act"),
            ("deepseek_v2", "hidden_act", "relu".into(), "hidden_act"),
            (
                "deepseek_v3",
                "attention_bias",
                true.into(),
                "attention_bias",
            ),
            (
                "deepseek_v2",
                "attention_bias",
                true.into(),
                "attention_bias",
            ),
            ("deepseek_v2", "mlp_bias", true.into(), "mlp_bias"),
            (
                "deepseek_v3",
                "rope_interleave",
                false.into(),
                "rope_interleave",
            ),
            (
                "deepseek_v3",
                "num_key_value_heads",
                1.into(),
                "num_key_value_heads",
            ),
            (
                "deepseek_v3",
                "quantization_config",
                serde_json::json!({"quant_method": "fp8", "activation_scheme": "static",
                                   "weight_block_size": [128, 128]}),
                "quantization_config.activation_scheme",
            ),
            ("deepseek_v3", "eos_token_id", 100.into(), "eos_token_id"),
            (
                "deepseek_v3",
                "eos_token_id",
                serde_json::json!([1, 100]),
                "eos_token_id",
            ),
            ("deepseek_v2", "bos_token_id", 512.into(), "bos_token_id"),
            // Products of sizes that cannot fit in memory must not wrap.
            (
                "deepseek_v3",
                "vocab_size",
                (1u64 << 62).into(),
                "vocab_size",
            ),
            (
                "deepseek_v3",
                "num_attention_heads",
                (1u64 << 61).into(),
                "num_attention_heads",
            ),
        ];
        for (model_type, field, value, needle) in cases {
            let mut v = v3_json();
            v["model_type"] = model_type.into();
            v[field] = value;
            let err = parse(&v).unwrap_err();
            assert!(
                matches!(&err, Error::Config { field, .. } if field == needle),
                "{model_type} {field}: {err}"
            );
        }
        // What the checkpoints ship is accepted: silu (or its alias swish), no biases,
        // interleaved RoPE, one KV head per query head, dynamic FP8 activations.
        let mut v = v3_json();
        v["hidden_act"] = "swish".into();
        v["attention_bias"] = false.into();
        v["mlp_bias"] = false.into();
        v["rope_interleave"] = true.into();
        v["num_key_value_heads"] = 2.into();
        v["quantization_config"] = serde_json::json!({"quant_method": "fp8",
            "activation_scheme": "dynamic", "weight_block_size": [128, 128]});
        assert!(parse(&v).is_ok());
        // transformers' DeepSeek-V2 always interleaves and has no such field.
        v["model_type"] = "deepseek_v2".into();
        v["rope_interleave"] = false.into();
        assert!(parse(&v).is_ok());
    }

    #[test]
    fn eos_list_and_fp8_block() {
        let mut v = v3_json();
        v["eos_token_id"] = serde_json::json!([1, 7]);
        v["quantization_config"] = serde_json::json!({"quant_method": "fp8", "fmt": "e4m3",
            "activation_scheme": "dynamic", "weight_block_size": [128, 128]});
        let c = parse(&v).unwrap();
        assert_eq!(c.eos_token_ids, vec![1, 7]);
        assert_eq!(c.quantization.unwrap().weight_block_size, [128, 128]);
    }

    fn llama_json(model_type: &str) -> serde_json::Value {
        serde_json::json!({
            "model_type": model_type, "vocab_size": 100, "hidden_size": 64, "intermediate_size": 96,
            "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
            "max_position_embeddings": 256, "rope_theta": 10000.0, "rms_norm_eps": 1e-6,
            "sliding_window": 4096, "use_sliding_window": false, "max_window_layers": 1,
            "tie_word_embeddings": false, "bos_token_id": 1, "eos_token_id": [2, 3]
        })
    }

    #[test]
    fn llama_family_defaults_follow_transformers() {
        let c = parse(&llama_json("qwen2")).unwrap();
        let l = c.llama().unwrap();
        assert_eq!(
            (c.model_type, l.head_dim, l.num_key_value_heads),
            (ModelType::Qwen2, 16, 2)
        );
        assert!(l.qkv_bias && !l.o_bias && !l.qk_norm && l.rope_scaling.is_none());
        assert_eq!(c.eos_token_ids, vec![2, 3]);

        let mut v = llama_json("qwen3");
        v.as_object_mut().unwrap().remove("num_key_value_heads");
        // Qwen3's KV heads default to 32 when absent: not a divisor of 4 heads.
        assert!(parse(&v).is_err());
        v["num_key_value_heads"] = serde_json::Value::Null;
        let l = parse(&v).unwrap().llama().cloned().unwrap();
        assert_eq!((l.head_dim, l.num_key_value_heads), (128, 4));
        assert!(l.qk_norm && !l.qkv_bias);

        let mut v = llama_json("llama");
        v["attention_bias"] = true.into();
        let l = parse(&v).unwrap().llama().cloned().unwrap();
        assert!(l.qkv_bias && l.o_bias);
    }

    #[test]
    fn qwen_key_value_heads_default_to_32_when_absent() {
        let mut v = llama_json("qwen2");
        v.as_object_mut().unwrap().remove("num_key_value_heads");
        v["num_attention_heads"] = 64.into();
        v["head_dim"] = 16.into();
        assert_eq!(parse(&v).unwrap().llama().unwrap().num_key_value_heads, 32);
        let mut v = llama_json("llama");
        v.as_object_mut().unwrap().remove("num_key_value_heads");
        assert_eq!(parse(&v).unwrap().llama().unwrap().num_key_value_heads, 4);
    }

    #[test]
    fn llama3_scaling_in_both_forms() {
        let mut v = llama_json("llama");
        v["rope_scaling"] = serde_json::json!({"rope_type": "llama3", "factor": 8.0,
            "low_freq_factor": 1.0, "high_freq_factor": 4.0, "original_max_position_embeddings": 64});
        let c = parse(&v).unwrap();
        let want = RopeScaling::Llama3(Llama3Scaling {
            factor: 8.0,
            low_freq_factor: 1.0,
            high_freq_factor: 4.0,
            original_max_position_embeddings: 64,
        });
        assert_eq!(c.llama().unwrap().rope_scaling, Some(want));
        let o = v.as_object_mut().unwrap();
        let mut rp = o.remove("rope_scaling").unwrap();
        rp["rope_theta"] = o.remove("rope_theta").unwrap();
        o.insert("rope_parameters".into(), rp);
        assert_eq!(parse(&v).unwrap(), c);
    }

    #[test]
    fn qwen3_yarn_applies_attn_factor() {
        let mut v = llama_json("qwen3");
        v["rope_scaling"] = serde_json::json!({"rope_type": "yarn", "factor": 4.0,
            "original_max_position_embeddings": 64, "attn_factor": 0.8});
        let c = parse(&v).unwrap();
        let Some(RopeScaling::Yarn(y)) = &c.llama().unwrap().rope_scaling else {
            panic!("not yarn")
        };
        assert!((y.attention_factor - 0.8 * (0.1 * 4f64.ln() + 1.0)).abs() < 1e-12);
        assert_eq!((y.beta_fast, y.beta_slow, y.truncate), (32.0, 1.0, true));
        // transformers' own `attention_factor` replaces the default temperature.
        v["rope_scaling"]["attention_factor"] = 1.5.into();
        let c = parse(&v).unwrap();
        let Some(RopeScaling::Yarn(y)) = &c.llama().unwrap().rope_scaling else {
            panic!("not yarn")
        };
        assert!((y.attention_factor - 1.2).abs() < 1e-12);
    }

    #[test]
    fn llama_family_errors_name_the_field() {
        let cases: Vec<(&str, &str, serde_json::Value, &str)> = vec![
            (
                "qwen2",
                "use_sliding_window",
                true.into(),
                "use_sliding_window",
            ),
            (
                "qwen3",
                "use_sliding_window",
                true.into(),
                "use_sliding_window",
            ),
            (
                "llama",
                "rope_scaling",
                serde_json::json!({"rope_type": "dynamic", "factor": 2.0}),
                "rope_scaling.rope_type",
            ),
            (
                "qwen2",
                "rope_scaling",
                serde_json::json!({"type": "longrope", "factor": 2.0}),
                "rope_scaling.type",
            ),
            (
                "llama",
                "rope_scaling",
                serde_json::json!({"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0}),
                "rope_scaling.high_freq_factor",
            ),
            (
                "llama",
                "num_key_value_heads",
                3.into(),
                "num_key_value_heads",
            ),
            ("qwen3", "head_dim", 15.into(), "head_dim"),
            ("llama", "hidden_act", "gelu".into(), "hidden_act"),
            (
                "qwen2",
                "eos_token_id",
                serde_json::json!([2, 100]),
                "eos_token_id",
            ),
            ("qwen3", "bos_token_id", 100.into(), "bos_token_id"),
            (
                "llama",
                "intermediate_size",
                (1u64 << 62).into(),
                "intermediate_size",
            ),
            ("llama", "mlp_bias", true.into(), "mlp_bias"),
            (
                "qwen2",
                "partial_rotary_factor",
                0.5.into(),
                "partial_rotary_factor",
            ),
        ];
        for (model_type, field, value, needle) in cases {
            let mut v = llama_json(model_type);
            v[field] = value;
            let err = parse(&v).unwrap_err();
            assert!(
                matches!(&err, Error::Config { field, .. } if field == needle),
                "{model_type} {field}: {err}"
            );
        }
        // Sliding window on, but every layer below max_window_layers: full attention throughout.
        let mut v = llama_json("qwen2");
        v["use_sliding_window"] = true.into();
        v["max_window_layers"] = 2.into();
        assert!(parse(&v).is_ok());
        v["layer_types"] = serde_json::json!(["full_attention", "sliding_attention"]);
        assert!(parse(&v).is_err());
    }
}
