//! The whole SwiGLU MLP, `down(silu(x Wgᵀ) * (x Wuᵀ))`, as one op with its own backward.
//!
//! Composed of a gate/up `LinearOp` and `SwiGluDown`, the `[.., 2·I]` gate/up product is a
//! graph node, and candle's backward gives every node a zero-filled gradient that the real
//! one is then added into: for the largest activation of a layer that is a memset and an add
//! on the calling thread alone (taking it out made a bench-shape bf16 step about 6% faster). Here that product
//! lives in the op, kept from forward to backward, and never enters the graph.

use std::sync::{Arc, Mutex};

use candle_core::{bail, CpuStorage, CustomOp3, Layout, Result, Shape, Storage, Tensor};

use super::bf16_copies::{matmul_act, WeightPrec};
use super::kernels::gemm::Operand;
use super::layer_ops::{swiglu_down_backward, swiglu_rows};
use super::ops::{f32_slice as f32s, zeroed};

/// `down(silu(gate) * up)` with `[gate; up] = x W_guᵀ`, for `x [.., H]`, the stacked gate/up
/// weight `W_gu [2·I, H]` and the down weight `W_d [H, I]` (no biases) → `[.., H]`.
#[derive(Debug, Clone, Default)]
pub(crate) struct SwiGluMlp {
    /// Precision and bf16 copy of the gate/up product.
    pub gate_up: WeightPrec,
    /// Precision and bf16 copy of the down product.
    pub down: WeightPrec,
    /// The forward's `[N, 2·I]` gate/up product, for the backward.
    pub saved: Arc<Mutex<Option<Vec<f32>>>>,
}

/// (rows, H, I) of a call, checked.
fn dims(x: &Shape, wgu: &Shape, wd: &Shape) -> Result<(usize, usize, usize)> {
    let (i2, h) = wgu.dims2()?;
    let (hd, i) = wd.dims2()?;
    let (Some(&hx), true) = (x.dims().last(), i2 == 2 * i && hd == h && i > 0) else {
        bail!("swiglu-mlp: x {x:?}, gate/up {wgu:?} and down {wd:?} do not fit")
    };
    if hx != h {
        bail!("swiglu-mlp: x {x:?} does not fit gate/up {wgu:?}")
    }
    Ok((x.elem_count() / h, h, i))
}

impl SwiGluMlp {
    fn saved(&self) -> Result<std::sync::MutexGuard<'_, Option<Vec<f32>>>> {
        self.saved
            .lock()
            .map_err(|_| candle_core::Error::Msg("swiglu-mlp lock".into()))
    }
}

impl CustomOp3 for SwiGluMlp {
    fn name(&self) -> &'static str {
        "swiglu-mlp"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (n, h, i) = dims(l1.shape(), l2.shape(), l3.shape())?;
        let x = f32s(s1, l1, "swiglu-mlp x")?;
        let wgu = f32s(s2, l2, "swiglu-mlp gate/up weight")?;
        let wd = f32s(s3, l3, "swiglu-mlp down weight")?;
        self.gate_up.check(wgu.len(), "swiglu-mlp gate/up")?;
        self.down.check(wd.len(), "swiglu-mlp down")?;
        let mut gu = zeroed(n * 2 * i);
        self.gate_up.matmul(
            &mut gu,
            2 * i,
            Operand::new(x, h),
            Operand::t(wgu, h),
            0,
            n,
            2 * i,
            h,
            false,
        );
        let mut act = zeroed(n * i);
        swiglu_rows(&gu, &mut act, i);
        let mut y = zeroed(n * h);
        self.down.matmul(
            &mut y,
            h,
            Operand::new(&act, i),
            Operand::t(wd, i),
            0,
            n,
            h,
            i,
            false,
        );
        *self.saved()? = Some(gu);
        Ok((CpuStorage::F32(y), l1.shape().clone()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        wgu: &Tensor,
        wd: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let (n, h, i) = dims(x.shape(), wgu.shape(), wd.shape())?;
        let grad = grad.contiguous()?;
        let saved = self.saved()?;
        let Some(gu) = saved.as_ref().filter(|g| g.len() == n * 2 * i) else {
            bail!("swiglu-mlp: backward without a forward of the same shape")
        };
        let (xs, xl) = x.storage_and_layout();
        let (gus, gul) = wgu.storage_and_layout();
        let (ds, dl) = wd.storage_and_layout();
        let (gs, gl) = grad.storage_and_layout();
        let (Storage::Cpu(xs), Storage::Cpu(gus), Storage::Cpu(ds), Storage::Cpu(gs)) =
            (&*xs, &*gus, &*ds, &*gs)
        else {
            bail!("swiglu-mlp: CPU only")
        };
        let xv = f32s(xs, xl, "swiglu-mlp x")?;
        let wguv = f32s(gus, gul, "swiglu-mlp gate/up weight")?;
        let wdv = f32s(ds, dl, "swiglu-mlp down weight")?;
        let g = f32s(gs, gl, "swiglu-mlp grad")?;
        let (dgu, dwd) = swiglu_down_backward(&self.down, gu, wdv, g, (n, h, i), wd.track_op());
        let dx = x.track_op().then(|| {
            let mut dx = zeroed(n * h);
            self.gate_up.matmul(
                &mut dx,
                h,
                Operand::new(&dgu, 2 * i),
                Operand::new(wguv, h),
                0,
                n,
                h,
                2 * i,
                false,
            );
            dx
        });
        let dwgu = wgu.track_op().then(|| {
            let mut dw = zeroed(2 * i * h);
            matmul_act(
                &mut dw,
                h,
                Operand::t(&dgu, 2 * i),
                Operand::new(xv, h),
                2 * i,
                h,
                n,
                false,
                self.gate_up.prec,
            );
            dw
        });
        let dev = x.device();
        Ok((
            dx.map(|d| Tensor::from_vec(d, x.shape(), dev))
                .transpose()?,
            dwgu.map(|d| Tensor::from_vec(d, (2 * i, h), dev))
                .transpose()?,
            dwd.map(|d| Tensor::from_vec(d, (h, i), dev)).transpose()?,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::super::ops::test_tensors::{max_abs, randn};
    use super::*;
    use crate::model::layer_ops::SwiGluDown;
    use crate::model::linear_op::LinearOp;
    use candle_core::Var;

    /// Values and all three gradients equal the gate/up `LinearOp` followed by `SwiGluDown`
    /// (the two ops it replaces), for a `[B, T, H]` input.
    #[test]
    fn matches_linear_then_swiglu_down() {
        let (b, t, h, i) = (2, 5, 8, 12);
        let x = Var::from_tensor(&randn(&[b, t, h], 1, 1.0)).unwrap();
        let wgu = Var::from_tensor(&randn(&[2 * i, h], 2, 1.0)).unwrap();
        let wd = Var::from_tensor(&randn(&[h, i], 3, 1.0)).unwrap();
        let dy = randn(&[b, t, h], 4, 1.0);
        let fused = x.apply_op3(&wgu, &wd, SwiGluMlp::default()).unwrap();
        let gu = x.apply_op2(&wgu, LinearOp::default()).unwrap();
        let composed = gu.apply_op2(&wd, SwiGluDown::default()).unwrap();
        assert_eq!(fused.dims(), &[b, t, h]);
        assert!(max_abs(&fused, &composed) < 1e-6);
        let gf = (&fused * &dy)
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        let gc = (&composed * &dy)
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        for v in [&x, &wgu, &wd] {
            let (a, c) = (gf.get(v).unwrap(), gc.get(v).unwrap());
            let scale = c
                .abs()
                .unwrap()
                .max_all()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap();
            assert!(scale > 1e-3, "a gradient that vanishes tests nothing");
            assert!(max_abs(a, c) < 1e-5 * scale.max(1.0), "{:?}", v.dims());
        }
    }

    #[test]
    fn refuses_shapes_that_do_not_fit() {
        let x = randn(&[3, 8], 1, 1.0);
        let e = x
            .apply_op3(
                &randn(&[20, 8], 2, 1.0),
                &randn(&[8, 12], 3, 1.0),
                SwiGluMlp::default(),
            )
            .unwrap_err()
            .to_string();
        assert!(e.contains("do not fit"), "{e}");
    }
}
