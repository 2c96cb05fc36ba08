//! A model stored as GGUF: the file (or the parts of a split file) as a [`TensorSource`], and
//! its config read from the metadata llama.cpp's converter writes.
//!
//! The metadata is translated into the fields of a Hugging Face `config.json` and validated by
//! the same code, so a GGUF model obeys exactly the rules a folder does; errors name the GGUF key.
//! Where GGUF is silent the values llama.cpp itself assumes are used (YaRN's betas 32 and 1, the
//! softmax router of old DeepSeek-V2 files).

use std::path::{Path, PathBuf};

use serde_json::{json, Map, Value as Json};

use super::build::Arrangement;
use super::gguf::{GgufFile, TensorInfo, Value};
use super::names::Naming;
use super::source::{DType, TensorSource, TensorView};
use crate::config::Config;
use crate::error::{Error, Result};
use crate::model::RopeLayout;
use crate::quant::GgmlType;
use crate::sampling::GenerationConfig;

/// A GGUF model: one file, or every part of a split one (`name-00001-of-00003.gguf`, ...).
#[derive(Debug)]
pub struct GgufModel {
    parts: Vec<GgufFile>,
}

impl GgufModel {
    /// Opens `path`, and when its metadata says it is the first of several parts, the others
    /// next to it under llama.cpp's split names.
    pub fn open(path: &Path) -> Result<Self> {
        let first = GgufFile::open(path)?;
        let count = match first.get("split.count") {
            None => 1,
            Some(v) => v
                .as_u64()
                .filter(|&n| (1..=9999).contains(&n))
                .ok_or_else(|| first.error(format!("split.count {v:?} is not in 1..=9999")))?
                as usize,
        };
        if count > 1 {
            let no = first.get("split.no").and_then(Value::as_u64);
            if no != Some(0) {
                return Err(first.error(format!(
                    "this is part {} of a split model: open its first part",
                    no.map_or("?".to_string(), |n| (n + 1).to_string())
                )));
            }
        }
        let mut parts = vec![first];
        for i in 1..count {
            let part_path = split_path(path, i, count).ok_or_else(|| {
                parts[0].error(format!(
                    "split.count is {count}, but the file name does not end in -00001-of-{count:05}.gguf"
                ))
            })?;
            let part = GgufFile::open(&part_path)?;
            if part.get("split.no").and_then(Value::as_u64) != Some(i as u64) {
                return Err(part.error(format!("expected split.no {i}")));
            }
            parts.push(part);
        }
        let mut seen = std::collections::HashSet::new();
        for part in &parts {
            for t in &part.header().tensors {
                if !seen.insert(t.name.as_str()) {
                    return Err(part.error(format!("tensor `{}` is stored twice", t.name)));
                }
            }
        }
        Ok(GgufModel { parts })
    }

    /// The part holding the metadata.
    pub fn first(&self) -> &GgufFile {
        &self.parts[0]
    }

    fn find(&self, name: &str) -> Option<(&GgufFile, &TensorInfo)> {
        self.parts
            .iter()
            .find_map(|p| p.tensor(name).map(|t| (p, t)))
    }

    /// The config its metadata describes.
    pub fn config(&self) -> Result<Config> {
        config(self)
    }

    /// The decoding defaults llama.cpp's converter copies from `generation_config.json` into
    /// `general.sampling.*`, if any; validated as that file would be.
    pub fn generation_config(&self) -> Result<Option<GenerationConfig>> {
        let keys = [
            ("general.sampling.temp", "temperature"),
            ("general.sampling.top_p", "top_p"),
            ("general.sampling.top_k", "top_k"),
            ("general.sampling.min_p", "min_p"),
            ("general.sampling.penalty_repeat", "repetition_penalty"),
        ];
        let mut out = Map::new();
        for (key, field) in keys {
            let Some(v) = self.first().get(key) else {
                continue;
            };
            let json = match (field, v.as_u64(), v.as_f64()) {
                ("top_k", Some(k), _) => json!(k),
                (_, _, Some(x)) if field != "top_k" && x.is_finite() => json!(x),
                _ => {
                    return Err(self
                        .first()
                        .error(format!("metadata `{key}` {v:?} is not a valid {field}")))
                }
            };
            out.insert(field.to_string(), json);
        }
        if out.is_empty() {
            return Ok(None);
        }
        // Sampling defaults in the file mean the model is meant to be sampled.
        out.insert("do_sample".into(), json!(true));
        GenerationConfig::from_json_str(&Json::Object(out).to_string())
            .map(Some)
            .map_err(|e| self.first().error(format!("general.sampling.*: {e}")))
    }

    /// How its weights are arranged compared with Hugging Face's.
    pub(crate) fn arrangement(&self) -> Arrangement {
        // llama.cpp's converter permutes Llama's q/k rows into interleaved RoPE pairs.
        let llama = self.arch().is_ok_and(|a| a == "llama");
        Arrangement {
            rope_layout: llama.then_some(RopeLayout::Interleaved),
        }
    }

    fn arch(&self) -> Result<&str> {
        self.first()
            .get("general.architecture")
            .and_then(Value::as_str)
            .ok_or_else(|| {
                self.first()
                    .error("metadata `general.architecture` is missing")
            })
    }
}

/// `dir/name-0000{i+1}-of-{n}.gguf` for `path` = `dir/name-00001-of-{n}.gguf`.
fn split_path(path: &Path, i: usize, count: usize) -> Option<PathBuf> {
    let file = path.file_name()?.to_str()?;
    let suffix = format!("-00001-of-{count:05}.gguf");
    let stem = file.strip_suffix(&suffix)?;
    Some(path.with_file_name(format!("{stem}-{:05}-of-{count:05}.gguf", i + 1)))
}

impl TensorSource for GgufModel {
    fn naming(&self) -> Naming {
        Naming::Gguf
    }

    fn get(&self, name: &str) -> Result<Option<TensorView>> {
        let Some((file, info)) = self.find(name) else {
            return Ok(None);
        };
        let dtype = match info.ty {
            GgmlType::F32 => DType::F32,
            GgmlType::F16 => DType::F16,
            GgmlType::BF16 => DType::BF16,
            t => DType::Ggml(t),
        };
        Ok(Some(TensorView {
            name: name.to_string(),
            dtype,
            shape: info.shape(),
            bytes: file.data(info),
        }))
    }

    fn contains(&self, name: &str) -> bool {
        self.find(name).is_some()
    }

    fn names(&self) -> Vec<String> {
        self.parts
            .iter()
            .flat_map(|p| p.header().tensors.iter().map(|t| t.name.clone()))
            .collect()
    }

    fn mapped_bytes(&self) -> usize {
        self.parts.iter().map(GgufFile::mapped_bytes).sum()
    }
}

/// Reads typed metadata of one model, remembering which GGUF key became which config field.
struct Meta<'a> {
    model: &'a GgufModel,
    arch: &'a str,
    out: Map<String, Json>,
    origin: Vec<(&'static str, String)>,
}

impl<'a> Meta<'a> {
    fn value(&self, key: &str) -> Option<&'a Value> {
        self.model.first().get(&format!("{}.{key}", self.arch))
    }

    fn bad(&self, key: &str, what: &str, v: &Value) -> Error {
        self.model.first().error(format!(
            "metadata `{}.{key}` should be {what}, found {v:?}",
            self.arch
        ))
    }

    /// Copies the integer `key` into config field `field`.
    fn int(&mut self, field: &'static str, key: &str) -> Result<Option<u64>> {
        let Some(v) = self.value(key) else {
            return Ok(None);
        };
        let n = v
            .as_u64()
            .ok_or_else(|| self.bad(key, "a non-negative integer", v))?;
        self.put(field, key, json!(n));
        Ok(Some(n))
    }

    /// Copies the number `key` into config field `field`.
    fn num(&mut self, field: &'static str, key: &str) -> Result<Option<f64>> {
        let Some(v) = self.value(key) else {
            return Ok(None);
        };
        let x = v
            .as_f64()
            .filter(|x| x.is_finite())
            .ok_or_else(|| self.bad(key, "a finite number", v))?;
        self.put(field, key, json!(x));
        Ok(Some(x))
    }

    fn put(&mut self, field: &'static str, key: &str, value: Json) {
        self.out.insert(field.to_string(), value);
        self.origin.push((field, format!("{}.{key}", self.arch)));
    }

    fn tensor_rows(&self, name: &str) -> Option<u64> {
        self.model
            .find(name)
            .and_then(|(_, t)| t.dims.get(1).copied())
    }
}

/// The config of a GGUF model, validated as `config.json` would be.
fn config(model: &GgufModel) -> Result<Config> {
    let arch = model.arch()?;
    let mut m = Meta {
        model,
        arch,
        out: Map::new(),
        origin: Vec::new(),
    };
    let model_type = match arch {
        "deepseek2" => {
            // Sigmoid gating is V3's router; old V2 files carry no gating key (softmax).
            let gating = m.value("expert_gating_func").and_then(Value::as_u64);
            match gating {
                None | Some(1) => "deepseek_v2",
                Some(2) => "deepseek_v3",
                Some(g) => {
                    return Err(model.first().error(format!(
                        "deepseek2.expert_gating_func {g} is not supported (1 softmax, 2 sigmoid)"
                    )))
                }
            }
        }
        "qwen2" | "llama" | "qwen3" => arch,
        other => {
            return Err(Error::UnsupportedArchitecture(format!(
                "{other} (GGUF general.architecture; supported: deepseek2, qwen2, llama, qwen3)"
            )))
        }
    };
    m.out.insert("model_type".into(), json!(model_type));
    m.int("num_hidden_layers", "block_count")?;
    m.int("hidden_size", "embedding_length")?;
    m.int("intermediate_size", "feed_forward_length")?;
    m.int("num_attention_heads", "attention.head_count")?;
    m.int("max_position_embeddings", "context_length")?;
    m.num("rms_norm_eps", "attention.layer_norm_rms_epsilon")?;
    m.num("rope_theta", "rope.freq_base")?;
    // The embedding's rows are the vocabulary the weights serve (the converter pads the
    // tokenizer's list to it).
    let vocab = m.tensor_rows("token_embd.weight").ok_or_else(|| {
        Error::MissingTensor("token_embd.weight (GGUF has no token embedding)".into())
    })?;
    m.out.insert("vocab_size".into(), json!(vocab));
    m.out.insert(
        "tie_word_embeddings".into(),
        json!(model.find("output.weight").is_none()),
    );
    for (field, key) in [
        ("bos_token_id", "tokenizer.ggml.bos_token_id"),
        ("eos_token_id", "tokenizer.ggml.eos_token_id"),
    ] {
        if let Some(id) = model.first().get(key).and_then(Value::as_u64) {
            m.out.insert(field.into(), json!(id));
        }
    }
    if arch == "deepseek2" {
        deepseek2(&mut m)?;
    } else {
        llama_family(&mut m)?;
    }
    rope_scaling(&mut m, arch == "deepseek2")?;
    let Meta { out, origin, .. } = m;
    Config::from_json_map(&out).map_err(|e| match e {
        Error::Config { field, message } => {
            let key = origin
                .iter()
                .rev()
                .find(|(f, _)| field.starts_with(f))
                .map_or("the metadata".to_string(), |(_, k)| format!("`{k}`"));
            model
                .first()
                .error(format!("{key} (config field `{field}`): {message}"))
        }
        other => other,
    })
}

fn deepseek2(m: &mut Meta<'_>) -> Result<()> {
    // A plain q_proj (V2-Lite) has no key, or 0: llama.cpp requires the key unless the model
    // has V2-Lite's 26/27 layers, so files made for other layer counts carry a 0.
    if m.value("attention.q_lora_rank").and_then(Value::as_u64) != Some(0) {
        m.int("q_lora_rank", "attention.q_lora_rank")?;
    }
    m.int("kv_lora_rank", "attention.kv_lora_rank")?;
    let rope = m
        .int("qk_rope_head_dim", "rope.dimension_count")?
        .unwrap_or(0);
    // Current files describe MLA as one KV head with key length kv_lora + rope and give the
    // per-head sizes in the `*_mla` keys; legacy files give the per-head sizes directly.
    let (k_key, v_key) = match m.value("attention.key_length_mla") {
        Some(_) => ("attention.key_length_mla", "attention.value_length_mla"),
        None => ("attention.key_length", "attention.value_length"),
    };
    if let Some(k) = m.value(k_key) {
        let k = k
            .as_u64()
            .ok_or_else(|| m.bad(k_key, "a non-negative integer", k))?;
        let nope = k.checked_sub(rope).filter(|&n| n > 0).ok_or_else(|| {
            m.model.first().error(format!(
                "metadata `deepseek2.{k_key}` {k} leaves no room for the {rope} RoPE dimensions"
            ))
        })?;
        m.put("qk_nope_head_dim", k_key, json!(nope));
    }
    m.int("v_head_dim", v_key)?;
    if m.int("n_routed_experts", "expert_count")?.is_some() {
        m.int("num_experts_per_tok", "expert_used_count")?;
        m.int("moe_intermediate_size", "expert_feed_forward_length")?;
        m.int("n_shared_experts", "expert_shared_count")?;
        m.int("first_k_dense_replace", "leading_dense_block_count")?;
        m.num("routed_scaling_factor", "expert_weights_scale")?;
        let norm = m
            .value("expert_weights_norm")
            .map(|v| {
                v.as_bool()
                    .ok_or_else(|| m.bad("expert_weights_norm", "a bool", v))
            })
            .transpose()?;
        m.out
            .insert("norm_topk_prob".into(), json!(norm.unwrap_or(false)));
        let groups = m.int("n_group", "expert_group_count")?.unwrap_or(1);
        m.int("topk_group", "expert_group_used_count")?;
        let v3 = m.out.get("model_type") == Some(&json!("deepseek_v3"));
        let has_bias = m
            .model
            .names()
            .iter()
            .any(|n| n.ends_with(".exp_probs_b.bias"));
        // V3 selects with the correction bias inside groups; V2 groups by the best score.
        let method = match (v3, has_bias, groups > 1) {
            (true, true, _) => "noaux_tc",
            (true, false, true) => {
                return Err(m.model.first().error(
                    "sigmoid routing with expert groups needs the exp_probs_b correction bias",
                ))
            }
            (false, _, true) => "group_limited_greedy",
            (_, _, false) => "greedy",
        };
        m.out.insert("topk_method".into(), json!(method));
        m.out.insert(
            "scoring_func".into(),
            json!(if v3 { "sigmoid" } else { "softmax" }),
        );
    }
    m.int("num_nextn_predict_layers", "nextn_predict_layers")?;
    Ok(())
}

fn llama_family(m: &mut Meta<'_>) -> Result<()> {
    m.int("num_key_value_heads", "attention.head_count_kv")?;
    match m.int("head_dim", "attention.key_length")? {
        Some(hd) => {
            if let Some(v) = m.value("attention.value_length") {
                if v.as_u64() != Some(hd) {
                    return Err(m.bad("attention.value_length", "equal to key_length", v));
                }
            }
        }
        // Absent means hidden / heads in llama.cpp (not transformers' Qwen3 default of 128).
        None => {
            let (h, n) = (m.out.get("hidden_size"), m.out.get("num_attention_heads"));
            if let (Some(h), Some(n)) = (h.and_then(Json::as_u64), n.and_then(Json::as_u64)) {
                if let Some(hd) = h.checked_div(n) {
                    m.out.insert("head_dim".into(), json!(hd));
                }
            }
        }
    }
    // Llama's o_proj/q/k/v biases come with `attention_bias`; Qwen2's q/k/v always exist.
    let biased =
        m.model.contains("blk.0.attn_q.bias") || m.model.contains("blk.0.attn_output.bias");
    if m.arch != "qwen2" {
        m.out.insert("attention_bias".into(), json!(biased));
    }
    m.out.insert("use_sliding_window".into(), json!(false));
    Ok(())
}

fn rope_scaling(m: &mut Meta<'_>, deepseek: bool) -> Result<()> {
    let Some(kind) = m.value("rope.scaling.type") else {
        return Ok(());
    };
    let kind = kind
        .as_str()
        .ok_or_else(|| m.bad("rope.scaling.type", "a string", kind))?;
    match kind {
        "none" => return Ok(()),
        "yarn" => {}
        other => {
            return Err(m.model.first().error(format!(
                "metadata `{}.rope.scaling.type` {other:?} is not supported (yarn, none)",
                m.arch
            )))
        }
    }
    let mut scaling = Map::new();
    scaling.insert("type".into(), json!("yarn"));
    let keys = [
        ("factor", "rope.scaling.factor"),
        (
            "original_max_position_embeddings",
            "rope.scaling.original_context_length",
        ),
        ("beta_fast", "rope.scaling.yarn_beta_fast"),
        ("beta_slow", "rope.scaling.yarn_beta_slow"),
    ];
    for (field, key) in keys {
        if let Some(v) = m.value(key) {
            let x = v
                .as_f64()
                .filter(|x| x.is_finite())
                .ok_or_else(|| m.bad(key, "a finite number", v))?;
            scaling.insert(field.into(), json!(x));
        }
    }
    if deepseek {
        // The converter stores 0.1 * mscale_all_dim; llama.cpp keeps the cos/sin unscaled,
        // which is DeepSeek's rule when mscale equals mscale_all_dim.
        if let Some(v) = m.value("rope.scaling.yarn_log_multiplier") {
            let x = v
                .as_f64()
                .filter(|x| x.is_finite())
                .ok_or_else(|| m.bad("rope.scaling.yarn_log_multiplier", "a finite number", v))?;
            scaling.insert("mscale_all_dim".into(), json!(x / 0.1));
            scaling.insert("mscale".into(), json!(x / 0.1));
        }
    } else if let Some(v) = m.value("rope.scaling.yarn_attn_factor") {
        let x = v
            .as_f64()
            .filter(|x| x.is_finite())
            .ok_or_else(|| m.bad("rope.scaling.yarn_attn_factor", "a finite number", v))?;
        // llama.cpp multiplies YaRN's own cos/sin factor by it, as our `attn_factor` does.
        scaling.insert("attn_factor".into(), json!(x));
    }
    m.out.insert("rope_scaling".into(), Json::Object(scaling));
    m.origin
        .push(("rope_scaling", format!("{}.rope.scaling.*", m.arch)));
    Ok(())
}
