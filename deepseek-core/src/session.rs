//! [`Model`] (immutable weights + default thread pool) and [`Session`] (one conversation's
//! KV cache, scratch buffers and position): the crate's main API, the same for every family.

use std::path::Path;
use std::sync::Arc;

use crate::config::Config;
use crate::error::{Error, Result};
use crate::kernels::attention::CacheDtype;
use crate::kernels::{self, Pool};
use crate::model::{self, AttentionPath, KvCache, Network, RowLayout, Scratch, Transformer};
use crate::quant::WeightDtype;

/// How to load a model.
#[derive(Debug, Clone, Default)]
pub struct LoadOptions {
    /// Worker threads for the model's default pool (`None`: all available cores).
    pub threads: Option<usize>,
    /// Storage format of the matrices (`Auto` keeps the checkpoint's, memory-mapped).
    pub dtype: WeightDtype,
}

/// How to open a session.
#[derive(Debug, Clone, Default)]
pub struct SessionOptions {
    /// Longest context the session accepts (`None`: the model's `max_position_embeddings`).
    pub context_length: Option<usize>,
    /// Worker threads for this session (`None`: share the model's pool).
    pub threads: Option<usize>,
    /// MLA evaluation path (`Auto` picks the cheaper exact one per call; GQA models have one).
    pub attention: AttentionPath,
    /// How the KV cache stores its rows.
    pub cache_dtype: CacheDtype,
}

/// A loaded model: weights are immutable and shared by every session (wrap it in an `Arc`).
#[derive(Debug)]
pub struct Model {
    inner: Network,
    pool: Arc<Pool>,
}

impl Model {
    /// Loads a Hugging Face checkpoint folder (`config.json` + safetensors, single or sharded)
    /// or a GGUF file (the first part of a split one). Weights stay memory-mapped where they
    /// run as stored: loading reads headers, not tensors.
    pub fn load(path: impl AsRef<Path>, options: LoadOptions) -> Result<Self> {
        let threads = resolve_threads(options.threads)?;
        // Weights first: a failed load starts no threads.
        let inner = crate::loader::load(path.as_ref(), options.dtype, threads)?;
        let pool = Arc::new(Pool::new(threads)?);
        Ok(Model { inner, pool })
    }

    /// The validated config.
    pub fn config(&self) -> &Config {
        self.inner.config()
    }

    /// The model's layers and weights, for inspection.
    pub fn network(&self) -> &Network {
        &self.inner
    }

    /// The DeepSeek model's layers and weights (`None` for the other families).
    pub fn transformer(&self) -> Option<&Transformer> {
        match &self.inner {
            Network::Deepseek(t) => Some(t),
            Network::Llama(_) => None,
        }
    }

    /// Weight bytes one decoded token reads; decode speed is bounded by memory bandwidth
    /// divided by this.
    pub fn weight_bytes_per_token(&self) -> usize {
        self.inner.weight_bytes_per_token()
    }

    /// Threads of the default pool.
    pub fn threads(&self) -> usize {
        self.pool.threads()
    }

    /// What identifies this model's KV cache: shapes, rotary table and samples of the stored
    /// key/value weights (format included). Saved session states carry it.
    pub fn fingerprint(&self) -> u64 {
        crate::state::fingerprint(&self.inner)
    }
}

fn resolve_threads(threads: Option<usize>) -> Result<usize> {
    match threads {
        Some(0) => Err(Error::InvalidArgument("threads must be >= 1".into())),
        Some(n) => Ok(n),
        None => Ok(std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)),
    }
}

/// Hidden states recorded by [`Session::trace`].
#[derive(Debug, Clone)]
pub struct Trace {
    /// `num_hidden_layers + 1` entries of `[n, hidden]`: each layer's input, then the last
    /// layer's output before the final norm.
    pub hidden_states: Vec<Vec<f32>>,
    /// `[n, vocab]` logits.
    pub logits: Vec<f32>,
}

/// One conversation: the KV cache (MLA's latents for DeepSeek, K/V per KV head for the
/// R1-Distill families), the tokens it holds, scratch buffers and the thread pool it runs on.
pub struct Session {
    model: Arc<Model>,
    pool: Arc<Pool>,
    cache: KvCache,
    tokens: Vec<u32>,
    scratch: Scratch,
    hidden: Vec<f32>,
    logits: Vec<f32>,
    context_length: usize,
    path: AttentionPath,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("tokens", &self.cache.len())
            .field("context_length", &self.context_length)
            .finish()
    }
}

impl Session {
    /// A fresh session over `model`.
    pub fn new(model: Arc<Model>, options: SessionOptions) -> Result<Self> {
        let c = model.config();
        let context_length = match options.context_length {
            None => c.max_position_embeddings,
            Some(0) => return Err(Error::InvalidArgument("context_length must be >= 1".into())),
            Some(n) if n > c.max_position_embeddings => {
                return Err(Error::InvalidArgument(format!(
                    "context_length {n} exceeds the model's max_position_embeddings {}",
                    c.max_position_embeddings
                )))
            }
            Some(n) => n,
        };
        let pool = match options.threads {
            None => model.pool.clone(),
            Some(t) => Arc::new(Pool::new(resolve_threads(Some(t))?)?),
        };
        let layout = RowLayout::new(&model.inner.cache_parts(), options.cache_dtype);
        let cache = KvCache::new(c.num_hidden_layers, layout);
        Ok(Session {
            model,
            pool,
            cache,
            tokens: Vec::new(),
            scratch: Scratch::default(),
            hidden: Vec::new(),
            logits: Vec::new(),
            context_length,
            path: options.attention,
        })
    }

    /// The model this session runs.
    pub fn model(&self) -> &Arc<Model> {
        &self.model
    }

    /// Tokens in the cache (the position of the next token).
    pub fn len(&self) -> usize {
        self.cache.len()
    }

    /// Whether the cache is empty.
    pub fn is_empty(&self) -> bool {
        self.cache.is_empty()
    }

    /// The longest context this session accepts.
    pub fn context_length(&self) -> usize {
        self.context_length
    }

    /// Cache bytes per token: `(kv_lora_rank + qk_rope_head_dim) x layers` values for DeepSeek,
    /// `2 x num_key_value_heads x head_dim x layers` for the R1-Distill families, at 4 bytes
    /// (f32), 2 (bf16) or 34 per 32 (q8_0, each part padded to a whole block).
    pub fn cache_bytes_per_token(&self) -> usize {
        self.cache.bytes_per_token()
    }

    /// Cache bytes the cached tokens occupy (`len() x cache_bytes_per_token()`).
    pub fn cache_bytes(&self) -> usize {
        self.cache.len() * self.cache.bytes_per_token()
    }

    /// Cache bytes allocated now: whole pages of 256 tokens per layer, at most one page per
    /// layer beyond [`cache_bytes`](Self::cache_bytes) (pages shared with a fork count here too).
    pub fn cache_bytes_allocated(&self) -> usize {
        self.cache.bytes()
    }

    /// How the KV cache stores its rows.
    pub fn cache_dtype(&self) -> CacheDtype {
        self.cache.dtype()
    }

    /// The tokens in the cache, in order.
    pub fn tokens(&self) -> &[u32] {
        &self.tokens
    }

    /// Forgets every cached token.
    pub fn reset(&mut self) {
        self.cache.truncate(0);
        self.tokens.clear();
    }

    /// Keeps only the first `n` cached tokens (e.g. to reuse a shared prompt prefix).
    pub fn truncate(&mut self, n: usize) -> Result<()> {
        if n > self.cache.len() {
            return Err(Error::InvalidArgument(format!(
                "cannot truncate to {n}: only {} tokens cached",
                self.cache.len()
            )));
        }
        self.cache.truncate(n);
        self.tokens.truncate(n);
        Ok(())
    }

    /// A new session holding this one's tokens and cache, without recomputing or copying the
    /// cache: both share its pages until one of them writes there (a page of 256 tokens is
    /// copied at most, per layer). Compute a shared prefix (a system prompt, a long document)
    /// once, then fork a session per request. The fork runs on the same thread pool.
    pub fn fork(&self) -> Session {
        Session {
            model: self.model.clone(),
            pool: self.pool.clone(),
            cache: self.cache.clone(),
            tokens: self.tokens.clone(),
            scratch: Scratch::default(),
            hidden: Vec::new(),
            logits: Vec::new(),
            context_length: self.context_length,
            path: self.path,
        }
    }

    /// Writes the tokens and the cache (in its format) to `path`, with a versioned header
    /// naming this model and a checksum; [`Session::restore`] reads it back.
    pub fn save(&self, path: impl AsRef<Path>) -> Result<()> {
        let fp = self.model.fingerprint();
        crate::state::save(path.as_ref(), fp, &self.tokens, &self.cache)
    }

    /// A session holding the tokens and cache saved at `path` by [`Session::save`], with
    /// `options` (the cache keeps the format it was saved in, whatever
    /// `options.cache_dtype` says). A file from another model, another format version, a
    /// truncated or corrupt one is an [`Error::SessionState`]; more tokens than the context
    /// length an [`Error::ContextOverflow`].
    pub fn restore(
        model: Arc<Model>,
        path: impl AsRef<Path>,
        options: SessionOptions,
    ) -> Result<Session> {
        let mut s = Session::new(model, options)?;
        let expect = crate::state::Expect {
            model: s.model.fingerprint(),
            network: &s.model.inner,
            context_length: s.context_length,
        };
        let (tokens, cache) = crate::state::load(path.as_ref(), &expect)?;
        s.tokens = tokens;
        s.cache = cache;
        Ok(s)
    }

    /// Runs on a new pool of `threads` workers from now on.
    pub fn set_threads(&mut self, threads: usize) -> Result<()> {
        self.pool = Arc::new(Pool::new(resolve_threads(Some(threads))?)?);
        Ok(())
    }

    /// Chooses the MLA attention path (both are exact; `Auto` is fastest; no effect on GQA).
    pub fn set_attention_path(&mut self, path: AttentionPath) {
        self.path = path;
    }

    /// Appends `tokens` to the cache and returns the logits `[vocab]` after the last one.
    pub fn eval(&mut self, tokens: &[u32]) -> Result<&[f32]> {
        self.run(tokens, false, None)?;
        Ok(&self.logits)
    }

    /// Appends `tokens` and returns logits at every new position, `[tokens.len(), vocab]`.
    pub fn eval_all(&mut self, tokens: &[u32]) -> Result<&[f32]> {
        self.run(tokens, true, None)?;
        Ok(&self.logits)
    }

    /// Like [`eval_all`](Self::eval_all), also recording every layer's hidden states.
    pub fn trace(&mut self, tokens: &[u32]) -> Result<Trace> {
        let mut hs = Vec::new();
        self.run(tokens, true, Some(&mut hs))?;
        Ok(Trace {
            hidden_states: hs,
            logits: self.logits.clone(),
        })
    }

    fn validate(&self, tokens: &[u32]) -> Result<()> {
        if tokens.is_empty() {
            return Err(Error::InvalidArgument("no tokens to evaluate".into()));
        }
        let vocab_size = self.model.config().vocab_size;
        if let Some((position, &id)) = tokens
            .iter()
            .enumerate()
            .find(|(_, &id)| id as usize >= vocab_size)
        {
            return Err(Error::TokenOutOfRange {
                id,
                position,
                vocab_size,
            });
        }
        if self.cache.len() + tokens.len() > self.context_length {
            return Err(Error::ContextOverflow {
                cached: self.cache.len(),
                new: tokens.len(),
                limit: self.context_length,
            });
        }
        Ok(())
    }

    fn run(&mut self, tokens: &[u32], all: bool, trace: Option<&mut Vec<Vec<f32>>>) -> Result<()> {
        self.validate(tokens)?;
        let m = &self.model.inner;
        let (n, hs, vocab) = (tokens.len(), m.config().hidden_size, m.config().vocab_size);
        let rows = if all { n } else { 1 };
        let too_many = || Error::InvalidArgument(format!("{n} tokens at once is too many"));
        let hidden_len = n.checked_mul(hs).ok_or_else(too_many)?;
        let logits_len = rows.checked_mul(vocab).ok_or_else(too_many)?;
        let h = model::grow(&mut self.hidden, hidden_len);
        let pos0 = self.cache.len();
        m.forward_hidden(
            &self.pool,
            self.path,
            tokens,
            pos0,
            &mut self.cache,
            &mut self.scratch,
            h,
            trace,
        );
        self.logits.resize(logits_len, 0.0);
        let last = &h[(n - rows) * hs..];
        let t = crate::profile::start();
        kernels::matmul(
            &self.pool,
            &m.lm_head().weight,
            0..vocab,
            last,
            rows,
            &mut self.logits,
        );
        crate::profile::stop(crate::profile::Part::LmHead, t);
        // NaN/inf weights (or an overflow) would otherwise reach the caller, or the sampler,
        // as plausible-looking garbage; the cache goes back to where this call started.
        if let Some(row) = first_non_finite_row(&self.logits, vocab) {
            self.cache.truncate(pos0);
            return Err(Error::NonFiniteLogits {
                position: pos0 + n - rows + row,
            });
        }
        self.tokens.extend_from_slice(tokens);
        Ok(())
    }
}

/// The first `width`-long row of `values` holding a NaN or an infinity. One pass that
/// allocates nothing: the maximum exponent field over all values is all ones only if one of
/// them is non-finite, and only then are the rows searched.
fn first_non_finite_row(values: &[f32], width: usize) -> Option<usize> {
    const EXPONENT: u32 = 0x7f80_0000;
    let max = values
        .iter()
        .fold(0u32, |m, x| m.max(x.to_bits() & EXPONENT));
    if max != EXPONENT {
        return None;
    }
    values
        .chunks(width.max(1))
        .position(|row| row.iter().any(|x| !x.is_finite()))
}
