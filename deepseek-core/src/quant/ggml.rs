//! ggml's tensor types: the id, name, block size and block bytes of every type a GGUF file may
//! hold, whether or not we can compute with it (so a file's sizes can always be validated).

/// A ggml tensor type: one row of ggml's type-traits table (id, name, block size, block bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct GgmlType(u32);

/// ggml's `type_traits`: id, name, weights per block, bytes per block. Ids not listed (31-33,
/// 36-38: repacked types removed from files) are unknown. Checked against gguf-py's
/// `GGML_QUANT_SIZES` (llama.cpp 0c1e570).
const GGML_TYPES: &[(u32, &str, usize, usize)] = &[
    (0, "F32", 1, 4),
    (1, "F16", 1, 2),
    (2, "Q4_0", 32, 18),
    (3, "Q4_1", 32, 20),
    (6, "Q5_0", 32, 22),
    (7, "Q5_1", 32, 24),
    (8, "Q8_0", 32, 34),
    (9, "Q8_1", 32, 36),
    (10, "Q2_K", 256, 84),
    (11, "Q3_K", 256, 110),
    (12, "Q4_K", 256, 144),
    (13, "Q5_K", 256, 176),
    (14, "Q6_K", 256, 210),
    (15, "Q8_K", 256, 292),
    (16, "IQ2_XXS", 256, 66),
    (17, "IQ2_XS", 256, 74),
    (18, "IQ3_XXS", 256, 98),
    (19, "IQ1_S", 256, 50),
    (20, "IQ4_NL", 32, 18),
    (21, "IQ3_S", 256, 110),
    (22, "IQ2_S", 256, 82),
    (23, "IQ4_XS", 256, 136),
    (24, "I8", 1, 1),
    (25, "I16", 1, 2),
    (26, "I32", 1, 4),
    (27, "I64", 1, 8),
    (28, "F64", 1, 8),
    (29, "IQ1_M", 256, 56),
    (30, "BF16", 1, 2),
    (34, "TQ1_0", 256, 54),
    (35, "TQ2_0", 256, 66),
    (39, "MXFP4", 32, 17),
    (40, "NVFP4", 64, 36),
    (41, "Q1_0", 128, 18),
    (42, "Q2_0", 64, 18),
];

impl GgmlType {
    /// IEEE float32.
    pub const F32: GgmlType = GgmlType(0);
    /// IEEE float16.
    pub const F16: GgmlType = GgmlType(1);
    /// 32-weight blocks: f16 scale + 16 bytes of nibbles.
    pub const Q4_0: GgmlType = GgmlType(2);
    /// 32-weight blocks: f16 scale and minimum + 16 bytes of nibbles.
    pub const Q4_1: GgmlType = GgmlType(3);
    /// 32-weight blocks: f16 scale, 32 fifth bits, 16 bytes of nibbles.
    pub const Q5_0: GgmlType = GgmlType(6);
    /// 32-weight blocks: f16 scale and minimum, 32 fifth bits, 16 bytes of nibbles.
    pub const Q5_1: GgmlType = GgmlType(7);
    /// 32-weight blocks: f16 scale + 32 x i8.
    pub const Q8_0: GgmlType = GgmlType(8);
    /// 256-weight super-blocks of 2-bit quants, 4-bit scales and minimums.
    pub const Q2_K: GgmlType = GgmlType(10);
    /// 256-weight super-blocks of 3-bit quants and 6-bit scales.
    pub const Q3_K: GgmlType = GgmlType(11);
    /// 256-weight super-blocks of 4-bit quants, 6-bit scales and minimums.
    pub const Q4_K: GgmlType = GgmlType(12);
    /// 256-weight super-blocks of 5-bit quants, 6-bit scales and minimums.
    pub const Q5_K: GgmlType = GgmlType(13);
    /// 256-weight super-blocks of 6-bit quants and 8-bit scales.
    pub const Q6_K: GgmlType = GgmlType(14);
    /// 32-weight blocks of 4-bit codes into the `kvalues_iq4nl` codebook.
    pub const IQ4_NL: GgmlType = GgmlType(20);
    /// 256-weight super-blocks of 4-bit codes into `kvalues_iq4nl`, 6-bit scales.
    pub const IQ4_XS: GgmlType = GgmlType(23);
    /// bfloat16.
    pub const BF16: GgmlType = GgmlType(30);

    /// The type with ggml id `id`, if ggml defines it.
    pub fn from_id(id: u32) -> Option<Self> {
        GGML_TYPES.iter().any(|t| t.0 == id).then_some(GgmlType(id))
    }

    fn row(self) -> &'static (u32, &'static str, usize, usize) {
        GGML_TYPES
            .iter()
            .find(|t| t.0 == self.0)
            .expect("GgmlType values come from the table")
    }

    /// ggml's numeric id.
    pub fn id(self) -> u32 {
        self.0
    }

    /// ggml's name (`Q4_K`, `BF16`, ...).
    pub fn name(self) -> &'static str {
        self.row().1
    }

    /// Weights per block.
    pub fn block_size(self) -> usize {
        self.row().2
    }

    /// Bytes per block.
    pub fn block_bytes(self) -> usize {
        self.row().3
    }

    /// Bytes of `n` weights (`n` a multiple of the block size), `None` on overflow.
    pub fn bytes_for(self, n: u64) -> Option<u64> {
        (n / self.block_size() as u64).checked_mul(self.block_bytes() as u64)
    }
}

impl std::fmt::Display for GgmlType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}
