//! Row-wise kernels of the inference forward on plain slices: RMSNorm, rotary embedding,
//! SwiGLU and one query row's attention over the cache. Each is written once as portable
//! code the compiler vectorises and compiled for AVX-512 and AVX2 as well (picked at run
//! time), so no call goes through libm per element.

use std::sync::OnceLock;

use crate::model::host_kv::KEY_TILE;

/// Whether the CPU has AVX-512F (checked once). `GRPO_NO_AVX512=1` turns the AVX-512 kernels
/// off, to compare paths.
pub(crate) fn has_avx512() -> bool {
    static HAS: OnceLock<bool> = OnceLock::new();
    *HAS.get_or_init(|| {
        #[cfg(target_arch = "x86_64")]
        {
            std::env::var_os("GRPO_NO_AVX512").is_none()
                && std::arch::is_x86_feature_detected!("avx512f")
                && std::arch::is_x86_feature_detected!("avx512vl")
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            false
        }
    })
}

fn has_avx2() -> bool {
    static HAS: OnceLock<bool> = OnceLock::new();
    *HAS.get_or_init(|| {
        #[cfg(target_arch = "x86_64")]
        {
            std::arch::is_x86_feature_detected!("avx2")
                && std::arch::is_x86_feature_detected!("fma")
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            false
        }
    })
}

/// Defines `pub(crate) fn $name` that runs `$body` compiled for the best instruction set
/// this CPU has.
macro_rules! multiversion {
    ($(#[$doc:meta])* fn $name:ident($($arg:ident: $ty:ty),*) $(-> $ret:ty)? $body:block) => {
        $(#[$doc])*
        #[allow(clippy::too_many_arguments)]
        pub(crate) fn $name($($arg: $ty),*) $(-> $ret)? {
            #[inline(always)]
            #[allow(clippy::too_many_arguments)]
            fn inner($($arg: $ty),*) $(-> $ret)? $body
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx512f,avx512vl,avx2,fma")]
                #[allow(clippy::too_many_arguments)]
                unsafe fn v512($($arg: $ty),*) $(-> $ret)? { inner($($arg),*) }
                #[target_feature(enable = "avx2,fma")]
                #[allow(clippy::too_many_arguments)]
                unsafe fn v256($($arg: $ty),*) $(-> $ret)? { inner($($arg),*) }
                if has_avx512() {
                    // SAFETY: the features were detected on this CPU.
                    return unsafe { v512($($arg),*) };
                }
                if has_avx2() {
                    // SAFETY: as above.
                    return unsafe { v256($($arg),*) };
                }
            }
            inner($($arg),*)
        }
    };
}

/// `e^x` for `x <= 88`, relative error ~1e-7 (Cephes' range reduction and polynomial),
/// branch-free so loops over it vectorise. 0 below -87.
#[inline(always)]
pub(crate) fn exp(x_in: f32) -> f32 {
    let x = x_in.clamp(-87.0, 88.0);
    // Adding 1.5 * 2^23 rounds to the nearest integer.
    const ROUND: f32 = 12_582_912.0;
    let shifted = x * std::f32::consts::LOG2_E + ROUND;
    let k = shifted - ROUND;
    let k_int = shifted.to_bits().wrapping_sub(ROUND.to_bits()) as i32;
    let r = x - k * 0.693_359_4 - k * -2.121_944_4e-4;
    let mut p = 1.987_569_1e-4f32;
    p = p * r + 1.398_199_9e-3;
    p = p * r + 8.333_452e-3;
    p = p * r + 4.166_579_6e-2;
    p = p * r + 1.666_666_5e-1;
    p = p * r + 0.5;
    let y = p * r * r + r + 1.0;
    let e = y * f32::from_bits((k_int.wrapping_add(127) << 23) as u32);
    if x_in < -87.0 {
        0.0
    } else {
        e
    }
}

/// Sum with 16 independent lanes (a fixed order, so deterministic), which vectorises.
#[inline(always)]
fn lane_sum(a: &[f32]) -> f32 {
    let mut acc = [0f32; 16];
    let mut chunks = a.chunks_exact(16);
    for c in &mut chunks {
        for (s, &v) in acc.iter_mut().zip(c) {
            *s += v;
        }
    }
    let mut s: f32 = acc.iter().sum();
    for &v in chunks.remainder() {
        s += v;
    }
    s
}

multiversion! {
/// `out[r] = x[r] / sqrt(mean(x[r]²) + eps) · weight` for each row `r` of width `weight.len()`
/// (as transformers: the statistic and the scaling in f32).
fn rms_norm(x: &[f32], weight: &[f32], eps: f32, out: &mut [f32]) {
    let h = weight.len();
    for (xr, or) in x.chunks_exact(h).zip(out.chunks_exact_mut(h)) {
        let s = crate::model::kernels::rows::sum_squares(xr);
        let inv = 1.0 / (s / h as f32 + eps).sqrt();
        for ((o, &v), &g) in or.iter_mut().zip(xr).zip(weight) {
            *o = v * inv * g;
        }
    }
}
}

multiversion! {
/// `gate[i] = silu(gate[i]) · up[i]`.
fn silu_mul(gate: &mut [f32], up: &[f32]) {
    for (g, &u) in gate.iter_mut().zip(up) {
        let v = *g;
        *g = v / (1.0 + exp(-v)) * u;
    }
}
}

/// Rotates the `heads` consecutive head vectors of one row (each `cos.len() * 2` wide) by
/// the angles whose cosines and sines are `cos`, `sin` (half-split layout, as HF's
/// `rotate_half`).
pub(crate) fn rope(row: &mut [f32], cos: &[f32], sin: &[f32]) {
    let half = cos.len();
    for head in row.chunks_exact_mut(2 * half) {
        let (a, b) = head.split_at_mut(half);
        for i in 0..half {
            let (x1, x2) = (a[i], b[i]);
            a[i] = x1 * cos[i] - x2 * sin[i];
            b[i] = x2 * cos[i] + x1 * sin[i];
        }
    }
}

multiversion! {
/// The `n_rep = q.len() / d` query heads that share one key/value head, against the first
/// `len = valid.len()` cached positions. `kt` holds the keys in tiles of 16 positions, each
/// tile `d × 16` (dimension-major), so 16 scores come from contiguous 16-wide loads without
/// horizontal sums; `v` holds the values, one row of `d` per position. Softmax of
/// `scale · q·k` over the keys with `valid[j] != 0`, then the weighted sum of values into
/// `out` (`n_rep × d`). `scores` is scratch of `n_rep × len`. A head with no valid key gets
/// zeros.
fn attend_group(
    q: &[f32],
    kt: &[f32],
    v: &[f32],
    d: usize,
    valid: &[u8],
    scale: f32,
    scores: &mut [f32],
    out: &mut [f32]
) {
    const T: usize = KEY_TILE;
    let len = valid.len();
    let n_rep = q.len() / d;
    let d4 = d / 4 * 4;
    for h in 0..n_rep {
        let qh = &q[h * d..(h + 1) * d];
        let sh = &mut scores[h * len..(h + 1) * len];
        for (t, tile) in kt[..len.div_ceil(T) * T * d].chunks_exact(T * d).enumerate() {
            // Dimensions alternate over four independent accumulation chains.
            let mut acc = [[0f32; T]; 4];
            for (dd, kd4) in tile[..d4 * T].chunks_exact(4 * T).enumerate() {
                for (c, a) in acc.iter_mut().enumerate() {
                    let qv = qh[dd * 4 + c];
                    for l in 0..T {
                        a[l] += qv * kd4[c * T + l];
                    }
                }
            }
            for dd in d4..d {
                for l in 0..T {
                    acc[0][l] += qh[dd] * tile[dd * T + l];
                }
            }
            let n = (len - t * T).min(T);
            for l in 0..n {
                sh[t * T + l] = (acc[0][l] + acc[1][l]) + (acc[2][l] + acc[3][l]);
            }
        }
        let mut max = f32::NEG_INFINITY;
        for (s, &ok) in sh.iter_mut().zip(valid) {
            *s = if ok != 0 { *s * scale } else { f32::NEG_INFINITY };
            max = max.max(*s);
        }
        if max == f32::NEG_INFINITY {
            sh.fill(0.0);
            continue;
        }
        for s in sh.iter_mut() {
            *s = exp(*s - max);
        }
        let inv = 1.0 / lane_sum(sh);
        for s in sh.iter_mut() {
            *s *= inv;
        }
    }
    let v = &v[..len * d];
    for h in 0..n_rep {
        let sh = &scores[h * len..(h + 1) * len];
        let oh = &mut out[h * d..(h + 1) * d];
        // 64 dimensions (four chains) per sequential pass over the value rows.
        let mut d0 = 0;
        while d0 + 64 <= d {
            let mut acc = [[0f32; 16]; 4];
            for (vj, &p) in v.chunks_exact(d).zip(sh) {
                let vj = &vj[d0..d0 + 64];
                for (c, a) in acc.iter_mut().enumerate() {
                    for l in 0..16 {
                        a[l] += p * vj[c * 16 + l];
                    }
                }
            }
            for (c, a) in acc.iter().enumerate() {
                oh[d0 + c * 16..d0 + c * 16 + 16].copy_from_slice(a);
            }
            d0 += 64;
        }
        while d0 + 16 <= d {
            let mut acc = [0f32; 16];
            for (vj, &p) in v.chunks_exact(d).zip(sh) {
                let vj = &vj[d0..d0 + 16];
                for l in 0..16 {
                    acc[l] += p * vj[l];
                }
            }
            oh[d0..d0 + 16].copy_from_slice(&acc);
            d0 += 16;
        }
        for (dd, o) in oh.iter_mut().enumerate().skip(d0) {
            let mut acc = 0f32;
            for (vj, &p) in v.chunks_exact(d).zip(sh) {
                acc += p * vj[dd];
            }
            *o = acc;
        }
    }
}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_is_close_to_libm_and_zero_far_below() {
        for i in -2000..=880 {
            let x = i as f32 * 0.1;
            let (a, e) = (exp(x), x.exp());
            assert!(
                (a - e).abs() <= 2e-7 * e.max(1e-30) + 1e-37,
                "{x}: {a} vs {e}"
            );
        }
        assert_eq!(exp(f32::NEG_INFINITY), 0.0);
        assert_eq!(exp(-100.0), 0.0);
    }

    #[test]
    fn attend_group_matches_softmax_reference_and_skips_invalid_keys() {
        // Two query heads sharing one key head; 21 keys (one full tile of 16 and a partial one)
        // in a cache of capacity 24; head_dim 70 (a 64-wide pass, no 16-wide, a tail of 6).
        let (d, len, cap, n_rep): (usize, usize, usize, usize) = (70, 21, 24, 2);
        let q: Vec<f32> = (0..n_rep * d).map(|i| (i as f32 * 0.37).sin()).collect();
        let k: Vec<f32> = (0..len * d).map(|i| (i as f32 * 0.11).cos()).collect();
        let v: Vec<f32> = (0..len * d).map(|i| (i as f32 * 0.07).sin()).collect();
        let mut kt = vec![0f32; cap.div_ceil(KEY_TILE) * KEY_TILE * d];
        for j in 0..len {
            for i in 0..d {
                kt[(j / KEY_TILE * d + i) * KEY_TILE + j % KEY_TILE] = k[j * d + i];
            }
        }
        let valid: Vec<u8> = (0..len).map(|j| u8::from(j % 4 != 1)).collect();
        let mut scores = vec![0f32; n_rep * len];
        let mut out = vec![0f32; n_rep * d];
        attend_group(&q, &kt, &v, d, &valid, 0.5, &mut scores, &mut out);
        for h in 0..n_rep {
            let s: Vec<f64> = (0..len)
                .map(|j| {
                    if valid[j] == 0 {
                        f64::NEG_INFINITY
                    } else {
                        0.5 * (0..d)
                            .map(|i| f64::from(q[h * d + i]) * f64::from(k[j * d + i]))
                            .sum::<f64>()
                    }
                })
                .collect();
            let z: f64 = s.iter().map(|x| x.exp()).sum();
            for i in 0..d {
                let want: f64 = (0..len)
                    .map(|j| s[j].exp() / z * f64::from(v[j * d + i]))
                    .sum();
                assert!((f64::from(out[h * d + i]) - want).abs() < 1e-5, "{h} {i}");
            }
        }
        attend_group(&q, &kt, &v, d, &vec![0u8; len], 0.5, &mut scores, &mut out);
        assert!(out.iter().all(|&o| o == 0.0));
    }

    #[test]
    fn rms_norm_and_silu_match_definitions() {
        let x: Vec<f32> = (0..40).map(|i| i as f32 * 0.1 - 2.0).collect();
        let w: Vec<f32> = (0..20).map(|i| 1.0 + i as f32 * 0.01).collect();
        let mut out = vec![0f32; 40];
        rms_norm(&x, &w, 1e-6, &mut out);
        for r in 0..2 {
            let row = &x[r * 20..(r + 1) * 20];
            let ms: f64 = row
                .iter()
                .map(|&v| f64::from(v) * f64::from(v))
                .sum::<f64>()
                / 20.0;
            for i in 0..20 {
                let want = f64::from(row[i]) / (ms + 1e-6).sqrt() * f64::from(w[i]);
                assert!((f64::from(out[r * 20 + i]) - want).abs() < 1e-5);
            }
        }
        let mut g = x.clone();
        silu_mul(&mut g, &w.repeat(2));
        for i in 0..40 {
            let v = f64::from(x[i]);
            let want = v / (1.0 + (-v).exp()) * f64::from(w[i % 20]);
            assert!((f64::from(g[i]) - want).abs() < 1e-6);
        }
    }
}
