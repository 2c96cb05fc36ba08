//! What every checkpoint format hands the loader: named tensor views over mapped bytes.

use crate::bytes::Bytes;
use crate::error::{Error, Result};

use super::names::Naming;
use crate::quant::GgmlType;

/// How a checkpoint tensor's elements are stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DType {
    /// IEEE float32.
    F32,
    /// bfloat16.
    BF16,
    /// IEEE float16.
    F16,
    /// FP8 e4m3fn (DeepSeek-V3/R1's native weight format), scaled by a separate tensor.
    F8E4M3,
    /// A ggml block format (GGUF files), e.g. Q8_0 or Q4_K.
    Ggml(GgmlType),
}

impl DType {
    /// The name users know it by.
    pub fn name(self) -> &'static str {
        match self {
            DType::F32 => "F32",
            DType::BF16 => "BF16",
            DType::F16 => "F16",
            DType::F8E4M3 => "F8_E4M3",
            DType::Ggml(t) => t.name(),
        }
    }
}

/// One tensor of a checkpoint: its element type, shape and raw little-endian bytes.
#[derive(Debug, Clone)]
pub struct TensorView {
    /// The name the checkpoint gives it.
    pub name: String,
    /// Element type.
    pub dtype: DType,
    /// Shape, outermost first (GGUF's dims reversed).
    pub shape: Vec<usize>,
    /// The raw data.
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

    /// The values of a float tensor as float32 (norms, biases, router scores, scales).
    pub fn to_f32(&self) -> Result<Vec<f32>> {
        let b = &self.bytes[..];
        Ok(match self.dtype {
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
            DType::F8E4M3 | DType::Ggml(_) => {
                return Err(Error::Dtype {
                    name: self.name.clone(),
                    dtype: format!("{} where a float vector is needed", self.dtype.name()),
                })
            }
        })
    }
}

/// A checkpoint that hands out tensors by name: a safetensors folder or a GGUF file.
pub trait TensorSource: Send + Sync {
    /// How this checkpoint names its tensors.
    fn naming(&self) -> Naming;

    /// The tensor called `name`, `None` when the checkpoint has none by that name.
    fn get(&self, name: &str) -> Result<Option<TensorView>>;

    /// Whether the checkpoint has a tensor called `name`.
    fn contains(&self, name: &str) -> bool;

    /// Every tensor name (any order).
    fn names(&self) -> Vec<String>;

    /// Total bytes of the mapped files.
    fn mapped_bytes(&self) -> usize;
}
