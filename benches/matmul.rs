//! Matrix-vector (decode) and matrix-matrix (prefill) throughput per weight format.
//!
//! Reported as weight bytes per second, to read against the memory-bandwidth roofline (matvec is
//! bandwidth-bound: a 4096 x 4096 matrix never fits in cache). `cargo bench --bench matmul`.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use deepseek_core::bytes::Bytes;
use deepseek_core::kernels::{matmul, Pool};
use deepseek_core::quant::{Format, Weight};
use deepseek_core::WeightDtype;

const ROWS: usize = 4096;
const COLS: usize = 4096;

fn random(n: usize, mut seed: u64) -> Vec<f32> {
    (0..n)
        .map(|_| {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((seed >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

/// A matrix of a format we only read as stored (no quantiser of ours), in the form loading
/// gives it (8-row groups interleaved for Q4_K and Q6_K): random quant bits with finite f16
/// scales. Kernel speed does not depend on the values, only on the layout.
fn stored(format: Format, seed: u64) -> Weight {
    let bytes = format.row_bytes(COLS).expect("whole blocks") * ROWS;
    let mut data: Vec<u8> = random(bytes, seed)
        .iter()
        .map(|v| (v.to_bits() >> 9) as u8)
        .collect();
    for b in data.chunks_exact_mut(format.block_bytes()) {
        for &at in format.info().f16_fields {
            b[at..at + 2].copy_from_slice(&half::f16::from_f32(0.004).to_le_bytes());
        }
    }
    Weight::new(ROWS, COLS, format, Bytes::owned(data))
        .expect("stored weight")
        .convert(WeightDtype::Auto)
}

fn formats() -> Vec<(&'static str, Weight)> {
    let base = Weight::from_f32(ROWS, COLS, &random(ROWS * COLS, 1));
    let fp8: Vec<u8> = (0..ROWS * COLS)
        .map(|i| (i * 2654435761 % 251) as u8 & 0x7E)
        .collect();
    let scales = random((ROWS / 128) * (COLS / 128), 2);
    vec![
        ("bf16", base.convert(WeightDtype::BF16)),
        ("f16", base.convert(WeightDtype::F16)),
        (
            "fp8",
            Weight::fp8_from_parts(ROWS, COLS, fp8, scales, [128, 128]).expect("fp8 weight"),
        ),
        ("q8_0", base.convert(WeightDtype::Q8_0)),
        ("q4_0", base.convert(WeightDtype::Q4_0)),
        ("q4_1", base.convert(WeightDtype::Q4_1)),
        ("q5_0", stored(Format::Q5_0, 4)),
        ("q5_1", stored(Format::Q5_1, 5)),
        ("iq4_nl", stored(Format::IQ4_NL, 6)),
        ("q2_k", stored(Format::Q2_K, 7)),
        ("q3_k", stored(Format::Q3_K, 8)),
        ("q4_k", stored(Format::Q4_K, 9)),
        ("q5_k", stored(Format::Q5_K, 10)),
        ("q6_k", stored(Format::Q6_K, 11)),
        ("iq4_xs", stored(Format::IQ4_XS, 12)),
        ("f32", base),
    ]
}

fn bench(c: &mut Criterion) {
    let weights = formats();
    for threads in [1, 2] {
        let pool = Pool::new(threads).expect("pool");
        for n in [1usize, 32] {
            let mut g = c.benchmark_group(format!("matmul_n{n}_t{threads}"));
            g.sample_size(20);
            let x = random(n * COLS, 3);
            let mut y = vec![0f32; n * ROWS];
            for (name, w) in &weights {
                g.throughput(Throughput::Bytes(w.storage_bytes() as u64));
                g.bench_with_input(BenchmarkId::from_parameter(name), w, |b, w| {
                    b.iter(|| matmul(&pool, w, 0..ROWS, &x, n, &mut y))
                });
            }
            g.finish();
        }
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
