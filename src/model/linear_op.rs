//! `y = x Wᵀ (+ b)` as one op with its own backward on the kernels' GEMM (AVX-512 where the
//! CPU has it). Composed, candle adds a transpose node, a broadcast bias node and zero-filled
//! gradient accumulators; here forward is one GEMM (+ bias) and backward two GEMMs and a
//! column sum. f32, CPU; `x [.., in]` (leading dimensions taken as rows, so that no reshape
//! node and its gradient copy sit on either side), `W [out, in]`, `b [out]`. With bf16 precision
//! (`bf16_copies`) the three GEMMs take bf16-rounded inputs (the weight from its bf16 copy)
//! and accumulate in f32; the bias and its gradient stay f32.

use super::ops::f32_slice as f32s;
use candle_core::{bail, CpuStorage, CustomOp2, CustomOp3, Layout, Result, Shape, Storage, Tensor};
use rayon::prelude::*;

use super::bf16_copies::{matmul_act, WeightPrec};
use super::kernels::gemm::Operand;

#[derive(Debug, Clone, Default)]
pub(crate) struct LinearOp {
    /// The precision of the products and the weight's bf16 copy.
    pub w: WeightPrec,
}

/// (rows, in) of `x [.., in]`.
fn rows_cols(shape: &Shape) -> Result<(usize, usize)> {
    match shape.dims() {
        [] => bail!("linear: x is a scalar"),
        [lead @ .., i] => Ok((lead.iter().product(), *i)),
    }
}

/// `x Wᵀ (+ b)`.
fn forward(
    wp: &WeightPrec,
    x: &[f32],
    xl: &Layout,
    w: &[f32],
    wl: &Layout,
    b: Option<&[f32]>,
) -> Result<(CpuStorage, Shape)> {
    let (n, i) = rows_cols(xl.shape())?;
    let (o, wi) = wl.shape().dims2()?;
    if wi != i || b.is_some_and(|b| b.len() != o) {
        bail!(
            "linear: x {:?}, weight {:?} and bias do not fit",
            xl.shape(),
            wl.shape()
        )
    }
    wp.check(w.len(), "linear")?;
    let mut y = vec![0f32; n * o];
    wp.matmul(
        &mut y,
        o,
        Operand::new(x, i),
        Operand::t(w, i),
        0,
        n,
        o,
        i,
        false,
    );
    if let Some(b) = b {
        y.par_chunks_mut(o * 64).for_each(|rows| {
            for r in rows.chunks_mut(o) {
                for (v, bv) in r.iter_mut().zip(b) {
                    *v += bv;
                }
            }
        });
    }
    let mut dims = xl.shape().dims().to_vec();
    *dims.last_mut().expect("rows_cols checked the rank") = o;
    Ok((CpuStorage::F32(y), Shape::from(dims)))
}

/// `(dx, dW, db)` for `dy [N, out]`; a gradient is skipped (None) for an input that is
/// neither a variable nor computed from one (a frozen weight, e.g. a LoRA base).
fn backward(
    wp: &WeightPrec,
    x: &Tensor,
    w: &Tensor,
    grad: &Tensor,
    with_bias: bool,
) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
    let (n, i) = rows_cols(x.shape())?;
    let o = w.dim(0)?;
    let grad = grad.contiguous()?;
    let (xs, xl) = x.storage_and_layout();
    let (ws, wl) = w.storage_and_layout();
    let (gs, gl) = grad.storage_and_layout();
    let (Storage::Cpu(xs), Storage::Cpu(ws), Storage::Cpu(gs)) = (&*xs, &*ws, &*gs) else {
        bail!("linear: CPU only")
    };
    let x_ = f32s(xs, xl, "linear x")?;
    let w_ = f32s(ws, wl, "linear weight")?;
    let g = f32s(gs, gl, "linear grad")?;
    let dx = x.track_op().then(|| {
        let mut dx = vec![0f32; n * i];
        wp.matmul(
            &mut dx,
            i,
            Operand::new(g, o),
            Operand::new(w_, i),
            0,
            n,
            i,
            o,
            false,
        );
        dx
    });
    let dw = w.track_op().then(|| {
        let mut dw = vec![0f32; o * i];
        matmul_act(
            &mut dw,
            i,
            Operand::t(g, o),
            Operand::new(x_, i),
            o,
            i,
            n,
            false,
            wp.prec,
        );
        dw
    });
    let db = with_bias.then(|| {
        let parts: Vec<Vec<f32>> = g
            .par_chunks(o * 256)
            .map(|rows| {
                let mut s = vec![0f32; o];
                for r in rows.chunks(o) {
                    for (a, b) in s.iter_mut().zip(r) {
                        *a += b;
                    }
                }
                s
            })
            .collect();
        let mut s = vec![0f32; o];
        for p in parts {
            for (a, b) in s.iter_mut().zip(p) {
                *a += b;
            }
        }
        s
    });
    let dev = x.device();
    let dx = dx
        .map(|d| Tensor::from_vec(d, x.shape(), dev))
        .transpose()?;
    let dw = dw.map(|d| Tensor::from_vec(d, (o, i), dev)).transpose()?;
    let db = db.map(|d| Tensor::from_vec(d, o, dev)).transpose()?;
    Ok((dx, dw, db))
}

impl CustomOp2 for LinearOp {
    fn name(&self) -> &'static str {
        "linear"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        forward(
            &self.w,
            f32s(s1, l1, "linear x")?,
            l1,
            f32s(s2, l2, "linear weight")?,
            l2,
            None,
        )
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let (dx, dw, _) = backward(&self.w, x, w, grad, false)?;
        Ok((dx, dw))
    }
}

impl CustomOp3 for LinearOp {
    fn name(&self) -> &'static str {
        "linear-bias"
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
        let b = f32s(s3, l3, "linear bias")?;
        forward(
            &self.w,
            f32s(s1, l1, "linear x")?,
            l1,
            f32s(s2, l2, "linear weight")?,
            l2,
            Some(b),
        )
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        b: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let (dx, dw, db) = backward(&self.w, x, w, grad, b.track_op())?;
        Ok((dx, dw, db))
    }
}
