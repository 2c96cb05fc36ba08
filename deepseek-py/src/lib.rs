//! Python bindings for deepseek-rs (module `deepseek_rs`): translation only, no logic.
//!
//! Every entry point converts its arguments, calls the public `deepseek_core` API with the GIL
//! released for anything long, and converts the result or error back. The module is built as
//! `deepseek_rs._deepseek_rs` and re-exported by `python/deepseek_rs/__init__.py`, which ships
//! with the stubs (`__init__.pyi`) and `py.typed`.

mod config;
mod convert;
mod errors;
mod model;
mod session;

use pyo3::prelude::*;

/// Exact DeepSeek V2/V3/R1 inference on CPUs.
///
/// Load a Hugging Face checkpoint folder with `Model(path)`; get logits with `model.logits(ids)`
/// or evaluate incrementally with `model.new_session().eval(ids)`.
#[pymodule]
#[pyo3(name = "_deepseek_rs")]
fn deepseek_rs(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    m.add_class::<model::PyModel>()?;
    m.add_class::<session::PySession>()?;
    errors::register(m)?;
    Ok(())
}
