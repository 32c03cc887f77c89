//! Causal grouped-query attention with rotary embeddings and key padding, as one op with its
//! own backward, on the packed output of the fused q/k/v projection.
//!
//! The composed version builds ~25 tensors per layer, among them the `[B, H, T, T]` scores
//! and probabilities kept for backward. Here each (row, head) task holds one block of
//! `QUERY_BLOCK × keys` scores in a scratch buffer; the backward recomputes them from the
//! saved log-sum-exp of each query (as flash attention does), so only `O` and `lse` are kept.
//! Causality also skips the keys after each query block: about half the score work.

use super::ops::f32_slice as f32s;
use std::sync::{Arc, Mutex};

use candle_core::{bail, CpuStorage, CustomOp1, Layout, Result, Shape, Storage, Tensor};
use rayon::prelude::*;

use super::kernels::gemm::{matmul, Operand};
use super::kernels::rows;

/// Query rows per score block.
const QUERY_BLOCK: usize = 64;

/// `attention(rope(q), rope(k), v)` for `qkv [B, T, (H + 2·KV)·D]` (q heads, then k, then v)
/// → `[B, T, H·D]`. Query `i` of row `b` sees keys `j <= i` with `key_valid[b·T + j] != 0`;
/// a query that sees none outputs zeros. Head `h` uses key/value head `h / (H / KV)`
/// (transformers' `repeat_kv` order). f32, CPU.
#[derive(Debug, Clone)]
pub(crate) struct CausalAttention {
    pub n_heads: usize,
    pub n_kv: usize,
    pub head_dim: usize,
    /// `[B·T, D/2]` rotary tables for each token's position.
    pub cos: Arc<Vec<f32>>,
    pub sin: Arc<Vec<f32>>,
    /// `[B·T]` nonzero for real tokens.
    pub key_valid: Arc<Vec<u8>>,
    /// `[B]` first query of each row whose output is used, if not all are: earlier queries
    /// output zeros and are skipped forward and backward (their output gradient must be 0).
    /// The shared-prompt forward reads a group's prompt outputs from its first row only.
    pub query_start: Option<Arc<Vec<u32>>>,
    /// `[B, H, T]` log-sum-exp of each query's scores, written by the forward for the
    /// backward.
    pub lse: Arc<Mutex<Vec<f32>>>,
}

/// Geometry of one call.
#[derive(Clone, Copy)]
struct Dims {
    b: usize,
    t: usize,
    h: usize,
    kv: usize,
    d: usize,
    /// Width of a qkv row.
    w: usize,
}

impl CausalAttention {
    fn dims(&self, shape: &Shape) -> Result<Dims> {
        let (b, t, w) = shape.dims3()?;
        let (h, kv, d) = (self.n_heads, self.n_kv, self.head_dim);
        if kv == 0 || h % kv != 0 || d % 2 != 0 || w != (h + 2 * kv) * d {
            bail!("causal-attention: qkv width {w} does not fit {h}/{kv} heads of {d}")
        }
        let half = d / 2;
        if self.cos.len() != b * t * half
            || self.sin.len() != b * t * half
            || self.key_valid.len() != b * t
            || self.query_start.as_ref().is_some_and(|q| q.len() != b)
        {
            bail!("causal-attention: tables do not fit a [{b}, {t}] batch")
        }
        Ok(Dims { b, t, h, kv, d, w })
    }

    /// Rotated head (`col` = first column in the qkv row) of batch row `b`, times `scale`:
    /// `[T, D]`.
    fn roped(&self, qkv: &[f32], dm: Dims, b: usize, col: usize, scale: f32) -> Vec<f32> {
        let (t, d, half) = (dm.t, dm.d, dm.d / 2);
        let mut out = vec![0f32; t * d];
        for i in 0..t {
            let x = &qkv[(b * t + i) * dm.w + col..][..d];
            let c = &self.cos[(b * t + i) * half..][..half];
            let s = &self.sin[(b * t + i) * half..][..half];
            rows::rope_row(x, c, s, scale, &mut out[i * d..(i + 1) * d]);
        }
        out
    }

    /// The transpose of `roped` (scale 1) applied in place to a `[T, D]` gradient.
    fn unrope(&self, g: &mut [f32], dm: Dims, b: usize) {
        let (t, d, half) = (dm.t, dm.d, dm.d / 2);
        for i in 0..t {
            let c = &self.cos[(b * t + i) * half..][..half];
            let s = &self.sin[(b * t + i) * half..][..half];
            rows::unrope_row(&mut g[i * d..(i + 1) * d], c, s);
        }
    }

    /// The first query of row `b` that is computed.
    fn first_query(&self, b: usize, t: usize) -> usize {
        self.query_start
            .as_ref()
            .map_or(0, |q| (q[b] as usize).min(t))
    }
}

impl CustomOp1 for CausalAttention {
    fn name(&self) -> &'static str {
        "causal-attention"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let qkv = f32s(s, l, "causal-attention qkv")?;
        let dm = self.dims(l.shape())?;
        let Dims { b, t, h, kv, d, w } = dm;
        let n_rep = h / kv;
        let scale = 1.0 / (d as f32).sqrt();
        let heads: Vec<(Vec<f32>, Vec<f32>)> = (0..b * h)
            .into_par_iter()
            .map(|task| {
                let (bi, hi) = (task / h, task % h);
                let g = hi / n_rep;
                let q = self.roped(qkv, dm, bi, hi * d, scale);
                let k = self.roped(qkv, dm, bi, (h + g) * d, 1.0);
                let v = &qkv[bi * t * w + (h + kv + g) * d..];
                let mut o = vec![0f32; t * d];
                let mut lse = vec![f32::NEG_INFINITY; t];
                let mut sc = vec![0f32; QUERY_BLOCK * t];
                for i0 in (self.first_query(bi, t)..t).step_by(QUERY_BLOCK) {
                    let (nq, nk) = ((t - i0).min(QUERY_BLOCK), (i0 + QUERY_BLOCK).min(t));
                    let sb = &mut sc[..nq * nk];
                    matmul(
                        sb,
                        nk,
                        Operand::new(&q[i0 * d..], d),
                        Operand::t(&k, d),
                        nq,
                        nk,
                        d,
                        false,
                    );
                    let valid = &self.key_valid[bi * t..(bi + 1) * t];
                    for (r, row) in sb.chunks_mut(nk).enumerate() {
                        // Causal: query i sees keys 0..=i that are not padding.
                        let i = i0 + r;
                        let upto = (i + 1).min(nk);
                        let (seen, future) = row.split_at_mut(upto);
                        lse[i] = rows::masked_softmax_row(seen, &valid[..upto]);
                        future.fill(0.0);
                    }
                    matmul(
                        &mut o[i0 * d..],
                        d,
                        Operand::new(sb, nk),
                        Operand::new(v, w),
                        nq,
                        d,
                        nk,
                        false,
                    );
                }
                (o, lse)
            })
            .collect();
        let hd = h * d;
        let mut out = vec![0f32; b * t * hd];
        let mut lse_all = vec![0f32; b * h * t];
        for (task, (o, lse)) in heads.iter().enumerate() {
            let (bi, hi) = (task / h, task % h);
            for i in 0..t {
                out[(bi * t + i) * hd + hi * d..][..d].copy_from_slice(&o[i * d..(i + 1) * d]);
            }
            lse_all[task * t..(task + 1) * t].copy_from_slice(lse);
        }
        *self
            .lse
            .lock()
            .map_err(|_| candle_core::Error::Msg("lse lock".into()))? = lse_all;
        Ok((CpuStorage::F32(out), Shape::from((b, t, hd))))
    }

    fn bwd(&self, arg: &Tensor, res: &Tensor, grad_res: &Tensor) -> Result<Option<Tensor>> {
        let dm = self.dims(arg.shape())?;
        let Dims { b, t, h, kv, d, w } = dm;
        let n_rep = h / kv;
        let hd = h * d;
        let scale = 1.0 / (d as f32).sqrt();
        let grad = grad_res.contiguous()?;
        let (qs, ql) = arg.storage_and_layout();
        let (os, ol) = res.storage_and_layout();
        let (gs, gl) = grad.storage_and_layout();
        let (Storage::Cpu(qs), Storage::Cpu(os), Storage::Cpu(gs)) = (&*qs, &*os, &*gs) else {
            bail!("causal-attention: CPU only")
        };
        let qkv = f32s(qs, ql, "causal-attention qkv")?;
        let out = f32s(os, ol, "causal-attention output")?;
        let dout = f32s(gs, gl, "causal-attention grad")?;
        let lse_all = self
            .lse
            .lock()
            .map_err(|_| candle_core::Error::Msg("lse lock".into()))?
            .clone();
        if lse_all.len() != b * h * t {
            bail!("causal-attention: backward without a forward of the same shape")
        }
        // One task per (row, kv head): its query heads add into the same dK, dV.
        let parts: Vec<(Vec<f32>, Vec<f32>, Vec<f32>)> = (0..b * kv)
            .into_par_iter()
            .map(|task| {
                let (bi, g) = (task / kv, task % kv);
                let k = self.roped(qkv, dm, bi, (h + g) * d, 1.0);
                let v = &qkv[bi * t * w + (h + kv + g) * d..];
                let mut dq = vec![0f32; n_rep * t * d];
                let mut dk = vec![0f32; t * d];
                let mut dv = vec![0f32; t * d];
                let mut p = vec![0f32; QUERY_BLOCK * t];
                let mut dp = vec![0f32; QUERY_BLOCK * t];
                for r in 0..n_rep {
                    let hi = g * n_rep + r;
                    let q = self.roped(qkv, dm, bi, hi * d, scale);
                    let lse = &lse_all[(bi * h + hi) * t..][..t];
                    let d_o = &dout[bi * t * hd + hi * d..];
                    let o = &out[bi * t * hd + hi * d..];
                    let dqh = &mut dq[r * t * d..(r + 1) * t * d];
                    for i0 in (self.first_query(bi, t)..t).step_by(QUERY_BLOCK) {
                        let (nq, nk) = ((t - i0).min(QUERY_BLOCK), (i0 + QUERY_BLOCK).min(t));
                        let pb = &mut p[..nq * nk];
                        let dpb = &mut dp[..nq * nk];
                        matmul(
                            pb,
                            nk,
                            Operand::new(&q[i0 * d..], d),
                            Operand::t(&k, d),
                            nq,
                            nk,
                            d,
                            false,
                        );
                        // dP = dO Vᵀ
                        matmul(
                            dpb,
                            nk,
                            Operand::new(&d_o[i0 * hd..], hd),
                            Operand::t(v, w),
                            nq,
                            nk,
                            d,
                            false,
                        );
                        for rr in 0..nq {
                            let i = i0 + rr;
                            let prow = &mut pb[rr * nk..(rr + 1) * nk];
                            let dprow = &mut dpb[rr * nk..(rr + 1) * nk];
                            if lse[i] == f32::NEG_INFINITY {
                                prow.fill(0.0);
                                dprow.fill(0.0);
                                continue;
                            }
                            let orow = &o[(i0 + rr) * hd..][..d];
                            let dorow = &d_o[(i0 + rr) * hd..][..d];
                            let di: f32 = orow.iter().zip(dorow).map(|(a, b)| a * b).sum();
                            let upto = (i + 1).min(nk);
                            let valid = &self.key_valid[bi * t..bi * t + upto];
                            rows::attention_grad_row(
                                &mut prow[..upto],
                                &mut dprow[..upto],
                                valid,
                                lse[i],
                                di,
                            );
                            prow[upto..].fill(0.0);
                            dprow[upto..].fill(0.0);
                        }
                        // dV += Pᵀ dO ; dK += dSᵀ Q ; dQ = dS K
                        matmul(
                            &mut dv,
                            d,
                            Operand::t(pb, nk),
                            Operand::new(&d_o[i0 * hd..], hd),
                            nk,
                            d,
                            nq,
                            true,
                        );
                        matmul(
                            &mut dk,
                            d,
                            Operand::t(dpb, nk),
                            Operand::new(&q[i0 * d..], d),
                            nk,
                            d,
                            nq,
                            true,
                        );
                        matmul(
                            &mut dqh[i0 * d..],
                            d,
                            Operand::new(dpb, nk),
                            Operand::new(&k, d),
                            nq,
                            d,
                            nk,
                            false,
                        );
                    }
                    dqh.iter_mut().for_each(|x| *x *= scale);
                    self.unrope(dqh, dm, bi);
                }
                self.unrope(&mut dk, dm, bi);
                (dq, dk, dv)
            })
            .collect();
        let mut dqkv = vec![0f32; b * t * w];
        for (task, (dq, dk, dv)) in parts.iter().enumerate() {
            let (bi, g) = (task / kv, task % kv);
            for i in 0..t {
                let row = &mut dqkv[(bi * t + i) * w..(bi * t + i + 1) * w];
                for r in 0..n_rep {
                    let hi = g * n_rep + r;
                    row[hi * d..(hi + 1) * d].copy_from_slice(&dq[(r * t + i) * d..][..d]);
                }
                row[(h + g) * d..(h + g + 1) * d].copy_from_slice(&dk[i * d..(i + 1) * d]);
                row[(h + kv + g) * d..(h + kv + g + 1) * d]
                    .copy_from_slice(&dv[i * d..(i + 1) * d]);
            }
        }
        Ok(Some(Tensor::from_vec(dqkv, (b, t, w), arg.device())?))
    }
}
