//! The C API from many threads (issue 12) on r1-nano: eight threads chat at once on one
//! ds_model, each with its own ds_session, and get exactly the text of the same calls made one
//! after another (and transformers' answers); the model is freed while they run; sessions are
//! created on one thread and used and freed on another; each thread reads its own
//! ds_last_error while the others fail differently.

use std::ffi::{c_char, c_void, CStr, CString};
use std::path::PathBuf;
use std::ptr;
use std::sync::Barrier;

use deepseek::*;
use serde_json::Value;

fn nano_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../models/r1-nano")
}

fn last_error() -> String {
    // SAFETY: ds_last_error never returns NULL; copied before the next call.
    unsafe { CStr::from_ptr(ds_last_error()) }
        .to_string_lossy()
        .into_owned()
}

fn check(status: ds_status) {
    assert_eq!(status, ds_status::DS_OK, "{}", last_error());
}

/// A raw handle handed between threads: ds_model is shareable and a ds_session movable.
struct Handle<T>(*mut T);
impl<T> Clone for Handle<T> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<T> Copy for Handle<T> {}
// SAFETY: the header allows sharing a model and moving a session between threads.
unsafe impl<T> Send for Handle<T> {}
// SAFETY: as above (a model is used concurrently; sessions are used by one thread at a time).
unsafe impl<T> Sync for Handle<T> {}

fn load_nano() -> Handle<ds_model> {
    let path = CString::new(nano_dir().to_str().unwrap()).unwrap();
    let params = ds_model_params {
        threads: 2,
        ..ds_model_default_params()
    };
    let mut m = ptr::null_mut();
    // SAFETY: valid string, params and out pointer.
    check(unsafe { ds_model_load(path.as_ptr(), &params, &mut m) });
    Handle(m)
}

/// Session `i`'s params: its own pool or the model's, and each MLA path.
fn new_session(model: Handle<ds_model>, i: usize) -> Handle<ds_session> {
    let mut p = ds_session_default_params();
    p.context_length = 512;
    p.threads = [0, 1, 2][i % 3];
    p.attention = [
        DS_ATTENTION_AUTO,
        DS_ATTENTION_ABSORBED,
        DS_ATTENTION_EXPANDED,
    ][(i / 3) % 3];
    let mut s = ptr::null_mut();
    // SAFETY: a live model, valid params and out pointer.
    check(unsafe { ds_session_new(model.0, &p, &mut s) });
    Handle(s)
}

unsafe extern "C" fn collect(
    user: *mut c_void,
    kind: ds_event_kind,
    text: *const c_char,
    len: usize,
) -> bool {
    // SAFETY: `user` is the Vec passed to ds_chat; `text` holds `len` bytes during the call.
    let (out, bytes) = unsafe {
        (
            &mut *user.cast::<Vec<(ds_event_kind, String)>>(),
            std::slice::from_raw_parts(text.cast::<u8>(), len),
        )
    };
    out.push((kind, String::from_utf8(bytes.to_vec()).unwrap()));
    true
}

/// Greedy ds_chat of one question: the answer (content deltas) and every delta.
fn ask(session: Handle<ds_session>, question: &str) -> (String, Vec<(ds_event_kind, String)>) {
    let mut p = ds_generate_default_params();
    p.temperature = 0.0;
    p.max_tokens = 400;
    let (role, content) = (c"user", CString::new(question).unwrap());
    let message = ds_message {
        role: role.as_ptr(),
        content: content.as_ptr(),
        tool_calls_json: std::ptr::null(),
        tool_call_id: std::ptr::null(),
    };
    let mut deltas: Vec<(ds_event_kind, String)> = Vec::new();
    let mut r = ds_generate_default_result();
    // SAFETY: a live session used by this thread only, one valid message, valid params.
    check(unsafe {
        ds_chat(
            session.0,
            &message,
            1,
            &p,
            Some(collect),
            (&mut deltas as *mut Vec<_>).cast(),
            &mut r,
        )
    });
    assert_eq!(
        r.finish_reason,
        ds_finish_reason::DS_FINISH_STOP,
        "{question}"
    );
    let answer: String = deltas
        .iter()
        .filter(|(k, _)| *k == ds_event_kind::DS_EVENT_CONTENT)
        .map(|(_, t)| t.as_str())
        .collect();
    (answer.trim().to_string(), deltas)
}

fn ds_generate_default_result() -> ds_generate_result {
    ds_generate_result {
        finish_reason: ds_finish_reason::DS_FINISH_NONE,
        prompt_tokens: 0,
        cached_tokens: 0,
        completion_tokens: 0,
        prefill_secs: 0.0,
        decode_secs: 0.0,
        prefill_tok_s: 0.0,
        decode_tok_s: 0.0,
    }
}

/// Eight held-out questions transformers answered correctly, with its answers.
fn questions() -> Vec<(String, String)> {
    let heldout: Value =
        serde_json::from_str(&std::fs::read_to_string(nano_dir().join("heldout.json")).unwrap())
            .unwrap();
    heldout["questions"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|q| q["correct"].as_bool() == Some(true))
        .skip(8) // not the questions deepseek-core's concurrency test asks
        .take(8)
        .map(|q| {
            (
                q["question"].as_str().unwrap().to_string(),
                q["answer"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

#[test]
fn eight_threads_chat_on_one_model_as_they_would_one_at_a_time() {
    let qa = questions();
    let model = load_nano();
    let alone: Vec<_> = (0..8)
        .map(|i| {
            let s = new_session(model, i);
            let out = ask(s, &qa[i].0);
            // SAFETY: created above, freed once.
            unsafe { ds_session_free(s.0) };
            out
        })
        .collect();
    for (i, (answer, _)) in alone.iter().enumerate() {
        assert_eq!(*answer, qa[i].1, "{} alone", qa[i].0);
    }

    // Sessions opened here and moved to the threads that use and free them; the model is
    // freed as soon as they have started: their sessions keep the weights alive.
    let sessions: Vec<_> = (0..8).map(|i| new_session(model, i)).collect();
    let start = Barrier::new(9);
    let together: Vec<_> = std::thread::scope(|scope| {
        let handles: Vec<_> = sessions
            .iter()
            .enumerate()
            .map(|(i, &s)| {
                let (start, question) = (&start, &qa[i].0);
                scope.spawn(move || {
                    start.wait();
                    let out = ask(s, question);
                    // SAFETY: this thread is the session's only user; freed once.
                    unsafe { ds_session_free(s.0) };
                    out
                })
            })
            .collect();
        start.wait();
        // SAFETY: from ds_model_load, freed once; no call takes the model pointer after this.
        unsafe { ds_model_free(model.0) };
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for i in 0..8 {
        assert_eq!(together[i], alone[i], "thread {i}: {}", qa[i].0);
    }
}

/// ds_last_error is per thread: eight threads fail in eight ways at once, and each reads the
/// message of its own failure.
#[test]
fn each_thread_reads_its_own_last_error() {
    let model = load_nano();
    let start = Barrier::new(8);
    std::thread::scope(|scope| {
        for i in 0..8usize {
            let start = &start;
            scope.spawn(move || {
                let s = new_session(model, i % 3);
                start.wait();
                for round in 0..50 {
                    // A distinct bad token per thread and round: the message names it.
                    let bad = 100_000 + (i * 1000 + round) as ds_token;
                    let tokens = [1, bad];
                    // SAFETY: a live session used by this thread only; 2 readable tokens.
                    let st = unsafe { ds_eval(s.0, tokens.as_ptr(), 2, ptr::null_mut(), 0) };
                    assert_eq!(st, ds_status::DS_ERR_TOKEN_OUT_OF_RANGE);
                    let msg = last_error();
                    assert!(msg.contains(&bad.to_string()), "thread {i}: {msg}");
                }
                // SAFETY: freed once, by its only user.
                unsafe { ds_session_free(s.0) };
            });
        }
    });
    // SAFETY: from ds_model_load, freed once after every thread ended.
    unsafe { ds_model_free(model.0) };
}
