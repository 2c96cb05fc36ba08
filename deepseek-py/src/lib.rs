//! Python bindings for deepseek-rs (module `deepseek_rs`): translation only, no logic.

use pyo3::prelude::*;

/// The module `deepseek_rs`.
#[pymodule]
fn deepseek_rs(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}
