//! `tojson` as transformers defines it for chat templates: Python's
//! `json.dumps(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False)`, byte for
//! byte (Python's float repr, its separators with and without indent, no HTML escaping), so a
//! template that prints tool schemas renders what transformers renders.

use minijinja::value::{Kwargs, ValueKind};
use minijinja::{Error, ErrorKind, Value};

/// Nesting deeper than this is refused (Python's own limit is about 1000 recursions).
const MAX_DEPTH: usize = 512;

/// The `tojson` filter: `x | tojson`, `x | tojson(indent=2)`, with `ensure_ascii`,
/// `separators` and `sort_keys` as in `json.dumps`.
pub(super) fn tojson(value: &Value, kwargs: Kwargs) -> Result<String, Error> {
    let indent: Option<Value> = kwargs.get("indent")?;
    let ensure_ascii: Option<bool> = kwargs.get("ensure_ascii")?;
    let sort_keys: Option<bool> = kwargs.get("sort_keys")?;
    let separators: Option<Value> = kwargs.get("separators")?;
    kwargs.assert_all_used()?;
    let indent = match indent {
        None => None,
        Some(v) if v.is_none() => None,
        // json.dumps: an int is that many spaces (negative: none), a string is used as is.
        Some(v) => Some(match (v.as_i64(), v.as_str()) {
            (Some(n), _) => " ".repeat(n.clamp(0, 64) as usize),
            (None, Some(s)) => s.to_string(),
            _ => return Err(bad("tojson: indent must be an int or a string")),
        }),
    };
    let (item_sep, key_sep) = match separators {
        Some(v) if !v.is_none() => {
            let parts: Vec<Value> = v.try_iter()?.collect();
            match parts.as_slice() {
                [a, b] => match (a.as_str(), b.as_str()) {
                    (Some(a), Some(b)) => (a.to_string(), b.to_string()),
                    _ => return Err(bad("tojson: separators must be two strings")),
                },
                _ => return Err(bad("tojson: separators must be two strings")),
            }
        }
        // json.dumps: (', ', ': ') without indent, (',', ': ') with.
        _ if indent.is_some() => (",".to_string(), ": ".to_string()),
        _ => (", ".to_string(), ": ".to_string()),
    };
    let mut w = Writer {
        out: String::new(),
        indent,
        item_sep,
        key_sep,
        ensure_ascii: ensure_ascii.unwrap_or(false),
        sort_keys: sort_keys.unwrap_or(false),
    };
    w.value(value, 0)?;
    Ok(w.out)
}

fn bad(msg: &str) -> Error {
    Error::new(ErrorKind::InvalidOperation, msg.to_string())
}

struct Writer {
    out: String,
    indent: Option<String>,
    item_sep: String,
    key_sep: String,
    ensure_ascii: bool,
    sort_keys: bool,
}

impl Writer {
    fn newline(&mut self, depth: usize) {
        if let Some(ind) = &self.indent {
            self.out.push('\n');
            for _ in 0..depth {
                self.out.push_str(ind);
            }
        }
    }

    fn value(&mut self, v: &Value, depth: usize) -> Result<(), Error> {
        if depth > MAX_DEPTH {
            return Err(bad("tojson: value nested too deeply"));
        }
        match v.kind() {
            ValueKind::None => self.out.push_str("null"),
            ValueKind::Bool => self
                .out
                .push_str(if v.is_true() { "true" } else { "false" }),
            ValueKind::Number => self.number(v)?,
            ValueKind::String => self.string(v.as_str().unwrap_or_default()),
            // A lazy iterable is what Jinja's `map`/`select` give: a Python generator, which
            // json.dumps refuses.
            ValueKind::Iterable => {
                return Err(bad(
                    "tojson: Object of type generator is not JSON serializable",
                ))
            }
            ValueKind::Seq => {
                let items: Vec<Value> = v.try_iter()?.collect();
                if items.is_empty() {
                    self.out.push_str("[]");
                    return Ok(());
                }
                self.out.push('[');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        let sep = std::mem::take(&mut self.item_sep);
                        self.out.push_str(&sep);
                        self.item_sep = sep;
                    }
                    self.newline(depth + 1);
                    self.value(item, depth + 1)?;
                }
                self.newline(depth);
                self.out.push(']');
            }
            ValueKind::Map => {
                let mut keys: Vec<(String, Value)> = Vec::new();
                for k in v.try_iter()? {
                    keys.push((key_text(&k)?, k));
                }
                if self.sort_keys {
                    keys.sort_by(|a, b| a.0.cmp(&b.0));
                }
                if keys.is_empty() {
                    self.out.push_str("{}");
                    return Ok(());
                }
                self.out.push('{');
                for (i, (text, key)) in keys.iter().enumerate() {
                    if i > 0 {
                        let sep = std::mem::take(&mut self.item_sep);
                        self.out.push_str(&sep);
                        self.item_sep = sep;
                    }
                    self.newline(depth + 1);
                    self.string(text);
                    let sep = std::mem::take(&mut self.key_sep);
                    self.out.push_str(&sep);
                    self.key_sep = sep;
                    let item = v.get_item(key)?;
                    self.value(&item, depth + 1)?;
                }
                self.newline(depth);
                self.out.push('}');
            }
            ValueKind::Undefined => {
                return Err(bad(
                    "tojson: Object of type Undefined is not JSON serializable",
                ))
            }
            kind => {
                return Err(bad(&format!(
                    "tojson: a value of kind {kind} is not JSON serializable"
                )))
            }
        }
        Ok(())
    }

    fn number(&mut self, v: &Value) -> Result<(), Error> {
        if v.is_integer() {
            // Integers print exactly, whatever their size.
            self.out.push_str(&v.to_string());
            return Ok(());
        }
        let f = f64::try_from(v.clone())?;
        self.out.push_str(&float_repr(f));
        Ok(())
    }

    fn string(&mut self, s: &str) {
        self.out.push('"');
        for c in s.chars() {
            match c {
                '"' => self.out.push_str("\\\""),
                '\\' => self.out.push_str("\\\\"),
                '\n' => self.out.push_str("\\n"),
                '\r' => self.out.push_str("\\r"),
                '\t' => self.out.push_str("\\t"),
                '\u{8}' => self.out.push_str("\\b"),
                '\u{c}' => self.out.push_str("\\f"),
                c if (c as u32) < 0x20 => self.out.push_str(&format!("\\u{:04x}", c as u32)),
                c if self.ensure_ascii && !c.is_ascii() => {
                    let mut units = [0u16; 2];
                    for u in c.encode_utf16(&mut units) {
                        self.out.push_str(&format!("\\u{u:04x}"));
                    }
                }
                c => self.out.push(c),
            }
        }
        self.out.push('"');
    }
}

/// A map key as `json.dumps` writes it: strings as they are, numbers, booleans and None
/// converted (`1` -> "1", `True` -> "true", `None` -> "null").
fn key_text(k: &Value) -> Result<String, Error> {
    Ok(match k.kind() {
        ValueKind::String => k.as_str().unwrap_or_default().to_string(),
        ValueKind::None => "null".into(),
        ValueKind::Bool => (if k.is_true() { "true" } else { "false" }).into(),
        ValueKind::Number if k.is_integer() => k.to_string(),
        ValueKind::Number => float_repr(f64::try_from(k.clone())?),
        _ => return Err(bad("tojson: keys must be str, int, float, bool or None")),
    })
}

/// Python's `repr(float)` (what `json.dumps` writes): the shortest digits that read back
/// to the same double, positional for decimal exponents -4..16, else `d.ddde+XX`;
/// `NaN`, `Infinity`, `-Infinity` for the rest.
pub(crate) fn float_repr(f: f64) -> String {
    if f.is_nan() {
        return "NaN".into();
    }
    if f.is_infinite() {
        return if f > 0.0 { "Infinity" } else { "-Infinity" }.into();
    }
    // Rust's `{:e}` gives the same shortest round-trip digits: "-1.2345e-7".
    let sci = format!("{f:e}");
    let (mantissa, exp) = sci.split_once('e').unwrap_or((&sci, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    let (sign, mantissa) = match mantissa.strip_prefix('-') {
        Some(m) => ("-", m),
        None => ("", mantissa),
    };
    let digits: String = mantissa.chars().filter(|c| *c != '.').collect();
    let mut out = String::from(sign);
    if (-4..16).contains(&exp) {
        if exp < 0 {
            out.push_str("0.");
            for _ in 0..(-exp - 1) {
                out.push('0');
            }
            out.push_str(&digits);
        } else {
            let point = exp as usize + 1;
            if digits.len() <= point {
                out.push_str(&digits);
                for _ in digits.len()..point {
                    out.push('0');
                }
                out.push_str(".0");
            } else {
                out.push_str(&digits[..point]);
                out.push('.');
                out.push_str(&digits[point..]);
            }
        }
    } else {
        out.push_str(&digits[..1]);
        if digits.len() > 1 {
            out.push('.');
            out.push_str(&digits[1..]);
        }
        out.push('e');
        out.push(if exp < 0 { '-' } else { '+' });
        out.push_str(&format!("{:02}", exp.abs()));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::float_repr;

    #[test]
    fn floats_print_as_python_repr() {
        // Expected strings: CPython 3.11 `repr(x)` for each value.
        let cases: [(f64, &str); 16] = [
            (1.5, "1.5"),
            (2.0, "2.0"),
            (-0.0, "-0.0"),
            (0.1, "0.1"),
            (1e-4, "0.0001"),
            (1e-5, "1e-05"),
            (1.5e-7, "1.5e-07"),
            (1e15, "1000000000000000.0"),
            (1e16, "1e+16"),
            (1.5e16, "1.5e+16"),
            (123456789012345678.0, "1.2345678901234568e+17"),
            (1e100, "1e+100"),
            (0.30000000000000004, "0.30000000000000004"),
            (-273.15, "-273.15"),
            (5e-324, "5e-324"),
            (1.7976931348623157e308, "1.7976931348623157e+308"),
        ];
        for (f, want) in cases {
            assert_eq!(float_repr(f), want, "{f:e}");
        }
        assert_eq!(float_repr(f64::NAN), "NaN");
        assert_eq!(float_repr(f64::NEG_INFINITY), "-Infinity");
    }
}
