//! `y (+)= x · Wᵀ + b` for the few-row products of bf16 decoding, `W` a bf16 weight stored
//! `n × k` (its copy in `bf16_copies`): `x` is rounded to bf16 (nearest even), products are
//! exact in f32 and summed in f32, as `bf16::matmul_bf16` does. A plain, correct version: each
//! task converts a block of weight rows to f32 once and takes dot products along `k`.

use rayon::prelude::*;

use super::bf16::{from_bf16, to_bf16};

/// Weight rows per task.
const ROWS: usize = 32;

/// `Σ a[p]·b[p]` in f32 with eight partial sums (vectorisable).
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for i in 0..8 {
            acc[i] += x[i] * y[i];
        }
    }
    let mut s = acc.iter().sum::<f32>();
    for (x, y) in ra.iter().zip(rb) {
        s += x * y;
    }
    s
}

/// `y[i, j] = (accumulate ? y[i, j] : 0) + Σ_p bf16(x[i, p])·w[j, p] + bias[j]` for `x`
/// `m × k` (f32), `w` `n × k` (bf16 bits), `y` `m × n`, all row-major and contiguous.
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
    let xr: Vec<f32> = x[..m * k].iter().map(|&v| from_bf16(to_bf16(v))).collect();
    // Each block: its columns for every row, `[m, c]`.
    let blocks: Vec<Vec<f32>> = (0..n.div_ceil(ROWS))
        .into_par_iter()
        .map(|blk| {
            let (j0, j1) = (blk * ROWS, ((blk + 1) * ROWS).min(n));
            let c = j1 - j0;
            let wf: Vec<f32> = w[j0 * k..j1 * k].iter().map(|&v| from_bf16(v)).collect();
            let mut out = vec![0f32; m * c];
            for i in 0..m {
                let xi = &xr[i * k..(i + 1) * k];
                for j in 0..c {
                    out[i * c + j] = dot(xi, &wf[j * k..(j + 1) * k]);
                }
            }
            out
        })
        .collect();
    for (blk, out) in blocks.iter().enumerate() {
        let j0 = blk * ROWS;
        let c = out.len() / m;
        for i in 0..m {
            let row = &mut y[i * n + j0..i * n + j0 + c];
            for (j, (o, &v)) in row.iter_mut().zip(&out[i * c..(i + 1) * c]).enumerate() {
                let b = bias.map_or(0.0, |b| b[j0 + j]);
                *o = if accumulate { *o + v + b } else { v + b };
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_f64_of_rounded_inputs_with_bias_and_accumulate() {
        for (m, k, n) in [(1, 1, 1), (3, 37, 70), (8, 64, 33)] {
            let x: Vec<f32> = (0..m * k).map(|i| (i as f32 * 0.37).sin()).collect();
            let w: Vec<u16> = (0..n * k)
                .map(|i| to_bf16((i as f32 * 0.13).cos()))
                .collect();
            let b: Vec<f32> = (0..n).map(|j| j as f32 * 0.5).collect();
            let mut y = vec![1f32; m * n];
            gemm_nt_bf16(&x, m, k, &w, n, Some(&b), &mut y, true);
            for i in 0..m {
                for j in 0..n {
                    let want: f64 = 1.0
                        + b[j] as f64
                        + (0..k)
                            .map(|p| {
                                from_bf16(to_bf16(x[i * k + p])) as f64
                                    * from_bf16(w[j * k + p]) as f64
                            })
                            .sum::<f64>();
                    let got = y[i * n + j] as f64;
                    assert!(
                        (got - want).abs() < 1e-4 * (1.0 + want.abs()),
                        "{m}x{k}x{n}"
                    );
                }
            }
        }
    }
}
