//! The AVX512-BF16 tier: `vdpbf16ps` multiplies 16 bf16 pairs and adds both products into 16
//! f32 lanes, twice the work of an f32 FMA per instruction. Panels: `A` as `[k pair][MR rows]`
//! (one pair broadcast per row), `B` as `[k pair][NR columns]` (two zmm of pairs), and an
//! `MR × NR` block of f32 accumulators in registers.

use std::arch::x86_64::*;

use super::driver::{pack_a_panels, Micro};
use super::pack::{pack_pairs, pack_pairs_kmajor, Src};

pub(crate) struct Avx512Bf16;

const MR: usize = 12;
const NR: usize = 32;

impl Micro for Avx512Bf16 {
    const MR: usize = MR;
    const NR: usize = NR;
    // One slice up to 576 (a 0.5B step's 8×72 tokens, a weight gradient's `k`): a second slice
    // re-reads all of `C`, which for a tall product is out of cache. A 288-pair `B` panel
    // (36 KB) streams from L2 well enough.
    const KC: usize = 576;
    const KU: usize = 2;
    const MC: usize = 120;

    fn a_panel(kc: usize) -> usize {
        kc.div_ceil(2) * MR
    }

    fn b_panel(kc: usize) -> usize {
        kc.div_ceil(2) * NR
    }

    unsafe fn pack_a(dst: &mut [u32], a: Src, i0: usize, mr: usize, p0: usize, kc: usize) {
        pack_pairs(dst, a, i0, mr, MR, p0, kc, 1, MR);
    }

    unsafe fn pack_a_block(dst: &mut [u32], a: Src, i0: usize, mc: usize, p0: usize, kc: usize) {
        if a.rs == 1 && a.cs != 1 {
            // `A` stored transposed (a weight gradient's dYᵀ): each `k` row of the block is one
            // contiguous run, read once for all panels instead of 12 values per panel.
            pack_pairs_kmajor(dst, a, i0, mc, MR, Self::a_panel(kc), p0, kc);
        } else {
            pack_a_panels::<Self>(dst, a, i0, mc, p0, kc);
        }
    }

    unsafe fn pack_b(dst: &mut [u32], bt: Src, j0: usize, nr: usize, p0: usize, kc: usize) {
        pack_pairs(dst, bt, j0, nr, NR, p0, kc, 1, NR);
    }

    unsafe fn kernel(
        kc: usize,
        a: *const u32,
        b: *const u32,
        c: *mut f32,
        ldc: usize,
        mr: usize,
        nr: usize,
        accumulate: bool,
    ) {
        kernel(kc.div_ceil(2), a, b, c, ldc, mr, nr, accumulate)
    }
}

/// `C[mr × nr] (+)= Apanel · Bpanel` over `kp` pairs.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512bf16")]
#[allow(clippy::too_many_arguments)]
unsafe fn kernel(
    kp: usize,
    a: *const u32,
    b: *const u32,
    c: *mut f32,
    ldc: usize,
    mr: usize,
    nr: usize,
    accumulate: bool,
) {
    // C's rows may be far out of cache (a tall product's C exceeds L3): start their loads now
    // so that the epilogue does not stall on them after the `k` loop.
    for r in 0..mr {
        let row = c.add(r * ldc) as *const i8;
        _mm_prefetch::<_MM_HINT_T0>(row);
        _mm_prefetch::<_MM_HINT_T0>(row.add(64));
        _mm_prefetch::<_MM_HINT_T0>(row.add(4 * nr - 1));
    }
    let mut acc = [[_mm512_setzero_ps(); 2]; MR];
    for p in 0..kp {
        let b0: __m512bh = std::mem::transmute(_mm512_loadu_si512(b.add(p * NR) as *const _));
        let b1: __m512bh = std::mem::transmute(_mm512_loadu_si512(b.add(p * NR + 16) as *const _));
        let ap = a.add(p * MR);
        for (r, row) in acc.iter_mut().enumerate() {
            let av: __m512bh = std::mem::transmute(_mm512_set1_epi32(*ap.add(r) as i32));
            row[0] = _mm512_dpbf16_ps(row[0], av, b0);
            row[1] = _mm512_dpbf16_ps(row[1], av, b1);
        }
    }
    for (r, row) in acc.iter().enumerate().take(mr) {
        for (h, v) in row.iter().enumerate() {
            let cols = nr.saturating_sub(h * 16).min(16);
            if cols == 0 {
                continue;
            }
            let mask: __mmask16 = if cols == 16 {
                0xffff
            } else {
                (1u16 << cols) - 1
            };
            let ptr = c.add(r * ldc + h * 16);
            let v = if accumulate {
                _mm512_add_ps(*v, _mm512_maskz_loadu_ps(mask, ptr))
            } else {
                *v
            };
            _mm512_mask_storeu_ps(ptr, mask, v);
        }
    }
}
