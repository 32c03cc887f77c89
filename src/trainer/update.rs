//! One pass of the policy update over a step's batch: for each micro-batch, the log-probs of the
//! completion tokens (forward), the clipped loss with the step's coefficients, and its gradient
//! (backward), summed over micro-batches. `train` runs it `num_iterations` times per step; the
//! λ-overhead bench and the tests call it directly, so what they measure is the trainer's code.
//!
//! [`GradAccumulator`] (summing micro-batch gradients) is shared with `grpo sft`; both then clip
//! with `optim::clip_grad_norm`.

use anyhow::{bail, Context, Result};
use candle_core::backprop::GradStore;
use candle_core::{DType, Tensor, Var};

use crate::config::SharePrefixes;
use crate::model::{EntropyGrad, Policy};
use crate::trainer::inplace;
use crate::trainer::loss::{self, Advantage, LossStats, PolicyOptions, PolicyRow};
use crate::trainer::rollout::{pack, PackedBatch};

/// What one optimizer step trains on, row by row (one row per completion).
pub struct UpdateBatch<'a> {
    /// The prompt tokens of each row.
    pub prompts: &'a [&'a [u32]],
    /// The completion tokens of each row.
    pub completions: &'a [&'a [u32]],
    /// `a_i` of each row (§2).
    pub advantages: &'a [f64],
    /// `c_{i,t}` of each row, computed for the whole step ([`loss::token_coefficients`]).
    pub coefficients: &'a [Vec<f64>],
    /// Rows per micro-batch (`B·G / gradient_accumulation_steps`).
    pub micro_batch: usize,
    pub pad: u32,
    /// The sampler's log-prob of each completion token, when known: the first pass then
    /// measures how far the trainer's log-probs are from them.
    pub sampler_logprobs: Option<&'a [Vec<f32>]>,
    /// `train.share_prefixes`: what runs once per micro-batch instead of once per row.
    pub share: SharePrefixes,
}

/// The loss terms' settings (§3) and the distribution the sampler drew from.
#[derive(Debug, Clone, Copy)]
pub struct LossSettings<'a> {
    /// Log-probs are taken from logits / temperature, as sampled (§1).
    pub temperature: f64,
    pub epsilon_low: f64,
    pub epsilon_high: f64,
    pub beta: f64,
    /// `[V]` additive logit bias restricting the vocabulary, as the sampler did.
    pub vocab_bias: Option<&'a Tensor>,
    /// Every option of the loss (type, IS level, masks, entropy bonus, ...); `None` is the
    /// clipped loss of `epsilon_low`, `epsilon_high` and `beta` alone (no bias-corrected KL).
    pub policy: Option<PolicyOptions>,
}

/// `old` and `ref` log-probs per micro-batch (rows × width, float64 on the host): taken on the
/// step's first pass and reused by the later ones (μ > 1), so every pass is measured against
/// the policy that sampled the batch.
#[derive(Default)]
pub struct FrozenLogprobs {
    old: Vec<Option<Vec<Vec<f64>>>>,
    reference: Vec<Option<Vec<Vec<f64>>>>,
}

/// The outcome of one pass over the batch.
pub struct Pass {
    /// Sum of the micro-batch losses (the step's loss: coefficients are normalised per step).
    pub loss: f64,
    /// TRL's `policy_loss`: the mean over micro-batches of each one's policy loss (without the
    /// entropy bonus), as TRL logs it.
    pub policy_loss: f64,
    /// Accumulated gradients, one per variable (zeros where the loss does not reach it).
    pub grads: Vec<Tensor>,
    /// Token statistics over the tokens that count (`c ≠ 0`).
    pub stats: LossStats,
    /// The same per micro-batch (TRL's `clip_ratio/low_min`, `high_max` are extremes over them).
    pub micro_batch_stats: Vec<LossStats>,
    /// Sum of the per-token entropies over the tokens that count.
    pub entropy_sum: f64,
    /// Σ |trainer log-prob − sampler log-prob| and the number of tokens compared (first pass
    /// with `sampler_logprobs` only).
    pub logprob_diff: (f64, usize),
    /// Tokens the decoder ran, over every forward of the pass (policy and reference).
    pub tokens_processed: usize,
}

/// Forward, loss and backward over every micro-batch of `batch`, gradients summed over them.
///
/// On the first call for a step (`frozen` empty) the current log-probs become the `old` ones and
/// the reference model's are taken (when `reference` is given, i.e. β > 0).
pub fn accumulate(
    policy: &Policy,
    reference: Option<&Policy>,
    vars: &[Var],
    batch: &UpdateBatch,
    settings: &LossSettings,
    frozen: &mut FrozenLogprobs,
) -> Result<Pass> {
    let n = batch.completions.len();
    let mb = batch.micro_batch.max(1);
    let chunks = n.div_ceil(mb);
    let first = frozen.old.is_empty();
    if first {
        frozen.old = vec![None; chunks];
        frozen.reference = vec![None; chunks];
    }
    let device = &policy.device;
    let options = settings.policy.unwrap_or_else(|| {
        PolicyOptions::clipped(settings.epsilon_low, settings.epsilon_high, settings.beta)
    });
    let mut grads = GradAccumulator::new(vars.len());
    let mut pass = Pass {
        loss: 0.0,
        policy_loss: 0.0,
        grads: Vec::new(),
        stats: LossStats::default(),
        micro_batch_stats: Vec::with_capacity(chunks),
        entropy_sum: 0.0,
        logprob_diff: (0.0, 0),
        tokens_processed: 0,
    };
    for (k, start) in (0..n).step_by(mb).enumerate() {
        let rows = start..(start + mb).min(n);
        let mb_rows = MicroBatch::new(batch, rows.clone(), device)?;
        let (logp, entropy, tokens) = {
            let _grad = EntropyGrad::new(options.entropy_bonus);
            mb_rows.logprobs(policy, settings)?
        };
        pass.tokens_processed += tokens;
        let host =
            |t: &Tensor| -> Result<Vec<Vec<f64>>> { Ok(t.to_dtype(DType::F64)?.to_vec2::<f64>()?) };
        let logp_host = host(&logp)?;
        if first {
            // How far the trainer's log-probs are from the sampler's (same weights, other
            // code path): float noise; a gap means the update is off-policy.
            if let Some(sampled) = batch.sampler_logprobs {
                for (row, s) in logp_host.iter().zip(&sampled[rows.clone()]) {
                    for (&a, &b) in row.iter().zip(s) {
                        pass.logprob_diff.0 += (a as f32 - b).abs() as f64;
                        pass.logprob_diff.1 += 1;
                    }
                }
            }
            frozen.old[k] = Some(logp_host.clone());
            if let Some(reference) = reference {
                let (r, _, tokens) = mb_rows.logprobs(reference, settings)?;
                pass.tokens_processed += tokens;
                frozen.reference[k] = Some(host(&r)?);
            }
        }
        let width = logp.dim(1)?;
        let coef = &batch.coefficients[rows.clone()];
        for (i, c) in coef.iter().enumerate() {
            if c.len() > width && c[width..].iter().any(|&x| x != 0.0) {
                bail!(
                    "completion {i}: {} coefficient positions do not fit a width of {width}",
                    c.len()
                );
            }
        }
        let coef: Vec<Vec<f64>> = coef
            .iter()
            .map(|c| {
                (0..width)
                    .map(|t| c.get(t).copied().unwrap_or(0.0))
                    .collect()
            })
            .collect();
        let mask: Vec<Vec<bool>> = coef
            .iter()
            .map(|c| c.iter().map(|&x| x != 0.0).collect())
            .collect();
        let entropy_host = host(&entropy.detach())?;
        let old = frozen.old[k].as_ref().context("old log-probs")?;
        let refs = frozen.reference[k].as_ref();
        let policy_rows: Vec<PolicyRow> = (0..rows.len())
            .map(|i| PolicyRow {
                logp: &logp_host[i],
                old_logp: &old[i],
                ref_logp: refs.map(|r| r[i].as_slice()),
                advantage: Advantage::Sequence(batch.advantages[rows.start + i]),
                mask: &mask[i],
                coef: &coef[i],
                entropy: Some(&entropy_host[i]),
            })
            .collect();
        let out = loss::micro_batch_loss(&policy_rows, &options, chunks)?;
        pass.loss += out.value;
        pass.policy_loss +=
            loss::policy_loss_metric(options.aggregation, out.policy_value, chunks) / chunks as f64;
        let counted = Tensor::from_vec(
            mask.iter()
                .flatten()
                .map(|&m| f32::from(u8::from(m)))
                .collect::<Vec<_>>(),
            (rows.len(), width),
            device,
        )?;
        pass.entropy_sum += (entropy.detach().to_dtype(DType::F32)? * counted)?
            .sum_all()?
            .to_scalar::<f32>()? as f64;
        pass.stats += out.stats;
        pass.micro_batch_stats.push(out.stats);
        // The surrogate Σ g·log π (+ Σ h·H) has the loss's gradient in every weight (chain rule).
        let to_tensor = |g: &[Vec<f64>], like: &Tensor| -> Result<Tensor> {
            let flat: Vec<f32> = g.iter().flatten().map(|&x| x as f32).collect();
            Ok(Tensor::from_vec(flat, (rows.len(), width), device)?.to_dtype(like.dtype())?)
        };
        let mut surrogate = (&logp * to_tensor(&out.grad_logp, &logp)?)?.sum_all()?;
        if out.grad_entropy.iter().flatten().any(|&x| x != 0.0) {
            let bonus = (&entropy * to_tensor(&out.grad_entropy, &entropy)?)?.sum_all()?;
            surrogate = (surrogate + bonus)?;
        }
        grads.add(&surrogate.backward()?, vars)?;
    }
    pass.grads = grads.finish(vars)?;
    Ok(pass)
}

/// The rows of one micro-batch, as the forward takes them.
enum MicroBatch<'a> {
    /// Each row padded to the same width (`pack`).
    Packed(PackedBatch),
    /// Each group's prompt once, and with `tree` each common completion prefix
    /// (`Policy::completion_logprobs_shared`).
    Shared {
        prompts: &'a [&'a [u32]],
        completions: &'a [&'a [u32]],
        pad: u32,
        tree: bool,
    },
}

impl<'a> MicroBatch<'a> {
    /// A micro-batch with an empty prompt has nothing to share and is packed.
    fn new(
        batch: &UpdateBatch<'a>,
        rows: std::ops::Range<usize>,
        device: &candle_core::Device,
    ) -> Result<Self> {
        let prompts = &batch.prompts[rows.clone()];
        let completions = &batch.completions[rows];
        if batch.share != SharePrefixes::None && prompts.iter().all(|p| !p.is_empty()) {
            return Ok(MicroBatch::Shared {
                prompts,
                completions,
                pad: batch.pad,
                tree: batch.share == SharePrefixes::Tree,
            });
        }
        Ok(MicroBatch::Packed(pack(
            prompts,
            completions,
            batch.pad,
            device,
        )?))
    }

    /// Log-probs and entropy `[R, Lc]` under `policy`, and the tokens its decoder ran.
    fn logprobs(
        &self,
        policy: &Policy,
        settings: &LossSettings,
    ) -> Result<(Tensor, Tensor, usize)> {
        let (t, bias) = (settings.temperature, settings.vocab_bias);
        match self {
            MicroBatch::Packed(packed) => {
                let (lp, ent) = completion_logprobs(policy, packed, t, bias)?;
                let tokens = packed.input_ids.elem_count();
                Ok((lp, ent, tokens))
            }
            MicroBatch::Shared {
                prompts,
                completions,
                pad,
                tree,
            } => policy.completion_logprobs_shared(prompts, completions, *pad, t, bias, *tree),
        }
    }
}

/// Log-probs [R, Lc] of each completion token (differentiable) and per-token entropy [R, Lc]
/// (detached), both from logits / temperature as the sampler drew them (doc §1).
///
/// `vocab_bias` ([V], 0 for allowed tokens and a large negative number for the rest) restricts
/// the distribution the way the sampler did when `sampling.allowed_tokens` is set.
pub fn completion_logprobs(
    policy: &Policy,
    batch: &PackedBatch,
    temperature: f64,
    vocab_bias: Option<&Tensor>,
) -> Result<(Tensor, Tensor)> {
    policy.completion_logprobs(
        &batch.input_ids,
        Some(&batch.attention_mask),
        batch.prompt_len - 1,
        &batch.targets,
        temperature,
        vocab_bias,
    )
}

/// Sums the gradients of several backward passes (micro-batches), per variable.
pub struct GradAccumulator {
    grads: Vec<Option<Tensor>>,
}

impl GradAccumulator {
    pub fn new(num_vars: usize) -> Self {
        Self {
            grads: vec![None; num_vars],
        }
    }

    /// Adds one backward pass's gradients of `vars`.
    pub fn add(&mut self, store: &GradStore, vars: &[Var]) -> Result<()> {
        for (slot, var) in self.grads.iter_mut().zip(vars) {
            if let Some(g) = store.get(var.as_tensor()) {
                *slot = Some(match slot.take() {
                    // Summed in place: a backward pass's gradients are fresh tensors that
                    // nothing else holds once its store is dropped.
                    Some(prev) if prev.dtype() == DType::F32 && prev.is_contiguous() => {
                        inplace::add_into(&prev, g)?;
                        prev
                    }
                    Some(prev) => (prev + g)?,
                    None => g.clone(),
                });
            }
        }
        Ok(())
    }

    /// The sums, zeros for a variable no pass reached.
    pub fn finish(self, vars: &[Var]) -> Result<Vec<Tensor>> {
        Ok(self
            .grads
            .into_iter()
            .zip(vars)
            .map(|(g, var)| match g {
                Some(g) => Ok(g),
                None => var.as_tensor().zeros_like(),
            })
            .collect::<candle_core::Result<_>>()?)
    }
}
