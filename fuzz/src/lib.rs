//! The bodies of the fuzz targets: each `pub fn` feeds libFuzzer's bytes to one public entry
//! point of deepseek-core or the C API. Hostile bytes must come back as an `Err` (a status in
//! C); these functions panic only where the library broke its contract: a panic inside it, a
//! hang or runaway allocation (libFuzzer's -timeout / -rss_limit_mb), or a result that
//! contradicts its own API (an id out of range, a stream that disagrees with a plain decode).
//! Kept to a few lines each over the public API, so loader or model refactors touch little here.

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use deepseek_core::loader::{GgufModel, TensorSource};

use deepseek_core::{
    ChatTemplate, Config, Error, GenerationConfig, LoadOptions, Message, Model, Sampler, Session,
    SessionOptions, Tokenizer, WeightDtype,
};

mod c_api;
pub use c_api::{capi, init_capi};

/// Every target's setup, run once before fuzzing. libfuzzer-sys's panic hook aborts on any
/// panic, even one the library catches; but tokenizer.rs deliberately catches the panics of
/// `tokenizers` and `onig` (a malformed `decoder`, onig's retry limit: they have no fallible
/// path) and returns Error::Tokenizer. Those panics go on to that catch; every other panic
/// aborts as before, and one of theirs that the library failed to catch still aborts when it
/// leaves the target (libfuzzer-sys aborts on a panic out of the target body).
pub fn init() {
    let abort = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let file = info.location().map_or("", |l| l.file());
        if !(file.contains("/tokenizers-") || file.contains("/onig-")) {
            abort(info);
        }
    }));
}

/// The repository root (fixtures, models).
pub fn repo() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
}

fn fixture(path: &str) -> PathBuf {
    repo().join(path)
}

/// A private folder for one target in this process (libFuzzer's -fork/-jobs run several).
fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("deepseek-fuzz-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp folder");
    dir
}

/// A folder holding the tiny fixture `family`'s weights (a symlink) and no config yet.
fn folder_with_weights(target: &str, family: &str) -> PathBuf {
    let dir = scratch(&format!("{target}-{family}"));
    let link = dir.join("model.safetensors");
    if !link.exists() {
        let src = fixture(&format!("fuzz/fixtures/{family}/model.safetensors"));
        std::os::unix::fs::symlink(src, &link).expect("symlink the weights");
    }
    dir
}

fn one_thread(dtype: WeightDtype) -> LoadOptions {
    LoadOptions {
        threads: Some(1),
        dtype,
    }
}

/// A loaded model evaluates two tokens (and a third after them) without panicking.
fn smoke(model: Model) {
    let context = model.config().max_position_embeddings.min(4);
    let vocab = model.config().vocab_size;
    let options = SessionOptions {
        context_length: Some(context),
        ..SessionOptions::default()
    };
    let mut session = Session::new(Arc::new(model), options).expect("a loaded model opens");
    let ids: Vec<u32> = (0..vocab.min(2) as u32).collect();
    let fits = ids.len() <= context;
    match session.eval(&ids) {
        Ok(logits) => assert_eq!(logits.len(), vocab, "logits length"),
        // Mutated weights may hold NaN or inf: that is the typed error it should be.
        Err(Error::NonFiniteLogits { .. }) => {}
        Err(e) => assert!(!fits, "in-range tokens failed: {e}"),
    }
}

/// A safetensors file (`model.safetensors` of a folder whose config fits the tiny qwen2 or,
/// if the header names MLA tensors, the tiny DeepSeek-V3 fixture): opened, every tensor read,
/// then loaded as a model (in a format the length picks) and run.
pub fn safetensors(data: &[u8]) {
    let dir = scratch("safetensors");
    let family = if contains(data, b"kv_a_proj_with_mqa") {
        "tiny_v3"
    } else {
        "tiny_qwen2"
    };
    let config = std::fs::read(fixture(&format!("fuzz/fixtures/{family}/config.json"))).unwrap();
    std::fs::write(dir.join("config.json"), config).unwrap();
    std::fs::write(dir.join("model.safetensors"), data).unwrap();
    if let Ok(ckpt) = deepseek_core::loader::Checkpoint::open(&dir) {
        read_every_tensor(&ckpt);
    }
    let dtypes = [
        WeightDtype::Auto,
        WeightDtype::F32,
        WeightDtype::Q8_0,
        WeightDtype::Q4_1,
    ];
    if let Ok(model) = Model::load(&dir, one_thread(dtypes[data.len() % 4])) {
        smoke(model);
    }
}

/// Every tensor a source lists is there, and reads as f32 to as many values as its shape has
/// (or is refused with an error, for a dtype that needs its scales).
fn read_every_tensor(source: &dyn TensorSource) {
    for name in source.names() {
        assert!(source.contains(&name), "{name}: listed but not contained");
        match source.get(&name) {
            Ok(Some(t)) => {
                if let Ok(values) = t.to_f32() {
                    let n: usize = t.shape.iter().product();
                    assert_eq!(values.len(), n, "{name}: to_f32 length");
                }
            }
            Ok(None) => panic!("{name}: listed but get gives None"),
            Err(_) => {}
        }
    }
}

/// A `model.safetensors.index.json` next to the two shards of llama3_sharded_bf16.
pub fn safetensors_index(data: &[u8]) {
    let dir = scratch("safetensors_index");
    let src = fixture("deepseek-core/tests/fixtures/llama3_sharded_bf16");
    for f in [
        "config.json",
        "model-00001-of-00002.safetensors",
        "model-00002-of-00002.safetensors",
    ] {
        if !dir.join(f).exists() {
            std::os::unix::fs::symlink(src.join(f), dir.join(f)).unwrap();
        }
    }
    std::fs::write(dir.join("model.safetensors.index.json"), data).unwrap();
    if let Ok(ckpt) = deepseek_core::loader::Checkpoint::open(&dir) {
        read_every_tensor(&ckpt);
    }
    if let Ok(model) = Model::load(&dir, one_thread(WeightDtype::Auto)) {
        smoke(model);
    }
}

/// A config.json: validated, then (if valid) loaded over the tiny weights of its family, so a
/// config that passes validation cannot make the loader allocate from its sizes unchecked.
pub fn config_json(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(config) = Config::from_json_str(text) else {
        return;
    };
    if let Some(d) = config.deepseek() {
        let _ = (d.qk_head_dim(), d.softmax_scale());
        for layer in 0..config.num_hidden_layers.min(64) {
            d.is_moe_layer(layer);
        }
    }
    if let Some(l) = config.llama() {
        let _ = l.softmax_scale();
    }
    let family = if config.deepseek().is_some() {
        "tiny_v3"
    } else {
        "tiny_qwen2"
    };
    let dir = folder_with_weights("config_json", family);
    std::fs::write(dir.join("config.json"), data).unwrap();
    if let Ok(model) = Model::load(&dir, one_thread(WeightDtype::Auto)) {
        smoke(model);
    }
}

/// A GGUF file, as `model.gguf`: the header parsed from the bytes, then the file opened as
/// a model source (every tensor read), its config, sampling defaults and tokenizer read from
/// the metadata, and the model loaded (in a format the length picks) and run. Sizes, counts
/// and offsets in the file must be checked against the file before anything is allocated.
pub fn gguf(data: &[u8]) {
    let _ = deepseek_core::loader::gguf::Header::parse(data);
    let path = scratch("gguf").join("model.gguf");
    std::fs::write(&path, data).unwrap();
    let Ok(file) = GgufModel::open(&path) else {
        return;
    };
    read_every_tensor(&file);
    let _ = file.generation_config();
    let config = file.config();
    if let Ok(tok) = deepseek_core::loader::gguf_vocab::tokenizer_from_gguf(file.first()) {
        exercise(&tok, "ab abc 1+2=\n<think>");
        let ids: Vec<u32> = (0..tok.vocab_size().min(64) as u32)
            .filter(|&id| tok.contains(id))
            .collect();
        check_stream(&tok, &ids);
    }
    if config.is_err() {
        return;
    }
    let dtypes = [WeightDtype::Auto, WeightDtype::F32, WeightDtype::Q8_0];
    if let Ok(model) = Model::load(&path, one_thread(dtypes[data.len() % 3])) {
        smoke(model);
    }
}

/// A generation_config.json, then NUL and little-endian f32 logits: the parsed defaults drive
/// a sampler over those logits (a fixed seed; a valid config may not yield an invalid id).
pub fn generation_config(data: &[u8]) {
    let (json, rest) = split_nul(data);
    let Ok(text) = std::str::from_utf8(json) else {
        return;
    };
    let Ok(config) = GenerationConfig::from_json_str(text) else {
        return;
    };
    let logits: Vec<f32> = rest
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
        .collect();
    let mut params = config.sampling.clone();
    params.seed = Some(7);
    let mut sampler = Sampler::new(params).expect("validated params build a sampler");
    sampler.add_prompt(&config.eos_token_ids);
    for _ in 0..3 {
        match sampler.sample(&logits) {
            Ok(id) => {
                assert!(
                    (id as usize) < logits.len(),
                    "sampled {id} of {}",
                    logits.len()
                );
                sampler.accept(id);
            }
            Err(_) => break,
        }
    }
}

/// tokenizer.json bytes: built, then used on a few strings and every id it claims to have.
pub fn tokenizer_json(data: &[u8]) {
    let Ok(tok) = Tokenizer::from_json(data, None) else {
        return;
    };
    exercise(&tok, "Hello, world! 你好 <think>\n4738 + 256</think>");
    let ids: Vec<u32> = (0..tok.vocab_size().min(512) as u32)
        .filter(|&id| tok.contains(id))
        .collect();
    check_stream(&tok, &ids);
}

/// tokenizer_text's setup, run before fuzzing starts: loading R1's 8 MB tokenizer.json under
/// ASan is slow, and must not count against the first input's time limit.
pub fn init_tokenizer_text() {
    init();
    real_tokenizers();
}

/// r1-nano's, R1's and R1-Distill-Llama's tokenizers, loaded once.
fn real_tokenizers() -> &'static [Tokenizer] {
    static TOKENIZERS: OnceLock<Vec<Tokenizer>> = OnceLock::new();
    TOKENIZERS.get_or_init(|| {
        [
            "models/r1-nano",
            "deepseek-core/tests/fixtures/tokenizers/deepseek-r1",
            "deepseek-core/tests/fixtures/tokenizers/deepseek-r1-distill-llama-8b",
        ]
        .iter()
        .map(|d| Tokenizer::from_dir(fixture(d)).expect("fixture tokenizer"))
        .collect()
    })
}

/// Text through the real tokenizers: the first byte picks r1-nano's, R1's or R1-Distill-Llama's
/// (Llama 3's BPE); the text is encoded, decoded and streamed; the tail as ids is decoded too.
pub fn tokenizer_text(data: &[u8]) {
    let toks = real_tokenizers();
    let tok = &toks[data.first().map_or(0, |&b| b as usize % toks.len())];
    let text = String::from_utf8_lossy(data);
    exercise(tok, &text);
    let ids: Vec<u32> = data
        .chunks_exact(4)
        .map(|b| u32::from_le_bytes(b.try_into().unwrap()))
        .map(|id| id % (tok.vocab_size() as u32 + 8))
        .collect();
    match tok.decode(&ids, false) {
        Ok(_) => check_stream(tok, &ids),
        Err(_) => assert!(
            ids.iter().any(|&id| !tok.contains(id)),
            "decode failed on known ids"
        ),
    }
}

/// tokenizer_config.json bytes next to r1-nano's tokenizer.json: special tokens and the chat
/// template it declares, rendered over a fixed conversation.
pub fn tokenizer_config(data: &[u8]) {
    static JSON: OnceLock<Vec<u8>> = OnceLock::new();
    let json =
        JSON.get_or_init(|| std::fs::read(fixture("models/r1-nano/tokenizer.json")).unwrap());
    let Ok(tok) = Tokenizer::from_json(json, Some(data)) else {
        return;
    };
    for id in tok.bos_id().into_iter().chain(tok.eos_ids()) {
        assert!(tok.contains(id), "special id {id} not in the vocabulary");
    }
    if let Ok(template) = ChatTemplate::for_tokenizer(&tok) {
        let conversation = [
            Message::system("Be brief."),
            Message::user("What is 1+1?"),
            Message::assistant("<think>\nadd\n</think>\n\n2"),
            Message::user("And 2+2?"),
        ];
        if let Ok(text) = template.render(&conversation, true) {
            let _ = tok.encode(&text, false);
        }
    }
}

/// A chat template and a conversation: flag byte (bit 0: add_generation_prompt), the Jinja
/// source, then NUL-separated role and content strings.
pub fn chat_template(data: &[u8]) {
    let Some((&flags, rest)) = data.split_first() else {
        return;
    };
    let text = String::from_utf8_lossy(rest);
    let mut parts = text.split('\0');
    let source = parts.next().unwrap_or_default();
    let Ok(template) = ChatTemplate::new(source) else {
        return;
    };
    let template = template
        .with_special_token("bos_token", "<｜begin▁of▁sentence｜>")
        .with_special_token("eos_token", "<｜end▁of▁sentence｜>");
    let fields: Vec<&str> = parts.collect();
    let messages: Vec<Message> = fields
        .chunks(2)
        .map(|m| Message::new(m[0], m.get(1).copied().unwrap_or_default()))
        .collect();
    let _ = template.render(&messages, flags & 1 == 1);
}

/// Encodes `text` both ways; every id is in the vocabulary, and decoding and streaming agree.
fn exercise(tok: &Tokenizer, text: &str) {
    for add_special in [false, true] {
        let Ok(ids) = tok.encode(text, add_special) else {
            continue;
        };
        for &id in &ids {
            assert!(tok.contains(id), "encode gave id {id} the tokenizer lacks");
        }
        tok.decode(&ids, false).expect("decoding encoded ids");
        check_stream(tok, &ids);
    }
}

/// Streaming `ids` gives exactly the text of decoding them with special tokens skipped.
fn check_stream(tok: &Tokenizer, ids: &[u32]) {
    let Ok(whole) = tok.decode(ids, true) else {
        return;
    };
    let mut stream = tok.stream_decoder();
    let mut text = String::new();
    for &id in ids {
        stream
            .push(id, &mut text)
            .expect("streaming a decodable id");
    }
    stream.finish(&mut text);
    assert_eq!(text, whole, "streamed text differs from decode of {ids:?}");
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

fn split_nul(data: &[u8]) -> (&[u8], &[u8]) {
    match data.iter().position(|&b| b == 0) {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &[]),
    }
}
