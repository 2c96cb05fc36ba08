//! `ds_session`: one conversation's cache behind a try-lock, so a session used by two threads at
//! once (or by a generation callback re-entering it) fails with DS_ERR_SESSION_BUSY instead of
//! racing. Translation only: the core's `Session` does the work.

use std::ffi::c_char;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, TryLockError};

use deepseek_core::{AttentionPath, CacheDtype, Session, SessionOptions};

use crate::ds_token;
use crate::model::{ds_model, Text};
use crate::status::{arg_ref, arg_str, ds_status, guard, guard_value, Failure};

/// Attention evaluation path (a DS_ATTENTION_* value); every path gives the same logits.
pub type ds_attention = u32;
/// Pick the cheaper exact path per call (absorbed for decoding, expanded for long prompts).
pub const DS_ATTENTION_AUTO: ds_attention = 0;
/// Always fold kv_b_proj into the query and output (MLA's "absorb" form).
pub const DS_ATTENTION_ABSORBED: ds_attention = 1;
/// Always expand per-head keys and values from the cached latents (MLA's "naive" form).
pub const DS_ATTENTION_EXPANDED: ds_attention = 2;

/// How the KV cache stores its rows (a DS_CACHE_* value).
pub type ds_cache_dtype = u32;
/// float32: exact (the default).
pub const DS_CACHE_F32: ds_cache_dtype = 0;
/// bfloat16: half the memory, logits within ~1e-1 of f32 on the test models.
pub const DS_CACHE_BF16: ds_cache_dtype = 1;
/// ggml Q8_0 blocks: 34 bytes per 32 values, logit cosine >= 0.999 on the test models.
pub const DS_CACHE_Q8_0: ds_cache_dtype = 2;

/// How to open a session. Get one from ds_session_default_params() and change what you need.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct ds_session_params {
    /// Longest context the session accepts, in tokens (0: the model's context length).
    pub context_length: usize,
    /// Worker threads for this session (0: share the model's pool).
    pub threads: u32,
    /// A DS_ATTENTION_* value.
    pub attention: ds_attention,
    /// A DS_CACHE_* value.
    pub cache_dtype: ds_cache_dtype,
}

/// The core options of `params` (NULL: the defaults), validated.
///
/// # Safety
/// `params` is NULL or points to a valid params struct.
unsafe fn session_options(params: *const ds_session_params) -> Result<SessionOptions, Failure> {
    // SAFETY: NULL or a valid params struct by contract.
    let params = unsafe { params.as_ref() }
        .copied()
        .unwrap_or_else(|| ds_session_default_params());
    let attention = match params.attention {
        DS_ATTENTION_AUTO => AttentionPath::Auto,
        DS_ATTENTION_ABSORBED => AttentionPath::Absorbed,
        DS_ATTENTION_EXPANDED => AttentionPath::Expanded,
        other => {
            return Err(Failure::invalid(format!(
                "params.attention {other} is not a DS_ATTENTION_* value"
            )))
        }
    };
    let cache_dtype = match params.cache_dtype {
        DS_CACHE_F32 => CacheDtype::F32,
        DS_CACHE_BF16 => CacheDtype::BF16,
        DS_CACHE_Q8_0 => CacheDtype::Q8_0,
        other => {
            return Err(Failure::invalid(format!(
                "params.cache_dtype {other} is not a DS_CACHE_* value"
            )))
        }
    };
    Ok(SessionOptions {
        context_length: (params.context_length != 0).then_some(params.context_length),
        threads: (params.threads != 0).then_some(params.threads as usize),
        attention,
        cache_dtype,
    })
}

/// One conversation's state (opaque): the KV cache and scratch buffers. Use it from one thread
/// at a time; it may move between threads.
pub struct ds_session {
    pub(crate) session: Mutex<Cache>,
    /// Mirrors the cache's length so readers need not take the lock.
    pub(crate) len: AtomicUsize,
    context_length: usize,
    vocab_size: usize,
    /// The model's tokenizer slot (a tokenizer loaded later is seen here too).
    pub(crate) text: Arc<Text>,
}

/// The core session and the token ids its cache holds, which ds_generate and ds_chat compare
/// with a new prompt to evaluate only what differs.
pub(crate) struct Cache {
    pub(crate) session: Session,
    /// A prefix of (normally all of) the ids in `session`'s cache.
    pub(crate) tokens: Vec<ds_token>,
}

impl Cache {
    fn reset(&mut self) {
        self.session.reset();
        self.tokens.clear();
    }
}

impl ds_session {
    /// The session, or DS_ERR_SESSION_BUSY if another call holds it.
    pub(crate) fn lock(&self) -> Result<MutexGuard<'_, Cache>, Failure> {
        match self.session.try_lock() {
            Ok(s) => Ok(s),
            Err(TryLockError::WouldBlock) => Err(busy()),
            Err(TryLockError::Poisoned(_)) => Err(Failure::new(
                ds_status::DS_ERR_PANIC,
                "an earlier call on this session panicked; ds_session_reset it or free it",
            )),
        }
    }

    /// Runs an evaluation and copies `rows` logit rows to `logits` (NULL: skip the copy).
    unsafe fn eval(
        &self,
        tokens: *const ds_token,
        n_tokens: usize,
        logits: *mut f32,
        logits_len: usize,
        all: bool,
    ) -> Result<(), Failure> {
        if tokens.is_null() {
            return Err(Failure::null("tokens"));
        }
        if n_tokens > isize::MAX as usize / size_of::<ds_token>() {
            return Err(Failure::invalid(format!(
                "n_tokens {n_tokens} is too large"
            )));
        }
        let rows = if all { n_tokens } else { 1 };
        let needed = rows
            .checked_mul(self.vocab_size)
            .ok_or_else(|| Failure::invalid(format!("n_tokens {n_tokens} is too large")))?;
        // Checked before evaluating, so a failed call leaves the session as it was.
        if !logits.is_null() && logits_len < needed {
            return Err(Failure::new(
                ds_status::DS_ERR_BUFFER_TOO_SMALL,
                format!(
                    "logits_len is {logits_len}, need {needed} ({rows} x vocab size {})",
                    self.vocab_size
                ),
            ));
        }
        let mut cache = self.lock()?;
        let Cache {
            session,
            tokens: cached,
        } = &mut *cache;
        // SAFETY: `tokens` points to `n_tokens` readable tokens by contract.
        let tokens = unsafe { std::slice::from_raw_parts(tokens, n_tokens) };
        let out = if all {
            session.eval_all(tokens)
        } else {
            session.eval(tokens)
        };
        let result = out.map(|row| {
            if !logits.is_null() {
                // A core bug must panic (DS_ERR_PANIC), never read past its buffer.
                assert_eq!(row.len(), needed, "logits length");
                // SAFETY: `logits` holds `logits_len >= needed` writable floats by contract.
                unsafe { std::ptr::copy_nonoverlapping(row.as_ptr(), logits, needed) };
            }
        });
        if result.is_ok() {
            cached.extend_from_slice(tokens);
        }
        // Keeps the record a prefix of the cache whatever happened.
        cached.truncate(session.len());
        self.len.store(session.len(), Ordering::Release);
        Ok(result?)
    }
}

fn busy() -> Failure {
    Failure::new(
        ds_status::DS_ERR_SESSION_BUSY,
        "the session is in use by another thread or by the ds_generate/ds_chat whose callback \
         is running",
    )
}

/// The default session params: the model's context length, its thread pool, DS_ATTENTION_AUTO,
/// DS_CACHE_F32.
#[no_mangle]
pub extern "C" fn ds_session_default_params() -> ds_session_params {
    ds_session_params {
        context_length: 0,
        threads: 0,
        attention: DS_ATTENTION_AUTO,
        cache_dtype: DS_CACHE_F32,
    }
}

impl ds_session {
    /// Wraps a core session of a model whose tokenizer slot is `text`.
    fn wrap(session: Session, text: Arc<Text>) -> ds_session {
        let tokens = session.tokens().to_vec();
        ds_session {
            len: AtomicUsize::new(session.len()),
            context_length: session.context_length(),
            vocab_size: session.model().config().vocab_size,
            session: Mutex::new(Cache { session, tokens }),
            text,
        }
    }
}

/// Opens an empty session on `model` (`params` may be NULL for the defaults). On success `*out`
/// is a new session to release with ds_session_free; on failure `*out` is set to NULL.
#[no_mangle]
pub unsafe extern "C" fn ds_session_new(
    model: *const ds_model,
    params: *const ds_session_params,
    out: *mut *mut ds_session,
) -> ds_status {
    guard("ds_session_new", || {
        if out.is_null() {
            return Err(Failure::null("out"));
        }
        // SAFETY: `out` is non-NULL and points to writable storage by contract.
        unsafe { out.write(std::ptr::null_mut()) };
        // SAFETY: NULL or a live model by contract.
        let m = unsafe { arg_ref(model, "model") }?;
        // SAFETY: NULL or a valid params struct by contract.
        let options = unsafe { session_options(params) }?;
        let session = Session::new(m.model.clone(), options)?;
        let s = ds_session::wrap(session, m.text.clone());
        // SAFETY: as above.
        unsafe { out.write(Box::into_raw(Box::new(s))) };
        Ok(())
    })
}

/// Writes the session's tokens and KV cache (in its format) to the file `path`, with a
/// versioned header naming the model and a checksum; ds_session_restore reads it back. The
/// file is written under a temporary name and renamed, so `path` never holds half a state.
#[no_mangle]
pub unsafe extern "C" fn ds_session_save(
    session: *const ds_session,
    path: *const c_char,
) -> ds_status {
    guard("ds_session_save", || {
        // SAFETY: NULL or a live session by contract.
        let s = unsafe { arg_ref(session, "session") }?;
        // SAFETY: NULL or a NUL-terminated string by contract.
        let path = unsafe { arg_str(path, "path") }?;
        let cache = s.lock()?;
        Ok(cache.session.save(path)?)
    })
}

/// Opens a session holding the tokens and cache saved at `path` by ds_session_save, on
/// `model` with `params` (NULL: the defaults; the cache keeps the format it was saved in,
/// whatever params.cache_dtype says). DS_ERR_SESSION_STATE if the file is not a state, is
/// truncated or corrupt, or was saved from another model; DS_ERR_CONTEXT_OVERFLOW if it holds
/// more tokens than the context length. On success `*out` is a new session to release with
/// ds_session_free; on failure `*out` is set to NULL.
#[no_mangle]
pub unsafe extern "C" fn ds_session_restore(
    model: *const ds_model,
    path: *const c_char,
    params: *const ds_session_params,
    out: *mut *mut ds_session,
) -> ds_status {
    guard("ds_session_restore", || {
        if out.is_null() {
            return Err(Failure::null("out"));
        }
        // SAFETY: `out` is non-NULL and points to writable storage by contract.
        unsafe { out.write(std::ptr::null_mut()) };
        // SAFETY: NULL or a live model by contract.
        let m = unsafe { arg_ref(model, "model") }?;
        // SAFETY: NULL or a NUL-terminated string by contract.
        let path = unsafe { arg_str(path, "path") }?;
        // SAFETY: NULL or a valid params struct by contract.
        let options = unsafe { session_options(params) }?;
        let session = Session::restore(m.model.clone(), path, options)?;
        let s = ds_session::wrap(session, m.text.clone());
        // SAFETY: as above.
        unsafe { out.write(Box::into_raw(Box::new(s))) };
        Ok(())
    })
}

/// A new session holding `session`'s tokens and cache, without recomputing or copying the
/// cache: both share it until one writes (then at most a 256-token page per layer is copied).
/// Compute a shared prefix (a system prompt, a long document) once and fork a session per
/// request. The fork shares the original's thread pool. On success `*out` is a new session to
/// release with ds_session_free; on failure `*out` is set to NULL.
#[no_mangle]
pub unsafe extern "C" fn ds_session_fork(
    session: *const ds_session,
    out: *mut *mut ds_session,
) -> ds_status {
    guard("ds_session_fork", || {
        if out.is_null() {
            return Err(Failure::null("out"));
        }
        // SAFETY: `out` is non-NULL and points to writable storage by contract.
        unsafe { out.write(std::ptr::null_mut()) };
        // SAFETY: NULL or a live session by contract.
        let s = unsafe { arg_ref(session, "session") }?;
        let fork = ds_session::wrap(s.lock()?.session.fork(), s.text.clone());
        // SAFETY: as above.
        unsafe { out.write(Box::into_raw(Box::new(fork))) };
        Ok(())
    })
}

/// The session's cache format (a DS_CACHE_* value; DS_CACHE_F32 if `session` is NULL or busy).
#[no_mangle]
pub unsafe extern "C" fn ds_session_cache_dtype(session: *const ds_session) -> ds_cache_dtype {
    guard_value("ds_session_cache_dtype", DS_CACHE_F32, || {
        // SAFETY: NULL or a live session by contract.
        let s = unsafe { arg_ref(session, "session") }?;
        Ok(match s.lock()?.session.cache_dtype() {
            CacheDtype::F32 => DS_CACHE_F32,
            CacheDtype::BF16 => DS_CACHE_BF16,
            CacheDtype::Q8_0 => DS_CACHE_Q8_0,
        })
    })
}

/// Releases a session (NULL is a no-op). No other thread may be using it.
#[no_mangle]
pub unsafe extern "C" fn ds_session_free(session: *mut ds_session) {
    guard("ds_session_free", || {
        if !session.is_null() {
            // SAFETY: a pointer from ds_session_new, not freed before, by contract.
            drop(unsafe { Box::from_raw(session) });
        }
        Ok(())
    });
}

/// Appends `n_tokens` tokens to the session's cache and, unless `logits` is NULL, copies the
/// logits after the last one (vocab-size floats; `logits_len` must be >= the vocab size).
/// On any error the session is left unchanged.
#[no_mangle]
pub unsafe extern "C" fn ds_eval(
    session: *mut ds_session,
    tokens: *const ds_token,
    n_tokens: usize,
    logits: *mut f32,
    logits_len: usize,
) -> ds_status {
    guard("ds_eval", || {
        // SAFETY: NULL or a live session by contract; the rest is forwarded.
        unsafe { arg_ref(session, "session")?.eval(tokens, n_tokens, logits, logits_len, false) }
    })
}

/// Like ds_eval, but copies the logits at every new position: `n_tokens` rows of vocab-size
/// floats, so `logits_len` must be >= n_tokens * vocab size (for scoring a text).
#[no_mangle]
pub unsafe extern "C" fn ds_eval_all(
    session: *mut ds_session,
    tokens: *const ds_token,
    n_tokens: usize,
    logits: *mut f32,
    logits_len: usize,
) -> ds_status {
    guard("ds_eval_all", || {
        // SAFETY: NULL or a live session by contract; the rest is forwarded.
        unsafe { arg_ref(session, "session")?.eval(tokens, n_tokens, logits, logits_len, true) }
    })
}

/// Tokens in the session's cache, i.e. the position of the next token (0 if `session` is NULL).
/// Never blocks: while another thread evaluates, it gives the length before that call.
#[no_mangle]
pub unsafe extern "C" fn ds_session_len(session: *const ds_session) -> usize {
    guard_value("ds_session_len", 0, || {
        // SAFETY: NULL or a live session by contract.
        Ok(unsafe { arg_ref(session, "session") }?
            .len
            .load(Ordering::Acquire))
    })
}

/// Longest context this session accepts, in tokens (0 if `session` is NULL).
#[no_mangle]
pub unsafe extern "C" fn ds_session_context_length(session: *const ds_session) -> usize {
    guard_value("ds_session_context_length", 0, || {
        // SAFETY: NULL or a live session by contract.
        Ok(unsafe { arg_ref(session, "session") }?.context_length)
    })
}

/// Keeps only the first `n` cached tokens, e.g. to reuse a shared prompt prefix or to rewind.
/// DS_ERR_INVALID_ARGUMENT if `n` is larger than ds_session_len.
#[no_mangle]
pub unsafe extern "C" fn ds_session_truncate(session: *mut ds_session, n: usize) -> ds_status {
    guard("ds_session_truncate", || {
        // SAFETY: NULL or a live session by contract.
        let s = unsafe { arg_ref(session, "session") }?;
        let mut cache = s.lock()?;
        cache.session.truncate(n)?;
        cache.tokens.truncate(n);
        s.len.store(n, Ordering::Release);
        Ok(())
    })
}

/// Empties the session's cache. Also makes a session usable again after DS_ERR_PANIC.
#[no_mangle]
pub unsafe extern "C" fn ds_session_reset(session: *mut ds_session) -> ds_status {
    guard("ds_session_reset", || {
        // SAFETY: NULL or a live session by contract.
        let s = unsafe { arg_ref(session, "session") }?;
        let mut cache = match s.session.try_lock() {
            Ok(cache) => cache,
            Err(TryLockError::Poisoned(p)) => {
                // The cache may hold a half-appended step; emptying it makes the state whole.
                s.session.clear_poison();
                p.into_inner()
            }
            Err(TryLockError::WouldBlock) => return Err(busy()),
        };
        cache.reset();
        s.len.store(0, Ordering::Release);
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{ds_model_free, ds_model_load, ds_model_params};
    use std::ptr;

    /// A v3_tiny session on one thread, and its model (freed by the caller).
    fn open() -> (*mut ds_model, *mut ds_session) {
        let dir = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../deepseek-core/tests/fixtures/v3_tiny\0"
        );
        let (mut m, mut s) = (ptr::null_mut(), ptr::null_mut());
        // SAFETY: valid arguments; the out pointers are written on success.
        unsafe {
            let params = ds_model_params {
                threads: 1,
                ..crate::ds_model_default_params()
            };
            assert_eq!(
                ds_model_load(dir.as_ptr().cast(), &params, &mut m),
                ds_status::DS_OK
            );
            assert_eq!(ds_session_new(m, ptr::null(), &mut s), ds_status::DS_OK);
        }
        (m, s)
    }

    #[test]
    fn a_session_in_use_elsewhere_is_busy_not_blocked() {
        let (m, s) = open();
        // SAFETY: `s` and `m` are live until freed at the end; the tokens outlive each call.
        unsafe {
            let held = (*s).session.lock().unwrap();
            let busy = ds_status::DS_ERR_SESSION_BUSY;
            assert_eq!(ds_eval(s, [1, 2].as_ptr(), 2, ptr::null_mut(), 0), busy);
            assert_eq!(ds_eval_all(s, [1].as_ptr(), 1, ptr::null_mut(), 0), busy);
            assert_eq!(ds_session_truncate(s, 0), busy);
            assert_eq!(ds_session_reset(s), busy);
            assert_eq!(ds_session_len(s), 0);
            drop(held);
            assert_eq!(
                ds_eval(s, [1, 2].as_ptr(), 2, ptr::null_mut(), 0),
                ds_status::DS_OK
            );
            assert_eq!(ds_session_len(s), 2);
            ds_session_free(s);
            ds_model_free(m);
        }
    }

    #[test]
    fn a_panic_poisons_the_session_until_reset() {
        let (m, s) = open();
        // SAFETY: as above; the session is only shared with the scoped thread.
        unsafe {
            assert_eq!(
                ds_eval(s, [1, 2].as_ptr(), 2, ptr::null_mut(), 0),
                ds_status::DS_OK
            );
            let session = &*s;
            std::thread::scope(|t| {
                t.spawn(|| {
                    let _held = session.session.lock().unwrap();
                    panic!("simulated panic inside an evaluation");
                })
                .join()
                .unwrap_err();
            });
            assert_eq!(
                ds_eval(s, [3].as_ptr(), 1, ptr::null_mut(), 0),
                ds_status::DS_ERR_PANIC
            );
            assert_eq!(ds_session_truncate(s, 0), ds_status::DS_ERR_PANIC);
            assert_eq!(ds_session_reset(s), ds_status::DS_OK);
            assert_eq!(ds_session_len(s), 0);
            assert_eq!(
                ds_eval(s, [3].as_ptr(), 1, ptr::null_mut(), 0),
                ds_status::DS_OK
            );
            ds_session_free(s);
            ds_model_free(m);
        }
    }
}
