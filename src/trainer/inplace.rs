//! In-place f32 updates of parameters, optimizer moments and gradients.
//!
//! Written with candle's tensor ops, one AdamW step allocates a dozen temporaries the size of
//! each parameter (the tied 151,936 × 896 embedding of Qwen2.5-0.5B makes each one 545 MB) and
//! replaces the moments with fresh tensors; summing micro-batch gradients allocates a new sum
//! each time. These kernels write into the existing buffers instead, one pass each, so the step
//! holds weights, gradients and moments and nothing else. f32 CPU tensors only (moments and
//! master weights always are; callers convert half-precision gradients first).

use crate::model::ops::f32_slice as slice;
use candle_core::{bail, CpuStorage, InplaceOp1, InplaceOp2, Layout, Result, Storage, Tensor};
use rayon::prelude::*;
use std::cell::RefCell;

use crate::model::kernels::rows::multiversion;

/// Elements per rayon task: large enough to amortise scheduling, small enough to split a
/// layer's weight across cores.
const CHUNK: usize = 1 << 16;

fn slice_mut<'a>(s: &'a mut CpuStorage, l: &Layout, what: &str) -> Result<&'a mut [f32]> {
    let CpuStorage::F32(v) = s else {
        bail!("{what}: expected f32 storage")
    };
    let Some((a, b)) = l.contiguous_offsets() else {
        bail!("{what}: expected a contiguous tensor")
    };
    Ok(&mut v[a..b])
}

/// `dst[i] = f(dst[i], a[i])` for every element, in parallel chunks.
struct Zip1<F> {
    name: &'static str,
    f: F,
}

impl<F: Fn(f32, f32) -> f32 + Sync> InplaceOp2 for Zip1<F> {
    fn name(&self) -> &'static str {
        self.name
    }

    fn cpu_fwd(
        &self,
        dst: &mut CpuStorage,
        dst_l: &Layout,
        a: &CpuStorage,
        al: &Layout,
    ) -> Result<()> {
        let d = slice_mut(dst, dst_l, self.name)?;
        let a = slice(a, al, self.name)?;
        if a.len() != d.len() {
            bail!("{}: {} elements into {}", self.name, a.len(), d.len())
        }
        d.par_chunks_mut(CHUNK)
            .zip(a.par_chunks(CHUNK))
            .for_each(|(d, a)| {
                for (x, &y) in d.iter_mut().zip(a) {
                    *x = (self.f)(*x, y);
                }
            });
        Ok(())
    }
}

/// `acc += g`.
pub fn add_into(acc: &Tensor, g: &Tensor) -> Result<()> {
    acc.inplace_op2(
        &g.contiguous()?,
        &Zip1 {
            name: "add-into",
            f: |x, y| x + y,
        },
    )
}

/// `t *= s`.
struct Scale(f32);

impl InplaceOp1 for Scale {
    fn name(&self) -> &'static str {
        "scale"
    }

    fn cpu_fwd(&self, dst: &mut CpuStorage, l: &Layout) -> Result<()> {
        let s = self.0;
        slice_mut(dst, l, "scale")?
            .par_chunks_mut(CHUNK)
            .for_each(|d| d.iter_mut().for_each(|x| *x *= s));
        Ok(())
    }
}

/// `t *= s`.
pub fn scale(t: &Tensor, s: f32) -> Result<()> {
    t.inplace_op1(&Scale(s))
}

/// Σ x² of an f32 CPU tensor, accumulated in f64 per chunk (no temporary tensor).
pub fn sum_sq(t: &Tensor) -> Result<f64> {
    let t = t.contiguous()?;
    let (s, l) = t.storage_and_layout();
    let Storage::Cpu(s) = &*s else {
        bail!("sum-sq: CPU only")
    };
    let x = slice(s, l, "sum-sq")?;
    Ok(x.par_chunks(CHUNK)
        .map(|c| c.iter().map(|&v| f64::from(v) * f64::from(v)).sum::<f64>())
        .sum())
}

/// Runs `f` on the f32 elements of `t`, borrowed mutably (candle's write lock on its storage
/// is held for the call).
fn with_mut(
    t: &Tensor,
    what: &'static str,
    f: impl FnOnce(&mut [f32]) -> Result<()>,
) -> Result<()> {
    type Body<'f> = Box<dyn FnOnce(&mut [f32]) -> Result<()> + 'f>;
    struct WithMut<'f> {
        what: &'static str,
        f: RefCell<Option<Body<'f>>>,
    }
    impl InplaceOp1 for WithMut<'_> {
        fn name(&self) -> &'static str {
            self.what
        }

        fn cpu_fwd(&self, dst: &mut CpuStorage, l: &Layout) -> Result<()> {
            let Some(f) = self.f.borrow_mut().take() else {
                bail!("{}: called twice", self.what)
            };
            f(slice_mut(dst, l, self.what)?)
        }
    }
    t.inplace_op1(&WithMut {
        what,
        f: RefCell::new(Some(Box::new(f))),
    })
}

multiversion! {
fn adamw_chunk(th: &mut [f32], m: &mut [f32], v: &mut [f32], g: &[f32], c: AdamWConsts) -> () {
    let n = th.len().min(m.len()).min(v.len()).min(g.len());
    for i in 0..n {
        let gi = g[i];
        let mi = c.beta1 * m[i] + c.one_minus_beta1 * gi;
        let vi = c.beta2 * v[i] + c.one_minus_beta2 * gi * gi;
        m[i] = mi;
        v[i] = vi;
        th[i] = th[i] * c.decay - c.step_size * mi / (vi.sqrt() * c.inv_sqrt_bc2 + c.eps);
    }
}
}

/// The per-element constants of one AdamW step, in f32 as torch computes them.
#[derive(Debug, Clone, Copy)]
pub struct AdamWConsts {
    beta1: f32,
    one_minus_beta1: f32,
    beta2: f32,
    one_minus_beta2: f32,
    decay: f32,
    step_size: f32,
    inv_sqrt_bc2: f32,
    eps: f32,
}

/// Constants of one AdamW step (`torch.optim.AdamW`'s update order).
#[derive(Debug, Clone, Copy)]
pub struct AdamW {
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    /// `1 - β1^t`, `1 - β2^t`.
    pub bc1: f64,
    pub bc2: f64,
    pub lr: f64,
    pub weight_decay: f64,
}

impl AdamW {
    /// `m ← β1·m + (1-β1)·g`, `v ← β2·v + (1-β2)·g²`, then
    /// `θ ← θ·(1 - lr·wd) - (lr/bc1)·m / (sqrt(v)/sqrt(bc2) + eps)`, in place and in one pass
    /// over the four buffers (f32 arithmetic, as torch's).
    pub fn step(&self, theta: &Tensor, m: &Tensor, v: &Tensor, g: &Tensor) -> Result<()> {
        let c = AdamWConsts {
            beta1: self.beta1 as f32,
            one_minus_beta1: (1.0 - self.beta1) as f32,
            beta2: self.beta2 as f32,
            one_minus_beta2: (1.0 - self.beta2) as f32,
            decay: (1.0 - self.lr * self.weight_decay) as f32,
            step_size: (self.lr / self.bc1) as f32,
            inv_sqrt_bc2: (1.0 / self.bc2.sqrt()) as f32,
            eps: self.eps as f32,
        };
        let g = g.contiguous()?;
        let (gs, gl) = g.storage_and_layout();
        let Storage::Cpu(gs) = &*gs else {
            bail!("adamw: CPU only")
        };
        let g = slice(gs, gl, "adamw grad")?;
        with_mut(m, "adamw m", |m| {
            with_mut(v, "adamw v", |v| {
                with_mut(theta, "adamw theta", |th| {
                    if m.len() != th.len() || v.len() != th.len() || g.len() != th.len() {
                        bail!(
                            "adamw: {} weights, {} and {} moments, {} gradients",
                            th.len(),
                            m.len(),
                            v.len(),
                            g.len()
                        )
                    }
                    th.par_chunks_mut(CHUNK)
                        .zip(m.par_chunks_mut(CHUNK))
                        .zip(v.par_chunks_mut(CHUNK))
                        .zip(g.par_chunks(CHUNK))
                        .for_each(|(((th, m), v), g)| adamw_chunk(th, m, v, g, c));
                    Ok(())
                })
            })
        })
    }
}

/// `θ ← θ - lr·(g + wd·θ)` in place (`torch.optim.SGD`, L2 weight decay).
pub fn sgd_step(theta: &Tensor, g: &Tensor, lr: f64, weight_decay: f64) -> Result<()> {
    theta.inplace_op2(
        &g.contiguous()?,
        &Zip1 {
            name: "sgd",
            f: |t: f32, g: f32| {
                let t = f64::from(t);
                (t - lr * (f64::from(g) + weight_decay * t)) as f32
            },
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    fn t(v: &[f32]) -> Tensor {
        Tensor::new(v, &Device::Cpu).unwrap()
    }

    #[test]
    fn add_scale_and_norm_write_in_place() {
        let acc = t(&[1.0, 2.0, 3.0]);
        let alias = acc.clone();
        add_into(&acc, &t(&[0.5, -1.0, 4.0])).unwrap();
        scale(&acc, 2.0).unwrap();
        // The clone shares the storage: the update is visible through it.
        assert_eq!(alias.to_vec1::<f32>().unwrap(), [3.0, 2.0, 14.0]);
        assert_eq!(sum_sq(&acc).unwrap(), 9.0 + 4.0 + 196.0);
        let err = add_into(&acc, &t(&[1.0])).unwrap_err().to_string();
        assert!(err.contains("1 elements into 3"), "{err}");
    }
}
