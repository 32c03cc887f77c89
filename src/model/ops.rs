//! Fused CPU ops with hand-written backward passes for the two largest tensors of a training
//! step: the attention probabilities `[B, H, T, T]` and the vocabulary logits `[B, T, V]`.
//!
//! Composed from basic candle ops, each of these costs ~10 full passes and as many temporary
//! allocations (candle's backprop also adds a zero-filled accumulator per node); fused they
//! cost one pass forward and one backward. candle's own fused `softmax_last_dim` has no
//! backward at all, which silently zeroes gradients: these ops implement `bwd`, and the tests
//! check them against the composed versions. Only f32 on CPU; callers fall back to the
//! composed ops elsewhere.

use candle_core::{bail, CpuStorage, CustomOp2, Layout, Result, Shape, Tensor, D};
use rayon::prelude::*;

/// Rows per rayon task: amortises scheduling for short rows.
const ROWS_PER_TASK: usize = 64;

/// The contiguous f32 data of a CPU tensor; shared by every fused op.
pub(crate) fn f32_slice<'a>(s: &'a CpuStorage, l: &Layout, what: &str) -> Result<&'a [f32]> {
    let CpuStorage::F32(v) = s else {
        bail!("{what}: expected f32 storage")
    };
    let Some((a, b)) = l.contiguous_offsets() else {
        bail!("{what}: expected a contiguous tensor")
    };
    Ok(&v[a..b])
}

/// A zero-filled f32 buffer, cleared on every rayon thread when it is large: `vec![0.0; n]`
/// clears on the calling thread alone (the allocator recycles freed memory, so calloc
/// must memset), which leaves the other cores idle for a 64 MB logits block.
pub(crate) fn zeroed(len: usize) -> Vec<f32> {
    const PAR_MIN: usize = 1 << 20;
    if len < PAR_MIN {
        return vec![0.0; len];
    }
    let mut v = Vec::with_capacity(len);
    v.spare_capacity_mut()
        .par_chunks_mut(1 << 16)
        .for_each(|c| c.fill(std::mem::MaybeUninit::new(0.0)));
    // SAFETY: every element of the first `len` was written just above.
    unsafe { v.set_len(len) };
    v
}

/// Differentiable softmax over the last axis (the composed reference of [`MaskedSoftmax`] and
/// the fallback where it does not run): the max is detached because softmax is
/// shift-invariant, so it carries no gradient.
pub(crate) fn softmax_train(x: &Tensor) -> Result<Tensor> {
    let max = x.max_keepdim(D::Minus1)?.detach();
    let e = x.broadcast_sub(&max)?.exp()?;
    let s = e.sum_keepdim(D::Minus1)?;
    e.broadcast_div(&s)
}

/// `softmax(scores + bias)` over the last axis, `scores [B, H, T, L]`, `bias [B, 1, T, L]`
/// shared by all heads; the gradient flows to `scores` only.
#[derive(Debug, Clone, Copy)]
pub(crate) struct MaskedSoftmax;

impl CustomOp2 for MaskedSoftmax {
    fn name(&self) -> &'static str {
        "masked-softmax"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let x = f32_slice(s1, l1, "masked-softmax scores")?;
        let m = f32_slice(s2, l2, "masked-softmax bias")?;
        let (b, h, t, l) = l1.shape().dims4()?;
        if l2.shape().dims4()? != (b, 1, t, l) {
            bail!(
                "masked-softmax: bias shape {:?} does not fit scores {:?}",
                l2.shape(),
                l1.shape()
            )
        }
        let mut out = vec![0f32; x.len()];
        out.par_chunks_mut(l * ROWS_PER_TASK)
            .enumerate()
            .for_each(|(chunk, ys)| {
                for (k, y) in ys.chunks_mut(l).enumerate() {
                    let row = chunk * ROWS_PER_TASK + k;
                    let (bi, ti) = (row / (h * t), row % t);
                    let xr = &x[row * l..(row + 1) * l];
                    let mr = &m[(bi * t + ti) * l..(bi * t + ti + 1) * l];
                    let mut max = f32::NEG_INFINITY;
                    for ((yv, &xv), &mv) in y.iter_mut().zip(xr).zip(mr) {
                        *yv = xv + mv;
                        max = max.max(*yv);
                    }
                    let mut sum = 0f32;
                    for yv in y.iter_mut() {
                        *yv = (*yv - max).exp();
                        sum += *yv;
                    }
                    let inv = 1.0 / sum;
                    for yv in y.iter_mut() {
                        *yv *= inv;
                    }
                }
            });
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }

    fn bwd(
        &self,
        _scores: &Tensor,
        _bias: &Tensor,
        res: &Tensor,
        grad_res: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let g = res.apply_op2_no_bwd(&grad_res.contiguous()?, &SoftmaxGrad)?;
        Ok((Some(g), None))
    }
}

/// `y * (g - sum(g * y))` row-wise: the softmax vector-Jacobian product.
struct SoftmaxGrad;

impl CustomOp2 for SoftmaxGrad {
    fn name(&self) -> &'static str {
        "softmax-grad"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let y = f32_slice(s1, l1, "softmax-grad probs")?;
        let g = f32_slice(s2, l2, "softmax-grad grad")?;
        let l = l1.shape().dims().last().copied().unwrap_or(1).max(1);
        if y.len() != g.len() {
            bail!(
                "softmax-grad: shape mismatch {:?} {:?}",
                l1.shape(),
                l2.shape()
            )
        }
        let mut out = vec![0f32; y.len()];
        out.par_chunks_mut(l * ROWS_PER_TASK)
            .enumerate()
            .for_each(|(chunk, os)| {
                for (k, o) in os.chunks_mut(l).enumerate() {
                    let row = chunk * ROWS_PER_TASK + k;
                    let yr = &y[row * l..(row + 1) * l];
                    let gr = &g[row * l..(row + 1) * l];
                    let dot: f32 = yr.iter().zip(gr).map(|(a, b)| a * b).sum();
                    for ((ov, &yv), &gv) in o.iter_mut().zip(yr).zip(gr) {
                        *ov = yv * (gv - dot);
                    }
                }
            });
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }
}

/// Deterministic test tensors and their comparison, shared by the fused ops' tests.
#[cfg(test)]
pub(crate) mod test_tensors {
    use candle_core::{Device, Tensor};

    /// Uniform values in `[-scale/2, scale/2)` from a seeded LCG (no global RNG state).
    pub(crate) fn randn(shape: &[usize], seed: u64, scale: f32) -> Tensor {
        let n: usize = shape.iter().product();
        let mut x = seed.wrapping_mul(6364136223846793005).wrapping_add(1);
        let v: Vec<f32> = (0..n)
            .map(|_| {
                x = x
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                ((x >> 33) as f32 / (1u64 << 31) as f32 - 0.5) * scale
            })
            .collect();
        Tensor::from_vec(v, shape, &Device::Cpu).unwrap()
    }

    /// The largest absolute difference of two tensors of one shape.
    pub(crate) fn max_abs(a: &Tensor, b: &Tensor) -> f32 {
        (a - b)
            .unwrap()
            .abs()
            .unwrap()
            .flatten_all()
            .unwrap()
            .max(0)
            .unwrap()
            .to_scalar::<f32>()
            .unwrap()
    }
}

#[cfg(test)]
mod tests {
    use super::test_tensors::{max_abs, randn};
    use super::*;
    use candle_core::{Device, Var};

    #[test]
    fn masked_softmax_matches_composed_values_and_grads() {
        let (b, h, t, l) = (2, 3, 5, 7);
        let x = Var::from_tensor(&randn(&[b, h, t, l], 1, 6.0)).unwrap();
        let mut bias = vec![0f32; b * t * l];
        for (i, v) in bias.iter_mut().enumerate() {
            if i % 3 == 0 {
                *v = -1e30;
            }
        }
        let bias = Tensor::from_vec(bias, (b, 1, t, l), &Device::Cpu).unwrap();
        let w = randn(&[b, h, t, l], 2, 6.0);
        let fused = x.as_tensor().apply_op2(&bias, MaskedSoftmax).unwrap();
        let composed = softmax_train(&x.broadcast_add(&bias).unwrap()).unwrap();
        assert!(max_abs(&fused, &composed) < 1e-6);
        let gf = (fused * &w).unwrap().sum_all().unwrap().backward().unwrap();
        let gc = (composed * &w)
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        let (gf, gc) = (gf.get(&x).unwrap(), gc.get(&x).unwrap());
        assert!(max_abs(gf, gc) < 1e-5, "{}", max_abs(gf, gc));
        assert!(
            gf.abs()
                .unwrap()
                .sum_all()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap()
                > 1.0
        );
    }
}
