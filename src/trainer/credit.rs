//! Credit assignment of one step: from the sampled completions and their rewards to the
//! coefficient `c_{i,t}` of every token in the loss (`docs/lambda-grpo.md` §2, §4–§6).
//!
//! In order: group-relative advantages; which completions count (`mask_truncated_completions`,
//! `skip_zero_std_groups`); each group's prefix tree over its *counted* completions, giving
//! `|λ_{i,t}|` and the §7 statistics (a masked completion has length 0 and joins no process
//! set); then the normalised coefficients for the whole optimizer step. The trainer runs exactly
//! this function, and the tests run it against the definitions.

use std::time::Instant;

use anyhow::{bail, Result};

use crate::config::{LossSection, ResolvedLoss};
use crate::process_sets::{self, BatchProcessStats};
use crate::trainer::advantages::{advantages, zero_std_groups};
use crate::trainer::loss::{token_coefficients, SeqLayout};

/// What credit assignment depends on besides the rollout.
#[derive(Debug, Clone, Copy)]
pub struct CreditSettings<'a> {
    /// `[loss]`: scale_rewards and the two masking options.
    pub loss: &'a LossSection,
    /// `loss.type` + process weighting, resolved.
    pub resolved: ResolvedLoss,
    /// `G`, completions per prompt (groups are consecutive).
    pub group_size: usize,
    /// `sampling.max_completion_length` (the `dr_grpo` normaliser).
    pub max_completion_length: usize,
    /// Completions per micro-batch (`bnpo` normalises per micro-batch).
    pub micro_batch: usize,
}

/// Who gets credit for what in one step.
#[derive(Debug, Clone)]
pub struct Credit {
    /// `a_i` per completion (§2).
    pub advantages: Vec<f64>,
    /// Per group: all rewards equal.
    pub zero_std: Vec<bool>,
    /// Per completion: its tokens count in the loss.
    pub counted: Vec<bool>,
    /// `|λ_{i,t}|` of every completion token over the counted completions (0 when masked).
    pub lambda: Vec<Vec<u32>>,
    /// §7 statistics of the counted completions (fully masked groups left out).
    pub process: BatchProcessStats,
    /// `c_{i,t}` of every completion token for the whole step.
    pub coefficients: Vec<Vec<f64>>,
    /// Seconds spent on the prefix trees (the λ-GRPO overhead).
    pub time_process_sets: f64,
}

/// Credit for `completions` (token ids, groups of `group_size` back to back) with outcome
/// `rewards`; `truncated[i]` says completion `i` was cut at `max_completion_length`.
pub fn assign(
    s: &CreditSettings,
    completions: &[&[u32]],
    truncated: &[bool],
    rewards: &[f64],
) -> Result<Credit> {
    let a = advantages(rewards, s.group_size, s.loss.scale_rewards)?;
    assign_with(s, completions, truncated, rewards, a)
}

/// [`assign`] with the advantages given (GDPO's `normalize_then_sum` computes them from each
/// reward function); `rewards` still decide which groups have zero variance.
pub fn assign_with(
    s: &CreditSettings,
    completions: &[&[u32]],
    truncated: &[bool],
    rewards: &[f64],
    advantages: Vec<f64>,
) -> Result<Credit> {
    let (n, g) = (completions.len(), s.group_size);
    if truncated.len() != n || rewards.len() != n || advantages.len() != n {
        bail!(
            "{n} completions with {} truncation flags, {} rewards and {} advantages",
            truncated.len(),
            rewards.len(),
            advantages.len()
        );
    }
    let zero_std = zero_std_groups(rewards, g)?;
    let counted: Vec<bool> = (0..n)
        .map(|i| {
            let masked_truncated = s.loss.mask_truncated_completions && truncated[i];
            let skipped = s.loss.skip_zero_std_groups && zero_std[i / g];
            !masked_truncated && !skipped
        })
        .collect();

    let ts = Instant::now();
    let groups: Vec<_> = completions
        .chunks(g)
        .zip(counted.chunks(g))
        .map(|(group, keep)| process_sets::counted_group(group, keep))
        .collect::<Result<_>>()?;
    let group_stats: Vec<_> = groups.iter().filter_map(|c| c.stats.clone()).collect();
    let process = process_sets::batch_stats(&group_stats);
    let lambda: Vec<Vec<u32>> = groups.into_iter().flat_map(|c| c.lambda).collect();
    let time_process_sets = ts.elapsed().as_secs_f64();

    let masks: Vec<Vec<bool>> = completions
        .iter()
        .zip(&counted)
        .map(|(c, &keep)| vec![keep; c.len()])
        .collect();
    let mb = s.micro_batch.max(1);
    let layouts: Vec<SeqLayout> = masks
        .iter()
        .zip(&lambda)
        .enumerate()
        .map(|(i, (m, l))| SeqLayout {
            mask: m,
            lambda_sizes: Some(l),
            micro_batch: i / mb,
        })
        .collect();
    let coefficients = token_coefficients(&layouts, s.resolved, s.max_completion_length)?;
    Ok(Credit {
        advantages,
        zero_std,
        counted,
        lambda,
        process,
        coefficients,
        time_process_sets,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{LossType, ProcessWeighting};

    #[test]
    fn a_masked_truncated_completion_leaves_lambda_and_normaliser() {
        // The group: [5,6,7] truncated; [5,6,2] and [5,8,2] finished.
        let c: Vec<&[u32]> = vec![&[5, 6, 7], &[5, 6, 2], &[5, 8, 2]];
        let loss = LossSection {
            loss_type: LossType::LambdaGrpo,
            mask_truncated_completions: true,
            ..LossSection::default()
        };
        let s = CreditSettings {
            loss: &loss,
            resolved: LossType::LambdaGrpo
                .resolve(ProcessWeighting::Lambda)
                .unwrap(),
            group_size: 3,
            max_completion_length: 3,
            micro_batch: 3,
        };
        let credit = assign(&s, &c, &[true, false, false], &[1.0, 0.0, 1.0]).unwrap();
        assert_eq!(credit.counted, vec![false, true, true]);
        assert_eq!(credit.lambda[1], vec![2, 1, 1]);
        // dapo over the 6 counted tokens, each divided by |λ|.
        let z = 6.0;
        assert_eq!(
            credit.coefficients[1],
            vec![1.0 / (2.0 * z), 1.0 / z, 1.0 / z]
        );
        assert_eq!(credit.coefficients[0], vec![0.0; 3]);
        assert_eq!(credit.process.lambda_histogram.iter().sum::<u64>(), 6);
        // Without the mask the truncated completion shares the prefix: [3, 2, 1].
        let loss = LossSection {
            mask_truncated_completions: false,
            ..loss
        };
        let s = CreditSettings { loss: &loss, ..s };
        let credit = assign(&s, &c, &[true, false, false], &[1.0, 0.0, 1.0]).unwrap();
        assert_eq!(credit.lambda[1], vec![3, 2, 1]);
        assert!(assign(&s, &c, &[true], &[1.0, 0.0, 1.0]).is_err());
    }
}
