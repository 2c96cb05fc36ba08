//! C ABI for deepseek-rs (header `include/deepseek.h`, generated from this crate by cbindgen).
//!
//! Translation only: opaque handles over `deepseek_core`'s `Model` and `Session` (plus its
//! `Generator` for text), value-struct params, a numbered status per call plus a thread-local message, and a panic guard at every
//! entry point. Every pointer contract is stated in the function's doc comment, written for C
//! callers (it becomes the header's comment).

// The names are the C API's: `ds_model`, `DS_OK`.
#![allow(non_camel_case_types)]
// Each doc comment states its pointer contract for C readers; a Rust `# Safety` heading would
// only repeat it in the header.
#![allow(clippy::missing_safety_doc)]

use std::ffi::c_char;

// Declaration order is the header's order: errors first, then models, text, sessions and
// generation.
mod status;

mod model;

mod text;

mod session;

mod generate;

pub use generate::*;
pub use model::*;
pub use session::*;
pub use status::{ds_last_error, ds_status, ds_status_str};
pub use text::*;

/// A token id (below the model's vocab size).
pub type ds_token = u32;

/// The library version as a static NUL-terminated string, e.g. "0.1.0".
#[no_mangle]
pub extern "C" fn ds_version() -> *const c_char {
    concat!(env!("CARGO_PKG_VERSION"), "\0").as_ptr().cast()
}

/// The header promises C callers that a model is shared by threads and a session moves between
/// them (guarded by its lock): that holds only while both types are `Send + Sync`.
const _: () = {
    const fn thread_safe<T: Send + Sync>() {}
    thread_safe::<ds_model>();
    thread_safe::<ds_session>();
};
