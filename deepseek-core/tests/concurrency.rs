//! One model shared by many threads (issue 12): eight sessions running at once on one
//! `Arc<Model>` give exactly the tokens and logits of the same runs one after another (and
//! transformers' answers), a generation dropped half-way on another thread disturbs nobody,
//! and a generation cancelled from another thread stops with a prefix of its greedy output.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Barrier};
use std::time::{Duration, Instant};

use deepseek_core::{
    AttentionPath, FinishReason, GenerateParams, Generator, LoadOptions, Message, Model,
    SamplingParams, Session, SessionOptions, Stream, Tokenizer,
};
use serde_json::Value;

fn nano_dir() -> std::path::PathBuf {
    std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../models/r1-nano")
}

/// The types the threads share or hand over must allow it.
#[test]
fn shared_and_moved_types_are_thread_safe() {
    fn shared<T: Send + Sync>() {}
    fn moved<T: Send>() {}
    shared::<Model>();
    shared::<Generator>();
    moved::<Session>();
    moved::<Stream<'static>>();
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
        .take(8)
        .map(|q| {
            (
                q["question"].as_str().unwrap().to_string(),
                q["answer"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

/// How thread `i` runs: its own pool or the model's, and each MLA path.
fn options(i: usize) -> SessionOptions {
    SessionOptions {
        context_length: Some(512),
        threads: [None, Some(1), Some(2)][i % 3],
        attention: [
            AttentionPath::Auto,
            AttentionPath::Absorbed,
            AttentionPath::Expanded,
        ][(i / 3) % 3],
        ..Default::default()
    }
}

/// A greedy run: the generated ids (up to EOS) and the bits of the last logits row.
#[derive(Debug, PartialEq)]
struct Run {
    tokens: Vec<u32>,
    last_logits: Vec<u32>,
}

fn greedy(model: &Arc<Model>, options: SessionOptions, prompt: &[u32], eos: u32) -> Run {
    let mut session = Session::new(model.clone(), options).unwrap();
    let mut tokens = Vec::new();
    let mut logits = session.eval(prompt).unwrap().to_vec();
    while tokens.len() < 300 {
        let next = logits
            .iter()
            .enumerate()
            .max_by(|a, b| a.1.total_cmp(b.1))
            .unwrap()
            .0 as u32;
        tokens.push(next);
        if next == eos {
            break;
        }
        logits = session.eval(&[next]).unwrap().to_vec();
    }
    Run {
        tokens,
        last_logits: logits.iter().map(|x| x.to_bits()).collect(),
    }
}

#[test]
fn eight_threads_sharing_one_model_match_the_runs_one_at_a_time() {
    let model = Arc::new(
        Model::load(
            nano_dir(),
            LoadOptions {
                threads: Some(2),
                ..LoadOptions::default()
            },
        )
        .unwrap(),
    );
    let tokenizer = Tokenizer::from_dir(nano_dir()).unwrap();
    let generator = Generator::new(model.clone(), tokenizer.clone()).unwrap();
    let eos = tokenizer.eos_ids()[0];
    let qa = questions();
    let prompts: Vec<Vec<u32>> = qa
        .iter()
        .map(|(q, _)| {
            generator
                .chat_tokens(&[Message::user(q.as_str())])
                .unwrap()
                .1
        })
        .collect();

    let alone: Vec<Run> = (0..8)
        .map(|i| greedy(&model, options(i), &prompts[i], eos))
        .collect();
    // The reference: each answer (after </think>) is transformers' greedy answer.
    for (i, run) in alone.iter().enumerate() {
        let text = tokenizer.decode(&run.tokens, true).unwrap();
        let answer = text.rsplit("</think>").next().unwrap().trim();
        assert_eq!(answer, qa[i].1, "question {:?} alone", qa[i].0);
    }

    let start = Barrier::new(8);
    let together: Vec<Run> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..8)
            .map(|i| {
                let (model, prompt, start) = (&model, &prompts[i], &start);
                scope.spawn(move || {
                    start.wait();
                    greedy(model, options(i), prompt, eos)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for i in 0..8 {
        assert_eq!(
            together[i], alone[i],
            "thread {i} ({:?}) differs from its run alone",
            qa[i].0
        );
    }
}

fn greedy_params(max_tokens: usize) -> GenerateParams {
    GenerateParams {
        max_tokens: Some(max_tokens),
        stop: Vec::new(),
        sampling: SamplingParams::greedy(),
        ..GenerateParams::default()
    }
}

fn nano_generator() -> Generator {
    Generator::load(
        nano_dir(),
        None,
        LoadOptions {
            threads: Some(2),
            ..LoadOptions::default()
        },
    )
    .unwrap()
}

/// Streams begun on one thread, advanced a little and dropped on others mid-generation, while
/// two more threads generate to the end: those match their runs alone, token for token.
#[test]
fn generations_dropped_mid_way_on_other_threads_disturb_nobody() {
    let generator = nano_generator();
    let qa = questions();
    let chat = |i: usize| vec![Message::user(qa[i].0.as_str())];
    let alone: Vec<Vec<u32>> = (0..2)
        .map(|i| {
            generator
                .chat(&chat(i), &greedy_params(400))
                .unwrap()
                .tokens
        })
        .collect();

    let (send, receive) = mpsc::channel::<Stream<'static>>();
    std::thread::scope(|scope| {
        let full: Vec<_> = (0..2)
            .map(|i| {
                let (generator, chat) = (&generator, &chat);
                scope.spawn(move || generator.chat(&chat(i), &greedy_params(400)).unwrap())
            })
            .collect();
        // The dropping side: takes half-run streams and drops each after a few more tokens.
        let dropper = scope.spawn(move || {
            let mut dropped = 0;
            for mut stream in receive {
                for _ in 0..3 {
                    stream.advance().unwrap();
                }
                drop(stream);
                dropped += 1;
            }
            dropped
        });
        for i in 0..6 {
            let mut stream = generator
                .chat_stream(&chat(2 + i), &greedy_params(400))
                .unwrap();
            for _ in 0..4 {
                assert!(stream.advance().unwrap(), "ended after a few tokens");
            }
            send.send(stream).unwrap();
        }
        drop(send);
        assert_eq!(dropper.join().unwrap(), 6);
        for (i, h) in full.into_iter().enumerate() {
            let result = h.join().unwrap();
            assert_eq!(result.tokens, alone[i], "question {:?}", qa[i].0);
            assert_eq!(result.finish_reason, FinishReason::Stop);
        }
    });
}

/// Another thread raises a flag the generation's callback reads: it stops as Cancelled, its
/// tokens a prefix of the uncancelled greedy run, soon after the flag.
#[test]
fn a_generation_cancelled_from_another_thread_stops_with_a_prefix() {
    let generator = nano_generator();
    let question = [Message::user(questions()[0].0.as_str())];
    let full = generator.chat(&question, &greedy_params(400)).unwrap();
    assert!(full.tokens.len() > 20, "{} tokens", full.tokens.len());

    let cancel = AtomicBool::new(false);
    let deltas = AtomicUsize::new(0);
    let (result, deltas_at_cancel) = std::thread::scope(|scope| {
        let worker = scope.spawn(|| {
            generator
                .chat_stream(&question, &greedy_params(400))
                .unwrap()
                .run(|_| {
                    deltas.fetch_add(1, Ordering::SeqCst);
                    !cancel.load(Ordering::SeqCst)
                })
                .unwrap()
        });
        let t0 = Instant::now();
        while deltas.load(Ordering::SeqCst) < 5 {
            assert!(t0.elapsed() < Duration::from_secs(60), "no deltas");
            std::thread::yield_now();
        }
        cancel.store(true, Ordering::SeqCst);
        let at_cancel = deltas.load(Ordering::SeqCst);
        (worker.join().unwrap(), at_cancel)
    });
    assert_eq!(result.finish_reason, FinishReason::Cancelled);
    let n = result.tokens.len();
    assert!(n < full.tokens.len(), "ran to the end: {n} tokens");
    assert_eq!(result.tokens[..], full.tokens[..n]);
    // The callback sees the flag on its next delta: at most one more after the cancel.
    assert!(deltas.load(Ordering::SeqCst) <= deltas_at_cancel + 1);
}
