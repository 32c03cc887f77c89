//! A 16 × 16 transpose of 32-bit lanes in AVX-512 registers, shared by the panel packers of
//! the f32 and bf16 GEMMs: a `k`-contiguous source turned into `k`-major panels 256 values at a
//! time instead of one scattered store per value.

use std::arch::x86_64::*;

/// Transposes a 16 × 16 block of 32-bit lanes (`v[r]` lane `c` becomes `v[c]` lane `r`):
/// pairs of rows interleaved by 32 and 64 bits, then 128-bit lanes gathered.
#[target_feature(enable = "avx512f")]
pub(crate) unsafe fn transpose16(v: &mut [__m512i; 16]) {
    let mut t = [_mm512_setzero_si512(); 16];
    for i in 0..8 {
        t[2 * i] = _mm512_unpacklo_epi32(v[2 * i], v[2 * i + 1]);
        t[2 * i + 1] = _mm512_unpackhi_epi32(v[2 * i], v[2 * i + 1]);
    }
    // u[4g + j]: rows 4g..4g+4 of columns j, 4 + j, 8 + j, 12 + j (one per 128-bit lane).
    let mut u = [_mm512_setzero_si512(); 16];
    for g in 0..4 {
        let (a, b, c, e) = (t[4 * g], t[4 * g + 1], t[4 * g + 2], t[4 * g + 3]);
        u[4 * g] = _mm512_unpacklo_epi64(a, c);
        u[4 * g + 1] = _mm512_unpackhi_epi64(a, c);
        u[4 * g + 2] = _mm512_unpacklo_epi64(b, e);
        u[4 * g + 3] = _mm512_unpackhi_epi64(b, e);
    }
    for j in 0..4 {
        let even_lo = _mm512_shuffle_i32x4::<0x88>(u[j], u[4 + j]);
        let even_hi = _mm512_shuffle_i32x4::<0x88>(u[8 + j], u[12 + j]);
        let odd_lo = _mm512_shuffle_i32x4::<0xDD>(u[j], u[4 + j]);
        let odd_hi = _mm512_shuffle_i32x4::<0xDD>(u[8 + j], u[12 + j]);
        v[j] = _mm512_shuffle_i32x4::<0x88>(even_lo, even_hi);
        v[8 + j] = _mm512_shuffle_i32x4::<0xDD>(even_lo, even_hi);
        v[4 + j] = _mm512_shuffle_i32x4::<0x88>(odd_lo, odd_hi);
        v[12 + j] = _mm512_shuffle_i32x4::<0xDD>(odd_lo, odd_hi);
    }
}
