//! Tokenizers inside GGUF files, both ways: llama.cpp's `tokenizer.ggml.*` metadata -> a
//! [`Tokenizer`] ([`tokenizer_from_gguf`]), and a Hugging Face tokenizer.json +
//! tokenizer_config.json -> the metadata llama.cpp's converter writes for them
//! ([`gguf_vocab_metadata`]).
//!
//! Owns the translation only, never the tokenisation: a GGUF vocabulary becomes a tokenizer.json
//! that the `tokenizers` crate runs, exactly as for a checkpoint folder. Only byte-level BPE
//! (`tokenizer.ggml.model` = `gpt2`) with a pre-tokenizer whose Hugging Face form we know is
//! accepted ([`PRE_NAMES`]); any other model, pre-tokenizer or inconsistent table is a typed
//! error naming it, never a guess.
//!
//! What a GGUF cannot say and how we fill it in:
//! - The normalizer and pre-tokenizer: llama.cpp derives them from the `pre` name
//!   (`llama-vocab.cpp`); we write the tokenizer.json pieces of the checkpoints that name stands
//!   for (Qwen2's NFC included, which llama.cpp skips).
//! - Which added tokens are "special" (skipped when decoding with `skip_special`): the converter
//!   types every added token that is special *or looks special* (`<｜...｜>`, `<|...|>`) as
//!   CONTROL. CONTROL tokens become special again, except the chat and tool markers the DeepSeek
//!   tokenizers mark non-special (per family, see `Pre::non_special`), so decoded text keeps
//!   them as it does with the checkpoint's own tokenizer.json.
//! - Padding ids (`[PAD{i}]`, type UNUSED) are left out, as they are absent from tokenizer.json.

use std::collections::{HashMap, HashSet};
use std::io::Write;

use serde_json::{json, Map, Value as Json};

use super::gguf::{GgufFile, Value};
use crate::error::{Error, Result};
use crate::tokenizer::Tokenizer;

/// The `tokenizer.ggml.pre` names we read, each with the pre-tokenizer llama.cpp selects for it
/// (`llama-vocab.cpp`). Each kind's first name is its canonical one.
pub const PRE_NAMES: &[&str] = &[
    "deepseek-v3",
    "joyai-llm",
    "deepseek-llm",
    "qwen2",
    "deepseek-r1-qwen",
    "llama-bpe",
    "llama3",
    "llama-v3",
    "smaug-bpe",
    "gpt-2",
];

// Added tokens the converter types CONTROL (they look special) although the checkpoints'
// tokenizer.json files mark them non-special, by pre-tokenizer family: chat, FIM and tool-call
// markers, which must stay in decoded text (tool-call parsing reads them). Taken from R1,
// R1-Distill-Qwen and R1-Distill-Llama (a unit test checks them against those files); `<|EOT|>`
// is special in R1 but not in the Qwen one, hence one list per family.

/// R1's (and V3's) non-special CONTROL tokens.
const DEEPSEEK_V3_NON_SPECIAL: &[&str] = &[
    "<｜fim▁hole｜>",
    "<｜fim▁begin｜>",
    "<｜fim▁end｜>",
    "<｜User｜>",
    "<｜Assistant｜>",
    "<｜tool▁calls▁begin｜>",
    "<｜tool▁calls▁end｜>",
    "<｜tool▁call▁begin｜>",
    "<｜tool▁call▁end｜>",
    "<｜tool▁outputs▁begin｜>",
    "<｜tool▁outputs▁end｜>",
    "<｜tool▁output▁begin｜>",
    "<｜tool▁output▁end｜>",
    "<｜tool▁sep｜>",
];
/// R1-Distill-Qwen's non-special CONTROL tokens.
const QWEN2_NON_SPECIAL: &[&str] = &[
    "<｜User｜>",
    "<｜Assistant｜>",
    "<|EOT|>",
    "<|fim_prefix|>",
    "<|fim_middle|>",
    "<|fim_suffix|>",
    "<|fim_pad|>",
    "<|repo_name|>",
    "<|file_sep|>",
];
/// R1-Distill-Llama's non-special CONTROL tokens.
const LLAMA3_NON_SPECIAL: &[&str] = &["<｜User｜>", "<｜Assistant｜>"];

/// A pre-tokenizer llama.cpp implements and whose Hugging Face form we know.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Pre {
    /// DeepSeek-V3/R1 (`LLAMA_VOCAB_PRE_TYPE_DEEPSEEK3_LLM`).
    DeepseekV3,
    /// DeepSeek LLM and V2 (`LLAMA_VOCAB_PRE_TYPE_DEEPSEEK_LLM`).
    DeepseekLlm,
    /// Qwen2 and the R1-Distill-Qwen models (`LLAMA_VOCAB_PRE_TYPE_QWEN2`).
    Qwen2,
    /// Llama 3 and R1-Distill-Llama (`LLAMA_VOCAB_PRE_TYPE_LLAMA3`: merges ignored for words
    /// already in the vocabulary).
    Llama3,
    /// Llama 3's regex with every merge applied (`LLAMA_VOCAB_PRE_TYPE_SMAUG`).
    Smaug,
    /// GPT-2's byte-level regex (`LLAMA_VOCAB_PRE_TYPE_GPT2`).
    Gpt2,
}

// The regexes as the checkpoints' tokenizer.json files spell them (llama.cpp adapts some).
const V3_DIGITS: &str = r"\p{N}{1,3}";
const V3_CJK: &str = "[一-龥\u{3040}-ゟ゠-ヿ]+";
const V3_WORDS: &str = "[!\"#$%&'()*+,\\-./:;<=>?@\\[\\\\\\]^_`{|}~][A-Za-z]+|[^\r\n\\p{L}\\p{P}\\p{S}]?[\\p{L}\\p{M}]+| ?[\\p{P}\\p{S}]+[\r\n]*|\\s*[\r\n]+|\\s+(?!\\S)|\\s+";
const QWEN2: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
const LLAMA3: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
const DEEPSEEK_LLM: &[&str] = &[
    "[\r\n]",
    "\\s?[A-Za-zµÀ-ÖØ-öø-ƺƼ-ƿǄ-ʓʕ-ʯͰ-ͳͶͷͻ-ͽͿΆΈ-ΊΌΎ-ΡΣ-ϵϷ-ҁҊ-ԯԱ-ՖႠ-ჅᎠ-Ᏽᏸ-ᏽᲐ-ᲺᲽ-Ჿᴀ-ᴫᵫ-ᵷᵹ-ᶚḀ-ἕἘ-Ἕἠ-ὅὈ-Ὅὐ-ὗὙὛὝὟ-\u{1f7d}ᾀ-ᾴᾶ-ᾼ\u{1fbe}ῂ-ῄῆ-ῌῐ-\u{1fd3}ῖ-\u{1fdb}ῠ-Ῥῲ-ῴῶ-ῼℂℇℊ-ℓℕℙ-ℝℤ\u{2126}ℨ\u{212a}-ℭℯ-ℴℹℼ-ℿⅅ-ⅉⅎↃↄⰀ-ⱻⱾ-ⳤⳫ-ⳮⳲⳳꙀ-ꙭꚀ-ꚛꜢ-ꝯꝱ-ꞇꞋ-ꞎꭰ-ꮿﬀ-ﬆﬓ-ﬗＡ-Ｚａ-ｚ𐐀-𐑏𐒰-𐓓𐓘-𐓻𐲀-𐲲𐳀-𐳲𑢠-𑣟𞤀-𞥃]+",
    "\\s?[!-/:-~！-／：-～‘-‟　-。]+",
    "\\s+$",
    "[一-龥ࠀ-一가-퟿]+",
    "\\p{N}+",
];

impl Pre {
    fn from_name(name: &str) -> Option<Pre> {
        Some(match name {
            "deepseek-v3" => Pre::DeepseekV3,
            // What the converter writes for DeepSeek-V3/R1 under transformers 5 (its fingerprint
            // then lacks BOS); llama.cpp runs the V3 regexes for it.
            "joyai-llm" => Pre::DeepseekV3,
            "deepseek-llm" => Pre::DeepseekLlm,
            "qwen2" | "deepseek-r1-qwen" => Pre::Qwen2,
            "llama-bpe" | "llama3" | "llama-v3" => Pre::Llama3,
            "smaug-bpe" => Pre::Smaug,
            "gpt-2" => Pre::Gpt2,
            _ => return None,
        })
    }

    const ALL: [Pre; 6] = [
        Pre::DeepseekV3,
        Pre::DeepseekLlm,
        Pre::Qwen2,
        Pre::Llama3,
        Pre::Smaug,
        Pre::Gpt2,
    ];

    /// The name written when no registered fingerprint names the tokenizer.
    fn canonical_name(self) -> &'static str {
        match self {
            Pre::DeepseekV3 => "deepseek-v3",
            Pre::DeepseekLlm => "deepseek-llm",
            Pre::Qwen2 => "qwen2",
            Pre::Llama3 => "llama-bpe",
            Pre::Smaug => "smaug-bpe",
            Pre::Gpt2 => "gpt-2",
        }
    }

    fn normalizer(self) -> Json {
        match self {
            Pre::Qwen2 => json!({"type": "NFC"}),
            _ => Json::Null,
        }
    }

    fn pre_tokenizer(self) -> Json {
        let split = |re: &str| json!({"type": "Split", "pattern": {"Regex": re}, "behavior": "Isolated", "invert": false});
        let byte_level = json!({"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": false});
        let sequence = |regexes: &[&str]| {
            let mut list: Vec<Json> = regexes.iter().map(|r| split(r)).collect();
            list.push(byte_level.clone());
            json!({"type": "Sequence", "pretokenizers": list})
        };
        match self {
            Pre::DeepseekV3 => sequence(&[V3_DIGITS, V3_CJK, V3_WORDS]),
            Pre::DeepseekLlm => sequence(DEEPSEEK_LLM),
            Pre::Qwen2 => sequence(&[QWEN2]),
            Pre::Llama3 | Pre::Smaug => sequence(&[LLAMA3]),
            Pre::Gpt2 => {
                json!({"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true})
            }
        }
    }

    /// llama.cpp's `ignore_merges`, the BPE option of the same name in tokenizer.json.
    fn ignore_merges(self) -> bool {
        self == Pre::Llama3
    }

    /// CONTROL tokens that this family's tokenizer.json marks non-special.
    fn non_special(self) -> &'static [&'static str] {
        match self {
            Pre::DeepseekV3 => DEEPSEEK_V3_NON_SPECIAL,
            Pre::Qwen2 => QWEN2_NON_SPECIAL,
            Pre::Llama3 | Pre::Smaug => LLAMA3_NON_SPECIAL,
            Pre::DeepseekLlm | Pre::Gpt2 => &[],
        }
    }

    /// llama.cpp's `add_bos` when the file does not say.
    fn default_add_bos(self) -> bool {
        self == Pre::Llama3
    }
}

/// The converter's registered fingerprints (`get_vocab_base_pre` in llama.cpp's
/// `conversion/base.py`) for the names of [`PRE_NAMES`]: sha256 of the Python list of ids of
/// [`CHKTXT`].
const FINGERPRINTS: &[(&str, &str)] = &[
    (
        "877081d19cf6996e2c4ff0e1236341e9b7bde288f5311a56a937f0afbbb3aeb5",
        "deepseek-v3",
    ),
    (
        "b4b8ca1f9769494fbd956ebc4c249de6131fb277a4a3345a7a92c7dd7a55808d",
        "joyai-llm",
    ),
    (
        "049ecf7629871e3041641907f3de7c733e4dbfdc736f57d882ba0b0845599754",
        "deepseek-llm",
    ),
    (
        "e636dc30a262dcc0d8c323492e32ae2b70728f4df7dfe9737d9f920a282b8aea",
        "qwen2",
    ),
    (
        "d4540891389ea895b53b399da6ac824becc30f2fba0e9ddbb98f92e55ca0e97c",
        "qwen2",
    ),
    (
        "b3f499bb4255f8ca19fccd664443283318f2fd2414d5e0b040fbdd0cc195d6c5",
        "deepseek-r1-qwen",
    ),
    (
        "0ef9807a4087ebef797fc749390439009c3b9eda9ad1a097abbe738f486c01e5",
        "llama-bpe",
    ),
    (
        "c136ed14d01c2745d4f60a9596ae66800e2b61fa45643e72436041855ad4089d",
        "smaug-bpe",
    ),
    (
        "3ce83efda5659b07b1ad37ca97ca5797ea4285d9b9ab0dc679e4a720c9da7454",
        "gpt-2",
    ),
    (
        "0fe1cf6eda062318a1af7270f3331a85c539a01778ff948e24388e949c5282f4",
        "gpt-2",
    ),
];

/// The text the converter tokenizes to fingerprint a pre-tokenizer.
const CHKTXT: &str = "\n \n\n \n\n\n \t \t\t \t\n  \n   \n    \n     \n🚀 (normal) 😶\u{200d}🌫\u{fe0f} (multiple emojis concatenated) ✅ 🦙🦙 3 33 333 3333 33333 333333 3333333 33333333 3.3 3..3 3...3 កាន់តែពិសេសអាច😁 ?我想在apple工作1314151天～ ------======= нещо на Български ''''''```````\"\"\"\"......!!!!!!?????? I've been 'told he's there, 'RE you sure? 'M not sure I'll make it, 'D you like some tea? We'Ve a'lL";

/// llama.cpp's token types (`llama_token_type`).
mod token_type {
    pub const NORMAL: i32 = 1;
    pub const CONTROL: i32 = 3;
    pub const USER_DEFINED: i32 = 4;
    pub const UNUSED: i32 = 5;
}

/// The largest `vocab_size` [`gguf_vocab_metadata`] pads to (real vocabularies stay under 2^19).
const MAX_VOCAB: usize = 1 << 24;

/// The special-token kinds gguf-py's `SpecialVocab` reads, in its order, with their GGUF keys
/// (llama.cpp spells "separator" so; it has no key for `cls`, which the converter skips).
const SPECIAL_IDS: &[(&str, Option<&str>)] = &[
    ("bos", Some("tokenizer.ggml.bos_token_id")),
    ("eos", Some("tokenizer.ggml.eos_token_id")),
    ("unk", Some("tokenizer.ggml.unknown_token_id")),
    ("sep", Some("tokenizer.ggml.seperator_token_id")),
    ("pad", Some("tokenizer.ggml.padding_token_id")),
    ("cls", None),
    ("mask", Some("tokenizer.ggml.mask_token_id")),
];

// ---------------------------------------------------------------------------------------------
// GGUF -> tokenizer
// ---------------------------------------------------------------------------------------------

/// The tokenizer stored in `file`'s metadata (byte-level BPE vocabularies only; see the module
/// documentation). Malformed or unsupported metadata is an [`Error::Gguf`] naming the key.
pub fn tokenizer_from_gguf(file: &GgufFile) -> Result<Tokenizer> {
    let (json, config) = hf_files(&|key| file.get(key)).map_err(|m| file.error(m))?;
    Tokenizer::from_json(&json, Some(&config))
}

/// A GGUF vocabulary rewritten as the contents of tokenizer.json and tokenizer_config.json.
fn hf_files<'a>(get: &dyn Fn(&str) -> Option<&'a Value>) -> Result<(Vec<u8>, Vec<u8>), String> {
    let string = |key: &str| -> Result<Option<&'a str>, String> {
        match get(key) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(v) => Err(format!(
                "metadata `{key}` should be a string, found {}",
                kind(v)
            )),
        }
    };
    let model = string("tokenizer.ggml.model")?
        .ok_or("metadata `tokenizer.ggml.model` is missing: the file has no tokenizer")?;
    if model != "gpt2" {
        return Err(format!(
            "tokenizer.ggml.model `{model}` is not supported (supported: gpt2, byte-level BPE)"
        ));
    }
    let pre_name = string("tokenizer.ggml.pre")?.ok_or(
        "metadata `tokenizer.ggml.pre` is missing (llama.cpp would fall back to a pre-tokenizer \
         no Hugging Face tokenizer has)",
    )?;
    let pre = Pre::from_name(pre_name).ok_or_else(|| {
        format!(
            "tokenizer.ggml.pre `{pre_name}` is not supported (supported: {})",
            PRE_NAMES.join(", ")
        )
    })?;
    for key in [
        "tokenizer.ggml.normalizer.lowercase",
        "tokenizer.ggml.normalizer.strip_accents",
    ] {
        match get(key) {
            None | Some(Value::Bool(false)) => {}
            Some(v) => return Err(format!("metadata `{key}` = {v:?} is not supported")),
        }
    }

    let tokens = string_array(get, "tokenizer.ggml.tokens")?;
    if tokens.is_empty() {
        return Err("metadata `tokenizer.ggml.tokens` is empty".into());
    }
    let types = match get("tokenizer.ggml.token_type") {
        None => return Err("metadata `tokenizer.ggml.token_type` is missing".into()),
        Some(Value::Array(a)) => a
            .iter()
            .map(|v| match v {
                Value::I32(t) => Ok(*t),
                v => Err(format!(
                    "metadata `tokenizer.ggml.token_type` should be an array of i32, found an element {}",
                    kind(v)
                )),
            })
            .collect::<Result<Vec<i32>, String>>()?,
        Some(v) => {
            return Err(format!(
                "metadata `tokenizer.ggml.token_type` should be an array, found {}",
                kind(v)
            ))
        }
    };
    if types.len() != tokens.len() {
        return Err(format!(
            "tokenizer.ggml.token_type has {} entries but tokenizer.ggml.tokens has {}",
            types.len(),
            tokens.len()
        ));
    }

    // Every token except the UNUSED padding goes into the BPE vocabulary: the `tokenizers` crate
    // gives an added token the id of its vocabulary entry, and otherwise the next free id.
    let mut ids: HashMap<&str, u32> = HashMap::with_capacity(tokens.len());
    let mut added: Vec<(u32, &str, bool)> = Vec::new();
    for (i, (&text, &ty)) in tokens.iter().zip(&types).enumerate() {
        let id = u32::try_from(i).map_err(|_| "more than 2^32 tokens".to_string())?;
        match ty {
            token_type::UNUSED => continue,
            token_type::NORMAL => {}
            token_type::CONTROL => added.push((id, text, !pre.non_special().contains(&text))),
            token_type::USER_DEFINED => added.push((id, text, false)),
            t => {
                return Err(format!(
                "token {i} ({text:?}) has type {t}, which a byte-level BPE vocabulary does not use"
            ))
            }
        }
        if text.is_empty() {
            return Err(format!("token {i} is empty"));
        }
        if let Some(first) = ids.insert(text, id) {
            return Err(format!("tokens {first} and {i} are both {text:?}"));
        }
    }

    let merges = string_array(get, "tokenizer.ggml.merges")?;
    let mut pairs: Vec<(&str, &str)> = Vec::with_capacity(merges.len());
    let mut seen: HashSet<(&str, &str)> = HashSet::with_capacity(merges.len());
    let mut merged = String::new();
    for (i, merge) in merges.iter().enumerate() {
        // As llama.cpp splits them: at the first space after the first byte.
        let pair = merge
            .bytes()
            .skip(1)
            .position(|b| b == b' ')
            .map(|at| (&merge[..at + 1], &merge[at + 2..]))
            .ok_or_else(|| {
                format!("merge {i} ({merge:?}) is not two tokens separated by a space")
            })?;
        for part in [pair.0, pair.1] {
            if !ids.contains_key(part) {
                return Err(format!(
                    "merge {i} ({merge:?}) names {part:?}, which is not a token"
                ));
            }
        }
        merged.clear();
        merged.push_str(pair.0);
        merged.push_str(pair.1);
        if !ids.contains_key(merged.as_str()) {
            return Err(format!(
                "merge {i} ({merge:?}) makes {merged:?}, which is not a token"
            ));
        }
        if !seen.insert(pair) {
            return Err(format!("merge {i} ({merge:?}) appears twice"));
        }
        pairs.push(pair);
    }

    // Special ids must name a token the tokenizer has.
    let special = |key: &str| -> Result<Option<&'a str>, String> {
        let Some(v) = get(key) else { return Ok(None) };
        let id = v
            .as_u64()
            .ok_or_else(|| format!("metadata `{key}` should be a token id, found {v:?}"))?;
        match usize::try_from(id).ok().filter(|&i| i < tokens.len()) {
            None => Err(format!(
                "metadata `{key}` = {id} is out of range ({} tokens)",
                tokens.len()
            )),
            Some(i) if types[i] == token_type::UNUSED => Err(format!(
                "metadata `{key}` = {id} names an unused (padding) token"
            )),
            Some(i) => Ok(Some(tokens[i])),
        }
    };
    let flag = |key: &str, default: bool| -> Result<bool, String> {
        match get(key) {
            None => Ok(default),
            Some(Value::Bool(b)) => Ok(*b),
            Some(v) => Err(format!("metadata `{key}` should be a bool, found {v:?}")),
        }
    };
    let mut config = Map::new();
    for (name, key) in [
        ("bos_token", "tokenizer.ggml.bos_token_id"),
        ("eos_token", "tokenizer.ggml.eos_token_id"),
        ("pad_token", "tokenizer.ggml.padding_token_id"),
        ("unk_token", "tokenizer.ggml.unknown_token_id"),
    ] {
        if let Some(text) = special(key)? {
            config.insert(name.into(), text.into());
        }
    }
    config.insert(
        "add_bos_token".into(),
        flag("tokenizer.ggml.add_bos_token", pre.default_add_bos())?.into(),
    );
    config.insert(
        "add_eos_token".into(),
        flag("tokenizer.ggml.add_eos_token", false)?.into(),
    );
    if let Some(t) = string("tokenizer.chat_template")? {
        config.insert("chat_template".into(), t.into());
    }

    let json = tokenizer_json(pre, &tokens, &types, &added, &pairs);
    let config = serde_json::to_vec(&Json::Object(config)).expect("a JSON map serializes");
    Ok((json, config))
}

/// `key` as an array of strings.
fn string_array<'a>(
    get: &dyn Fn(&str) -> Option<&'a Value>,
    key: &str,
) -> Result<Vec<&'a str>, String> {
    match get(key) {
        None => Err(format!("metadata `{key}` is missing")),
        Some(Value::Array(items)) => items
            .iter()
            .map(|v| match v {
                Value::String(s) => Ok(s.as_str()),
                v => Err(format!(
                    "metadata `{key}` should be an array of strings, found an element {}",
                    kind(v)
                )),
            })
            .collect(),
        Some(v) => Err(format!(
            "metadata `{key}` should be an array, found {}",
            kind(v)
        )),
    }
}

/// A short description of a value's type for error messages (arrays can be huge).
fn kind(v: &Value) -> String {
    match v {
        Value::Array(a) => format!("an array of {} elements", a.len()),
        Value::String(s) if s.len() > 40 => "a long string".into(),
        v => format!("{v:?}"),
    }
}

/// Writes tokenizer.json by hand: a 130k-token vocabulary and as many merges go straight into
/// one buffer instead of a tree of JSON values.
fn tokenizer_json(
    pre: Pre,
    tokens: &[&str],
    types: &[i32],
    added: &[(u32, &str, bool)],
    merges: &[(&str, &str)],
) -> Vec<u8> {
    let bytes: usize = tokens.iter().map(|t| t.len() + 12).sum::<usize>()
        + merges
            .iter()
            .map(|(a, b)| a.len() + b.len() + 8)
            .sum::<usize>();
    let mut out = Vec::with_capacity(bytes + 4096);
    let s = |out: &mut Vec<u8>, text: &str| {
        serde_json::to_writer(out, text).expect("writing to a Vec cannot fail")
    };
    out.extend_from_slice(br#"{"version":"1.0","truncation":null,"padding":null,"added_tokens":["#);
    for (n, &(id, text, special)) in added.iter().enumerate() {
        if n > 0 {
            out.push(b',');
        }
        write!(out, r#"{{"id":{id},"content":"#).expect("Vec");
        s(&mut out, text);
        write!(
            out,
            r#","single_word":false,"lstrip":false,"rstrip":false,"normalized":false,"special":{special}}}"#
        )
        .expect("Vec");
    }
    out.extend_from_slice(b"],\"normalizer\":");
    serde_json::to_writer(&mut out, &pre.normalizer()).expect("Vec");
    out.extend_from_slice(b",\"pre_tokenizer\":");
    serde_json::to_writer(&mut out, &pre.pre_tokenizer()).expect("Vec");
    // No BOS from the post-processor: as with the DeepSeek checkpoints' own tokenizer.json,
    // BOS comes from the chat template or `add_bos_token`.
    out.extend_from_slice(
        br#","post_processor":{"type":"ByteLevel","add_prefix_space":false,"trim_offsets":false,"use_regex":false},"decoder":{"type":"ByteLevel","add_prefix_space":true,"trim_offsets":true,"use_regex":true},"model":{"type":"BPE","dropout":null,"unk_token":null,"continuing_subword_prefix":null,"end_of_word_suffix":null,"fuse_unk":false,"byte_fallback":false,"#,
    );
    write!(out, r#""ignore_merges":{},"vocab":{{"#, pre.ignore_merges()).expect("Vec");
    let mut first = true;
    for (id, (&text, &ty)) in tokens.iter().zip(types).enumerate() {
        if ty == token_type::UNUSED {
            continue;
        }
        if !first {
            out.push(b',');
        }
        first = false;
        s(&mut out, text);
        write!(out, ":{id}").expect("Vec");
    }
    out.extend_from_slice(br#"},"merges":["#);
    for (n, (a, b)) in merges.iter().enumerate() {
        if n > 0 {
            out.push(b',');
        }
        out.push(b'[');
        s(&mut out, a);
        out.push(b',');
        s(&mut out, b);
        out.push(b']');
    }
    out.extend_from_slice(b"]}}");
    out
}

// ---------------------------------------------------------------------------------------------
// tokenizer -> GGUF
// ---------------------------------------------------------------------------------------------

/// The `tokenizer.*` metadata llama.cpp's converter (`convert_hf_to_gguf.py`, `_set_vocab_gpt2`
/// and gguf-py's `SpecialVocab`) writes for this tokenizer, in its order, for a model whose
/// config says `vocab_size` (ids up to it that the tokenizer lacks become `[PAD{id}]`, type
/// UNUSED).
///
/// The `pre` name is the converter's: the name registered for the tokenizer's fingerprint,
/// computed as under transformers 4, which the fingerprints were registered with (it prepends
/// BOS for `LlamaTokenizerFast` configs; under transformers 5 the converter names R1's tokenizer
/// `joyai-llm`), and checked against the tokenizer.json pre-tokenizer, which must be one
/// llama.cpp implements ([`PRE_NAMES`]); an unregistered fingerprint gets that pre-tokenizer's
/// canonical name (the converter would stop). Added tokens that strip spaces, which GGUF cannot
/// express, are an error. Not covered: special ids the converter takes from config.json when
/// tokenizer_config.json lacks them, and a `chat_template.jinja` file (pass its text in the
/// config's `chat_template`).
pub fn gguf_vocab_metadata(
    tokenizer_json: &[u8],
    tokenizer_config: Option<&[u8]>,
    vocab_size: usize,
) -> Result<Vec<(String, Value)>> {
    let bad = |m: String| Error::Tokenizer(format!("tokenizer.json: {m}"));
    let tj: Json = serde_json::from_slice(tokenizer_json).map_err(|e| Error::Json {
        path: "tokenizer.json".into(),
        message: e.to_string(),
    })?;
    let config: Map<String, Json> = match tokenizer_config {
        None => Map::new(),
        Some(bytes) => match serde_json::from_slice(bytes) {
            Ok(Json::Object(o)) => o,
            Ok(_) => {
                return Err(Error::Json {
                    path: "tokenizer_config.json".into(),
                    message: "not a JSON object".into(),
                })
            }
            Err(e) => {
                return Err(Error::Json {
                    path: "tokenizer_config.json".into(),
                    message: e.to_string(),
                })
            }
        },
    };
    let model = tj
        .get("model")
        .and_then(Json::as_object)
        .ok_or_else(|| bad("no `model` object".into()))?;
    let pre = identify(&tj, model).map_err(bad)?;
    if vocab_size > MAX_VOCAB {
        return Err(Error::InvalidArgument(format!(
            "vocab_size {vocab_size} is larger than {MAX_VOCAB}"
        )));
    }
    let tok = Tokenizer::from_json(tokenizer_json, None)?;

    // The vocabulary as transformers sees it: model entries, then added tokens (which win).
    let mut by_id: Vec<Option<&str>> = vec![None; vocab_size];
    let vocab = model
        .get("vocab")
        .and_then(Json::as_object)
        .ok_or_else(|| bad("`model.vocab` is not an object".into()))?;
    for (text, id) in vocab {
        let id = token_id(id, text, vocab_size).map_err(bad)?;
        by_id[id] = Some(text.as_str());
    }
    let added = added_tokens(&tj).map_err(bad)?;
    let mut added_by_content: HashMap<&str, &AddedToken> = HashMap::new();
    let mut added_by_id: HashMap<usize, &AddedToken> = HashMap::new();
    for a in &added {
        let id = usize::try_from(a.id)
            .ok()
            .filter(|&i| i < vocab_size)
            .ok_or_else(|| {
                bad(format!(
                    "added token {:?} has id {}, not below the model's vocab_size {vocab_size}",
                    a.content, a.id
                ))
            })?;
        by_id[id] = Some(a.content.as_str());
        added_by_content.insert(a.content.as_str(), a);
        added_by_id.insert(id, a);
    }

    let mut tokens = Vec::with_capacity(vocab_size);
    let mut types = Vec::with_capacity(vocab_size);
    for (i, text) in by_id.iter().enumerate() {
        let Some(text) = *text else {
            tokens.push(Value::String(format!("[PAD{i}]")));
            types.push(Value::I32(token_type::UNUSED));
            continue;
        };
        if !added_by_content.contains_key(text) {
            tokens.push(Value::String(text.to_string()));
            types.push(Value::I32(token_type::NORMAL));
            continue;
        }
        let a = added_by_id.get(&i).ok_or_else(|| {
            bad(format!(
                "{text:?} is an added token with another id than its vocabulary entry {i}"
            ))
        })?;
        // The converter's own round trip for tokens matched before normalization.
        let text = if a.normalized {
            text.to_string()
        } else {
            tok.decode(&tok.encode(text, false)?, false)?
        };
        if a.special || looks_special(&text) {
            tokens.push(Value::String(text));
            types.push(Value::I32(token_type::CONTROL));
        } else {
            tokens.push(Value::String(text.replace('▁', " ")));
            types.push(Value::I32(token_type::USER_DEFINED));
        }
    }

    let merges = merges(model).map_err(bad)?;
    let name = pre_name(&tok, &config, pre)?;

    let mut out: Vec<(String, Value)> = vec![
        ("tokenizer.ggml.model".into(), Value::String("gpt2".into())),
        ("tokenizer.ggml.pre".into(), Value::String(name.into())),
        ("tokenizer.ggml.tokens".into(), Value::Array(tokens)),
        ("tokenizer.ggml.token_type".into(), Value::Array(types)),
    ];
    if !merges.is_empty() {
        out.push((
            "tokenizer.ggml.merges".into(),
            Value::Array(merges.into_iter().map(Value::String).collect()),
        ));
    }
    let specials = SpecialVocab::read(&tj, &config, &added)
        .map_err(|m| Error::Tokenizer(format!("tokenizer.json / tokenizer_config.json: {m}")))?;
    for (typ, id) in &specials.ids {
        let key = SPECIAL_IDS
            .iter()
            .find(|(t, _)| t == typ)
            .and_then(|(_, k)| *k);
        if let Some(key) = key {
            out.push((key.into(), Value::U32(*id)));
        }
    }
    for (typ, on) in &specials.add {
        if matches!(*typ, "bos" | "eos" | "sep") {
            out.push((format!("tokenizer.ggml.add_{typ}_token"), Value::Bool(*on)));
        }
    }
    out.extend(chat_templates(&config)?);
    Ok(out)
}

/// Whether the converter types an added token CONTROL although it is not special
/// (`does_token_look_special` in llama.cpp's `conversion/base.py`).
fn looks_special(t: &str) -> bool {
    matches!(t, "<pad>" | "<mask>" | "<2mass>" | "[@BOS@]")
        || (t.starts_with("<|") && t.ends_with("|>"))
        || (t.starts_with("<｜") && t.ends_with("｜>"))
        || (t.starts_with("<unused") && t.ends_with('>'))
}

fn token_id(id: &Json, text: &str, vocab_size: usize) -> Result<usize, String> {
    id.as_u64()
        .and_then(|i| usize::try_from(i).ok())
        .filter(|&i| i < vocab_size)
        .ok_or_else(|| {
            format!("token {text:?} has id {id}, not below the model's vocab_size {vocab_size}")
        })
}

struct AddedToken {
    id: u64,
    content: String,
    special: bool,
    normalized: bool,
}

fn added_tokens(tj: &Json) -> Result<Vec<AddedToken>, String> {
    let Some(list) = tj.get("added_tokens") else {
        return Ok(Vec::new());
    };
    let list = list.as_array().ok_or("`added_tokens` is not an array")?;
    list.iter()
        .map(|t| {
            let field = |k: &str| {
                t.get(k)
                    .ok_or_else(|| format!("added token {t} has no `{k}`"))
            };
            let flag = |k: &str| -> Result<bool, String> {
                match t.get(k) {
                    None => Ok(false),
                    Some(v) => v
                        .as_bool()
                        .ok_or_else(|| format!("added token {t}: `{k}` is not a boolean")),
                }
            };
            // GGUF has no place for these: a token that strips spaces would tokenize otherwise.
            for k in ["lstrip", "rstrip", "single_word"] {
                if flag(k)? {
                    return Err(format!(
                        "added token {t} has `{k}`, which GGUF cannot express"
                    ));
                }
            }
            Ok(AddedToken {
                id: field("id")?
                    .as_u64()
                    .ok_or_else(|| format!("added token {t}: `id` is not a token id"))?,
                content: field("content")?
                    .as_str()
                    .ok_or_else(|| format!("added token {t}: `content` is not a string"))?
                    .to_string(),
                special: flag("special")?,
                normalized: flag("normalized")?,
            })
        })
        .collect()
}

/// The merges as the converter writes them: `"a b"`, a space inside a part written as `Ġ`.
fn merges(model: &Map<String, Json>) -> Result<Vec<String>, String> {
    let Some(list) = model.get("merges") else {
        return Ok(Vec::new());
    };
    let list = list.as_array().ok_or("`model.merges` is not an array")?;
    list.iter()
        .enumerate()
        .map(|(i, m)| match m {
            Json::String(s) => Ok(s.clone()),
            Json::Array(pair) => match pair.as_slice() {
                [Json::String(a), Json::String(b)] => Ok(format!(
                    "{} {}",
                    a.replace(' ', "\u{120}"),
                    b.replace(' ', "\u{120}")
                )),
                _ => Err(format!("merge {i} is not a pair of strings")),
            },
            _ => Err(format!("merge {i} is neither a string nor a pair")),
        })
        .collect()
}

/// The pre-tokenizer `tj` runs, if llama.cpp implements it: its normalizer, pre-tokenizer and
/// BPE options must be exactly those of one [`Pre`] (up to fields that only move offsets).
fn identify(tj: &Json, model: &Map<String, Json>) -> Result<Pre, String> {
    if model.get("type").and_then(Json::as_str) != Some("BPE") {
        return Err(format!(
            "model type {} is not BPE",
            model.get("type").unwrap_or(&Json::Null)
        ));
    }
    let null_or = |k: &str, ok: &[Json]| {
        let v = model.get(k).unwrap_or(&Json::Null);
        if v.is_null() || ok.contains(v) {
            Ok(())
        } else {
            Err(format!("BPE option `{k}` = {v} is not supported by GGUF"))
        }
    };
    null_or("dropout", &[])?;
    null_or("unk_token", &[])?;
    null_or("continuing_subword_prefix", &[json!("")])?;
    null_or("end_of_word_suffix", &[json!("")])?;
    null_or("byte_fallback", &[json!(false)])?;
    let decoder = tj.get("decoder").unwrap_or(&Json::Null);
    if decoder.get("type").and_then(Json::as_str) != Some("ByteLevel") {
        return Err(format!("decoder {decoder} is not ByteLevel"));
    }
    let ignore_merges = model
        .get("ignore_merges")
        .and_then(Json::as_bool)
        .unwrap_or(false);
    let normalizer = canonical(tj.get("normalizer").unwrap_or(&Json::Null));
    let pre_tokenizer = canonical(tj.get("pre_tokenizer").unwrap_or(&Json::Null));
    Pre::ALL
        .into_iter()
        .find(|p| {
            canonical(&p.normalizer()) == normalizer
                && canonical(&p.pre_tokenizer()) == pre_tokenizer
                && p.ignore_merges() == ignore_merges
        })
        .ok_or_else(|| {
            format!(
                "the normalizer {normalizer}, pre-tokenizer {pre_tokenizer} and ignore_merges \
                 {ignore_merges} are not those of a pre-tokenizer llama.cpp implements and we \
                 know (supported: {})",
                PRE_NAMES.join(", ")
            )
        })
}

/// `v` without what does not change token ids: `trim_offsets`, empty normalizer sequences.
fn canonical(v: &Json) -> Json {
    match v {
        Json::Object(o) => {
            if o.get("type").and_then(Json::as_str) == Some("Sequence")
                && o.get("normalizers")
                    .and_then(Json::as_array)
                    .is_some_and(|l| l.is_empty())
            {
                return Json::Null;
            }
            Json::Object(
                o.iter()
                    .filter(|(k, _)| k.as_str() != "trim_offsets")
                    .map(|(k, v)| (k.clone(), canonical(v)))
                    .collect(),
            )
        }
        Json::Array(a) => Json::Array(a.iter().map(canonical).collect()),
        v => v.clone(),
    }
}

/// The converter's `pre` name for `tok`: its registered fingerprint if it has one of `pre`'s
/// names, else `pre`'s canonical name.
fn pre_name(tok: &Tokenizer, config: &Map<String, Json>, pre: Pre) -> Result<&'static str> {
    let ids = fingerprint_ids(tok, config)?;
    let listed = format!(
        "[{}]",
        ids.iter()
            .map(u32::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    );
    let hash = sha256_hex(listed.as_bytes());
    match FINGERPRINTS.iter().find(|(h, _)| *h == hash) {
        None => Ok(pre.canonical_name()),
        Some((_, name)) if Pre::from_name(name) == Some(pre) => Ok(name),
        Some((_, name)) => Err(Error::Tokenizer(format!(
            "tokenizer.json: the converter's fingerprint names the pre-tokenizer `{name}`, but its \
             pre-tokenizer is `{}`'s",
            pre.canonical_name()
        ))),
    }
}

/// The ids transformers 4's `tokenizer.encode(CHKTXT)` gives: a `LlamaTokenizerFast` rebuilt
/// its post-processor from `add_bos_token` (default true) and `add_eos_token`; other classes
/// run tokenizer.json's.
fn fingerprint_ids(tok: &Tokenizer, config: &Map<String, Json>) -> Result<Vec<u32>> {
    let class = config.get("tokenizer_class").and_then(Json::as_str);
    if !matches!(class, Some("LlamaTokenizerFast" | "LlamaTokenizer")) {
        return tok.encode(CHKTXT, true);
    }
    let flag = |k: &str, default: bool| config.get(k).and_then(Json::as_bool).unwrap_or(default);
    let id_of = |k: &str| -> Result<u32> {
        let text = config_token(config, k).ok_or_else(|| {
            Error::Tokenizer(format!(
                "tokenizer_config.json: `add_{k}` is set but `{k}` is not"
            ))
        })?;
        tok.token_to_id(text).ok_or_else(|| {
            Error::Tokenizer(format!(
                "tokenizer_config.json: `{k}` {text:?} is not in the vocabulary"
            ))
        })
    };
    let mut ids = Vec::new();
    if flag("add_bos_token", true) {
        ids.push(id_of("bos_token")?);
    }
    ids.extend(tok.encode(CHKTXT, false)?);
    if flag("add_eos_token", false) {
        ids.push(id_of("eos_token")?);
    }
    Ok(ids)
}

/// A special token of tokenizer_config.json: a string or an AddedToken object.
fn config_token<'a>(config: &'a Map<String, Json>, key: &str) -> Option<&'a str> {
    match config.get(key)? {
        Json::String(s) => Some(s),
        Json::Object(o) => o.get("content").and_then(Json::as_str),
        _ => None,
    }
}

/// gguf-py's `SpecialVocab` for a tokenizer.json with its tokenizer_config.json.
struct SpecialVocab {
    /// Special token ids by kind, in the converter's order.
    ids: Vec<(&'static str, u32)>,
    /// `add_{kind}_token` flags, in the converter's order.
    add: Vec<(&'static str, bool)>,
}

impl SpecialVocab {
    fn read(tj: &Json, config: &Map<String, Json>, added: &[AddedToken]) -> Result<Self, String> {
        let mut add: Vec<(&'static str, bool)> = Vec::new();
        let set_default = |add: &mut Vec<(&'static str, bool)>, k: &'static str, v: bool| {
            if !add.iter().any(|(t, _)| *t == k) {
                add.push((k, v));
            }
        };
        let set = |add: &mut Vec<(&'static str, bool)>, k: &'static str, v: bool| match add
            .iter_mut()
            .find(|(t, _)| *t == k)
        {
            Some(slot) => slot.1 = v,
            None => add.push((k, v)),
        };
        let has_config = !config.is_empty();
        let bos = config_token(config, "bos_token").or(config_token(config, "cls_token"));
        let eos = config_token(config, "eos_token").or(config_token(config, "sep_token"));
        let cls = config_token(config, "cls_token");
        let sep = config_token(config, "sep_token");
        let special_id = |item: &Json| -> Option<String> {
            item.get("SpecialToken")?
                .get("id")?
                .as_str()
                .map(str::to_string)
        };
        if let Some(pp) = tj.get("post_processor").filter(|p| !p.is_null()) {
            let list = match pp.get("processors").and_then(Json::as_array) {
                Some(l) => l.clone(),
                None => vec![pp.clone()],
            };
            for p in &list {
                match p.get("type").and_then(Json::as_str) {
                    Some("ByteLevel") => {
                        set_default(&mut add, "bos", false);
                        set_default(&mut add, "eos", false);
                    }
                    Some("RobertaProcessing") => {
                        return Err("a RobertaProcessing post-processor is not supported".into())
                    }
                    Some("TemplateProcessing") => {
                        let single = p.get("single").and_then(Json::as_array);
                        let single = single.map(Vec::as_slice).unwrap_or(&[]);
                        if single.len() > 1 {
                            if let Some(first) = special_id(&single[0]) {
                                if !has_config || ![bos, cls].contains(&Some(first.as_str())) {
                                    return Err(format!(
                                        "the post-processor starts with {first:?}, which is not \
                                         tokenizer_config.json's bos_token"
                                    ));
                                }
                                set(&mut add, "bos", true);
                            }
                            if let Some(last) = special_id(&single[single.len() - 1]) {
                                if !has_config || eos != Some(last.as_str()) {
                                    return Err(format!(
                                        "the post-processor ends with {last:?}, which is not \
                                         tokenizer_config.json's eos_token"
                                    ));
                                }
                                set(&mut add, "eos", true);
                            }
                        }
                        let pair = p.get("pair").and_then(Json::as_array);
                        let pair = pair.map(Vec::as_slice).unwrap_or(&[]);
                        let first = single.first().and_then(special_id);
                        let last = single
                            .last()
                            .and_then(special_id)
                            .filter(|_| single.len() > 1);
                        let first = first.filter(|_| single.len() > 1);
                        let start = usize::from(
                            first.is_some() && pair.first().and_then(special_id) == first,
                        );
                        let stop = if last.is_some() && pair.last().and_then(special_id) == last {
                            pair.len().saturating_sub(1)
                        } else {
                            pair.len()
                        };
                        let pair = pair.get(start..stop.max(start)).unwrap_or(&[]);
                        let seq = |item: Option<&Json>| {
                            item.and_then(|i| i.get("Sequence")?.get("id")?.as_str())
                                .map(str::to_string)
                        };
                        if pair.len() > 2
                            && seq(pair.first()).as_deref() == Some("A")
                            && seq(pair.last()).as_deref() == Some("B")
                        {
                            let middle = &pair[1..pair.len() - 1];
                            let mut add_sep = false;
                            if let Some(entry) = special_id(&middle[0]) {
                                let known = [sep, eos].contains(&Some(entry.as_str()));
                                if known && last.is_none() {
                                    add_sep = true;
                                }
                            }
                            if middle.len() == 2 {
                                if let Some(entry) = special_id(&middle[1]) {
                                    if [sep, eos].contains(&Some(entry.as_str())) {
                                        add_sep = true;
                                    }
                                }
                            }
                            set(&mut add, "sep", add_sep);
                        }
                    }
                    _ => {}
                }
            }
        }
        let mut ids: Vec<(&'static str, u32)> = Vec::new();
        if has_config {
            for &(typ, _) in SPECIAL_IDS {
                if let Some(flag) = config
                    .get(&format!("add_{typ}_token"))
                    .and_then(Json::as_bool)
                {
                    set_default(&mut add, typ, flag);
                }
                let content = match typ {
                    "bos" => bos,
                    "eos" => eos,
                    _ => config_token(config, &format!("{typ}_token")),
                };
                let Some(content) = content else { continue };
                // The first added token with that text (the converter looks nowhere else).
                if let Some(a) = added.iter().find(|a| a.content == content) {
                    let id = u32::try_from(a.id)
                        .map_err(|_| format!("{typ}_token id {} is too large", a.id))?;
                    ids.push((typ, id));
                }
            }
        }
        Ok(SpecialVocab { ids, add })
    }
}

/// `tokenizer.chat_template` (and named templates) from tokenizer_config.json.
fn chat_templates(config: &Map<String, Json>) -> Result<Vec<(String, Value)>> {
    let bad = |m: &str| Error::Json {
        path: "tokenizer_config.json".into(),
        message: m.into(),
    };
    match config.get("chat_template") {
        None | Some(Json::Null) => Ok(Vec::new()),
        Some(Json::String(t)) => Ok(vec![(
            "tokenizer.chat_template".into(),
            Value::String(t.clone()),
        )]),
        Some(Json::Array(list)) => {
            let mut default = None;
            let mut named = Vec::new();
            for choice in list {
                let name = choice.get("name").and_then(Json::as_str).unwrap_or("");
                let name: String = name
                    .chars()
                    .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
                    .collect();
                let Some(template) = choice.get("template").and_then(Json::as_str) else {
                    continue;
                };
                if name == "default" {
                    default = Some(template.to_string());
                } else if !name.is_empty() {
                    named.push((name, template.to_string()));
                }
            }
            // The converter collects the names in a Python set (arbitrary order); we sort them.
            named.sort();
            named.dedup_by(|a, b| a.0 == b.0);
            let mut out: Vec<(String, Value)> = named
                .iter()
                .map(|(n, t)| {
                    (
                        format!("tokenizer.chat_template.{n}"),
                        Value::String(t.clone()),
                    )
                })
                .collect();
            if !named.is_empty() {
                out.push((
                    "tokenizer.chat_templates".into(),
                    Value::Array(named.into_iter().map(|(n, _)| Value::String(n)).collect()),
                ));
            }
            if let Some(t) = default {
                out.push(("tokenizer.chat_template".into(), Value::String(t)));
            }
            Ok(out)
        }
        Some(_) => Err(bad("`chat_template` is neither a string nor a list")),
    }
}

/// SHA-256 of `data` as lowercase hex: the converter fingerprints tokenizers with it (one short
/// text per file written, so a plain implementation is enough; checked against FIPS 180-2's
/// examples and the converter's registered fingerprints).
fn sha256_hex(data: &[u8]) -> String {
    const K: [u32; 64] = [
        0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4,
        0xab1c5ed5, 0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe,
        0x9bdc06a7, 0xc19bf174, 0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f,
        0x4a7484aa, 0x5cb0a9dc, 0x76f988da, 0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7,
        0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967, 0x27b70a85, 0x2e1b2138, 0x4d2c6dfc,
        0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85, 0xa2bfe8a1, 0xa81a664b,
        0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070, 0x19a4c116,
        0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
        0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7,
        0xc67178f2,
    ];
    let mut h: [u32; 8] = [
        0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab,
        0x5be0cd19,
    ];
    let mut msg = data.to_vec();
    msg.push(0x80);
    while msg.len() % 64 != 56 {
        msg.push(0);
    }
    msg.extend_from_slice(&(data.len() as u64 * 8).to_be_bytes());
    for block in msg.chunks_exact(64) {
        let mut w = [0u32; 64];
        for (i, word) in block.chunks_exact(4).enumerate() {
            w[i] = u32::from_be_bytes(word.try_into().expect("4 bytes"));
        }
        for i in 16..64 {
            let s0 = w[i - 15].rotate_right(7) ^ w[i - 15].rotate_right(18) ^ (w[i - 15] >> 3);
            let s1 = w[i - 2].rotate_right(17) ^ w[i - 2].rotate_right(19) ^ (w[i - 2] >> 10);
            w[i] = w[i - 16]
                .wrapping_add(s0)
                .wrapping_add(w[i - 7])
                .wrapping_add(s1);
        }
        let [mut a, mut b, mut c, mut d, mut e, mut f, mut g, mut hh] = h;
        for i in 0..64 {
            let s1 = e.rotate_right(6) ^ e.rotate_right(11) ^ e.rotate_right(25);
            let ch = (e & f) ^ (!e & g);
            let t1 = hh
                .wrapping_add(s1)
                .wrapping_add(ch)
                .wrapping_add(K[i])
                .wrapping_add(w[i]);
            let s0 = a.rotate_right(2) ^ a.rotate_right(13) ^ a.rotate_right(22);
            let maj = (a & b) ^ (a & c) ^ (b & c);
            let t2 = s0.wrapping_add(maj);
            hh = g;
            g = f;
            f = e;
            e = d.wrapping_add(t1);
            d = c;
            c = b;
            b = a;
            a = t1.wrapping_add(t2);
        }
        for (x, y) in h.iter_mut().zip([a, b, c, d, e, f, g, hh]) {
            *x = x.wrapping_add(y);
        }
    }
    h.iter().map(|x| format!("{x:08x}")).collect()
}

#[cfg(test)]
#[path = "gguf_vocab_tests.rs"]
mod tests;
