//! Row-wise maps over vocabulary-sized rows: log-softmax of one target with the entropy, and
//! its gradient. `exp` is a polynomial that the compiler vectorises (libm's is a scalar call
//! per element); each kernel is compiled for AVX-512 and AVX2 as well and picked at run time.

/// `e^x` to ~2 ulp for finite `x`; 0 below -87.3, +inf above 88.7.
#[inline(always)]
pub fn exp(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_145_75;
    const LN2_LO: f32 = 1.428_606_8e-6;
    // Round to nearest by adding and subtracting 1.5·2²³ (|x·log2 e| < 128 after the clamp):
    // plain adds vectorise on any x86, where `f32::round` is a libm call per element.
    const SHIFT: f32 = 12_582_912.0;
    let x = x.clamp(-87.5, 88.5);
    let t = x * LOG2E + SHIFT;
    let n = t - SHIFT;
    let r = (x - n * LN2_HI) - n * LN2_LO;
    // exp(r) on |r| <= ln2/2: Taylor to r^7 (error < 3e-9 relative).
    let p = 1.0 / 5040.0;
    let p = p * r + 1.0 / 720.0;
    let p = p * r + 1.0 / 120.0;
    let p = p * r + 1.0 / 24.0;
    let p = p * r + 1.0 / 6.0;
    let p = p * r + 0.5;
    let p = p * r + 1.0;
    let p = p * r + 1.0;
    // 2^n by building the exponent; n + 127 stays in [1, 254] after the clamp except at the
    // low end, where scaling in two steps keeps it exact down to the subnormals.
    // n as an integer from the bits of t = 1.5·2²³ + n (exact for |n| < 2²²): integer lanes,
    // where `n as i32` (saturating, NaN to 0) was converted one lane at a time.
    let ni = t.to_bits() as i32 - SHIFT.to_bits() as i32;
    let half = ni / 2;
    let s1 = f32::from_bits(((half + 127) as u32) << 23);
    let s2 = f32::from_bits(((ni - half + 127) as u32) << 23);
    let y = p * s1 * s2;
    if x <= -87.4 {
        0.0
    } else {
        y
    }
}

/// Runs `$body` compiled for the best instruction set this CPU has.
macro_rules! multiversion {
    (fn $name:ident($($arg:ident: $ty:ty),*) -> $ret:ty $body:block) => {
        pub fn $name($($arg: $ty),*) -> $ret {
            #[inline(always)]
            fn inner($($arg: $ty),*) -> $ret $body
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,avx2,fma")]
                unsafe fn v512($($arg: $ty),*) -> $ret { inner($($arg),*) }
                #[target_feature(enable = "avx2,fma")]
                unsafe fn v256($($arg: $ty),*) -> $ret { inner($($arg),*) }
                if std::arch::is_x86_feature_detected!("avx512f")
                    && std::arch::is_x86_feature_detected!("avx512bw")
                    && std::arch::is_x86_feature_detected!("avx512vl")
                    && std::arch::is_x86_feature_detected!("avx512dq")
                {
                    // SAFETY: the features were detected on this CPU.
                    return unsafe { v512($($arg),*) };
                }
                if std::arch::is_x86_feature_detected!("avx2")
                    && std::arch::is_x86_feature_detected!("fma")
                {
                    // SAFETY: as above.
                    return unsafe { v256($($arg),*) };
                }
            }
            inner($($arg),*)
        }
    };
}
#[allow(unused_imports)]
pub(crate) use multiversion;

multiversion! {
fn row_max(x: &[f32]) -> f32 {
    let mut m = [f32::NEG_INFINITY; 16];
    let mut chunks = x.chunks_exact(16);
    for c in &mut chunks {
        for (a, &b) in m.iter_mut().zip(c) {
            *a = a.max(b);
        }
    }
    let mut out = m.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b));
    for &v in chunks.remainder() {
        out = out.max(v);
    }
    out
}
}

multiversion! {
fn scale_bias(z: &mut [f32], s: f32, bias: Option<&[f32]>) -> () {
    match bias {
        Some(b) => {
            for (v, &bv) in z.iter_mut().zip(b) {
                *v = *v * s + bv;
            }
        }
        None => {
            if s != 1.0 {
                for v in z.iter_mut() {
                    *v *= s;
                }
            }
        }
    }
}
}

multiversion! {
fn sum_exp_and_weighted(z: &[f32], max: f32) -> (f32, f32) {
    // (sum e^(z-max), sum e^(z-max) * (z-max)): the second gives the entropy without a
    // second pass. Lanes of 16 keep the reductions vectorised.
    let mut s = [0f32; 16];
    let mut w = [0f32; 16];
    let mut chunks = z.chunks_exact(16);
    for c in &mut chunks {
        for i in 0..16 {
            let d = c[i] - max;
            let e = exp(d);
            s[i] += e;
            // Masked entries (e = 0) contribute nothing even when d is -inf-like.
            w[i] += if e > 0.0 { e * d } else { 0.0 };
        }
    }
    let mut st: f32 = s.iter().sum();
    let mut wt: f32 = w.iter().sum();
    for &v in chunks.remainder() {
        let d = v - max;
        let e = exp(d);
        st += e;
        wt += if e > 0.0 { e * d } else { 0.0 };
    }
    (st, wt)
}
}

multiversion! {
fn softmax_grad_fill(x: &mut [f32], s: f32, bias: Option<&[f32]>, lse: f32, gs: f32) -> () {
    // x holds raw logits; becomes -gs * softmax(z) with z = x*s + bias.
    match bias {
        Some(b) => {
            for (v, &bv) in x.iter_mut().zip(b) {
                *v = -gs * exp(*v * s + bv - lse);
            }
        }
        None => {
            for v in x.iter_mut() {
                *v = -gs * exp(*v * s - lse);
            }
        }
    }
}
}

multiversion! {
fn swiglu_row(gate: &[f32], up: &[f32], out: &mut [f32]) -> () {
    for ((y, &g), &u) in out.iter_mut().zip(gate).zip(up) {
        *y = g / (1.0 + exp(-g)) * u;
    }
}
}

multiversion! {
fn swiglu_grad_row(gate: &[f32], up: &[f32], g: &[f32], dgate: &mut [f32], dup: &mut [f32]) -> () {
    let n = gate.len().min(up.len()).min(g.len()).min(dgate.len()).min(dup.len());
    for j in 0..n {
        let s = 1.0 / (1.0 + exp(-gate[j]));
        dup[j] = g[j] * gate[j] * s;
        dgate[j] = g[j] * up[j] * s * (1.0 + gate[j] * (1.0 - s));
    }
}
}

multiversion! {
fn sum_squares(x: &[f32]) -> f32 {
    // 16 lanes, so the sum vectorises.
    let mut s = [0f32; 16];
    let mut chunks = x.chunks_exact(16);
    for c in &mut chunks {
        for i in 0..16 {
            s[i] += c[i] * c[i];
        }
    }
    let mut t: f32 = s.iter().sum();
    for &v in chunks.remainder() {
        t += v * v;
    }
    t
}
}

multiversion! {
fn rms_norm_row(x: &[f32], w: &[f32], inv: f32, out: &mut [f32]) -> () {
    for ((y, &xv), &wv) in out.iter_mut().zip(x).zip(w) {
        *y = xv * inv * wv;
    }
}
}

multiversion! {
fn rms_norm_grad_row(x: &[f32], w: &[f32], g: &[f32], inv: f32, dx: &mut [f32], dw: &mut [f32]) -> () {
    // xhat = x·inv; dxhat = g·w; dx = inv·(dxhat − xhat·mean(dxhat·xhat)).
    let h = x.len().min(w.len()).min(g.len()).min(dx.len()).min(dw.len());
    let mut lanes = [0f32; 16];
    let mut j = 0;
    while j + 16 <= h {
        for l in 0..16 {
            let xh = x[j + l] * inv;
            dw[j + l] += g[j + l] * xh;
            lanes[l] += g[j + l] * w[j + l] * xh;
        }
        j += 16;
    }
    let mut dot: f32 = lanes.iter().sum();
    while j < h {
        let xh = x[j] * inv;
        dw[j] += g[j] * xh;
        dot += g[j] * w[j] * xh;
        j += 1;
    }
    let mean = dot / h as f32;
    for j in 0..h {
        dx[j] = inv * (g[j] * w[j] - x[j] * inv * mean);
    }
}
}

multiversion! {
fn masked_softmax_row(row: &mut [f32], valid: &[u8]) -> f32 {
    // Softmax over the entries whose `valid` byte is non-zero (the rest become 0), in place;
    // returns the log-sum-exp, or -inf when nothing is valid (the row is zeroed).
    //
    // The sum runs in 16 lanes over the valid entries counted from the first one, so it comes
    // out bit-identical wherever the masked entries sit: a padded row and the same keys
    // unpadded (`train.share_prefixes`) give the same probabilities.
    let n = row.len().min(valid.len());
    let (row, valid) = (&mut row[..n], &valid[..n]);
    // A select, then a 16-lane max: both vectorise (a branch in the loop kept it scalar).
    for (x, &v) in row.iter_mut().zip(valid) {
        *x = if v == 0 { f32::NEG_INFINITY } else { *x };
    }
    let m = lane_max(row);
    if m == f32::NEG_INFINITY {
        row.fill(0.0);
        return f32::NEG_INFINITY;
    }
    for x in row.iter_mut() {
        *x = exp(*x - m);
    }
    // No masked entry (every causal row without padding): one vectorised count, not three
    // byte-by-byte scans.
    let all_valid = valid.iter().filter(|&&v| v == 0).count() == 0;
    let first = if all_valid {
        0
    } else {
        valid.iter().position(|&v| v != 0).unwrap_or(n)
    };
    let last = if all_valid {
        n
    } else {
        valid.iter().rposition(|&v| v != 0).map_or(first, |l| l + 1)
    };
    let run = &row[first..last];
    let sum = if all_valid || valid[first..last].iter().all(|&v| v != 0) {
        lane_sum(run)
    } else {
        let kept: Vec<f32> = run
            .iter()
            .zip(&valid[first..last])
            .filter(|(_, &v)| v != 0)
            .map(|(x, _)| *x)
            .collect();
        lane_sum(&kept)
    };
    let inv = 1.0 / sum;
    for x in row.iter_mut() {
        *x *= inv;
    }
    m + sum.ln()
}
}

/// The largest of `x` (-inf when empty), in 16 lanes (vectorisable; max is exact in any order).
#[inline(always)]
fn lane_max(x: &[f32]) -> f32 {
    let mut lanes = [f32::NEG_INFINITY; 16];
    let mut chunks = x.chunks_exact(16);
    for c in &mut chunks {
        for i in 0..16 {
            lanes[i] = lanes[i].max(c[i]);
        }
    }
    let mut t = lanes.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b));
    for &v in chunks.remainder() {
        t = t.max(v);
    }
    t
}

/// `x[0] + x[1] + ...` in 16 lanes (vectorisable), the lanes added in order, then the tail.
#[inline(always)]
fn lane_sum(x: &[f32]) -> f32 {
    let mut lanes = [0f32; 16];
    let mut chunks = x.chunks_exact(16);
    for c in &mut chunks {
        for i in 0..16 {
            lanes[i] += c[i];
        }
    }
    let mut t: f32 = lanes.iter().sum();
    for &v in chunks.remainder() {
        t += v;
    }
    t
}

multiversion! {
fn attention_grad_row(p: &mut [f32], dp: &mut [f32], valid: &[u8], lse: f32, di: f32) -> () {
    // p holds scores, dp holds dO·Vᵀ; they become the probabilities exp(score − lse) (0 where
    // not valid) and dS = p·(dp − di).
    let n = p.len().min(dp.len()).min(valid.len());
    for j in 0..n {
        let pj = if valid[j] != 0 { exp(p[j] - lse) } else { 0.0 };
        p[j] = pj;
        dp[j] = pj * (dp[j] - di);
    }
}
}

multiversion! {
fn rope_row(x: &[f32], cos: &[f32], sin: &[f32], scale: f32, out: &mut [f32]) -> () {
    // Rotates the halves of one head: (x1·c − x2·s, x2·c + x1·s), times `scale`.
    let half = cos.len().min(sin.len());
    let (x1, x2) = x.split_at(half);
    let (o1, o2) = out.split_at_mut(half);
    for j in 0..half.min(x2.len()).min(o2.len()) {
        o1[j] = (x1[j] * cos[j] - x2[j] * sin[j]) * scale;
        o2[j] = (x2[j] * cos[j] + x1[j] * sin[j]) * scale;
    }
}
}

multiversion! {
fn unrope_row(r: &mut [f32], cos: &[f32], sin: &[f32]) -> () {
    // The transpose of `rope_row` (scale 1), in place.
    let half = cos.len().min(sin.len());
    let (r1, r2) = r.split_at_mut(half);
    for j in 0..half.min(r2.len()) {
        let (a, z) = (r1[j], r2[j]);
        r1[j] = a * cos[j] + z * sin[j];
        r2[j] = z * cos[j] - a * sin[j];
    }
}
}

/// Overwrites a block of one row's raw logits `x` with `d/dx [g * log p(target)]`
/// `= g * s * (onehot(target) - softmax(x*s + bias))`, given the row's log-sum-exp `lse` from
/// the forward; `target` is the target's index within the block, if it falls in it.
pub fn logprob_grad_block(
    x: &mut [f32],
    s: f32,
    bias: Option<&[f32]>,
    target: Option<usize>,
    lse: f32,
    g: f32,
) {
    let gs = g * s;
    softmax_grad_fill(x, s, bias, lse, gs);
    if let Some(t) = target {
        x[t] += gs;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masked_softmax_is_the_same_wherever_the_masked_entries_sit() {
        let keys: Vec<f32> = (0..37)
            .map(|i| ((i * 7919) % 101) as f32 / 17.0 - 3.0)
            .collect();
        let mut plain = keys.clone();
        let lse = masked_softmax_row(&mut plain, &[1u8; 37]);
        let want: f32 = keys.iter().map(|k| k.exp()).sum::<f32>().ln();
        assert!((lse - want).abs() < 1e-5, "{lse} vs {want}");
        // Left padding of 5, and masked entries inside the row: same probabilities, bit for bit.
        for layout in [vec![0usize, 1, 2, 3, 4], vec![0, 3, 9, 20, 41]] {
            let len = 37 + layout.len();
            let (mut row, mut valid) = (vec![9.0f32; len], vec![1u8; len]);
            let mut k = keys.iter();
            for j in 0..len {
                if layout.contains(&j) {
                    valid[j] = 0;
                } else {
                    row[j] = *k.next().unwrap();
                }
            }
            assert_eq!(
                masked_softmax_row(&mut row, &valid).to_bits(),
                lse.to_bits()
            );
            let kept: Vec<f32> = (0..len)
                .filter(|&j| valid[j] != 0)
                .map(|j| row[j])
                .collect();
            assert!(kept
                .iter()
                .zip(&plain)
                .all(|(a, b)| a.to_bits() == b.to_bits()));
            assert!((0..len).filter(|&j| valid[j] == 0).all(|j| row[j] == 0.0));
        }
        let mut none = vec![1.0f32; 4];
        assert_eq!(masked_softmax_row(&mut none, &[0; 4]), f32::NEG_INFINITY);
        assert_eq!(none, vec![0.0; 4]);
    }

    #[test]
    fn exp_is_close_to_libm_over_the_range() {
        let mut worst = 0f32;
        let mut x = -87.0f32;
        while x < 88.0 {
            let (a, b) = (exp(x), x.exp());
            worst = worst.max(((a - b) / b).abs());
            x += 0.0137;
        }
        assert!(worst < 1e-6, "worst relative error {worst}");
        assert_eq!(exp(-1e30), 0.0);
        assert_eq!(exp(-100.0), 0.0);
        assert!(exp(100.0).is_infinite() || exp(100.0) > 1e38);
        assert_eq!(exp(0.0), 1.0);
    }
}
