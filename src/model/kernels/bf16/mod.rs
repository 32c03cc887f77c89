//! Mixed-precision GEMM: `C (+)= op(A) · op(B)` with bf16 inputs (f32 operands are rounded to
//! nearest even on the way in) and f32 accumulation and output.
//!
//! The tier that runs a product is picked once at run time (`tier`): AMX (`tdpbf16ps`, in
//! `amx`), AVX512-BF16 (`vdpbf16ps`, in `avx512`) or the f32 kernels on the rounded values
//! (`reference`). `GRPO_BF16_TIER=amx|avx512-bf16|f32` or `force_tier` lowers the tier, so
//! every tier a machine has can be tested and timed. Every tier computes the same products of
//! the same rounded inputs; only the f32 summation order differs.

#[cfg(target_arch = "x86_64")]
mod amx;
#[cfg(target_arch = "x86_64")]
mod avx512;
#[cfg(target_arch = "x86_64")]
mod driver;
#[cfg(target_arch = "x86_64")]
pub(crate) mod pack;
#[cfg(test)]
mod tests;
mod tier;

pub use tier::{
    amx_usable, force_tier, hardware_tier, has_avx512_bf16, lower, tier, tier_for, tier_from_env,
    Tier, ENV,
};

use rayon::prelude::*;

use super::gemm::{matmul, parallel, prepare_c, Operand};

/// How the inputs of a product are rounded before they are multiplied.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Precision {
    /// f32 inputs, f32 accumulation.
    #[default]
    F32,
    /// Inputs rounded to bf16 (nearest even), f32 accumulation.
    Bf16,
}

/// `x` rounded to bf16, nearest even (NaN stays NaN). Subnormal inputs become signed zeros,
/// as the hardware conversion (`vcvtne2ps2bf16`) makes them, so every tier and `round_into`
/// give the same bits.
#[inline]
pub fn to_bf16(x: f32) -> u16 {
    if x.is_subnormal() {
        return ((x.to_bits() >> 16) & 0x8000) as u16;
    }
    half::bf16::from_f32(x).to_bits()
}

/// The f32 value of a bf16 bit pattern (exact).
#[inline]
pub fn from_bf16(x: u16) -> f32 {
    f32::from_bits((x as u32) << 16)
}

/// `dst[i] = to_bf16(src[i])`: 32 values per `vcvtne2ps2bf16` where the CPU has it, and
/// slices of a million or more split over the rayon threads (a weight's bf16 copy is rebuilt
/// after every optimizer step).
pub fn round_into(src: &[f32], dst: &mut [u16]) {
    assert_eq!(src.len(), dst.len(), "round_into: lengths differ");
    const CHUNK: usize = 1 << 16;
    if src.len() >= 1 << 20 && rayon::current_num_threads() > 1 {
        src.par_chunks(CHUNK)
            .zip(dst.par_chunks_mut(CHUNK))
            .for_each(|(s, d)| round_serial(s, d));
    } else {
        round_serial(src, dst);
    }
}

fn round_serial(src: &[f32], dst: &mut [u16]) {
    #[cfg(target_arch = "x86_64")]
    if has_avx512_bf16() {
        // SAFETY: the CPU has AVX512-BF16 (checked); the lengths are equal.
        unsafe { round_avx512(src, dst) };
        return;
    }
    for (d, s) in dst.iter_mut().zip(src) {
        *d = to_bf16(*s);
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512bf16")]
unsafe fn round_avx512(src: &[f32], dst: &mut [u16]) {
    use std::arch::x86_64::*;
    let n = src.len().min(dst.len());
    let (s, d) = (src.as_ptr(), dst.as_mut_ptr());
    let mut i = 0;
    while i < n {
        let len = (n - i).min(32);
        let m = |l: usize| -> __mmask16 {
            if l >= 16 {
                0xffff
            } else {
                (1u16 << l) - 1
            }
        };
        let lo = _mm512_maskz_loadu_ps(m(len), s.add(i));
        let hi = _mm512_maskz_loadu_ps(m(len.saturating_sub(16)), s.add(i + 16));
        let v: __m512i = std::mem::transmute(_mm512_cvtne2ps_pbh(hi, lo));
        let mask: __mmask32 = if len == 32 {
            u32::MAX
        } else {
            (1u32 << len) - 1
        };
        _mm512_mask_storeu_epi16(d.add(i) as *mut i16, mask, v);
        i += 32;
    }
}

/// A bf16 copy of `src` (`round_into` into a new vector).
pub fn to_bf16_vec(src: &[f32]) -> Vec<u16> {
    let mut out = vec![0u16; src.len()];
    round_into(src, &mut out);
    out
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

    /// Panics unless a logical `rows × cols` operand fits in `data`.
    fn check(&self, rows: usize, cols: usize, what: &str) {
        if rows == 0 || cols == 0 {
            return;
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
    }

    /// The logical `rows × cols` matrix, rounded, as a dense row-major f32 buffer.
    fn dense(&self, rows: usize, cols: usize, what: &str) -> Vec<f32> {
        let mut out = vec![0f32; rows * cols];
        self.check(rows, cols, what);
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
/// Runs on `tier()`.
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
    matmul_bf16_on(tier(), c, ldc, a, b, m, n, k, accumulate)
}

/// `matmul_bf16` on a given tier (lowered to what the machine has).
#[allow(clippy::too_many_arguments)]
pub fn matmul_bf16_on(
    tier: Tier,
    c: &mut [f32],
    ldc: usize,
    a: Operand16,
    b: Operand16,
    m: usize,
    n: usize,
    k: usize,
    accumulate: bool,
) {
    if !prepare_c(c, ldc, m, n, k, accumulate, "matmul_bf16") {
        return;
    }
    a.check(m, k, "matmul_bf16 A");
    b.check(k, n, "matmul_bf16 B");
    let tier = lower(hardware_tier(), tier);
    #[cfg(target_arch = "x86_64")]
    if tier >= Tier::Avx512Bf16 {
        let sa = src_of(a.data, a.ld, a.trans);
        let sbt = src_of(b.data, b.ld, b.trans).t();
        let par = parallel(m, n, k);
        // SAFETY: the CPU runs the tier (lowered to the hardware's above); the checks above
        // keep every index inside the slices; `c` is a distinct `&mut`.
        unsafe {
            // Few rows fill few 32-row AMX tiles; the AVX512-BF16 kernel wastes less there.
            if tier == Tier::Amx && m > 16 {
                driver::gemm::<amx::Amx>(m, n, k, sa, sbt, c.as_mut_ptr(), ldc, accumulate, par);
            } else {
                driver::gemm::<avx512::Avx512Bf16>(
                    m,
                    n,
                    k,
                    sa,
                    sbt,
                    c.as_mut_ptr(),
                    ldc,
                    accumulate,
                    par,
                );
            }
        }
        return;
    }
    reference(c, ldc, a, b, m, n, k, accumulate)
}

/// The f32 tier: both operands rounded into dense f32 buffers, then the f32 GEMM.
#[allow(clippy::too_many_arguments)]
pub(crate) fn reference(
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

/// The logical view of a stored operand for the packing routines.
#[cfg(target_arch = "x86_64")]
pub(crate) fn src_of(data: Data, ld: usize, trans: bool) -> pack::Src {
    let ptr = match data {
        Data::F32(d) => pack::SrcPtr::F32(d.as_ptr()),
        Data::Bf16(d) => pack::SrcPtr::Bf16(d.as_ptr()),
    };
    let (rs, cs) = if trans { (1, ld) } else { (ld, 1) };
    pack::Src { ptr, rs, cs }
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
