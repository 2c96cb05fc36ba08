//! Checkpoints as users have them -> finished models.
//!
//! Owns everything about files: safetensors folders (single or sharded) and GGUF files behind
//! one [`TensorSource`] trait, the one table of tensor names per family ([`names`]), the dtype
//! policy (`weights`: what stays exact, what lm_head takes, FP8 scale pairing), reading the
//! config from `config.json` or GGUF metadata, and assembling the `model/` types. Nothing is
//! read from a tensor until a kernel touches it, except where the policy converts it.

mod build;
pub mod gguf;
mod gguf_model;
pub mod gguf_vocab;
pub mod names;
mod safetensors;
mod save;
mod source;
mod weights;

use std::path::Path;

pub use gguf::GgufFile;
pub use gguf_model::GgufModel;
pub use names::{Naming, Tensor};
pub use safetensors::Checkpoint;
pub use save::save_gguf;
pub use source::{DType, TensorSource, TensorView};

use crate::config::Config;
use crate::error::{Error, Result};
use crate::model::Network;
use crate::quant::WeightDtype;

/// A checkpoint opened from a path: a Hugging Face folder or a GGUF file.
pub enum Opened {
    /// A folder with `config.json` and safetensors weights.
    Safetensors {
        /// Its validated config.
        config: Config,
        /// Its weights.
        checkpoint: Checkpoint,
    },
    /// A `.gguf` file.
    Gguf {
        /// The config read from its metadata.
        config: Config,
        /// The file (or its parts).
        file: GgufModel,
    },
}

impl Opened {
    /// Opens `path`: a folder (`config.json` + safetensors) or a GGUF file.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        if path.is_dir() {
            let config = Config::from_file(path.join("config.json"))?;
            let checkpoint = Checkpoint::open(path)?;
            return Ok(Opened::Safetensors { config, checkpoint });
        }
        if path.is_file() {
            let file = GgufModel::open(path)?;
            let config = file.config()?;
            return Ok(Opened::Gguf { config, file });
        }
        Err(Error::io(
            path,
            std::io::Error::new(
                std::io::ErrorKind::NotFound,
                "neither a model folder nor a GGUF file",
            ),
        ))
    }

    /// The validated config.
    pub fn config(&self) -> &Config {
        match self {
            Opened::Safetensors { config, .. } | Opened::Gguf { config, .. } => config,
        }
    }

    /// The tensors.
    pub fn source(&self) -> &dyn TensorSource {
        match self {
            Opened::Safetensors { checkpoint, .. } => checkpoint,
            Opened::Gguf { file, .. } => file,
        }
    }

    /// Builds the model, converting matrices to `dtype` on `threads` threads.
    pub fn build(&self, dtype: WeightDtype, threads: usize) -> Result<Network> {
        let config = self.config().clone();
        let mut w = weights::Weights::new(self.source(), &config, dtype, threads);
        let arrangement = match self {
            Opened::Safetensors { .. } => build::Arrangement::default(),
            Opened::Gguf { file, .. } => file.arrangement(),
        };
        build::network(config, &mut w, arrangement)
    }
}

/// Opens `path` (folder or GGUF file) and builds its model at `dtype`.
pub fn load(path: &Path, dtype: WeightDtype, threads: usize) -> Result<Network> {
    Opened::open(path)?.build(dtype, threads)
}

/// Converts the checkpoint at `src` (a folder or a GGUF file) into a GGUF file at `dst` that
/// llama.cpp and this crate load, its matrices converted once to `dtype` (`Auto`: as stored).
/// The tokenizer and decoding defaults come along (a folder's tokenizer.json and
/// generation_config.json become the `tokenizer.*` and `general.sampling.*` metadata
/// llama.cpp's converter writes); `tokenizer` (a folder or a GGUF file) overrides where the
/// tokenizer comes from. A checkpoint without a tokenizer is written without one.
pub fn convert_to_gguf(
    src: &Path,
    dst: &Path,
    dtype: WeightDtype,
    tokenizer: Option<&Path>,
    threads: usize,
) -> Result<()> {
    if src
        .canonicalize()
        .ok()
        .is_some_and(|s| dst.canonicalize().ok() == Some(s))
    {
        return Err(Error::InvalidArgument(format!(
            "{} would overwrite the checkpoint it is converted from",
            dst.display()
        )));
    }
    let opened = Opened::open(src)?;
    let network = opened.build(WeightDtype::Auto, threads)?;
    let vocab_size = opened.config().vocab_size;
    let mut meta = Vec::new();
    // A GGUF source keeps its own tokenizer and sampling keys unless a tokenizer is given.
    if let Opened::Gguf { file, .. } = &opened {
        let keep = |k: &str| {
            k.starts_with("general.sampling.")
                || (tokenizer.is_none() && k.starts_with("tokenizer."))
        };
        meta.extend(
            file.first()
                .header()
                .metadata
                .iter()
                .filter(|(k, _)| keep(k))
                .cloned(),
        );
    } else {
        let gc = src.join("generation_config.json");
        if gc.is_file() {
            let config = crate::sampling::GenerationConfig::from_file(&gc)?;
            meta.extend(sampling_metadata(&config.sampling));
        }
    }
    let tokenizer_src = match (tokenizer, &opened) {
        (Some(t), _) => Some(t),
        (None, Opened::Safetensors { .. }) => Some(src),
        (None, Opened::Gguf { .. }) => None,
    };
    if let Some(t) = tokenizer_src {
        if t.is_file() {
            let file = GgufFile::open(t)?;
            meta.extend(
                file.header()
                    .metadata
                    .iter()
                    .filter(|(k, _)| k.starts_with("tokenizer."))
                    .cloned(),
            );
        } else if t.join("tokenizer.json").is_file() {
            let read =
                |name: &str| std::fs::read(t.join(name)).map_err(|e| Error::io(t.join(name), e));
            let json = read("tokenizer.json")?;
            let config = match t.join("tokenizer_config.json").is_file() {
                true => Some(read("tokenizer_config.json")?),
                false => None,
            };
            meta.extend(gguf_vocab::gguf_vocab_metadata(
                &json,
                config.as_deref(),
                vocab_size,
            )?);
        } else if tokenizer.is_some() {
            return Err(Error::io(
                t.join("tokenizer.json"),
                std::io::Error::new(std::io::ErrorKind::NotFound, "no tokenizer there"),
            ));
        }
    }
    save_gguf(&network, dtype, meta, threads, dst)
}

/// `general.sampling.*` for decoding defaults that sample (greedy ones write none), as
/// llama.cpp's converter copies them from generation_config.json.
fn sampling_metadata(s: &crate::sampling::SamplingParams) -> Vec<(String, gguf::Value)> {
    use gguf::Value;
    if s.temperature <= 0.0 {
        return Vec::new();
    }
    let mut out = vec![
        (
            "general.sampling.temp".to_string(),
            Value::F32(s.temperature),
        ),
        ("general.sampling.top_p".to_string(), Value::F32(s.top_p)),
    ];
    if s.top_k > 0 {
        out.push((
            "general.sampling.top_k".into(),
            Value::I32(s.top_k.min(i32::MAX as usize) as i32),
        ));
    }
    if s.min_p > 0.0 {
        out.push(("general.sampling.min_p".into(), Value::F32(s.min_p)));
    }
    if s.repetition_penalty != 1.0 {
        out.push((
            "general.sampling.penalty_repeat".into(),
            Value::F32(s.repetition_penalty),
        ));
    }
    out
}
