//! Hugging Face safetensors checkpoints: `model.safetensors`, or shards listed by
//! `model.safetensors.index.json`, memory-mapped with every header checked against the file.
//!
//! A sharded checkpoint is read exactly as its index says: every tensor must sit in the shard the
//! index names, and a tensor that is missing from the index, stored in another shard, or stored
//! twice is an error rather than a silent choice.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::path::Path;
use std::sync::Arc;

use memmap2::Mmap;
use safetensors::tensor::{Dtype as StDtype, SafeTensors};

use super::names::Naming;
use super::source::{DType, TensorSource, TensorView};
use crate::bytes::Bytes;
use crate::error::{Error, Result};

struct Entry {
    shard: usize,
    dtype: Result<DType, String>,
    shape: Vec<usize>,
    start: usize,
    len: usize,
}

/// An opened safetensors checkpoint: every tensor of every shard, by name.
pub struct Checkpoint {
    maps: Vec<Arc<Mmap>>,
    tensors: HashMap<String, Entry>,
}

/// The index file of a sharded checkpoint.
pub const INDEX: &str = "model.safetensors.index.json";
/// The file of a single-file checkpoint.
pub const SINGLE: &str = "model.safetensors";

impl Checkpoint {
    /// Opens the weights in `dir`: `model.safetensors.index.json` and its shards, or
    /// `model.safetensors`.
    pub fn open(dir: impl AsRef<Path>) -> Result<Self> {
        let dir = dir.as_ref();
        let index = dir.join(INDEX);
        let mut ckpt = Checkpoint {
            maps: Vec::new(),
            tensors: HashMap::new(),
        };
        if index.is_file() {
            let weight_map = read_index(&index)?;
            // Shards in first-seen order of the (sorted) index, each opened once.
            let mut shards: Vec<&str> = Vec::new();
            for file in weight_map.values() {
                if !shards.contains(&file.as_str()) {
                    shards.push(file);
                }
            }
            for file in &shards {
                let path = dir.join(file);
                let names = ckpt.add_file(&path)?;
                for name in names {
                    match weight_map.get(&name) {
                        Some(listed) if listed == file => {}
                        Some(listed) => {
                            return Err(Error::Safetensors {
                                path: path.clone(),
                                message: format!(
                                "tensor `{name}` is stored here, but {INDEX} places it in {listed}"
                            ),
                            })
                        }
                        None => {
                            return Err(Error::Safetensors {
                                path: path.clone(),
                                message: format!("tensor `{name}` is not listed in {INDEX}"),
                            })
                        }
                    }
                }
            }
            if let Some((name, file)) = weight_map
                .iter()
                .find(|(name, _)| !ckpt.tensors.contains_key(*name))
            {
                return Err(Error::Safetensors {
                    path: dir.join(file),
                    message: format!(
                        "{INDEX} lists tensor `{name}` in this shard, but it is not there"
                    ),
                });
            }
        } else if dir.join(SINGLE).is_file() {
            ckpt.add_file(&dir.join(SINGLE))?;
        } else {
            return Err(Error::io(
                dir.join(SINGLE),
                std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    format!("neither {SINGLE} nor {INDEX} found"),
                ),
            ));
        }
        Ok(ckpt)
    }

    /// Maps one file and records its tensors; returns their names. A name already seen in
    /// another shard is an error.
    fn add_file(&mut self, path: &Path) -> Result<Vec<String>> {
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
        let mut names = Vec::new();
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
            if let Ok(dt) = dtype {
                let bytes = info
                    .shape
                    .iter()
                    .try_fold(1usize, |acc, &d| acc.checked_mul(d))
                    .and_then(|n| n.checked_mul(element_bytes(dt)));
                if bytes != Some(b - a) {
                    return Err(corrupt(format!(
                        "tensor `{name}`: shape {:?} does not match its {} bytes",
                        info.shape,
                        b - a
                    )));
                }
            }
            if self.tensors.contains_key(&name) {
                return Err(corrupt(format!(
                    "tensor `{name}` is stored in more than one shard"
                )));
            }
            let entry = Entry {
                shard,
                dtype,
                shape: info.shape.clone(),
                start: data_start + a,
                len: b - a,
            };
            names.push(name.clone());
            self.tensors.insert(name, entry);
        }
        self.maps.push(Arc::new(map));
        Ok(names)
    }
}

/// Bytes per element of the float types safetensors stores.
fn element_bytes(dtype: DType) -> usize {
    match dtype {
        DType::F32 => 4,
        DType::BF16 | DType::F16 => 2,
        DType::F8E4M3 => 1,
        DType::Ggml(_) => unreachable!("safetensors stores no ggml types"),
    }
}

impl TensorSource for Checkpoint {
    fn naming(&self) -> Naming {
        Naming::Hf
    }

    fn get(&self, name: &str) -> Result<Option<TensorView>> {
        let Some(e) = self.tensors.get(name) else {
            return Ok(None);
        };
        let dtype = e.dtype.clone().map_err(|dtype| Error::Dtype {
            name: name.to_string(),
            dtype,
        })?;
        Ok(Some(TensorView {
            name: name.to_string(),
            dtype,
            shape: e.shape.clone(),
            bytes: Bytes::mapped(self.maps[e.shard].clone(), e.start, e.len),
        }))
    }

    fn contains(&self, name: &str) -> bool {
        self.tensors.contains_key(name)
    }

    fn names(&self) -> Vec<String> {
        self.tensors.keys().cloned().collect()
    }

    fn mapped_bytes(&self) -> usize {
        self.maps.iter().map(|m| m.len()).sum()
    }
}

/// The index's tensor -> shard file map, every file a plain name inside the folder.
fn read_index(index: &Path) -> Result<BTreeMap<String, String>> {
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
    let mut out = BTreeMap::new();
    for (name, file) in map {
        let file = file
            .as_str()
            .ok_or_else(|| bad(format!("weight_map[{name:?}] is not a file name")))?;
        let plain = !file.is_empty()
            && Path::new(file).file_name().and_then(|f| f.to_str()) == Some(file)
            && file != ".."
            && file != ".";
        if !plain {
            return Err(bad(format!(
                "weight_map[{name:?}] = {file:?} is not a plain file name"
            )));
        }
        out.insert(name.clone(), file.to_string());
    }
    if out.is_empty() {
        return Err(bad("`weight_map` is empty".into()));
    }
    Ok(out)
}
