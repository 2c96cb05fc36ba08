//! Checkpoints as users have them -> finished models.
//!
//! Owns everything about files: safetensors folders (single or sharded) and GGUF files behind
//! one [`TensorSource`] trait, the one table of tensor names per family ([`names`]), the dtype
//! policy ([`weights`]: what stays exact, what lm_head takes, FP8 scale pairing), reading the
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
