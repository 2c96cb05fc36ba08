//! Python bindings for deepseek-rs (module `deepseek_rs`): translation only, no logic.
//!
//! Every entry point converts its arguments, calls the public `deepseek_core` API with the GIL
//! released for anything long, and converts the result or error back. The module is built as
//! `deepseek_rs._deepseek_rs` and re-exported by `python/deepseek_rs/__init__.py`, which ships
//! with the stubs (`__init__.pyi`) and `py.typed`.

mod chat;
mod config;
mod convert;
mod errors;
mod generate;
mod model;
mod session;
mod tokenizer;

use pyo3::prelude::*;

/// Exact DeepSeek V2/V3/R1 inference on CPUs.
///
/// Load a Hugging Face checkpoint folder with `Model(path)`; generate text with
/// `model.generate(prompt)` or `model.chat(messages)` (OpenAI-shaped), hold a conversation with
/// `ChatSession(model)`, get logits with `model.logits(ids)` or evaluate incrementally with
/// `model.new_session().eval(ids)`. `Tokenizer.from_pretrained(dir)` works without a model.
#[pymodule]
#[pyo3(name = "_deepseek_rs")]
fn deepseek_rs(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    m.add_class::<model::PyModel>()?;
    m.add_class::<session::PySession>()?;
    m.add_class::<tokenizer::PyTokenizer>()?;
    m.add_class::<chat::PyChatSession>()?;
    m.add_class::<generate::PyGenerationResult>()?;
    m.add_class::<generate::PyUsage>()?;
    m.add_class::<generate::PyChunk>()?;
    m.add_class::<generate::PyGenerationStream>()?;
    m.add_class::<generate::PyChatCompletionStream>()?;
    errors::register(m)?;
    Ok(())
}
