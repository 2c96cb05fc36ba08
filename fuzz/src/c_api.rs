//! The C API's string and parameter inputs: a byte string decoded as a short program of calls
//! (tokenize, detokenize, generate, chat, eval, truncate, open a session, load a model or a
//! tokenizer, status lookups) on r1-nano, with fuzzed strings (UTF-8 or not, cut by NULs),
//! NULL pointers where the header allows them, and sizes and sampling values from tiny to
//! huge, NaN and infinite. Every call must return a status with a message, never DS_ERR_PANIC,
//! and successful results must agree with the header's promises.

use std::ffi::{c_char, c_void, CStr, CString};
use std::ptr::{null, null_mut};
use std::sync::OnceLock;

use deepseek::*;

/// A pointer to r1-nano's handle, loaded once per process on one thread.
struct Nano(*mut ds_model);
// SAFETY: ds_model is Send + Sync (the C API asserts it at compile time).
unsafe impl Send for Nano {}
// SAFETY: as above.
unsafe impl Sync for Nano {}

/// capi's setup, run before fuzzing starts: loads r1-nano.
pub fn init_capi() {
    crate::init();
    nano();
}

fn nano() -> *mut ds_model {
    static MODEL: OnceLock<Nano> = OnceLock::new();
    MODEL
        .get_or_init(|| {
            let path =
                CString::new(crate::repo().join("models/r1-nano").to_str().unwrap()).unwrap();
            let params = ds_model_params {
                threads: 1,
                ..ds_model_default_params()
            };
            let mut model = null_mut();
            // SAFETY: valid string, params and out pointer.
            let status = unsafe { ds_model_load(path.as_ptr(), &params, &mut model) };
            assert_eq!(status, ds_status::DS_OK, "{}", last_error());
            Nano(model)
        })
        .0
}

fn last_error() -> String {
    // SAFETY: ds_last_error never returns NULL and the string lives until the next call.
    unsafe { CStr::from_ptr(ds_last_error()) }
        .to_str()
        .expect("ds_last_error is UTF-8")
        .to_string()
}

/// A failed call must say why, and must not be a caught panic.
fn check(status: ds_status, call: &str) -> ds_status {
    if status != ds_status::DS_OK {
        assert_ne!(status, ds_status::DS_ERR_PANIC, "{call}: {}", last_error());
        let message = last_error();
        assert!(message.starts_with(call), "{call}: message {message:?}");
    }
    status
}

/// Reads the fuzzer's bytes as values; past the end everything reads as zero.
struct Input<'a>(&'a [u8]);

impl Input<'_> {
    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    fn byte(&mut self) -> u8 {
        match self.0.split_first() {
            Some((&b, rest)) => {
                self.0 = rest;
                b
            }
            None => 0,
        }
    }

    /// True about once in `n` (when the next byte is a multiple of `n`).
    fn one_in(&mut self, n: u8) -> bool {
        self.byte().is_multiple_of(n)
    }

    fn bytes<const N: usize>(&mut self) -> [u8; N] {
        let mut out = [0u8; N];
        for b in &mut out {
            *b = self.byte();
        }
        out
    }

    fn u32(&mut self) -> u32 {
        u32::from_le_bytes(self.bytes())
    }

    fn u64(&mut self) -> u64 {
        u64::from_le_bytes(self.bytes())
    }

    /// A size: usually small, sometimes huge.
    fn size(&mut self) -> usize {
        match self.byte() % 8 {
            0 => 0,
            1..=5 => self.byte() as usize,
            6 => self.u64() as usize,
            _ => usize::MAX - self.byte() as usize,
        }
    }

    /// A sampling value: the C API's "default" (-1), ordinary ones, and any bit pattern.
    fn float(&mut self) -> f32 {
        match self.byte() % 8 {
            0 => -1.0,
            1 => 0.0,
            2 => 1.0,
            3 => self.byte() as f32 / 255.0,
            4 => self.byte() as f32 / 32.0 - 4.0,
            5 => f32::NAN,
            6 => f32::INFINITY,
            _ => f32::from_bits(self.u32()),
        }
    }

    /// A NUL-terminated string: the bytes up to the next NUL (C cannot see past it).
    fn string(&mut self) -> CString {
        let end = self.0.iter().position(|&b| b == 0).unwrap_or(self.0.len());
        let s = CString::new(&self.0[..end]).expect("no NUL inside");
        self.0 = &self.0[(end + 1).min(self.0.len())..];
        s
    }

    /// A token id: mostly within r1-nano's 324, sometimes anything.
    fn token(&mut self) -> ds_token {
        match self.byte() % 4 {
            0 => self.u32(),
            _ => self.u32() % 330,
        }
    }
}

/// Generation parameters with their stop strings (owned here; `params.stop` points into them).
struct Params {
    params: ds_generate_params,
    _strings: Vec<CString>,
    _pointers: Vec<*const c_char>,
}

fn params(input: &mut Input) -> Option<Params> {
    if input.one_in(4) {
        return None; // NULL: the defaults
    }
    let mut p = ds_generate_default_params();
    p.max_tokens = input.size();
    p.temperature = input.float();
    p.top_k = match input.byte() % 4 {
        0 => -1,
        1 => input.byte() as i32,
        _ => input.u32() as i32,
    };
    p.top_p = input.float();
    p.min_p = input.float();
    p.repetition_penalty = input.float();
    p.frequency_penalty = input.float();
    p.presence_penalty = input.float();
    p.seed = input.u64();
    p.has_seed = input.one_in(2);
    let n_stop = (input.byte() % 4) as usize;
    let strings: Vec<CString> = (0..n_stop).map(|_| input.string()).collect();
    let mut pointers: Vec<*const c_char> = strings.iter().map(|s| s.as_ptr()).collect();
    p.n_stop = n_stop;
    p.stop = match input.byte() % 8 {
        // A NULL string in the list, or a NULL list: DS_ERR_NULL_POINTER when n_stop > 0.
        0 if n_stop > 0 => {
            pointers[0] = null();
            pointers.as_ptr()
        }
        1 => null(),
        _ => pointers.as_ptr(),
    };
    Some(Params {
        params: p,
        _strings: strings,
        _pointers: pointers,
    })
}

/// What the generation callback sees: the session (re-entering it must fail with BUSY) and how
/// many more deltas to accept.
struct Listener {
    session: *mut ds_session,
    budget: u8,
    events: usize,
}

unsafe extern "C" fn on_text(
    user: *mut c_void,
    kind: ds_event_kind,
    text: *const c_char,
    len: usize,
) -> bool {
    // SAFETY: `user` is the Listener passed to ds_generate / ds_chat.
    let l = unsafe { &mut *user.cast::<Listener>() };
    assert!(len > 0, "an empty delta");
    // SAFETY: `text` holds `len` bytes and a NUL during the call.
    let bytes = unsafe { std::slice::from_raw_parts(text.cast::<u8>(), len + 1) };
    assert_eq!(bytes[len], 0, "delta not NUL-terminated");
    std::str::from_utf8(&bytes[..len]).expect("a delta of whole UTF-8 characters");
    assert!(matches!(
        kind,
        ds_event_kind::DS_EVENT_CONTENT | ds_event_kind::DS_EVENT_REASONING
    ));
    if l.events == 0 {
        let token: ds_token = 0;
        // SAFETY: a live session and one readable token.
        let status = unsafe { ds_eval(l.session, &token, 1, null_mut(), 0) };
        assert_eq!(
            status,
            ds_status::DS_ERR_SESSION_BUSY,
            "re-entering the session"
        );
    }
    l.events += 1;
    if l.budget == 0 {
        return false;
    }
    l.budget -= 1;
    true
}

/// Checks a ds_generate / ds_chat outcome against the header.
fn check_generation(
    status: ds_status,
    call: &str,
    r: &ds_generate_result,
    session: *mut ds_session,
) {
    let status = check(status, call);
    // SAFETY: a live session.
    let (len, context) = unsafe { (ds_session_len(session), ds_session_context_length(session)) };
    assert!(
        len <= context,
        "{len} cached tokens in a context of {context}"
    );
    if status == ds_status::DS_OK {
        assert_ne!(r.finish_reason, ds_finish_reason::DS_FINISH_NONE);
        assert!(r.cached_tokens <= r.prompt_tokens);
        assert!(r.prompt_tokens + r.completion_tokens <= context + 1);
    } else {
        assert_eq!(r.finish_reason, ds_finish_reason::DS_FINISH_NONE);
    }
}

/// Runs the program in `data` (see the module comment).
pub fn capi(data: &[u8]) {
    let model = nano();
    let mut input = Input(data);
    // SAFETY (the whole function): every pointer passed below is NULL where the header allows
    // it, or points to live storage of the size passed with it.
    unsafe {
        let vocab = ds_model_vocab_size(model);
        let mut sp = ds_session_default_params();
        sp.context_length = 1 + input.byte() as usize % 96;
        sp.attention = input.byte() as u32 % 3;
        let mut session = null_mut();
        assert_eq!(ds_session_new(model, &sp, &mut session), ds_status::DS_OK);
        let mut ops = 0;
        while !input.is_empty() && ops < 12 {
            ops += 1;
            match input.byte() % 13 {
                0 => {
                    let text = input.string();
                    let add_special = input.one_in(2);
                    let out_len = input.size().min(4096);
                    let mut out = vec![0 as ds_token; out_len];
                    let out_ptr = if input.one_in(4) {
                        null_mut()
                    } else {
                        out.as_mut_ptr()
                    };
                    let mut n = usize::MAX;
                    let s =
                        ds_tokenize(model, text.as_ptr(), add_special, out_ptr, out_len, &mut n);
                    if check(s, "ds_tokenize") == ds_status::DS_OK {
                        assert!(n <= out_len);
                        assert!(out[..n].iter().all(|&id| (id as usize) < vocab));
                    }
                }
                1 => {
                    let ids: Vec<ds_token> =
                        (0..input.byte() % 16).map(|_| input.token()).collect();
                    let skip = input.one_in(2);
                    let out_len = input.size().min(1 << 16);
                    let mut out = vec![1 as c_char; out_len];
                    let mut n = usize::MAX;
                    let ids_ptr = if ids.is_empty() && input.one_in(2) {
                        null()
                    } else {
                        ids.as_ptr()
                    };
                    let s = ds_detokenize(
                        model,
                        ids_ptr,
                        ids.len(),
                        skip,
                        out.as_mut_ptr(),
                        out_len,
                        &mut n,
                    );
                    if check(s, "ds_detokenize") == ds_status::DS_OK {
                        assert!(n < out_len && out[n] == 0, "text of {n} bytes in {out_len}");
                        std::str::from_utf8(std::slice::from_raw_parts(
                            out.as_ptr().cast::<u8>(),
                            n,
                        ))
                        .expect("detokenized text is UTF-8");
                    }
                }
                2 | 3 => {
                    let chat = input.one_in(2);
                    let p = params(&mut input);
                    let pp = p.as_ref().map_or(null(), |p| &p.params as *const _);
                    let mut listener = Listener {
                        session,
                        budget: input.byte() % 8,
                        events: 0,
                    };
                    let cb: ds_event_cb = if input.one_in(8) { None } else { Some(on_text) };
                    let user = (&mut listener as *mut Listener).cast::<c_void>();
                    let mut r = std::mem::zeroed::<ds_generate_result>();
                    r.finish_reason = ds_finish_reason::DS_FINISH_STOP;
                    if chat {
                        let n = (input.byte() % 5) as usize;
                        let strings: Vec<(CString, CString)> =
                            (0..n).map(|_| (input.string(), input.string())).collect();
                        let mut messages: Vec<ds_message> = strings
                            .iter()
                            .map(|(role, content)| ds_message {
                                role: role.as_ptr(),
                                content: content.as_ptr(),
                                tool_calls_json: std::ptr::null(),
                                tool_call_id: std::ptr::null(),
                            })
                            .collect();
                        if let Some(m) = messages.first_mut() {
                            match input.byte() % 8 {
                                0 => m.role = null(),
                                1 => m.content = null(),
                                2 => m.role = c"user".as_ptr(),
                                3 => m.role = c"assistant".as_ptr(),
                                _ => {}
                            }
                        }
                        let ptr = if n == 0 && input.one_in(2) {
                            null()
                        } else {
                            messages.as_ptr()
                        };
                        let s = ds_chat(session, ptr, n, pp, cb, user, &mut r);
                        check_generation(s, "ds_chat", &r, session);
                    } else {
                        let prompt = input.string();
                        let s = ds_generate(session, prompt.as_ptr(), pp, cb, user, &mut r);
                        check_generation(s, "ds_generate", &r, session);
                    }
                }
                4 | 5 => {
                    let all = input.one_in(2);
                    let tokens: Vec<ds_token> =
                        (0..input.byte() % 8).map(|_| input.token()).collect();
                    let rows = if all { tokens.len() } else { 1 };
                    let logits_len = match input.byte() % 4 {
                        0 => 0,
                        1 => rows * vocab,
                        2 => (rows * vocab).saturating_sub(1),
                        _ => rows * vocab + input.byte() as usize,
                    };
                    let mut logits = vec![0f32; logits_len];
                    let lp = if input.one_in(4) {
                        null_mut()
                    } else {
                        logits.as_mut_ptr()
                    };
                    let before = ds_session_len(session);
                    let s = if all {
                        ds_eval_all(session, tokens.as_ptr(), tokens.len(), lp, logits_len)
                    } else {
                        ds_eval(session, tokens.as_ptr(), tokens.len(), lp, logits_len)
                    };
                    let after = ds_session_len(session);
                    if check(s, "ds_eval") == ds_status::DS_OK {
                        assert_eq!(after, before + tokens.len());
                        if !lp.is_null() {
                            assert!(logits[..rows * vocab].iter().all(|x| x.is_finite()));
                        }
                    } else {
                        assert_eq!(after, before, "a failed eval changed the session");
                    }
                }
                6 => {
                    let n = input.size();
                    let before = ds_session_len(session);
                    let s = check(ds_session_truncate(session, n), "ds_session_truncate");
                    assert_eq!(s == ds_status::DS_OK, n <= before);
                    assert_eq!(ds_session_len(session), before.min(n));
                }
                7 => {
                    check(ds_session_reset(session), "ds_session_reset");
                    assert_eq!(ds_session_len(session), 0);
                }
                8 => {
                    let mut p = ds_session_default_params();
                    p.context_length = input.size();
                    p.threads = match input.byte() % 4 {
                        0 => input.byte() as u32 % 4,
                        _ => input.u32(),
                    };
                    p.attention = input.u32();
                    let mut other = null_mut();
                    let s = ds_session_new(model, &p, &mut other);
                    if check(s, "ds_session_new") == ds_status::DS_OK {
                        assert!(!other.is_null());
                    } else {
                        assert!(other.is_null());
                    }
                    ds_session_free(other);
                }
                9 => {
                    let path = input.string();
                    let mut p = ds_model_default_params();
                    p.threads = match input.byte() % 4 {
                        0 => 1,
                        1 => input.u32(),
                        _ => input.byte() as u32 % 4,
                    };
                    p.dtype = input.u32() % 9;
                    let mut m = null_mut();
                    let pp = if input.one_in(4) {
                        null()
                    } else {
                        &p as *const _
                    };
                    let path_ptr = if input.one_in(8) {
                        null()
                    } else {
                        path.as_ptr()
                    };
                    let s = ds_model_load(path_ptr, pp, &mut m);
                    assert_eq!(check(s, "ds_model_load") == ds_status::DS_OK, !m.is_null());
                    ds_model_free(m);
                }
                10 => {
                    let dir = input.string();
                    let s = ds_model_load_tokenizer(model, dir.as_ptr());
                    check(s, "ds_model_load_tokenizer");
                    assert!(
                        ds_model_has_tokenizer(model),
                        "a failed load dropped the tokenizer"
                    );
                }
                11 => {
                    let status = input.u32() as i32;
                    let s = ds_status_str(status);
                    assert!(!s.is_null());
                    CStr::from_ptr(s).to_str().expect("status names are UTF-8");
                }
                _ => {
                    let token = input.token();
                    let _ = ds_model_is_eos(model, token);
                    let out_len = input.byte() as usize % 4;
                    let mut out = [0 as ds_token; 4];
                    let n = ds_model_eos_tokens(model, out.as_mut_ptr(), out_len);
                    assert!(out[..n.min(out_len)]
                        .iter()
                        .all(|&id| (id as usize) < vocab));
                }
            }
        }
        ds_session_free(session);
    }
}
