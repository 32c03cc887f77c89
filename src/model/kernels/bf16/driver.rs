//! The BLIS loop nest both fast tiers share (as `sgemm_avx512`): `C` cut into row × column
//! tasks (the cut that packs least), each task walks `k` in `KC` slices, packs its `B` slice
//! once into `NR`-column panels and its rows of `A` `MC` at a time into `MR`-row panels, and a
//! tier's microkernel multiplies panel pairs into `MR × NR` blocks of `C`.

use std::cell::RefCell;

use rayon::prelude::*;

use super::pack::Src;
use crate::model::kernels::tasks::{grid, k_slice, split};

/// One tier's panel layouts and microkernel.
pub(crate) trait Micro: Sync {
    const MR: usize;
    const NR: usize;
    /// Most `k` elements per slice (a multiple of `KU`).
    const KC: usize;
    /// What a `k` slice's length is a multiple of (a pair; AMX: a 32-element tile row).
    const KU: usize;
    /// Rows of `A` packed at a time.
    const MC: usize;
    /// `u32` pairs one `MR`-row panel of `A` takes for a `kc` slice.
    fn a_panel(kc: usize) -> usize;
    /// `u32` pairs one `NR`-column panel of `B` takes for a `kc` slice.
    fn b_panel(kc: usize) -> usize;
    /// Packs `mr ≤ MR` rows of `A` from row `i0`, `k` from `p0`, into one panel.
    unsafe fn pack_a(dst: &mut [u32], a: Src, i0: usize, mr: usize, p0: usize, kc: usize);
    /// Packs `mc ≤ MC` rows of `A` from row `i0` into consecutive `MR`-row panels of
    /// `a_panel(kc)` pairs each (a tier may walk the block in a better order).
    unsafe fn pack_a_block(dst: &mut [u32], a: Src, i0: usize, mc: usize, p0: usize, kc: usize) {
        pack_a_panels::<Self>(dst, a, i0, mc, p0, kc)
    }
    /// Packs `nr ≤ NR` columns of `B` (given as `Bᵀ`) from column `j0` into one panel.
    unsafe fn pack_b(dst: &mut [u32], bt: Src, j0: usize, nr: usize, p0: usize, kc: usize);
    /// `C[mr × nr] (+)= Apanel · Bpanel` over `kc`.
    #[allow(clippy::too_many_arguments)]
    unsafe fn kernel(
        kc: usize,
        a: *const u32,
        b: *const u32,
        c: *mut f32,
        ldc: usize,
        mr: usize,
        nr: usize,
        accumulate: bool,
    );
    /// Per-thread set-up before a task's first kernel (AMX loads its tile config here).
    unsafe fn begin() {}
    /// After a task's last kernel.
    unsafe fn end() {}
}

/// [`Micro::pack_a_block`] panel by panel.
///
/// # Safety
/// As [`Micro::pack_a`], for every panel of the block.
pub(crate) unsafe fn pack_a_panels<T: Micro + ?Sized>(
    dst: &mut [u32],
    a: Src,
    i0: usize,
    mc: usize,
    p0: usize,
    kc: usize,
) {
    let asz = T::a_panel(kc);
    for (pi, ir) in (0..mc).step_by(T::MR).enumerate() {
        let mr = T::MR.min(mc - ir);
        T::pack_a(&mut dst[pi * asz..(pi + 1) * asz], a, i0 + ir, mr, p0, kc);
    }
}

#[derive(Clone, Copy)]
struct Out(*mut f32);
// SAFETY: tasks write disjoint blocks of C.
unsafe impl Send for Out {}
unsafe impl Sync for Out {}

impl Out {
    fn get(&self) -> *mut f32 {
        self.0
    }
}

thread_local! {
    static PACK: RefCell<(Vec<u32>, Vec<u32>)> = const { RefCell::new((Vec::new(), Vec::new())) };
}

/// `C[m×n] (+)= A[m×k] · B[k×n]` on tier `T`; `bt` is `B` viewed as its transpose (`n × k`).
///
/// # Safety
/// The CPU must run `T`'s instructions; `a`, `bt` readable and `c` writable at every index the
/// shapes reach; `c` overlaps neither; `k ≥ 1`.
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn gemm<T: Micro>(
    m: usize,
    n: usize,
    k: usize,
    a: Src,
    bt: Src,
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
    let (gm, gn) = grid(m, n, T::MR, T::NR, 2048, workers);
    let kcs = k_slice(k, T::KC, T::KU);
    let out = Out(c);
    let task = move |t: usize| {
        let (i0, mt) = split(m, T::MR, gm, t / gn);
        let (j0, nt) = split(n, T::NR, gn, t % gn);
        if mt == 0 || nt == 0 {
            return;
        }
        PACK.with(|p| {
            let (pa, pb) = &mut *p.borrow_mut();
            let kc_max = kcs.min(k.next_multiple_of(2));
            pa.resize(T::MC.div_ceil(T::MR) * T::a_panel(kc_max), 0);
            pb.resize(nt.div_ceil(T::NR) * T::b_panel(kc_max), 0);
            // SAFETY: indices stay inside the caller's shapes (the function contract), and the
            // panels inside the buffers sized above.
            unsafe {
                T::begin();
                for p0 in (0..k).step_by(kcs) {
                    let kc = kcs.min(k - p0);
                    let acc = accumulate || p0 > 0;
                    let (asz, bsz) = (T::a_panel(kc), T::b_panel(kc));
                    for (pj, jr) in (0..nt).step_by(T::NR).enumerate() {
                        let nr = T::NR.min(nt - jr);
                        T::pack_b(&mut pb[pj * bsz..(pj + 1) * bsz], bt, j0 + jr, nr, p0, kc);
                    }
                    for ic in (0..mt).step_by(T::MC) {
                        let mc = T::MC.min(mt - ic);
                        T::pack_a_block(pa, a, i0 + ic, mc, p0, kc);
                        for (pj, jr) in (0..nt).step_by(T::NR).enumerate() {
                            let nr = T::NR.min(nt - jr);
                            let bp = pb.as_ptr().add(pj * bsz);
                            for (pi, ir) in (0..mc).step_by(T::MR).enumerate() {
                                let mr = T::MR.min(mc - ir);
                                let ap = pa.as_ptr().add(pi * asz);
                                let cp = out.get().add((i0 + ic + ir) * ldc + j0 + jr);
                                T::kernel(kc, ap, bp, cp, ldc, mr, nr, acc);
                            }
                        }
                    }
                }
                T::end();
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
