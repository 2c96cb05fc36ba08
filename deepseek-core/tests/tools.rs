//! Agents against references: chat templates rendering tools, tool calls and template kwargs
//! byte for byte as transformers does (R1's, R1-0528's and V3.1's official templates and
//! llama.cpp's), with goldens from `tools/make_template_fixtures.py`.

mod common;

use std::sync::OnceLock;

use common::fixture;
use deepseek_core::{ChatTemplate, Error, Message, TemplateOptions, Tokenizer, ToolCall};
use serde_json::Value;

fn read_json(path: &std::path::Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn r1_tokenizer() -> &'static Tokenizer {
    static TOK: OnceLock<Tokenizer> = OnceLock::new();
    TOK.get_or_init(|| Tokenizer::from_dir(fixture("tokenizers").join("deepseek-r1")).unwrap())
}

/// A template fixture by the name the generator gives it, with R1's special tokens.
fn template(name: &str) -> ChatTemplate {
    let source = match name {
        "deepseek-r1" => r1_tokenizer().chat_template().unwrap().to_string(),
        n if n.starts_with("llama.cpp/") => {
            std::fs::read_to_string(fixture("templates").join(n)).unwrap()
        }
        n => {
            let config = read_json(&fixture("templates").join(n).join("tokenizer_config.json"));
            config["chat_template"].as_str().unwrap().to_string()
        }
    };
    ChatTemplate::new(&source)
        .unwrap()
        .with_special_token("bos_token", "<｜begin▁of▁sentence｜>")
        .with_special_token("eos_token", "<｜end▁of▁sentence｜>")
}

fn opt_str(v: &Value, key: &str) -> Option<String> {
    v.get(key).map(|x| x.as_str().unwrap().to_string())
}

/// A message of the fixtures (OpenAI's dict shape) as a [`Message`].
fn message(v: &Value) -> Message {
    let tool_calls = v
        .get("tool_calls")
        .map(|calls| {
            calls
                .as_array()
                .unwrap()
                .iter()
                .map(|c| {
                    assert_eq!(c["type"], "function");
                    ToolCall::new(
                        c["id"].as_str().unwrap(),
                        c["function"]["name"].as_str().unwrap(),
                        c["function"]["arguments"].as_str().unwrap(),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    Message {
        role: v["role"].as_str().unwrap().into(),
        content: v["content"].as_str().unwrap().into(),
        reasoning_content: opt_str(v, "reasoning_content"),
        tool_calls,
        tool_call_id: opt_str(v, "tool_call_id"),
        name: opt_str(v, "name"),
    }
}

#[test]
fn tool_templates_render_as_transformers() {
    let golden = read_json(&fixture("templates").join("tool_cases.json"));
    let cases = golden["cases"].as_array().unwrap();
    assert!(cases.len() >= 60, "{} cases", cases.len());
    let mut templates = std::collections::HashMap::new();
    let (mut same, mut errors, mut eager_map) = (0, 0, 0);
    for case in cases {
        let tname = case["template"].as_str().unwrap();
        let t = templates
            .entry(tname.to_string())
            .or_insert_with(|| template(tname));
        let messages: Vec<Message> = case["messages"]
            .as_array()
            .unwrap()
            .iter()
            .map(message)
            .collect();
        let options = TemplateOptions {
            tools: case["tools"].as_array().cloned(),
            kwargs: case["kwargs"].as_object().unwrap().clone(),
        };
        let agp = case["add_generation_prompt"].as_bool().unwrap();
        let got = t.render_with(&messages, agp, &options, &|| false);
        let what = format!("{tname} / {}", case["name"].as_str().unwrap());
        match (case.get("text"), got) {
            (Some(want), Ok(text)) => {
                assert_eq!(text, want.as_str().unwrap(), "{what}");
                let ids: Vec<u32> = case["ids"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|x| x.as_u64().unwrap() as u32)
                    .collect();
                assert_eq!(r1_tokenizer().encode(&text, false).unwrap(), ids, "{what}");
                same += 1;
            }
            (None, Err(Error::Template(_))) if case.get("text_with_eager_map").is_none() => {
                errors += 1
            }
            // Jinja2's lazy `map` makes json.dumps fail where MiniJinja's eager one (like
            // llama.cpp's engine) renders: compare with transformers' render of the same
            // template with the map made a list.
            (None, Ok(text)) if case.get("text_with_eager_map").is_some() => {
                assert_eq!(text, case["text_with_eager_map"].as_str().unwrap(), "{what}");
                eager_map += 1;
            }
            (want, got) => panic!("{what}: expected {want:?}, got {got:?}"),
        }
    }
    assert_eq!(same + errors + eager_map, cases.len());
    println!("{same} byte-identical, {errors} refused as transformers, {eager_map} eager-map");
    assert!(same >= 50, "{same} byte-identical renders");
}

#[test]
fn template_kwargs_may_not_replace_the_render_inputs() {
    let t = template("deepseek-v3.1");
    let mut kwargs = serde_json::Map::new();
    kwargs.insert("messages".into(), Value::Array(vec![]));
    let options = TemplateOptions {
        tools: None,
        kwargs,
    };
    match t.render_with(&[Message::user("hi")], true, &options, &|| false) {
        Err(Error::InvalidParameter { name, .. }) => assert_eq!(name, "chat_template_kwargs"),
        other => panic!("{other:?}"),
    }
}
