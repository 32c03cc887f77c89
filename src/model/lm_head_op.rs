//! The output projection fused with log-softmax, target gather and entropy, computed in
//! chunks over the vocabulary: `[tokens × vocab]` logits (3.4 GB at 5,600 tokens of a
//! 151,936-word vocabulary) never exist; one `[tokens × chunk]` block does, forward and
//! backward. The forward keeps a running max / sum per row (online softmax); the backward
//! recomputes each block's logits from the saved log-sum-exp, so no softmax is stored, unless
//! all the logits fit in `SAVE_ELEMS` (512 MiB): then the forward keeps them (raw, one copy)
//! and the backward reuses them instead of repeating the head's GEMM, a quarter of a small
//! model's forward.

use super::ops::{f32_slice as slice, zeroed};
use std::sync::{Arc, Mutex};

use candle_core::{bail, CpuStorage, CustomOp3, Layout, Result, Shape, Storage, Tensor};
use rayon::prelude::*;

use super::bf16_copies::{matmul_act, WeightPrec};
use super::kernels::gemm::Operand;
use super::kernels::rows;

/// Logit block size: at most this many f32 (64 MiB) are held at once.
const BLOCK_ELEMS: usize = 16 << 20;

/// The most logits (f32, 512 MiB) a forward keeps for its backward instead of recomputing.
pub(crate) const SAVE_ELEMS: usize = 128 << 20;

/// `[N, 3]` = (log p(target), entropy, log-sum-exp) per row of
/// `softmax((hidden · weightᵀ) * inv_temperature + bias)`, for `hidden [N, H]`,
/// `weight [V, H]`, `targets [N]` (u32). Differentiable in `hidden` and `weight` through
/// columns 0 and 1 (the entropy, for an entropy bonus); the log-sum-exp is a statistic.
#[derive(Debug, Clone)]
pub(crate) struct LmHeadLogprobs {
    pub inv_temperature: f32,
    /// Additive `[V]` bias on the scaled logits (a vocabulary restriction), if any.
    pub bias: Option<Arc<Vec<f32>>>,
    /// Vocabulary columns per block; 0 = sized from `BLOCK_ELEMS`.
    pub block_cols: usize,
    /// Keep the raw logits for the backward (a backward will follow and they fit
    /// `SAVE_ELEMS`); the backward takes them from `saved`.
    pub keep_logits: bool,
    pub saved: Arc<Mutex<Option<Vec<f32>>>>,
    /// The precision of the GEMMs and the weight's bf16 copy; softmax, log-probs and the
    /// logit gradient stay f32.
    pub w: WeightPrec,
}

impl LmHeadLogprobs {
    fn block(&self, n: usize, v: usize) -> usize {
        let c = if self.block_cols > 0 {
            self.block_cols
        } else {
            (BLOCK_ELEMS / n.max(1)).max(256)
        };
        c.min(v).max(1)
    }

    fn check(&self, n: usize, h: usize, v: usize, hw: usize, tg: &[u32]) -> Result<()> {
        if hw != h {
            bail!("lm-head-logprobs: hidden size {h} but weight has {hw} columns")
        }
        if tg.len() != n {
            bail!("lm-head-logprobs: {} targets for {n} rows", tg.len())
        }
        if let Some(&bad) = tg.iter().find(|&&t| t as usize >= v) {
            bail!("lm-head-logprobs: target {bad} out of range for vocab {v}")
        }
        if let Some(b) = &self.bias {
            if b.len() != v {
                bail!(
                    "lm-head-logprobs: bias has {} entries for vocab {v}",
                    b.len()
                )
            }
        }
        Ok(())
    }
}

/// Running softmax statistics of one row: max `m`, `s = Σ e^(z-m)`, `w = Σ e^(z-m)(z-m)`.
#[derive(Clone, Copy)]
struct Running {
    m: f32,
    s: f32,
    w: f32,
}

impl Running {
    const EMPTY: Running = Running {
        m: f32::NEG_INFINITY,
        s: 0.0,
        w: 0.0,
    };

    fn merge(self, o: Running) -> Running {
        if o.s == 0.0 {
            return self;
        }
        if self.s == 0.0 {
            return o;
        }
        let m = self.m.max(o.m);
        let (a, b) = ((self.m - m).exp(), (o.m - m).exp());
        // Re-centre each w on the new max: Σ e^(z-m)(z-m) = e^(m0-m) (w0 + (m0-m) s0).
        Running {
            m,
            s: self.s * a + o.s * b,
            w: a * (self.w + (self.m - m) * self.s) + b * (o.w + (o.m - m) * o.s),
        }
    }
}

/// One row block's `d z` when the entropy has a gradient `ge` as well as the log-prob (`g0`):
/// with `z' = z·s + bias`, `log p = z' − lse`, `∂H/∂z'_v = −p_v (log p_v + H)`.
fn entropy_grad_block(
    z: &mut [f32],
    s: f32,
    bias: Option<&[f32]>,
    target: Option<usize>,
    res: &[f32],
    g0: f32,
    ge: f32,
) {
    let (h, lse) = (res[1], res[2]);
    for (j, v) in z.iter_mut().enumerate() {
        let lp = *v * s + bias.map_or(0.0, |b| b[j]) - lse;
        let p = lp.exp();
        *v = if p == 0.0 {
            0.0
        } else {
            -s * p * (g0 + ge * (lp + h))
        };
    }
    if let Some(t) = target {
        z[t] += g0 * s;
    }
}

impl CustomOp3 for LmHeadLogprobs {
    fn name(&self) -> &'static str {
        "lm-head-logprobs"
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
        let hid = slice(s1, l1, "lm-head-logprobs hidden")?;
        let w = slice(s2, l2, "lm-head-logprobs weight")?;
        let CpuStorage::U32(tg) = s3 else {
            bail!("lm-head-logprobs: targets must be u32")
        };
        let Some((t0, t1)) = l3.contiguous_offsets() else {
            bail!("lm-head-logprobs: targets must be contiguous")
        };
        let tg = &tg[t0..t1];
        let (n, h) = l1.shape().dims2()?;
        let (v, hw) = l2.shape().dims2()?;
        self.check(n, h, v, hw, tg)?;
        self.w.check(w.len(), "lm-head-logprobs")?;
        let s = self.inv_temperature;
        let cb = self.block(n, v);
        let keep = self.keep_logits && n * v <= SAVE_ELEMS;
        // Unscaled logits are the raw ones: each block is computed straight into the kept
        // copy, and read in place (the row statistics leave them as they are).
        let direct = keep && s == 1.0 && self.bias.is_none();
        let mut buf = zeroed(if direct { 0 } else { n * cb });
        let mut run = vec![Running::EMPTY; n];
        let mut picked = vec![0f32; n];
        let mut saved = if direct {
            zeroed(n * v)
        } else {
            Vec::with_capacity(if keep { n * v } else { 0 })
        };
        for v0 in (0..v).step_by(cb) {
            let c = cb.min(v - v0);
            let logits = |blk: &mut [f32]| {
                self.w.matmul(
                    blk,
                    c,
                    Operand::new(hid, h),
                    Operand::t(&w[v0 * h..(v0 + c) * h], h),
                    v0 * h,
                    n,
                    c,
                    h,
                    false,
                )
            };
            let blk = if direct {
                let blk = &mut saved[n * v0..n * (v0 + c)];
                logits(blk);
                blk
            } else {
                logits(&mut buf[..n * c]);
                if keep {
                    saved.extend_from_slice(&buf[..n * c]);
                }
                &mut buf[..n * c]
            };
            let bias = self.bias.as_ref().map(|b| &b[v0..v0 + c]);
            blk.par_chunks_mut(c)
                .zip(run.par_iter_mut())
                .zip(picked.par_iter_mut())
                .enumerate()
                .for_each(|(i, ((z, r), p))| {
                    rows::scale_bias(z, s, bias);
                    let t = tg[i] as usize;
                    if (v0..v0 + c).contains(&t) {
                        *p = z[t - v0];
                    }
                    let m = rows::row_max(z);
                    let (se, we) = rows::sum_exp_and_weighted(z, m);
                    *r = r.merge(Running { m, s: se, w: we });
                });
        }
        drop(buf);
        if keep {
            *self
                .saved
                .lock()
                .map_err(|_| candle_core::Error::Msg("lm-head logits lock".into()))? = Some(saved);
        }
        let mut out = vec![0f32; n * 3];
        for (i, o) in out.chunks_mut(3).enumerate() {
            let r = run[i];
            let lse = r.m + r.s.ln();
            o[0] = picked[i] - lse;
            o[1] = r.s.ln() - r.w / r.s;
            o[2] = lse;
        }
        Ok((CpuStorage::F32(out), Shape::from((n, 3))))
    }

    fn bwd(
        &self,
        hidden: &Tensor,
        weight: &Tensor,
        targets: &Tensor,
        res: &Tensor,
        grad_res: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let (n, h) = hidden.dims2()?;
        let v = weight.dim(0)?;
        let (hs, hl) = hidden.storage_and_layout();
        let (ws, wl) = weight.storage_and_layout();
        let (Storage::Cpu(hs), Storage::Cpu(ws)) = (&*hs, &*ws) else {
            bail!("lm-head-logprobs: CPU only")
        };
        let hid = slice(hs, hl, "lm-head-logprobs hidden")?;
        let w = slice(ws, wl, "lm-head-logprobs weight")?;
        let tg = targets.flatten_all()?.to_vec1::<u32>()?;
        let res = res.to_vec2::<f32>()?;
        let g = grad_res.to_vec2::<f32>()?;
        let s = self.inv_temperature;
        let cb = self.block(n, v);
        // The forward's raw logits, block after block, when it kept them.
        let mut saved = self
            .saved
            .lock()
            .map_err(|_| candle_core::Error::Msg("lm-head logits lock".into()))?
            .take()
            .filter(|s| s.len() == n * v);
        let mut buf = zeroed(if saved.is_some() { 0 } else { n * cb });
        let mut gh = zeroed(n * h);
        // A frozen head (LoRA trains adapters only) gets no gradient: skip its GEMM and buffer.
        let want_w = weight.track_op();
        let mut gw = zeroed(if want_w { v * h } else { 0 });
        for v0 in (0..v).step_by(cb) {
            let c = cb.min(v - v0);
            let wb = &w[v0 * h..(v0 + c) * h];
            let blk = match saved.as_mut() {
                Some(s) => &mut s[n * v0..n * (v0 + c)],
                None => {
                    let blk = &mut buf[..n * c];
                    self.w.matmul(
                        blk,
                        c,
                        Operand::new(hid, h),
                        Operand::t(wb, h),
                        v0 * h,
                        n,
                        c,
                        h,
                        false,
                    );
                    blk
                }
            };
            let bias = self.bias.as_ref().map(|b| &b[v0..v0 + c]);
            blk.par_chunks_mut(c).enumerate().for_each(|(i, z)| {
                let t = tg[i] as usize;
                let local = (v0..v0 + c).contains(&t).then(|| t - v0);
                if g[i][1] != 0.0 {
                    entropy_grad_block(z, s, bias, local, &res[i], g[i][0], g[i][1]);
                } else {
                    rows::logprob_grad_block(z, s, bias, local, res[i][2], g[i][0]);
                }
            });
            // d hidden += dZ · W_block ; d W_block = dZᵀ · hidden.
            self.w.matmul(
                &mut gh,
                h,
                Operand::new(blk, c),
                Operand::new(wb, h),
                v0 * h,
                n,
                h,
                c,
                v0 > 0,
            );
            if !want_w {
                continue;
            }
            matmul_act(
                &mut gw[v0 * h..(v0 + c) * h],
                h,
                Operand::t(blk, c),
                Operand::new(hid, h),
                c,
                h,
                n,
                false,
                self.w.prec,
            );
        }
        drop(buf);
        let dev = hidden.device();
        let gh = Tensor::from_vec(gh, (n, h), dev)?;
        let gw = if want_w {
            Some(Tensor::from_vec(gw, (v, h), dev)?)
        } else {
            None
        };
        Ok((Some(gh), gw, None))
    }
}

#[cfg(test)]
mod tests {
    use super::super::ops::test_tensors::{max_abs, randn};
    use super::*;
    use candle_core::{DType, Device, Var, D};

    /// Block sizes that split the vocabulary unevenly, one that covers it, the default.
    #[test]
    fn matches_composed_values_and_gradients_for_any_block_size() {
        let (n, h, v) = (9, 6, 23);
        let hid = Var::from_tensor(&randn(&[n, h], 1, 3.0)).unwrap();
        let w = Var::from_tensor(&randn(&[v, h], 2, 2.0)).unwrap();
        let tg = Tensor::new(&[0u32, 22, 5, 5, 7, 1, 11, 12, 21], &Device::Cpu).unwrap();
        let gw_row = randn(&[n], 3, 2.0);
        let bias_v: Vec<f32> = (0..v)
            .map(|i| if i % 4 == 3 { -1e9 } else { 0.05 * i as f32 })
            .collect();
        for (temp, bias) in [(1.0f32, None), (0.7, None), (1.0, Some(bias_v.clone()))] {
            let bias_t = bias
                .as_ref()
                .map(|b| Tensor::from_vec(b.clone(), v, &Device::Cpu).unwrap());
            // Composed reference.
            let logits = hid.as_tensor().matmul(&w.as_tensor().t().unwrap()).unwrap();
            let z = (logits / temp as f64).unwrap();
            let z = match &bias_t {
                Some(b) => z.broadcast_add(b).unwrap(),
                None => z,
            };
            let ls = candle_nn::ops::log_softmax(&z, D::Minus1).unwrap();
            let want = ls
                .gather(&tg.unsqueeze(1).unwrap(), 1)
                .unwrap()
                .squeeze(1)
                .unwrap();
            let p = ls.exp().unwrap();
            let ent = (p.clone() * ls.clone())
                .unwrap()
                .sum(D::Minus1)
                .unwrap()
                .neg()
                .unwrap();
            let gc = (want.clone() * &gw_row)
                .unwrap()
                .sum_all()
                .unwrap()
                .backward()
                .unwrap();
            for (block, keep_logits) in [(0, false), (5, false), (7, true), (23, false), (0, true)]
            {
                let op = LmHeadLogprobs {
                    inv_temperature: 1.0 / temp,
                    bias: bias.clone().map(Arc::new),
                    block_cols: block,
                    keep_logits,
                    saved: Arc::default(),
                    w: Default::default(),
                };
                let out = hid.as_tensor().apply_op3(w.as_tensor(), &tg, op).unwrap();
                let lp = out.narrow(1, 0, 1).unwrap().squeeze(1).unwrap();
                let e = out.narrow(1, 1, 1).unwrap().squeeze(1).unwrap();
                assert!(max_abs(&lp, &want) < 1e-4, "block {block}");
                assert!(max_abs(&e, &ent) < 1e-4, "entropy, block {block}");
                let gf = (lp * &gw_row)
                    .unwrap()
                    .sum_all()
                    .unwrap()
                    .backward()
                    .unwrap();
                for var in [&hid, &w] {
                    let (a, b) = (gf.get(var).unwrap(), gc.get(var).unwrap());
                    let err = max_abs(a, b);
                    assert!(err < 1e-4, "grad error {err}, block {block}");
                    let norm = b
                        .abs()
                        .unwrap()
                        .sum_all()
                        .unwrap()
                        .to_scalar::<f32>()
                        .unwrap();
                    assert!(norm > 0.1);
                }
            }
        }
    }

    /// An entropy bonus: the entropy column carries a gradient too (split and whole blocks).
    #[test]
    fn entropy_gradient_matches_composed_ops() {
        let (n, h, v) = (7, 5, 19);
        let hid = Var::from_tensor(&randn(&[n, h], 4, 3.0)).unwrap();
        let w = Var::from_tensor(&randn(&[v, h], 5, 2.0)).unwrap();
        let tg = Tensor::new(&[0u32, 18, 5, 5, 7, 1, 11], &Device::Cpu).unwrap();
        let (g0, ge) = (randn(&[n], 6, 2.0), randn(&[n], 7, 2.0));
        let bias_v: Vec<f32> = (0..v)
            .map(|i| if i % 5 == 4 { -1e9 } else { 0.03 * i as f32 })
            .collect();
        for (temp, bias) in [(1.0f32, None), (0.6, Some(bias_v))] {
            let logits = hid.as_tensor().matmul(&w.as_tensor().t().unwrap()).unwrap();
            let mut z = (logits / temp as f64).unwrap();
            if let Some(b) = &bias {
                z = z
                    .broadcast_add(&Tensor::from_vec(b.clone(), v, &Device::Cpu).unwrap())
                    .unwrap();
            }
            let ls = candle_nn::ops::log_softmax(&z, D::Minus1).unwrap();
            let lp = ls
                .gather(&tg.unsqueeze(1).unwrap(), 1)
                .unwrap()
                .squeeze(1)
                .unwrap();
            // Entropy from the unmasked columns only (the masked ones have p = 0 exactly).
            let p = ls.exp().unwrap();
            let plogp = (p * ls.clamp(-1e4f32, 0f32).unwrap()).unwrap();
            let ent = plogp.sum(D::Minus1).unwrap().neg().unwrap();
            let loss = ((lp * &g0).unwrap() + (ent * &ge).unwrap()).unwrap();
            let gc = loss.sum_all().unwrap().backward().unwrap();
            for (block, keep_logits) in [(0, false), (4, false), (6, true)] {
                let op = LmHeadLogprobs {
                    inv_temperature: 1.0 / temp,
                    bias: bias.clone().map(Arc::new),
                    block_cols: block,
                    keep_logits,
                    saved: Arc::default(),
                    w: Default::default(),
                };
                let out = hid.as_tensor().apply_op3(w.as_tensor(), &tg, op).unwrap();
                let lp = out.narrow(1, 0, 1).unwrap().squeeze(1).unwrap();
                let e = out.narrow(1, 1, 1).unwrap().squeeze(1).unwrap();
                let loss = ((lp * &g0).unwrap() + (e * &ge).unwrap()).unwrap();
                let gf = loss.sum_all().unwrap().backward().unwrap();
                for var in [&hid, &w] {
                    let err = max_abs(gf.get(var).unwrap(), gc.get(var).unwrap());
                    assert!(err < 1e-3, "grad error {err}, block {block}, temp {temp}");
                }
            }
        }
    }

    #[test]
    fn out_of_range_targets_fail() {
        let (n, h, v) = (9, 6, 23);
        let hid = Var::from_tensor(&randn(&[n, h], 1, 3.0)).unwrap();
        let w = Var::from_tensor(&randn(&[v, h], 2, 2.0)).unwrap();
        let bad = Tensor::new(&[0u32, 23, 0, 0, 0, 0, 0, 0, 0], &Device::Cpu).unwrap();
        let op = LmHeadLogprobs {
            inv_temperature: 1.0,
            bias: None,
            block_cols: 0,
            keep_logits: false,
            saved: Arc::default(),
            w: Default::default(),
        };
        assert!(hid.as_tensor().apply_op3(w.as_tensor(), &bad, op).is_err());
        let _ = DType::F32;
    }
}
