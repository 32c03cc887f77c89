//! A cache-blocked sgemm for AVX-512 CPUs (the `gemm` crate only uses AVX2 on stable Rust).
//!
//! BLIS layout: `C` is cut into a few independent blocks of rows × columns (rayon runs them in
//! parallel; the cut that packs least, see `grid`); each block walks `k` in `KC` slices, packs
//! its slice of `B` into `NR`-column panels once and its rows of `A` into `MR`-row panels
//! (zero-padded), and an `MR × NR` register-blocked kernel (16 zmm accumulators) multiplies
//! panel pairs. Packing reads any strides, so transposed operands need no copy first.

use std::arch::x86_64::*;
use std::cell::RefCell;

use rayon::prelude::*;

use super::tasks::{grid, k_slice, split};
use super::transpose::transpose16;

const MR: usize = 8;
const NR: usize = 32;
const KC: usize = 256;
/// Rows of `A` packed at a time (an `MC × KC` block, 256 KB, stays in L2).
const MC: usize = 256;
/// Widest column range one task packs `B` for (its `KC × NT` block, ≤ 2 MB).
const NT_MAX: usize = 2048;

/// A logical matrix: element `(i, j)` at `ptr[i * rs + j * cs]`.
#[derive(Clone, Copy)]
pub(crate) struct View {
    pub ptr: *const f32,
    pub rs: usize,
    pub cs: usize,
}
// SAFETY: views are only read, and the caller keeps the data alive for the call.
unsafe impl Send for View {}
unsafe impl Sync for View {}

#[derive(Clone, Copy)]
struct Out(*mut f32);
// SAFETY: tiles write disjoint parts of C.
unsafe impl Send for Out {}
unsafe impl Sync for Out {}

impl Out {
    /// The pointer (a method, so closures capture the whole `Send` wrapper, not the field).
    fn get(&self) -> *mut f32 {
        self.0
    }
}

thread_local! {
    static PACK: RefCell<(Vec<f32>, Vec<f32>)> = const { RefCell::new((Vec::new(), Vec::new())) };
}

/// Whether this CPU can run `sgemm`.
pub(crate) fn available() -> bool {
    std::arch::is_x86_feature_detected!("avx512f")
}

/// `C[m×n] (+)= A[m×k] · B[k×n]`, `C` row-major with row stride `ldc`.
///
/// BLIS loop order inside each task (a block of rows × columns): for each `KC` slice of `k`,
/// pack the task's `B` slice once, then for each `MC` block of its rows pack `A` and run the
/// `MR × NR` kernel over the panel pairs (the `B` panel stays in L1, the `A` block in L2).
///
/// # Safety
/// `available()` must be true; `a`, `b` must be readable and `c` writable at every index the
/// shapes and strides reach; `c` must not overlap `a` or `b`.
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn sgemm(
    m: usize,
    n: usize,
    k: usize,
    a: View,
    b: View,
    c: *mut f32,
    ldc: usize,
    accumulate: bool,
    parallel: bool,
) {
    let workers = if parallel {
        rayon::current_num_threads()
    } else {
        1
    };
    let (gm, gn) = grid(m, n, MR, NR, NT_MAX, workers);
    let kcs = k_slice(k, KC, 16);
    let out = Out(c);
    let task = move |t: usize| {
        let (i0, mt) = split(m, MR, gm, t / gn);
        let (j0, nt) = split(n, NR, gn, t % gn);
        if mt == 0 || nt == 0 {
            return;
        }
        PACK.with(|p| {
            let (pa, pb) = &mut *p.borrow_mut();
            pa.resize(MC * KC, 0.0);
            pb.resize(nt.div_ceil(NR) * NR * KC, 0.0);
            for p0 in (0..k).step_by(kcs) {
                let kc = kcs.min(k - p0);
                let acc = accumulate || p0 > 0;
                // SAFETY: indices stay inside the caller's shapes (see the function contract).
                unsafe {
                    pack_b(pb, b, p0, j0, kc, nt);
                    for ic in (0..mt).step_by(MC) {
                        let mc = MC.min(mt - ic);
                        pack_a(pa, a, i0 + ic, p0, mc, kc);
                        for jr in (0..nt).step_by(NR) {
                            let nr = NR.min(nt - jr);
                            let bp = pb.as_ptr().add(jr / NR * NR * kc);
                            for ir in (0..mc).step_by(MR) {
                                let mr = MR.min(mc - ir);
                                let ap = pa.as_ptr().add(ir / MR * MR * kc);
                                let cp = out.get().add((i0 + ic + ir) * ldc + j0 + jr);
                                kernel(kc, ap, bp, cp, ldc, mr, nr, acc);
                            }
                        }
                    }
                }
            }
        });
    };
    let n_tasks = gm * gn;
    if n_tasks > 1 {
        (0..n_tasks).into_par_iter().for_each(task);
    } else {
        task(0);
    }
}

/// Packs `A[i0.., p0..]` (`mc × kc`) into `MR`-row panels: panel-major, then `p`, then row.
unsafe fn pack_a(dst: &mut [f32], a: View, i0: usize, p0: usize, mc: usize, kc: usize) {
    for (pi, ir) in (0..mc).step_by(MR).enumerate() {
        let mr = MR.min(mc - ir);
        let panel = &mut dst[pi * MR * kc..(pi + 1) * MR * kc];
        let base = a.ptr.add((i0 + ir) * a.rs + p0 * a.cs);
        if a.cs == 1 {
            pack_k_lines(panel, MR, base, a.rs, mr, kc);
        } else {
            for p in 0..kc {
                let col = base.add(p * a.cs);
                for r in 0..mr {
                    *panel.get_unchecked_mut(p * MR + r) = *col.add(r * a.rs);
                }
            }
        }
        if mr < MR {
            for p in 0..kc {
                panel[p * MR + mr..(p + 1) * MR].fill(0.0);
            }
        }
    }
}

/// Packs `B[p0.., j0..]` (`kc × nc`) into `NR`-column panels: panel-major, then `p`, then
/// column.
unsafe fn pack_b(dst: &mut [f32], b: View, p0: usize, j0: usize, kc: usize, nc: usize) {
    for (pj, jr) in (0..nc).step_by(NR).enumerate() {
        let nr = NR.min(nc - jr);
        let panel = &mut dst[pj * NR * kc..(pj + 1) * NR * kc];
        let base = b.ptr.add(p0 * b.rs + (j0 + jr) * b.cs);
        if b.cs == 1 {
            for p in 0..kc {
                let row = base.add(p * b.rs);
                std::ptr::copy_nonoverlapping(row, panel.as_mut_ptr().add(p * NR), nr);
            }
        } else if b.rs == 1 {
            // Columns contiguous in `k` (a weight `W` used as `Wᵀ`).
            pack_k_lines(panel, NR, base, b.cs, nr, kc);
        } else {
            for c in 0..nr {
                let col = base.add(c * b.cs);
                for p in 0..kc {
                    *panel.get_unchecked_mut(p * NR + c) = *col.add(p * b.rs);
                }
            }
        }
        if nr < NR {
            for p in 0..kc {
                panel[p * NR + nr..(p + 1) * NR].fill(0.0);
            }
        }
    }
}

/// `lines` lines of a source that are contiguous in `k` (rows of `A`, columns of `Bᵀ`),
/// `stride` apart, into a panel laid out `k` step by `k` step, `width` floats a step
/// (`dst[p · width + line]`): 16 × 16 blocks transposed in registers instead of one scattered
/// store per value, the `k` tail element by element.
#[target_feature(enable = "avx512f")]
unsafe fn pack_k_lines(
    dst: &mut [f32],
    width: usize,
    base: *const f32,
    stride: usize,
    lines: usize,
    kc: usize,
) {
    debug_assert!(lines <= width && dst.len() >= width * kc);
    let d = dst.as_mut_ptr();
    let k16 = kc / 16 * 16;
    for l0 in (0..lines).step_by(16) {
        let nl = 16.min(lines - l0);
        let mask: __mmask16 = if nl == 16 { 0xffff } else { (1 << nl) - 1 };
        for p in (0..k16).step_by(16) {
            let mut v = [_mm512_setzero_si512(); 16];
            for (l, x) in v.iter_mut().enumerate().take(nl) {
                *x = _mm512_castps_si512(_mm512_loadu_ps(base.add((l0 + l) * stride + p)));
            }
            transpose16(&mut v);
            for (q, x) in v.iter().enumerate() {
                let at = d.add((p + q) * width + l0);
                _mm512_mask_storeu_ps(at, mask, _mm512_castsi512_ps(*x));
            }
        }
    }
    for l in 0..lines {
        let line = base.add(l * stride);
        for p in k16..kc {
            *d.add(p * width + l) = *line.add(p);
        }
    }
}

/// `C[mr × nr] (+)= Apanel · Bpanel` over `kc`.
#[target_feature(enable = "avx512f")]
#[allow(clippy::too_many_arguments)]
unsafe fn kernel(
    kc: usize,
    a: *const f32,
    b: *const f32,
    c: *mut f32,
    ldc: usize,
    mr: usize,
    nr: usize,
    accumulate: bool,
) {
    let mut acc = [[_mm512_setzero_ps(); 2]; MR];
    for p in 0..kc {
        let b0 = _mm512_loadu_ps(b.add(p * NR));
        let b1 = _mm512_loadu_ps(b.add(p * NR + 16));
        let ap = a.add(p * MR);
        for (r, row) in acc.iter_mut().enumerate() {
            let av = _mm512_set1_ps(*ap.add(r));
            row[0] = _mm512_fmadd_ps(av, b0, row[0]);
            row[1] = _mm512_fmadd_ps(av, b1, row[1]);
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
