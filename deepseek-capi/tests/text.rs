//! The text half of the C API, called from Rust on `v3_r1tok` (a tiny random DeepSeek-V3 with
//! R1's vocabulary) and the real R1 tokenizer: ds_tokenize against transformers' ids, greedy
//! ds_chat / ds_generate against transformers' continuation, cache reuse across turns,
//! cancellation and re-entry from the callback. (C-side error paths: tests/c/errors.c.)

use std::ffi::{c_char, c_void, CStr, CString};
use std::path::PathBuf;
use std::ptr;

use deepseek::*;
use serde_json::Value;

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../deepseek-core/tests/fixtures")
        .join(name)
}

fn c_path(name: &str) -> CString {
    CString::new(fixture(name).to_str().unwrap()).unwrap()
}

fn read_json(name: &str) -> Value {
    serde_json::from_str(&std::fs::read_to_string(fixture(name)).unwrap()).unwrap()
}

fn ids(v: &Value) -> Vec<ds_token> {
    let ids = v.as_array().unwrap().iter();
    ids.map(|x| x.as_u64().unwrap() as ds_token).collect()
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

/// `status` and a last error containing `needle`.
fn expect(status: ds_status, want: ds_status, needle: &str) {
    let msg = last_error();
    assert_eq!(status, want, "{msg}");
    assert!(msg.contains(needle), "{msg:?} lacks {needle:?}");
}

/// A model freed on drop.
struct Model(*mut ds_model);
// SAFETY: ds_model is documented as shareable across threads.
unsafe impl Sync for Model {}
unsafe impl Send for Model {}
impl Drop for Model {
    fn drop(&mut self) {
        // SAFETY: from ds_model_load, freed once.
        unsafe { ds_model_free(self.0) }
    }
}

/// A session freed on drop.
struct Session(*mut ds_session);
impl Drop for Session {
    fn drop(&mut self) {
        // SAFETY: from ds_session_new, freed once.
        unsafe { ds_session_free(self.0) }
    }
}

fn load(name: &str) -> Model {
    let params = ds_model_params {
        threads: 1,
        ..ds_model_default_params()
    };
    let mut m = ptr::null_mut();
    // SAFETY: valid string, params and out pointer.
    check(unsafe { ds_model_load(c_path(name).as_ptr(), &params, &mut m) });
    Model(m)
}

/// v3_r1tok with the R1 tokenizer, which lives in another folder.
fn r1() -> Model {
    let m = load("v3_r1tok");
    // SAFETY: a live model and a valid string.
    unsafe {
        assert!(!ds_model_has_tokenizer(m.0));
        check(ds_model_load_tokenizer(
            m.0,
            c_path("tokenizers/deepseek-r1").as_ptr(),
        ));
        assert!(ds_model_has_tokenizer(m.0));
    }
    m
}

fn session(model: &Model, context_length: usize) -> Session {
    let params = ds_session_params {
        context_length,
        ..ds_session_default_params()
    };
    let mut s = ptr::null_mut();
    // SAFETY: a live model, valid params and out pointer.
    check(unsafe { ds_session_new(model.0, &params, &mut s) });
    Session(s)
}

fn tokenize(model: &Model, text: &str, add_special: bool) -> Vec<ds_token> {
    let text = CString::new(text).unwrap();
    let mut n = usize::MAX;
    // SAFETY: a live model, a valid string; the query writes nothing to the NULL buffer.
    unsafe {
        let st = ds_tokenize(
            model.0,
            text.as_ptr(),
            add_special,
            ptr::null_mut(),
            0,
            &mut n,
        );
        let mut out = vec![DS_TOKEN_NONE; n];
        if n > 0 {
            expect(st, ds_status::DS_ERR_BUFFER_TOO_SMALL, "need");
        }
        check(ds_tokenize(
            model.0,
            text.as_ptr(),
            add_special,
            out.as_mut_ptr(),
            out.len(),
            &mut n,
        ));
        assert_eq!(n, out.len());
        out
    }
}

fn detokenize(model: &Model, tokens: &[ds_token], skip_special: bool) -> String {
    let mut n = usize::MAX;
    // SAFETY: a live model and valid buffers of the lengths given.
    unsafe {
        let st = ds_detokenize(
            model.0,
            tokens.as_ptr(),
            tokens.len(),
            skip_special,
            ptr::null_mut(),
            0,
            &mut n,
        );
        expect(st, ds_status::DS_ERR_BUFFER_TOO_SMALL, "and a NUL");
        let mut out = vec![0x55u8; n + 1];
        let st = ds_detokenize(
            model.0,
            tokens.as_ptr(),
            tokens.len(),
            skip_special,
            out.as_mut_ptr().cast(),
            n,
            &mut n,
        );
        expect(st, ds_status::DS_ERR_BUFFER_TOO_SMALL, "and a NUL");
        assert!(out.iter().all(|&b| b == 0x55), "a failed call wrote");
        check(ds_detokenize(
            model.0,
            tokens.as_ptr(),
            tokens.len(),
            skip_special,
            out.as_mut_ptr().cast(),
            out.len(),
            &mut n,
        ));
        assert_eq!((n + 1, out[n]), (out.len(), 0));
        out.truncate(n);
        String::from_utf8(out).unwrap()
    }
}

#[test]
fn tokenize_matches_transformers_on_the_corpus() {
    let model = r1();
    let corpus = read_json("tokenizers/corpus.json");
    let strings = corpus["strings"].as_array().unwrap();
    let expected = &corpus["expected"]["deepseek-r1"];
    // Plain and multilingual text, code, the empty string, and special tokens in the text.
    for i in [0, 6, 8, 12, 18, 22, 23] {
        let text = strings[i].as_str().unwrap();
        let want = ids(&expected["ids"][i]);
        assert_eq!(tokenize(&model, text, false), want, "{text:?}");
        // With add_special the ids are a raw prompt's: BOS first, exactly once.
        let with_bos = tokenize(&model, text, true);
        assert_eq!(with_bos[0], 0, "{text:?}");
        let rest = if want.first() == Some(&0) {
            &want[1..]
        } else {
            &want[..]
        };
        assert_eq!(with_bos[1..], *rest, "{text:?}");
        let decoded = expected["decoded"][i].as_str().unwrap();
        assert_eq!(detokenize(&model, &want, false), decoded, "{text:?}");
        let skipped = expected["decoded_skip_special"][i].as_str().unwrap();
        assert_eq!(detokenize(&model, &want, true), skipped, "{text:?}");
    }
}

/// Collects a generation's deltas; optionally cancels after `cancel_after` of them.
#[derive(Default)]
struct Collected {
    events: Vec<(ds_event_kind, String)>,
    cancel_after: Option<usize>,
    /// A session to re-enter from the callback (must be busy).
    reenter: Option<*mut ds_session>,
    reentry: Vec<ds_status>,
}

impl Collected {
    fn text(&self, kind: ds_event_kind) -> String {
        let of_kind = self.events.iter().filter(|e| e.0 == kind);
        of_kind.map(|e| e.1.as_str()).collect()
    }
}

unsafe extern "C" fn collect(
    user_data: *mut c_void,
    kind: ds_event_kind,
    text: *const c_char,
    len: usize,
) -> bool {
    // SAFETY: `user_data` is the `Collected` passed to the call; `text` holds `len` bytes and a
    // NUL, valid during this call.
    unsafe {
        let c = &mut *user_data.cast::<Collected>();
        let bytes = std::slice::from_raw_parts(text.cast::<u8>(), len + 1);
        assert_eq!(bytes[len], 0, "NUL-terminated");
        let text = std::str::from_utf8(&bytes[..len]).expect("whole UTF-8 characters");
        assert!(!text.is_empty());
        c.events.push((kind, text.to_string()));
        if let Some(s) = c.reenter {
            let prompt = c"hi";
            c.reentry.push(ds_generate(
                s,
                prompt.as_ptr(),
                ptr::null(),
                None,
                ptr::null_mut(),
                ptr::null_mut(),
            ));
            c.reentry
                .push(ds_eval(s, [5].as_ptr(), 1, ptr::null_mut(), 0));
            c.reentry.push(ds_session_reset(s));
        }
        c.cancel_after.is_none_or(|n| c.events.len() < n)
    }
}

fn greedy(max_tokens: usize) -> ds_generate_params {
    ds_generate_params {
        max_tokens,
        temperature: 0.0,
        ..ds_generate_default_params()
    }
}

/// ds_chat with one message per (role, content).
fn chat(
    s: &Session,
    messages: &[(&str, &str)],
    params: &ds_generate_params,
    c: &mut Collected,
) -> ds_generate_result {
    let owned: Vec<(CString, CString)> = messages
        .iter()
        .map(|(r, t)| (CString::new(*r).unwrap(), CString::new(*t).unwrap()))
        .collect();
    let msgs: Vec<ds_message> = owned
        .iter()
        .map(|(r, t)| ds_message {
            role: r.as_ptr(),
            content: t.as_ptr(),
            tool_calls_json: std::ptr::null(),
            tool_call_id: std::ptr::null(),
        })
        .collect();
    // SAFETY: zeroes are a valid result (DS_FINISH_NONE).
    let mut result: ds_generate_result = unsafe { std::mem::zeroed() };
    // SAFETY: a live session; messages, params, callback data and result valid for the call.
    check(unsafe {
        ds_chat(
            s.0,
            msgs.as_ptr(),
            msgs.len(),
            params,
            Some(collect),
            (c as *mut Collected).cast(),
            &mut result,
        )
    });
    result
}

fn generate(
    s: &Session,
    prompt: &str,
    params: &ds_generate_params,
) -> (String, ds_generate_result) {
    let prompt = CString::new(prompt).unwrap();
    let mut c = Collected::default();
    // SAFETY: zeroes are a valid result (DS_FINISH_NONE).
    let mut result: ds_generate_result = unsafe { std::mem::zeroed() };
    // SAFETY: as in `chat`.
    check(unsafe {
        ds_generate(
            s.0,
            prompt.as_ptr(),
            params,
            Some(collect),
            (&mut c as *mut Collected).cast(),
            &mut result,
        )
    });
    let text: String = c.events.iter().map(|e| e.1.as_str()).collect();
    (text, result)
}

#[test]
fn greedy_chat_matches_transformers() {
    let golden = read_json("v3_r1tok/golden.json");
    let model = r1();
    let prompt = golden["prompt"].as_str().unwrap();
    assert_eq!(tokenize(&model, prompt, false), ids(&golden["input_ids"]));
    let want = ids(&golden["greedy_ids"]);
    let want_text = detokenize(&model, &want, true);

    let s = session(&model, 0);
    let mut c = Collected::default();
    let r = chat(&s, &[("user", "What is 1+1?")], &greedy(16), &mut c);
    assert_eq!(r.finish_reason, ds_finish_reason::DS_FINISH_LENGTH);
    assert_eq!(
        (r.prompt_tokens, r.cached_tokens, r.completion_tokens),
        (12, 0, 16)
    );
    assert!(r.prefill_secs > 0.0 && r.decode_secs > 0.0 && r.decode_tok_s > 0.0);
    // R1's template opens <think> and the random model never closes it: all reasoning.
    assert_eq!(c.text(ds_event_kind::DS_EVENT_REASONING), want_text.trim());
    assert_eq!(c.text(ds_event_kind::DS_EVENT_CONTENT), "");
    // SAFETY: a live session.
    assert_eq!(
        unsafe { ds_session_len(s.0) },
        12 + 15,
        "all but the last token cached"
    );

    // The templated text as a raw prompt gives the same tokens: it already starts with BOS.
    let fresh = session(&model, 0);
    let (text, r) = generate(&fresh, prompt, &greedy(16));
    assert_eq!(text, want_text.trim());
    assert_eq!((r.prompt_tokens, r.completion_tokens), (12, 16));
}

#[test]
fn chat_turns_reuse_the_cache() {
    let model = r1();
    let s = session(&model, 0);
    let system = ("system", "Be brief.");
    let mut c1 = Collected::default();
    let r1 = chat(&s, &[system, ("user", "What is 1+1?")], &greedy(6), &mut c1);
    assert_eq!(r1.cached_tokens, 0);
    let answer = c1.text(ds_event_kind::DS_EVENT_CONTENT);
    let turn2 = [
        system,
        ("user", "What is 1+1?"),
        ("assistant", answer.as_str()),
        ("user", "And 2+2?"),
    ];
    let mut c2 = Collected::default();
    let r2 = chat(&s, &turn2, &greedy(6), &mut c2);
    // Reused up to the first turn's `<｜Assistant｜>` (its `<think>\n` is not re-rendered).
    assert!(r2.cached_tokens >= r1.prompt_tokens - 2, "{r2:?}");
    assert!(r2.cached_tokens < r2.prompt_tokens);

    // The same as answering the whole conversation on a fresh session.
    let fresh = session(&model, 0);
    let mut c3 = Collected::default();
    let r3 = chat(&fresh, &turn2, &greedy(6), &mut c3);
    assert_eq!(r3.cached_tokens, 0);
    assert_eq!(c3.events, c2.events);
    assert_eq!(r3.prompt_tokens, r2.prompt_tokens);

    // Asking again re-evaluates only the last prompt token (for its logits).
    let mut c4 = Collected::default();
    let r4 = chat(&s, &turn2, &greedy(6), &mut c4);
    assert_eq!(r4.cached_tokens, r4.prompt_tokens - 1);
    assert_eq!(c4.events, c2.events);
}

#[test]
fn the_callback_can_cancel_and_cannot_reenter_its_session() {
    let model = r1();
    let s = session(&model, 0);
    let mut c = Collected {
        cancel_after: Some(1),
        reenter: Some(s.0),
        ..Default::default()
    };
    let r = chat(&s, &[("user", "Tell me a story.")], &greedy(16), &mut c);
    assert_eq!(r.finish_reason, ds_finish_reason::DS_FINISH_CANCELLED);
    assert_eq!(c.events.len(), 1);
    assert!(r.completion_tokens < 16);
    let busy = ds_status::DS_ERR_SESSION_BUSY;
    assert_eq!(c.reentry, [busy, busy, busy]);
    // The session works again after the call.
    let (_, r) = generate(&s, "hi", &greedy(2));
    assert_eq!(r.completion_tokens, 2);
}

#[test]
fn params_default_to_the_checkpoint_and_seeds_reproduce() {
    let model = r1();
    let s = session(&model, 0);
    let sampled = |seed| ds_generate_params {
        max_tokens: 12,
        seed,
        has_seed: true,
        ..ds_generate_default_params()
    };
    let (a, ra) = generate(&s, "Once upon a time", &sampled(7));
    let (b, _) = generate(&s, "Once upon a time", &sampled(7));
    let (c, _) = generate(&s, "Once upon a time", &sampled(8));
    assert_eq!(a, b);
    assert_ne!(a, c);
    assert_eq!(ra.completion_tokens, 12);
    // generation_config.json samples (temperature 0.6), so greedy differs from it.
    let (g, _) = generate(&s, "Once upon a time", &greedy(12));
    assert_ne!(g, a);

    // A stop string taken from the free-running text cuts it there.
    let chars: Vec<char> = g.chars().collect();
    let stop: String = chars[chars.len() / 2..chars.len() / 2 + 2].iter().collect();
    let at = g.find(&stop).unwrap();
    let stop_c = CString::new(stop.clone()).unwrap();
    let stops = [stop_c.as_ptr()];
    let params = ds_generate_params {
        stop: stops.as_ptr(),
        n_stop: 1,
        ..greedy(12)
    };
    let (cut, r) = generate(&s, "Once upon a time", &params);
    assert_eq!(cut, g[..at]);
    assert_eq!(r.finish_reason, ds_finish_reason::DS_FINISH_STOP);

    // Out-of-range values name the field; the session is left as it was.
    // SAFETY: a live session.
    let len = unsafe { ds_session_len(s.0) };
    let bad = ds_generate_params {
        top_p: 1.5,
        ..ds_generate_default_params()
    };
    let prompt = c"hi";
    // SAFETY: valid arguments; NULL callback and result are allowed.
    let st = unsafe {
        ds_generate(
            s.0,
            prompt.as_ptr(),
            &bad,
            None,
            ptr::null_mut(),
            ptr::null_mut(),
        )
    };
    expect(st, ds_status::DS_ERR_INVALID_PARAMETER, "`top_p`");
    // SAFETY: a live session.
    assert_eq!(unsafe { ds_session_len(s.0) }, len);
}

#[test]
fn text_needs_a_tokenizer_that_fits() {
    let tiny = load("v3_tiny");
    let text = c"hi";
    let mut n = 7;
    // SAFETY: live model and session, valid strings; NULL buffers with length 0.
    unsafe {
        assert!(!ds_model_has_tokenizer(tiny.0));
        let st = ds_tokenize(tiny.0, text.as_ptr(), true, ptr::null_mut(), 0, &mut n);
        expect(
            st,
            ds_status::DS_ERR_NO_TOKENIZER,
            "ds_model_load_tokenizer",
        );
        assert_eq!(n, 0);
        let s = session(&tiny, 0);
        let st = ds_generate(
            s.0,
            text.as_ptr(),
            ptr::null(),
            None,
            ptr::null_mut(),
            ptr::null_mut(),
        );
        expect(
            st,
            ds_status::DS_ERR_NO_TOKENIZER,
            "ds_generate: the model has no tokenizer",
        );
        // R1's 128815 ids do not fit v3_tiny's 512.
        let dir = c_path("tokenizers/deepseek-r1");
        let st = ds_model_load_tokenizer(tiny.0, dir.as_ptr());
        expect(st, ds_status::DS_ERR_INVALID_ARGUMENT, "vocab_size");
        assert!(!ds_model_has_tokenizer(tiny.0));
        let st = ds_model_load_tokenizer(tiny.0, c_path("v3_tiny").as_ptr());
        expect(st, ds_status::DS_ERR_IO, "tokenizer.json");
    }
}

/// Swapping the tokenizer while another thread generates: the running call keeps its own.
#[test]
fn the_tokenizer_can_be_replaced_while_in_use() {
    let model = r1();
    let (_, want) = {
        let s = session(&model, 0);
        generate(&s, "Once upon a time", &greedy(8))
    };
    std::thread::scope(|scope| {
        let worker = scope.spawn(|| {
            let s = session(&model, 0);
            for _ in 0..4 {
                let (_, r) = generate(&s, "Once upon a time", &greedy(8));
                assert_eq!(r.completion_tokens, want.completion_tokens);
            }
        });
        let dir = c_path("tokenizers/deepseek-r1");
        for _ in 0..2 {
            // SAFETY: a live model (shared, as documented) and a valid string.
            check(unsafe { ds_model_load_tokenizer(model.0, dir.as_ptr()) });
        }
        worker.join().unwrap();
    });
}

/// A scratch copy of v3_r1tok with R1's tokenizer files in the model folder, removed on drop.
struct Checkpoint(PathBuf);

impl Checkpoint {
    fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("ds-capi-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        for (from, file) in [
            ("v3_r1tok", "config.json"),
            ("v3_r1tok", "model.safetensors"),
            ("v3_r1tok", "generation_config.json"),
            ("tokenizers/deepseek-r1", "tokenizer.json"),
            ("tokenizers/deepseek-r1", "tokenizer_config.json"),
        ] {
            std::fs::copy(fixture(from).join(file), dir.join(file)).unwrap();
        }
        Checkpoint(dir)
    }

    fn write(&self, file: &str, text: &str) {
        std::fs::write(self.0.join(file), text).unwrap();
    }

    fn load(&self) -> (ds_status, Model) {
        let path = CString::new(self.0.to_str().unwrap()).unwrap();
        let mut m = ptr::null_mut();
        // SAFETY: valid string and out pointer; NULL params are the defaults.
        let st = unsafe { ds_model_load(path.as_ptr(), ptr::null(), &mut m) };
        (st, Model(m))
    }
}

impl Drop for Checkpoint {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn a_tokenizer_in_the_model_folder_loads_with_it() {
    let ckpt = Checkpoint::new("with-tokenizer");
    let (st, model) = ckpt.load();
    check(st);
    // SAFETY: a live model.
    assert!(unsafe { ds_model_has_tokenizer(model.0) });
    let golden = read_json("v3_r1tok/golden.json");
    let want = detokenize(&model, &ids(&golden["greedy_ids"]), true);
    let s = session(&model, 0);
    let mut c = Collected::default();
    chat(&s, &[("user", "What is 1+1?")], &greedy(16), &mut c);
    assert_eq!(c.text(ds_event_kind::DS_EVENT_REASONING), want.trim());

    // A template that raises fails the chat, naming the template; raw prompts still work.
    ckpt.write(
        "chat_template.jinja",
        "{{ raise_exception('no chat here') }}",
    );
    let (st, model) = ckpt.load();
    check(st);
    let s = session(&model, 0);
    let msgs = [ds_message {
        role: c"user".as_ptr(),
        content: c"hi".as_ptr(),
        tool_calls_json: std::ptr::null(),
        tool_call_id: std::ptr::null(),
    }];
    // SAFETY: a live session, one valid message; NULL params, callback and result.
    let st = unsafe {
        ds_chat(
            s.0,
            msgs.as_ptr(),
            1,
            ptr::null(),
            None,
            ptr::null_mut(),
            ptr::null_mut(),
        )
    };
    expect(st, ds_status::DS_ERR_TEMPLATE, "no chat here");
    assert_eq!(generate(&s, "hi", &greedy(2)).1.completion_tokens, 2);

    // Malformed files in the folder fail the load with their own codes.
    ckpt.write("chat_template.jinja", "{% if %}");
    expect(ckpt.load().0, ds_status::DS_ERR_TEMPLATE, "chat template");
    std::fs::remove_file(ckpt.0.join("chat_template.jinja")).unwrap();
    ckpt.write("tokenizer.json", "{");
    expect(ckpt.load().0, ds_status::DS_ERR_TOKENIZER, "tokenizer.json");
    ckpt.write("generation_config.json", "{\"top_p\": \"high\"}");
    expect(ckpt.load().0, ds_status::DS_ERR_JSON, "top_p");
}

/// Abort-callback data: polls so far, and the poll from which it says stop.
struct AbortAfter {
    polls: usize,
    stop_at: usize,
}

unsafe extern "C" fn abort_after(data: *mut c_void) -> bool {
    // SAFETY: the test passes a live AbortAfter.
    let a = unsafe { &mut *data.cast::<AbortAfter>() };
    a.polls += 1;
    a.polls >= a.stop_at
}

/// The R1 tokenizer with `template` as its chat template, in a scratch folder.
fn tokenizer_with_template(tag: &str, template: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("deepseek-capi-{}-{tag}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let src = fixture("tokenizers/deepseek-r1");
    std::fs::copy(src.join("tokenizer.json"), dir.join("tokenizer.json")).unwrap();
    let mut config = read_json("tokenizers/deepseek-r1/tokenizer_config.json");
    config["chat_template"] = template.into();
    std::fs::write(dir.join("tokenizer_config.json"), config.to_string()).unwrap();
    dir
}

#[test]
fn the_abort_callback_stops_rendering_and_prefill() {
    let model = r1();
    // Prefill: a prompt of one full 512-token chunk and a rest. Poll 1 (before the chunk) goes
    // on, poll 2 (before the rest) stops: the call succeeds, cancelled, the chunk cached.
    let s = session(&model, 0);
    let mut abort = AbortAfter {
        polls: 0,
        stop_at: 2,
    };
    let params = ds_generate_params {
        abort_callback: Some(abort_after),
        abort_callback_data: (&mut abort as *mut AbortAfter).cast(),
        ..greedy(4)
    };
    let (text, r) = generate(&s, &"word ".repeat(990), &params);
    assert_eq!(r.finish_reason, ds_finish_reason::DS_FINISH_CANCELLED);
    assert_eq!((text.as_str(), r.completion_tokens), ("", 0));
    // SAFETY: a live session.
    assert_eq!(unsafe { ds_session_len(s.0) }, 512);

    // Rendering: a template that writes a lot is stopped while it renders; nothing changes.
    let dir = tokenizer_with_template(
        "flood",
        "{% for i in range(100000) %}{% for j in range(100000) %}{{ messages[0]['content'] }}\
         {% endfor %}{% endfor %}",
    );
    let dir_c = CString::new(dir.to_str().unwrap()).unwrap();
    // SAFETY: a live model and a valid string.
    check(unsafe { ds_model_load_tokenizer(model.0, dir_c.as_ptr()) });
    let mut abort = AbortAfter {
        polls: 0,
        stop_at: 3,
    };
    let params = ds_generate_params {
        abort_callback: Some(abort_after),
        abort_callback_data: (&mut abort as *mut AbortAfter).cast(),
        ..greedy(4)
    };
    let (role, content) = (CString::new("user").unwrap(), CString::new("x").unwrap());
    let msg = ds_message {
        role: role.as_ptr(),
        content: content.as_ptr(),
        tool_calls_json: std::ptr::null(),
        tool_call_id: std::ptr::null(),
    };
    // SAFETY: zeroes are a valid result (DS_FINISH_NONE).
    let mut result: ds_generate_result = unsafe { std::mem::zeroed() };
    // SAFETY: a live session; message, params and result valid for the call.
    let status = unsafe { ds_chat(s.0, &msg, 1, &params, None, ptr::null_mut(), &mut result) };
    expect(status, ds_status::DS_ERR_CANCELLED, "cancelled");
    assert_eq!(abort.polls, 3);
    assert_eq!(result.finish_reason, ds_finish_reason::DS_FINISH_NONE);
    // SAFETY: a live session.
    assert_eq!(unsafe { ds_session_len(s.0) }, 512);

    // Without a callback the same template stops on its budget, as a template error.
    let started = std::time::Instant::now();
    // SAFETY: as above.
    let status = unsafe { ds_chat(s.0, &msg, 1, &greedy(4), None, ptr::null_mut(), &mut result) };
    expect(status, ds_status::DS_ERR_TEMPLATE, "budget");
    assert!(started.elapsed() < std::time::Duration::from_secs(20));
    let _ = std::fs::remove_dir_all(dir);
}

const WEATHER_TOOLS: &CStr = cr#"[{"type": "function", "function": {"name": "get_weather",
  "description": "Current weather in a city",
  "parameters": {"type": "object", "properties": {"city": {"type": "string", "maxLength": 8}},
                 "required": ["city"], "additionalProperties": false}}}]"#;

/// ds_chat on raw messages, returning the status (for the error paths).
fn chat_status(s: &Session, msgs: &[ds_message], params: &ds_generate_params) -> ds_status {
    // SAFETY: a live session; messages and params valid for the call; no callback.
    unsafe {
        ds_chat(
            s.0,
            msgs.as_ptr(),
            msgs.len(),
            params,
            None,
            ptr::null_mut(),
            ptr::null_mut(),
        )
    }
}

#[test]
fn forced_tool_call_round_trips_through_openai_json() {
    let model = r1();
    let s = session(&model, 0);
    let params = ds_generate_params {
        tools_json: WEATHER_TOOLS.as_ptr(),
        tool_choice_json: cr#""required""#.as_ptr(),
        // The random fixture would reason forever: no reasoning, the call at once.
        max_reasoning_tokens: 0,
        ..greedy(80)
    };
    let mut c = Collected::default();
    let r = chat(&s, &[("user", "Weather in Paris?")], &params, &mut c);
    assert_eq!(
        r.finish_reason,
        ds_finish_reason::DS_FINISH_TOOL_CALLS,
        "{:?}",
        c.events
    );
    let calls: Vec<&String> = c
        .events
        .iter()
        .filter(|e| e.0 == ds_event_kind::DS_EVENT_TOOL_CALL)
        .map(|e| &e.1)
        .collect();
    assert_eq!(calls.len(), 1, "{:?}", c.events);
    let call: Value = serde_json::from_str(calls[0]).unwrap();
    assert_eq!(call["type"], "function");
    assert_eq!(call["function"]["name"], "get_weather");
    assert!(call["id"].as_str().unwrap().starts_with("call_"));
    // Arguments: JSON text holding an object valid against the tool's schema.
    let args: Value =
        serde_json::from_str(call["function"]["arguments"].as_str().unwrap()).unwrap();
    let obj = args.as_object().unwrap();
    assert_eq!(obj.keys().collect::<Vec<_>>(), ["city"]);
    assert!(obj["city"].as_str().unwrap().chars().count() <= 8);
    // No markup in the answer.
    assert!(!c.text(ds_event_kind::DS_EVENT_CONTENT).contains('｜'));

    // The call goes back with the assistant turn, its result as a tool turn naming its id.
    let calls_json = CString::new(format!("[{}]", calls[0])).unwrap();
    let id = CString::new(call["id"].as_str().unwrap()).unwrap();
    let msg = |role: &CStr, content: &CStr| ds_message {
        role: role.as_ptr(),
        content: content.as_ptr(),
        tool_calls_json: ptr::null(),
        tool_call_id: ptr::null(),
    };
    let msgs = [
        msg(c"user", c"Weather in Paris?"),
        ds_message {
            tool_calls_json: calls_json.as_ptr(),
            ..msg(c"assistant", c"")
        },
        ds_message {
            tool_call_id: id.as_ptr(),
            ..msg(c"tool", c"{\"temp_c\": 21}")
        },
    ];
    let mut c2 = Collected::default();
    let auto = ds_generate_params {
        tools_json: WEATHER_TOOLS.as_ptr(),
        ..greedy(4)
    };
    // SAFETY: zeroes are a valid result.
    let mut r2: ds_generate_result = unsafe { std::mem::zeroed() };
    // SAFETY: as in `chat`.
    check(unsafe {
        ds_chat(
            s.0,
            msgs.as_ptr(),
            msgs.len(),
            &auto,
            Some(collect),
            (&mut c2 as *mut Collected).cast(),
            &mut r2,
        )
    });
    // The first turn's prompt is reused: the call rendered as the model wrote it.
    assert!(
        r2.cached_tokens >= r.prompt_tokens - 2,
        "{r2:?} after {r:?}"
    );
    assert_ne!(r2.finish_reason, ds_finish_reason::DS_FINISH_NONE);
}

#[test]
fn bad_tools_and_formats_are_typed_errors() {
    let model = r1();
    let s = session(&model, 0);
    let user = [ds_message {
        role: c"user".as_ptr(),
        content: c"hi".as_ptr(),
        tool_calls_json: ptr::null(),
        tool_call_id: ptr::null(),
    }];
    let with = |tools: &CStr, choice: Option<&CStr>, format: Option<&CStr>| ds_generate_params {
        tools_json: tools.as_ptr(),
        tool_choice_json: choice.map_or(ptr::null(), CStr::as_ptr),
        response_format_json: format.map_or(ptr::null(), CStr::as_ptr),
        ..greedy(2)
    };
    use ds_status::*;
    let cases: [(ds_generate_params, ds_status, &str); 7] = [
        (
            with(c"[{", None, None),
            DS_ERR_INVALID_ARGUMENT,
            "params.tools_json is not JSON",
        ),
        (
            with(c"{}", None, None),
            DS_ERR_INVALID_ARGUMENT,
            "must be a JSON list",
        ),
        (
            with(cr#"[{"type": "function"}]"#, None, None),
            DS_ERR_INVALID_PARAMETER,
            "tools[0]",
        ),
        (
            with(
                cr#"[{"type": "function", "function": {"name": "a b"}}]"#,
                None,
                None,
            ),
            DS_ERR_INVALID_PARAMETER,
            "whitespace",
        ),
        (
            with(
                WEATHER_TOOLS,
                Some(cr#"{"type": "function", "function": {"name": "nope"}}"#),
                None,
            ),
            DS_ERR_INVALID_PARAMETER,
            "no tool named \"nope\"",
        ),
        (
            with(WEATHER_TOOLS, Some(cr#""sometimes""#), None),
            DS_ERR_INVALID_PARAMETER,
            "tool_choice",
        ),
        (
            with(
                WEATHER_TOOLS,
                None,
                Some(
                    cr#"{"type": "json_schema", "json_schema": {"schema": {"type": "nonsense"}}}"#,
                ),
            ),
            DS_ERR_INVALID_PARAMETER,
            "response_format",
        ),
    ];
    for (params, want, needle) in cases {
        expect(chat_status(&s, &user, &params), want, needle);
    }
    // Malformed tool calls in a message name the message.
    let bad_call = [ds_message {
        role: c"assistant".as_ptr(),
        content: c"".as_ptr(),
        tool_calls_json: cr#"[{"function": {}}]"#.as_ptr(),
        tool_call_id: ptr::null(),
    }];
    expect(
        chat_status(&s, &bad_call, &greedy(2)),
        DS_ERR_INVALID_ARGUMENT,
        "messages[0].tool_calls_json[0]",
    );
    assert_eq!(
        ds_session_len_of(&s),
        0,
        "a refused request leaves the session unchanged"
    );
}

fn ds_session_len_of(s: &Session) -> usize {
    // SAFETY: a live session.
    unsafe { ds_session_len(s.0) }
}

/// Allows only the token in `*user_data` (a `(ds_token, Vec<usize>)`: the token, and the
/// number of generated ids seen at each call).
unsafe extern "C" fn allow_only(
    user_data: *mut c_void,
    _generated: *const ds_token,
    n_generated: usize,
    logits: *mut f32,
    n_vocab: usize,
) -> bool {
    // SAFETY: the test's state; `logits` holds `n_vocab` floats during this call.
    unsafe {
        let (only, seen) = &mut *user_data.cast::<(ds_token, Vec<usize>)>();
        seen.push(n_generated);
        let logits = std::slice::from_raw_parts_mut(logits, n_vocab);
        for (id, l) in logits.iter_mut().enumerate() {
            if id as ds_token != *only {
                *l = f32::NEG_INFINITY;
            }
        }
    }
    true
}

unsafe extern "C" fn refuse(
    _: *mut c_void,
    _: *const ds_token,
    _: usize,
    _: *mut f32,
    _: usize,
) -> bool {
    false
}

#[test]
fn a_logits_callback_decides_the_token_and_can_fail_the_call() {
    let model = r1();
    let s = session(&model, 0);
    let only = tokenize(&model, " yes", false)[0];
    let mut state: (ds_token, Vec<usize>) = (only, Vec::new());
    let params = ds_generate_params {
        logits_processor: Some(allow_only),
        logits_processor_data: (&mut state as *mut (ds_token, Vec<usize>)).cast(),
        ..greedy(3)
    };
    let (text, r) = generate(&s, "Hello", &params);
    assert_eq!(text, " yes yes yes");
    assert_eq!(r.completion_tokens, 3);
    assert_eq!(state.1, [0, 1, 2]);
    let params = ds_generate_params {
        logits_processor: Some(refuse),
        ..greedy(3)
    };
    let prompt = c"Hello";
    // SAFETY: a live session, valid prompt and params; no callback or result.
    let status = unsafe {
        ds_generate(
            s.0,
            prompt.as_ptr(),
            &params,
            None,
            ptr::null_mut(),
            ptr::null_mut(),
        )
    };
    expect(
        status,
        ds_status::DS_ERR_INVALID_ARGUMENT,
        "logits processor returned false",
    );
}
