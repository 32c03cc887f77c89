//! The GRPO family of losses (`docs/lambda-grpo.md` §3, §4, §6).
//!
//! Every variant is `L = Σ_{i,t} c_{i,t}·ℓ_{i,t}` with the per-token term
//! `ℓ = −pg + β·k3` (§3) and a coefficient `c_{i,t} = m_{i,t}·w_{i,t}/Z_i` that holds the whole
//! difference between the variants (§4 normaliser `Z`, §6 process-set weight `w = 1/|λ|`).
//! [`token_coefficients`] computes `c` for a whole optimizer step, so that summing micro-batch
//! losses gives a gradient independent of how the step is cut (except `bnpo`, by definition:
//! it normalises each micro-batch by its own tokens, then divides by the number of micro-batches
//! as TRL does, so `k` equal micro-batches give the gradient of one).
//! [`reference_loss`] is the float64 reference with an analytic gradient (checked against
//! `fixtures/losses.json`); [`token_loss_candle`] is the same loss built from differentiable
//! candle ops for the trainer.

use anyhow::{bail, Context, Result};
use candle_core::{DType, Device, Tensor};
use serde::{Deserialize, Serialize};

pub use crate::config::{
    Aggregation, ImportanceSamplingLevel, LossType, Objective, ProcessWeighting, ResolvedLoss,
};

mod entropy;
mod policy;

pub use entropy::{high_entropy_mask, quantile, EntropyControl};
pub use policy::{micro_batch_loss, policy_loss_metric, MicroBatchLoss, PolicyOptions, PolicyRow};

/// What the coefficients of one completion depend on.
#[derive(Debug, Clone, Copy)]
pub struct SeqLayout<'a> {
    /// `m_{i,t}`; may be padded beyond the completion (padding is `false`).
    pub mask: &'a [bool],
    /// `|λ_{i,t}|` (only read under `lambda` weighting, for the positions where `mask` is true).
    pub lambda_sizes: Option<&'a [u32]>,
    /// Which micro-batch of the step the completion is in, from 0 (only `bnpo` reads it; the
    /// step has `1 + max micro_batch` micro-batches).
    pub micro_batch: usize,
}

/// `c_{i,t} = m_{i,t}·w_{i,t}/Z_i` for every token of a whole optimizer step (§4, §6).
///
/// `seqs` are all `N` completions of the step. The result has one row per completion, as long as
/// its mask. A completion with no counted token gets all-zero coefficients (`grpo` would divide by 0).
pub fn token_coefficients(
    seqs: &[SeqLayout<'_>],
    loss: ResolvedLoss,
    max_completion_length: usize,
) -> Result<Vec<Vec<f64>>> {
    let n = seqs.len() as f64;
    let count = |s: &SeqLayout| s.mask.iter().filter(|&&m| m).count();
    let step_tokens: usize = seqs.iter().map(count).sum();
    let mut micro_tokens: Vec<usize> = Vec::new();
    if loss.aggregation == Aggregation::Bnpo {
        for s in seqs {
            if micro_tokens.len() <= s.micro_batch {
                micro_tokens.resize(s.micro_batch + 1, 0);
            }
            micro_tokens[s.micro_batch] += count(s);
        }
    }
    if loss.aggregation == Aggregation::DrGrpo && max_completion_length == 0 {
        bail!("loss.type = \"dr_grpo\" needs max_completion_length > 0");
    }
    seqs.iter()
        .enumerate()
        .map(|(i, s)| {
            let z = match loss.aggregation {
                Aggregation::Grpo => n * count(s) as f64,
                Aggregation::Bnpo => (micro_tokens[s.micro_batch] * micro_tokens.len()) as f64,
                Aggregation::Dapo => step_tokens as f64,
                Aggregation::DrGrpo => n * max_completion_length as f64,
                Aggregation::Luspo => n,
            };
            let lambda = match (loss.weighting, s.lambda_sizes) {
                (ProcessWeighting::None, _) => None,
                (ProcessWeighting::Lambda, Some(l)) => Some(l),
                (ProcessWeighting::Lambda, None) => {
                    bail!("completion {i}: process_weighting = \"lambda\" needs |λ| sizes")
                }
            };
            s.mask
                .iter()
                .enumerate()
                .map(|(t, &m)| {
                    if !m || z == 0.0 {
                        return Ok(0.0);
                    }
                    let w = match lambda {
                        None => 1.0,
                        Some(l) => match l.get(t) {
                            Some(&size) if size > 0 => 1.0 / f64::from(size),
                            _ => bail!(
                                "completion {i}, token {t}: counted token without a |λ| ≥ 1 \
                                 ({} sizes given)",
                                l.len()
                            ),
                        },
                    };
                    Ok(w / z)
                })
                .collect()
        })
        .collect()
}

/// Pads coefficient rows to `[R, seq_len]` for [`token_loss_candle`].
pub fn coefficients_tensor(
    coef: &[Vec<f64>],
    seq_len: usize,
    dtype: DType,
    device: &Device,
) -> Result<Tensor> {
    let mut flat = vec![0f32; coef.len() * seq_len];
    for (i, row) in coef.iter().enumerate() {
        if row.len() > seq_len && row[seq_len..].iter().any(|&c| c != 0.0) {
            bail!(
                "completion {i}: {} coefficient positions do not fit a width of {seq_len}",
                row.len()
            );
        }
        for (dst, &c) in flat[i * seq_len..(i + 1) * seq_len].iter_mut().zip(row) {
            *dst = c as f32;
        }
    }
    Tensor::from_vec(flat, (coef.len(), seq_len), device)
        .and_then(|t| t.to_dtype(dtype))
        .context("building the loss coefficient tensor")
}

/// PPO clip range and KL weight of §3.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct LossParams {
    /// `ε_low` (`epsilon`).
    pub epsilon_low: f64,
    /// `ε_high` (`epsilon_high`, defaults to `epsilon`).
    pub epsilon_high: f64,
    /// `β`, the KL weight.
    pub beta: f64,
}

/// The advantage of a completion: one `a_i` per completion, or one per token (e.g. `A_{i,t}`).
#[derive(Debug, Clone, Copy)]
pub enum Advantage<'a> {
    Sequence(f64),
    Token(&'a [f64]),
}

/// Per-token inputs of one completion for [`reference_loss`] (rows as long as its coefficients).
#[derive(Debug, Clone, Copy)]
pub struct SeqTerms<'a> {
    pub logp: &'a [f64],
    pub old_logp: &'a [f64],
    /// Needed when `β > 0`.
    pub ref_logp: Option<&'a [f64]>,
    pub advantage: Advantage<'a>,
}

/// Clipping and KL counters over the counted tokens; summable across micro-batches.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct LossStats {
    /// Counted tokens (those with a non-zero coefficient).
    pub tokens: f64,
    /// Tokens with `ρ < 1 − ε_low` and `a < 0` (the clipped branch is active; TRL's `low_clip`).
    pub clipped_low: f64,
    /// Tokens with `ρ > 1 + ε_high` and `a > 0` (TRL's `high_clip`).
    pub clipped_high: f64,
    /// `Σ k3` over counted tokens (0 without reference log-probs; times the ratio under
    /// `use_bias_correction_kl`, as TRL logs it).
    pub kl_sum: f64,
    /// What the clip counts are over: counted tokens, or rows under sequence-level ratios
    /// (TRL's `global_masked_mean` of a `(B, 1)` tensor). 0 means `tokens`.
    pub clip_units: f64,
    /// `cispo`: units with `ρ > ε_high` and `a > 0` (TRL's `cispo_clip_ratio`).
    pub cispo_clipped: f64,
    /// `vespo`: `Σ φ` over rows, and the rows (TRL's `vespo/phi_seq_mean`).
    pub phi_sum: f64,
    pub rows: f64,
    /// Entropy over the tokens the entropy bonus acts on, and their count (the adaptive
    /// controller's window).
    pub bonus_entropy_sum: f64,
    pub bonus_tokens: f64,
}

impl LossStats {
    /// Fraction of counted tokens where the clipped branch is active.
    pub fn clip_fraction(&self) -> f64 {
        ratio(self.clipped_low + self.clipped_high, self.units())
    }
    pub fn low_clip_fraction(&self) -> f64 {
        ratio(self.clipped_low, self.units())
    }
    pub fn high_clip_fraction(&self) -> f64 {
        ratio(self.clipped_high, self.units())
    }
    pub fn cispo_clip_ratio(&self) -> f64 {
        ratio(self.cispo_clipped, self.units())
    }
    pub fn phi_seq_mean(&self) -> f64 {
        ratio(self.phi_sum, self.rows)
    }
    fn units(&self) -> f64 {
        if self.clip_units > 0.0 {
            self.clip_units
        } else {
            self.tokens
        }
    }
    /// Mean `k3` estimate of `KL(π_θ ‖ π_ref)` per counted token.
    pub fn kl_mean(&self) -> f64 {
        ratio(self.kl_sum, self.tokens)
    }
}

impl std::ops::AddAssign for LossStats {
    fn add_assign(&mut self, o: LossStats) {
        self.tokens += o.tokens;
        self.clipped_low += o.clipped_low;
        self.clipped_high += o.clipped_high;
        self.kl_sum += o.kl_sum;
        self.clip_units += o.clip_units;
        self.cispo_clipped += o.cispo_clipped;
        self.phi_sum += o.phi_sum;
        self.rows += o.rows;
        self.bonus_entropy_sum += o.bonus_entropy_sum;
        self.bonus_tokens += o.bonus_tokens;
    }
}

fn ratio(a: f64, b: f64) -> f64 {
    if b == 0.0 {
        0.0
    } else {
        a / b
    }
}

/// One token's term of §3: returns `(ℓ, ∂ℓ/∂logp, k3)`.
///
/// The gradient of `pg` is `ρ·a` where the unclipped branch is the minimum (which includes the
/// whole clip range, where both branches are equal) and 0 elsewhere (§3).
pub fn token_term(
    logp: f64,
    old: f64,
    reference: Option<f64>,
    a: f64,
    p: &LossParams,
) -> (f64, f64, f64) {
    let rho = (logp - old).exp();
    let clipped = rho.clamp(1.0 - p.epsilon_low, 1.0 + p.epsilon_high);
    let (unc, clp) = (rho * a, clipped * a);
    let (pg, dpg) = if unc <= clp { (unc, unc) } else { (clp, 0.0) };
    let (k3, dk3) = match reference {
        Some(r) => {
            let e = (r - logp).exp();
            (e - (r - logp) - 1.0, 1.0 - e)
        }
        None => (0.0, 0.0),
    };
    (-pg + p.beta * k3, -dpg + p.beta * dk3, k3)
}

/// The float64 reference: loss value, `∂L/∂logp` per token, and [`LossStats`].
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ReferenceLoss {
    pub value: f64,
    pub grad_logp: Vec<Vec<f64>>,
    pub stats: LossStats,
}

/// `L = Σ c_{i,t}·ℓ_{i,t}` in float64 with its analytic gradient (§3, §4, §6).
///
/// `coef` comes from [`token_coefficients`]; tokens with `c = 0` are skipped entirely.
pub fn reference_loss(
    seqs: &[SeqTerms<'_>],
    coef: &[Vec<f64>],
    p: &LossParams,
) -> Result<ReferenceLoss> {
    if seqs.len() != coef.len() {
        bail!(
            "{} completions but {} coefficient rows",
            seqs.len(),
            coef.len()
        );
    }
    let mut value = 0.0;
    let mut stats = LossStats::default();
    let mut grad_logp = Vec::with_capacity(seqs.len());
    for (i, (s, c)) in seqs.iter().zip(coef).enumerate() {
        let mut g = vec![0.0; c.len()];
        for (t, &ct) in c.iter().enumerate() {
            if ct == 0.0 {
                continue;
            }
            let get = |x: &[f64], what: &str| {
                x.get(t)
                    .copied()
                    .with_context(|| format!("completion {i}: no {what} for token {t}"))
            };
            let logp = get(s.logp, "logp")?;
            let old = get(s.old_logp, "old_logp")?;
            let reference = match s.ref_logp {
                Some(r) => Some(get(r, "ref_logp")?),
                None if p.beta != 0.0 => bail!("completion {i}: β > 0 needs ref_logp"),
                None => None,
            };
            let a = match s.advantage {
                Advantage::Sequence(a) => a,
                Advantage::Token(a) => get(a, "advantage")?,
            };
            let (l, dl, k3) = token_term(logp, old, reference, a, p);
            value += ct * l;
            g[t] = ct * dl;
            let rho = (logp - old).exp();
            stats.tokens += 1.0;
            stats.clipped_low += f64::from(u8::from(rho < 1.0 - p.epsilon_low && a < 0.0));
            stats.clipped_high += f64::from(u8::from(rho > 1.0 + p.epsilon_high && a > 0.0));
            stats.kl_sum += k3;
        }
        grad_logp.push(g);
    }
    Ok(ReferenceLoss {
        value,
        grad_logp,
        stats,
    })
}

/// The loss of §3 from differentiable candle ops: `Σ coef·(−pg + β·k3)`, a scalar.
///
/// `logp`, `old`, `ref_`, `coef` are `[R, T]`; `adv` is `[R]` (per completion) or `[R, T]`.
/// Only `logp` carries a gradient. Instead of `minimum` (whose backward splits ties in half), `pg`
/// is `active·ρ·a + (1 − active)·clip(ρ)·a` with a constant mask `active = [ρa ≤ clip(ρ)a]`,
/// which gives exactly the §3 derivative. Tokens with `coef = 0` count as masked in the stats.
#[allow(clippy::too_many_arguments)]
pub fn token_loss_candle(
    logp: &Tensor,
    old: &Tensor,
    ref_: Option<&Tensor>,
    adv: &Tensor,
    coef: &Tensor,
    epsilon_low: f64,
    epsilon_high: f64,
    beta: f64,
) -> candle_core::Result<(Tensor, LossStats)> {
    let dtype = logp.dtype();
    let adv = adv.to_dtype(dtype)?.detach();
    let adv = if adv.rank() == 1 {
        adv.unsqueeze(1)?
    } else {
        adv
    };
    let coef = coef.to_dtype(dtype)?.detach();
    let old = old.to_dtype(dtype)?.detach();

    let ratio = (logp - &old)?.exp()?;
    let ratio_c = ratio.detach();
    let clipped = ratio_c.clamp(1.0 - epsilon_low, 1.0 + epsilon_high)?;
    let unclipped_val = ratio_c.broadcast_mul(&adv)?;
    let clipped_val = clipped.broadcast_mul(&adv)?;
    let active = unclipped_val.le(&clipped_val)?.to_dtype(dtype)?;
    let pg = (ratio.broadcast_mul(&adv)?.mul(&active)?
        + clipped_val.mul(&active.affine(-1.0, 1.0)?)?)?;

    let mut per_token = pg.neg()?;
    let mut k3_c = None;
    match ref_ {
        Some(r) => {
            let diff = (r.to_dtype(dtype)?.detach() - logp)?;
            let k3 = ((diff.exp()? - diff)? - 1.0)?;
            k3_c = Some(k3.detach());
            if beta != 0.0 {
                per_token = (per_token + (k3 * beta)?)?;
            }
        }
        None if beta != 0.0 => {
            return Err(candle_core::Error::Msg(
                "token_loss_candle: β > 0 needs reference log-probs".into(),
            ))
        }
        None => {}
    }
    let loss = per_token.mul(&coef)?.sum_all()?;

    // Statistics: one host sync for all four sums.
    let f = DType::F32;
    let mask = coef.ne(0.0)?.to_dtype(f)?;
    let adv_f = adv.to_dtype(f)?;
    let low = ratio_c
        .lt(1.0 - epsilon_low)?
        .to_dtype(f)?
        .broadcast_mul(&adv_f.lt(0.0)?.to_dtype(f)?)?;
    let high = ratio_c
        .gt(1.0 + epsilon_high)?
        .to_dtype(f)?
        .broadcast_mul(&adv_f.gt(0.0)?.to_dtype(f)?)?;
    let kl = match k3_c {
        Some(k) => k.to_dtype(f)?.mul(&mask)?.sum_all()?,
        None => Tensor::zeros((), f, logp.device())?,
    };
    let sums = Tensor::stack(
        &[
            mask.sum_all()?,
            low.mul(&mask)?.sum_all()?,
            high.mul(&mask)?.sum_all()?,
            kl,
        ],
        0,
    )?
    .to_vec1::<f32>()?;
    let stats = LossStats {
        tokens: f64::from(sums[0]),
        clipped_low: f64::from(sums[1]),
        clipped_high: f64::from(sums[2]),
        kl_sum: f64::from(sums[3]),
        ..LossStats::default()
    };
    Ok((loss, stats))
}

#[cfg(test)]
mod tests {
    use super::*;

    const P: LossParams = LossParams {
        epsilon_low: 0.2,
        epsilon_high: 0.28,
        beta: 0.0,
    };

    #[test]
    fn resolve_rules() {
        let r = LossType::LambdaGrpo
            .resolve(ProcessWeighting::Lambda)
            .unwrap();
        assert_eq!(r.aggregation, Aggregation::Dapo);
        assert_eq!(r.weighting, ProcessWeighting::Lambda);
        assert!(LossType::LambdaGrpo
            .resolve(ProcessWeighting::None)
            .is_err());
        let r = LossType::Grpo.resolve(ProcessWeighting::Lambda).unwrap();
        assert_eq!(r.aggregation, Aggregation::Grpo);
        let t: LossType = serde_json::from_str("\"dr_grpo\"").unwrap();
        assert_eq!(t, LossType::DrGrpo);
        assert_eq!(
            serde_json::to_string(&LossType::LambdaGrpo).unwrap(),
            "\"lambda_grpo\""
        );
    }

    #[test]
    fn clip_gradient_regions() {
        // Inside the range: gradient ρ·a.
        let (_, d, _) = token_term(0.1f64.ln(), 0.1f64.ln(), None, 2.0, &P);
        assert!((d + 2.0).abs() < 1e-12);
        // ρ = 1.5 > 1.28 with a > 0: clipped branch, zero gradient, value −1.28·a.
        let (l, d, _) = token_term(1.5f64.ln(), 0.0, None, 2.0, &P);
        assert_eq!(d, 0.0);
        assert!((l + 2.56).abs() < 1e-12);
        // ρ = 1.5 with a < 0: unclipped is the min, gradient ρ·a.
        let (_, d, _) = token_term(1.5f64.ln(), 0.0, None, -1.0, &P);
        assert!((d - 1.5).abs() < 1e-12);
        // ρ = 0.5 < 0.8 with a < 0: clipped, zero gradient.
        let (_, d, _) = token_term(0.5f64.ln(), 0.0, None, -1.0, &P);
        assert_eq!(d, 0.0);
    }

    #[test]
    fn coefficients_by_aggregation() {
        let m0 = [true, true, false];
        let m1 = [true, true, true];
        let l0 = [2u32, 1];
        let l1 = [2u32, 1, 1];
        let seqs = [
            SeqLayout {
                mask: &m0,
                lambda_sizes: Some(&l0),
                micro_batch: 0,
            },
            SeqLayout {
                mask: &m1,
                lambda_sizes: Some(&l1),
                micro_batch: 1,
            },
        ];
        let c = |t: LossType, w| token_coefficients(&seqs, t.resolve(w).unwrap(), 4).unwrap();
        assert_eq!(
            c(LossType::Grpo, ProcessWeighting::None),
            vec![vec![0.25, 0.25, 0.0], vec![1.0 / 6.0; 3]]
        );
        assert_eq!(c(LossType::Dapo, ProcessWeighting::None)[1], vec![0.2; 3]);
        // 2 tokens in micro-batch 0, 2 micro-batches: 1/(2·2).
        assert_eq!(
            c(LossType::Bnpo, ProcessWeighting::None)[0],
            vec![0.25, 0.25, 0.0]
        );
        assert_eq!(
            c(LossType::DrGrpo, ProcessWeighting::None)[0],
            vec![0.125, 0.125, 0.0]
        );
        assert_eq!(
            c(LossType::LambdaGrpo, ProcessWeighting::Lambda)[1],
            vec![0.1, 0.2, 0.2]
        );
        let no_l = [SeqLayout {
            mask: &m0,
            lambda_sizes: None,
            micro_batch: 0,
        }];
        assert!(token_coefficients(
            &no_l,
            LossType::Dapo.resolve(ProcessWeighting::Lambda).unwrap(),
            4
        )
        .is_err());
        assert!(token_coefficients(
            &no_l,
            LossType::DrGrpo.resolve(ProcessWeighting::None).unwrap(),
            0
        )
        .is_err());
    }

    #[test]
    fn bnpo_is_invariant_to_equal_micro_batches() {
        // k micro-batches holding the same token counts: bnpo's coefficients (hence its
        // gradient) equal those of the one-micro-batch step, i.e. dapo's.
        let masks: Vec<Vec<bool>> = (0..8).map(|i| vec![true; 2 + i % 2]).collect();
        let dapo = LossType::Dapo.resolve(ProcessWeighting::None).unwrap();
        let bnpo = LossType::Bnpo.resolve(ProcessWeighting::None).unwrap();
        let layouts = |k: usize| -> Vec<SeqLayout> {
            masks
                .iter()
                .enumerate()
                .map(|(i, m)| SeqLayout {
                    mask: m,
                    lambda_sizes: None,
                    micro_batch: i / (8 / k),
                })
                .collect()
        };
        let one = token_coefficients(&layouts(1), dapo, 4).unwrap();
        for k in [1, 2, 4] {
            let c = token_coefficients(&layouts(k), bnpo, 4).unwrap();
            for (a, b) in c.iter().flatten().zip(one.iter().flatten()) {
                assert!((a - b).abs() < 1e-15, "k = {k}: {a} vs {b}");
            }
        }
    }

    #[test]
    fn candle_matches_reference_with_clipping() -> Result<()> {
        let dev = Device::Cpu;
        let logp = [[-1.0f64, -0.5, -2.0], [-0.3, -1.2, 0.0]];
        let old = [[-1.0f64, -1.0, -1.5], [-0.9, -1.2, 0.0]];
        let refl = [[-1.1f64, -0.4, -2.2], [-0.2, -1.0, 0.0]];
        let adv = [0.7f64, -1.3];
        let coef = vec![vec![0.2, 0.2, 0.2], vec![0.2, 0.2, 0.0]];
        let p = LossParams { beta: 0.04, ..P };
        let terms: Vec<SeqTerms> = (0..2)
            .map(|i| SeqTerms {
                logp: &logp[i],
                old_logp: &old[i],
                ref_logp: Some(&refl[i]),
                advantage: Advantage::Sequence(adv[i]),
            })
            .collect();
        let want = reference_loss(&terms, &coef, &p)?;
        let t = |x: &[[f64; 3]; 2]| Tensor::new(x, &dev).and_then(|t| t.to_dtype(DType::F32));
        let var = candle_core::Var::from_tensor(&t(&logp)?)?;
        let (loss, stats) = token_loss_candle(
            var.as_tensor(),
            &t(&old)?,
            Some(&t(&refl)?),
            &Tensor::new(&adv, &dev)?,
            &coefficients_tensor(&coef, 3, DType::F32, &dev)?,
            p.epsilon_low,
            p.epsilon_high,
            p.beta,
        )?;
        assert!((f64::from(loss.to_scalar::<f32>()?) - want.value).abs() < 1e-6);
        let grads = loss.backward()?;
        let g = grads
            .get(var.as_tensor())
            .context("no gradient")?
            .to_vec2::<f32>()?;
        for (gi, wi) in g.iter().zip(&want.grad_logp) {
            for (x, y) in gi.iter().zip(wi) {
                assert!((f64::from(*x) - y).abs() < 1e-6, "{x} vs {y}");
            }
        }
        assert_eq!(stats.tokens, 5.0);
        assert_eq!(stats.tokens, want.stats.tokens);
        assert_eq!(
            stats.clipped_high + stats.clipped_low,
            want.stats.clipped_high + want.stats.clipped_low
        );
        assert!(stats.clip_fraction() > 0.0);
        assert!((stats.kl_sum - want.stats.kl_sum).abs() < 1e-6);
        Ok(())
    }
}
