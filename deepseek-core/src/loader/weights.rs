//! The dtype policy: checkpoint tensors -> finished [`Weight`]s, vectors and norms.
//!
//! One place decides what each tensor becomes at run time: which stay exact (embeddings, the
//! router, norms, biases, the correction bias), what lm_head takes under 4-bit formats, how FP8
//! weights find their block scales, how a stacked GGUF expert tensor is sliced; and it records
//! which tensors were used, so a checkpoint with tensors the config does not explain is refused.

use std::collections::HashSet;

use super::names::{is_ignorable, layer_of, Location, Naming, Tensor};
use super::source::{DType, TensorSource, TensorView};
use crate::config::Config;
use crate::error::{Error, Result};
use crate::model::{Linear, Mlp, RmsNorm};
use crate::quant::{Format, Weight, WeightDtype};

/// What the dtype policy stores tensor `t` as when a model of `layers` decoder layers, named by
/// `naming`, loads (or is written) at `dtype`: loading and the GGUF writer both ask here.
pub(crate) fn target(dtype: WeightDtype, t: Tensor, layers: usize, naming: Naming) -> WeightDtype {
    use WeightDtype::{Q4_K, Q4_K_M, Q6_K};
    match (t, dtype) {
        // Read one row per token (never streamed) or deciding routing: keep them exact.
        (Tensor::TokenEmbd | Tensor::FfnGateInp(_), _) => WeightDtype::Auto,
        // Under 4-bit formats the head takes more bits, as llama.cpp keeps it wider too (its
        // K-quant mixes give it Q6_K, or Q8_0 when its rows are not whole super-blocks).
        (Tensor::Output, WeightDtype::Q4_0) => WeightDtype::Q8_0,
        (Tensor::Output, Q4_K | Q4_K_M) => Q6_K,
        (_, Q4_K_M) if more_bits_in_q4_k_m(t, layers, naming) => Q6_K,
        (_, Q4_K_M) => Q4_K,
        _ => dtype,
    }
}

/// llama.cpp's Q4_K_M rule (`llama-quant.cpp`): `ffn_down` (dense, shared and every routed
/// expert) and the "attn_v" tensors take Q6_K in the layers `use_more_bits` picks. For GQA
/// "attn_v" is `v_proj`. For MLA the values come from the value half of `kv_b_proj`: llama.cpp
/// counts a legacy GGUF's single `attn_kv_b` as attn_v, but the split `attn_k_b`/`attn_v_b`
/// its converter writes today match none of its attn_v names, so a deepseek2 Q4_K_M made by
/// current llama.cpp keeps all of MLA at Q4_K. We follow that: only a legacy GGUF's
/// `attn_kv_b` is bumped, never Hugging Face's `kv_b_proj` (which llama.cpp would split).
fn more_bits_in_q4_k_m(t: Tensor, layers: usize, naming: Naming) -> bool {
    let layer = match t {
        Tensor::AttnV(l) | Tensor::FfnDown(l) | Tensor::FfnDownShexp(l) => l,
        Tensor::FfnDownExp(l, _) => l,
        Tensor::AttnKvB(l) if naming == Naming::Gguf => l,
        _ => return false,
    };
    let n = layers;
    layer < n / 8 || layer >= 7 * n / 8 || (layer - n / 8) % 3 == 2
}

/// Hands out a checkpoint's tensors by role, checked and converted by the policy.
pub(crate) struct Weights<'a> {
    src: &'a dyn TensorSource,
    naming: Naming,
    used: HashSet<String>,
    fp8_block: Option<[usize; 2]>,
    dtype: WeightDtype,
    threads: usize,
    layers: usize,
}

impl<'a> Weights<'a> {
    /// Reads `src` for a model of `config`, converting matrices to `dtype` on `threads` threads.
    pub(crate) fn new(
        src: &'a dyn TensorSource,
        config: &Config,
        dtype: WeightDtype,
        threads: usize,
    ) -> Self {
        Weights {
            src,
            naming: src.naming(),
            used: HashSet::new(),
            fp8_block: config.quantization.map(|q| q.weight_block_size),
            dtype,
            threads,
            layers: config.num_hidden_layers,
        }
    }

    /// The naming scheme of the checkpoint.
    pub(crate) fn naming(&self) -> Naming {
        self.naming
    }

    fn location(&self, t: Tensor) -> Result<Location> {
        t.locate(self.naming).ok_or_else(|| {
            Error::MissingTensor(format!("{t:?} (this checkpoint format has no such tensor)"))
        })
    }

    /// Whether the checkpoint has the tensor `t`.
    pub(crate) fn has(&self, t: Tensor) -> bool {
        t.locate(self.naming)
            .is_some_and(|loc| self.src.contains(&loc.name))
    }

    fn fetch(&mut self, name: &str) -> Result<TensorView> {
        let view = self
            .src
            .get(name)?
            .ok_or_else(|| Error::MissingTensor(name.to_string()))?;
        self.used.insert(name.to_string());
        Ok(view)
    }

    /// The tensor `t`; one expert of a stacked `[experts, rows, cols]` tensor is sliced out.
    fn view(&mut self, t: Tensor) -> Result<TensorView> {
        let loc = self.location(t)?;
        let view = self.fetch(&loc.name)?;
        let Some(e) = loc.expert else {
            return Ok(view);
        };
        let [experts, rows, cols] = view.shape[..] else {
            return Err(Error::Shape {
                name: view.name.clone(),
                expected: vec![e + 1, 0, 0],
                found: view.shape.clone(),
            });
        };
        if e >= experts {
            return Err(Error::Shape {
                name: view.name.clone(),
                expected: vec![e + 1, rows, cols],
                found: view.shape.clone(),
            });
        }
        // GGUF validated the tensor's total bytes; each expert is an equal contiguous part.
        let per = view.bytes.len() / experts;
        Ok(TensorView {
            name: format!("{}[{e}]", view.name),
            dtype: view.dtype,
            shape: vec![rows, cols],
            bytes: view.bytes.slice(e * per, per),
        })
    }

    /// What the policy stores tensor `t` as.
    fn target(&self, t: Tensor) -> WeightDtype {
        target(self.dtype, t, self.layers, self.naming)
    }

    /// The matrix `t`, checked to be `shape` (a 2-D `[rows, cols]`, or a 3-D `[a, b, cols]` read
    /// as `[a * b, cols]`), converted as the policy says.
    pub(crate) fn matrix(&mut self, t: Tensor, shape: &[usize]) -> Result<Weight> {
        let view = self.view(t)?;
        view.expect_shape(shape)?;
        let (rows, cols) = match shape {
            [.., cols] => (shape[..shape.len() - 1].iter().product(), *cols),
            [] => unreachable!("matrices have a shape"),
        };
        let format = match view.dtype {
            DType::F32 => Format::F32,
            DType::BF16 => Format::BF16,
            DType::F16 => Format::F16,
            DType::F8E4M3 => self.fp8_format(&view.name, rows, cols)?,
            DType::Ggml(g) => Format::from_ggml(g).ok_or_else(|| Error::Dtype {
                name: view.name.clone(),
                dtype: format!("{g} (ggml type not supported yet)"),
            })?,
        };
        if !matches!(view.dtype, DType::F8E4M3) {
            self.refuse_stray_scale(&view.name)?;
        }
        let weight = Weight::new(rows, cols, format, view.bytes).map_err(|e| Error::Dtype {
            name: view.name.clone(),
            dtype: e.to_string(),
        })?;
        Ok(weight.convert_with_threads(self.target(t), self.threads))
    }

    /// A [`Linear`] over the matrix `t` of `[rows, cols]`.
    pub(crate) fn linear(&mut self, t: Tensor, rows: usize, cols: usize) -> Result<Linear> {
        Ok(Linear {
            weight: self.matrix(t, &[rows, cols])?,
        })
    }

    /// FP8 pairs with its `<name>_scale_inv` (Hugging Face checkpoints; GGUF has no FP8).
    fn fp8_format(&mut self, name: &str, rows: usize, cols: usize) -> Result<Format> {
        let scale_name = format!("{name}_scale_inv");
        let Some(block) = self.fp8_block else {
            return Err(Error::Dtype {
                name: name.to_string(),
                dtype: "F8_E4M3 without weight_scale_inv / quantization_config".into(),
            });
        };
        let Some(scale) = self.src.get(&scale_name)? else {
            return Err(Error::Dtype {
                name: name.to_string(),
                dtype: format!("F8_E4M3 without its `{scale_name}`"),
            });
        };
        self.used.insert(scale_name);
        scale.expect_shape(&[rows.div_ceil(block[0]), cols.div_ceil(block[1])])?;
        let scale_inv = scale.to_f32()?;
        if let Some(i) = scale_inv.iter().position(|x| !x.is_finite()) {
            return Err(Error::Dtype {
                name: scale.name.clone(),
                dtype: format!("scale {i} is not finite"),
            });
        }
        Ok(Format::Fp8E4M3 { scale_inv, block })
    }

    /// A block scale next to a non-FP8 weight means the config and the file disagree.
    fn refuse_stray_scale(&self, name: &str) -> Result<()> {
        if self.naming != Naming::Hf {
            return Ok(());
        }
        let scale_name = format!("{name}_scale_inv");
        if self.src.get(&scale_name)?.is_none() {
            return Ok(());
        }
        Err(match self.fp8_block {
            None => Error::config(
                "quantization_config",
                format!("missing, but the checkpoint has block scales ({scale_name})"),
            ),
            Some(_) => Error::Dtype {
                name: name.to_string(),
                dtype: "not F8_E4M3, yet it has a weight_scale_inv".into(),
            },
        })
    }

    /// The float vector `t` of `len` values (norms, biases, the correction bias).
    pub(crate) fn vector(&mut self, t: Tensor, len: usize) -> Result<Vec<f32>> {
        let view = self.view(t)?;
        view.expect_shape(&[len])?;
        view.to_f32()
    }

    /// The RMSNorm whose weight is `t`.
    pub(crate) fn norm(&mut self, t: Tensor, len: usize, eps: f64) -> Result<RmsNorm> {
        Ok(RmsNorm::new(self.vector(t, len)?, eps))
    }

    /// A SwiGLU from its three matrices.
    pub(crate) fn mlp(
        &mut self,
        [gate, up, down]: [Tensor; 3],
        inter: usize,
        hidden: usize,
    ) -> Result<Mlp> {
        Ok(Mlp {
            gate_proj: self.linear(gate, inter, hidden)?,
            up_proj: self.linear(up, inter, hidden)?,
            down_proj: self.linear(down, hidden, inter)?,
        })
    }

    /// lm_head, or the embedding when the checkpoint ties them and stores no head (GGUF files
    /// of tied models store none). A tied config whose checkpoint also stores a head is only
    /// accepted when that head is a byte-for-byte copy of the embedding: transformers would use
    /// the embedding, so a different head means config and weights disagree.
    pub(crate) fn lm_head(&mut self, c: &Config, embed_tokens: &Weight) -> Result<Linear> {
        let tied = Linear {
            weight: embed_tokens.clone(),
        };
        if !self.has(Tensor::Output) && (c.tie_word_embeddings || self.naming == Naming::Gguf) {
            return Ok(tied);
        }
        if c.tie_word_embeddings {
            let head = self.view(Tensor::Output)?;
            let embed = self.view(Tensor::TokenEmbd)?;
            if head.dtype != embed.dtype
                || head.shape != embed.shape
                || head.bytes[..] != embed.bytes[..]
            {
                return Err(Error::config(
                    "tie_word_embeddings",
                    format!(
                        "true, but the checkpoint stores a `{}` that differs from the embedding: config and weights disagree",
                        head.name
                    ),
                ));
            }
            return Ok(tied);
        }
        self.linear(Tensor::Output, c.vocab_size, c.hidden_size)
    }

    /// Fails on a tensor the model did not use, except the multi-token-prediction layers
    /// (`num_layers..num_layers + mtp_layers`) that plain decoding skips: an unexplained tensor
    /// means the config does not describe this checkpoint.
    pub(crate) fn finish(&self, num_layers: usize, mtp_layers: usize) -> Result<()> {
        let mtp = num_layers..num_layers.saturating_add(mtp_layers);
        let mut unused: Vec<String> = self
            .src
            .names()
            .into_iter()
            .filter(|n| !self.used.contains(n) && !is_ignorable(n))
            .filter(|n| !layer_of(n, self.naming).is_some_and(|l| mtp.contains(&l)))
            .collect();
        unused.sort_unstable();
        match unused.first() {
            None => Ok(()),
            Some(first) => Err(Error::config(
                "num_hidden_layers",
                format!(
                    "the checkpoint has {} tensor(s) this config does not use, e.g. `{first}`: config and weights disagree",
                    unused.len()
                ),
            )),
        }
    }
}
