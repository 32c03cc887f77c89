//! Mixed precision (`model.dtype = "bf16"` on the CPU): the model's parameters stay f32 (the
//! optimizer's master weights), and every weight product of the fused training ops and of
//! the host sampler reads a bf16 copy of its weight, rounded to nearest even once after each
//! optimizer step instead of on every product.
//!
//! The copies are per Transformer (shared with a `without_grad` view of the same storage) and
//! built lazily: the first product after [`WeightCopies::clear`] rounds the f32 master. The
//! trainer and the sampler read the same copies, so they multiply by the same bf16 weights and
//! their log-probs differ only by f32 summation order (`logprob_diff`).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use anyhow::{bail, Result};
use candle_core::{CpuStorage, Storage, Tensor};
use rayon::prelude::*;

use super::kernels::bf16::{matmul_bf16, matmul_p, round_into, Data, Operand16, Precision};
use super::kernels::gemm::{matmul, Operand};

/// A bf16 weight copy (row-major, as its f32 master).
pub(crate) type Copy16 = Arc<Vec<u16>>;

/// Which stacked weight of a layer a copy holds (the fused ops multiply by these stacks).
#[derive(Debug, Clone, Copy)]
pub(crate) enum Stack {
    /// `[q; k; v]` rows.
    Qkv = 0,
    O = 1,
    /// `[gate; up]` rows.
    GateUp = 2,
    Down = 3,
}

/// The key of layer `layer`'s stack `s`.
pub(crate) fn layer_key(layer: usize, s: Stack) -> u64 {
    layer as u64 * 4 + s as u64
}

/// The key of the output projection.
pub(crate) const HEAD_KEY: u64 = u64::MAX;

/// The key of layer `layer`'s stack `s` with its LoRA adapters merged in (`W + s·B·A`), apart
/// from the base's: an adapted policy and its adapter-off reference share one map.
pub(crate) fn merged_key(layer: usize, s: Stack) -> u64 {
    layer_key(layer, s) | 1 << 62
}

/// The bf16 copies of one model's weights, by key.
#[derive(Debug, Default)]
pub(crate) struct WeightCopies {
    map: Mutex<HashMap<u64, Copy16>>,
}

impl WeightCopies {
    /// The copy under `key`: the rows of `parts` (f32 CPU tensors, stacked in order) rounded
    /// to bf16, built now if it is not cached.
    pub(crate) fn get(&self, key: u64, parts: &[&Tensor]) -> Result<Copy16> {
        self.get_or_build(key, || round_stacked(parts))
    }

    /// The copy under `key`, made by `build` if it is not cached.
    pub(crate) fn get_or_build(
        &self,
        key: u64,
        build: impl FnOnce() -> Result<Vec<u16>>,
    ) -> Result<Copy16> {
        if let Some(c) = self.lock().get(&key) {
            return Ok(c.clone());
        }
        let c = Arc::new(build()?);
        self.lock().insert(key, c.clone());
        Ok(c)
    }

    /// How many copies are built (tests).
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.lock().len()
    }

    /// Drops every copy: the f32 weights changed (an optimizer step).
    pub(crate) fn clear(&self) {
        self.lock().clear();
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Copy16>> {
        // A panic while holding the lock leaves at worst a missing entry: rebuilt on use.
        self.map.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The rows of `parts` (contiguous f32 CPU tensors), stacked in order and rounded to bf16.
pub(crate) fn round_stacked(parts: &[&Tensor]) -> Result<Vec<u16>> {
    let total: usize = parts.iter().map(|t| t.elem_count()).sum();
    let mut out = vec![0u16; total];
    let mut at = 0;
    for t in parts {
        let (s, l) = t.storage_and_layout();
        let Storage::Cpu(CpuStorage::F32(v)) = &*s else {
            bail!("bf16 weight copies need f32 weights on the CPU")
        };
        let Some((a, b)) = l.contiguous_offsets() else {
            bail!("bf16 weight copies need contiguous weights")
        };
        let dst = &mut out[at..at + (b - a)];
        dst.par_chunks_mut(1 << 16)
            .zip(v[a..b].par_chunks(1 << 16))
            .for_each(|(d, s)| round_into(s, d));
        at += b - a;
    }
    Ok(out)
}

/// How a fused op multiplies by its weight: at `prec`, from the bf16 `copy` of the weight
/// when there is one (else the f32 weight, rounded on the way in: the same values).
#[derive(Debug, Clone, Default)]
pub(crate) struct WeightPrec {
    pub prec: Precision,
    pub copy: Option<Copy16>,
}

impl WeightPrec {
    /// `C (+)= op(A) · op(W)` for an activation `a` and the weight operand `w`, whose data
    /// starts at element `offset` of the whole weight (a block of its rows).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn matmul(
        &self,
        c: &mut [f32],
        ldc: usize,
        a: Operand,
        w: Operand,
        offset: usize,
        m: usize,
        n: usize,
        k: usize,
        accumulate: bool,
    ) {
        match (self.prec, &self.copy) {
            (Precision::F32, _) => matmul(c, ldc, a, w, m, n, k, accumulate),
            (Precision::Bf16, Some(copy)) => {
                debug_assert!(copy.len() >= offset + w.data.len());
                let w16 = Operand16 {
                    data: Data::Bf16(&copy[offset..offset + w.data.len()]),
                    ld: w.ld,
                    trans: w.trans,
                };
                matmul_bf16(c, ldc, Operand16::from_f32(a), w16, m, n, k, accumulate)
            }
            (Precision::Bf16, None) => matmul_p(c, ldc, a, w, m, n, k, accumulate, self.prec),
        }
    }

    /// The copy, checked against the f32 weight it stands for.
    pub(crate) fn check(&self, len: usize, what: &str) -> candle_core::Result<()> {
        match &self.copy {
            Some(c) if c.len() != len => candle_core::bail!(
                "{what}: bf16 copy has {} elements for a weight of {len}",
                c.len()
            ),
            _ => Ok(()),
        }
    }
}

/// `C (+)= A · B` of two activations (a weight gradient) at `prec`.
#[allow(clippy::too_many_arguments)]
pub(crate) fn matmul_act(
    c: &mut [f32],
    ldc: usize,
    a: Operand,
    b: Operand,
    m: usize,
    n: usize,
    k: usize,
    accumulate: bool,
    prec: Precision,
) {
    matmul_p(c, ldc, a, b, m, n, k, accumulate, prec)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::kernels::bf16::{from_bf16, to_bf16};
    use candle_core::Device;

    #[test]
    fn copies_stack_round_and_refresh_after_clear() {
        let a = Tensor::new(&[[1.0f32 + 1.0 / 256.0, 3.3], [-2.7, 0.1]], &Device::Cpu).unwrap();
        let b = Tensor::new(&[[5.5f32, -0.001]], &Device::Cpu).unwrap();
        let cache = WeightCopies::default();
        let c = cache.get(7, &[&a, &b]).unwrap();
        let want: Vec<u16> = [1.0f32 + 1.0 / 256.0, 3.3, -2.7, 0.1, 5.5, -0.001]
            .iter()
            .map(|&x| to_bf16(x))
            .collect();
        assert_eq!(*c, want);
        assert_eq!(from_bf16(c[0]), 1.0, "ties round to even");
        // Cached: the same Arc until cleared, then rebuilt from the current values.
        assert!(Arc::ptr_eq(&c, &cache.get(7, &[&a, &b]).unwrap()));
        let a2 = (&a * 2.0).unwrap();
        cache.clear();
        let c2 = cache.get(7, &[&a2, &b]).unwrap();
        assert_eq!(from_bf16(c2[1]), from_bf16(to_bf16(6.6)));
    }

    #[test]
    fn product_from_the_copy_equals_rounding_on_the_fly() {
        let (m, n, k) = (3, 5, 40);
        let x: Vec<f32> = (0..m * k).map(|i| (i as f32 * 0.31).sin()).collect();
        let w: Vec<f32> = (0..n * k).map(|i| (i as f32 * 0.17).cos()).collect();
        let wt = Tensor::from_vec(w.clone(), (n, k), &Device::Cpu).unwrap();
        let copy = WeightCopies::default().get(0, &[&wt]).unwrap();
        let run = |wp: &WeightPrec| {
            let mut y = vec![0f32; m * n];
            wp.matmul(
                &mut y,
                n,
                Operand::new(&x, k),
                Operand::t(&w, k),
                0,
                m,
                n,
                k,
                false,
            );
            y
        };
        let fly = run(&WeightPrec {
            prec: Precision::Bf16,
            copy: None,
        });
        let from_copy = run(&WeightPrec {
            prec: Precision::Bf16,
            copy: Some(copy),
        });
        let f32 = run(&WeightPrec::default());
        assert_eq!(fly, from_copy);
        assert!(fly.iter().zip(&f32).any(|(a, b)| a != b), "bf16 rounds");
    }
}
