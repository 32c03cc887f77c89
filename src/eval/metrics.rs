//! Evaluation metrics: unbiased pass@k, majority vote (maj@k), confidence intervals for pass@1.

use anyhow::{bail, Result};
use serde::Serialize;

/// Two-sided 95 % normal quantile.
pub const Z_95: f64 = 1.959_963_984_540_054;

/// Unbiased pass@k of Chen et al. 2021 from `n` samples of which `c` are correct:
/// `1 − C(n−c, k)/C(n, k)`, evaluated as `1 − Π_{i=n−c+1}^{n} (1 − k/i)` (no huge binomials).
pub fn pass_at_k(n: usize, c: usize, k: usize) -> Result<f64> {
    if k == 0 || k > n {
        bail!("pass@k needs 1 ≤ k ≤ n (got k = {k}, n = {n} samples)");
    }
    if c > n {
        bail!("pass@k: {c} correct out of only {n} samples");
    }
    if n - c < k {
        return Ok(1.0);
    }
    let prod: f64 = ((n - c + 1)..=n)
        .map(|i| 1.0 - k as f64 / i as f64)
        .product();
    Ok(1.0 - prod)
}

/// Mean pass@k over problems, each given as `(n, c)`.
pub fn mean_pass_at_k(problems: &[(usize, usize)], k: usize) -> Result<f64> {
    if problems.is_empty() {
        bail!("pass@{k}: no problems");
    }
    let mut sum = 0.0;
    for (idx, &(n, c)) in problems.iter().enumerate() {
        sum += pass_at_k(n, c, k).map_err(|e| e.context(format!("problem {idx}")))?;
    }
    Ok(sum / problems.len() as f64)
}

/// The winning answer of a majority vote.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Majority {
    /// Index (into the answers) of the winning cluster's first answer: its representative.
    pub index: usize,
    /// How many answers fell into the winning cluster.
    pub votes: usize,
}

/// Majority vote over extracted answers (`None` = nothing extracted, never votes).
///
/// Answers are clustered greedily in order: an answer joins the first cluster whose
/// representative (its first answer) it is equivalent to under `equivalent(representative, answer)`,
/// else it starts a new cluster, so a non-transitive `equivalent` still gives a deterministic
/// result. The largest cluster wins; ties go to the cluster that occurred first. `None` when no
/// answer was extracted. maj@k: vote over the first `k` samples and grade the representative.
pub fn majority_vote<S: AsRef<str>>(
    answers: &[Option<S>],
    equivalent: impl Fn(&str, &str) -> bool,
) -> Option<Majority> {
    let mut clusters: Vec<Majority> = Vec::new();
    for (i, a) in answers.iter().enumerate() {
        let Some(a) = a.as_ref().map(AsRef::as_ref) else {
            continue;
        };
        let rep = clusters.iter_mut().find(|c| {
            answers[c.index]
                .as_ref()
                .is_some_and(|r| equivalent(r.as_ref(), a))
        });
        match rep {
            Some(c) => c.votes += 1,
            None => clusters.push(Majority { index: i, votes: 1 }),
        }
    }
    // `max_by_key` keeps the last maximum, so scan for the first one instead.
    clusters
        .iter()
        .fold(None, |best: Option<Majority>, &c| match best {
            Some(b) if b.votes >= c.votes => Some(b),
            _ => Some(c),
        })
}

/// A mean with a confidence interval.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct MeanCi {
    pub mean: f64,
    pub lower: f64,
    pub upper: f64,
    pub n: usize,
}

/// Wilson score interval for `successes` out of `n` Bernoulli trials (good near 0 and 1, unlike
/// the normal interval). `z` = normal quantile, e.g. [`Z_95`].
pub fn wilson_interval(successes: usize, n: usize, z: f64) -> Result<MeanCi> {
    if n == 0 || successes > n {
        bail!("Wilson interval needs 0 ≤ successes ≤ n and n > 0 (got {successes} of {n})");
    }
    let nf = n as f64;
    let p = successes as f64 / nf;
    let z2 = z * z;
    let denom = 1.0 + z2 / nf;
    let centre = (p + z2 / (2.0 * nf)) / denom;
    let half = z * (p * (1.0 - p) / nf + z2 / (4.0 * nf * nf)).sqrt() / denom;
    Ok(MeanCi {
        mean: p,
        lower: (centre - half).max(0.0),
        upper: (centre + half).min(1.0),
        n,
    })
}

/// Normal interval `mean ± z·s/√n` (sample std, `n − 1`) for per-problem scores such as pass@1
/// estimated from several samples per problem. With one value the interval collapses to the mean.
pub fn normal_interval(values: &[f64], z: f64) -> Result<MeanCi> {
    if values.is_empty() {
        bail!("normal interval of no values");
    }
    let n = values.len() as f64;
    let mean = values.iter().sum::<f64>() / n;
    let half = if values.len() < 2 {
        0.0
    } else {
        let var = values.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / (n - 1.0);
        z * (var / n).sqrt()
    };
    Ok(MeanCi {
        mean,
        lower: mean - half,
        upper: mean + half,
        n: values.len(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pass_at_k_by_hand() {
        // n = 5, c = 2: 1 − C(3,k)/C(5,k) = 1 − {3/5, 3/10, 1/10, 0, 0}.
        let want = [0.4, 0.7, 0.9, 1.0, 1.0];
        for (k, w) in (1..=5).zip(want) {
            let got = pass_at_k(5, 2, k).unwrap();
            assert!((got - w).abs() < 1e-12, "k = {k}: {got}");
        }
        assert_eq!(pass_at_k(5, 0, 3).unwrap(), 0.0);
        assert_eq!(pass_at_k(5, 5, 1).unwrap(), 1.0);
        assert!(pass_at_k(5, 2, 0).is_err());
        assert!(pass_at_k(5, 2, 6).is_err());
        assert!(pass_at_k(5, 6, 1).is_err());
        // Large n stays finite and equals c/n for k = 1.
        assert!((pass_at_k(1000, 137, 1).unwrap() - 0.137).abs() < 1e-12);
        assert!((mean_pass_at_k(&[(5, 2), (5, 5)], 1).unwrap() - 0.7).abs() < 1e-12);
    }

    #[test]
    fn majority_groups_equivalent_answers() {
        let eq = |a: &str, b: &str| a.trim_start_matches('0') == b.trim_start_matches('0');
        let answers = [Some("3"), None, Some("5"), Some("03"), Some("5"), Some("7")];
        // "3"/"03" and "5"/"5" tie at 2 votes: the first-occurring cluster ("3") wins.
        assert_eq!(
            majority_vote(&answers, eq),
            Some(Majority { index: 0, votes: 2 })
        );
        let answers = [Some("3"), Some("5"), Some("5")];
        assert_eq!(
            majority_vote(&answers, eq),
            Some(Majority { index: 1, votes: 2 })
        );
        let none: [Option<&str>; 2] = [None, None];
        assert_eq!(majority_vote(&none, eq), None);
    }

    #[test]
    fn intervals() {
        // Wilson, 8 of 10, z = 1.96: centre 0.7167, bounds (0.4902, 0.9433) (textbook value).
        let ci = wilson_interval(8, 10, 1.96).unwrap();
        assert!(
            (ci.lower - 0.4902).abs() < 1e-4 && (ci.upper - 0.9433).abs() < 1e-4,
            "{ci:?}"
        );
        let ci = wilson_interval(0, 10, Z_95).unwrap();
        assert_eq!(ci.lower, 0.0);
        assert!(ci.upper > 0.27 && ci.upper < 0.28);
        assert!(wilson_interval(1, 0, Z_95).is_err());
        let ci = normal_interval(&[0.0, 1.0, 1.0, 0.0], 2.0).unwrap();
        // s = sqrt(1/3), half = 2·s/2 = 0.57735.
        assert!((ci.upper - 0.5 - (1.0f64 / 3.0).sqrt()).abs() < 1e-12);
    }
}
