//! Text <-> token ids with the model's tokenizer, into caller buffers with the size-query
//! pattern. Translation only: the core's `Tokenizer` does the work.

use std::ffi::c_char;

use crate::ds_token;
use crate::model::ds_model;
use crate::status::{arg_ref, arg_str, ds_status, guard, Failure};

/// `*n_out = value` if `n_out` is not NULL.
///
/// # Safety
/// `n_out` is NULL or writable.
unsafe fn set(n_out: *mut usize, value: usize) {
    if !n_out.is_null() {
        // SAFETY: non-NULL and writable by the caller's contract.
        unsafe { n_out.write(value) };
    }
}

fn too_small(out_len: usize, needed: usize, what: &str) -> Failure {
    Failure::new(
        ds_status::DS_ERR_BUFFER_TOO_SMALL,
        format!("out_len is {out_len}, need {needed} ({what})"),
    )
}

/// Tokenizes UTF-8 `text` (NUL-terminated) into `out`. With `add_special`, the ids start as a
/// raw prompt's do (BOS when tokenizer_config.json's add_bos_token asks for it and the text
/// does not already start with it): exactly what ds_generate evaluates for `text`. Special
/// tokens written in the text (e.g. "<｜User｜>") are always recognised.
/// `*n_out` receives the number of ids; if it exceeds `out_len` the call fails with
/// DS_ERR_BUFFER_TOO_SMALL and writes nothing, so `out` may be NULL with `out_len` 0 to ask
/// for the size. DS_ERR_NO_TOKENIZER if the model has no tokenizer.
#[no_mangle]
pub unsafe extern "C" fn ds_tokenize(
    model: *const ds_model,
    text: *const c_char,
    add_special: bool,
    out: *mut ds_token,
    out_len: usize,
    n_out: *mut usize,
) -> ds_status {
    guard("ds_tokenize", || {
        // SAFETY: NULL or writable by contract.
        unsafe { set(n_out, 0) };
        // SAFETY: NULL or a live model by contract.
        let m = unsafe { arg_ref(model, "model") }?;
        // SAFETY: NULL or a NUL-terminated string by contract.
        let text = unsafe { arg_str(text, "text") }?;
        if n_out.is_null() {
            return Err(Failure::null("n_out"));
        }
        let generator = m.text.generator()?;
        let ids = if add_special {
            generator.prompt_tokens(text)?
        } else {
            generator.tokenizer().encode(text, false)?
        };
        // SAFETY: checked non-NULL above.
        unsafe { set(n_out, ids.len()) };
        if ids.len() > out_len {
            return Err(too_small(out_len, ids.len(), "token ids"));
        }
        if !ids.is_empty() {
            if out.is_null() {
                return Err(Failure::null("out"));
            }
            // SAFETY: `out` holds `out_len >= ids.len()` writable tokens by contract.
            unsafe { std::ptr::copy_nonoverlapping(ids.as_ptr(), out, ids.len()) };
        }
        Ok(())
    })
}

/// Writes the UTF-8 text of `n_tokens` ids to `out`, NUL-terminated, leaving out special
/// tokens (BOS, "<｜User｜>"...) if `skip_special`. Invalid UTF-8 (a character cut between ids)
/// becomes U+FFFD. `*n_out` receives the text's length in bytes, without the NUL; the buffer
/// needs `*n_out + 1` bytes, otherwise the call fails with DS_ERR_BUFFER_TOO_SMALL and writes
/// nothing, so `out` may be NULL with `out_len` 0 to ask for the size. The text may contain
/// NUL bytes of its own: use `*n_out`. DS_ERR_TOKEN_OUT_OF_RANGE for an id the tokenizer does
/// not have; DS_ERR_NO_TOKENIZER if the model has no tokenizer.
#[no_mangle]
pub unsafe extern "C" fn ds_detokenize(
    model: *const ds_model,
    tokens: *const ds_token,
    n_tokens: usize,
    skip_special: bool,
    out: *mut c_char,
    out_len: usize,
    n_out: *mut usize,
) -> ds_status {
    guard("ds_detokenize", || {
        // SAFETY: NULL or writable by contract.
        unsafe { set(n_out, 0) };
        // SAFETY: NULL or a live model by contract.
        let m = unsafe { arg_ref(model, "model") }?;
        if tokens.is_null() && n_tokens > 0 {
            return Err(Failure::null("tokens"));
        }
        if n_tokens > isize::MAX as usize / size_of::<ds_token>() {
            return Err(Failure::invalid(format!(
                "n_tokens {n_tokens} is too large"
            )));
        }
        if n_out.is_null() {
            return Err(Failure::null("n_out"));
        }
        let generator = m.text.generator()?;
        let ids = match n_tokens {
            0 => &[][..],
            // SAFETY: `tokens` points to `n_tokens` readable ids by contract.
            n => unsafe { std::slice::from_raw_parts(tokens, n) },
        };
        let text = generator.tokenizer().decode(ids, skip_special)?;
        // SAFETY: checked non-NULL above.
        unsafe { set(n_out, text.len()) };
        if text.len() >= out_len {
            return Err(too_small(out_len, text.len() + 1, "the text and a NUL"));
        }
        if out.is_null() {
            return Err(Failure::null("out"));
        }
        // SAFETY: `out` holds `out_len > text.len()` writable bytes by contract.
        unsafe {
            std::ptr::copy_nonoverlapping(text.as_ptr(), out.cast::<u8>(), text.len());
            out.add(text.len()).write(0);
        }
        Ok(())
    })
}
