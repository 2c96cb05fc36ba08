//! Which instruction set the kernels use, detected once at run time (never from compile flags,
//! so one build is fast on every machine), plus the portable twins of the SIMD primitives.

use std::sync::OnceLock;

use wide::f32x8;

/// An instruction-set level the kernels are written for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Isa {
    /// Plain Rust, element by element: the reference every other level is tested against.
    Scalar,
    /// `wide` vectors: whatever the build targets (SSE2 on plain x86_64, NEON on aarch64).
    Portable,
    /// x86-64 AVX2 + FMA + F16C.
    Avx2,
    /// AVX2 plus AVX-512 VNNI (256-bit, `vpdpbusd`) for the integer dot products.
    Avx512Vnni,
}

impl Isa {
    /// Every level this CPU can run, best last.
    pub fn available() -> Vec<Isa> {
        let mut v = vec![Isa::Scalar, Isa::Portable];
        #[cfg(target_arch = "x86_64")]
        {
            if has_avx2() {
                v.push(Isa::Avx2);
            }
            if has_avx512vnni() {
                v.push(Isa::Avx512Vnni);
            }
        }
        v
    }

    /// The best level for this CPU, or the one `DEEPSEEK_ISA` (scalar, portable, avx2,
    /// avx512vnni) names, if this CPU has it.
    pub fn detect() -> Isa {
        static ISA: OnceLock<Isa> = OnceLock::new();
        *ISA.get_or_init(|| {
            let avail = Isa::available();
            let wanted = std::env::var("DEEPSEEK_ISA").ok().and_then(|s| {
                match s.to_ascii_lowercase().as_str() {
                    "scalar" => Some(Isa::Scalar),
                    "portable" => Some(Isa::Portable),
                    "avx2" => Some(Isa::Avx2),
                    "avx512vnni" => Some(Isa::Avx512Vnni),
                    _ => None,
                }
            });
            match wanted {
                Some(w) if avail.contains(&w) => w,
                _ => *avail.last().unwrap_or(&Isa::Scalar),
            }
        })
    }
}

#[cfg(target_arch = "x86_64")]
fn has_avx2() -> bool {
    is_x86_feature_detected!("avx2")
        && is_x86_feature_detected!("fma")
        && is_x86_feature_detected!("f16c")
}

#[cfg(target_arch = "x86_64")]
fn has_avx512vnni() -> bool {
    has_avx2()
        && is_x86_feature_detected!("avx512f")
        && is_x86_feature_detected!("avx512bw")
        && is_x86_feature_detected!("avx512vl")
        && is_x86_feature_detected!("avx512vnni")
}

/// Scalar reference dot product with eight fixed partial sums.
#[inline]
pub fn dot_scalar(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let ac = a.chunks_exact(8);
    let bc = b.chunks_exact(8);
    let (ar, br) = (ac.remainder(), bc.remainder());
    for (x, y) in ac.zip(bc) {
        for k in 0..8 {
            acc[k] += x[k] * y[k];
        }
    }
    let mut tail = 0.0;
    for (x, y) in ar.iter().zip(br) {
        tail += x * y;
    }
    ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7])) + tail
}

/// Portable (`wide`) dot product.
#[inline]
pub fn dot_portable(a: &[f32], b: &[f32]) -> f32 {
    let (mut s0, mut s1) = (f32x8::ZERO, f32x8::ZERO);
    let ac = a.chunks_exact(16);
    let bc = b.chunks_exact(16);
    let (ar, br) = (ac.remainder(), bc.remainder());
    for (x, y) in ac.zip(bc) {
        let x0 = f32x8::from(<[f32; 8]>::try_from(&x[..8]).unwrap_or_default());
        let y0 = f32x8::from(<[f32; 8]>::try_from(&y[..8]).unwrap_or_default());
        let x1 = f32x8::from(<[f32; 8]>::try_from(&x[8..]).unwrap_or_default());
        let y1 = f32x8::from(<[f32; 8]>::try_from(&y[8..]).unwrap_or_default());
        s0 = x0.mul_add(y0, s0);
        s1 = x1.mul_add(y1, s1);
    }
    (s0 + s1).reduce_add() + dot_scalar(ar, br)
}

/// Portable (`wide`) `y += alpha * x`.
#[inline]
pub fn axpy_portable(alpha: f32, x: &[f32], y: &mut [f32]) {
    let a = f32x8::splat(alpha);
    let xc = x.chunks_exact(8);
    let xr = xc.remainder();
    let mut yc = y.chunks_exact_mut(8);
    for (xs, ys) in xc.zip(&mut yc) {
        let xv = f32x8::from(<[f32; 8]>::try_from(xs).unwrap_or_default());
        let yv = f32x8::from(<[f32; 8]>::try_from(&*ys).unwrap_or_default());
        ys.copy_from_slice(&xv.mul_add(a, yv).to_array());
    }
    for (yi, xi) in yc.into_remainder().iter_mut().zip(xr) {
        *yi += alpha * xi;
    }
}
