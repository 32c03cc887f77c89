//! RMSNorm and SwiGLU as single ops with their own backward (f32, CPU). Composed from candle
//! ops, RMSNorm is eight tensors forward and more backward, and SwiGLU three; each op here is
//! one pass forward and one backward, parallel over rows.

use super::ops::{f32_slice as f32s, zeroed};
use candle_core::{bail, CpuStorage, CustomOp1, CustomOp2, Layout, Result, Shape, Storage, Tensor};
use rayon::prelude::*;

use super::bf16_copies::{matmul_act, WeightPrec};
use super::kernels::gemm::Operand;
use super::kernels::rows;

/// Rows per rayon task.
const ROWS_PER_TASK: usize = 16;

/// Reads a contiguous CPU f32 tensor (taking the storage lock for the closure's duration).
fn with_f32<R>(t: &Tensor, what: &str, f: impl FnOnce(&[f32]) -> Result<R>) -> Result<R> {
    let (s, l) = t.storage_and_layout();
    let Storage::Cpu(s) = &*s else {
        bail!("{what}: CPU only")
    };
    f(f32s(s, l, what)?)
}

/// `1 / sqrt(mean(x²) + eps)` of one row.
fn inv_rms(x: &[f32], eps: f32) -> f32 {
    1.0 / (rows::sum_squares(x) / x.len() as f32 + eps).sqrt()
}

/// `x / rms(x) * weight` over the last axis of `x [.., H]`, `weight [H]`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RmsNorm {
    pub eps: f32,
}

impl CustomOp2 for RmsNorm {
    fn name(&self) -> &'static str {
        "rms-norm"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let x = f32s(s1, l1, "rms-norm input")?;
        let w = f32s(s2, l2, "rms-norm weight")?;
        let h = w.len();
        if h == 0 || l1.shape().dims().last() != Some(&h) {
            bail!(
                "rms-norm: weight {:?} does not fit {:?}",
                l2.shape(),
                l1.shape()
            )
        }
        let mut out = vec![0f32; x.len()];
        out.par_chunks_mut(h * ROWS_PER_TASK)
            .zip(x.par_chunks(h * ROWS_PER_TASK))
            .for_each(|(ys, xs)| {
                for (y, x) in ys.chunks_mut(h).zip(xs.chunks(h)) {
                    rows::rms_norm_row(x, w, inv_rms(x, self.eps), y);
                }
            });
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let grad = grad.contiguous()?;
        let h = w.elem_count();
        let n = x.elem_count() / h;
        let mut dx = vec![0f32; n * h];
        let chunks = n.div_ceil(ROWS_PER_TASK);
        let dw_parts: Vec<Vec<f32>> = with_f32(x, "rms-norm input", |x| {
            with_f32(w, "rms-norm weight", |w| {
                with_f32(&grad, "rms-norm grad", |g| {
                    Ok(dx
                        .par_chunks_mut(h * ROWS_PER_TASK)
                        .enumerate()
                        .map(|(c, dxs)| {
                            let mut dw = vec![0f32; h];
                            for (k, dxr) in dxs.chunks_mut(h).enumerate() {
                                let r = c * ROWS_PER_TASK + k;
                                let xr = &x[r * h..(r + 1) * h];
                                let gr = &g[r * h..(r + 1) * h];
                                let inv = inv_rms(xr, self.eps);
                                rows::rms_norm_grad_row(xr, w, gr, inv, dxr, &mut dw);
                            }
                            dw
                        })
                        .collect())
                })
            })
        })?;
        debug_assert_eq!(dw_parts.len(), chunks);
        let mut dw = vec![0f32; h];
        for p in &dw_parts {
            for (a, b) in dw.iter_mut().zip(p) {
                *a += b;
            }
        }
        let dx = Tensor::from_vec(dx, x.shape(), x.device())?;
        let dw = Tensor::from_vec(dw, w.shape(), w.device())?;
        Ok((Some(dx), Some(dw)))
    }
}

/// `silu(gate) * up` for `gate_up [.., 2·I]` holding gate then up → `[.., I]`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct SwiGlu;

impl CustomOp1 for SwiGlu {
    fn name(&self) -> &'static str {
        "swiglu"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = f32s(s, l, "swiglu input")?;
        let dims = l.shape().dims();
        let Some(&w2) = dims.last() else {
            bail!("swiglu: scalar input")
        };
        if w2 % 2 != 0 {
            bail!("swiglu: last axis {w2} is not gate and up halves")
        }
        let i = w2 / 2;
        let mut out = vec![0f32; x.len() / 2];
        swiglu_rows(x, &mut out, i);
        let mut shape = dims.to_vec();
        *shape.last_mut().unwrap_or(&mut 0) = i;
        Ok((CpuStorage::F32(out), Shape::from(shape)))
    }

    fn bwd(&self, arg: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        let grad = grad.contiguous()?;
        let w2 = arg.dims().last().copied().unwrap_or(0);
        let i = w2 / 2;
        let mut dx = vec![0f32; arg.elem_count()];
        with_f32(arg, "swiglu input", |x| {
            with_f32(&grad, "swiglu grad", |g| {
                swiglu_grad_rows(x, g, &mut dx, i);
                Ok(())
            })
        })?;
        Ok(Some(Tensor::from_vec(dx, arg.shape(), arg.device())?))
    }
}

/// `silu(gate) * up` for rows of `x [N, 2·I]` into `out [N, I]`.
pub(crate) fn swiglu_rows(x: &[f32], out: &mut [f32], i: usize) {
    let w2 = 2 * i;
    out.par_chunks_mut(i * ROWS_PER_TASK)
        .zip(x.par_chunks(w2 * ROWS_PER_TASK))
        .for_each(|(ys, xs)| {
            for (y, x) in ys.chunks_mut(i).zip(xs.chunks(w2)) {
                let (g, u) = x.split_at(i);
                rows::swiglu_row(g, u, y);
            }
        });
}

/// The gradient of `swiglu_rows` for `g = d out`, into `dx [N, 2·I]`.
pub(crate) fn swiglu_grad_rows(x: &[f32], g: &[f32], dx: &mut [f32], i: usize) {
    let w2 = 2 * i;
    dx.par_chunks_mut(w2 * ROWS_PER_TASK)
        .zip(x.par_chunks(w2 * ROWS_PER_TASK))
        .zip(g.par_chunks(i * ROWS_PER_TASK))
        .for_each(|((dxs, xs), gs)| {
            for ((dx, x), g) in dxs.chunks_mut(w2).zip(xs.chunks(w2)).zip(gs.chunks(i)) {
                let (gate, up) = x.split_at(i);
                let (dgate, dup) = dx.split_at_mut(i);
                rows::swiglu_grad_row(gate, up, g, dgate, dup);
            }
        });
}

/// The backward of `y = silu(gate) * up · W_dᵀ` for the gate/up rows `gu [N, 2·I]`, the down
/// weight `wd [H, I]` and `g = dy [N, H]` (`dims` = (N, H, I)): `(d gu, d W_d)` (the latter
/// only `with_dw`). The activation is recomputed from `gu`.
pub(crate) fn swiglu_down_backward(
    wp: &WeightPrec,
    gu: &[f32],
    wd: &[f32],
    g: &[f32],
    (n, h, i): (usize, usize, usize),
    with_dw: bool,
) -> (Vec<f32>, Option<Vec<f32>>) {
    let mut act = zeroed(n * i);
    swiglu_rows(gu, &mut act, i);
    let dw = with_dw.then(|| {
        let mut dw = zeroed(h * i);
        matmul_act(
            &mut dw,
            i,
            Operand::t(g, h),
            Operand::new(&act, i),
            h,
            i,
            n,
            false,
            wp.prec,
        );
        dw
    });
    // act's buffer now takes d act = dy · W_d.
    wp.matmul(
        &mut act,
        i,
        Operand::new(g, h),
        Operand::new(wd, i),
        0,
        n,
        i,
        h,
        false,
    );
    let mut dgu = zeroed(n * 2 * i);
    swiglu_grad_rows(gu, &act, &mut dgu, i);
    (dgu, dw)
}

/// `down(silu(gate) * up)` for `gate_up [.., 2·I]` and the down projection `W [H, I]` (no
/// bias) → `[.., H]`. The `[.., I]` activation is recomputed in backward instead of kept
/// alive by the graph (109 MB per layer at 5,600 tokens of Qwen2.5-0.5B). The GEMMs run at
/// `w.prec` (bf16: rounded inputs, the weight from its copy; f32 accumulation).
#[derive(Debug, Clone, Default)]
pub(crate) struct SwiGluDown {
    pub w: WeightPrec,
}

impl CustomOp2 for SwiGluDown {
    fn name(&self) -> &'static str {
        "swiglu-down"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let x = f32s(s1, l1, "swiglu-down input")?;
        let w = f32s(s2, l2, "swiglu-down weight")?;
        let dims = l1.shape().dims();
        let w2 = dims.last().copied().unwrap_or(0);
        let (h, i) = l2.shape().dims2()?;
        if w2 != 2 * i || i == 0 {
            bail!(
                "swiglu-down: input {:?} does not fit weight {:?}",
                l1.shape(),
                l2.shape()
            )
        }
        self.w.check(w.len(), "swiglu-down")?;
        let n = x.len() / w2;
        let mut act = vec![0f32; n * i];
        swiglu_rows(x, &mut act, i);
        let mut y = vec![0f32; n * h];
        self.w.matmul(
            &mut y,
            h,
            Operand::new(&act, i),
            Operand::t(w, i),
            0,
            n,
            h,
            i,
            false,
        );
        let mut shape = dims.to_vec();
        if let Some(last) = shape.last_mut() {
            *last = h;
        }
        Ok((CpuStorage::F32(y), Shape::from(shape)))
    }

    fn bwd(
        &self,
        arg: &Tensor,
        w: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let grad = grad.contiguous()?;
        let (h, i) = w.dims2()?;
        let n = arg.elem_count() / (2 * i);
        let (dx, dw) = with_f32(arg, "swiglu-down input", |x| {
            with_f32(w, "swiglu-down weight", |wv| {
                with_f32(&grad, "swiglu-down grad", |g| {
                    Ok(swiglu_down_backward(
                        &self.w,
                        x,
                        wv,
                        g,
                        (n, h, i),
                        w.track_op(),
                    ))
                })
            })
        })?;
        let dx = Tensor::from_vec(dx, arg.shape(), arg.device())?;
        let dw = dw
            .map(|d| Tensor::from_vec(d, (h, i), w.device()))
            .transpose()?;
        Ok((Some(dx), dw))
    }
}
