//! The AMX tier: `tdpbf16ps` adds a 16×32 bf16 `A` tile times a 32×16 bf16 `B` tile into a
//! 16×16 f32 `C` tile (1,024 multiply-adds per instruction). Stable Rust has no AMX intrinsics,
//! so the tile instructions are `asm!` (the assembler takes them without target features).
//!
//! Tile semantics (Intel SDM, TDPBF16PS): for `C` row `m`, column `n` and pair `p`,
//! `C[m][n] += A.row[m].bf16[2p]·B.row[p].bf16[2n] + A.row[m].bf16[2p+1]·B.row[p].bf16[2n+1]`.
//! So an `A` tile is 16 rows of 16 `k` pairs (row-major `A`, `k` contiguous) and a `B` tile is
//! 16 rows of `k` pairs, each holding one pair for each of 16 columns ("VNNI" layout).
//!
//! Panels: `A` as `[MR = 32 rows][KP pairs]`, `B` as `[KP pairs][NR = 32 columns]`, with `KP`
//! the slice's pairs rounded up to whole tiles (16) and zero-padded. The kernel keeps a 32×32
//! block of `C` in tiles 0–3 (`A` rows 0–15 / 16–31 in tiles 4/5, `B` columns 0–15 / 16–31 in
//! 6/7), stores it to a buffer and adds it to `C` with masked AVX-512 stores.
//!
//! The tile configuration is per thread, so every task loads it (`begin`) and releases the tile
//! state after (`end`). Linux must have granted the tile data first (`tier::amx_usable`).

use std::arch::asm;
use std::arch::x86_64::*;

use super::driver::Micro;
use super::pack::{pack_pairs, Src};

pub(crate) struct Amx;

const MR: usize = 32;
const NR: usize = 32;
/// `k` pairs per tile (a tile row is 64 bytes).
const TP: usize = 16;

/// Pairs of a `kc` slice, rounded up to whole tiles.
fn kp_tiles(kc: usize) -> usize {
    kc.div_ceil(2).next_multiple_of(TP)
}

/// `ldtilecfg`'s 64-byte operand, palette 1: tiles 0–7 each 16 rows × 64 bytes.
#[repr(C, align(64))]
struct TileConfig([u8; 64]);

const fn config() -> TileConfig {
    let mut b = [0u8; 64];
    b[0] = 1; // palette_id; byte 1 start_row = 0; bytes 2..16 reserved (zero)
    let mut t = 0;
    while t < 8 {
        b[16 + 2 * t] = 64; // colsb[t] (u16, little-endian): 64 bytes per row
        b[17 + 2 * t] = 0;
        b[48 + t] = 16; // rows[t]
        t += 1;
    }
    TileConfig(b)
}

static CONFIG: TileConfig = config();

impl Micro for Amx {
    const MR: usize = MR;
    const NR: usize = NR;
    // 256 pairs: 32 KB per panel of `A` or `B`.
    const KC: usize = 512;
    const KU: usize = 32;
    const MC: usize = 256;

    fn a_panel(kc: usize) -> usize {
        MR * kp_tiles(kc)
    }

    fn b_panel(kc: usize) -> usize {
        kp_tiles(kc) * NR
    }

    unsafe fn pack_a(dst: &mut [u32], a: Src, i0: usize, mr: usize, p0: usize, kc: usize) {
        let kp = kp_tiles(kc);
        // Zero the pad pairs first (pack_pairs writes pairs < kc.div_ceil(2) only).
        if kc.div_ceil(2) < kp {
            for r in 0..MR {
                dst[r * kp + kc.div_ceil(2)..(r + 1) * kp].fill(0);
            }
        }
        pack_pairs(dst, a, i0, mr, MR, p0, kc, kp, 1);
    }

    unsafe fn pack_b(dst: &mut [u32], bt: Src, j0: usize, nr: usize, p0: usize, kc: usize) {
        let kp = kp_tiles(kc);
        dst[kc.div_ceil(2) * NR..kp * NR].fill(0);
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
        let kp = kp_tiles(kc);
        let a_stride = kp * 4; // bytes between rows of the `A` panel
        let b_stride = NR * 4; // bytes between pairs of the `B` panel
        asm!(
            "tilezero tmm0",
            "tilezero tmm1",
            "tilezero tmm2",
            "tilezero tmm3",
            options(nostack, nomem, preserves_flags)
        );
        for q in (0..kp).step_by(TP) {
            let a0 = a.add(q);
            let a1 = a.add(16 * kp + q);
            let b0 = b.add(q * NR);
            let b1 = b.add(q * NR + 16);
            asm!(
                "tileloadd tmm4, [{a0} + {sa}*1]",
                "tileloadd tmm5, [{a1} + {sa}*1]",
                "tileloadd tmm6, [{b0} + {sb}*1]",
                "tileloadd tmm7, [{b1} + {sb}*1]",
                "tdpbf16ps tmm0, tmm4, tmm6",
                "tdpbf16ps tmm1, tmm4, tmm7",
                "tdpbf16ps tmm2, tmm5, tmm6",
                "tdpbf16ps tmm3, tmm5, tmm7",
                a0 = in(reg) a0,
                a1 = in(reg) a1,
                b0 = in(reg) b0,
                b1 = in(reg) b1,
                sa = in(reg) a_stride,
                sb = in(reg) b_stride,
                options(nostack, readonly, preserves_flags)
            );
        }
        // tmm0: rows 0-15 × cols 0-15, tmm1: rows 0-15 × 16-31, tmm2: rows 16-31 × 0-15,
        // tmm3: rows 16-31 × 16-31, into a row-major 32 × 32 buffer.
        let mut buf = Block([0f32; MR * NR]);
        let p = buf.0.as_mut_ptr();
        asm!(
            "tilestored [{c0} + {s}*1], tmm0",
            "tilestored [{c1} + {s}*1], tmm1",
            "tilestored [{c2} + {s}*1], tmm2",
            "tilestored [{c3} + {s}*1], tmm3",
            c0 = in(reg) p,
            c1 = in(reg) p.add(16),
            c2 = in(reg) p.add(16 * NR),
            c3 = in(reg) p.add(16 * NR + 16),
            s = in(reg) NR * 4,
            options(nostack, preserves_flags)
        );
        store(&buf.0, c, ldc, mr, nr, accumulate);
    }

    unsafe fn begin() {
        asm!("ldtilecfg [{0}]", in(reg) &CONFIG as *const TileConfig, options(nostack, readonly, preserves_flags));
    }

    unsafe fn end() {
        asm!("tilerelease", options(nostack, nomem, preserves_flags));
    }
}

#[repr(C, align(64))]
struct Block([f32; MR * NR]);

/// Adds (or writes) the first `mr × nr` of a row-major 32×32 block into `C`.
#[target_feature(enable = "avx512f")]
unsafe fn store(buf: &[f32; MR * NR], c: *mut f32, ldc: usize, mr: usize, nr: usize, acc: bool) {
    for r in 0..mr {
        for h in 0..2 {
            let cols = nr.saturating_sub(h * 16).min(16);
            if cols == 0 {
                continue;
            }
            let mask: __mmask16 = if cols == 16 {
                0xffff
            } else {
                (1u16 << cols) - 1
            };
            let v = _mm512_loadu_ps(buf.as_ptr().add(r * NR + h * 16));
            let ptr = c.add(r * ldc + h * 16);
            let v = if acc {
                _mm512_add_ps(v, _mm512_maskz_loadu_ps(mask, ptr))
            } else {
                v
            };
            _mm512_mask_storeu_ps(ptr, mask, v);
        }
    }
}

/// Runs a 64×64×96 product (odd edges included: 61×50×95) on the AMX kernels and compares it
/// with the reference; an error says how far off it was. Called once, before AMX is chosen.
pub(crate) fn self_check() -> Result<(), String> {
    let (m, n, k) = (61, 50, 95);
    let a: Vec<f32> = (0..m * k)
        .map(|i| ((i * 7 % 19) as f32 - 9.0) / 8.0)
        .collect();
    let b: Vec<f32> = (0..k * n)
        .map(|i| ((i * 5 % 23) as f32 - 11.0) / 16.0)
        .collect();
    let mut want = vec![0f32; m * n];
    super::reference(
        &mut want,
        n,
        super::Operand16::new(super::Data::F32(&a), k),
        super::Operand16::new(super::Data::F32(&b), n),
        m,
        n,
        k,
        false,
    );
    let mut got = vec![f32::NAN; m * n];
    // SAFETY: the caller checked `amx_usable` and AVX512-BF16; the shapes fit the buffers.
    unsafe {
        super::driver::gemm::<Amx>(
            m,
            n,
            k,
            super::src_of(super::Data::F32(&a), k, false),
            super::src_of(super::Data::F32(&b), n, false).t(),
            got.as_mut_ptr(),
            n,
            false,
            false,
        );
    }
    let worst = want
        .iter()
        .zip(&got)
        .map(|(w, g)| ((w - g).abs() / (1.0 + w.abs())) as f64)
        .fold(
            0.0f64,
            |x, y| if y.is_nan() { f64::INFINITY } else { x.max(y) },
        );
    if worst <= 1e-4 {
        Ok(())
    } else {
        Err(format!("largest relative difference {worst:e} on 61x50x95"))
    }
}
