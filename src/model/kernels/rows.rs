//! Row-wise maps over vocabulary-sized rows: log-softmax of one target with the entropy, and
//! its gradient. `exp` is a polynomial that the compiler vectorises (libm's is a scalar call
//! per element); each kernel is compiled for AVX-512 and AVX2 as well and picked at run time.

/// `e^x` to ~2 ulp for finite `x`; 0 below -87.3, +inf above 88.7.
#[inline(always)]
pub fn exp(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_145_75;
    const LN2_LO: f32 = 1.428_606_8e-6;
    let x = x.clamp(-87.5, 88.5);
    let n = (x * LOG2E).round();
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
    let ni = n as i32;
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
