//! GGUF, llama.cpp's single-file checkpoint format (versions 2 and 3): a bounds-checked reader
//! over a memory map, and a writer.
//!
//! Owns the container only: the header, every metadata value type, the tensor table with ggml's
//! type sizes, alignment. Every count and size read from the file is checked against the bytes
//! that remain before anything is allocated from it, so a hostile header can neither read out of
//! bounds nor allocate without limit. Knows no model and no tensor's meaning.

use std::collections::HashMap;
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use memmap2::Mmap;

use crate::bytes::Bytes;
use crate::error::{Error, Result};
use crate::quant::GgmlType;

/// "GGUF" read as a little-endian u32.
const MAGIC: &[u8; 4] = b"GGUF";
/// Alignment of the data section and of every tensor when `general.alignment` is absent.
pub const DEFAULT_ALIGNMENT: usize = 32;
/// ggml tensors have at most this many dimensions.
const MAX_DIMS: usize = 4;
/// Arrays nested deeper than this are refused (real files nest none).
const MAX_NESTING: usize = 2;

/// One metadata value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// `GGUF_TYPE_UINT8`.
    U8(u8),
    /// `GGUF_TYPE_INT8`.
    I8(i8),
    /// `GGUF_TYPE_UINT16`.
    U16(u16),
    /// `GGUF_TYPE_INT16`.
    I16(i16),
    /// `GGUF_TYPE_UINT32`.
    U32(u32),
    /// `GGUF_TYPE_INT32`.
    I32(i32),
    /// `GGUF_TYPE_FLOAT32`.
    F32(f32),
    /// `GGUF_TYPE_BOOL`.
    Bool(bool),
    /// `GGUF_TYPE_STRING` (UTF-8).
    String(String),
    /// `GGUF_TYPE_ARRAY`: elements all of one type.
    Array(Vec<Value>),
    /// `GGUF_TYPE_UINT64`.
    U64(u64),
    /// `GGUF_TYPE_INT64`.
    I64(i64),
    /// `GGUF_TYPE_FLOAT64`.
    F64(f64),
}

/// Wire ids of the metadata value types.
mod vt {
    pub const U8: u32 = 0;
    pub const I8: u32 = 1;
    pub const U16: u32 = 2;
    pub const I16: u32 = 3;
    pub const U32: u32 = 4;
    pub const I32: u32 = 5;
    pub const F32: u32 = 6;
    pub const BOOL: u32 = 7;
    pub const STRING: u32 = 8;
    pub const ARRAY: u32 = 9;
    pub const U64: u32 = 10;
    pub const I64: u32 = 11;
    pub const F64: u32 = 12;
}

impl Value {
    /// The value as a non-negative integer, whatever integer type stored it.
    pub fn as_u64(&self) -> Option<u64> {
        match *self {
            Value::U8(v) => Some(v as u64),
            Value::U16(v) => Some(v as u64),
            Value::U32(v) => Some(v as u64),
            Value::U64(v) => Some(v),
            Value::I8(v) => u64::try_from(v).ok(),
            Value::I16(v) => u64::try_from(v).ok(),
            Value::I32(v) => u64::try_from(v).ok(),
            Value::I64(v) => u64::try_from(v).ok(),
            _ => None,
        }
    }

    /// The value as a signed integer, whatever integer type stored it.
    pub fn as_i64(&self) -> Option<i64> {
        match *self {
            Value::I8(v) => Some(v as i64),
            Value::I16(v) => Some(v as i64),
            Value::I32(v) => Some(v as i64),
            Value::I64(v) => Some(v),
            _ => self.as_u64().and_then(|v| i64::try_from(v).ok()),
        }
    }

    /// The value as a float (float or integer types).
    pub fn as_f64(&self) -> Option<f64> {
        match *self {
            Value::F32(v) => Some(v as f64),
            Value::F64(v) => Some(v),
            _ => self.as_i64().map(|v| v as f64),
        }
    }

    /// The string, if this is one.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::String(s) => Some(s),
            _ => None,
        }
    }

    /// The boolean, if this is one.
    pub fn as_bool(&self) -> Option<bool> {
        match *self {
            Value::Bool(b) => Some(b),
            _ => None,
        }
    }

    /// The elements, if this is an array.
    pub fn as_array(&self) -> Option<&[Value]> {
        match self {
            Value::Array(a) => Some(a),
            _ => None,
        }
    }

    /// The wire type id.
    fn type_id(&self) -> u32 {
        match self {
            Value::U8(_) => vt::U8,
            Value::I8(_) => vt::I8,
            Value::U16(_) => vt::U16,
            Value::I16(_) => vt::I16,
            Value::U32(_) => vt::U32,
            Value::I32(_) => vt::I32,
            Value::F32(_) => vt::F32,
            Value::Bool(_) => vt::BOOL,
            Value::String(_) => vt::STRING,
            Value::Array(_) => vt::ARRAY,
            Value::U64(_) => vt::U64,
            Value::I64(_) => vt::I64,
            Value::F64(_) => vt::F64,
        }
    }
}

/// One entry of the tensor table, validated against the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorInfo {
    /// Tensor name (`blk.0.attn_q_a.weight`).
    pub name: String,
    /// Dimensions in ggml order: `dims[0]` varies fastest (the reverse of PyTorch's shape).
    pub dims: Vec<u64>,
    /// Element type.
    pub ty: GgmlType,
    /// Byte offset of the data from the start of the file.
    pub offset: usize,
    /// Bytes of data.
    pub size: usize,
}

impl TensorInfo {
    /// The shape outermost first, as PyTorch and safetensors write it.
    pub fn shape(&self) -> Vec<usize> {
        self.dims.iter().rev().map(|&d| d as usize).collect()
    }
}

/// A parsed GGUF header: version, metadata and tensor table, with offsets into the file.
#[derive(Debug, Clone)]
pub struct Header {
    /// Format version (2 or 3).
    pub version: u32,
    /// Metadata in file order.
    pub metadata: Vec<(String, Value)>,
    /// Tensors in file order.
    pub tensors: Vec<TensorInfo>,
    /// Alignment of the data section and its tensors.
    pub alignment: usize,
    /// Offset of the data section.
    pub data_offset: usize,
}

/// A little-endian reader over the header bytes that never reads past the end.
struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8], String> {
        if n > self.remaining() {
            return Err(format!(
                "{what} at byte {} needs {n} bytes, the file has {} left (truncated?)",
                self.pos,
                self.remaining()
            ));
        }
        let s = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    fn array<const N: usize>(&mut self, what: &str) -> Result<[u8; N], String> {
        Ok(self.take(N, what)?.try_into().expect("took N bytes"))
    }

    fn u32(&mut self, what: &str) -> Result<u32, String> {
        Ok(u32::from_le_bytes(self.array(what)?))
    }

    fn u64(&mut self, what: &str) -> Result<u64, String> {
        Ok(u64::from_le_bytes(self.array(what)?))
    }

    /// A count of items each at least `min_bytes` long: refused when the rest of the file
    /// could not hold them, so no allocation is ever sized by an unchecked number.
    fn count(&mut self, min_bytes: usize, what: &str) -> Result<usize, String> {
        let n = self.u64(what)?;
        let fits = n
            .checked_mul(min_bytes as u64)
            .is_some_and(|b| b <= self.remaining() as u64);
        if !fits {
            return Err(format!(
                "{what} is {n}, more than the {} bytes left could hold",
                self.remaining()
            ));
        }
        Ok(n as usize)
    }

    fn string(&mut self, what: &str) -> Result<String, String> {
        let n = self.count(1, what)?;
        let bytes = self.take(n, what)?;
        String::from_utf8(bytes.to_vec()).map_err(|_| format!("{what} is not valid UTF-8"))
    }

    fn value(&mut self, ty: u32, depth: usize, what: &str) -> Result<Value, String> {
        Ok(match ty {
            vt::U8 => Value::U8(self.array::<1>(what)?[0]),
            vt::I8 => Value::I8(self.array::<1>(what)?[0] as i8),
            vt::U16 => Value::U16(u16::from_le_bytes(self.array(what)?)),
            vt::I16 => Value::I16(i16::from_le_bytes(self.array(what)?)),
            vt::U32 => Value::U32(self.u32(what)?),
            vt::I32 => Value::I32(i32::from_le_bytes(self.array(what)?)),
            vt::F32 => Value::F32(f32::from_le_bytes(self.array(what)?)),
            vt::BOOL => match self.array::<1>(what)?[0] {
                0 => Value::Bool(false),
                1 => Value::Bool(true),
                b => return Err(format!("{what}: bool byte {b} is neither 0 nor 1")),
            },
            vt::STRING => Value::String(self.string(what)?),
            vt::ARRAY => {
                if depth >= MAX_NESTING {
                    return Err(format!(
                        "{what}: arrays nested more than {MAX_NESTING} deep"
                    ));
                }
                let ety = self.u32(what)?;
                let n = self.count(
                    min_value_bytes(ety).ok_or_else(|| bad_type(ety, what))?,
                    what,
                )?;
                let mut items = Vec::with_capacity(n);
                for _ in 0..n {
                    items.push(self.value(ety, depth + 1, what)?);
                }
                Value::Array(items)
            }
            vt::U64 => Value::U64(self.u64(what)?),
            vt::I64 => Value::I64(i64::from_le_bytes(self.array(what)?)),
            vt::F64 => Value::F64(f64::from_le_bytes(self.array(what)?)),
            other => return Err(bad_type(other, what)),
        })
    }
}

fn bad_type(ty: u32, what: &str) -> String {
    format!("{what}: unknown value type {ty}")
}

/// The fewest bytes one value of wire type `ty` occupies (a string or array: its length field).
fn min_value_bytes(ty: u32) -> Option<usize> {
    Some(match ty {
        vt::U8 | vt::I8 | vt::BOOL => 1,
        vt::U16 | vt::I16 => 2,
        vt::U32 | vt::I32 | vt::F32 => 4,
        vt::U64 | vt::I64 | vt::F64 | vt::STRING => 8,
        vt::ARRAY => 12,
        _ => return None,
    })
}

impl Header {
    /// Parses and validates the header of a GGUF file whose complete contents are `buf`:
    /// every tensor must lie inside the data section, aligned, with a size its type allows.
    pub fn parse(buf: &[u8]) -> Result<Self, String> {
        let mut c = Cursor { buf, pos: 0 };
        if c.take(4, "magic")? != MAGIC {
            return Err("not a GGUF file (bad magic)".into());
        }
        let version = c.u32("version")?;
        if !(2..=3).contains(&version) {
            return Err(format!(
                "GGUF version {version} is not supported (supported: 2, 3)"
            ));
        }
        // A tensor entry takes at least a name length, one dimension, a type and an offset.
        let n_tensors = c.u64("tensor count")?;
        let n_kv = c.count(8 + 4 + 1, "metadata count")?;
        let mut metadata = Vec::with_capacity(n_kv);
        let mut seen = HashMap::with_capacity(n_kv);
        for i in 0..n_kv {
            let key = c.string(&format!("metadata key {i}"))?;
            let ty = c.u32(&format!("type of `{key}`"))?;
            let value = c.value(ty, 0, &format!("metadata `{key}`"))?;
            if seen.insert(key.clone(), i).is_some() {
                return Err(format!("metadata key `{key}` appears twice"));
            }
            metadata.push((key, value));
        }
        let alignment = match seen.get("general.alignment").map(|&i| &metadata[i].1) {
            None => DEFAULT_ALIGNMENT,
            Some(Value::U32(a)) if a.is_power_of_two() => *a as usize,
            Some(v) => {
                return Err(format!(
                    "general.alignment must be a power of two u32, found {v:?}"
                ))
            }
        };
        let n_tensors = {
            let fits = n_tensors
                .checked_mul(8 + 4 + 8 + 4 + 8)
                .is_some_and(|b| b <= c.remaining() as u64);
            if !fits {
                return Err(format!(
                    "tensor count {n_tensors} is more than the rest of the file could describe"
                ));
            }
            n_tensors as usize
        };
        let mut raw = Vec::with_capacity(n_tensors);
        let mut names = HashMap::with_capacity(n_tensors);
        for i in 0..n_tensors {
            let name = c.string(&format!("name of tensor {i}"))?;
            let what = format!("tensor `{name}`");
            let n_dims = c.u32(&what)? as usize;
            if !(1..=MAX_DIMS).contains(&n_dims) {
                return Err(format!("{what} has {n_dims} dimensions (1..={MAX_DIMS})"));
            }
            let mut dims = Vec::with_capacity(n_dims);
            for _ in 0..n_dims {
                dims.push(c.u64(&what)?);
            }
            let id = c.u32(&what)?;
            let ty = GgmlType::from_id(id)
                .ok_or_else(|| format!("{what} has unknown ggml type {id}"))?;
            let offset = c.u64(&what)?;
            if names.insert(name.clone(), i).is_some() {
                return Err(format!("{what} appears twice"));
            }
            raw.push((name, dims, ty, offset));
        }
        // Files without tensors (llama.cpp's vocab-only files) may end before the padding.
        let data_offset = match c.pos.next_multiple_of(alignment) {
            end if raw.is_empty() => end.min(buf.len()),
            end => end,
        };
        let data_len = buf.len().checked_sub(data_offset).ok_or_else(|| {
            format!("the data section would start at byte {data_offset}, past the end of the file")
        })?;
        let mut tensors = Vec::with_capacity(raw.len());
        for (name, dims, ty, offset) in raw {
            let what = format!("tensor `{name}` ({ty}, dims {dims:?})");
            let elems = dims
                .iter()
                .try_fold(1u64, |a, &d| a.checked_mul(d))
                .ok_or_else(|| format!("{what}: element count overflows"))?;
            if dims[0] % ty.block_size() as u64 != 0 {
                return Err(format!(
                    "{what}: first dimension is not a multiple of the {}-weight block",
                    ty.block_size()
                ));
            }
            let size = ty
                .bytes_for(elems)
                .ok_or_else(|| format!("{what}: byte size overflows"))?;
            if offset % alignment as u64 != 0 {
                return Err(format!(
                    "{what}: offset {offset} is not a multiple of the alignment {alignment}"
                ));
            }
            if offset
                .checked_add(size)
                .is_none_or(|end| end > data_len as u64)
            {
                return Err(format!(
                    "{what}: {size} bytes at offset {offset} lie outside the {data_len}-byte data section (truncated?)"
                ));
            }
            tensors.push(TensorInfo {
                name,
                dims,
                ty,
                offset: data_offset + offset as usize,
                size: size as usize,
            });
        }
        Ok(Header {
            version,
            metadata,
            tensors,
            alignment,
            data_offset,
        })
    }
}

/// An opened GGUF file: its validated header over a shared memory map.
pub struct GgufFile {
    path: PathBuf,
    map: Arc<Mmap>,
    header: Header,
    meta_index: HashMap<String, usize>,
    tensor_index: HashMap<String, usize>,
}

impl std::fmt::Debug for GgufFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GgufFile")
            .field("path", &self.path)
            .field("version", &self.header.version)
            .field("tensors", &self.header.tensors.len())
            .finish()
    }
}

impl GgufFile {
    /// Maps and validates the file at `path` (reads the header, not the tensors).
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let file = File::open(path).map_err(|e| Error::io(path, e))?;
        // SAFETY: the map is read-only; like every mmap-based loader we assume the file is not
        // truncated or rewritten by another process while the model is alive.
        let map = unsafe { Mmap::map(&file) }.map_err(|e| Error::io(path, e))?;
        let header = Header::parse(&map).map_err(|message| Error::Gguf {
            path: path.to_path_buf(),
            message,
        })?;
        let meta_index = header
            .metadata
            .iter()
            .enumerate()
            .map(|(i, (k, _))| (k.clone(), i))
            .collect();
        let tensor_index = header
            .tensors
            .iter()
            .enumerate()
            .map(|(i, t)| (t.name.clone(), i))
            .collect();
        Ok(GgufFile {
            path: path.to_path_buf(),
            map: Arc::new(map),
            header,
            meta_index,
            tensor_index,
        })
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The parsed header.
    pub fn header(&self) -> &Header {
        &self.header
    }

    /// The metadata value under `key`.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.meta_index
            .get(key)
            .map(|&i| &self.header.metadata[i].1)
    }

    /// The tensor-table entry called `name`.
    pub fn tensor(&self, name: &str) -> Option<&TensorInfo> {
        self.tensor_index
            .get(name)
            .map(|&i| &self.header.tensors[i])
    }

    /// The data of `info` (a tensor of this file), borrowed from the map.
    pub fn data(&self, info: &TensorInfo) -> Bytes {
        Bytes::mapped(self.map.clone(), info.offset, info.size)
    }

    /// Total bytes of the mapped file.
    pub fn mapped_bytes(&self) -> usize {
        self.map.len()
    }

    /// An error about this file.
    pub fn error(&self, message: impl Into<String>) -> Error {
        Error::Gguf {
            path: self.path.clone(),
            message: message.into(),
        }
    }
}

/// Makes a tensor's bytes when the writer reaches it: its ggml type and encoded data.
pub type Producer<'a> = Box<dyn FnOnce() -> Result<(GgmlType, Vec<u8>)> + 'a>;

/// A tensor waiting to be written: its name, ggml dims and bytes (ready, or made on demand).
struct Pending<'a> {
    name: String,
    dims: Vec<u64>,
    data: Data<'a>,
}

enum Data<'a> {
    Ready(GgmlType, std::borrow::Cow<'a, [u8]>),
    Lazy(Producer<'a>),
}

/// Builds a GGUF file: metadata and tensors in the order added. Tensors may be produced while
/// the file is written, one at a time, so converting a model never holds it twice in memory.
#[derive(Default)]
pub struct Writer<'a> {
    metadata: Vec<(String, Value)>,
    tensors: Vec<Pending<'a>>,
}

impl<'a> Writer<'a> {
    /// An empty file.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds (or replaces) a metadata entry.
    pub fn set(&mut self, key: &str, value: Value) {
        match self.metadata.iter_mut().find(|(k, _)| k == key) {
            Some(slot) => slot.1 = value,
            None => self.metadata.push((key.to_string(), value)),
        }
    }

    /// Adds a tensor with ggml dims (fastest first) and its encoded bytes.
    pub fn add_tensor(
        &mut self,
        name: &str,
        dims: &[u64],
        ty: GgmlType,
        data: impl Into<std::borrow::Cow<'a, [u8]>>,
    ) -> Result<()> {
        let data = data.into();
        check_tensor(name, dims, ty, data.len())?;
        self.tensors.push(Pending {
            name: name.to_string(),
            dims: dims.to_vec(),
            data: Data::Ready(ty, data),
        });
        Ok(())
    }

    /// Adds a tensor whose type and bytes `produce` makes when the writer reaches it.
    pub fn add_lazy(&mut self, name: &str, dims: &[u64], produce: Producer<'a>) {
        self.tensors.push(Pending {
            name: name.to_string(),
            dims: dims.to_vec(),
            data: Data::Lazy(produce),
        });
    }

    /// Writes the file (version 3, alignment 32 unless `general.alignment` says otherwise).
    pub fn write(self, path: impl AsRef<Path>) -> Result<()> {
        let path = path.as_ref();
        let io = |e| Error::io(path, e);
        let file = File::create(path).map_err(io)?;
        let mut w = std::io::BufWriter::with_capacity(1 << 20, file);
        self.write_to(&mut w).map_err(|e| match e {
            Error::Io { source, .. } => io(source),
            e => e,
        })?;
        w.into_inner()
            .map_err(|e| io(e.into_error()))?
            .sync_all()
            .map_err(io)
    }

    /// Writes the file to `w`: the header with room for every tensor's type and offset, the
    /// tensors as they are produced, then the header again with their final types and offsets.
    pub fn write_to<W: Write + std::io::Seek>(self, w: &mut W) -> Result<()> {
        let io = |e| Error::io("GGUF output", e);
        let alignment = match self.metadata.iter().find(|(k, _)| k == "general.alignment") {
            Some((_, Value::U32(a))) if a.is_power_of_two() => *a as usize,
            _ => DEFAULT_ALIGNMENT,
        };
        let start = w.stream_position().map_err(io)?;
        let mut head = Vec::new();
        head.extend_from_slice(MAGIC);
        head.extend_from_slice(&3u32.to_le_bytes());
        head.extend_from_slice(&(self.tensors.len() as u64).to_le_bytes());
        head.extend_from_slice(&(self.metadata.len() as u64).to_le_bytes());
        for (k, v) in &self.metadata {
            put_string(&mut head, k);
            head.extend_from_slice(&v.type_id().to_le_bytes());
            put_value(&mut head, v);
        }
        // Where each tensor's type and offset go, filled in once its bytes are known.
        let mut slots = Vec::with_capacity(self.tensors.len());
        for t in &self.tensors {
            put_string(&mut head, &t.name);
            head.extend_from_slice(&(t.dims.len() as u32).to_le_bytes());
            for d in &t.dims {
                head.extend_from_slice(&d.to_le_bytes());
            }
            slots.push(head.len());
            head.extend_from_slice(&[0u8; 12]);
        }
        head.resize(head.len().next_multiple_of(alignment), 0);
        w.write_all(&head).map_err(io)?;
        let zeros = vec![0u8; alignment];
        let mut offset = 0usize;
        for (t, slot) in self.tensors.into_iter().zip(slots) {
            let (ty, data): (GgmlType, std::borrow::Cow<'_, [u8]>) = match t.data {
                Data::Ready(ty, d) => (ty, d),
                Data::Lazy(produce) => {
                    let (ty, d) = produce()?;
                    check_tensor(&t.name, &t.dims, ty, d.len())?;
                    (ty, std::borrow::Cow::Owned(d))
                }
            };
            head[slot..slot + 4].copy_from_slice(&ty.id().to_le_bytes());
            head[slot + 4..slot + 12].copy_from_slice(&(offset as u64).to_le_bytes());
            w.write_all(&data).map_err(io)?;
            let pad = data.len().next_multiple_of(alignment) - data.len();
            w.write_all(&zeros[..pad]).map_err(io)?;
            offset += data.len() + pad;
        }
        w.seek(std::io::SeekFrom::Start(start)).map_err(io)?;
        w.write_all(&head).map_err(io)?;
        w.seek(std::io::SeekFrom::End(0)).map_err(io)?;
        Ok(())
    }
}

/// Checks that `len` bytes of `ty` fill ggml dims `dims` exactly.
fn check_tensor(name: &str, dims: &[u64], ty: GgmlType, len: usize) -> Result<()> {
    let elems = dims.iter().try_fold(1u64, |a, &d| a.checked_mul(d));
    if dims.is_empty()
        || dims.len() > MAX_DIMS
        || !dims[0].is_multiple_of(ty.block_size() as u64)
        || elems.and_then(|e| ty.bytes_for(e)) != Some(len as u64)
    {
        return Err(Error::InvalidArgument(format!(
            "GGUF tensor `{name}`: {len} bytes do not fit dims {dims:?} of {ty}"
        )));
    }
    Ok(())
}

fn put_string(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u64).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

fn put_value(out: &mut Vec<u8>, v: &Value) {
    match v {
        Value::U8(x) => out.push(*x),
        Value::I8(x) => out.push(*x as u8),
        Value::U16(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::I16(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::U32(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::I32(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::F32(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::Bool(x) => out.push(*x as u8),
        Value::String(s) => put_string(out, s),
        Value::Array(items) => {
            // An empty array's element type is irrelevant to readers; write u8 (ggml's default).
            let ety = items.first().map_or(vt::U8, Value::type_id);
            out.extend_from_slice(&ety.to_le_bytes());
            out.extend_from_slice(&(items.len() as u64).to_le_bytes());
            for item in items {
                put_value(out, item);
            }
        }
        Value::U64(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::I64(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::F64(x) => out.extend_from_slice(&x.to_le_bytes()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Vec<u8> {
        let mut w = Writer::new();
        w.set("general.architecture", Value::String("llama".into()));
        w.set("llama.block_count", Value::U32(2));
        w.set("f", Value::F64(-0.5));
        w.set(
            "tokens",
            Value::Array(vec![Value::String("a".into()), Value::String("bc".into())]),
        );
        w.set("flag", Value::Bool(true));
        w.set("neg", Value::I32(-3));
        let f32s: Vec<u8> = [1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        w.add_tensor("a", &[3, 2], GgmlType::F32, f32s).unwrap();
        w.add_tensor("b", &[32], GgmlType::Q8_0, vec![7u8; 34])
            .unwrap();
        let mut out = std::io::Cursor::new(Vec::new());
        w.write_to(&mut out).unwrap();
        out.into_inner()
    }

    #[test]
    fn written_files_read_back() {
        let buf = sample();
        let h = Header::parse(&buf).unwrap();
        assert_eq!(h.version, 3);
        assert_eq!(h.metadata[1], ("llama.block_count".into(), Value::U32(2)));
        assert_eq!(h.metadata[2].1.as_f64(), Some(-0.5));
        assert_eq!(h.metadata[5].1.as_i64(), Some(-3));
        assert_eq!(h.metadata[5].1.as_u64(), None);
        let a = &h.tensors[0];
        assert_eq!((a.shape(), a.ty, a.size), (vec![2, 3], GgmlType::F32, 24));
        assert_eq!(a.offset % 32, 0);
        assert_eq!(&buf[a.offset..a.offset + 4], &1.0f32.to_le_bytes());
        let b = &h.tensors[1];
        assert_eq!((b.size, b.offset - a.offset), (34, 32));
        assert!(buf[b.offset..b.offset + 34].iter().all(|&x| x == 7));
    }

    #[test]
    fn lazy_tensors_are_written_with_the_type_they_turn_out_to_have() {
        let mut w = Writer::new();
        w.add_lazy("a", &[32], Box::new(|| Ok((GgmlType::Q8_0, vec![3u8; 34]))));
        w.add_tensor("b", &[2], GgmlType::F32, vec![1u8; 8])
            .unwrap();
        w.add_lazy("c", &[4], Box::new(|| Ok((GgmlType::F16, vec![5u8; 8]))));
        let mut out = std::io::Cursor::new(Vec::new());
        w.write_to(&mut out).unwrap();
        let out = out.into_inner();
        let h = Header::parse(&out).unwrap();
        let t: Vec<_> = h.tensors.iter().map(|t| (t.ty, t.size)).collect();
        assert_eq!(
            t,
            [(GgmlType::Q8_0, 34), (GgmlType::F32, 8), (GgmlType::F16, 8)]
        );
        assert!(out[h.tensors[2].offset..][..8].iter().all(|&b| b == 5));
        // A producer whose bytes do not fit its dims fails the write.
        let mut w = Writer::new();
        w.add_lazy("a", &[32], Box::new(|| Ok((GgmlType::Q8_0, vec![0u8; 33]))));
        assert!(w.write_to(&mut std::io::Cursor::new(Vec::new())).is_err());
    }

    #[test]
    fn every_truncation_is_an_error_not_a_panic() {
        let buf = sample();
        for n in 0..buf.len() - 1 {
            // The last tensor's trailing padding is not data: only cut into real bytes.
            if Header::parse(&buf[..n]).is_ok() {
                let h = Header::parse(&buf[..n]).unwrap();
                assert!(h.tensors.iter().all(|t| t.offset + t.size <= n));
            }
        }
        assert!(Header::parse(&buf[..buf.len() - 40]).is_err());
    }

    #[test]
    fn hostile_counts_are_refused_before_allocating() {
        let mut buf = sample();
        // Metadata count of 2^60.
        buf[16..24].copy_from_slice(&(1u64 << 60).to_le_bytes());
        let e = Header::parse(&buf).unwrap_err();
        assert!(e.contains("metadata count"), "{e}");
        // Tensor count of 2^60.
        let mut buf = sample();
        buf[8..16].copy_from_slice(&(1u64 << 60).to_le_bytes());
        assert!(Header::parse(&buf).unwrap_err().contains("tensor count"));
        // A string length of 2^63 in the first key.
        let mut buf = sample();
        buf[24..32].copy_from_slice(&(1u64 << 63).to_le_bytes());
        assert!(Header::parse(&buf).is_err());
    }

    #[test]
    fn bad_tensors_are_refused() {
        let bytes = |w: Writer| {
            let mut out = std::io::Cursor::new(Vec::new());
            w.write_to(&mut out).unwrap();
            out.into_inner()
        };
        let one = || {
            let mut w = Writer::new();
            w.add_tensor("x", &[32, 2], GgmlType::Q4_0, vec![0u8; 36])
                .unwrap();
            w
        };
        assert!(Header::parse(&bytes(one())).is_ok());
        // Q4_0 rows must be whole blocks.
        assert!(Writer::new()
            .add_tensor("x", &[31], GgmlType::Q4_0, vec![0u8; 18])
            .is_err());
        // Unknown type id and misaligned offset, patched in the bytes.
        let out = bytes(one());
        let at = out.windows(1).position(|b| b == b"x").unwrap() + 1 + 4 + 16;
        let mut bad = out.clone();
        bad[at..at + 4].copy_from_slice(&31u32.to_le_bytes());
        assert!(Header::parse(&bad)
            .unwrap_err()
            .contains("unknown ggml type"));
        let mut bad = out.clone();
        bad[at + 4..at + 12].copy_from_slice(&4u64.to_le_bytes());
        assert!(Header::parse(&bad).unwrap_err().contains("alignment"));
        let mut bad = out;
        bad[at + 4..at + 12].copy_from_slice(&u64::MAX.to_le_bytes());
        assert!(Header::parse(&bad).is_err());
    }

    #[test]
    fn files_without_tensors_need_no_trailing_padding() {
        let mut w = Writer::new();
        w.set("tokenizer.ggml.model", Value::String("gpt2".into()));
        let mut out = std::io::Cursor::new(Vec::new());
        w.write_to(&mut out).unwrap();
        let out = out.into_inner();
        // 24-byte header + key + type + value, then padding to 32 that llama.cpp omits.
        let end = 24 + 8 + "tokenizer.ggml.model".len() + 4 + 8 + 4;
        assert!(out.len() > end);
        let h = Header::parse(&out[..end]).unwrap();
        assert_eq!(h.metadata[0].1.as_str(), Some("gpt2"));
        assert_eq!(h.data_offset, end);
    }

    #[test]
    fn versions_and_magic() {
        let mut buf = sample();
        buf[4..8].copy_from_slice(&1u32.to_le_bytes());
        assert!(Header::parse(&buf).unwrap_err().contains("version 1"));
        buf[..4].copy_from_slice(b"GGML");
        assert!(Header::parse(&buf).unwrap_err().contains("magic"));
    }
}
