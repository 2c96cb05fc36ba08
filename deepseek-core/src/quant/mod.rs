//! Weight storage formats: how a matrix's bytes map to numbers, with the scalar reference decode.
//!
//! Owns [`Weight`] (a row-major matrix in one of the supported formats) and the exact,
//! element-by-element decoding that every fast kernel is tested against. Knows bytes, never
//! matmuls or models.

pub mod blocks;
mod ggml;
pub mod kblocks;
pub mod kquantize;

use crate::bytes::Bytes;
use crate::error::{Error, Result};

pub use blocks::{ActBlock, QK};
pub use ggml::GgmlType;
pub use kblocks::{ActBlockK, QK_K};

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
// ggml's names (`Q4_K`, `IQ4_NL`) are what users and GGUF files call these formats.
#[allow(non_camel_case_types)]
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
    /// ggml Q8_0: 32-weight blocks of f16 scale + 32 x i8 (8.5 bits per weight).
    Q8_0,
    /// Q8_0 with every 8 rows interleaved block by block and the weights stored as `w + 128`
    /// ([`blocks::interleave_x8`]): laid out at load for the integer kernels. Used for Q8_0
    /// matrices whose row count is a multiple of 8.
    Q8_0x8,
    /// ggml Q4_0: 32-weight blocks of f16 scale + 16 bytes of nibbles (4.5 bits per weight).
    Q4_0,
    /// Q4_0 with every 8 rows interleaved block by block ([`blocks::interleave_x8`]): the
    /// same bits, laid out at load so one 32-byte load feeds 8 rows of an integer dot product.
    /// Used for Q4_0 matrices whose row count is a multiple of 8.
    Q4_0x8,
    /// ggml Q4_1: 32-weight blocks of f16 scale and minimum + 16 bytes of nibbles (5 bits per
    /// weight); asymmetric, so more accurate than Q4_0.
    Q4_1,
    /// ggml Q5_0: Q4_0 with a fifth bit per weight, `(q - 16) * d` (5.5 bits per weight).
    Q5_0,
    /// ggml Q5_1: Q4_1 with a fifth bit per weight, `q * d + m` (6 bits per weight).
    Q5_1,
    /// ggml IQ4_NL: 32-weight blocks of f16 scale + 4-bit codes into the non-uniform
    /// `kvalues_iq4nl` levels (4.5 bits per weight).
    IQ4_NL,
    /// ggml Q2_K: 256-weight super-blocks of 2-bit quants with 4-bit scales and minimums per 16
    /// (2.625 bits per weight).
    Q2_K,
    /// ggml Q3_K: 256-weight super-blocks of 3-bit quants with 6-bit scales per 16 (3.44 bits).
    Q3_K,
    /// ggml Q4_K: 256-weight super-blocks of 4-bit quants with 6-bit scales and minimums per 32
    /// (4.5 bits per weight): the bulk of a Q4_K_M file.
    Q4_K,
    /// ggml Q5_K: Q4_K with a fifth bit per weight (5.5 bits per weight).
    Q5_K,
    /// ggml Q6_K: 256-weight super-blocks of 6-bit quants with 8-bit scales per 16 (6.56 bits):
    /// the wider half of a Q4_K_M file.
    Q6_K,
    /// ggml IQ4_XS: 256-weight super-blocks of 4-bit `kvalues_iq4nl` codes with 6-bit scales per
    /// 32 (4.25 bits per weight).
    IQ4_XS,
    /// Q4_K with every 8 rows interleaved super-block by super-block ([`blocks::interleave_x8`]:
    /// the 8 rows' `d` and `dmin` first, then their packed scales and nibbles 4 bytes per row at
    /// a time): the same bits, laid out at load so the kernels unpack scales and do the float
    /// work once for 8 rows. Used for Q4_K matrices whose row count is a multiple of 8.
    Q4_Kx8,
    /// Q5_0 with every 8 rows interleaved block by block as [`Format::Q4_0x8`] (the rows'
    /// fifth-bit words form the first chunk). Used for Q5_0 matrices whose row count is a
    /// multiple of 8 (llama.cpp's Q4_K fallback for rows that are not whole super-blocks).
    Q5_0x8,
    /// Q6_K with every 8 rows interleaved as [`Format::Q4_Kx8`] (the rows' `d` first, then their
    /// low nibbles, high bits and scales 4 bytes per row at a time).
    Q6_Kx8,
}

/// What a kernel turns the activations into before multiplying them with a format's rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activation {
    /// Float32 as they are: the weight row is decoded to f32 a chunk at a time.
    F32,
    /// 8-bit blocks of 32 ([`ActBlock`]) for integer dot products.
    Q8Blocks,
    /// 8-bit super-blocks of 256 with per-16 sums ([`ActBlockK`], ggml's Q8_K) for the
    /// K-quants' integer dot products.
    Q8K,
}

/// A whole-block scalar decoder: one block's bytes -> its weights.
pub type DecodeBlock = fn(&[u8], &mut [f32]);

/// Facts about one storage format, one row per format: what loaders, kernels and the GGUF
/// writer read instead of matching on the format themselves.
#[derive(Debug)]
pub struct FormatInfo {
    /// Name users know it by.
    pub name: &'static str,
    /// Weights per block along a row (1 for element formats).
    pub block: usize,
    /// Bytes one block of one row occupies.
    pub block_bytes: usize,
    /// Rows stored together (interleaved formats); kernels split work in whole groups.
    pub row_group: usize,
    /// The activation form its kernels multiply with.
    pub activation: Activation,
    /// Scalar reference: weight `i` of one block (ggml block formats).
    pub block_value: Option<fn(&[u8], usize) -> f32>,
    /// Scalar reference: a whole block at once, as ggml's `dequantize_row_*` does (formats whose
    /// per-weight reader would unpack the block's scales again for every weight).
    pub decode_block: Option<DecodeBlock>,
    /// The ggml type its rows are in a GGUF file (x8 formats: after de-interleaving).
    pub ggml: Option<GgmlType>,
    /// For an interleaved format: its rows' format and the XOR applied to their quant bytes.
    pub x8_of: Option<(Format, u8)>,
    /// Offsets of a block's f16 fields (scales, minimums): an x8 form of these rows stores them
    /// first, 8 rows per field ([`blocks::interleave_x8`]).
    pub f16_fields: &'static [usize],
}

static F32_INFO: FormatInfo = FormatInfo {
    name: "f32",
    block: 1,
    block_bytes: 4,
    row_group: 1,
    activation: Activation::F32,
    block_value: None,
    decode_block: None,
    ggml: Some(GgmlType::F32),
    x8_of: None,
    f16_fields: &[],
};
static BF16_INFO: FormatInfo = FormatInfo {
    name: "bf16",
    block: 1,
    block_bytes: 2,
    row_group: 1,
    activation: Activation::F32,
    block_value: None,
    decode_block: None,
    ggml: Some(GgmlType::BF16),
    x8_of: None,
    f16_fields: &[],
};
static F16_INFO: FormatInfo = FormatInfo {
    name: "f16",
    block: 1,
    block_bytes: 2,
    row_group: 1,
    activation: Activation::F32,
    block_value: None,
    decode_block: None,
    ggml: Some(GgmlType::F16),
    x8_of: None,
    f16_fields: &[],
};
static FP8_INFO: FormatInfo = FormatInfo {
    name: "fp8_e4m3",
    block: 1,
    block_bytes: 1,
    row_group: 1,
    activation: Activation::F32,
    block_value: None,
    decode_block: None,
    ggml: None,
    x8_of: None,
    f16_fields: &[],
};
static Q8_0_INFO: FormatInfo = FormatInfo {
    name: "q8_0",
    block: QK,
    block_bytes: blocks::Q8_0_BYTES,
    row_group: 1,
    activation: Activation::Q8Blocks,
    block_value: Some(blocks::q8_0_value),
    decode_block: None,
    ggml: Some(GgmlType::Q8_0),
    x8_of: None,
    f16_fields: &[0],
};
static Q8_0X8_INFO: FormatInfo = FormatInfo {
    name: "q8_0x8",
    block: QK,
    block_bytes: blocks::Q8_0_BYTES,
    row_group: blocks::X8,
    activation: Activation::Q8Blocks,
    block_value: None,
    decode_block: None,
    ggml: Some(GgmlType::Q8_0),
    x8_of: Some((Format::Q8_0, blocks::Q8_0X8_XOR)),
    f16_fields: &[0],
};
static Q4_0_INFO: FormatInfo = FormatInfo {
    name: "q4_0",
    block: QK,
    block_bytes: blocks::Q4_0_BYTES,
    row_group: 1,
    activation: Activation::Q8Blocks,
    block_value: Some(blocks::q4_0_value),
    decode_block: None,
    ggml: Some(GgmlType::Q4_0),
    x8_of: None,
    f16_fields: &[0],
};
static Q4_0X8_INFO: FormatInfo = FormatInfo {
    name: "q4_0x8",
    block: QK,
    block_bytes: blocks::Q4_0_BYTES,
    row_group: blocks::X8,
    activation: Activation::Q8Blocks,
    block_value: None,
    decode_block: None,
    ggml: Some(GgmlType::Q4_0),
    x8_of: Some((Format::Q4_0, 0)),
    f16_fields: &[0],
};
static Q4_1_INFO: FormatInfo = FormatInfo {
    name: "q4_1",
    block: QK,
    block_bytes: blocks::Q4_1_BYTES,
    row_group: 1,
    activation: Activation::Q8Blocks,
    block_value: Some(blocks::q4_1_value),
    decode_block: None,
    ggml: Some(GgmlType::Q4_1),
    x8_of: None,
    f16_fields: &[0, 2],
};

/// A ggml block format stored row by row: one row of the format table.
const fn ggml_rows(
    name: &'static str,
    ty: GgmlType,
    activation: Activation,
    block_value: fn(&[u8], usize) -> f32,
    decode_block: Option<DecodeBlock>,
    block_bytes: usize,
    f16_fields: &'static [usize],
) -> FormatInfo {
    let block = match activation {
        Activation::Q8K => QK_K,
        _ => QK,
    };
    FormatInfo {
        name,
        block,
        block_bytes,
        row_group: 1,
        activation,
        block_value: Some(block_value),
        decode_block,
        ggml: Some(ty),
        x8_of: None,
        f16_fields,
    }
}

static Q5_0_INFO: FormatInfo = ggml_rows(
    "q5_0",
    GgmlType::Q5_0,
    Activation::Q8Blocks,
    blocks::q5_0_value,
    None,
    blocks::Q5_0_BYTES,
    &[0],
);
static Q5_1_INFO: FormatInfo = ggml_rows(
    "q5_1",
    GgmlType::Q5_1,
    Activation::Q8Blocks,
    blocks::q5_1_value,
    None,
    blocks::Q5_1_BYTES,
    &[0, 2],
);
static IQ4_NL_INFO: FormatInfo = ggml_rows(
    "iq4_nl",
    GgmlType::IQ4_NL,
    Activation::Q8Blocks,
    blocks::iq4_nl_value,
    None,
    blocks::IQ4_NL_BYTES,
    &[0],
);
static Q2_K_INFO: FormatInfo = ggml_rows(
    "q2_k",
    GgmlType::Q2_K,
    Activation::Q8K,
    kblocks::q2_k_value,
    Some(kblocks::q2_k_decode),
    kblocks::Q2_K_BYTES,
    &[80, 82],
);
static Q3_K_INFO: FormatInfo = ggml_rows(
    "q3_k",
    GgmlType::Q3_K,
    Activation::Q8K,
    kblocks::q3_k_value,
    Some(kblocks::q3_k_decode),
    kblocks::Q3_K_BYTES,
    &[108],
);
static Q4_K_INFO: FormatInfo = ggml_rows(
    "q4_k",
    GgmlType::Q4_K,
    Activation::Q8K,
    kblocks::q4_k_value,
    Some(kblocks::q4_k_decode),
    kblocks::Q4_K_BYTES,
    &[0, 2],
);
static Q5_K_INFO: FormatInfo = ggml_rows(
    "q5_k",
    GgmlType::Q5_K,
    Activation::Q8K,
    kblocks::q5_k_value,
    Some(kblocks::q5_k_decode),
    kblocks::Q5_K_BYTES,
    &[0, 2],
);
static Q6_K_INFO: FormatInfo = ggml_rows(
    "q6_k",
    GgmlType::Q6_K,
    Activation::Q8K,
    kblocks::q6_k_value,
    Some(kblocks::q6_k_decode),
    kblocks::Q6_K_BYTES,
    &[208],
);
static IQ4_XS_INFO: FormatInfo = ggml_rows(
    "iq4_xs",
    GgmlType::IQ4_XS,
    Activation::Q8K,
    kblocks::iq4_xs_value,
    Some(kblocks::iq4_xs_decode),
    kblocks::IQ4_XS_BYTES,
    &[0],
);

static Q4_KX8_INFO: FormatInfo = FormatInfo {
    name: "q4_kx8",
    block: QK_K,
    block_bytes: kblocks::Q4_K_BYTES,
    row_group: blocks::X8,
    activation: Activation::Q8K,
    block_value: None,
    decode_block: None,
    ggml: Some(GgmlType::Q4_K),
    x8_of: Some((Format::Q4_K, 0)),
    f16_fields: &[],
};
static Q5_0X8_INFO: FormatInfo = FormatInfo {
    name: "q5_0x8",
    block: QK,
    block_bytes: blocks::Q5_0_BYTES,
    row_group: blocks::X8,
    activation: Activation::Q8Blocks,
    block_value: None,
    decode_block: None,
    ggml: Some(GgmlType::Q5_0),
    x8_of: Some((Format::Q5_0, 0)),
    f16_fields: &[],
};
static Q6_KX8_INFO: FormatInfo = FormatInfo {
    name: "q6_kx8",
    block: QK_K,
    block_bytes: kblocks::Q6_K_BYTES,
    row_group: blocks::X8,
    activation: Activation::Q8K,
    block_value: None,
    decode_block: None,
    ggml: Some(GgmlType::Q6_K),
    x8_of: Some((Format::Q6_K, 0)),
    f16_fields: &[],
};

/// Bytes of the largest ggml block we read (Q6_K), for stack buffers.
const MAX_BLOCK_BYTES: usize = kblocks::Q6_K_BYTES;

impl Format {
    /// This format's row of the format table.
    pub fn info(&self) -> &'static FormatInfo {
        match self {
            Format::F32 => &F32_INFO,
            Format::BF16 => &BF16_INFO,
            Format::F16 => &F16_INFO,
            Format::Fp8E4M3 { .. } => &FP8_INFO,
            Format::Q8_0 => &Q8_0_INFO,
            Format::Q8_0x8 => &Q8_0X8_INFO,
            Format::Q4_0 => &Q4_0_INFO,
            Format::Q4_0x8 => &Q4_0X8_INFO,
            Format::Q4_1 => &Q4_1_INFO,
            Format::Q5_0 => &Q5_0_INFO,
            Format::Q5_1 => &Q5_1_INFO,
            Format::IQ4_NL => &IQ4_NL_INFO,
            Format::Q2_K => &Q2_K_INFO,
            Format::Q3_K => &Q3_K_INFO,
            Format::Q4_K => &Q4_K_INFO,
            Format::Q5_K => &Q5_K_INFO,
            Format::Q6_K => &Q6_K_INFO,
            Format::IQ4_XS => &IQ4_XS_INFO,
            Format::Q4_Kx8 => &Q4_KX8_INFO,
            Format::Q5_0x8 => &Q5_0X8_INFO,
            Format::Q6_Kx8 => &Q6_KX8_INFO,
        }
    }

    /// The interleaved form the kernels prefer for a matrix of these rows whose row count is a
    /// multiple of 8, if there is one.
    pub fn x8_form(&self) -> Option<Format> {
        [
            Format::Q8_0x8,
            Format::Q4_0x8,
            Format::Q5_0x8,
            Format::Q4_Kx8,
            Format::Q6_Kx8,
        ]
        .into_iter()
        .find(|f| {
            f.x8_rows()
                .is_some_and(|(r, _)| std::mem::discriminant(&r) == std::mem::discriminant(self))
        })
    }

    /// The format that stores ggml type `t` row by row as a GGUF file does, if we run it.
    pub fn from_ggml(t: GgmlType) -> Option<Format> {
        [
            Format::F32,
            Format::BF16,
            Format::F16,
            Format::Q8_0,
            Format::Q4_0,
            Format::Q4_1,
            Format::Q5_0,
            Format::Q5_1,
            Format::IQ4_NL,
            Format::Q2_K,
            Format::Q3_K,
            Format::Q4_K,
            Format::Q5_K,
            Format::Q6_K,
            Format::IQ4_XS,
        ]
        .into_iter()
        .find(|f| f.info().ggml == Some(t))
    }

    /// Whether this is a ggml block format multiplied by integer dot products (32-weight
    /// blocks or 256-weight super-blocks).
    pub fn is_block(&self) -> bool {
        self.info().activation != Activation::F32
    }

    /// Rows stored together: kernels split work in whole groups.
    pub fn row_group(&self) -> usize {
        self.info().row_group
    }

    /// For an x8 format: the ggml format of its rows and the XOR applied to its quant bytes.
    pub fn x8_rows(&self) -> Option<(Format, u8)> {
        self.info().x8_of.clone()
    }

    /// The scalar reader of weight `i` of one ggml block (plain ggml block formats).
    pub fn block_value(&self) -> Option<fn(&[u8], usize) -> f32> {
        self.info().block_value
    }

    /// Bytes of one block of one row (block formats: 32 or 256 weights; element formats: one).
    pub fn block_bytes(&self) -> usize {
        self.info().block_bytes
    }

    /// Bytes one row of `cols` weights occupies, `None` unless `cols` is a whole number of
    /// blocks.
    pub fn row_bytes(&self, cols: usize) -> Option<usize> {
        let info = self.info();
        cols.is_multiple_of(info.block)
            .then(|| cols / info.block * info.block_bytes)
    }
}

/// The storage format a model's matrices are converted to at load.
// ggml's names (`Q4_K`, `Q4_K_M`) are what users and llama.cpp call these formats.
#[allow(non_camel_case_types)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum WeightDtype {
    /// Keep each tensor as the checkpoint stores it (zero-copy from the memory map).
    #[default]
    Auto,
    /// float32.
    F32,
    /// bfloat16.
    BF16,
    /// float16.
    F16,
    /// ggml Q8_0.
    Q8_0,
    /// ggml Q4_0.
    Q4_0,
    /// ggml Q4_1 (the more accurate 4-bit format: per-block minimum as well as scale).
    Q4_1,
    /// ggml Q4_K (256-weight super-blocks with 6-bit scales and minimums per 32, 4.5 bits per
    /// weight), quantised exactly as llama.cpp's `llama-quantize` does without an imatrix; rows
    /// that are not whole super-blocks take Q5_0, as llama.cpp's fallback does.
    Q4_K,
    /// ggml Q6_K (6.56 bits per weight), as llama.cpp quantises it; rows that are not whole
    /// super-blocks take Q8_0, as llama.cpp's fallback does.
    Q6_K,
    /// llama.cpp's Q4_K_M mix: Q4_K, with Q6_K for lm_head and for the `ffn_down` matrices (and
    /// GQA's `attn_v`) of the layers llama.cpp's `use_more_bits` picks (the first and last
    /// eighth and every third layer between). The per-tensor choice is the loader's dtype
    /// policy; a single matrix converted to it takes Q4_K.
    Q4_K_M,
}

impl std::str::FromStr for WeightDtype {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        Ok(match s.to_ascii_lowercase().as_str() {
            "auto" => WeightDtype::Auto,
            "f32" | "float32" => WeightDtype::F32,
            "bf16" | "bfloat16" => WeightDtype::BF16,
            "f16" | "float16" => WeightDtype::F16,
            "q8_0" => WeightDtype::Q8_0,
            "q4_0" => WeightDtype::Q4_0,
            "q4_1" => WeightDtype::Q4_1,
            "q4_k" => WeightDtype::Q4_K,
            "q6_k" => WeightDtype::Q6_K,
            "q4_k_m" => WeightDtype::Q4_K_M,
            other => {
                return Err(Error::InvalidArgument(format!(
                    "unknown dtype {other:?} (supported: auto, f32, bf16, f16, q8_0, q4_0, q4_1, \
                     q4_k, q6_k, q4_k_m)"
                )))
            }
        })
    }
}

/// Writes one row of float32 values in a non-scaled `format`.
fn encode_row(format: &Format, row: &[f32], out: &mut [u8]) {
    match format {
        Format::F32 => out
            .chunks_exact_mut(4)
            .zip(row)
            .for_each(|(o, v)| o.copy_from_slice(&v.to_le_bytes())),
        Format::BF16 => out
            .chunks_exact_mut(2)
            .zip(row)
            .for_each(|(o, v)| o.copy_from_slice(&half::bf16::from_f32(*v).to_le_bytes())),
        Format::F16 => out
            .chunks_exact_mut(2)
            .zip(row)
            .for_each(|(o, v)| o.copy_from_slice(&half::f16::from_f32(*v).to_le_bytes())),
        Format::Q8_0 => blocks::quantize_row_q8_0(row, out),
        Format::Q4_0 => blocks::quantize_row_q4_0(row, out),
        Format::Q4_1 => blocks::quantize_row_q4_1(row, out),
        Format::Q5_0 => kquantize::quantize_row_q5_0(row, out),
        Format::Q4_K => kquantize::quantize_row_q4_k(row, out),
        Format::Q6_K => kquantize::quantize_row_q6_k(row, out),
        other => unreachable!("{} is only ever read as stored", other.info().name),
    }
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
    /// A `[rows, cols]` matrix of `format` over `data`, checked to be exactly the bytes the
    /// format needs (FP8: and one finite scale per block).
    pub fn new(rows: usize, cols: usize, format: Format, data: Bytes) -> Result<Self> {
        let need = format.row_bytes(cols).and_then(|r| r.checked_mul(rows));
        if need != Some(data.len()) {
            return Err(Error::InvalidArgument(format!(
                "a {rows}x{cols} {} matrix cannot be {} bytes",
                format.info().name,
                data.len()
            )));
        }
        if !rows.is_multiple_of(format.row_group()) {
            return Err(Error::InvalidArgument(format!(
                "{} needs a multiple of {} rows, found {rows}",
                format.info().name,
                format.row_group()
            )));
        }
        if let Format::Fp8E4M3 { scale_inv, block } = &format {
            if block[0] == 0
                || block[1] == 0
                || scale_inv.len() != rows.div_ceil(block[0]) * cols.div_ceil(block[1])
            {
                return Err(Error::InvalidArgument(format!(
                    "fp8 matrix {rows}x{cols}: {} scales do not fit blocks {block:?}",
                    scale_inv.len()
                )));
            }
            if let Some(i) = scale_inv.iter().position(|x| !x.is_finite()) {
                return Err(Error::InvalidArgument(format!(
                    "fp8 matrix {rows}x{cols}: scale {i} is not finite"
                )));
            }
        }
        Ok(Weight {
            rows,
            cols,
            format,
            data,
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

    /// An FP8 e4m3fn matrix from raw bytes and its `[ceil(rows/b0), ceil(cols/b1)]` scales.
    pub fn fp8_from_parts(
        rows: usize,
        cols: usize,
        data: Vec<u8>,
        scale_inv: Vec<f32>,
        block: [usize; 2],
    ) -> Result<Self> {
        Weight::new(
            rows,
            cols,
            Format::Fp8E4M3 { scale_inv, block },
            Bytes::owned(data),
        )
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
            _ => self.decode_blocks(row, col0, out),
        }
    }

    /// [`decode`](Self::decode) for the ggml block formats, stored row by row or 8 rows
    /// interleaved: whole blocks go through the format's block decoder where it has one,
    /// partial blocks through a buffer; an interleaved row's block is gathered first.
    fn decode_blocks(&self, row: usize, col0: usize, out: &mut [f32]) {
        let x8 = self.format.x8_rows();
        let info = x8.as_ref().map_or(&self.format, |(f, _)| f).info();
        let (block, bytes) = (info.block, info.block_bytes);
        let value = info.block_value.expect("a ggml block format");
        let nb = self.cols / block;
        let mut gathered = [0u8; MAX_BLOCK_BYTES];
        let mut buf = [0f32; QK_K];
        let mut j = 0;
        while j < out.len() {
            let c = col0 + j;
            let (bi, off) = (c / block, c % block);
            let n = (block - off).min(out.len() - j);
            let b: &[u8] = match &x8 {
                None => &self.data[(row * nb + bi) * bytes..][..bytes],
                Some((_, xor)) => {
                    let group = self.group_bytes(row / blocks::X8);
                    let xb = &group[bi * blocks::X8 * bytes..][..blocks::X8 * bytes];
                    let g = &mut gathered[..bytes];
                    blocks::x8_row_block(xb, row % blocks::X8, info.f16_fields, *xor, g);
                    g
                }
            };
            match info.decode_block {
                Some(decode) if n == block => decode(b, &mut out[j..j + block]),
                Some(decode) => {
                    decode(b, &mut buf[..block]);
                    out[j..j + n].copy_from_slice(&buf[off..off + n]);
                }
                None => {
                    for (k, o) in out[j..j + n].iter_mut().enumerate() {
                        *o = value(b, off + k);
                    }
                }
            }
            j += n;
        }
    }

    /// The bytes of row `row` (block formats: whole blocks). Not for interleaved formats, whose
    /// rows are not contiguous (see [`group_bytes`](Self::group_bytes)).
    pub fn row_bytes(&self, row: usize) -> &[u8] {
        assert_eq!(
            self.format.row_group(),
            1,
            "row_bytes of an interleaved matrix"
        );
        let per_row = self.bytes_per_row();
        &self.data[row * per_row..(row + 1) * per_row]
    }

    /// The bytes of row group `g` of an interleaved format (rows `g * row_group()..`).
    pub fn group_bytes(&self, g: usize) -> &[u8] {
        let per_group = self.bytes_per_row() * self.format.row_group();
        &self.data[g * per_group..(g + 1) * per_group]
    }

    /// Bytes one row occupies.
    pub fn bytes_per_row(&self) -> usize {
        self.format
            .row_bytes(self.cols)
            .expect("a Weight's columns are whole blocks")
    }

    /// The raw data bytes.
    pub fn data(&self) -> &[u8] {
        &self.data
    }

    /// This matrix converted to `target`, row by row (no full float32 copy is ever made).
    /// Block formats need `cols` to be a multiple of 32; other matrices keep their format.
    pub fn convert(&self, target: WeightDtype) -> Weight {
        self.convert_with_threads(target, 1)
    }

    /// [`convert`](Self::convert) on up to `threads` threads.
    pub fn convert_with_threads(&self, target: WeightDtype, threads: usize) -> Weight {
        // Stored ggml rows keep their bits but take the interleaved layout the kernels want.
        let (format, per_row): (Format, usize) = match target {
            WeightDtype::Auto => match self.format.x8_form() {
                Some(x8) if self.rows.is_multiple_of(blocks::X8) => (x8, self.bytes_per_row()),
                _ => return self.clone(),
            },
            WeightDtype::F32 => (Format::F32, self.cols * 4),
            WeightDtype::BF16 => (Format::BF16, self.cols * 2),
            WeightDtype::F16 => (Format::F16, self.cols * 2),
            WeightDtype::Q8_0 if self.cols.is_multiple_of(QK) => {
                let format = if self.rows.is_multiple_of(blocks::X8) {
                    Format::Q8_0x8
                } else {
                    Format::Q8_0
                };
                (format, self.cols / QK * blocks::Q8_0_BYTES)
            }
            WeightDtype::Q4_0 if self.cols.is_multiple_of(QK) => {
                let format = if self.rows.is_multiple_of(blocks::X8) {
                    Format::Q4_0x8
                } else {
                    Format::Q4_0
                };
                (format, self.cols / QK * blocks::Q4_0_BYTES)
            }
            WeightDtype::Q4_1 if self.cols.is_multiple_of(QK) => {
                (Format::Q4_1, self.cols / QK * blocks::Q4_1_BYTES)
            }
            WeightDtype::Q4_K | WeightDtype::Q4_K_M if self.cols.is_multiple_of(QK_K) => {
                let x8 = self.rows.is_multiple_of(blocks::X8);
                let format = if x8 { Format::Q4_Kx8 } else { Format::Q4_K };
                (format, self.cols / QK_K * kblocks::Q4_K_BYTES)
            }
            WeightDtype::Q6_K if self.cols.is_multiple_of(QK_K) => {
                let x8 = self.rows.is_multiple_of(blocks::X8);
                let format = if x8 { Format::Q6_Kx8 } else { Format::Q6_K };
                (format, self.cols / QK_K * kblocks::Q6_K_BYTES)
            }
            // llama.cpp's fallbacks for rows that are not whole super-blocks.
            WeightDtype::Q4_K | WeightDtype::Q4_K_M if self.cols.is_multiple_of(QK) => {
                let x8 = self.rows.is_multiple_of(blocks::X8);
                let format = if x8 { Format::Q5_0x8 } else { Format::Q5_0 };
                (format, self.cols / QK * blocks::Q5_0_BYTES)
            }
            WeightDtype::Q6_K if self.cols.is_multiple_of(QK) => {
                let x8 = self.rows.is_multiple_of(blocks::X8);
                let format = if x8 { Format::Q8_0x8 } else { Format::Q8_0 };
                (format, self.cols / QK * blocks::Q8_0_BYTES)
            }
            WeightDtype::Q8_0
            | WeightDtype::Q4_0
            | WeightDtype::Q4_1
            | WeightDtype::Q4_K
            | WeightDtype::Q6_K
            | WeightDtype::Q4_K_M => return self.clone(),
        };
        if std::mem::discriminant(&format) == std::mem::discriminant(&self.format)
            && !matches!(format, Format::Fp8E4M3 { .. })
        {
            return self.clone();
        }
        // Rows convert in groups of `unit` (interleaved formats are written a group at a time).
        let unit = format.row_group();
        let data = Bytes::filled(self.rows * per_row, |out| {
            // Large matrices convert on several threads (load time only; groups are independent).
            let threads = if self.rows * self.cols >= 1 << 20 {
                threads.max(1)
            } else {
                1
            };
            let units_per = (self.rows / unit).div_ceil(threads).max(1);
            let chunk_bytes = (units_per * unit * per_row).max(1);
            std::thread::scope(|scope| {
                for (k, chunk) in out.chunks_mut(chunk_bytes).enumerate() {
                    let format = &format;
                    let mut run = move || {
                        let mut row = vec![0f32; self.cols];
                        let mut rows = vec![0u8; unit * per_row];
                        let x8 = format.x8_rows();
                        let row_format = x8.as_ref().map_or(format, |(f, _)| f);
                        // Interleaving rows already in the row format copies their bytes: a
                        // decode and re-quantisation would move Q4_0 values to another grid.
                        let same_rows = std::mem::discriminant(row_format)
                            == std::mem::discriminant(&self.format);
                        for (i, o) in chunk.chunks_exact_mut((unit * per_row).max(1)).enumerate() {
                            for (r, ro) in rows.chunks_exact_mut(per_row.max(1)).enumerate() {
                                let at = (k * units_per + i) * unit + r;
                                if same_rows {
                                    ro.copy_from_slice(self.row_bytes(at));
                                } else {
                                    self.decode(at, 0, &mut row);
                                    encode_row(row_format, &row, ro);
                                }
                            }
                            match &x8 {
                                Some((f, xor)) => {
                                    let r =
                                        std::array::from_fn(|r| &rows[r * per_row..][..per_row]);
                                    let info = f.info();
                                    blocks::interleave_x8(
                                        &r,
                                        info.f16_fields,
                                        info.block_bytes,
                                        *xor,
                                        o,
                                    );
                                }
                                None => o.copy_from_slice(&rows),
                            }
                        }
                    };
                    if threads > 1 {
                        scope.spawn(run);
                    } else {
                        run();
                    }
                }
            });
        });
        Weight {
            rows: self.rows,
            cols: self.cols,
            format,
            data,
        }
    }

    /// The matrix as a GGUF file stores it: its ggml type and row-major ggml rows (x8 formats
    /// are de-interleaved); `None` for formats ggml has no type for (FP8).
    pub fn to_ggml(&self) -> Option<(GgmlType, std::borrow::Cow<'_, [u8]>)> {
        let info = self.format.info();
        let ty = info.ggml?;
        let Some((rows_format, xor)) = &info.x8_of else {
            return Some((ty, std::borrow::Cow::Borrowed(&self.data[..])));
        };
        let per_row = self.bytes_per_row();
        let bytes = rows_format.block_bytes();
        let mut out = vec![0u8; self.rows * per_row];
        for (r, row) in out.chunks_exact_mut(per_row.max(1)).enumerate() {
            let group = self.group_bytes(r / blocks::X8);
            for (b, ob) in row.chunks_exact_mut(bytes).enumerate() {
                let block = &group[b * blocks::X8 * bytes..][..blocks::X8 * bytes];
                let fields = rows_format.info().f16_fields;
                blocks::x8_row_block(block, r % blocks::X8, fields, *xor, ob);
            }
        }
        Some((ty, std::borrow::Cow::Owned(out)))
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

    #[test]
    fn threaded_conversion_equals_serial() {
        // Big enough (>= 2^20 weights) to take the threaded path, with rows not divisible by 3.
        let (rows, cols) = (1031, 1024);
        let v: Vec<f32> = (0..rows * cols)
            .map(|i| ((i * 7919 % 1000) as f32 - 500.0) / 97.0)
            .collect();
        let w = Weight::from_f32(rows, cols, &v);
        for target in [
            WeightDtype::BF16,
            WeightDtype::Q8_0,
            WeightDtype::Q4_0,
            WeightDtype::Q4_1,
            WeightDtype::Q4_K,
            WeightDtype::Q6_K,
        ] {
            let (a, b) = (w.convert(target), w.convert_with_threads(target, 3));
            assert_eq!(a.data(), b.data(), "{target:?}");
        }
    }
}
