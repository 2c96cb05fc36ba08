//! deepseek-core: exact DeepSeek V2 / V3 / R1 inference on CPUs, and the R1-Distill models
//! (Qwen2, Llama 3 and Qwen3 architectures).
//!
//! Load a Hugging Face checkpoint folder with [`Model::load`], open a [`Session`] and feed it
//! token ids. For DeepSeek the session keeps MLA's compressed latent cache, so decoding a token
//! reads `kv_lora_rank + qk_rope_head_dim` values per cached token and layer; for the distilled
//! models it keeps K and V per KV head (grouped-query attention).
//!
//! ```no_run
//! use std::sync::Arc;
//! use deepseek_core::{LoadOptions, Model, Session, SessionOptions};
//!
//! let model = Arc::new(Model::load("path/to/DeepSeek-R1", LoadOptions::default())?);
//! let mut session = Session::new(model, SessionOptions::default())?;
//! let logits = session.eval(&[0, 128803, 19923])?;
//! let next = logits.iter().enumerate().max_by(|a, b| a.1.total_cmp(b.1)).map(|(i, _)| i);
//! # Ok::<(), deepseek_core::Error>(())
//! ```

pub mod bytes;
pub mod config;
pub mod constraint;
pub mod error;
pub mod generate;
pub mod kernels;
pub mod loader;
pub mod model;
pub mod profile;
pub mod quant;
pub mod sampling;
mod session;
mod state;
pub mod template;
pub mod tokenizer;

/// README.md's Rust examples, compiled and run by `cargo test --doc`.
#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
struct ReadmeDoctests;

/// This library's version (the workspace's; the C and Python front doors report the same).
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

pub use config::Config;
pub use constraint::{ResponseFormat, ToolCallFormat, ToolChoice};
pub use error::{Error, ErrorKind, Result};
pub use generate::{
    CancelCheck, ChatSession, Event, EventKind, FinishReason, GenerateParams, GenerationResult,
    Generator, Stream, TextAssets, Usage,
};
pub use kernels::attention::CacheDtype;
pub use model::AttentionPath;
pub use quant::WeightDtype;
pub use sampling::{
    GenerationConfig, LogitsHook, LogitsProcessor, Sampler, SamplerStep, SamplingParams,
};
pub use session::{LoadOptions, Model, Session, SessionOptions, Trace};
pub use template::{ChatTemplate, Message, TemplateOptions, ToolCall};
pub use tokenizer::{StreamDecoder, Tokenizer};
