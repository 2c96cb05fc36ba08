//! Weight storage formats: how a matrix's bytes map to numbers, with the scalar reference decode.
//!
//! Owns [`Weight`] (a row-major matrix in one of the supported formats) and the exact,
//! element-by-element decoding that every fast kernel is tested against. Knows bytes, never
//! matmuls or models.

use crate::error::{Error, Result};
use crate::loader::{Bytes, DType, TensorView};

/// FP8 e4m3fn -> f32 for all 256 bit patterns: sign, 4-bit exponent (bias 7), 3-bit mantissa;
/// no infinities, 0x7F/0xFF are NaN, exponent 0 holds subnormals `m/8 * 2^-6`.
static FP8_E4M3_LUT: [f32; 256] = {
    let mut t = [0f32; 256];
    let mut i = 0;
    while i < 256 {
        let sign = if i & 0x80 != 0 { -1.0 } else { 1.0 };
        let e = ((i >> 3) & 0xF) as i32;
        let m = (i & 0x7) as f32;
        let mag = if e == 0xF && (i & 0x7) == 0x7 {
            f32::NAN
        } else if e == 0 {
            m / 8.0 / 64.0
        } else {
            let mut p = 1.0f32;
            let mut k = e - 7;
            while k > 0 {
                p *= 2.0;
                k -= 1;
            }
            while k < 0 {
                p /= 2.0;
                k += 1;
            }
            (1.0 + m / 8.0) * p
        };
        t[i] = sign * mag;
        i += 1;
    }
    t
};

/// Decodes one FP8 e4m3fn byte.
#[inline]
pub fn fp8_e4m3_to_f32(b: u8) -> f32 {
    FP8_E4M3_LUT[b as usize]
}

/// How a [`Weight`]'s bytes encode its values.
#[derive(Debug, Clone)]
pub enum Format {
    /// Little-endian float32.
    F32,
    /// bfloat16.
    BF16,
    /// IEEE float16.
    F16,
    /// FP8 e4m3fn, one byte per weight, times a float32 `scale_inv` per `block` of rows x cols.
    Fp8E4M3 {
        /// `[ceil(rows/block[0]), ceil(cols/block[1])]` scales, row-major.
        scale_inv: Vec<f32>,
        /// Rows x columns one scale covers.
        block: [usize; 2],
    },
}

/// A row-major `[rows, cols]` matrix in one storage format (the `W` of `y = W x`).
#[derive(Debug, Clone)]
pub struct Weight {
    rows: usize,
    cols: usize,
    format: Format,
    data: Bytes,
}

impl Weight {
    /// Wraps a 2-D checkpoint tensor; FP8 tensors need their `weight_scale_inv` and block size.
    pub fn from_view(view: TensorView, scale: Option<(TensorView, [usize; 2])>) -> Result<Self> {
        let [rows, cols] = view.shape[..] else {
            return Err(Error::Shape {
                name: view.name.clone(),
                expected: vec![0, 0],
                found: view.shape.clone(),
            });
        };
        let format = match (view.dtype, scale) {
            (DType::F32, None) => Format::F32,
            (DType::BF16, None) => Format::BF16,
            (DType::F16, None) => Format::F16,
            (DType::F8E4M3, Some((s, block))) => {
                s.expect_shape(&[rows.div_ceil(block[0]), cols.div_ceil(block[1])])?;
                if s.dtype == DType::F8E4M3 {
                    return Err(Error::Dtype {
                        name: s.name.clone(),
                        dtype: "F8_E4M3".into(),
                    });
                }
                let scale_inv = s.to_f32();
                if let Some(i) = scale_inv.iter().position(|x| !x.is_finite()) {
                    return Err(Error::Safetensors {
                        path: s.name.clone().into(),
                        message: format!("scale {i} is not finite"),
                    });
                }
                Format::Fp8E4M3 { scale_inv, block }
            }
            (DType::F8E4M3, None) => {
                return Err(Error::Dtype {
                    name: view.name.clone(),
                    dtype: "F8_E4M3 without weight_scale_inv / quantization_config".into(),
                })
            }
            (dt, Some(_)) => {
                return Err(Error::Dtype {
                    name: view.name.clone(),
                    dtype: format!("{dt:?} with a weight_scale_inv"),
                })
            }
        };
        Ok(Weight {
            rows,
            cols,
            format,
            data: view.bytes,
        })
    }

    /// A float32 matrix built in memory (tests, converted tensors).
    pub fn from_f32(rows: usize, cols: usize, values: &[f32]) -> Self {
        assert_eq!(
            values.len(),
            rows * cols,
            "Weight::from_f32: wrong number of values"
        );
        let data = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        Weight {
            rows,
            cols,
            format: Format::F32,
            data: Bytes::owned(data),
        }
    }

    /// Number of rows (outputs).
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Number of columns (inputs).
    pub fn cols(&self) -> usize {
        self.cols
    }

    /// The storage format.
    pub fn format(&self) -> &Format {
        &self.format
    }

    /// Bytes the matrix occupies (what one full pass over it reads).
    pub fn storage_bytes(&self) -> usize {
        self.data.len()
            + match &self.format {
                Format::Fp8E4M3 { scale_inv, .. } => scale_inv.len() * 4,
                _ => 0,
            }
    }

    /// Scalar reference: `out[j] = W[row, col0 + j]` for `j < out.len()`.
    pub fn decode(&self, row: usize, col0: usize, out: &mut [f32]) {
        assert!(
            row < self.rows && col0 + out.len() <= self.cols,
            "Weight::decode out of bounds"
        );
        let start = row * self.cols + col0;
        let d = &self.data[..];
        match &self.format {
            Format::F32 => {
                for (o, c) in out.iter_mut().zip(d[start * 4..].chunks_exact(4)) {
                    *o = f32::from_le_bytes([c[0], c[1], c[2], c[3]]);
                }
            }
            Format::BF16 => {
                for (o, c) in out.iter_mut().zip(d[start * 2..].chunks_exact(2)) {
                    *o = f32::from_bits((u16::from_le_bytes([c[0], c[1]]) as u32) << 16);
                }
            }
            Format::F16 => {
                for (o, c) in out.iter_mut().zip(d[start * 2..].chunks_exact(2)) {
                    *o = half::f16::from_le_bytes([c[0], c[1]]).to_f32();
                }
            }
            Format::Fp8E4M3 { scale_inv, block } => {
                let scale_cols = self.cols.div_ceil(block[1]);
                let srow = &scale_inv[(row / block[0]) * scale_cols..][..scale_cols];
                let src = &d[start..start + out.len()];
                // Walk block-column segments so the scale is looked up once per segment.
                let mut j = 0;
                while j < out.len() {
                    let col = col0 + j;
                    let seg = (block[1] - col % block[1]).min(out.len() - j);
                    let s = srow[col / block[1]];
                    for (o, &b) in out[j..j + seg].iter_mut().zip(&src[j..j + seg]) {
                        *o = FP8_E4M3_LUT[b as usize] * s;
                    }
                    j += seg;
                }
            }
        }
    }

    /// The whole matrix as float32, row-major (tests and small tensors only).
    pub fn to_f32(&self) -> Vec<f32> {
        let mut out = vec![0.0; self.rows * self.cols];
        for (r, row) in out.chunks_exact_mut(self.cols.max(1)).enumerate() {
            self.decode(r, 0, row);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fp8_known_values() {
        // Values from the OCP FP8 spec for e4m3fn.
        assert_eq!(fp8_e4m3_to_f32(0x00), 0.0);
        assert_eq!(fp8_e4m3_to_f32(0x38), 1.0);
        assert_eq!(fp8_e4m3_to_f32(0x7E), 448.0);
        assert_eq!(fp8_e4m3_to_f32(0xFE), -448.0);
        assert_eq!(fp8_e4m3_to_f32(0x01), 2f32.powi(-9));
        assert_eq!(fp8_e4m3_to_f32(0x08), 2f32.powi(-6));
        assert_eq!(fp8_e4m3_to_f32(0x3C), 1.5);
        assert_eq!(fp8_e4m3_to_f32(0xC0), -2.0);
        assert!(fp8_e4m3_to_f32(0x7F).is_nan() && fp8_e4m3_to_f32(0xFF).is_nan());
        // Monotone over the positive finite codes.
        for b in 1..0x7Eu8 {
            assert!(fp8_e4m3_to_f32(b) < fp8_e4m3_to_f32(b + 1));
        }
    }

    #[test]
    fn fp8_partial_blocks_use_the_right_scale() {
        // 3 x 5 matrix, 2 x 2 blocks: scale grid 2 x 3 with partial edge blocks.
        let rows = 3;
        let cols = 5;
        let data: Vec<u8> = vec![0x38; rows * cols]; // every weight 1.0
        let scales: Vec<f32> = vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0];
        let w = Weight {
            rows,
            cols,
            format: Format::Fp8E4M3 {
                scale_inv: scales,
                block: [2, 2],
            },
            data: Bytes::owned(data),
        };
        let got = w.to_f32();
        let want = [1., 1., 2., 2., 3., 1., 1., 2., 2., 3., 4., 4., 5., 5., 6.];
        assert_eq!(got, want);
        let mut part = [0.0; 3];
        w.decode(2, 1, &mut part);
        assert_eq!(part, [4., 5., 5.]);
    }
}
