//! End to end on r1-nano (`models/r1-nano`, trained by `tools/train_nano.py`): the whole engine
//! (R1's tokenizer format and chat template, MLA, noaux_tc MoE routing, greedy generation and the
//! `<think>` split) answers the 200 held-out questions, and must score like transformers did on
//! the same weights (`heldout.json`, written by the training script).

use std::path::PathBuf;

use deepseek_core::{
    EventKind, FinishReason, GenerateParams, Generator, LoadOptions, Message, SamplingParams,
};
use serde_json::Value;

fn nano_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../models/r1-nano")
}

/// What one question produced.
struct Answer {
    content: String,
    failure: Option<String>,
}

/// Chats one question greedily, streaming, and checks that the reasoning arrives as reasoning
/// (before any content, ending where `</think>` was) and the answer as content.
fn ask(generator: &Generator, question: &str, params: &GenerateParams) -> Answer {
    let mut events = Vec::new();
    let result = generator
        .chat_stream(&[Message::user(question)], params)
        .expect("prompt renders")
        .run(|e| {
            events.push((e.kind, e.text.clone()));
            true
        })
        .expect("generation runs");
    let streamed = |kind| -> String {
        events
            .iter()
            .filter(|(k, _)| *k == kind)
            .map(|(_, t)| t.as_str())
            .collect()
    };
    let reasoning = result.reasoning_content.clone().unwrap_or_default();
    let first_content = events.iter().position(|(k, _)| *k == EventKind::Content);
    let last_reasoning = events.iter().rposition(|(k, _)| *k == EventKind::Reasoning);
    // A question the model botches (no `</think>`, or the token limit) only counts as wrong; the
    // split itself must never fail.
    let failure = if result.content.contains("think>") || reasoning.contains("think>") {
        Some("a <think> tag leaked into the text".into())
    } else if streamed(EventKind::Reasoning) != reasoning
        || streamed(EventKind::Content) != result.content
    {
        Some("streamed events differ from the result".into())
    } else if matches!((first_content, last_reasoning), (Some(c), Some(r)) if c < r) {
        Some("reasoning streamed after the answer started".into())
    } else if result.finish_reason == FinishReason::Stop
        && (!reasoning.contains("result:") || result.content.trim().is_empty())
    {
        Some(format!(
            "reasoning {reasoning:?} / answer {:?} not split",
            result.content
        ))
    } else {
        None
    };
    Answer {
        content: result.content.trim().to_string(),
        failure,
    }
}

#[test]
fn r1_nano_answers_held_out_questions_like_transformers() {
    let heldout: Value = serde_json::from_str(
        &std::fs::read_to_string(nano_dir().join("heldout.json")).expect("heldout.json"),
    )
    .unwrap();
    let questions = heldout["questions"].as_array().unwrap();
    assert_eq!(questions.len(), 200);
    let reference_accuracy = heldout["transformers_accuracy"].as_f64().unwrap();

    let generator = Generator::load(
        nano_dir(),
        None,
        LoadOptions {
            threads: Some(1),
            ..Default::default()
        },
    )
    .expect("r1-nano loads");
    let mut params = generator.default_params();
    params.sampling = SamplingParams::greedy();
    params.max_tokens = Some(heldout["max_new_tokens"].as_u64().unwrap() as usize);

    // Two workers, one question at a time each: the model is tiny, so questions, not rows,
    // are the parallel unit.
    let answers: Vec<Answer> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..2)
            .map(|w| {
                let (generator, params) = (&generator, &params);
                scope.spawn(move || {
                    questions
                        .iter()
                        .skip(w)
                        .step_by(2)
                        .map(|q| ask(generator, q["question"].as_str().unwrap(), params))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        let mut parts: Vec<_> = workers.into_iter().map(|h| h.join().unwrap()).collect();
        let mut out = Vec::new();
        for i in 0..questions.len() {
            out.push(parts[i % 2].remove(0));
        }
        out
    });

    let mut correct = 0;
    let mut same_as_transformers = 0;
    let mut failures = Vec::new();
    for (q, a) in questions.iter().zip(&answers) {
        if let Some(f) = &a.failure {
            failures.push(format!("{}: {f}", q["question"]));
        }
        correct += usize::from(a.content == q["expected"].as_str().unwrap());
        same_as_transformers += usize::from(Some(a.content.as_str()) == q["answer"].as_str());
    }
    let accuracy = correct as f64 / questions.len() as f64;
    eprintln!(
        "r1-nano: {correct}/{} correct ({:.1}%), transformers {:.1}%, same answer as transformers on {same_as_transformers}",
        questions.len(),
        100.0 * accuracy,
        100.0 * reference_accuracy
    );
    assert!(
        failures.is_empty(),
        "{} answers were malformed: {failures:#?}",
        failures.len()
    );
    assert!(accuracy >= 0.90, "accuracy {accuracy} below 90%");
    assert!(
        (accuracy - reference_accuracy).abs() <= 0.01 + 1e-9,
        "accuracy {accuracy} is more than one point from transformers' {reference_accuracy}"
    );
}
