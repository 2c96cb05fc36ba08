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
    /// The forward pass produced a NaN or infinite logit: the weights hold non-finite values
    /// or the arithmetic overflowed. The session is left as it was before the call.
    #[error(
        "non-finite logits: the forward pass produced NaN or infinity at position {position} \
         (the weights hold non-finite values or the arithmetic overflowed)"
    )]
    NonFiniteLogits {
        /// The cache position (0-based token index in the session) whose logits are bad.
        position: usize,
    },
    /// The caller's cancel check stopped the call before generation started (while rendering
    /// the chat template). Cancelling a running generation is not an error: it ends with
    /// [`FinishReason::Cancelled`](crate::FinishReason::Cancelled).
    #[error("cancelled before generation started")]
    Cancelled,
}

/// The kind of an [`Error`], without its details: what the language bindings map to an
/// exception class or a status code (one table each, tested to cover every kind).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// [`Error::Io`] with [`std::io::ErrorKind::NotFound`]: a model folder or file is missing.
    NotFound,
    /// Any other [`Error::Io`].
    Io,
    /// [`Error::Json`].
    Json,
    /// [`Error::UnsupportedArchitecture`].
    UnsupportedArchitecture,
    /// [`Error::Config`].
    Config,
    /// [`Error::Safetensors`].
    Safetensors,
    /// [`Error::Gguf`].
    Gguf,
    /// [`Error::MissingTensor`].
    MissingTensor,
    /// [`Error::Shape`].
    Shape,
    /// [`Error::Dtype`].
    Dtype,
    /// [`Error::InvalidArgument`].
    InvalidArgument,
    /// [`Error::TokenOutOfRange`].
    TokenOutOfRange,
    /// [`Error::ContextOverflow`].
    ContextOverflow,
    /// [`Error::Tokenizer`].
    Tokenizer,
    /// [`Error::Template`].
    Template,
    /// [`Error::InvalidParameter`].
    InvalidParameter,
    /// [`Error::NonFiniteLogits`].
    NonFiniteLogits,
    /// [`Error::Cancelled`].
    Cancelled,
    /// [`Error::SessionState`].
    SessionState,
}

impl ErrorKind {
    /// Every kind, in declaration order.
    pub const ALL: [ErrorKind; 19] = [
        ErrorKind::NotFound,
        ErrorKind::Io,
        ErrorKind::Json,
        ErrorKind::UnsupportedArchitecture,
        ErrorKind::Config,
        ErrorKind::Safetensors,
        ErrorKind::Gguf,
        ErrorKind::MissingTensor,
        ErrorKind::Shape,
        ErrorKind::Dtype,
        ErrorKind::InvalidArgument,
        ErrorKind::TokenOutOfRange,
        ErrorKind::ContextOverflow,
        ErrorKind::Tokenizer,
        ErrorKind::Template,
        ErrorKind::InvalidParameter,
        ErrorKind::NonFiniteLogits,
        ErrorKind::Cancelled,
        ErrorKind::SessionState,
    ];

    /// The kind's name as written in the README's bad-input table (the variant's name, or
    /// `Io(NotFound)`).
    pub fn name(self) -> &'static str {
        match self {
            ErrorKind::NotFound => "Io(NotFound)",
            ErrorKind::Io => "Io",
            ErrorKind::Json => "Json",
            ErrorKind::UnsupportedArchitecture => "UnsupportedArchitecture",
            ErrorKind::Config => "Config",
            ErrorKind::Safetensors => "Safetensors",
            ErrorKind::Gguf => "Gguf",
            ErrorKind::MissingTensor => "MissingTensor",
            ErrorKind::Shape => "Shape",
            ErrorKind::Dtype => "Dtype",
            ErrorKind::InvalidArgument => "InvalidArgument",
            ErrorKind::TokenOutOfRange => "TokenOutOfRange",
            ErrorKind::ContextOverflow => "ContextOverflow",
            ErrorKind::Tokenizer => "Tokenizer",
            ErrorKind::Template => "Template",
            ErrorKind::InvalidParameter => "InvalidParameter",
            ErrorKind::NonFiniteLogits => "NonFiniteLogits",
            ErrorKind::Cancelled => "Cancelled",
            ErrorKind::SessionState => "SessionState",
        }
    }

    /// The kind named `name` (see [`name`](Self::name)).
    pub fn from_name(name: &str) -> Option<ErrorKind> {
        Self::ALL.into_iter().find(|k| k.name() == name)
    }
}

/// The crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// The kind of this error (what the bindings map to a class or status).
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::Io { source, .. } if source.kind() == std::io::ErrorKind::NotFound => {
                ErrorKind::NotFound
            }
            Error::Io { .. } => ErrorKind::Io,
            Error::Json { .. } => ErrorKind::Json,
            Error::UnsupportedArchitecture(_) => ErrorKind::UnsupportedArchitecture,
            Error::Config { .. } => ErrorKind::Config,
            Error::Safetensors { .. } => ErrorKind::Safetensors,
            Error::Gguf { .. } => ErrorKind::Gguf,
            Error::MissingTensor(_) => ErrorKind::MissingTensor,
            Error::Shape { .. } => ErrorKind::Shape,
            Error::Dtype { .. } => ErrorKind::Dtype,
            Error::InvalidArgument(_) => ErrorKind::InvalidArgument,
            Error::TokenOutOfRange { .. } => ErrorKind::TokenOutOfRange,
            Error::ContextOverflow { .. } => ErrorKind::ContextOverflow,
            Error::Tokenizer(_) => ErrorKind::Tokenizer,
            Error::Template(_) => ErrorKind::Template,
            Error::InvalidParameter { .. } => ErrorKind::InvalidParameter,
            Error::NonFiniteLogits { .. } => ErrorKind::NonFiniteLogits,
            Error::Cancelled => ErrorKind::Cancelled,
            Error::SessionState { .. } => ErrorKind::SessionState,
        }
    }

    /// An error of `kind` with a placeholder message (for the bindings' mapping tests).
    pub fn example(kind: ErrorKind) -> Error {
        let path = PathBuf::from("example");
        let message = "example".to_string();
        match kind {
            ErrorKind::NotFound => Error::io(path, std::io::ErrorKind::NotFound.into()),
            ErrorKind::Io => Error::io(path, std::io::ErrorKind::PermissionDenied.into()),
            ErrorKind::Json => Error::Json { path, message },
            ErrorKind::UnsupportedArchitecture => Error::UnsupportedArchitecture(message),
            ErrorKind::Config => Error::config("example", message),
            ErrorKind::Safetensors => Error::Safetensors { path, message },
            ErrorKind::Gguf => Error::Gguf { path, message },
            ErrorKind::MissingTensor => Error::MissingTensor(message),
            ErrorKind::Shape => Error::Shape {
                name: message,
                expected: vec![1],
                found: vec![2],
            },
            ErrorKind::Dtype => Error::Dtype {
                name: message,
                dtype: "I32".into(),
            },
            ErrorKind::InvalidArgument => Error::InvalidArgument(message),
            ErrorKind::TokenOutOfRange => Error::TokenOutOfRange {
                id: 9,
                position: 0,
                vocab_size: 4,
            },
            ErrorKind::ContextOverflow => Error::ContextOverflow {
                cached: 1,
                new: 2,
                limit: 2,
            },
            ErrorKind::Tokenizer => Error::Tokenizer(message),
            ErrorKind::Template => Error::Template(message),
            ErrorKind::InvalidParameter => Error::InvalidParameter {
                name: "top_p".into(),
                message,
            },
            ErrorKind::NonFiniteLogits => Error::NonFiniteLogits { position: 0 },
            ErrorKind::Cancelled => Error::Cancelled,
            ErrorKind::SessionState => Error::SessionState { path, message },
        }
    }

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_is_listed_once_and_named_uniquely() {
        let mut names = std::collections::HashSet::new();
        for kind in ErrorKind::ALL {
            assert_eq!(Error::example(kind).kind(), kind);
            assert!(names.insert(kind.name()), "{kind:?}");
            assert_eq!(ErrorKind::from_name(kind.name()), Some(kind));
        }
        assert_eq!(ErrorKind::from_name("Nope"), None);
    }
}
