//! Packing for the bf16 tiers: a block of a logical `rows × k` matrix `X` becomes 32-bit
//! *pairs* `(X[r][2q], X[r][2q+1])` (low half the even `k`, a zero high half past an odd `k`),
//! the unit `vdpbf16ps` and `tdpbf16ps` multiply. `A` is packed as itself (`m × k`), `B` as its
//! transpose (`n × k`), so one routine serves both; f32 data is rounded to bf16 (nearest even,
//! subnormals to zero as the hardware conversion does) on the way.

use std::arch::x86_64::*;

use crate::model::kernels::transpose::transpose16;

/// A logical matrix: element `(i, j)` at `ptr[i * rs + j * cs]`, f32 or bf16 bits.
#[derive(Clone, Copy)]
pub(crate) struct Src {
    pub ptr: SrcPtr,
    pub rs: usize,
    pub cs: usize,
}

#[derive(Clone, Copy)]
pub(crate) enum SrcPtr {
    F32(*const f32),
    Bf16(*const u16),
}

// SAFETY: sources are only read, and the caller keeps the data alive for the call.
unsafe impl Send for Src {}
unsafe impl Sync for Src {}

impl Src {
    /// The transpose (rows and columns swapped).
    pub fn t(self) -> Src {
        Src {
            ptr: self.ptr,
            rs: self.cs,
            cs: self.rs,
        }
    }

    /// Element `(i, j)` as bf16 bits.
    #[inline(always)]
    unsafe fn get(&self, i: usize, j: usize) -> u32 {
        let at = i * self.rs + j * self.cs;
        match self.ptr {
            SrcPtr::F32(p) => super::to_bf16(*p.add(at)) as u32,
            SrcPtr::Bf16(p) => *p.add(at) as u32,
        }
    }

    /// 16 consecutive elements starting at linear index `at` (lanes ≥ `len` read as 0), as
    /// bf16 bits in 16-bit lanes.
    #[inline(always)]
    unsafe fn load16(&self, at: usize, len: usize) -> __m256i {
        let mask: __mmask16 = if len >= 16 { 0xffff } else { (1u16 << len) - 1 };
        match self.ptr {
            SrcPtr::F32(p) => {
                let v = _mm512_maskz_loadu_ps(mask, p.add(at));
                std::mem::transmute::<__m256bh, __m256i>(_mm512_cvtneps_pbh(v))
            }
            SrcPtr::Bf16(p) => _mm256_maskz_loadu_epi16(mask, p.add(at) as *const i16),
        }
    }

    /// 32 consecutive elements starting at linear index `at` (lanes ≥ `len` read as 0), as 16
    /// pairs.
    #[inline(always)]
    unsafe fn load32(&self, at: usize, len: usize) -> __m512i {
        match self.ptr {
            SrcPtr::F32(p) => {
                let m = |l: usize| -> __mmask16 {
                    if l >= 16 {
                        0xffff
                    } else {
                        (1u16 << l) - 1
                    }
                };
                let lo = _mm512_maskz_loadu_ps(m(len), p.add(at));
                let hi = _mm512_maskz_loadu_ps(m(len.saturating_sub(16)), p.add(at + 16));
                // Lanes 0..16 from the second argument, 16..32 from the first.
                std::mem::transmute::<__m512bh, __m512i>(_mm512_cvtne2ps_pbh(hi, lo))
            }
            SrcPtr::Bf16(p) => {
                let mask: __mmask32 = if len >= 32 {
                    u32::MAX
                } else {
                    (1u32 << len) - 1
                };
                _mm512_maskz_loadu_epi16(mask, p.add(at) as *const i16)
            }
        }
    }
}

/// Writes the pairs of `X[r0 .. r0+rows][p0 .. p0+kc]` to
/// `dst[r * row_stride + q * pair_stride]` for `r < rows`, `q < kc.div_ceil(2)`; rows from
/// `rows` to `pad_rows` are written as zeros.
///
/// # Safety
/// The CPU must have AVX512-BF16 (with F, BW, VL); `x` must be readable over the block;
/// `dst` must hold every index written.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512bf16")]
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn pack_pairs(
    dst: &mut [u32],
    x: Src,
    r0: usize,
    rows: usize,
    pad_rows: usize,
    p0: usize,
    kc: usize,
    row_stride: usize,
    pair_stride: usize,
) {
    let kp = kc.div_ceil(2);
    let last = row_stride * (pad_rows.max(1) - 1) + pair_stride * (kp.max(1) - 1);
    assert!(
        kp == 0 || last < dst.len(),
        "pack_pairs: destination too small"
    );
    let d = dst.as_mut_ptr();
    if x.cs == 1 && row_stride == 1 && pair_stride > 1 {
        // `k` contiguous in each row, panel as `[pair][row]` (how both tiers pack): 16 rows ×
        // 16 pairs at a time, transposed in registers instead of stored pair by pair.
        let mut v = [_mm512_setzero_si512(); 16];
        for rb in (0..rows).step_by(16) {
            let nrows = 16.min(rows - rb);
            let mask: __mmask16 = if nrows == 16 {
                0xffff
            } else {
                (1u16 << nrows) - 1
            };
            for q0 in (0..kp).step_by(16) {
                for (r, row) in v.iter_mut().enumerate() {
                    *row = if r < nrows {
                        x.load32((r0 + rb + r) * x.rs + p0 + 2 * q0, kc - 2 * q0)
                    } else {
                        _mm512_setzero_si512()
                    };
                }
                transpose16(&mut v);
                for (q, col) in v.iter().enumerate().take(16.min(kp - q0)) {
                    let at = d.add(rb + (q0 + q) * pair_stride) as *mut i32;
                    _mm512_mask_storeu_epi32(at, mask, *col);
                }
            }
        }
    } else if x.cs == 1 {
        // `k` contiguous in each row: 32 elements are 16 pairs in order.
        let mut tmp = [0u32; 16];
        for r in 0..rows {
            let base = (r0 + r) * x.rs + p0;
            for q0 in (0..kp).step_by(16) {
                let v = x.load32(base + 2 * q0, kc - 2 * q0);
                let n = 16.min(kp - q0);
                if pair_stride == 1 {
                    let mask: __mmask16 = if n == 16 { 0xffff } else { (1u16 << n) - 1 };
                    _mm512_mask_storeu_epi32(d.add(r * row_stride + q0) as *mut i32, mask, v);
                } else {
                    _mm512_storeu_si512(tmp.as_mut_ptr() as *mut __m512i, v);
                    for (q, &t) in tmp.iter().enumerate().take(n) {
                        *d.add(r * row_stride + (q0 + q) * pair_stride) = t;
                    }
                }
            }
        }
    } else if x.rs == 1 {
        // Rows contiguous at a fixed `k`: interleave the even and the odd `k` of 16 rows.
        let mut tmp = [0u32; 16];
        for rb in (0..rows).step_by(16) {
            let n = 16.min(rows - rb);
            for q in 0..kp {
                let v = pairs_at_k(x, p0 + 2 * q, r0 + rb, n, 2 * q + 1 < kc);
                if row_stride == 1 {
                    let mask: __mmask16 = if n == 16 { 0xffff } else { (1u16 << n) - 1 };
                    _mm512_mask_storeu_epi32(d.add(rb + q * pair_stride) as *mut i32, mask, v);
                } else {
                    _mm512_storeu_si512(tmp.as_mut_ptr() as *mut __m512i, v);
                    for (r, &t) in tmp.iter().enumerate().take(n) {
                        *d.add((rb + r) * row_stride + q * pair_stride) = t;
                    }
                }
            }
        }
    } else {
        for r in 0..rows {
            for q in 0..kp {
                let lo = x.get(r0 + r, p0 + 2 * q);
                let hi = if 2 * q + 1 < kc {
                    x.get(r0 + r, p0 + 2 * q + 1)
                } else {
                    0
                };
                *d.add(r * row_stride + q * pair_stride) = lo | hi << 16;
            }
        }
    }
    for r in rows..pad_rows {
        for q in 0..kp {
            *d.add(r * row_stride + q * pair_stride) = 0;
        }
    }
}

/// The pairs `(X[r][k], X[r][k+1])` of rows `r .. r+16` (lanes from `n` on zero; a zero high
/// half when `odd` is false) from a source whose rows are contiguous at a fixed `k` (`rs == 1`).
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512bf16")]
#[inline]
unsafe fn pairs_at_k(x: Src, k: usize, r: usize, n: usize, odd: bool) -> __m512i {
    let even = _mm512_cvtepu16_epi32(x.load16(k * x.cs + r, n));
    let odd = if odd {
        _mm512_cvtepu16_epi32(x.load16((k + 1) * x.cs + r, n))
    } else {
        _mm512_setzero_si512()
    };
    _mm512_or_si512(even, _mm512_slli_epi32(odd, 16))
}

/// Packs rows `r0 .. r0+rows` of `X` (stored with rows contiguous at a fixed `k`: `x.rs == 1`)
/// into consecutive `[pair][mr]` panels of `mr ≤ 16` rows, panel `p` at `dst[p * panel ..]`,
/// walking `k` once for the whole block; rows past `rows` in the last panel are zeros.
///
/// # Safety
/// As [`pack_pairs`]; `dst` must hold `rows.div_ceil(mr)` panels.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512bf16")]
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn pack_pairs_kmajor(
    dst: &mut [u32],
    x: Src,
    r0: usize,
    rows: usize,
    mr: usize,
    panel: usize,
    p0: usize,
    kc: usize,
) {
    let kp = kc.div_ceil(2);
    let panels = rows.div_ceil(mr);
    assert!(
        x.rs == 1 && mr <= 16 && kp * mr <= panel && panels * panel <= dst.len(),
        "pack_pairs_kmajor: bad layout"
    );
    let d = dst.as_mut_ptr();
    let mask: __mmask16 = ((1u32 << mr) - 1) as u16;
    for q in 0..kp {
        let k0 = p0 + 2 * q;
        for pi in 0..panels {
            let rb = pi * mr;
            let n = mr.min(rows - rb);
            // Lanes from `n` on load as zero: the last panel's pad rows.
            let v = pairs_at_k(x, k0, r0 + rb, n, 2 * q + 1 < kc);
            _mm512_mask_storeu_epi32(d.add(pi * panel + q * mr) as *mut i32, mask, v);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The register-transposed path against the element-by-element one (a strided view of the
    /// same data), over row counts and `k` that leave partial 16-blocks.
    #[test]
    fn transposed_packing_matches_element_by_element() {
        if !(is_x86_feature_detected!("avx512bf16") && is_x86_feature_detected!("avx512bw")) {
            eprintln!("skipped: this CPU has no AVX512-BF16");
            return;
        }
        for &(rows, pad, kc, stride) in &[
            (12usize, 12usize, 512usize, 12usize),
            (12, 12, 512, 12),
            (5, 12, 37, 12),
            (32, 32, 64, 32),
            (17, 32, 33, 32),
            (16, 16, 1, 16),
            (3, 16, 30, 16),
        ] {
            let (ld, r0, p0) = (kc + 7, 2, 3);
            let x: Vec<f32> = (0..(r0 + rows) * ld)
                .map(|i| ((i * 37 % 101) as f32 - 50.0) * 0.173)
                .collect();
            let n = stride * kc.div_ceil(2);
            let fast_src = Src {
                ptr: SrcPtr::F32(x.as_ptr()),
                rs: ld,
                cs: 1,
            };
            // The same matrix with every element followed by a gap (`cs == 2`), which only the
            // element-by-element path reads.
            let spread: Vec<f32> = x.iter().flat_map(|&v| [v, f32::NAN]).collect();
            let slow_src = Src {
                ptr: SrcPtr::F32(spread.as_ptr()),
                rs: 2 * ld,
                cs: 2,
            };
            let mut fast = vec![u32::MAX; n];
            let mut slow = vec![u32::MAX; n];
            // SAFETY: AVX512-BF16 checked above; the blocks lie inside `x` and `spread`, the
            // panels in `fast` and `slow`.
            unsafe {
                pack_pairs(&mut fast, fast_src, r0, rows, pad, p0, kc, 1, stride);
                pack_pairs(&mut slow, slow_src, r0, rows, pad, p0, kc, 1, stride);
            }
            assert_eq!(fast, slow, "rows {rows} pad {pad} kc {kc} stride {stride}");
        }
    }

    /// Whole-block packing in `k` order against packing panel by panel, from a transposed
    /// source (`rs == 1`), f32 and bf16, with a short last panel and an odd `kc`.
    #[test]
    fn kmajor_block_packing_matches_panel_by_panel() {
        if !(is_x86_feature_detected!("avx512bf16") && is_x86_feature_detected!("avx512bw")) {
            eprintln!("skipped: this CPU has no AVX512-BF16");
            return;
        }
        for &(rows, kc, mr) in &[
            (120usize, 512usize, 12usize),
            (29, 37, 12),
            (7, 2, 12),
            (33, 64, 16),
        ] {
            let (ld, r0, p0) = (rows + 9, 4, 3);
            let x: Vec<f32> = (0..(p0 + kc) * ld)
                .map(|i| ((i * 53 % 97) as f32 - 48.0) * 0.37)
                .collect();
            let x16: Vec<u16> = x.iter().map(|&v| super::super::to_bf16(v)).collect();
            let panel = kc.div_ceil(2) * mr + 5;
            let n = rows.div_ceil(mr) * panel;
            for src in [
                Src {
                    ptr: SrcPtr::F32(x.as_ptr()),
                    rs: 1,
                    cs: ld,
                },
                Src {
                    ptr: SrcPtr::Bf16(x16.as_ptr()),
                    rs: 1,
                    cs: ld,
                },
            ] {
                let mut block = vec![7u32; n];
                let mut panels = vec![7u32; n];
                // SAFETY: AVX512-BF16 checked above; the block lies inside `x`, panels in `dst`.
                unsafe {
                    pack_pairs_kmajor(&mut block, src, r0, rows, mr, panel, p0, kc);
                    for (pi, rb) in (0..rows).step_by(mr).enumerate() {
                        let dst = &mut panels[pi * panel..(pi + 1) * panel];
                        pack_pairs(dst, src, r0 + rb, mr.min(rows - rb), mr, p0, kc, 1, mr);
                    }
                }
                assert_eq!(block, panels, "rows {rows} kc {kc} mr {mr}");
            }
        }
    }
}
