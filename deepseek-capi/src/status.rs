//! Status codes, the thread-local last-error message and the guard every entry point runs in:
//! it turns `Err` into a status + message and a panic into `DS_ERR_PANIC`. Owns no model logic.

use std::cell::RefCell;
use std::ffi::{c_char, c_int, CStr, CString};
use std::panic::{catch_unwind, AssertUnwindSafe};

use deepseek_core::{Error, ErrorKind};

/// Result of every fallible call. Codes are stable: new ones are only ever added.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ds_status {
    /// Success.
    DS_OK = 0,
    /// A required pointer argument was NULL (ds_last_error names it).
    DS_ERR_NULL_POINTER = 1,
    /// An argument is out of range: empty input, bad params field, truncating past the end.
    DS_ERR_INVALID_ARGUMENT = 2,
    /// A string argument (e.g. the model path) is not valid UTF-8.
    DS_ERR_INVALID_UTF8 = 3,
    /// A caller's output buffer is too small (e.g. logits_len < vocab size).
    DS_ERR_BUFFER_TOO_SMALL = 4,
    /// A token id is not below the model's vocab size.
    DS_ERR_TOKEN_OUT_OF_RANGE = 5,
    /// The tokens would exceed the session's context length; the session is unchanged.
    DS_ERR_CONTEXT_OVERFLOW = 6,
    /// The session is being used by another thread right now; nothing was done.
    DS_ERR_SESSION_BUSY = 7,
    /// The abort callback stopped ds_chat while it rendered the chat template, before
    /// generation began; the session is unchanged. (Stopped later, a call succeeds with
    /// DS_FINISH_CANCELLED.)
    DS_ERR_CANCELLED = 8,
    /// A file or folder could not be read (missing model folder, permissions).
    DS_ERR_IO = 20,
    /// config.json or a shard index is not valid JSON of the expected shape.
    DS_ERR_JSON = 21,
    /// config.json names a model_type this library does not implement.
    DS_ERR_UNSUPPORTED_ARCHITECTURE = 22,
    /// A config.json field is missing, out of range or unsupported.
    DS_ERR_CONFIG = 23,
    /// A safetensors file is truncated or its header is corrupt.
    DS_ERR_SAFETENSORS = 24,
    /// A tensor the model needs is absent from the checkpoint.
    DS_ERR_MISSING_TENSOR = 25,
    /// A tensor's shape does not match the config.
    DS_ERR_SHAPE = 26,
    /// A tensor is stored in a dtype the library cannot use for it.
    DS_ERR_DTYPE = 27,
    /// A GGUF file is truncated or corrupt, or its metadata describes no supported model.
    DS_ERR_GGUF = 28,
    /// A saved session state (ds_session_save) is not one, is truncated or corrupt (checksum),
    /// of another format version, or was computed by another model.
    DS_ERR_SESSION_STATE = 29,
    /// A text function was called on a model without a tokenizer (no tokenizer.json in its
    /// folder): load one with ds_model_load_tokenizer.
    DS_ERR_NO_TOKENIZER = 40,
    /// tokenizer.json or tokenizer_config.json is malformed, or the tokenizer failed on an input.
    DS_ERR_TOKENIZER = 41,
    /// The chat template failed to compile or to render the messages, or needed more than its
    /// budget (fuel and output, proportional to the conversation).
    DS_ERR_TEMPLATE = 42,
    /// A ds_generate_params field is out of range (ds_last_error names it).
    DS_ERR_INVALID_PARAMETER = 43,
    /// The model produced NaN or infinite logits (non-finite weights, or an overflow); the
    /// session is left as it was before the call.
    DS_ERR_NON_FINITE_LOGITS = 60,
    /// The library panicked (a bug); the session it ran on must be reset before reuse.
    DS_ERR_PANIC = 100,
    /// An error this version of the C API has no dedicated code for.
    DS_ERR_INTERNAL = 101,
}

use ds_status::*;

/// What a failed call returns: its status and the message `ds_last_error` will show.
#[derive(Debug)]
pub(crate) struct Failure {
    pub status: ds_status,
    pub message: String,
}

impl Failure {
    pub fn new(status: ds_status, message: impl Into<String>) -> Self {
        Failure {
            status,
            message: message.into(),
        }
    }

    pub fn null(arg: &str) -> Self {
        Failure::new(DS_ERR_NULL_POINTER, format!("argument `{arg}` is NULL"))
    }

    pub fn invalid(message: impl Into<String>) -> Self {
        Failure::new(DS_ERR_INVALID_ARGUMENT, message)
    }
}

impl From<Error> for Failure {
    fn from(e: Error) -> Self {
        Failure::new(status_of(&e), e.to_string())
    }
}

/// The one table from core error kinds to status codes; [`status_of`] reads it and a test
/// checks it covers every kind and agrees with the README's bad-input table.
const STATUS_OF_KIND: [(ErrorKind, ds_status); 19] = [
    (ErrorKind::NotFound, DS_ERR_IO),
    (ErrorKind::Io, DS_ERR_IO),
    (ErrorKind::Json, DS_ERR_JSON),
    (
        ErrorKind::UnsupportedArchitecture,
        DS_ERR_UNSUPPORTED_ARCHITECTURE,
    ),
    (ErrorKind::Config, DS_ERR_CONFIG),
    (ErrorKind::Safetensors, DS_ERR_SAFETENSORS),
    (ErrorKind::Gguf, DS_ERR_GGUF),
    (ErrorKind::MissingTensor, DS_ERR_MISSING_TENSOR),
    (ErrorKind::Shape, DS_ERR_SHAPE),
    (ErrorKind::Dtype, DS_ERR_DTYPE),
    (ErrorKind::InvalidArgument, DS_ERR_INVALID_ARGUMENT),
    (ErrorKind::TokenOutOfRange, DS_ERR_TOKEN_OUT_OF_RANGE),
    (ErrorKind::ContextOverflow, DS_ERR_CONTEXT_OVERFLOW),
    (ErrorKind::Tokenizer, DS_ERR_TOKENIZER),
    (ErrorKind::Template, DS_ERR_TEMPLATE),
    (ErrorKind::InvalidParameter, DS_ERR_INVALID_PARAMETER),
    (ErrorKind::NonFiniteLogits, DS_ERR_NON_FINITE_LOGITS),
    (ErrorKind::Cancelled, DS_ERR_CANCELLED),
    (ErrorKind::SessionState, DS_ERR_SESSION_STATE),
];

/// The status code for a core error.
pub(crate) fn status_of(e: &Error) -> ds_status {
    let kind = e.kind();
    STATUS_OF_KIND
        .iter()
        .find(|(k, _)| *k == kind)
        .map_or(DS_ERR_INTERNAL, |&(_, status)| status)
}

thread_local! {
    static LAST_ERROR: RefCell<CString> = RefCell::new(CString::default());
}

fn set_last_error(message: String) {
    // A NUL inside the message would truncate it in C; show it instead of failing.
    let message = CString::new(message.replace('\0', "\\0")).unwrap_or_default();
    LAST_ERROR.with(|e| *e.borrow_mut() = message);
}

/// Runs an entry point's body: `Err` and panics become a status plus the thread's last error,
/// prefixed with the function name so C users see where it came from.
pub(crate) fn guard(func: &str, body: impl FnOnce() -> Result<(), Failure>) -> ds_status {
    // AssertUnwindSafe: after a panic the only shared state is a session, whose mutex is then
    // poisoned and refuses further use until ds_session_reset.
    match catch_unwind(AssertUnwindSafe(body)) {
        Ok(Ok(())) => DS_OK,
        Ok(Err(f)) => {
            set_last_error(format!("{func}: {}", f.message));
            f.status
        }
        Err(payload) => {
            let what = payload
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic payload".into());
            set_last_error(format!(
                "{func}: internal panic (a bug, please report): {what}"
            ));
            DS_ERR_PANIC
        }
    }
}

/// Like [`guard`] for getters that return a value: `fallback` on failure.
pub(crate) fn guard_value<T>(
    func: &str,
    fallback: T,
    body: impl FnOnce() -> Result<T, Failure>,
) -> T {
    let mut value = None;
    let status = guard(func, || {
        value = Some(body()?);
        Ok(())
    });
    match (status, value) {
        (DS_OK, Some(v)) => v,
        _ => fallback,
    }
}

/// `&*ptr`, or `DS_ERR_NULL_POINTER` naming `arg`.
///
/// # Safety
/// `ptr` is NULL or points to a live `T` for `'a`.
pub(crate) unsafe fn arg_ref<'a, T>(ptr: *const T, arg: &str) -> Result<&'a T, Failure> {
    // SAFETY: non-NULL pointers are valid by the caller's contract.
    unsafe { ptr.as_ref() }.ok_or_else(|| Failure::null(arg))
}

/// A NUL-terminated C string argument as UTF-8: `DS_ERR_NULL_POINTER` or
/// `DS_ERR_INVALID_UTF8` naming `arg` otherwise.
///
/// # Safety
/// `ptr` is NULL or a NUL-terminated string that lives for `'a`.
pub(crate) unsafe fn arg_str<'a>(ptr: *const c_char, arg: &str) -> Result<&'a str, Failure> {
    if ptr.is_null() {
        return Err(Failure::null(arg));
    }
    // SAFETY: a NUL-terminated string by the caller's contract.
    unsafe { CStr::from_ptr(ptr) }.to_str().map_err(|e| {
        Failure::new(
            DS_ERR_INVALID_UTF8,
            format!("`{arg}` is not valid UTF-8 ({e})"),
        )
    })
}

/// The message of the most recent failure on the calling thread ("" if none; never NULL).
/// Successful calls do not clear it, so check the status first. The string belongs to the
/// library and stays valid until the next ds_ call on this thread.
#[no_mangle]
pub extern "C" fn ds_last_error() -> *const c_char {
    LAST_ERROR.with(|e| e.borrow().as_ptr())
}

/// Every status, for lookups by number.
const ALL_STATUSES: [ds_status; 26] = [
    DS_OK,
    DS_ERR_NULL_POINTER,
    DS_ERR_INVALID_ARGUMENT,
    DS_ERR_INVALID_UTF8,
    DS_ERR_BUFFER_TOO_SMALL,
    DS_ERR_TOKEN_OUT_OF_RANGE,
    DS_ERR_CONTEXT_OVERFLOW,
    DS_ERR_SESSION_BUSY,
    DS_ERR_CANCELLED,
    DS_ERR_IO,
    DS_ERR_JSON,
    DS_ERR_UNSUPPORTED_ARCHITECTURE,
    DS_ERR_CONFIG,
    DS_ERR_SAFETENSORS,
    DS_ERR_MISSING_TENSOR,
    DS_ERR_SHAPE,
    DS_ERR_DTYPE,
    DS_ERR_GGUF,
    DS_ERR_SESSION_STATE,
    DS_ERR_NO_TOKENIZER,
    DS_ERR_TOKENIZER,
    DS_ERR_TEMPLATE,
    DS_ERR_INVALID_PARAMETER,
    DS_ERR_NON_FINITE_LOGITS,
    DS_ERR_PANIC,
    DS_ERR_INTERNAL,
];

fn describe(status: ds_status) -> &'static CStr {
    match status {
        DS_OK => c"ok",
        DS_ERR_NULL_POINTER => c"null pointer argument",
        DS_ERR_INVALID_ARGUMENT => c"invalid argument",
        DS_ERR_INVALID_UTF8 => c"invalid UTF-8 string",
        DS_ERR_BUFFER_TOO_SMALL => c"buffer too small",
        DS_ERR_TOKEN_OUT_OF_RANGE => c"token id out of range",
        DS_ERR_CONTEXT_OVERFLOW => c"context length exceeded",
        DS_ERR_SESSION_BUSY => c"session busy in another thread",
        DS_ERR_CANCELLED => c"cancelled before generation started",
        DS_ERR_IO => c"cannot read file",
        DS_ERR_JSON => c"malformed JSON",
        DS_ERR_UNSUPPORTED_ARCHITECTURE => c"unsupported architecture",
        DS_ERR_CONFIG => c"invalid config",
        DS_ERR_SAFETENSORS => c"corrupt safetensors file",
        DS_ERR_MISSING_TENSOR => c"missing tensor",
        DS_ERR_SHAPE => c"tensor shape mismatch",
        DS_ERR_DTYPE => c"unsupported tensor dtype",
        DS_ERR_GGUF => c"corrupt or unsupported GGUF file",
        DS_ERR_SESSION_STATE => c"corrupt or mismatched session state file",
        DS_ERR_NO_TOKENIZER => c"model has no tokenizer",
        DS_ERR_TOKENIZER => c"tokenizer error",
        DS_ERR_TEMPLATE => c"chat template error",
        DS_ERR_INVALID_PARAMETER => c"invalid generation parameter",
        DS_ERR_NON_FINITE_LOGITS => c"non-finite logits",
        DS_ERR_PANIC => c"internal panic",
        DS_ERR_INTERNAL => c"internal error",
    }
}

/// A static description of a status code, e.g. "token id out of range" (never NULL; unknown
/// codes give "unknown status"). Takes an int so any value is safe to pass.
#[no_mangle]
pub extern "C" fn ds_status_str(status: c_int) -> *const c_char {
    ALL_STATUSES
        .iter()
        .find(|&&s| s as c_int == status)
        .map_or(c"unknown status", |&s| describe(s))
        .as_ptr()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn last_error() -> String {
        // SAFETY: ds_last_error never returns NULL and we copy before the next call.
        unsafe { CStr::from_ptr(ds_last_error()) }
            .to_string_lossy()
            .into_owned()
    }

    #[test]
    fn every_status_has_its_own_description() {
        let all = ALL_STATUSES;
        let mut seen = std::collections::HashSet::new();
        for s in all {
            // SAFETY: ds_status_str returns a static NUL-terminated string.
            let d = unsafe { CStr::from_ptr(ds_status_str(s as c_int)) };
            assert_ne!(d.to_str().unwrap(), "unknown status", "{s:?}");
            assert!(seen.insert(d), "{s:?} shares its description");
        }
        // SAFETY: as above.
        let d = unsafe { CStr::from_ptr(ds_status_str(-3)) };
        assert_eq!(d.to_str().unwrap(), "unknown status");
    }

    #[test]
    fn guard_turns_a_panic_into_a_status_and_message() {
        let s = guard("ds_test", || panic!("boom {}", 42));
        assert_eq!(s, DS_ERR_PANIC);
        let msg = last_error();
        assert!(
            msg.starts_with("ds_test: internal panic") && msg.ends_with("boom 42"),
            "{msg}"
        );
        assert_eq!(guard_value("ds_test", 7usize, || panic!("static str")), 7);
        assert!(last_error().ends_with("static str"));
    }

    #[test]
    fn guard_reports_failures_and_keeps_the_message_after_success() {
        let s = guard("ds_test", || Err(Failure::null("tokens")));
        assert_eq!(s, DS_ERR_NULL_POINTER);
        assert_eq!(last_error(), "ds_test: argument `tokens` is NULL");
        assert_eq!(guard("ds_test", || Ok(())), DS_OK);
        assert_eq!(last_error(), "ds_test: argument `tokens` is NULL");
        let s = guard("ds_test", || Err(Failure::invalid("a\0b")));
        assert_eq!(s, DS_ERR_INVALID_ARGUMENT);
        assert_eq!(last_error(), "ds_test: a\\0b");
    }

    #[test]
    fn core_errors_map_to_their_codes() {
        let e = Error::TokenOutOfRange {
            id: 9,
            position: 1,
            vocab_size: 4,
        };
        assert_eq!(status_of(&e), DS_ERR_TOKEN_OUT_OF_RANGE);
        let f = Failure::from(Error::MissingTensor("lm_head.weight".into()));
        assert_eq!(f.status, DS_ERR_MISSING_TENSOR);
        assert!(f.message.contains("lm_head.weight"));
        let f = Failure::from(Error::InvalidParameter {
            name: "top_p".into(),
            message: "2 is not in (0, 1]".into(),
        });
        assert_eq!(f.status, DS_ERR_INVALID_PARAMETER);
        assert!(f.message.contains("`top_p`"), "{}", f.message);
    }

    #[test]
    fn the_table_maps_every_kind_once_to_a_dedicated_code() {
        for kind in ErrorKind::ALL {
            let rows = STATUS_OF_KIND.iter().filter(|(k, _)| *k == kind).count();
            assert_eq!(rows, 1, "{kind:?}");
            let status = status_of(&Error::example(kind));
            assert!(
                ![DS_OK, DS_ERR_INTERNAL, DS_ERR_PANIC].contains(&status),
                "{kind:?}"
            );
        }
    }

    /// The README's bad-input table: (Rust kind, C status name), the first code span of each
    /// column, for every row.
    fn readme_rows() -> Vec<(Option<String>, Option<String>)> {
        let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md"))
            .expect("README.md");
        let section = readme
            .split("\n## ")
            .find(|s| s.starts_with("Bad input"))
            .expect("README has a 'Bad input' section");
        let code = |cell: &str| cell.split('`').nth(1).map(str::to_string);
        section
            .lines()
            .filter(|l| l.starts_with('|') && !l.starts_with("|---"))
            .skip(1)
            .map(|l| {
                let cells: Vec<&str> = l.split('|').map(str::trim).collect();
                assert_eq!(cells.len(), 6, "a README table row has 4 columns: {l}");
                (code(cells[2]), code(cells[4]))
            })
            .collect()
    }

    #[test]
    fn every_kind_maps_as_the_readme_documents() {
        let rows = readme_rows();
        for kind in ErrorKind::ALL {
            let documented: Vec<&String> = rows
                .iter()
                .filter(|(k, _)| k.as_deref() == Some(kind.name()))
                .map(|(_, status)| status.as_ref().expect("a C status for every Rust kind"))
                .collect();
            assert!(
                !documented.is_empty(),
                "README has no row for {}",
                kind.name()
            );
            let status = status_of(&Error::example(kind));
            for name in documented {
                assert_eq!(&format!("{status:?}"), name, "{}", kind.name());
            }
        }
        // Every status the README names exists.
        for name in rows.iter().filter_map(|(_, c)| c.as_ref()) {
            assert!(
                ALL_STATUSES.iter().any(|s| &format!("{s:?}") == name),
                "{name}"
            );
        }
    }
}
