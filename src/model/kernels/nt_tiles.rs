//! The tiling that the few-row `x · Wᵀ` products of decoding share (`infer::gemm::gemm_nt` in
//! f32, `kernels::gemm_nt_bf16` in bf16): column ranges on the rayon threads, `MR × NR` tiles
//! of sums, and the store that adds bias and the old output.

use rayon::prelude::*;

/// Input rows kept hot in L2 while a block of weight rows streams past them.
pub(crate) const M_BLOCK: usize = 64;
/// Below this many multiply-adds a product runs on the calling thread.
const PARALLEL_MIN_WORK: usize = 1 << 18;
/// Rows of `x` per tile.
pub(crate) const MR: usize = 3;
/// Rows of `w` (output columns) per tile.
pub(crate) const NR: usize = 8;

/// The output pointer handed to the column tasks.
#[derive(Clone, Copy)]
pub(crate) struct SendPtr(pub(crate) *mut f32);
// SAFETY: tasks write disjoint column ranges of the output.
unsafe impl Send for SendPtr {}
unsafe impl Sync for SendPtr {}

/// Runs `f(n0, n1)` over column ranges (multiples of `NR`) covering `0..n`: on this thread for
/// small products, else two ranges per rayon thread (balance when other processes share the
/// cores).
pub(crate) fn split_columns(work: usize, n: usize, f: impl Fn(usize, usize) + Sync) {
    let threads = rayon::current_num_threads();
    if threads == 1
        || rayon::current_thread_index().is_some()
        || work < PARALLEL_MIN_WORK
        || n < 2 * NR
    {
        return f(0, n);
    }
    let tasks = (threads * 2).min(n / NR);
    let per = n.div_ceil(tasks).div_ceil(NR) * NR;
    (0..n.div_ceil(per))
        .into_par_iter()
        .for_each(|t| f(t * per, ((t + 1) * per).min(n)));
}

/// Writes one finished `mr × nr` tile (`sums[i · ld + j]` for row `i0 + i`, column `j0 + j`).
///
/// # Safety
/// `y` must point to `m × n` writable floats that no other thread touches in these columns.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn store_tile(
    sums: &[f32],
    ld: usize,
    mr: usize,
    nr: usize,
    i0: usize,
    j0: usize,
    n: usize,
    bias: Option<&[f32]>,
    y: SendPtr,
    accumulate: bool,
) {
    for (i, row) in sums.chunks(ld).enumerate().take(mr) {
        for (j, &s) in row.iter().enumerate().take(nr) {
            let p = y.0.add((i0 + i) * n + j0 + j);
            let b = bias.map_or(0.0, |b| b[j0 + j]);
            *p = if accumulate { *p + s + b } else { s + b };
        }
    }
}
