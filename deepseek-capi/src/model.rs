//! `ds_model`: loading, freeing, the config getters and the attached tokenizer. Translation
//! only: the core's `Model` holds the weights and its `Generator` the tokenizer, chat template
//! and generation defaults; this owns `Arc`s to both that sessions share.

use std::ffi::c_char;
use std::path::Path;
use std::sync::{Arc, PoisonError, RwLock};

use deepseek_core::{
    GenerationConfig, Generator, LoadOptions, Model, TextAssets, Tokenizer, WeightDtype,
};

use crate::ds_token;
use crate::status::{arg_ref, arg_str, ds_status, guard, guard_value, Failure};

/// A loaded model (opaque). Its weights are immutable: one model may be used by many threads
/// at once.
pub struct ds_model {
    pub(crate) model: Arc<Model>,
    pub(crate) text: Arc<Text>,
}

/// A model's text side, shared with its sessions: the tokenizer (wired with the chat template
/// and generation defaults into a `Generator`) behind a lock, so ds_model_load_tokenizer can
/// swap it while other threads generate. A call takes the `Arc` it finds and keeps it to the
/// end, so a swap never changes a running generation.
pub(crate) struct Text {
    model: Arc<Model>,
    /// generation_config.json of the model folder, if it has one.
    generation: Option<GenerationConfig>,
    generator: RwLock<Option<Arc<Generator>>>,
}

impl Text {
    /// The generator, or DS_ERR_NO_TOKENIZER.
    pub(crate) fn generator(&self) -> Result<Arc<Generator>, Failure> {
        let slot = self
            .generator
            .read()
            .unwrap_or_else(PoisonError::into_inner);
        slot.clone().ok_or_else(|| {
            Failure::new(
                ds_status::DS_ERR_NO_TOKENIZER,
                "the model has no tokenizer (its folder has no tokenizer.json): \
                 call ds_model_load_tokenizer with the folder that holds one",
            )
        })
    }

    /// Makes `tokenizer` (with the checkpoint's decoding defaults) the model's text layer.
    fn install(&self, tokenizer: Tokenizer) -> Result<(), Failure> {
        let mut generator = Generator::new(self.model.clone(), tokenizer)?;
        if let Some(config) = &self.generation {
            generator = generator.with_generation_config(config.clone())?;
        }
        let mut slot = self
            .generator
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        *slot = Some(Arc::new(generator));
        Ok(())
    }
}

/// Storage format of the weight matrices (a DS_WEIGHT_DTYPE_* value).
pub type ds_weight_dtype = u32;
/// Keep each tensor as the checkpoint stores it (memory-mapped, no copy).
pub const DS_WEIGHT_DTYPE_AUTO: ds_weight_dtype = 0;
/// Convert the matrices to float32 at load.
pub const DS_WEIGHT_DTYPE_F32: ds_weight_dtype = 1;
/// Convert the matrices to bfloat16 at load.
pub const DS_WEIGHT_DTYPE_BF16: ds_weight_dtype = 2;
/// Convert the matrices to float16 at load.
pub const DS_WEIGHT_DTYPE_F16: ds_weight_dtype = 3;
/// Quantise the matrices to ggml's Q8_0 at load (8-bit blocks of 32).
pub const DS_WEIGHT_DTYPE_Q8_0: ds_weight_dtype = 4;
/// Quantise the matrices to ggml's Q4_0 at load (4-bit blocks of 32).
pub const DS_WEIGHT_DTYPE_Q4_0: ds_weight_dtype = 5;
/// Quantise the matrices to ggml's Q4_1 at load (4-bit blocks of 32 with a minimum: more
/// accurate than Q4_0).
pub const DS_WEIGHT_DTYPE_Q4_1: ds_weight_dtype = 6;
/// Quantise the matrices to ggml's Q4_K at load, exactly as llama.cpp's llama-quantize does
/// (256-weight super-blocks, 4.5 bits per weight; rows that are not whole super-blocks: Q5_0).
pub const DS_WEIGHT_DTYPE_Q4_K: ds_weight_dtype = 7;
/// Quantise the matrices to ggml's Q6_K at load, exactly as llama-quantize does (6.56 bits per
/// weight; rows that are not whole super-blocks: Q8_0).
pub const DS_WEIGHT_DTYPE_Q6_K: ds_weight_dtype = 8;
/// llama.cpp's Q4_K_M mix at load: Q4_K, with Q6_K for lm_head and for ffn_down (and GQA
/// attn_v) in the layers llama.cpp's rule picks.
pub const DS_WEIGHT_DTYPE_Q4_K_M: ds_weight_dtype = 9;

/// How to load a model. Get one from ds_model_default_params() and change what you need.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct ds_model_params {
    /// Worker threads of the model's default pool, shared by its sessions (0: all cores).
    pub threads: u32,
    /// A DS_WEIGHT_DTYPE_* value.
    pub dtype: ds_weight_dtype,
}

/// Not a token: what ds_model_bos_token returns when the model has no BOS token.
pub const DS_TOKEN_NONE: ds_token = u32::MAX;

/// The default model params: all available cores, weights as the checkpoint stores them.
#[no_mangle]
pub extern "C" fn ds_model_default_params() -> ds_model_params {
    ds_model_params {
        threads: 0,
        dtype: DS_WEIGHT_DTYPE_AUTO,
    }
}

/// Loads a Hugging Face checkpoint folder (config.json + *.safetensors, single or sharded) or a
/// GGUF file (the first part of a split one). If the folder has a tokenizer.json (or the GGUF
/// file tokenizer.* metadata), the tokenizer (with its special tokens and chat template) is
/// loaded too, and generation_config.json (or the GGUF's general.sampling.*) gives
/// ds_generate's defaults; a malformed one fails the load. `params` may be NULL for the defaults. On success
/// `*out` is a new model to release with ds_model_free; on failure `*out` is set to NULL.
#[no_mangle]
pub unsafe extern "C" fn ds_model_load(
    path: *const c_char,
    params: *const ds_model_params,
    out: *mut *mut ds_model,
) -> ds_status {
    guard("ds_model_load", || {
        if out.is_null() {
            return Err(Failure::null("out"));
        }
        // SAFETY: `out` is non-NULL and points to writable storage by contract.
        unsafe { out.write(std::ptr::null_mut()) };
        // SAFETY: NULL or a NUL-terminated string by contract.
        let path = unsafe { arg_str(path, "path") }?;
        // SAFETY: NULL or a valid params struct by contract.
        let params = unsafe { params.as_ref() }
            .copied()
            .unwrap_or_else(|| ds_model_default_params());
        let dtype = match params.dtype {
            DS_WEIGHT_DTYPE_AUTO => WeightDtype::Auto,
            DS_WEIGHT_DTYPE_F32 => WeightDtype::F32,
            DS_WEIGHT_DTYPE_BF16 => WeightDtype::BF16,
            DS_WEIGHT_DTYPE_F16 => WeightDtype::F16,
            DS_WEIGHT_DTYPE_Q8_0 => WeightDtype::Q8_0,
            DS_WEIGHT_DTYPE_Q4_0 => WeightDtype::Q4_0,
            DS_WEIGHT_DTYPE_Q4_1 => WeightDtype::Q4_1,
            DS_WEIGHT_DTYPE_Q4_K => WeightDtype::Q4_K,
            DS_WEIGHT_DTYPE_Q6_K => WeightDtype::Q6_K,
            DS_WEIGHT_DTYPE_Q4_K_M => WeightDtype::Q4_K_M,
            other => {
                return Err(Failure::invalid(format!(
                    "params.dtype {other} is not a DS_WEIGHT_DTYPE_* value"
                )))
            }
        };
        let options = LoadOptions {
            threads: (params.threads != 0).then_some(params.threads as usize),
            dtype,
        };
        let model = Arc::new(Model::load(path, options)?);
        let assets = TextAssets::load(Path::new(path), None)?;
        let text = Text {
            model: model.clone(),
            generation: assets.generation,
            generator: RwLock::new(None),
        };
        if let Some(tokenizer) = assets.tokenizer {
            text.install(tokenizer)?;
        }
        let text = Arc::new(text);
        // SAFETY: as above.
        unsafe { out.write(Box::into_raw(Box::new(ds_model { model, text }))) };
        Ok(())
    })
}

/// Loads the tokenizer from folder `dir` (tokenizer.json, and tokenizer_config.json if there)
/// or from a GGUF file's tokenizer.* metadata, for a checkpoint that has none, or replaces the
/// model's tokenizer. Its ids must fit
/// the model's vocab size. Safe while other threads use the model and its sessions: calls
/// already running finish with the tokenizer they started with, later calls use the new one.
/// On failure the model keeps the tokenizer it had.
#[no_mangle]
pub unsafe extern "C" fn ds_model_load_tokenizer(
    model: *mut ds_model,
    dir: *const c_char,
) -> ds_status {
    guard("ds_model_load_tokenizer", || {
        // SAFETY: NULL or a live model by contract.
        let m = unsafe { arg_ref(model, "model") }?;
        // SAFETY: NULL or a NUL-terminated string by contract.
        let dir = unsafe { arg_str(dir, "dir") }?;
        m.text.install(TextAssets::tokenizer_at(Path::new(dir))?)
    })
}

/// Whether the model has a tokenizer, i.e. whether the text functions (ds_tokenize,
/// ds_generate, ds_chat...) can be used (false if `model` is NULL).
#[no_mangle]
pub unsafe extern "C" fn ds_model_has_tokenizer(model: *const ds_model) -> bool {
    guard_value("ds_model_has_tokenizer", false, || {
        // SAFETY: NULL or a live model by contract.
        Ok(unsafe { arg_ref(model, "model") }?.text.generator().is_ok())
    })
}

/// Releases a model (NULL is a no-op). Sessions opened on it keep the weights alive until
/// they are freed too, so models and sessions may be freed in any order.
#[no_mangle]
pub unsafe extern "C" fn ds_model_free(model: *mut ds_model) {
    guard("ds_model_free", || {
        if !model.is_null() {
            // SAFETY: a pointer from ds_model_load, not freed before, by contract.
            drop(unsafe { Box::from_raw(model) });
        }
        Ok(())
    });
}

/// Runs a getter on the model's config; `fallback` (and ds_last_error set) if `model` is NULL.
unsafe fn config_getter<T>(
    func: &str,
    model: *const ds_model,
    fallback: T,
    get: impl FnOnce(&deepseek_core::Config) -> T,
) -> T {
    guard_value(func, fallback, || {
        // SAFETY: NULL or a live model by contract.
        let m = unsafe { arg_ref(model, "model") }?;
        Ok(get(m.model.config()))
    })
}

/// Vocabulary size: the length of a logits row (0 if `model` is NULL).
#[no_mangle]
pub unsafe extern "C" fn ds_model_vocab_size(model: *const ds_model) -> usize {
    // SAFETY: forwarded contract.
    unsafe { config_getter("ds_model_vocab_size", model, 0, |c| c.vocab_size) }
}

/// Longest context the model supports, max_position_embeddings (0 if `model` is NULL).
#[no_mangle]
pub unsafe extern "C" fn ds_model_context_length(model: *const ds_model) -> usize {
    // SAFETY: forwarded contract.
    unsafe {
        config_getter("ds_model_context_length", model, 0, |c| {
            c.max_position_embeddings
        })
    }
}

/// The beginning-of-sequence token, or DS_TOKEN_NONE if the model has none (or `model` is NULL).
#[no_mangle]
pub unsafe extern "C" fn ds_model_bos_token(model: *const ds_model) -> ds_token {
    // SAFETY: forwarded contract.
    unsafe {
        config_getter("ds_model_bos_token", model, DS_TOKEN_NONE, |c| {
            c.bos_token_id.unwrap_or(DS_TOKEN_NONE)
        })
    }
}

/// Copies up to `out_len` end-of-sequence tokens into `out` and returns how many the model has
/// (call with out_len 0 to size the buffer; `out` may then be NULL). 0 if `model` is NULL.
#[no_mangle]
pub unsafe extern "C" fn ds_model_eos_tokens(
    model: *const ds_model,
    out: *mut ds_token,
    out_len: usize,
) -> usize {
    guard_value("ds_model_eos_tokens", 0, || {
        // SAFETY: NULL or a live model by contract.
        let ids = &unsafe { arg_ref(model, "model") }?
            .model
            .config()
            .eos_token_ids;
        let n = ids.len().min(out_len);
        if n > 0 {
            if out.is_null() {
                return Err(Failure::null("out"));
            }
            // SAFETY: `out` holds `out_len >= n` writable tokens by contract.
            unsafe { std::ptr::copy_nonoverlapping(ids.as_ptr(), out, n) };
        }
        Ok(ids.len())
    })
}

/// Whether `token` is one of the model's end-of-sequence tokens (false if `model` is NULL).
#[no_mangle]
pub unsafe extern "C" fn ds_model_is_eos(model: *const ds_model, token: ds_token) -> bool {
    // SAFETY: forwarded contract.
    unsafe {
        config_getter("ds_model_is_eos", model, false, |c| {
            c.eos_token_ids.contains(&token)
        })
    }
}
