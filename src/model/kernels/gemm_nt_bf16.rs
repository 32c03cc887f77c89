//! `y (+)= x · Wᵀ + b` for decoding in bf16: `x` is `m × k` f32 (a few rows, rounded to bf16
//! once per call), `W` an `n × k` weight stored as bf16 bits (its copy from `bf16::round_into`).
//!
//! As `infer::gemm::gemm_nt`, a decode step is bound by reading `W`; bf16 halves those bytes.
//! Each weight row streams once per block of 64 input rows, and `vdpbf16ps` takes the dot
//! products along the contiguous `k` axis (32 values per instruction) into f32 lanes. Column
//! ranges run on the rayon threads. Without AVX512-BF16 a portable loop computes the same sums.

use super::bf16::{from_bf16, has_avx512_bf16, round_into};
use super::nt_tiles::{split_columns, store_tile, SendPtr, MR, M_BLOCK, NR};

/// `y[i, j] = (accumulate ? y[i, j] : 0) + Σ_p bf16(x[i, p])·w[j, p] + bias[j]` for `x`
/// `m × k` f32, `w` `n × k` bf16 bits, `y` `m × n` f32, all row-major and contiguous.
#[allow(clippy::too_many_arguments)]
pub fn gemm_nt_bf16(
    x: &[f32],
    m: usize,
    k: usize,
    w: &[u16],
    n: usize,
    bias: Option<&[f32]>,
    y: &mut [f32],
    accumulate: bool,
) {
    assert!(x.len() >= m * k, "gemm_nt_bf16: x too short");
    assert!(w.len() >= n * k, "gemm_nt_bf16: w too short");
    assert!(y.len() >= m * n, "gemm_nt_bf16: y too short");
    if let Some(b) = bias {
        assert!(b.len() >= n, "gemm_nt_bf16: bias too short");
    }
    if m == 0 || n == 0 {
        return;
    }
    let out = SendPtr(y.as_mut_ptr());
    #[cfg(target_arch = "x86_64")]
    if has_avx512_bf16() {
        // Input rows per tile: 8 for a batch of decoded rows, fewer when there are fewer (a
        // padded row costs the products of a real one). A prompt's prefill (many rows, each
        // weight row reused by all) keeps more weight rows per tile instead: 3 × 8 tiles took
        // its 86 rows × 24 layers in 0.58 s against 0.65–0.71 s with 8 × 2.
        let rows = match m {
            1..=2 => 2,
            3..=4 => 4,
            5..=16 => 8,
            _ => 3,
        };
        let (xp, mp) = pack_x(&x[..m * k], m, k, rows);
        let xp = xp.as_slice();
        split_columns(m * n * k, n, |n0, n1| {
            // SAFETY: every (row, column) written lies in `y` (checked above), the column
            // ranges of different tasks are disjoint, and the CPU has AVX512-BF16.
            unsafe {
                match rows {
                    2 => block_avx512::<2, 8>(xp, mp, m, k, w, n, n0, n1, bias, out, accumulate),
                    4 => block_avx512::<4, 4>(xp, mp, m, k, w, n, n0, n1, bias, out, accumulate),
                    3 => block_avx512::<3, 8>(xp, mp, m, k, w, n, n0, n1, bias, out, accumulate),
                    _ => block_avx512::<8, 2>(xp, mp, m, k, w, n, n0, n1, bias, out, accumulate),
                }
            }
        });
        return;
    }
    let mut xb = vec![0u16; m * k];
    round_into(&x[..m * k], &mut xb);
    split_columns(m * n * k, n, |n0, n1| {
        // SAFETY: as above; the portable path needs no CPU feature.
        unsafe { block_generic(&xb, m, k, w, n, n0, n1, bias, out, accumulate) }
    });
}

/// Portable tiles: the rounded values widened to f32, eight-lane partial sums.
#[allow(clippy::too_many_arguments)]
unsafe fn block_generic(
    xb: &[u16],
    m: usize,
    k: usize,
    w: &[u16],
    n: usize,
    n0: usize,
    n1: usize,
    bias: Option<&[f32]>,
    y: SendPtr,
    accumulate: bool,
) {
    const L: usize = 8;
    for mb in (0..m).step_by(M_BLOCK) {
        let me = (mb + M_BLOCK).min(m);
        for j0 in (n0..n1).step_by(NR) {
            let nr = NR.min(n1 - j0);
            for i0 in (mb..me).step_by(MR) {
                let mr = MR.min(me - i0);
                let mut sums = [[0f32; NR]; MR];
                for (i, srow) in sums.iter_mut().enumerate().take(mr) {
                    let xr = &xb[(i0 + i) * k..(i0 + i + 1) * k];
                    for (j, s) in srow.iter_mut().enumerate().take(nr) {
                        let wr = &w[(j0 + j) * k..(j0 + j + 1) * k];
                        let mut acc = [0f32; L];
                        for (xc, wc) in xr.chunks(L).zip(wr.chunks(L)) {
                            for l in 0..xc.len() {
                                acc[l] += from_bf16(xc[l]) * from_bf16(wc[l]);
                            }
                        }
                        *s = acc.iter().sum();
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

/// `x` (`m × k` f32) rounded to bf16 and laid out for [`block_avx512`]: per 32-wide `k`
/// chunk, the chunk of every row (`rows` zero rows more, since a tile of `rows` may start at
/// any row below `m`: `M_BLOCK` need not be a multiple of it; `k` padded to a multiple of 32
/// with zeros), so that a tile's input vectors sit at fixed offsets from one pointer.
#[cfg(target_arch = "x86_64")]
fn pack_x(x: &[f32], m: usize, k: usize, rows: usize) -> (Vec<u16>, usize) {
    let mp = m + rows;
    let chunks = k.div_ceil(32);
    let mut xp = vec![0u16; chunks * mp * 32];
    for i in 0..m {
        for c in 0..chunks {
            let (p0, p1) = (c * 32, (c * 32 + 32).min(k));
            let at = (c * mp + i) * 32;
            round_into(&x[i * k + p0..i * k + p1], &mut xp[at..at + p1 - p0]);
        }
    }
    (xp, mp)
}

/// AVX512-BF16 tiles of `R` input rows × `C` weight rows, 32 `k` per `vdpbf16ps`. The inputs
/// come packed (`pack_x`, padded rows give zeros that are not stored); the weight rows stream
/// from the bf16 copy, the last chunk masked. Every `C`-row group's first tile prefetches, into
/// L2, the weight rows `PF` rows ahead: rows of 2 KB are too short for the hardware
/// prefetcher, and prefetches into L1 stalled on its few outstanding misses.
///
/// A decode step of the Qwen2.5-0.5B shape (8 rows, 24 layers' products and the head, 2
/// threads, AMD EPYC Zen 4), against a plain parallel read of the same bytes at 32 GB/s:
/// 3 × 8 tiles (a padded ninth row) prefetching into L1 ran at 16–18 GB/s, these 8 × 2 tiles
/// prefetching into L2 at 24–27 GB/s.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512bf16")]
#[allow(clippy::too_many_arguments)]
unsafe fn block_avx512<const R: usize, const C: usize>(
    xp: &[u16],
    mp: usize,
    m: usize,
    k: usize,
    w: &[u16],
    n: usize,
    n0: usize,
    n1: usize,
    bias: Option<&[f32]>,
    y: SendPtr,
    accumulate: bool,
) {
    use std::arch::x86_64::*;
    const {
        assert!(
            R * C <= 24,
            "the horizontal sums below take 24 accumulators"
        )
    };
    const PF: usize = 8;
    let full = k / 32;
    let tail = k % 32;
    let tail_mask: __mmask32 = if tail == 0 { 0 } else { (1u32 << tail) - 1 };
    let wp = w.as_ptr();
    for mb in (0..m).step_by(M_BLOCK) {
        let me = (mb + M_BLOCK).min(m);
        for j0 in (n0..n1).step_by(C) {
            let nr = C.min(n1 - j0);
            let mut wrow = [wp; C];
            for (j, r) in wrow.iter_mut().enumerate() {
                *r = wp.add((j0 + j.min(nr - 1)) * k);
            }
            let prefetch_rows = j0 + C + PF <= n1;
            for i0 in (mb..me).step_by(R) {
                let mr = R.min(me - i0);
                let mut acc = [[_mm512_setzero_ps(); C]; R];
                let xt = xp.as_ptr().add(i0 * 32);
                let step = |acc: &mut [[__m512; C]; R], c: usize, wv: &[__m512i; C]| {
                    let xc = xt.add(c * mp * 32);
                    for (i, acc_i) in acc.iter_mut().enumerate() {
                        let x: __m512bh =
                            std::mem::transmute(_mm512_loadu_si512(xc.add(i * 32) as *const _));
                        for (a, wv) in acc_i.iter_mut().zip(wv) {
                            *a = _mm512_dpbf16_ps(
                                *a,
                                x,
                                std::mem::transmute::<__m512i, __m512bh>(*wv),
                            );
                        }
                    }
                };
                // Chunk `c` of each weight row; inlined with `prefetch` a constant, so the
                // two loops below carry no branch.
                let load = |c: usize, prefetch: bool| {
                    let mut wv = [_mm512_setzero_si512(); C];
                    for (v, r) in wv.iter_mut().zip(&wrow) {
                        if prefetch {
                            _mm_prefetch::<_MM_HINT_T1>(r.add(PF * k + c * 32) as *const i8);
                        }
                        *v = _mm512_loadu_si512(r.add(c * 32) as *const _);
                    }
                    wv
                };
                if prefetch_rows && i0 == mb {
                    for c in 0..full {
                        step(&mut acc, c, &load(c, true));
                    }
                } else {
                    for c in 0..full {
                        step(&mut acc, c, &load(c, false));
                    }
                }
                if tail != 0 {
                    let mut wv = [_mm512_setzero_si512(); C];
                    for (v, r) in wv.iter_mut().zip(&wrow) {
                        *v = _mm512_maskz_loadu_epi16(tail_mask, r.add(full * 32) as *const i16);
                    }
                    step(&mut acc, full, &wv);
                }
                // Horizontal sums, eight accumulators at a time.
                let mut flat = [[_mm512_setzero_ps(); 8]; 3];
                for (t, a) in acc.iter().flatten().enumerate() {
                    flat[t / 8][t % 8] = *a;
                }
                let mut sums = [[0f32; 8]; 3];
                for (s, f) in sums.iter_mut().zip(&flat).take((R * C).div_ceil(8)) {
                    _mm256_storeu_ps(s.as_mut_ptr(), reduce8(f));
                }
                store_tile(
                    sums.as_flattened(),
                    C,
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

/// The 8 horizontal sums of 8 vectors, in order, by a shuffle tree (24 instructions; one
/// `_mm512_reduce_add_ps` each takes about 8, and with `k` under a thousand the reductions
/// were a quarter of a decode product's instructions).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn reduce8(a: &[std::arch::x86_64::__m512; 8]) -> std::arch::x86_64::__m256 {
    use std::arch::x86_64::*;
    // Pairs interleaved: per 128-bit lane [x0+x2, y0+y2, x1+x3, y1+y3].
    let pair = |x, y| _mm512_add_ps(_mm512_unpacklo_ps(x, y), _mm512_unpackhi_ps(x, y));
    let (t01, t23, t45, t67) = (
        pair(a[0], a[1]),
        pair(a[2], a[3]),
        pair(a[4], a[5]),
        pair(a[6], a[7]),
    );
    // Per 128-bit lane, the lane's sum of each of four vectors, in order.
    let quad = |p, q| {
        _mm512_add_ps(
            _mm512_shuffle_ps::<0x44>(p, q),
            _mm512_shuffle_ps::<0xEE>(p, q),
        )
    };
    let (u0, u1) = (quad(t01, t23), quad(t45, t67));
    // Lanes [u0.0+u0.2, u0.1+u0.3, u1.0+u1.2, u1.1+u1.3], then the two halves of each.
    let v = _mm512_add_ps(
        _mm512_shuffle_f32x4::<0x44>(u0, u1),
        _mm512_shuffle_f32x4::<0xEE>(u0, u1),
    );
    let w = _mm512_add_ps(
        _mm512_shuffle_f32x4::<0x08>(v, v),
        _mm512_shuffle_f32x4::<0x0D>(v, v),
    );
    _mm512_castps512_ps256(w)
}

#[cfg(test)]
mod tests {
    use super::super::bf16::to_bf16;
    use super::*;

    fn data(len: usize, seed: u32) -> Vec<f32> {
        (0..len)
            .map(|i| {
                let h = (i as u32).wrapping_mul(2654435761) ^ seed;
                if h.is_multiple_of(3) {
                    1.0 + (2 * (h % 50) + 1) as f32 / 256.0 // a bf16 tie
                } else {
                    (h % 1000) as f32 / 500.0 - 1.0
                }
            })
            .collect()
    }

    /// f64 product of the bf16-rounded `x` and the bf16 `w`, and Σ|terms| per output.
    fn want(x: &[f32], m: usize, k: usize, w: &[u16], n: usize) -> (Vec<f64>, Vec<f64>) {
        let mut y = vec![0f64; m * n];
        let mut mag = vec![0f64; m * n];
        for i in 0..m {
            for j in 0..n {
                for p in 0..k {
                    let t =
                        from_bf16(to_bf16(x[i * k + p])) as f64 * from_bf16(w[j * k + p]) as f64;
                    y[i * n + j] += t;
                    mag[i * n + j] += t.abs();
                }
            }
        }
        (y, mag)
    }

    #[test]
    fn matches_f64_of_rounded_inputs_with_bias_and_accumulate() {
        if !has_avx512_bf16() {
            eprintln!("SKIPPED (fast path): no AVX512-BF16 on this CPU; the portable path runs");
        }
        for &(m, n, k) in &[
            (1, 1, 1),
            (3, 5, 17),
            (4, 4, 32),
            (7, 9, 33),
            (16, 70, 100),
            (2, 300, 64),
            (65, 11, 7),
            (5, 33, 70),
            (17, 18, 64),
            (130, 9, 40),
            (1, 1000, 896),
            (40, 200, 301),
        ] {
            let x = data(m * k, 1);
            let w: Vec<u16> = data(n * k, 2).iter().map(|&v| to_bf16(v)).collect();
            let b = data(n, 3);
            let (e, mag) = want(&x, m, k, &w, n);
            let tol = |i: usize| 2e-5 * (mag[i] + 1.0);
            let mut y = vec![f32::NAN; m * n];
            gemm_nt_bf16(&x, m, k, &w, n, None, &mut y, false);
            for (i, a) in y.iter().enumerate() {
                assert!(
                    (*a as f64 - e[i]).abs() <= tol(i),
                    "{m}x{n}x{k}: {a} vs {}",
                    e[i]
                );
            }
            let mut y = vec![0.5f32; m * n];
            gemm_nt_bf16(&x, m, k, &w, n, Some(&b), &mut y, true);
            for (i, a) in y.iter().enumerate() {
                let e = e[i] + 0.5 + b[i % n] as f64;
                assert!(
                    (*a as f64 - e).abs() <= tol(i),
                    "{m}x{n}x{k} acc: {a} vs {e}"
                );
            }
            // The portable path gives the same sums.
            let xb: Vec<u16> = x.iter().map(|&v| to_bf16(v)).collect();
            let mut y2 = vec![0f32; m * n];
            // SAFETY: y2 holds m × n floats and this thread alone writes it.
            unsafe {
                block_generic(
                    &xb,
                    m,
                    k,
                    &w,
                    n,
                    0,
                    n,
                    None,
                    SendPtr(y2.as_mut_ptr()),
                    false,
                )
            };
            for (i, a) in y2.iter().enumerate() {
                assert!((*a as f64 - e[i]).abs() <= tol(i), "generic {m}x{n}x{k}");
            }
        }
    }
}
