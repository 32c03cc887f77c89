//! How the blocked GEMMs (`sgemm_avx512`, the bf16 tiers' `driver`) cut one product into
//! parallel tasks and `k` slices: shared so both kernels balance work the same way.

/// How to cut `C[m×n]` into `gm × gn` tasks of whole `mr × nr` panels for `workers` threads
/// (one task a worker: two packed 2–4% more and ran 2–4% slower at a 0.5B step's shapes, in
/// both bf16 and f32, on 2 threads): the grid that packs the least (each task
/// packs `A` for its rows once per column range and `B` for its columns once per row range:
/// `k·(m·gn + n·gm)` elements), with column ranges of at most `nt_max`, among the grids whose
/// task count is a multiple of `workers` (5 tasks on 2 threads leave one idle a sixth of the
/// time), else the least-packing grid of any count.
pub(crate) fn grid(
    m: usize,
    n: usize,
    mr: usize,
    nr: usize,
    nt_max: usize,
    workers: usize,
) -> (usize, usize) {
    let tasks = workers.max(1);
    let (pm, pn) = (m.div_ceil(mr), n.div_ceil(nr));
    let min_gn = n.div_ceil(nt_max).clamp(1, pn);
    let mut best = (1, min_gn, usize::MAX);
    let mut best_even = None::<(usize, usize, usize)>;
    for gm in 1..=pm.min(tasks.max(1)) {
        let gn = tasks.div_ceil(gm).max(min_gn).min(pn);
        let cost = m * gn + n * gm;
        if cost < best.2 {
            best = (gm, gn, cost);
        }
        // The narrowest column cut from `gn` up that gives every worker the same count.
        if let Some(gn) = (gn..=pn).find(|g| (gm * g).is_multiple_of(workers.max(1))) {
            let cost = m * gn + n * gm;
            if best_even.is_none_or(|b| cost < b.2) {
                best_even = Some((gm, gn, cost));
            }
        }
    }
    let (gm, gn, _) = best_even.unwrap_or(best);
    (gm, gn)
}

/// The `i`th of `parts` near-equal ranges of whole `width` panels of `total` elements, as
/// (start, len) in elements (len 0 when there are fewer panels than parts; the last panel may
/// be short).
pub(crate) fn split(total: usize, width: usize, parts: usize, i: usize) -> (usize, usize) {
    let panels = total.div_ceil(width);
    let (lo, hi) = (panels * i / parts, panels * (i + 1) / parts);
    let start = lo * width;
    (start, (hi * width).min(total).saturating_sub(start))
}

/// The `k` slice length: `k` cut into the fewest slices of at most `kc_max`, of near-equal
/// length (a multiple of `unit`, ≤ `kc_max`), so that 576 = 288 + 288 rather than 512 + 64,
/// whose short slice costs a full load and store of `C` for little work.
pub(crate) fn k_slice(k: usize, kc_max: usize, unit: usize) -> usize {
    debug_assert!(kc_max.is_multiple_of(unit) && kc_max > 0);
    let slices = k.div_ceil(kc_max).max(1);
    k.div_ceil(slices).next_multiple_of(unit).min(kc_max)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grids_give_every_worker_the_same_number_of_tasks() {
        // 9728 columns need ≥ 5 ranges of ≤ 2048: 6 on two threads, not 5.
        assert_eq!(grid(576, 9728, 12, 32, 2048, 2), (1, 6));
        // Tall products cut rows: a row range per worker, whole columns.
        assert_eq!(grid(9728, 896, 12, 32, 2048, 2), (2, 1));
        assert_eq!(grid(9728, 896, 12, 32, 2048, 4), (4, 1));
        assert_eq!(grid(576, 896, 12, 32, 2048, 1), (1, 1));
        for (m, n, w) in [
            (576, 1152, 2),
            (576, 151936, 2),
            (151936, 896, 4),
            (100, 100, 3),
        ] {
            let (gm, gn) = grid(m, n, 12, 32, 2048, w);
            assert_eq!((gm * gn) % w, 0, "{m}x{n} on {w}: {gm}x{gn}");
            assert!(
                n.div_ceil(gn) <= 2048 + 32,
                "{m}x{n}: column ranges ≤ nt_max"
            );
        }
        // Too few panels to balance: the least-packing grid anyway.
        assert_eq!(grid(12, 32, 12, 32, 2048, 2), (1, 1));
    }

    #[test]
    fn splits_cover_the_range_in_whole_panels() {
        for (total, width, parts) in [(100, 12, 3), (9728, 32, 6), (5, 32, 2)] {
            let mut at = 0;
            for i in 0..parts {
                let (s, l) = split(total, width, parts, i);
                if l > 0 {
                    assert_eq!(s, at);
                    assert!(s.is_multiple_of(width));
                    at = s + l;
                }
            }
            assert_eq!(at, total);
        }
    }

    #[test]
    fn k_slices_are_balanced() {
        assert_eq!(k_slice(576, 512, 32), 288);
        assert_eq!(k_slice(896, 512, 32), 448);
        assert_eq!(k_slice(512, 512, 32), 512);
        assert_eq!(k_slice(4864, 512, 2), 488);
        assert_eq!(k_slice(4864, 512, 32), 512);
        assert_eq!(k_slice(9, 512, 2), 10);
        assert_eq!(k_slice(7, 512, 32), 32);
        assert_eq!(k_slice(576, 256, 16), 192);
        for k in 1..3000 {
            let s = k_slice(k, 512, 32);
            assert!(s <= 512 && s.is_multiple_of(32));
            assert_eq!(k.div_ceil(s), k.div_ceil(512), "k {k}: no extra slice");
        }
    }
}
