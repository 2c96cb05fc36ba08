//! Checkpoint files -> validated tensor views over memory maps.
//!
//! Owns opening single-file and sharded safetensors (`model.safetensors.index.json`), checking
//! every header against the file's real size, and handing out [`TensorView`]s that borrow the
//! map: nothing is copied or read until a kernel touches it. Knows no model and no math.

use std::collections::HashMap;
use std::fs::File;
use std::ops::Deref;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use memmap2::Mmap;
use safetensors::tensor::{Dtype as StDtype, SafeTensors};

use crate::error::{Error, Result};

/// Element types a checkpoint tensor may have that we can compute with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DType {
    /// IEEE float32.
    F32,
    /// bfloat16.
    BF16,
    /// IEEE float16.
    F16,
    /// FP8 e4m3fn (DeepSeek-V3/R1's native weight format).
    F8E4M3,
}

impl DType {
    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            DType::F32 => 4,
            DType::BF16 | DType::F16 => 2,
            DType::F8E4M3 => 1,
        }
    }
}

/// Bytes that live either in a shared memory map or in memory we own.
#[derive(Clone)]
pub struct Bytes {
    inner: BytesInner,
}

#[derive(Clone)]
enum BytesInner {
    Mapped {
        map: Arc<Mmap>,
        start: usize,
        len: usize,
    },
    Anon(Arc<memmap2::MmapMut>),
    Arena {
        chunk: Arc<ArenaChunk>,
        start: usize,
        len: usize,
    },
    Owned(Arc<[u8]>),
}

impl Bytes {
    /// `len` bytes written once by `fill`, in anonymous memory advised to use 2 MiB pages:
    /// a TLB miss is a two-level walk in a VM, so huge pages raise single-thread read bandwidth
    /// by ~1.7x for weights we own (converted formats). Small tensors (an expert's matrices are
    /// a few hundred KiB) share 64 MiB arena chunks, since a mapping smaller than 2 MiB can never
    /// get a huge page.
    pub fn filled(len: usize, fill: impl FnOnce(&mut [u8])) -> Self {
        if len == 0 {
            return Bytes::owned(Vec::new());
        }
        if len <= ARENA_CHUNK / 4 {
            if let Some((chunk, start)) = arena_alloc(len) {
                // SAFETY: the arena hands out each range once; nobody reads it before we return.
                let region = unsafe { std::slice::from_raw_parts_mut(chunk.base.add(start), len) };
                fill(region);
                return Bytes {
                    inner: BytesInner::Arena { chunk, start, len },
                };
            }
        }
        match huge_page_map(len) {
            Some(mut map) => {
                fill(&mut map[..]);
                Bytes {
                    inner: BytesInner::Anon(Arc::new(map)),
                }
            }
            None => {
                let mut v = vec![0u8; len];
                fill(&mut v);
                Bytes::owned(v)
            }
        }
    }

    /// Bytes owned in memory (converted or generated tensors).
    pub fn owned(data: Vec<u8>) -> Self {
        Bytes {
            inner: BytesInner::Owned(data.into()),
        }
    }
}

impl Deref for Bytes {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match &self.inner {
            BytesInner::Mapped { map, start, len } => &map[*start..*start + *len],
            BytesInner::Anon(m) => m,
            // SAFETY: the range was written once before this Bytes existed and is only read now.
            BytesInner::Arena { chunk, start, len } => unsafe {
                std::slice::from_raw_parts(chunk.base.add(*start), *len)
            },
            BytesInner::Owned(v) => v,
        }
    }
}

impl std::fmt::Debug for Bytes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Bytes({} bytes)", self.len())
    }
}

/// Size of one arena chunk of converted weights (64 KiB under Miri, which interprets every
/// access to a chunk at a cost that grows with its size).
const ARENA_CHUNK: usize = if cfg!(miri) { 64 << 10 } else { 64 << 20 };

/// An anonymous mapping that small converted tensors are carved from.
struct ArenaChunk {
    base: *mut u8,
    _map: memmap2::MmapMut,
}

// SAFETY: each range of the chunk is written once by the thread that allocated it, before any
// `Bytes` refers to it; afterwards the chunk is only read.
unsafe impl Send for ArenaChunk {}
// SAFETY: as above.
unsafe impl Sync for ArenaChunk {}

/// The chunk being filled and how much of it is used.
static ARENA: std::sync::Mutex<Option<(Arc<ArenaChunk>, usize)>> = std::sync::Mutex::new(None);

/// A 64-byte aligned range of `len` bytes in the current arena chunk (a new chunk when full).
fn arena_alloc(len: usize) -> Option<(Arc<ArenaChunk>, usize)> {
    let mut arena = ARENA.lock().unwrap_or_else(|e| e.into_inner());
    let fits = matches!(&*arena, Some((_, used)) if used + len <= ARENA_CHUNK);
    if !fits {
        let mut map = huge_page_map(ARENA_CHUNK)?;
        let base = map.as_mut_ptr();
        *arena = Some((Arc::new(ArenaChunk { base, _map: map }), 0));
    }
    let (chunk, used) = arena.as_mut()?;
    let start = *used;
    *used = (start + len).next_multiple_of(64);
    Some((chunk.clone(), start))
}

/// An anonymous mapping advised to use transparent huge pages.
fn huge_page_map(len: usize) -> Option<memmap2::MmapMut> {
    let map = memmap2::MmapMut::map_anon(len).ok()?;
    // (Not under Miri, which has no madvise: the advice changes speed, never contents.)
    #[cfg(all(target_os = "linux", not(miri)))]
    let _ = map.advise(memmap2::Advice::HugePage);
    Some(map)
}

/// One tensor of the checkpoint: its dtype, shape and raw little-endian bytes.
#[derive(Debug, Clone)]
pub struct TensorView {
    /// Checkpoint name.
    pub name: String,
    /// Element type.
    pub dtype: DType,
    /// Shape, outermost first.
    pub shape: Vec<usize>,
    /// The raw data (`shape.product() * dtype.size()` bytes).
    pub bytes: Bytes,
}

impl TensorView {
    /// Fails with a shape error naming the tensor unless its shape is `expected`.
    pub fn expect_shape(&self, expected: &[usize]) -> Result<()> {
        if self.shape != expected {
            return Err(Error::Shape {
                name: self.name.clone(),
                expected: expected.to_vec(),
                found: self.shape.clone(),
            });
        }
        Ok(())
    }

    /// The tensor's values as float32 (for small tensors: norms, router, biases, scales).
    pub fn to_f32(&self) -> Vec<f32> {
        let b = &self.bytes[..];
        match self.dtype {
            DType::F32 => b
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect(),
            DType::BF16 => b
                .chunks_exact(2)
                .map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32())
                .collect(),
            DType::F16 => b
                .chunks_exact(2)
                .map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32())
                .collect(),
            DType::F8E4M3 => b
                .iter()
                .map(|&x| crate::quant::fp8_e4m3_to_f32(x))
                .collect(),
        }
    }
}

struct Entry {
    shard: usize,
    dtype: Result<DType, String>,
    shape: Vec<usize>,
    start: usize,
    len: usize,
}

/// An opened checkpoint: every tensor of every shard, by name.
pub struct Checkpoint {
    maps: Vec<Arc<Mmap>>,
    tensors: HashMap<String, Entry>,
}

const INDEX: &str = "model.safetensors.index.json";
const SINGLE: &str = "model.safetensors";

impl Checkpoint {
    /// Opens the weights in `dir`: `model.safetensors.index.json` and its shards, or `model.safetensors`.
    pub fn open(dir: impl AsRef<Path>) -> Result<Self> {
        let dir = dir.as_ref();
        let index = dir.join(INDEX);
        let files: Vec<PathBuf> = if index.is_file() {
            shard_files(&index)?
                .into_iter()
                .map(|f| dir.join(f))
                .collect()
        } else if dir.join(SINGLE).is_file() {
            vec![dir.join(SINGLE)]
        } else {
            return Err(Error::io(
                dir.join(SINGLE),
                std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    format!("neither {SINGLE} nor {INDEX} found"),
                ),
            ));
        };
        let mut ckpt = Checkpoint {
            maps: Vec::new(),
            tensors: HashMap::new(),
        };
        for path in files {
            ckpt.add_file(&path)?;
        }
        Ok(ckpt)
    }

    fn add_file(&mut self, path: &Path) -> Result<()> {
        let file = File::open(path).map_err(|e| Error::io(path, e))?;
        // SAFETY: the map is read-only; like every mmap-based loader we assume the checkpoint is not
        // truncated or rewritten by another process while the model is alive.
        let map = unsafe { Mmap::map(&file) }.map_err(|e| Error::io(path, e))?;
        let corrupt = |message: String| Error::Safetensors {
            path: path.to_path_buf(),
            message,
        };
        let (header_len, meta) =
            SafeTensors::read_metadata(&map[..]).map_err(|e| corrupt(e.to_string()))?;
        let data_start = 8 + header_len;
        let data_len = map.len().saturating_sub(data_start);
        let shard = self.maps.len();
        for (name, info) in meta.tensors() {
            let (a, b) = info.data_offsets;
            if a > b || b > data_len {
                return Err(corrupt(format!(
                    "tensor `{name}` lies outside the file (truncated?)"
                )));
            }
            let dtype = match info.dtype {
                StDtype::F32 => Ok(DType::F32),
                StDtype::BF16 => Ok(DType::BF16),
                StDtype::F16 => Ok(DType::F16),
                StDtype::F8_E4M3 => Ok(DType::F8E4M3),
                other => Err(format!("{other:?}")),
            };
            let elems: usize = info.shape.iter().product();
            if let Ok(dt) = dtype {
                if elems * dt.size() != b - a {
                    return Err(corrupt(format!(
                        "tensor `{name}`: shape {:?} does not match its {} bytes",
                        info.shape,
                        b - a
                    )));
                }
            }
            let entry = Entry {
                shard,
                dtype,
                shape: info.shape.clone(),
                start: data_start + a,
                len: b - a,
            };
            self.tensors.insert(name, entry);
        }
        self.maps.push(Arc::new(map));
        Ok(())
    }

    /// Whether the checkpoint holds a tensor of this name.
    pub fn contains(&self, name: &str) -> bool {
        self.tensors.contains_key(name)
    }

    /// All tensor names (any order).
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.tensors.keys().map(String::as_str)
    }

    /// The tensor called `name`, or an error naming it.
    pub fn get(&self, name: &str) -> Result<TensorView> {
        let e = self
            .tensors
            .get(name)
            .ok_or_else(|| Error::MissingTensor(name.to_string()))?;
        let dtype = e.dtype.clone().map_err(|dtype| Error::Dtype {
            name: name.to_string(),
            dtype,
        })?;
        Ok(TensorView {
            name: name.to_string(),
            dtype,
            shape: e.shape.clone(),
            bytes: Bytes {
                inner: BytesInner::Mapped {
                    map: self.maps[e.shard].clone(),
                    start: e.start,
                    len: e.len,
                },
            },
        })
    }

    /// Total bytes of all mapped files.
    pub fn mapped_bytes(&self) -> usize {
        self.maps.iter().map(|m| m.len()).sum()
    }
}

/// The distinct shard file names an index refers to, in first-seen order.
fn shard_files(index: &Path) -> Result<Vec<String>> {
    let text = std::fs::read_to_string(index).map_err(|e| Error::io(index, e))?;
    let bad = |message: String| Error::Json {
        path: index.to_path_buf(),
        message,
    };
    let v: serde_json::Value = serde_json::from_str(&text).map_err(|e| bad(e.to_string()))?;
    let map = v
        .get("weight_map")
        .and_then(|m| m.as_object())
        .ok_or_else(|| bad("no `weight_map` object".into()))?;
    let mut files: Vec<String> = Vec::new();
    for (name, file) in map {
        let file = file
            .as_str()
            .ok_or_else(|| bad(format!("weight_map[{name:?}] is not a file name")))?;
        if file.contains('/') || file.contains('\\') || file == ".." {
            return Err(bad(format!(
                "weight_map[{name:?}] = {file:?} is not a plain file name"
            )));
        }
        if !files.iter().any(|f| f == file) {
            files.push(file.to_string());
        }
    }
    if files.is_empty() {
        return Err(bad("`weight_map` is empty".into()));
    }
    Ok(files)
}
