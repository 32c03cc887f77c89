//! Group-relative advantages (`docs/lambda-grpo.md` §2).
//!
//! `a_i = (r_i − mean_{j∈g(i)} r_j) / (s_i + eps)`, `eps = 1e-4`, with `s_i` chosen by
//! [`ScaleRewards`]. Standard deviations are sample ones (divide by `n − 1`, as `torch.std`).

use anyhow::{bail, Result};

/// `eps` of §2, added to the standard deviation (the authors' value, and TRL's).
pub const STD_EPS: f64 = 1e-4;

/// Below this standard deviation a group counts as zero-variance (TRL: `isclose(std, 0)`).
const ZERO_STD_ATOL: f64 = 1e-8;

pub use crate::config::ScaleRewards;

/// Advantages `a_i` of §2 for a step whose rewards hold the groups back to back, `group_size` each.
///
/// `G = 1` (or `N = 1` under `batch`) leaves the sample std undefined; the numerator
/// `r_i − mean` is then 0 anyway, so we define `s = 0` and get `a_i = 0` (TRL gets NaN and maps it to 0).
pub fn advantages(rewards: &[f64], group_size: usize, scale: ScaleRewards) -> Result<Vec<f64>> {
    check_groups(rewards.len(), group_size)?;
    if let Some(bad) = rewards.iter().position(|r| !r.is_finite()) {
        bail!(
            "reward of completion {bad} is {} (expected a finite number)",
            rewards[bad]
        );
    }
    let batch_std = sample_std(rewards);
    let mut out = Vec::with_capacity(rewards.len());
    for group in rewards.chunks(group_size) {
        let m = mean(group);
        let s = match scale {
            ScaleRewards::Group => sample_std(group),
            ScaleRewards::Batch => batch_std,
            ScaleRewards::None => 1.0 - STD_EPS,
        };
        out.extend(group.iter().map(|r| (r - m) / (s + STD_EPS)));
    }
    Ok(out)
}

/// GDPO's advantages (`rewards.multi_objective_aggregation = "normalize_then_sum"`, TRL's
/// formula): each reward function's scores normalised within each group
/// (`(r − mean) / (std + eps)`), summed with `weights`, then normalised over the whole batch.
/// `scale_rewards` does not apply (as in TRL).
pub fn normalize_then_sum(
    per_function: &[Vec<f64>],
    weights: &[f64],
    group_size: usize,
) -> Result<Vec<f64>> {
    let n = per_function.first().map_or(0, Vec::len);
    check_groups(n, group_size)?;
    if per_function.len() != weights.len() || per_function.iter().any(|f| f.len() != n) {
        bail!(
            "{} reward functions, {} weights",
            per_function.len(),
            weights.len()
        );
    }
    let mut total = vec![0.0; n];
    for (scores, &w) in per_function.iter().zip(weights) {
        if let Some(bad) = scores.iter().position(|r| !r.is_finite()) {
            bail!(
                "reward of completion {bad} is {} (expected a finite number)",
                scores[bad]
            );
        }
        for (g, group) in scores.chunks(group_size).enumerate() {
            let (m, sd) = (mean(group), sample_std(group));
            for (j, r) in group.iter().enumerate() {
                total[g * group_size + j] += w * (r - m) / (sd + STD_EPS);
            }
        }
    }
    let (m, sd) = (mean(&total), sample_std(&total));
    Ok(total.iter().map(|r| (r - m) / (sd + STD_EPS)).collect())
}

/// Per group: whether all its rewards are equal (sample std ≈ 0), so it carries no policy gradient.
pub fn zero_std_groups(rewards: &[f64], group_size: usize) -> Result<Vec<bool>> {
    check_groups(rewards.len(), group_size)?;
    Ok(rewards
        .chunks(group_size)
        .map(|g| sample_std(g) <= ZERO_STD_ATOL)
        .collect())
}

fn mean(x: &[f64]) -> f64 {
    x.iter().sum::<f64>() / x.len() as f64
}

/// Sample standard deviation (divide by `n − 1`); 0 when `n < 2`.
fn sample_std(x: &[f64]) -> f64 {
    if x.len() < 2 {
        return 0.0;
    }
    let m = mean(x);
    (x.iter().map(|v| (v - m) * (v - m)).sum::<f64>() / (x.len() - 1) as f64).sqrt()
}

fn check_groups(n: usize, group_size: usize) -> Result<()> {
    if group_size == 0 || !n.is_multiple_of(group_size) {
        bail!("{n} rewards cannot be cut into groups of {group_size} (num_generations)");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn group_scaling_by_hand() {
        // Rewards 1,0,0,1: mean 0.5, sample std sqrt(1/3).
        let a = advantages(&[1.0, 0.0, 0.0, 1.0], 4, ScaleRewards::Group).unwrap();
        let want = 0.5 / ((1.0f64 / 3.0).sqrt() + 1e-4);
        assert!((a[0] - want).abs() < 1e-15 && (a[1] + want).abs() < 1e-15);
    }

    #[test]
    fn batch_and_none_scaling() {
        let r = [0.0, 1.0, 1.0, 1.0];
        let a = advantages(&r, 2, ScaleRewards::Batch).unwrap();
        // Sample std of 0,1,1,1: sqrt(0.75 / 3) = 0.5; group 0's mean is 0.5.
        let s = 0.5;
        assert!((a[0] + 0.5 / (s + 1e-4)).abs() < 1e-15);
        assert_eq!(&a[2..], &[0.0, 0.0]);
        let a = advantages(&[0.25, 0.75], 2, ScaleRewards::None).unwrap();
        assert_eq!(a, vec![-0.25, 0.25]);
    }

    #[test]
    fn single_completion_groups_get_zero() {
        let a = advantages(&[1.0, 0.0, 0.5], 1, ScaleRewards::Group).unwrap();
        assert_eq!(a, vec![0.0, 0.0, 0.0]);
        let a = advantages(&[1.0], 1, ScaleRewards::Batch).unwrap();
        assert_eq!(a, vec![0.0]);
    }

    #[test]
    fn gdpo_normalises_each_reward_then_the_batch() {
        // Two functions, two groups of 2; function 2 is 10× function 1 in scale, which the
        // per-function normalisation removes: each becomes ±d/(s + eps) within its group.
        let f1 = vec![1.0, 0.0, 0.0, 1.0];
        let f2 = vec![10.0, 0.0, 10.0, 0.0];
        let a = normalize_then_sum(&[f1, f2], &[1.0, 2.0], 2).unwrap();
        let z1 = 0.5 / (0.5f64.sqrt() + STD_EPS);
        let z2 = 5.0 / (50f64.sqrt() + STD_EPS);
        let t = [z1 + 2.0 * z2, -z1 - 2.0 * z2, -z1 + 2.0 * z2, z1 - 2.0 * z2];
        // Batch mean 0; sample std over the 4.
        let sd = (t.iter().map(|x| x * x).sum::<f64>() / 3.0).sqrt();
        for (x, y) in a.iter().zip(t) {
            assert!((x - y / (sd + STD_EPS)).abs() < 1e-12, "{x} vs {y}");
        }
        assert!(normalize_then_sum(&[vec![1.0, 0.0]], &[1.0, 2.0], 2).is_err());
    }

    #[test]
    fn zero_std_and_errors() {
        let r = [1.0, 1.0, 0.0, 1.0, 0.5, 0.5];
        assert_eq!(zero_std_groups(&r, 2).unwrap(), vec![true, false, true]);
        assert!(advantages(&r, 4, ScaleRewards::Group).is_err());
        assert!(advantages(&r, 0, ScaleRewards::Group).is_err());
        assert!(advantages(&[f64::NAN, 1.0], 2, ScaleRewards::Group).is_err());
    }

    #[test]
    fn serde_names() {
        let s: ScaleRewards = serde_json::from_str("\"batch\"").unwrap();
        assert_eq!(s, ScaleRewards::Batch);
        assert_eq!(
            serde_json::to_string(&ScaleRewards::None).unwrap(),
            "\"none\""
        );
    }
}
