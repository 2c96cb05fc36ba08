//! `deepseek_rs.Tokenizer`: a checkpoint's tokenizer and chat template, usable without a model
//! (like transformers' `AutoTokenizer`).

use std::path::PathBuf;

use deepseek_core::{ChatTemplate, Tokenizer};
use pyo3::prelude::*;

use crate::convert::{self, token_ids, Int};
use crate::errors::to_py;
use crate::generate::Interrupt;

/// A Hugging Face tokenizer (`tokenizer.json`) with its special tokens and chat template
/// (`tokenizer_config.json`), as transformers' `AutoTokenizer` loads it.
///
/// Load one with `Tokenizer.from_pretrained(dir)`, or take a model's with `Model.tokenizer`.
/// Encoding matches transformers id for id; templates render as `apply_chat_template` does.
#[pyclass(module = "deepseek_rs", name = "Tokenizer", frozen)]
pub struct PyTokenizer {
    pub(crate) tokenizer: Tokenizer,
    pub(crate) template: ChatTemplate,
    path: Option<PathBuf>,
}

impl PyTokenizer {
    /// Wraps a loaded tokenizer and its template (`path`: where it came from, if known).
    pub(crate) fn new(tokenizer: Tokenizer, template: ChatTemplate, path: Option<PathBuf>) -> Self {
        PyTokenizer {
            tokenizer,
            template,
            path,
        }
    }
}

#[pymethods]
impl PyTokenizer {
    /// Loads `tokenizer.json` (required) and `tokenizer_config.json` (optional: special tokens,
    /// `add_bos_token`, `chat_template`) from the folder `path`; without a template in the
    /// folder, DeepSeek-R1's is used.
    #[staticmethod]
    fn from_pretrained(py: Python<'_>, path: PathBuf) -> PyResult<Self> {
        let (tokenizer, template) = py
            .detach(|| {
                let tokenizer = Tokenizer::from_dir(&path)?;
                let template = ChatTemplate::for_tokenizer(&tokenizer)?;
                Ok((tokenizer, template))
            })
            .map_err(|e| to_py(py, e))?;
        Ok(PyTokenizer::new(tokenizer, template, Some(path)))
    }

    /// Token ids of `text`. Special-token strings in the text become their ids;
    /// `add_special=True` also adds what the tokenizer's post-processor adds (as transformers'
    /// `add_special_tokens`).
    #[pyo3(signature = (text, add_special = false))]
    fn encode(&self, py: Python<'_>, text: &str, add_special: bool) -> PyResult<Vec<u32>> {
        py.detach(|| self.tokenizer.encode(text, add_special))
            .map_err(|e| to_py(py, e))
    }

    /// The text of `ids` (a sequence of ints or a 1-D integer array); `skip_special=True` drops
    /// special tokens such as BOS and EOS.
    #[pyo3(signature = (ids, skip_special = false))]
    fn decode(&self, ids: &Bound<'_, PyAny>, skip_special: bool) -> PyResult<String> {
        let py = ids.py();
        let ids = token_ids(ids, self.tokenizer.vocab_size())?;
        py.detach(|| self.tokenizer.decode(&ids, skip_special))
            .map_err(|e| to_py(py, e))
    }

    /// Renders a conversation (`[{"role": ..., "content": ...}, ...]`) with the chat template;
    /// with `add_generation_prompt` the text ends where the assistant's reply begins. Encode it
    /// with `encode(text)` (no added special tokens: the template writes them).
    #[pyo3(signature = (messages, add_generation_prompt = true))]
    fn apply_chat_template(
        &self,
        messages: &Bound<'_, PyAny>,
        add_generation_prompt: bool,
    ) -> PyResult<String> {
        let py = messages.py();
        let messages = convert::messages(messages)?;
        Interrupt::default().render(py, &self.template, &messages, add_generation_prompt)
    }

    /// The id of the token spelled `token` (vocabulary or added token), or None.
    fn token_to_id(&self, token: &str) -> Option<u32> {
        self.tokenizer.token_to_id(token)
    }

    /// The spelling of token `id`, or None if no token has it.
    fn id_to_token(&self, id: Int) -> Option<String> {
        id.ok()
            .and_then(|id| u32::try_from(id).ok())
            .and_then(|id| self.tokenizer.id_to_token(id))
    }

    /// Number of token ids (one past the largest id, added tokens included).
    #[getter]
    fn vocab_size(&self) -> usize {
        self.tokenizer.vocab_size()
    }

    /// The BOS token's id, or None.
    #[getter]
    fn bos_token_id(&self) -> Option<u32> {
        self.tokenizer.bos_id()
    }

    /// The EOS token's id, or None.
    #[getter]
    fn eos_token_id(&self) -> Option<u32> {
        self.tokenizer.eos_ids().first().copied()
    }

    /// The chat template's Jinja source.
    #[getter]
    fn chat_template(&self) -> &str {
        self.template.source()
    }

    fn __repr__(&self) -> String {
        match &self.path {
            Some(p) => format!(
                "Tokenizer({:?}, vocab_size={})",
                p.display().to_string(),
                self.tokenizer.vocab_size()
            ),
            None => format!("Tokenizer(vocab_size={})", self.tokenizer.vocab_size()),
        }
    }
}
