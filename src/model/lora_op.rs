//! A frozen projection (one or several stacked: q/k/v, gate/up) with its LoRA terms, as one op:
//! `y = x Wᵀ (+ b) + Σ_p s_p·(x A_pᵀ) B_pᵀ` placed in part p's columns. Backward gives `x`, the
//! A's and the B's their gradients and the frozen `W` none.
//!
//! Composed from candle ops, every intermediate of the adapter term (`x Aᵀ`, its product with
//! `Bᵀ`, the scaled copy, the sum with the base output) stays alive in the graph until the
//! backward, each as wide as the projection's output: for Qwen2.5-0.5B's MLP that is four
//! [tokens × 4864] tensors per layer more than a full fine-tuning step keeps. Here only the
//! output is kept, so the fused training path (fused attention, RMSNorm, log-softmax head)
//! serves adapted models too. f32 CPU, no dropout (`lora_dropout > 0` trains composed).
//! With bf16 precision every product takes bf16-rounded inputs and accumulates in f32, and the
//! base product multiplies by `round_bf16(W + s·B·A)`, the merged weight the sampler runs
//! (`Policy::merged`): the trainer's and the sampler's log-probs then differ by f32 summation
//! order only, not by where the adapter's term is rounded. Its gradients are those of the
//! merged weight (`dx = g·round(W + s·B·A)`, `dA`, `dB` from the adapter's factors).

use super::bf16_copies::{round_stacked, Copy16, WeightPrec};
use super::kernels::bf16::{matmul_p, Precision};
use super::kernels::gemm::Operand;
use super::linear::Linear;
use super::lora::merge_weight;
use super::ops::f32_slice as f32s;
use candle_core::{bail, CpuStorage, CustomOp3, Layout, Result, Shape, Storage, Tensor};
use rayon::prelude::*;
use std::sync::Arc;

/// Where an adapted part sits: its output columns `col .. col + out` of `y`, its B rows
/// `b_row .. b_row + out` of `B_cat`, its A rows `k·r .. (k+1)·r` of `A_cat`.
#[derive(Debug, Clone, Copy)]
struct Block {
    col: usize,
    out: usize,
    b_row: usize,
    k: usize,
}

/// The op over `(x [N, in], A_cat [K·r, in], B_cat [Σ out_p, r])`, with the frozen stacked
/// weight and bias held here (no gradient flows to them).
struct LoraLinear {
    w: Tensor,
    bias: Option<Tensor>,
    r: usize,
    blocks: Vec<Block>,
    prec: Precision,
    /// bf16 precision: the merged weight `W + s·B·A`, rounded, which replaces `W` and the
    /// adapter term in the forward and `W + s·B·A` in `dx`.
    merged: Option<Copy16>,
}

fn with_cpu<R>(t: &Tensor, what: &str, f: impl FnOnce(&[f32]) -> Result<R>) -> Result<R> {
    let (s, l) = t.storage_and_layout();
    let Storage::Cpu(s) = &*s else {
        bail!("{what}: CPU only")
    };
    f(f32s(s, l, what)?)
}

impl LoraLinear {
    /// How the base product multiplies: by the merged copy when there is one.
    fn base(&self) -> WeightPrec {
        WeightPrec {
            prec: self.prec,
            copy: self.merged.clone(),
        }
    }

    /// `u = x A_catᵀ` `[N, K·r]`.
    fn down(&self, x: &[f32], a: &[f32], n: usize, i: usize) -> Vec<f32> {
        let kr = self.blocks.len() * self.r;
        let mut u = vec![0f32; n * kr];
        matmul_p(
            &mut u,
            kr,
            Operand::new(x, i),
            Operand::t(a, i),
            n,
            kr,
            i,
            false,
            self.prec,
        );
        u
    }
}

impl CustomOp3 for LoraLinear {
    fn name(&self) -> &'static str {
        "lora-linear"
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
        let x = f32s(s1, l1, "lora-linear x")?;
        let a = f32s(s2, l2, "lora-linear A")?;
        let b = f32s(s3, l3, "lora-linear B")?;
        let (n, i) = l1.shape().dims2()?;
        let (o, wi) = self.w.dims2()?;
        let kr = self.blocks.len() * self.r;
        let rows_b: usize = self.blocks.iter().map(|b| b.out).sum();
        if wi != i || l2.shape().dims2()? != (kr, i) || l3.shape().dims2()? != (rows_b, self.r) {
            bail!(
                "lora-linear: x {:?}, W {:?}, A {:?}, B {:?} do not fit",
                l1.shape(),
                self.w.shape(),
                l2.shape(),
                l3.shape()
            )
        }
        let mut y = vec![0f32; n * o];
        let base = self.base();
        base.check(o * i, "lora-linear")?;
        with_cpu(&self.w, "lora-linear W", |w| {
            base.matmul(
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
            Ok(())
        })?;
        if let Some(bias) = &self.bias {
            with_cpu(bias, "lora-linear bias", |bv| {
                y.par_chunks_mut(o * 64).for_each(|rows| {
                    for r in rows.chunks_mut(o) {
                        for (v, b) in r.iter_mut().zip(bv) {
                            *v += b;
                        }
                    }
                });
                Ok(())
            })?;
        }
        if self.merged.is_some() {
            return Ok((CpuStorage::F32(y), Shape::from((n, o))));
        }
        let u = self.down(x, a, n, i);
        for blk in &self.blocks {
            // y[:, col..col+out] += u[:, k·r..(k+1)·r] · B_pᵀ
            matmul_p(
                &mut y[blk.col..],
                o,
                Operand::new(&u[blk.k * self.r..], kr),
                Operand::t(&b[blk.b_row * self.r..], self.r),
                n,
                blk.out,
                self.r,
                true,
                self.prec,
            );
        }
        Ok((CpuStorage::F32(y), Shape::from((n, o))))
    }

    fn bwd(
        &self,
        x: &Tensor,
        a: &Tensor,
        b: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let (n, i) = x.dims2()?;
        let (o, _) = self.w.dims2()?;
        let (r, kr) = (self.r, self.blocks.len() * self.r);
        let rows_b = b.dim(0)?;
        let grad = grad.contiguous()?;
        let (x, a, b) = (x.contiguous()?, a.contiguous()?, b.contiguous()?);
        let mut gu = vec![0f32; n * kr];
        let mut db = vec![0f32; rows_b * r];
        let mut da = vec![0f32; kr * i];
        let mut dx = vec![0f32; n * i];
        with_cpu(&grad, "lora-linear grad", |g| {
            with_cpu(&x, "lora-linear x", |xv| {
                with_cpu(&a, "lora-linear A", |av| {
                    with_cpu(&b, "lora-linear B", |bv| {
                        let u = self.down(xv, av, n, i);
                        for blk in &self.blocks {
                            // gu_p = g_p B_p ; dB_p = g_pᵀ u_p
                            matmul_p(
                                &mut gu[blk.k * r..],
                                kr,
                                Operand::new(&g[blk.col..], o),
                                Operand::new(&bv[blk.b_row * r..], r),
                                n,
                                r,
                                blk.out,
                                false,
                                self.prec,
                            );
                            matmul_p(
                                &mut db[blk.b_row * r..],
                                r,
                                Operand::t(&g[blk.col..], o),
                                Operand::new(&u[blk.k * r..], kr),
                                blk.out,
                                r,
                                n,
                                false,
                                self.prec,
                            );
                        }
                        // dA = guᵀ x ; dx = g W + gu A (g·merged in bf16)
                        matmul_p(
                            &mut da,
                            i,
                            Operand::t(&gu, kr),
                            Operand::new(xv, i),
                            kr,
                            i,
                            n,
                            false,
                            self.prec,
                        );
                        with_cpu(&self.w, "lora-linear W", |w| {
                            self.base().matmul(
                                &mut dx,
                                i,
                                Operand::new(g, o),
                                Operand::new(w, i),
                                0,
                                n,
                                i,
                                o,
                                false,
                            );
                            Ok(())
                        })?;
                        if self.merged.is_some() {
                            return Ok(());
                        }
                        matmul_p(
                            &mut dx,
                            i,
                            Operand::new(&gu, kr),
                            Operand::new(av, i),
                            n,
                            i,
                            kr,
                            true,
                            self.prec,
                        );
                        Ok(())
                    })
                })
            })
        })?;
        let dev = x.device();
        Ok((
            Some(Tensor::from_vec(dx, (n, i), dev)?),
            Some(Tensor::from_vec(da, (kr, i), dev)?),
            Some(Tensor::from_vec(db, (rows_b, r), dev)?),
        ))
    }
}

/// Whether `parts` can run as one [`LoraLinear`]: adapters of one rank and no dropout.
pub(crate) fn fusable(parts: &[&Linear]) -> bool {
    let mut rank = None;
    parts.iter().all(|p| match &p.lora {
        None => true,
        Some(l) => {
            let (a, _, _, dropout) = l.parts();
            let r = a.dim(0).unwrap_or(0);
            dropout == 0.0 && *rank.get_or_insert(r) == r
        }
    })
}

/// `x [B, T, in]` through the stacked projections `parts` with their adapters: `[B, T, Σ out]`.
/// Callers check [`fusable`] first.
/// At bf16 precision `wp` carries the merged weights' copy ([`merged_copy`] of `parts`).
pub(crate) fn linear_lora(x: &Tensor, parts: &[&Linear], wp: WeightPrec) -> anyhow::Result<Tensor> {
    let (bs, t, i) = x.dims3()?;
    let w = Tensor::cat(&parts.iter().map(|l| &l.weight).collect::<Vec<_>>(), 0)?.contiguous()?;
    let biases: Vec<&Tensor> = parts.iter().filter_map(|l| l.bias.as_ref()).collect();
    let bias = match biases.len() {
        0 => None,
        k if k == parts.len() => Some(Tensor::cat(&biases, 0)?.contiguous()?),
        _ => anyhow::bail!("stacked projections must all have a bias or none"),
    };
    let (mut blocks, mut a_parts, mut b_parts) = (Vec::new(), Vec::new(), Vec::new());
    let (mut col, mut b_row, mut r) = (0, 0, 0);
    for p in parts {
        let out = p.weight.dim(0)?;
        if let Some(l) = &p.lora {
            let (a, b, scale, _) = l.parts();
            r = a.dim(0)?;
            blocks.push(Block {
                col,
                out,
                b_row,
                k: blocks.len(),
            });
            a_parts.push(a.clone());
            // The scale rides on B (a differentiable product of small tensors).
            b_parts.push((b * scale)?);
            b_row += out;
        }
        col += out;
    }
    let prec = wp.prec;
    let merged = match (prec, wp.copy) {
        (Precision::F32, _) => None,
        (Precision::Bf16, Some(c)) => Some(c),
        (Precision::Bf16, None) => Some(Arc::new(merged_copy(parts)?)),
    };
    let x2 = x.contiguous()?.reshape((bs * t, i))?;
    let op = LoraLinear {
        w,
        bias,
        r,
        blocks,
        prec,
        merged,
    };
    let a_cat = Tensor::cat(&a_parts, 0)?.contiguous()?;
    let b_cat = Tensor::cat(&b_parts, 0)?.contiguous()?;
    Ok(x2.apply_op3(&a_cat, &b_cat, op)?.reshape((bs, t, col))?)
}

/// `round_bf16` of the stacked merged weights `W_p + s_p·B_p·A_p` of `parts`, as the sampler's
/// merged model rounds them (the same f32 values: [`merge_weight`]).
pub(crate) fn merged_copy(parts: &[&Linear]) -> anyhow::Result<Vec<u16>> {
    let mut ws = Vec::with_capacity(parts.len());
    for p in parts {
        ws.push(
            match &p.lora {
                Some(l) => {
                    let (a, b, scale, _) = l.parts();
                    merge_weight(&p.weight, a, b, scale)?
                }
                None => p.weight.clone(),
            }
            .contiguous()?,
        );
    }
    round_stacked(&ws.iter().collect::<Vec<_>>())
}
