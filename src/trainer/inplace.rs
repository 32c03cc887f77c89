//! In-place f32 updates of parameters, optimizer moments and gradients.
//!
//! Written with candle's tensor ops, one AdamW step allocates a dozen temporaries the size of
//! each parameter (the tied 151,936 × 896 embedding of Qwen2.5-0.5B makes each one 545 MB) and
//! replaces the moments with fresh tensors; summing micro-batch gradients allocates a new sum
//! each time. These kernels write into the existing buffers instead, one pass each, so the step
//! holds weights, gradients and moments and nothing else. f32 CPU tensors only (moments and
//! master weights always are; callers convert half-precision gradients first).

use crate::model::ops::f32_slice as slice;
use candle_core::{
    bail, CpuStorage, InplaceOp1, InplaceOp2, InplaceOp3, Layout, Result, Storage, Tensor,
};
use rayon::prelude::*;

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

/// `dst[i] = f(dst[i], a[i], b[i])` for every element, in parallel chunks.
struct Zip2<F> {
    name: &'static str,
    f: F,
}

impl<F: Fn(f32, f32, f32) -> f32 + Sync> InplaceOp3 for Zip2<F> {
    fn name(&self) -> &'static str {
        self.name
    }

    fn cpu_fwd(
        &self,
        dst: &mut CpuStorage,
        dst_l: &Layout,
        a: &CpuStorage,
        al: &Layout,
        b: &CpuStorage,
        bl: &Layout,
    ) -> Result<()> {
        let d = slice_mut(dst, dst_l, self.name)?;
        let (a, b) = (slice(a, al, self.name)?, slice(b, bl, self.name)?);
        if a.len() != d.len() || b.len() != d.len() {
            bail!(
                "{}: {} and {} elements into {}",
                self.name,
                a.len(),
                b.len(),
                d.len()
            )
        }
        d.par_chunks_mut(CHUNK)
            .zip(a.par_chunks(CHUNK).zip(b.par_chunks(CHUNK)))
            .for_each(|(d, (a, b))| {
                for ((x, &y), &z) in d.iter_mut().zip(a).zip(b) {
                    *x = (self.f)(*x, y, z);
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

/// Constants of one AdamW step (`torch.optim.AdamW`'s update order). The arithmetic of each
/// element runs in f64 (it is memory-bound, so this costs nothing) and is stored in f32.
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
    /// `θ ← θ·(1 - lr·wd) - lr·(m/bc1) / (sqrt(v/bc2) + eps)`, all in place.
    pub fn step(&self, theta: &Tensor, m: &Tensor, v: &Tensor, g: &Tensor) -> Result<()> {
        let AdamW {
            beta1,
            beta2,
            eps,
            bc1,
            bc2,
            lr,
            weight_decay,
        } = *self;
        let g = g.contiguous()?;
        m.inplace_op2(
            &g,
            &Zip1 {
                name: "adamw-m",
                f: |m: f32, g: f32| (f64::from(m) * beta1 + f64::from(g) * (1.0 - beta1)) as f32,
            },
        )?;
        v.inplace_op2(
            &g,
            &Zip1 {
                name: "adamw-v",
                f: |v: f32, g: f32| {
                    let g = f64::from(g);
                    (f64::from(v) * beta2 + g * g * (1.0 - beta2)) as f32
                },
            },
        )?;
        let decay = 1.0 - lr * weight_decay;
        theta.inplace_op3(
            m,
            v,
            &Zip2 {
                name: "adamw-theta",
                f: |t: f32, m: f32, v: f32| {
                    let update = (f64::from(m) / bc1) / ((f64::from(v) / bc2).sqrt() + eps);
                    (f64::from(t) * decay - lr * update) as f32
                },
            },
        )
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
