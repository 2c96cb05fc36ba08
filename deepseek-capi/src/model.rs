//! `ds_model`: loading, freeing and the config getters. Translation only: the core's
//! `Model` holds the weights; this owns an `Arc` to it that sessions share.

use std::ffi::{c_char, CStr};
use std::sync::Arc;

use deepseek_core::{LoadOptions, Model, WeightDtype};

use crate::ds_token;
use crate::status::{arg_ref, ds_status, guard, guard_value, Failure};

/// A loaded model (opaque). Immutable: one model may be used by many threads at once.
pub struct ds_model {
    pub(crate) model: Arc<Model>,
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

/// Loads a Hugging Face checkpoint folder (config.json + *.safetensors, single or sharded).
/// `params` may be NULL for the defaults. On success `*out` is a new model to release with
/// ds_model_free; on failure `*out` is set to NULL.
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
        if path.is_null() {
            return Err(Failure::null("path"));
        }
        // SAFETY: `path` is a NUL-terminated string by contract.
        let path = unsafe { CStr::from_ptr(path) }.to_str().map_err(|e| {
            Failure::new(
                ds_status::DS_ERR_INVALID_UTF8,
                format!("`path` is not valid UTF-8 ({e})"),
            )
        })?;
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
        // SAFETY: as above.
        unsafe { out.write(Box::into_raw(Box::new(ds_model { model }))) };
        Ok(())
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
