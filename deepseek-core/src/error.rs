//! The one error type of the crate: every failure names its culprit (file, field, tensor, value).

use std::path::PathBuf;

/// Everything that can go wrong loading or running a model.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file could not be opened or read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file or folder.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// A JSON file (config, index) is not valid JSON or does not have the expected shape.
    #[error("malformed {path}: {message}")]
    Json {
        /// The file.
        path: PathBuf,
        /// What the parser said.
        message: String,
    },
    /// The config names an architecture this crate does not implement.
    #[error(
        "unsupported architecture: model_type {0:?} (supported: deepseek_v2, deepseek_v3, qwen2, llama, qwen3)"
    )]
    UnsupportedArchitecture(String),
    /// A config field is missing, out of range or has a value we do not implement.
    #[error("config field `{field}`: {message}")]
    Config {
        /// The config.json field.
        field: String,
        /// What is wrong with it.
        message: String,
    },
    /// A safetensors file is truncated or its header is corrupt.
    #[error("corrupt safetensors file {path}: {message}")]
    Safetensors {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// A GGUF file is truncated, its header is corrupt, or its metadata does not describe a
    /// model we can run.
    #[error("GGUF file {path}: {message}")]
    Gguf {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// A tensor the model needs is absent from the checkpoint.
    #[error("missing tensor `{0}` in checkpoint")]
    MissingTensor(String),
    /// A tensor has a shape other than the config implies.
    #[error("tensor `{name}` has shape {found:?}, expected {expected:?}")]
    Shape {
        /// The tensor name.
        name: String,
        /// What the config implies.
        expected: Vec<usize>,
        /// What the file holds.
        found: Vec<usize>,
    },
    /// A tensor is stored in a dtype we cannot use for it.
    #[error("tensor `{name}` has unsupported dtype {dtype}")]
    Dtype {
        /// The tensor name.
        name: String,
        /// The dtype found.
        dtype: String,
    },
    /// A caller-supplied argument is invalid (empty input, bad option value).
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// A token id is not below the vocabulary size.
    #[error("token id {id} at position {position} is out of range (vocab_size {vocab_size})")]
    TokenOutOfRange {
        /// The offending id.
        id: u32,
        /// Its index in the input.
        position: usize,
        /// The model's vocabulary size.
        vocab_size: usize,
    },
    /// Evaluating the input would exceed the session's context length.
    #[error(
        "context overflow: {cached} cached + {new} new tokens exceed the context length {limit}"
    )]
    ContextOverflow {
        /// Tokens already in the cache.
        cached: usize,
        /// Tokens asked for.
        new: usize,
        /// The session's limit.
        limit: usize,
    },
    /// A tokenizer file is malformed or names a token it does not have, or the tokenizer
    /// failed on an input.
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    /// A chat template failed to compile or render.
    #[error("chat template: {0}")]
    Template(String),
    /// A saved session state is not a state file, is corrupt or truncated, or was computed by
    /// another model.
    #[error("session state {path}: {message}")]
    SessionState {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// A sampling or generation parameter is out of range.
    #[error("invalid parameter `{name}`: {message}")]
    InvalidParameter {
        /// The parameter (e.g. `top_p`).
        name: String,
        /// What is wrong with its value.
        message: String,
    },
}

/// The crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub(crate) fn config(field: &str, message: impl Into<String>) -> Self {
        Error::Config {
            field: field.to_string(),
            message: message.into(),
        }
    }

    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }
}
