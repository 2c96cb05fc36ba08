//! C ABI for deepseek-rs (header `include/deepseek.h`).

use std::ffi::c_char;

/// The library version as a static NUL-terminated string.
#[no_mangle]
pub extern "C" fn ds_version() -> *const c_char {
    concat!(env!("CARGO_PKG_VERSION"), "\0").as_ptr().cast()
}
