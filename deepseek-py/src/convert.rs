//! Python values <-> Rust values at the boundary: token ids in, numpy float32 arrays out, counts,
//! and conversations (OpenAI-style message dicts) both ways. numpy is used through its Python
//! API, so the extension needs no numpy headers or crate.

use deepseek_core::{Message, ToolCall};
use pyo3::exceptions::{PyKeyError, PyOverflowError, PyTypeError};
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyByteArray, PyBytes, PyDict, PyList, PyMapping, PyString};

use crate::errors::value_error;

/// The `numpy` module, imported once.
pub fn numpy(py: Python<'_>) -> PyResult<&Bound<'_, PyModule>> {
    static NUMPY: PyOnceLock<Py<PyModule>> = PyOnceLock::new();
    let module = NUMPY.get_or_try_init(py, || PyModule::import(py, "numpy").map(Bound::unbind))?;
    Ok(module.bind(py))
}

/// Token ids from a sequence of ints or a 1-D integer numpy array.
///
/// Negative ids and ids that do not fit a `u32` are a `ValueError` here; ids `>= vocab_size`
/// are left to the core, which names the id and its position.
pub fn token_ids(obj: &Bound<'_, PyAny>, vocab_size: usize) -> PyResult<Vec<u32>> {
    let py = obj.py();
    if obj.is_instance_of::<PyString>() || obj.is_instance_of::<PyBytes>() {
        return Err(PyTypeError::new_err(
            "ids must be a sequence of ints or a 1-D integer numpy array, not a string",
        ));
    }
    let np = numpy(py)?;
    let list;
    let seq = if obj.is_instance(&np.getattr(intern!(py, "ndarray"))?)? {
        let ndim: usize = obj.getattr(intern!(py, "ndim"))?.extract()?;
        if ndim != 1 {
            let shape = obj.getattr(intern!(py, "shape"))?;
            return Err(value_error(
                py,
                format!("ids must be a 1-D array, got shape {shape}"),
            ));
        }
        let dtype = obj.getattr(intern!(py, "dtype"))?;
        let kind: String = dtype.getattr(intern!(py, "kind"))?.extract()?;
        if kind != "i" && kind != "u" {
            return Err(PyTypeError::new_err(format!(
                "ids must be an integer array, got dtype {dtype}"
            )));
        }
        list = obj.call_method0(intern!(py, "tolist"))?;
        &list
    } else {
        obj
    };
    let items = seq.try_iter().map_err(|_| {
        PyTypeError::new_err(format!(
            "ids must be a sequence of ints or a 1-D integer numpy array, not {}",
            type_name(obj)
        ))
    })?;
    let mut ids = Vec::with_capacity(seq.len().unwrap_or(0));
    for (position, item) in items.enumerate() {
        let item = item?;
        let id: i64 = item.extract().map_err(|e: PyErr| {
            if e.is_instance_of::<PyOverflowError>(py) {
                value_error(
                    py,
                    format!(
                        "token id {item} at position {position} is out of range \
                         (vocab_size {vocab_size})"
                    ),
                )
            } else {
                PyTypeError::new_err(format!(
                    "ids must be ints: item {position} is {}",
                    type_name(&item)
                ))
            }
        })?;
        let id = u32::try_from(id).map_err(|_| {
            let why = if id < 0 {
                "is negative".to_string()
            } else {
                format!("is out of range (vocab_size {vocab_size})")
            };
            value_error(py, format!("token id {id} at position {position} {why}"))
        })?;
        ids.push(id);
    }
    Ok(ids)
}

fn type_name(obj: &Bound<'_, PyAny>) -> String {
    obj.get_type()
        .name()
        .map(|n| n.to_string())
        .unwrap_or_else(|_| "?".into())
}

/// A new, writable numpy float32 array of `shape` holding a copy of `data`.
pub fn f32_array<'py>(
    py: Python<'py>,
    data: &[f32],
    shape: &[usize],
) -> PyResult<Bound<'py, PyAny>> {
    debug_assert_eq!(shape.iter().product::<usize>(), data.len());
    // One copy into a bytearray, which numpy then wraps without copying (and keeps alive).
    let bytes = PyByteArray::new_with(py, std::mem::size_of_val(data), |buf| {
        for (dst, x) in buf.chunks_exact_mut(4).zip(data) {
            dst.copy_from_slice(&x.to_ne_bytes());
        }
        Ok(())
    })?;
    let array =
        numpy(py)?.call_method1(intern!(py, "frombuffer"), (bytes, intern!(py, "float32")))?;
    if shape.len() == 1 {
        return Ok(array);
    }
    array.call_method1(intern!(py, "reshape"), (shape.to_vec(),))
}

/// An int argument of any size: its value, or (for an int that does not fit an `i64`) its
/// text, so the caller raises a `DeepseekValueError` naming the argument instead of pyo3's
/// bare `OverflowError`. Anything but an int is still a `TypeError`.
pub struct Int(Result<i64, String>);

impl<'a, 'py> FromPyObject<'a, 'py> for Int {
    type Error = PyErr;

    fn extract(obj: Borrowed<'a, 'py, PyAny>) -> PyResult<Self> {
        match obj.extract::<i64>() {
            Ok(n) => Ok(Int(Ok(n))),
            Err(e) if e.is_instance_of::<PyOverflowError>(obj.py()) => {
                Ok(Int(Err(obj.to_string())))
            }
            Err(e) => Err(e),
        }
    }
}

impl Int {
    /// The value, or a `DeepseekValueError` saying `name` is out of range.
    pub fn get(self, py: Python<'_>, name: &str) -> PyResult<i64> {
        self.0.map_err(|big| {
            value_error(
                py,
                format!(
                    "{name} {big} is out of range ({} to {})",
                    i64::MIN,
                    i64::MAX
                ),
            )
        })
    }

    /// The value if it fits an `i64`.
    pub fn ok(self) -> Option<i64> {
        self.0.ok()
    }
}

/// An optional count argument (`threads`, `context_length`, `max_tokens`): `None` or an int
/// `>= 1`.
pub fn count(py: Python<'_>, name: &str, value: Option<Int>) -> PyResult<Option<usize>> {
    let Some(value) = value else {
        return Ok(None);
    };
    match value.0 {
        Ok(n) if n >= 1 => usize::try_from(n)
            .map(Some)
            .map_err(|_| value_error(py, format!("{name} {n} is too large"))),
        Ok(n) => Err(value_error(py, format!("{name} must be >= 1, found {n}"))),
        Err(big) if big.starts_with('-') => {
            Err(value_error(py, format!("{name} must be >= 1, found {big}")))
        }
        Err(big) => Err(value_error(
            py,
            format!("{name} {big} is too large (at most {})", i64::MAX),
        )),
    }
}

const MESSAGE_SHAPE: &str = r#"[{"role": "user", "content": "..."}, ...]"#;

/// A conversation from a sequence of `{"role": str, "content": str}` mappings (an assistant
/// turn may add `"reasoning_content": str` and OpenAI's `"tool_calls"`, with `content` None; a
/// `tool` turn may name `"tool_call_id"` and `"name"`). Anything else is a `ValueError` naming
/// the item.
pub fn messages(obj: &Bound<'_, PyAny>) -> PyResult<Vec<Message>> {
    let py = obj.py();
    let not_a_list = || {
        value_error(
            py,
            format!(
                "messages must be a list of dicts like {MESSAGE_SHAPE}, not {}",
                type_name(obj)
            ),
        )
    };
    if obj.is_instance_of::<PyString>()
        || obj.is_instance_of::<PyBytes>()
        || obj.is_instance_of::<PyMapping>()
    {
        return Err(not_a_list());
    }
    let items = obj.try_iter().map_err(|_| not_a_list())?;
    let mut out = Vec::new();
    for (i, item) in items.enumerate() {
        let item = item?;
        let m = item.cast::<PyMapping>().map_err(|_| {
            value_error(
                py,
                format!(
                    "messages[{i}] must be a dict with \"role\" and \"content\", not {}",
                    type_name(&item)
                ),
            )
        })?;
        let field = |key: &str| -> PyResult<Option<String>> {
            let value = match m.get_item(key) {
                Ok(v) => v,
                Err(e) if e.is_instance_of::<PyKeyError>(py) => return Ok(None),
                Err(e) => return Err(e),
            };
            if value.is_none() {
                return Ok(None);
            }
            value.extract::<String>().map(Some).map_err(|_| {
                value_error(
                    py,
                    format!(
                        "messages[{i}][{key:?}] must be a string, not {}",
                        type_name(&value)
                    ),
                )
            })
        };
        let required = |key: &str| {
            field(key)?
                .ok_or_else(|| value_error(py, format!("messages[{i}] has no string {key:?}")))
        };
        let role = required("role")?;
        if role.is_empty() {
            return Err(value_error(py, format!("messages[{i}][\"role\"] is empty")));
        }
        let tool_calls = match m.get_item("tool_calls") {
            Ok(v) if !v.is_none() => tool_calls(&v, i)?,
            Ok(_) => Vec::new(),
            Err(e) if e.is_instance_of::<PyKeyError>(py) => Vec::new(),
            Err(e) => return Err(e),
        };
        // OpenAI sends `"content": None` for a turn that only calls tools.
        let content = if tool_calls.is_empty() {
            required("content")?
        } else {
            field("content")?.unwrap_or_default()
        };
        out.push(Message {
            role,
            content,
            reasoning_content: field("reasoning_content")?,
            tool_calls,
            tool_call_id: field("tool_call_id")?,
            name: field("name")?,
        });
    }
    Ok(out)
}

/// `messages[i]["tool_calls"]`: OpenAI's `[{"id", "type": "function", "function": {"name",
/// "arguments"}}]`, arguments as JSON text or as a dict (written as JSON).
fn tool_calls(obj: &Bound<'_, PyAny>, i: usize) -> PyResult<Vec<ToolCall>> {
    let py = obj.py();
    let shape = r#"[{"id": ..., "type": "function", "function": {"name": ..., "arguments": ...}}]"#;
    let bad = |j: usize, what: &str| {
        value_error(
            py,
            format!("messages[{i}][\"tool_calls\"][{j}]: {what} (expected {shape})"),
        )
    };
    let value = crate::generate::to_json(obj, &format!("messages[{i}][\"tool_calls\"]"))?;
    let Some(list) = value.as_array() else {
        return Err(value_error(
            py,
            format!("messages[{i}][\"tool_calls\"] must be a list like {shape}"),
        ));
    };
    let mut out = Vec::with_capacity(list.len());
    for (j, call) in list.iter().enumerate() {
        if call.get("type").is_some_and(|t| t != "function") {
            return Err(bad(j, "type must be \"function\""));
        }
        let f = call
            .get("function")
            .ok_or_else(|| bad(j, "no \"function\""))?;
        let name = f
            .get("name")
            .and_then(|n| n.as_str())
            .filter(|n| !n.is_empty())
            .ok_or_else(|| bad(j, "function has no string \"name\""))?;
        let arguments = match f.get("arguments") {
            Some(serde_json::Value::String(text)) => text.clone(),
            Some(v @ serde_json::Value::Object(_)) => v.to_string(),
            None => "{}".to_string(),
            Some(_) => return Err(bad(j, "arguments must be JSON text or a dict")),
        };
        let id = match call.get("id") {
            Some(serde_json::Value::String(id)) => id.clone(),
            None | Some(serde_json::Value::Null) => String::new(),
            Some(_) => return Err(bad(j, "id must be a string")),
        };
        out.push(ToolCall::new(id, name, arguments));
    }
    Ok(out)
}

/// One message as a new dict (`reasoning_content`, `tool_calls`, `tool_call_id` and `name`
/// only when set).
pub fn message_dict<'py>(py: Python<'py>, m: &Message) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    d.set_item(intern!(py, "role"), &m.role)?;
    d.set_item(intern!(py, "content"), &m.content)?;
    if let Some(r) = &m.reasoning_content {
        d.set_item(intern!(py, "reasoning_content"), r)?;
    }
    if !m.tool_calls.is_empty() {
        let calls = PyList::empty(py);
        for c in &m.tool_calls {
            calls.append(crate::generate::tool_call_dict(py, c)?)?;
        }
        d.set_item(intern!(py, "tool_calls"), calls)?;
    }
    if let Some(id) = &m.tool_call_id {
        d.set_item(intern!(py, "tool_call_id"), id)?;
    }
    if let Some(name) = &m.name {
        d.set_item(intern!(py, "name"), name)?;
    }
    Ok(d)
}

/// A conversation as a new list of dicts.
pub fn message_list<'py>(py: Python<'py>, messages: &[Message]) -> PyResult<Bound<'py, PyList>> {
    let list = PyList::empty(py);
    for m in messages {
        list.append(message_dict(py, m)?)?;
    }
    Ok(list)
}
