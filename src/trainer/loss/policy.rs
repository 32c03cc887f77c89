//! Every policy loss of TRL 1.16's `GRPOTrainer._compute_loss`, for one micro-batch, in float64
//! with its analytic gradient in the per-token log-probs and entropies (`docs/lambda-grpo.md` §9).
//!
//! The trainer runs exactly this function: it turns the gradient into the surrogate
//! `Σ g·log π + Σ h·H` whose backward through the model is the loss's (chain rule), so what
//! `tests/trl_losses.rs` checks against TRL's own `_compute_loss` is what trains.
//!
//! A token's policy term is weighted by its coefficient `c = m·w/Z` ([`super::token_coefficients`]:
//! the normaliser of the type and, under `process_weighting = "lambda"`, `w = 1/|λ|`). Sequence
//! statistics (GSPO's ratio, VESPO's weight, the off-policy mask, the entropy quantile) are taken
//! over the counted tokens `m`, never weighted by `w`.

use anyhow::{bail, Context, Result};

use super::{high_entropy_mask, Advantage, Aggregation, LossStats, Objective, ResolvedLoss};
use crate::config::{ImportanceSamplingLevel, LossSection};

/// The options of one loss (TRL's `GRPOConfig` names).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PolicyOptions {
    pub objective: Objective,
    /// The type's normaliser (already in the coefficients; read by [`policy_loss_metric`]).
    pub aggregation: Aggregation,
    /// GSPO: one ratio per completion, `exp` of its mean log-ratio.
    pub sequence_level: bool,
    pub epsilon_low: f64,
    pub epsilon_high: f64,
    pub delta: Option<f64>,
    pub beta: f64,
    pub use_bias_correction_kl: bool,
    pub off_policy_mask_threshold: Option<f64>,
    pub top_entropy_quantile: f64,
    pub sapo_temperature_pos: f64,
    pub sapo_temperature_neg: f64,
    pub vespo_k_pos: f64,
    pub vespo_lambda_pos: f64,
    pub vespo_k_neg: f64,
    pub vespo_lambda_neg: f64,
    /// The entropy bonus term is computed (TRL's `_entropy_bonus_enabled`).
    pub entropy_bonus: bool,
    /// The coefficient it is applied with in this step (0 under adaptive control until the
    /// entropy falls to the target).
    pub entropy_coef: f64,
}

impl PolicyOptions {
    /// The options of `[loss]`, with the entropy coefficient this step applies
    /// ([`super::EntropyControl::applied`]).
    pub fn new(l: &LossSection, resolved: ResolvedLoss, entropy_coef: f64) -> Self {
        Self {
            objective: resolved.objective,
            aggregation: resolved.aggregation,
            sequence_level: l.importance_sampling_level == ImportanceSamplingLevel::Sequence,
            epsilon_low: l.epsilon,
            epsilon_high: l.epsilon_high(),
            delta: l.delta,
            beta: l.beta,
            use_bias_correction_kl: l.use_bias_correction_kl,
            off_policy_mask_threshold: l.off_policy_mask_threshold,
            top_entropy_quantile: l.top_entropy_quantile,
            sapo_temperature_pos: l.sapo_temperature_pos,
            sapo_temperature_neg: l.sapo_temperature_neg,
            vespo_k_pos: l.vespo_k_pos,
            vespo_lambda_pos: l.vespo_lambda_pos,
            vespo_k_neg: l.vespo_k_neg,
            vespo_lambda_neg: l.vespo_lambda_neg,
            entropy_bonus: l.entropy_bonus(),
            entropy_coef,
        }
    }

    /// The plain clipped loss of §3 (no TRL 1.16 option on).
    pub fn clipped(epsilon_low: f64, epsilon_high: f64, beta: f64) -> Self {
        Self {
            objective: Objective::Clip,
            aggregation: Aggregation::Dapo,
            sequence_level: false,
            epsilon_low,
            epsilon_high,
            delta: None,
            beta,
            use_bias_correction_kl: false,
            off_policy_mask_threshold: None,
            top_entropy_quantile: 1.0,
            sapo_temperature_pos: 1.0,
            sapo_temperature_neg: 1.05,
            vespo_k_pos: 2.0,
            vespo_lambda_pos: 3.0,
            vespo_k_neg: 3.0,
            vespo_lambda_neg: 2.0,
            entropy_bonus: false,
            entropy_coef: 0.0,
        }
    }
}

/// One completion of a micro-batch. Rows may be padded: `mask` is false beyond the completion.
#[derive(Debug, Clone, Copy)]
pub struct PolicyRow<'a> {
    pub logp: &'a [f64],
    /// The policy that sampled the batch (TRL's `old_per_token_logps`; also its
    /// `sampling_per_token_logps`: our sampler and trainer share weights and kernels).
    pub old_logp: &'a [f64],
    /// Needed when `β > 0`.
    pub ref_logp: Option<&'a [f64]>,
    pub advantage: Advantage<'a>,
    /// `m`: the tokens that count (TRL's `completion_mask`).
    pub mask: &'a [bool],
    /// `c = m·w/Z` of the policy and KL terms.
    pub coef: &'a [f64],
    /// Per-token entropy; needed by `top_entropy_quantile < 1` and the entropy bonus.
    pub entropy: Option<&'a [f64]>,
}

/// A micro-batch's loss (the value TRL's `_compute_loss` returns), its gradient in the
/// log-probs and entropies (rows as long as the inputs), and statistics.
#[derive(Debug, Clone, PartialEq)]
pub struct MicroBatchLoss {
    pub value: f64,
    /// The value without the entropy bonus.
    pub policy_value: f64,
    pub grad_logp: Vec<Vec<f64>>,
    pub grad_entropy: Vec<Vec<f64>>,
    pub stats: LossStats,
}

/// TRL's clip metrics for one unit (a token, or a row under sequence-level ratios): the
/// `delta`-capped ratio against the clip range, or `cispo`'s ratio against `ε_high`.
fn clip_counts(stats: &mut LossStats, o: &PolicyOptions, rho: f64, a: f64, w: f64) {
    stats.clip_units += w;
    let capped = o.delta.map_or(rho, |d| rho.min(d));
    let hit = |b: bool| w * f64::from(u8::from(b));
    match o.objective {
        Objective::Clip => {
            stats.clipped_low += hit(capped < 1.0 - o.epsilon_low && a < 0.0);
            stats.clipped_high += hit(capped > 1.0 + o.epsilon_high && a > 0.0);
        }
        Objective::Cispo => stats.cispo_clipped += hit(rho > o.epsilon_high && a > 0.0),
        Objective::Sapo | Objective::Vespo => {}
    }
}

/// The loss of one micro-batch of a step cut into `num_micro_batches` (TRL's
/// `current_gradient_accumulation_steps`, which scales the entropy bonus).
pub fn micro_batch_loss(
    rows: &[PolicyRow<'_>],
    o: &PolicyOptions,
    num_micro_batches: usize,
) -> Result<MicroBatchLoss> {
    let width = |r: &PolicyRow| r.mask.len();
    for (i, r) in rows.iter().enumerate() {
        let t = width(r);
        let short = |x: &[f64]| x.len() < t;
        if short(r.logp) || short(r.old_logp) || short(r.coef) || r.ref_logp.is_some_and(short) {
            bail!("completion {i}: per-token inputs shorter than its mask ({t})");
        }
        if let Advantage::Token(a) = r.advantage {
            if a.len() < t {
                bail!("completion {i}: {} advantages for {t} tokens", a.len());
            }
        }
        if o.beta != 0.0 && r.ref_logp.is_none() {
            bail!("completion {i}: β > 0 needs ref_logp");
        }
        if (o.entropy_bonus || o.top_entropy_quantile < 1.0) && r.entropy.is_none_or(short) {
            bail!("completion {i}: the entropy options need per-token entropies");
        }
    }
    let entropy_mask = if o.top_entropy_quantile < 1.0 {
        let ents: Vec<&[f64]> = rows.iter().map(|r| r.entropy.unwrap_or(&[])).collect();
        let masks: Vec<&[bool]> = rows.iter().map(|r| r.mask).collect();
        Some(high_entropy_mask(
            &ents,
            &masks,
            1.0 - o.top_entropy_quantile,
        ))
    } else {
        None
    };

    let mut stats = LossStats::default();
    let (mut policy_value, mut grad_logp) = (0.0, Vec::with_capacity(rows.len()));
    for (i, r) in rows.iter().enumerate() {
        let t_len = width(r);
        let adv = |t: usize| match r.advantage {
            Advantage::Sequence(a) => a,
            Advantage::Token(a) => a[t],
        };
        let m = |t: usize| f64::from(u8::from(r.mask[t]));
        let count: f64 = (0..t_len).map(m).sum();
        let denom = count.max(1.0);
        let log_ratio: Vec<f64> = (0..t_len).map(|t| r.logp[t] - r.old_logp[t]).collect();
        let seq_ratio = o.sequence_level.then(|| {
            let s: f64 = (0..t_len).map(|t| m(t) * log_ratio[t]).sum();
            (s / denom).exp()
        });
        // DeepSeek-V3.2's mask: mean KL(old ‖ current) over the counted tokens.
        let avg_kl = o.off_policy_mask_threshold.map(|_| {
            let s: f64 = (0..t_len).map(|t| m(t) * -log_ratio[t]).sum();
            s / denom
        });
        let phi = |a: f64| -> f64 {
            let lower = 1e-8f64.ln();
            let s: f64 = (0..t_len)
                .map(|t| m(t) * log_ratio[t].clamp(-20.0, 20.0))
                .sum();
            let log_w = s.clamp(lower, 20.0);
            let (k, lam) = if a >= 0.0 {
                (o.vespo_k_pos, o.vespo_lambda_pos)
            } else {
                (o.vespo_k_neg, o.vespo_lambda_neg)
            };
            let lam = lam.max(1e-4);
            let p = (lam + k * log_w - lam * log_w.exp()).exp();
            if p.is_finite() {
                p
            } else {
                0.0
            }
        };
        stats.rows += 1.0;
        if o.objective == Objective::Vespo {
            if let Advantage::Sequence(a) = r.advantage {
                stats.phi_sum += phi(a);
            }
        }
        let mut g = vec![0.0; t_len];
        // Σ_t ∂L/∂ρ over the row (sequence-level ratio only).
        let mut d_seq = 0.0;
        // Clip statistics: once per row under a sequence-level ratio (TRL's `(B, 1)` case).
        if let (Some(rho), Advantage::Sequence(a)) = (seq_ratio, r.advantage) {
            clip_counts(&mut stats, o, rho, a, 1.0);
        }
        for t in 0..t_len {
            let a = adv(t);
            let rho = seq_ratio.unwrap_or_else(|| log_ratio[t].exp());
            let counted = r.mask[t];
            if counted && !o.sequence_level {
                clip_counts(&mut stats, o, rho, a, 1.0);
            }
            let c = r.coef[t];
            if !counted {
                continue;
            }
            stats.tokens += 1.0;
            // The policy term P, ∂P/∂ρ and ∂P/∂log π (for the detached-weight types).
            let (p, dp_drho, dp_dlogp) = match o.objective {
                Objective::Clip => {
                    let (c1, dc1) = match o.delta {
                        Some(d) if rho > d => (d, 0.0),
                        _ => (rho, 1.0),
                    };
                    let (lo, hi) = (1.0 - o.epsilon_low, 1.0 + o.epsilon_high);
                    let c2 = rho.clamp(lo, hi);
                    let dc2 = f64::from(u8::from(lo <= rho && rho <= hi));
                    let (u1, u2) = (c1 * a, c2 * a);
                    // torch.min: the gradient goes to the smaller side, split in half on a tie.
                    if u1 < u2 {
                        (-u1, -a * dc1, 0.0)
                    } else if u1 > u2 {
                        (-u2, -a * dc2, 0.0)
                    } else {
                        (-u1, -a * 0.5 * (dc1 + dc2), 0.0)
                    }
                }
                Objective::Cispo => {
                    let w = rho.min(o.epsilon_high);
                    (-w * a * r.logp[t], 0.0, -w * a)
                }
                Objective::Sapo => {
                    let tau = if a > 0.0 {
                        o.sapo_temperature_pos
                    } else {
                        o.sapo_temperature_neg
                    };
                    let s = 1.0 / (1.0 + (-tau * (rho - 1.0)).exp());
                    (-s * 4.0 / tau * a, -4.0 * s * (1.0 - s) * a, 0.0)
                }
                Objective::Vespo => {
                    let f = phi(a);
                    (-f * a * r.logp[t], 0.0, -f * a)
                }
            };
            let mut keep = 1.0;
            if let (Some(th), Some(kl)) = (o.off_policy_mask_threshold, avg_kl) {
                keep *= f64::from(u8::from(a >= 0.0 || kl <= th));
            }
            if let Some(em) = &entropy_mask {
                keep *= f64::from(u8::from(em[i][t]));
            }
            let (mut value, mut d_rho, mut d_logp) = (keep * p, keep * dp_drho, keep * dp_dlogp);
            if o.beta != 0.0 {
                let reference = r.ref_logp.context("ref_logp")?[t];
                let d = reference - r.logp[t];
                let (k3, dk3) = (d.exp() - d - 1.0, 1.0 - d.exp());
                let (kl, dkl_dlogp, dkl_drho) = if o.use_bias_correction_kl {
                    (k3 * rho, dk3 * rho, k3)
                } else {
                    (k3, dk3, 0.0)
                };
                stats.kl_sum += kl;
                value += o.beta * kl;
                d_logp += o.beta * dkl_dlogp;
                d_rho += o.beta * dkl_drho;
            }
            policy_value += c * value;
            g[t] += c * d_logp;
            if o.sequence_level {
                d_seq += c * d_rho;
            } else {
                g[t] += c * d_rho * rho;
            }
        }
        if let Some(rho) = seq_ratio {
            for (t, gt) in g.iter_mut().enumerate() {
                *gt += d_seq * rho * m(t) / denom;
            }
        }
        grad_logp.push(g);
    }

    // The entropy bonus: mean entropy over the tokens it acts on, per micro-batch, divided by
    // the number of micro-batches (TRL's accumulation factor), never by the type's normaliser.
    let mut value = policy_value;
    let mut grad_entropy: Vec<Vec<f64>> = rows.iter().map(|r| vec![0.0; width(r)]).collect();
    if o.entropy_bonus {
        let acts =
            |i: usize, t: usize| rows[i].mask[t] && entropy_mask.as_ref().is_none_or(|em| em[i][t]);
        let (mut sum, mut count) = (0.0f64, 0.0f64);
        for (i, r) in rows.iter().enumerate() {
            let h = r.entropy.context("entropy")?;
            for (t, &ht) in h.iter().enumerate().take(width(r)) {
                if acts(i, t) {
                    sum += ht;
                    count += 1.0;
                }
            }
        }
        let scale = count.max(1.0) * num_micro_batches.max(1) as f64;
        value -= o.entropy_coef * sum / scale;
        for (i, ge) in grad_entropy.iter_mut().enumerate() {
            for (t, x) in ge.iter_mut().enumerate() {
                if acts(i, t) {
                    *x = -o.entropy_coef / scale;
                }
            }
        }
        stats.bonus_entropy_sum += sum;
        stats.bonus_tokens += count;
    }
    Ok(MicroBatchLoss {
        value,
        policy_value,
        grad_logp,
        grad_entropy,
        stats,
    })
}

/// TRL's `policy_loss` metric of one micro-batch: its policy value before the division by the
/// number of micro-batches, for the types TRL divides so (`grpo`, `sapo`, `bnpo`, `dr_grpo`,
/// `luspo`); as is for the token-sum types.
pub fn policy_loss_metric(
    aggregation: Aggregation,
    policy_value: f64,
    num_micro_batches: usize,
) -> f64 {
    match aggregation {
        Aggregation::Dapo => policy_value,
        _ => policy_value * num_micro_batches as f64,
    }
}
