//! Mixed-precision GEMM: `C (+)= op(A) · op(B)` with bf16 inputs (f32 operands are rounded to
//! nearest even on the way in) and f32 accumulation and output.
//!
//! The tier that runs a product is picked once at run time: AMX (`tdpbf16ps`), AVX512-BF16
//! (`vdpbf16ps`) or the f32 kernels on the rounded values. `GRPO_BF16_TIER=avx512-bf16|f32`
//! forces a lower tier, so every tier a machine has can be tested and timed.
//!
//! This first version is the reference: it rounds both operands into f32 buffers and runs the
//! f32 GEMM. Results are what every faster tier must reproduce (up to f32 summation order).

use super::gemm::{matmul, Operand};

/// How the inputs of a product are rounded before they are multiplied.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Precision {
    /// f32 inputs, f32 accumulation.
    #[default]
    F32,
    /// Inputs rounded to bf16 (nearest even), f32 accumulation.
    Bf16,
}

/// The kernels that run a bf16 product.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Tier {
    /// The f32 kernels on bf16-rounded inputs (any CPU).
    F32,
    /// `vdpbf16ps` (AVX512-BF16: Zen 4, Cooper Lake and later).
    Avx512Bf16,
    /// `tdpbf16ps` tiles (AMX: Sapphire Rapids and later).
    Amx,
}

impl Tier {
    /// The name `grpo bench gemm --json` prints and `GRPO_BF16_TIER` takes.
    pub fn name(self) -> &'static str {
        match self {
            Tier::F32 => "f32",
            Tier::Avx512Bf16 => "avx512-bf16",
            Tier::Amx => "amx",
        }
    }
}

/// The tier bf16 products use on this machine.
pub fn tier() -> Tier {
    Tier::F32
}

/// `x` rounded to bf16, nearest even (NaN stays NaN).
#[inline]
pub fn to_bf16(x: f32) -> u16 {
    half::bf16::from_f32(x).to_bits()
}

/// The f32 value of a bf16 bit pattern (exact).
#[inline]
pub fn from_bf16(x: u16) -> f32 {
    f32::from_bits((x as u32) << 16)
}

/// `dst[i] = to_bf16(src[i])`.
pub fn round_into(src: &[f32], dst: &mut [u16]) {
    assert_eq!(src.len(), dst.len(), "round_into: lengths differ");
    for (d, s) in dst.iter_mut().zip(src) {
        *d = to_bf16(*s);
    }
}

/// The stored values of a bf16 operand: f32 (rounded when read) or bf16 bits.
#[derive(Debug, Clone, Copy)]
pub enum Data<'a> {
    F32(&'a [f32]),
    Bf16(&'a [u16]),
}

impl Data<'_> {
    fn len(&self) -> usize {
        match self {
            Data::F32(d) => d.len(),
            Data::Bf16(d) => d.len(),
        }
    }

    /// Element `i` as the bf16-rounded f32 value.
    #[inline]
    fn get(&self, i: usize) -> f32 {
        match self {
            Data::F32(d) => from_bf16(to_bf16(d[i])),
            Data::Bf16(d) => from_bf16(d[i]),
        }
    }
}

/// A row-major operand of a bf16 product: `rows × cols` with row stride `ld`, or its
/// transpose (as `gemm::Operand`).
#[derive(Debug, Clone, Copy)]
pub struct Operand16<'a> {
    pub data: Data<'a>,
    pub ld: usize,
    pub trans: bool,
}

impl<'a> Operand16<'a> {
    pub fn new(data: Data<'a>, ld: usize) -> Self {
        Operand16 {
            data,
            ld,
            trans: false,
        }
    }

    pub fn t(data: Data<'a>, ld: usize) -> Self {
        Operand16 {
            data,
            ld,
            trans: true,
        }
    }

    /// An f32 operand of the f32 GEMM, read as bf16.
    pub fn from_f32(o: Operand<'a>) -> Self {
        Operand16 {
            data: Data::F32(o.data),
            ld: o.ld,
            trans: o.trans,
        }
    }

    /// The logical `rows × cols` matrix, rounded, as a dense row-major f32 buffer.
    fn dense(&self, rows: usize, cols: usize, what: &str) -> Vec<f32> {
        let mut out = vec![0f32; rows * cols];
        if rows == 0 || cols == 0 {
            return out;
        }
        let (r, c) = if self.trans {
            (cols, rows)
        } else {
            (rows, cols)
        };
        assert!(self.ld >= c, "{what}: ld {} < {c} columns", self.ld);
        assert!(
            (r - 1) * self.ld + c <= self.data.len(),
            "{what}: {r}x{c} (ld {}) does not fit {} elements",
            self.ld,
            self.data.len()
        );
        for i in 0..rows {
            for j in 0..cols {
                let idx = if self.trans {
                    j * self.ld + i
                } else {
                    i * self.ld + j
                };
                out[i * cols + j] = self.data.get(idx);
            }
        }
        out
    }
}

/// `C = A·B` or `C += A·B` with bf16 inputs and f32 accumulation; shapes as `gemm::matmul`.
#[allow(clippy::too_many_arguments)]
pub fn matmul_bf16(
    c: &mut [f32],
    ldc: usize,
    a: Operand16,
    b: Operand16,
    m: usize,
    n: usize,
    k: usize,
    accumulate: bool,
) {
    let ad = a.dense(m, k, "matmul_bf16 A");
    let bd = b.dense(k, n, "matmul_bf16 B");
    matmul(
        c,
        ldc,
        Operand::new(&ad, k.max(1)),
        Operand::new(&bd, n.max(1)),
        m,
        n,
        k,
        accumulate,
    );
}

/// `matmul` at the given precision: the one entry point the training ops call.
#[allow(clippy::too_many_arguments)]
pub fn matmul_p(
    c: &mut [f32],
    ldc: usize,
    a: Operand,
    b: Operand,
    m: usize,
    n: usize,
    k: usize,
    accumulate: bool,
    prec: Precision,
) {
    match prec {
        Precision::F32 => matmul(c, ldc, a, b, m, n, k, accumulate),
        Precision::Bf16 => matmul_bf16(
            c,
            ldc,
            Operand16::from_f32(a),
            Operand16::from_f32(b),
            m,
            n,
            k,
            accumulate,
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rounding_is_nearest_even() {
        // 1 + 2^-8 is halfway between 1 and 1 + 2^-7: ties go to the even mantissa (1.0).
        assert_eq!(from_bf16(to_bf16(1.0 + 1.0 / 256.0)), 1.0);
        // 1 + 3·2^-8 is halfway between 1 + 2^-7 and 1 + 2^-6: ties go to 1 + 2^-6.
        assert_eq!(from_bf16(to_bf16(1.0 + 3.0 / 256.0)), 1.0 + 1.0 / 64.0);
        assert!(from_bf16(to_bf16(f32::NAN)).is_nan());
    }

    #[test]
    fn reference_matches_f64_of_rounded_inputs() {
        let (m, n, k) = (5, 7, 300);
        let a: Vec<f32> = (0..m * k).map(|i| (i as f32 * 0.37).sin()).collect();
        let b: Vec<f32> = (0..k * n).map(|i| (i as f32 * 0.11).cos()).collect();
        let mut c = vec![0f32; m * n];
        matmul_p(
            &mut c,
            n,
            Operand::new(&a, k),
            Operand::new(&b, n),
            m,
            n,
            k,
            false,
            Precision::Bf16,
        );
        for i in 0..m {
            for j in 0..n {
                let want: f64 = (0..k)
                    .map(|p| {
                        from_bf16(to_bf16(a[i * k + p])) as f64
                            * from_bf16(to_bf16(b[p * n + j])) as f64
                    })
                    .sum();
                assert!((c[i * n + j] as f64 - want).abs() < 1e-4 * (1.0 + want.abs()));
            }
        }
    }
}
