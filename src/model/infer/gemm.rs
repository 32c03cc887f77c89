//! `y (+)= x · Wᵀ + b` for the few-row products of decoding: `x` is `m × k` (a handful to a
//! few dozen rows), `W` a weight matrix stored `n × k` as checkpoints store it.
//!
//! A decode step multiplies a few rows by every weight matrix once, so the cost is reading
//! `W`: the kernel streams each weight row exactly once per block of 64 input rows, takes dot
//! products along the contiguous `k` axis (no packing, no transposed copy), and writes the
//! bias and the residual add in the same pass. General GEMMs (many rows) go elsewhere.

use crate::model::kernels::nt_tiles::{split_columns, store_tile, SendPtr, MR, M_BLOCK, NR};

/// `y[i, j] = (accumulate ? y[i, j] : 0) + Σ_p x[i, p]·w[j, p] + bias[j]` for `x` `m × k`,
/// `w` `n × k`, `y` `m × n`, all row-major and contiguous.
#[allow(clippy::too_many_arguments)]
pub(crate) fn gemm_nt(
    x: &[f32],
    m: usize,
    k: usize,
    w: &[f32],
    n: usize,
    bias: Option<&[f32]>,
    y: &mut [f32],
    accumulate: bool,
) {
    assert!(x.len() >= m * k, "gemm_nt: x too short");
    assert!(w.len() >= n * k, "gemm_nt: w too short");
    assert!(y.len() >= m * n, "gemm_nt: y too short");
    if let Some(b) = bias {
        assert!(b.len() >= n, "gemm_nt: bias too short");
    }
    if m == 0 || n == 0 {
        return;
    }
    let out = SendPtr(y.as_mut_ptr());
    // SAFETY: every (row, column) written lies in `y` (checked above) and the column ranges
    // of different tasks are disjoint.
    split_columns(m * n * k, n, |n0, n1| unsafe {
        block(x, m, k, w, n, n0, n1, bias, out, accumulate)
    });
}

/// Columns `n0..n1` of the product.
///
/// # Safety
/// `y` must point to `m × n` writable floats that no other thread touches in these columns.
#[allow(clippy::too_many_arguments)]
unsafe fn block(
    x: &[f32],
    m: usize,
    k: usize,
    w: &[f32],
    n: usize,
    n0: usize,
    n1: usize,
    bias: Option<&[f32]>,
    y: SendPtr,
    accumulate: bool,
) {
    #[cfg(target_arch = "x86_64")]
    if super::rows::has_avx512() {
        return block_avx512(x, m, k, w, n, n0, n1, bias, y, accumulate);
    }
    block_generic(x, m, k, w, n, n0, n1, bias, y, accumulate)
}

/// Portable tiles: eight-lane partial sums the compiler vectorises for the target it builds.
#[allow(clippy::too_many_arguments)]
unsafe fn block_generic(
    x: &[f32],
    m: usize,
    k: usize,
    w: &[f32],
    n: usize,
    n0: usize,
    n1: usize,
    bias: Option<&[f32]>,
    y: SendPtr,
    accumulate: bool,
) {
    const L: usize = 8;
    let kv = k / L * L;
    for mb in (0..m).step_by(M_BLOCK) {
        let me = (mb + M_BLOCK).min(m);
        for j0 in (n0..n1).step_by(NR) {
            let nr = NR.min(n1 - j0);
            for i0 in (mb..me).step_by(MR) {
                let mr = MR.min(me - i0);
                let mut acc = [[[0f32; L]; NR]; MR];
                for p in (0..kv).step_by(L) {
                    for (i, acc_i) in acc.iter_mut().enumerate().take(mr) {
                        let xr = &x[(i0 + i) * k + p..(i0 + i) * k + p + L];
                        for (j, a) in acc_i.iter_mut().enumerate().take(nr) {
                            let wr = &w[(j0 + j) * k + p..(j0 + j) * k + p + L];
                            for l in 0..L {
                                a[l] += xr[l] * wr[l];
                            }
                        }
                    }
                }
                let mut sums = [[0f32; NR]; MR];
                for i in 0..mr {
                    for j in 0..nr {
                        let mut s: f32 = acc[i][j].iter().sum();
                        for p in kv..k {
                            s += x[(i0 + i) * k + p] * w[(j0 + j) * k + p];
                        }
                        sums[i][j] = s;
                    }
                }
                store_tile(
                    sums.as_flattened(),
                    NR,
                    mr,
                    nr,
                    i0,
                    j0,
                    n,
                    bias,
                    y,
                    accumulate,
                );
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[allow(clippy::too_many_arguments)]
unsafe fn block_avx512(
    x: &[f32],
    m: usize,
    k: usize,
    w: &[f32],
    n: usize,
    n0: usize,
    n1: usize,
    bias: Option<&[f32]>,
    y: SendPtr,
    accumulate: bool,
) {
    let (xp, wp) = (x.as_ptr(), w.as_ptr());
    for mb in (0..m).step_by(M_BLOCK) {
        let me = (mb + M_BLOCK).min(m);
        for j0 in (n0..n1).step_by(NR) {
            let nr = NR.min(n1 - j0);
            let wt = wp.add(j0 * k);
            for i0 in (mb..me).step_by(MR) {
                let mr = MR.min(me - i0);
                let xt = xp.add(i0 * k);
                let sums = match (mr, nr) {
                    (3, 8) => avx512::tile::<3, 8>(xt, wt, k),
                    (3, 7) => avx512::tile::<3, 7>(xt, wt, k),
                    (3, 6) => avx512::tile::<3, 6>(xt, wt, k),
                    (3, 5) => avx512::tile::<3, 5>(xt, wt, k),
                    (3, 4) => avx512::tile::<3, 4>(xt, wt, k),
                    (3, 3) => avx512::tile::<3, 3>(xt, wt, k),
                    (3, 2) => avx512::tile::<3, 2>(xt, wt, k),
                    (3, 1) => avx512::tile::<3, 1>(xt, wt, k),
                    (2, 8) => avx512::tile::<2, 8>(xt, wt, k),
                    (2, 7) => avx512::tile::<2, 7>(xt, wt, k),
                    (2, 6) => avx512::tile::<2, 6>(xt, wt, k),
                    (2, 5) => avx512::tile::<2, 5>(xt, wt, k),
                    (2, 4) => avx512::tile::<2, 4>(xt, wt, k),
                    (2, 3) => avx512::tile::<2, 3>(xt, wt, k),
                    (2, 2) => avx512::tile::<2, 2>(xt, wt, k),
                    (2, 1) => avx512::tile::<2, 1>(xt, wt, k),
                    (1, 8) => avx512::tile::<1, 8>(xt, wt, k),
                    (1, 7) => avx512::tile::<1, 7>(xt, wt, k),
                    (1, 6) => avx512::tile::<1, 6>(xt, wt, k),
                    (1, 5) => avx512::tile::<1, 5>(xt, wt, k),
                    (1, 4) => avx512::tile::<1, 4>(xt, wt, k),
                    (1, 3) => avx512::tile::<1, 3>(xt, wt, k),
                    (1, 2) => avx512::tile::<1, 2>(xt, wt, k),
                    _ => avx512::tile::<1, 1>(xt, wt, k),
                };
                store_tile(
                    sums.as_flattened(),
                    NR,
                    mr,
                    nr,
                    i0,
                    j0,
                    n,
                    bias,
                    y,
                    accumulate,
                );
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use super::{MR, NR};
    use std::arch::x86_64::*;

    /// `MR_ × NR_` dot products of length `k` between rows of `x` (stride `k`) and rows of
    /// `w` (stride `k`); entries outside the tile are 0.
    #[inline]
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn tile<const MR_: usize, const NR_: usize>(
        x: *const f32,
        w: *const f32,
        k: usize,
    ) -> [[f32; NR]; MR] {
        let mut acc = [[_mm512_setzero_ps(); NR_]; MR_];
        let mut p = 0;
        // MR_ input vectors stay in registers while the weight rows stream past, one vector
        // at a time (MR_ · NR_ + MR_ + 1 <= 32 registers, no spills).
        while p + 16 <= k {
            let mut xv = [_mm512_setzero_ps(); MR_];
            for (i, v) in xv.iter_mut().enumerate() {
                *v = _mm512_loadu_ps(x.add(i * k + p));
            }
            for j in 0..NR_ {
                let wj = _mm512_loadu_ps(w.add(j * k + p));
                for (acc_i, &xi) in acc.iter_mut().zip(&xv) {
                    acc_i[j] = _mm512_fmadd_ps(xi, wj, acc_i[j]);
                }
            }
            p += 16;
        }
        if p < k {
            let mask: __mmask16 = ((1u32 << (k - p)) - 1) as __mmask16;
            let mut wv = [_mm512_setzero_ps(); NR_];
            for (j, v) in wv.iter_mut().enumerate() {
                *v = _mm512_maskz_loadu_ps(mask, w.add(j * k + p));
            }
            for (i, acc_i) in acc.iter_mut().enumerate() {
                let xv = _mm512_maskz_loadu_ps(mask, x.add(i * k + p));
                for (a, &wj) in acc_i.iter_mut().zip(&wv) {
                    *a = _mm512_fmadd_ps(xv, wj, *a);
                }
            }
        }
        let mut out = [[0f32; NR]; MR];
        let z = _mm512_setzero_ps();
        for (i, acc_i) in acc.iter().enumerate() {
            let g = |j: usize| if j < NR_ { acc_i[j] } else { z };
            let lo = hsum4(g(0), g(1), g(2), g(3));
            _mm_storeu_ps(out[i].as_mut_ptr(), lo);
            if NR_ > 4 {
                let hi = hsum4(g(4), g(5), g(6), g(7));
                _mm_storeu_ps(out[i].as_mut_ptr().add(4), hi);
            }
        }
        out
    }

    /// The four horizontal sums of `a, b, c, d` as one 4-lane vector, in 11 instructions
    /// instead of four separate reductions.
    #[inline]
    #[target_feature(enable = "avx512f")]
    unsafe fn hsum4(a: __m512, b: __m512, c: __m512, d: __m512) -> __m128 {
        // Within each 128-bit lane: [a0+a2, b0+b2, a1+a3, b1+b3].
        let ab = _mm512_add_ps(_mm512_unpacklo_ps(a, b), _mm512_unpackhi_ps(a, b));
        let cd = _mm512_add_ps(_mm512_unpacklo_ps(c, d), _mm512_unpackhi_ps(c, d));
        // Within each 128-bit lane: [Σa, Σb, Σc, Σd] over that lane.
        let abd = _mm512_castps_pd(ab);
        let cdd = _mm512_castps_pd(cd);
        let s = _mm512_add_ps(
            _mm512_castpd_ps(_mm512_unpacklo_pd(abd, cdd)),
            _mm512_castpd_ps(_mm512_unpackhi_pd(abd, cdd)),
        );
        // Add the four 128-bit lanes.
        let lo = _mm512_castps512_ps256(s);
        let hi = _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(s), 1));
        let t = _mm256_add_ps(lo, hi);
        _mm_add_ps(_mm256_castps256_ps128(t), _mm256_extractf128_ps(t, 1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naive(x: &[f32], m: usize, k: usize, w: &[f32], n: usize) -> Vec<f64> {
        let mut y = vec![0f64; m * n];
        for i in 0..m {
            for j in 0..n {
                y[i * n + j] = (0..k)
                    .map(|p| f64::from(x[i * k + p]) * f64::from(w[j * k + p]))
                    .sum();
            }
        }
        y
    }

    fn data(len: usize, seed: u32) -> Vec<f32> {
        (0..len)
            .map(|i| (((i as u32).wrapping_mul(2654435761) ^ seed) % 1000) as f32 / 500.0 - 1.0)
            .collect()
    }

    #[test]
    fn matches_naive_on_every_edge_shape_with_bias_and_accumulate() {
        for &(m, n, k) in &[
            (1, 1, 1),
            (3, 5, 17),
            (4, 4, 16),
            (7, 9, 33),
            (65, 70, 100),
            (2, 300, 64),
            (130, 11, 7),
        ] {
            let x = data(m * k, 1);
            let w = data(n * k, 2);
            let b = data(n, 3);
            let want = naive(&x, m, k, &w, n);
            let mut y = vec![f32::NAN; m * n];
            gemm_nt(&x, m, k, &w, n, None, &mut y, false);
            for (a, e) in y.iter().zip(&want) {
                assert!((f64::from(*a) - e).abs() < 1e-4, "{m}x{n}x{k}: {a} vs {e}");
            }
            let mut y = vec![0.5f32; m * n];
            gemm_nt(&x, m, k, &w, n, Some(&b), &mut y, true);
            for (idx, (a, e)) in y.iter().zip(&want).enumerate() {
                let e = e + 0.5 + f64::from(b[idx % n]);
                assert!(
                    (f64::from(*a) - e).abs() < 1e-4,
                    "{m}x{n}x{k} acc: {a} vs {e}"
                );
            }
            let mut y2 = vec![0f32; m * n];
            // SAFETY: y2 holds m × n floats and this thread alone writes it.
            unsafe { block_generic(&x, m, k, &w, n, 0, n, None, SendPtr(y2.as_mut_ptr()), false) };
            for (a, e) in y2.iter().zip(&want) {
                assert!((f64::from(*a) - e).abs() < 1e-4, "generic {m}x{n}x{k}");
            }
        }
    }
}
