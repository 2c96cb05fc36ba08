//! Text <-> token ids: a Hugging Face `tokenizer.json` (via the `tokenizers` crate) plus the
//! special tokens and chat template of `tokenizer_config.json`, and [`StreamDecoder`], which
//! turns a stream of ids into text deltas that are always whole UTF-8 characters.
//! Never sees the model.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;
use std::sync::Arc;

use serde_json::Value;

use crate::error::{Error, Result};

/// Runs a call into the `tokenizers` crate, turning a panic into [`Error::Tokenizer`].
///
/// catch_unwind, because there is no other way: a tokenizer.json regex (a `Split`
/// pre-tokenizer, a `Replace` normalizer or decoder) runs on oniguruma, and when a search hits
/// onig's retry limit (a catastrophic pattern on a long input) the `onig` crate panics inside
/// `Regex::find_iter`, deep in tokenizers' pre-tokenizer, which offers no fallible path. The
/// panic is raised before the tokenizer touches any shared state (its caches are filled after
/// pre-tokenization), so the tokenizer stays usable, hence AssertUnwindSafe. The default panic
/// hook still prints the panic message to stderr; a library must not replace the hook.
fn guarded<T>(what: &str, call: impl FnOnce() -> T) -> Result<T> {
    catch_unwind(AssertUnwindSafe(call)).map_err(|payload| {
        let why = payload
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "unknown panic".into());
        Error::Tokenizer(format!("cannot {what}: {why}"))
    })
}

/// Largest id over number of tokens a tokenizer.json may have (real ones have no gaps).
const MAX_SPARSENESS: usize = 2;

/// A tokenizer loaded from a checkpoint folder. Cloning is cheap (the tables are shared).
#[derive(Clone)]
pub struct Tokenizer {
    inner: Arc<tokenizers::Tokenizer>,
    /// Per-id bytes for byte-level decoders (`None`: decode by difference instead).
    bytes: Option<Arc<ByteTable>>,
    kinds: Arc<[Kind]>,
    vocab_size: usize,
    specials: SpecialTokens,
    chat_template: Option<Arc<str>>,
}

/// What an id below `vocab_size` is.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Kind {
    /// No token has this id.
    Missing,
    /// A vocabulary entry or a non-special added token.
    Normal,
    /// A special added token (skipped by `decode(.., skip_special = true)`).
    Special,
}

#[derive(Clone, Default)]
struct SpecialTokens {
    bos: Option<(String, u32)>,
    eos: Option<(String, u32)>,
    pad: Option<String>,
    unk: Option<String>,
    add_bos: bool,
    add_eos: bool,
}

impl std::fmt::Debug for Tokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokenizer")
            .field("vocab_size", &self.vocab_size)
            .field("bos", &self.specials.bos)
            .field("eos", &self.specials.eos)
            .field("byte_level", &self.bytes.is_some())
            .finish()
    }
}

impl Tokenizer {
    /// Loads `tokenizer.json` (required) and `tokenizer_config.json` (optional: bos/eos tokens,
    /// `add_bos_token`, `chat_template`) from `dir`; a `chat_template.jinja` file there takes
    /// precedence over the config's template, as in transformers.
    pub fn from_dir(dir: impl AsRef<Path>) -> Result<Self> {
        let dir = dir.as_ref();
        let json_path = dir.join("tokenizer.json");
        let json = std::fs::read(&json_path).map_err(|e| Error::io(&json_path, e))?;
        let config_path = dir.join("tokenizer_config.json");
        let config = match std::fs::read(&config_path) {
            Ok(bytes) => Some(bytes),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(Error::io(&config_path, e)),
        };
        let mut tok = Self::build(&json, config.as_deref(), &json_path, &config_path)?;
        let jinja = dir.join("chat_template.jinja");
        match std::fs::read_to_string(&jinja) {
            Ok(t) => tok.chat_template = Some(t.into()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(Error::io(&jinja, e)),
        }
        Ok(tok)
    }

    /// Builds a tokenizer from the contents of `tokenizer.json` and, optionally,
    /// `tokenizer_config.json`.
    pub fn from_json(tokenizer_json: &[u8], tokenizer_config: Option<&[u8]>) -> Result<Self> {
        let (json_path, config_path) = (
            Path::new("tokenizer.json"),
            Path::new("tokenizer_config.json"),
        );
        Self::build(tokenizer_json, tokenizer_config, json_path, config_path)
    }

    fn build(
        json: &[u8],
        config: Option<&[u8]>,
        json_path: &Path,
        config_path: &Path,
    ) -> Result<Self> {
        let inner = guarded("load", || tokenizers::Tokenizer::from_bytes(json))?
            .map_err(|e| Error::Tokenizer(format!("{}: {e}", json_path.display())))?;
        let vocab = inner.get_vocab(true);
        let vocab_size = vocab.values().max().map_or(0, |&m| m as usize + 1);
        // Per-id tables are sized by the largest id: a file-given number, so it must be in
        // proportion to the tokens there are before anything is allocated from it.
        if vocab_size > MAX_SPARSENESS * vocab.len() + 1024 {
            return Err(Error::Tokenizer(format!(
                "{}: token ids are too sparse: the largest is {} but there are only {} tokens",
                json_path.display(),
                vocab_size - 1,
                vocab.len()
            )));
        }
        drop(vocab);
        let added = inner.get_added_tokens_decoder();
        let kinds: Arc<[Kind]> = (0..vocab_size as u32)
            .map(|id| match added.get(&id) {
                Some(t) if t.special => Kind::Special,
                Some(_) => Kind::Normal,
                None if inner.id_to_token(id).is_some() => Kind::Normal,
                None => Kind::Missing,
            })
            .collect();
        let byte_level = matches!(
            inner.get_decoder(),
            Some(tokenizers::DecoderWrapper::ByteLevel(_))
        );
        let bytes = match byte_level {
            true => Some(Arc::new(ByteTable::new(&inner, vocab_size).ok_or_else(
                || {
                    Error::Tokenizer(format!(
                        "{}: the tokens hold more than 4 GiB of text",
                        json_path.display()
                    ))
                },
            )?)),
            false => None,
        };
        let mut tok = Tokenizer {
            inner: Arc::new(inner),
            bytes,
            kinds,
            vocab_size,
            specials: SpecialTokens::default(),
            chat_template: None,
        };
        if let Some(config) = config {
            tok.read_config(config, config_path)?;
        }
        Ok(tok)
    }

    fn read_config(&mut self, bytes: &[u8], path: &Path) -> Result<()> {
        let json_err = |message: String| Error::Json {
            path: path.into(),
            message,
        };
        let v: Value = serde_json::from_slice(bytes).map_err(|e| json_err(e.to_string()))?;
        let obj = v
            .as_object()
            .ok_or_else(|| json_err("not a JSON object".into()))?;
        // A special token is a string or an AddedToken object {"content": ...}, or null.
        let token = |key: &str| -> Result<Option<String>> {
            match obj.get(key) {
                None | Some(Value::Null) => Ok(None),
                Some(Value::String(s)) => Ok(Some(s.clone())),
                Some(Value::Object(o)) => match o.get("content") {
                    Some(Value::String(s)) => Ok(Some(s.clone())),
                    _ => Err(json_err(format!("`{key}` has no string `content`"))),
                },
                Some(_) => Err(json_err(format!("`{key}` is not a string or token object"))),
            }
        };
        let with_id = |key: &str| -> Result<Option<(String, u32)>> {
            match token(key)? {
                None => Ok(None),
                Some(t) => match self.inner.token_to_id(&t) {
                    Some(id) => Ok(Some((t, id))),
                    None => Err(Error::Tokenizer(format!(
                        "{}: `{key}` {t:?} is not in the vocabulary",
                        path.display()
                    ))),
                },
            }
        };
        let flag = |key: &str| -> Result<bool> {
            match obj.get(key) {
                None | Some(Value::Null) => Ok(false),
                Some(Value::Bool(b)) => Ok(*b),
                Some(_) => Err(json_err(format!("`{key}` is not a boolean"))),
            }
        };
        self.specials = SpecialTokens {
            bos: with_id("bos_token")?,
            eos: with_id("eos_token")?,
            pad: token("pad_token")?,
            unk: token("unk_token")?,
            add_bos: flag("add_bos_token")?,
            add_eos: flag("add_eos_token")?,
        };
        self.chat_template = match obj.get("chat_template") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => Some(s.as_str().into()),
            // Newer configs: a list of named templates; the chat one is "default".
            Some(Value::Array(list)) => list
                .iter()
                .find(|t| t.get("name").and_then(Value::as_str) == Some("default"))
                .and_then(|t| t.get("template").and_then(Value::as_str))
                .map(Into::into),
            Some(_) => return Err(json_err("`chat_template` is not a string".into())),
        };
        Ok(())
    }

    /// Token ids of `text`. With `add_special`, tokenizer.json's post-processor adds its special
    /// tokens (exactly as `tokenizers` and transformers 5 do; DeepSeek's adds none: BOS comes
    /// from the chat template or, for raw prompts, from [`add_bos_token`](Self::add_bos_token)).
    pub fn encode(&self, text: &str, add_special: bool) -> Result<Vec<u32>> {
        let enc = guarded("encode", || self.inner.encode_fast(text, add_special))?
            .map_err(|e| Error::Tokenizer(format!("cannot encode: {e}")))?;
        Ok(enc.get_ids().to_vec())
    }

    /// Text of `ids` (invalid UTF-8 becomes U+FFFD), leaving out special tokens if
    /// `skip_special`. Ids the tokenizer does not have are an error.
    pub fn decode(&self, ids: &[u32], skip_special: bool) -> Result<String> {
        self.check_ids(ids)?;
        guarded("decode", || self.inner.decode(ids, skip_special))?
            .map_err(|e| Error::Tokenizer(format!("cannot decode: {e}")))
    }

    fn check_ids(&self, ids: &[u32]) -> Result<()> {
        match ids.iter().position(|&id| self.kind(id) == Kind::Missing) {
            None => Ok(()),
            Some(position) => Err(Error::TokenOutOfRange {
                id: ids[position],
                position,
                vocab_size: self.vocab_size,
            }),
        }
    }

    /// The id of `token` (a vocabulary entry or an added token).
    pub fn token_to_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }

    /// The vocabulary entry of `id`.
    pub fn id_to_token(&self, id: u32) -> Option<String> {
        self.inner.id_to_token(id)
    }

    /// One past the largest token id (R1: 128815; a model's `vocab_size` may be padded beyond).
    pub fn vocab_size(&self) -> usize {
        self.vocab_size
    }

    /// Whether `id` is a special added token (skipped when decoding with `skip_special`).
    pub fn is_special(&self, id: u32) -> bool {
        self.kind(id) == Kind::Special
    }

    /// Whether some token has id `id` (ids can have holes below `vocab_size`).
    pub fn contains(&self, id: u32) -> bool {
        self.kind(id) != Kind::Missing
    }

    fn kind(&self, id: u32) -> Kind {
        self.kinds
            .get(id as usize)
            .copied()
            .unwrap_or(Kind::Missing)
    }

    /// The BOS token id named by tokenizer_config.json.
    pub fn bos_id(&self) -> Option<u32> {
        self.specials.bos.as_ref().map(|b| b.1)
    }

    /// The EOS token ids named by tokenizer_config.json (zero or one).
    pub fn eos_ids(&self) -> Vec<u32> {
        self.specials.eos.iter().map(|e| e.1).collect()
    }

    /// Whether raw prompts should start with BOS (`add_bos_token` in tokenizer_config.json).
    pub fn add_bos_token(&self) -> bool {
        self.specials.add_bos
    }

    /// Whether raw prompts should end with EOS (`add_eos_token` in tokenizer_config.json).
    pub fn add_eos_token(&self) -> bool {
        self.specials.add_eos
    }

    /// The text of a special token by its config name: `bos_token`, `eos_token`, `pad_token`
    /// or `unk_token` (what chat templates receive).
    pub fn special_token(&self, name: &str) -> Option<&str> {
        let s = &self.specials;
        match name {
            "bos_token" => s.bos.as_ref().map(|b| b.0.as_str()),
            "eos_token" => s.eos.as_ref().map(|e| e.0.as_str()),
            "pad_token" => s.pad.as_deref(),
            "unk_token" => s.unk.as_deref(),
            _ => None,
        }
    }

    /// The Jinja chat template shipped with the tokenizer, if any.
    pub fn chat_template(&self) -> Option<&str> {
        self.chat_template.as_deref()
    }

    /// The bytes token `id` stands for, for byte-level BPE tokenizers (DeepSeek's and the
    /// distills'); `None` for other decoders or ids without a token.
    pub fn token_bytes(&self, id: u32) -> Option<&[u8]> {
        let table = self.bytes.as_ref()?;
        self.contains(id).then(|| table.get(id))
    }

    /// The added tokens (`<think>`, `<｜User｜>`, ...) as (id, text, special).
    pub fn added_tokens(&self) -> Vec<(u32, String, bool)> {
        let mut out: Vec<_> = self
            .inner
            .get_added_tokens_decoder()
            .into_iter()
            .map(|(id, t)| (id, t.content, t.special))
            .collect();
        out.sort_unstable_by_key(|t| t.0);
        out
    }

    /// A fresh incremental decoder (special tokens are skipped).
    pub fn stream_decoder(&self) -> StreamDecoder {
        StreamDecoder {
            tokenizer: self.clone(),
            pending: Vec::new(),
            ids: Vec::new(),
            prefix: String::new(),
            prefix_index: 0,
        }
    }
}

/// The GPT-2 byte-level alphabet: byte -> the char standing for it in vocabulary entries.
fn byte_to_char() -> [char; 256] {
    let mut table = ['\0'; 256];
    let mut n = 0u32;
    for b in 0..=255u8 {
        let printable = matches!(b, b'!'..=b'~' | 0xA1..=0xAC | 0xAE..=0xFF);
        table[b as usize] = if printable {
            char::from(b)
        } else {
            n += 1;
            char::from_u32(255 + n).expect("valid char")
        };
    }
    table
}

/// Every token's bytes, concatenated, for byte-level BPE: id i is `data[offsets[i]..offsets[i+1]]`.
struct ByteTable {
    data: Vec<u8>,
    offsets: Vec<u32>,
}

impl ByteTable {
    /// The table, or `None` if the tokens' bytes do not fit `u32` offsets.
    fn new(tok: &tokenizers::Tokenizer, vocab_size: usize) -> Option<Self> {
        let mut char_to_byte = std::collections::HashMap::with_capacity(256);
        for (b, c) in byte_to_char().into_iter().enumerate() {
            char_to_byte.insert(c, b as u8);
        }
        let mut data = Vec::with_capacity(vocab_size.saturating_mul(4));
        let mut offsets = Vec::with_capacity(vocab_size + 1);
        offsets.push(0);
        for id in 0..vocab_size as u32 {
            if let Some(token) = tok.id_to_token(id) {
                // As the ByteLevel decoder does: a token whose chars are all in the alphabet
                // stands for those bytes; any other token (e.g. `<｜User｜>`) for its UTF-8.
                let start = data.len();
                for c in token.chars() {
                    match char_to_byte.get(&c) {
                        Some(&b) => data.push(b),
                        None => {
                            data.truncate(start);
                            data.extend_from_slice(token.as_bytes());
                            break;
                        }
                    }
                }
            }
            offsets.push(u32::try_from(data.len()).ok()?);
        }
        Some(ByteTable { data, offsets })
    }

    fn get(&self, id: u32) -> &[u8] {
        let i = id as usize;
        &self.data[self.offsets[i] as usize..self.offsets[i + 1] as usize]
    }
}

/// Incremental detokeniser: [`push`](Self::push) one id at a time and get back only text that
/// can no longer change, so a multi-byte character split across byte-level tokens is emitted
/// once whole. The concatenated output equals `decode(ids, skip_special = true)`.
pub struct StreamDecoder {
    tokenizer: Tokenizer,
    /// Byte-level: bytes of an incomplete UTF-8 character.
    pending: Vec<u8>,
    /// Other decoders: the ids since the last stable prefix (decode-by-difference).
    ids: Vec<u32>,
    prefix: String,
    prefix_index: usize,
}

impl std::fmt::Debug for StreamDecoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamDecoder")
            .field("pending", &self.pending)
            .finish()
    }
}

impl StreamDecoder {
    /// Adds token `id` and appends the text it completes to `out`.
    pub fn push(&mut self, id: u32, out: &mut String) -> Result<()> {
        match self.tokenizer.kind(id) {
            Kind::Missing => {
                return Err(Error::TokenOutOfRange {
                    id,
                    position: 0,
                    vocab_size: self.tokenizer.vocab_size,
                })
            }
            Kind::Special => return Ok(()),
            Kind::Normal => {}
        }
        match &self.tokenizer.bytes {
            Some(table) => {
                self.pending.extend_from_slice(table.get(id));
                drain_utf8(&mut self.pending, out, false);
                Ok(())
            }
            None => self.push_generic(id, out),
        }
    }

    /// Flushes what is left (an incomplete character becomes U+FFFD) into `out`.
    pub fn finish(&mut self, out: &mut String) {
        drain_utf8(&mut self.pending, out, true);
        if !self.ids.is_empty() {
            if let Ok(Ok(text)) = guarded("decode", || self.tokenizer.inner.decode(&self.ids, true))
            {
                if text.len() > self.prefix.len() && text.starts_with(&self.prefix) {
                    out.push_str(&text[self.prefix.len()..]);
                }
            }
            self.ids.clear();
            self.prefix.clear();
            self.prefix_index = 0;
        }
    }

    /// Decode-by-difference for decoders whose tokens are not context-free bytes (Metaspace,
    /// byte fallback): text is released once it no longer ends in U+FFFD.
    fn push_generic(&mut self, id: u32, out: &mut String) -> Result<()> {
        let inner = &self.tokenizer.inner;
        let decode = |ids: &[u32]| {
            guarded("decode", || inner.decode(ids, true))?
                .map_err(|e| Error::Tokenizer(format!("cannot decode: {e}")))
        };
        if self.prefix.is_empty() && !self.ids.is_empty() {
            let p = decode(&self.ids)?;
            if !p.ends_with('\u{FFFD}') {
                self.prefix = p;
                self.prefix_index = self.ids.len();
            }
        }
        self.ids.push(id);
        let text = decode(&self.ids)?;
        if text.len() > self.prefix.len()
            && !text.ends_with('\u{FFFD}')
            && text.starts_with(&self.prefix)
        {
            out.push_str(&text[self.prefix.len()..]);
            self.ids.drain(..self.prefix_index);
            self.prefix = decode(&self.ids)?;
            self.prefix_index = self.ids.len();
        }
        Ok(())
    }
}

/// Moves the complete UTF-8 prefix of `pending` into `out`; invalid sequences become U+FFFD
/// (as `String::from_utf8_lossy` does), an incomplete tail stays unless `flush`.
fn drain_utf8(pending: &mut Vec<u8>, out: &mut String, flush: bool) {
    let mut used = 0;
    loop {
        match std::str::from_utf8(&pending[used..]) {
            Ok(s) => {
                out.push_str(s);
                used = pending.len();
                break;
            }
            Err(e) => {
                let valid = used + e.valid_up_to();
                out.push_str(std::str::from_utf8(&pending[used..valid]).expect("validated"));
                match e.error_len() {
                    Some(n) => {
                        out.push('\u{FFFD}');
                        used = valid + n;
                    }
                    None if flush => {
                        out.push('\u{FFFD}');
                        used = pending.len();
                        break;
                    }
                    None => {
                        used = valid;
                        break;
                    }
                }
            }
        }
    }
    pending.drain(..used);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_alphabet_is_gpt2s() {
        let t = byte_to_char();
        assert_eq!(t[b' ' as usize], 'Ġ');
        assert_eq!(t[b'\n' as usize], 'Ċ');
        assert_eq!(t[b'a' as usize], 'a');
        let mut all: Vec<char> = t.to_vec();
        all.sort();
        all.dedup();
        assert_eq!(all.len(), 256);
    }

    #[test]
    fn drain_utf8_holds_incomplete_and_replaces_invalid() {
        let mut out = String::new();
        let mut p = "a€".as_bytes()[..3].to_vec(); // 'a' + 2 of the 3 bytes of '€'
        drain_utf8(&mut p, &mut out, false);
        assert_eq!((out.as_str(), p.len()), ("a", 2));
        p.push(0xAC);
        drain_utf8(&mut p, &mut out, false);
        assert_eq!((out.as_str(), p.len()), ("a€", 0));
        p.extend_from_slice(&[0xFF, b'b', 0xE2]);
        drain_utf8(&mut p, &mut out, false);
        assert_eq!(out, "a€\u{FFFD}b");
        drain_utf8(&mut p, &mut out, true);
        assert_eq!(out, "a€\u{FFFD}b\u{FFFD}");
        assert!(p.is_empty());
    }

    /// A Llama-2-style tokenizer (Metaspace + byte fallback) takes the decode-by-difference path.
    #[test]
    fn generic_decoder_streams_whole_characters() {
        let json = r#"{
          "version": "1.0", "truncation": null, "padding": null, "added_tokens": [
            {"id": 0, "content": "<s>", "single_word": false, "lstrip": false, "rstrip": false,
             "normalized": false, "special": true}],
          "normalizer": null, "pre_tokenizer": null, "post_processor": null,
          "decoder": {"type": "Sequence", "decoders": [
            {"type": "Replace", "pattern": {"String": "▁"}, "content": " "},
            {"type": "ByteFallback"}, {"type": "Fuse"},
            {"type": "Strip", "content": " ", "start": 1, "stop": 0}]},
          "model": {"type": "BPE", "dropout": null, "unk_token": null,
            "continuing_subword_prefix": null, "end_of_word_suffix": null, "fuse_unk": false,
            "byte_fallback": true, "ignore_merges": false,
            "vocab": {"<s>": 0, "▁hi": 1, "<0xE2>": 2, "<0x82>": 3, "<0xAC>": 4, "▁x": 5},
            "merges": []}
        }"#;
        let tok = Tokenizer::from_json(json.as_bytes(), None).unwrap();
        assert!(tok.bytes.is_none());
        let ids = [0, 1, 2, 3, 4, 5];
        let mut d = tok.stream_decoder();
        let mut deltas = Vec::new();
        for id in ids {
            let mut s = String::new();
            d.push(id, &mut s).unwrap();
            deltas.push(s);
        }
        let mut s = String::new();
        d.finish(&mut s);
        deltas.push(s);
        assert_eq!(deltas, ["", "hi", "", "", "€", " x", ""]);
        assert_eq!(tok.decode(&ids, true).unwrap(), "hi€ x");
    }
}
