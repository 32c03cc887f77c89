//! Outcome rewards: the reward functions the trainer sums. `accuracy` grades with the math
//! verifier ([`crate::verifier`]); `format`, `length` and `tree` need no maths.

pub mod tree;

use anyhow::bail;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::verifier::extract::{self, extract_answer};
use crate::verifier::{verify_completion, EquivOptions, ExtractPolicy};

/// A reward on one completion given the gold answer.
pub trait RewardFn: Send + Sync {
    fn name(&self) -> &str;
    fn score(&self, completion: &str, gold: &str) -> f64;
    /// Weight in the total (set by [`build_rewards`]).
    fn weight(&self) -> f64 {
        1.0
    }
}

/// One configured reward function: `rewards.funcs[i]` with `rewards.weights[i]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RewardSpec {
    pub name: String,
    pub weight: f64,
}

/// 1 when the extracted answer is equivalent to the gold, else 0.
#[derive(Debug, Clone, Default)]
pub struct Accuracy {
    pub policy: ExtractPolicy,
    pub opts: EquivOptions,
}

impl RewardFn for Accuracy {
    fn name(&self) -> &str {
        "accuracy"
    }
    fn score(&self, completion: &str, gold: &str) -> f64 {
        if verify_completion(completion, gold, &self.policy, &self.opts).correct {
            1.0
        } else {
            0.0
        }
    }
}

/// What the `format` reward asks of a completion.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FormatMode {
    /// Exactly one balanced `\boxed{}`.
    #[default]
    OneBoxed,
    /// `<think>…</think>` first, then an answer (a `\boxed{}` or an answer phrase) after it.
    ThinkThenAnswer,
}

/// 1 when the completion has the expected answer format, else 0.
#[derive(Debug, Clone, Default)]
pub struct Format {
    pub mode: FormatMode,
}

impl RewardFn for Format {
    fn name(&self) -> &str {
        "format"
    }
    fn score(&self, completion: &str, _gold: &str) -> f64 {
        let ok = match self.mode {
            FormatMode::OneBoxed => extract::all_boxed(completion).len() == 1,
            FormatMode::ThinkThenAnswer => {
                let t = completion.trim_start();
                match t
                    .strip_prefix("<think>")
                    .and_then(|r| r.split_once("</think>"))
                {
                    Some((thought, after)) => {
                        !thought.contains("<think>")
                            && !after.contains("<think>")
                            && extract_answer(after, &ExtractPolicy::lenient()).is_some()
                    }
                    None => false,
                }
            }
        };
        if ok {
            1.0
        } else {
            0.0
        }
    }
}

/// Unit of the `length` reward's target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LengthUnit {
    /// Unicode scalar values.
    #[default]
    Chars,
    /// Whitespace-separated words (a tokenizer-free proxy for tokens).
    Words,
}

/// Penalty for rambling: 0 up to `target`, then falling linearly to -1 at `target + window`
/// (and staying at -1 beyond). Weight it small (e.g. 0.1) next to `accuracy`.
#[derive(Debug, Clone)]
pub struct Length {
    pub target: usize,
    pub window: usize,
    pub unit: LengthUnit,
}

impl Default for Length {
    fn default() -> Self {
        Self {
            target: 4000,
            window: 4000,
            unit: LengthUnit::Chars,
        }
    }
}

impl RewardFn for Length {
    fn name(&self) -> &str {
        "length"
    }
    fn score(&self, completion: &str, _gold: &str) -> f64 {
        let n = match self.unit {
            LengthUnit::Chars => completion.chars().count(),
            LengthUnit::Words => completion.split_whitespace().count(),
        };
        if n <= self.target {
            return 0.0;
        }
        -(((n - self.target) as f64) / self.window.max(1) as f64).min(1.0)
    }
}

/// Settings shared by the reward functions [`build_rewards`] creates.
#[derive(Debug, Clone, Default)]
pub struct RewardConfig {
    pub policy: ExtractPolicy,
    pub opts: EquivOptions,
    pub format: FormatMode,
    pub length: Length,
    /// The `tree` toy task's reward scheme.
    pub tree: tree::TreePath,
}

/// The valid reward names, for error messages and `--help`.
pub const REWARD_NAMES: &[&str] = &["accuracy", "format", "length", "tree"];

struct Weighted {
    inner: Box<dyn RewardFn>,
    weight: f64,
}

impl RewardFn for Weighted {
    fn name(&self) -> &str {
        self.inner.name()
    }
    fn score(&self, completion: &str, gold: &str) -> f64 {
        self.inner.score(completion, gold)
    }
    fn weight(&self) -> f64 {
        self.weight
    }
}

/// Reward functions for `specs`, each carrying its weight.
pub fn build_rewards(
    specs: &[RewardSpec],
    cfg: &RewardConfig,
) -> anyhow::Result<Vec<Box<dyn RewardFn>>> {
    let mut out: Vec<Box<dyn RewardFn>> = Vec::with_capacity(specs.len());
    for (i, spec) in specs.iter().enumerate() {
        if !spec.weight.is_finite() {
            bail!(
                "rewards[{i}] `{}`: weight must be finite, got {}",
                spec.name,
                spec.weight
            );
        }
        let inner: Box<dyn RewardFn> = match spec.name.as_str() {
            "accuracy" => Box::new(Accuracy {
                policy: cfg.policy,
                opts: cfg.opts.clone(),
            }),
            "format" => Box::new(Format { mode: cfg.format }),
            "length" => Box::new(cfg.length.clone()),
            "tree" => Box::new(cfg.tree.clone()),
            other => bail!(
                "rewards[{i}]: unknown reward function `{other}`; expected one of: {}",
                REWARD_NAMES.join(", ")
            ),
        };
        out.push(Box::new(Weighted {
            inner,
            weight: spec.weight,
        }));
    }
    Ok(out)
}

/// Score every completion with every reward in parallel: (weighted totals, per-function scores
/// indexed `[function][completion]`). `golds[i]` belongs to `completions[i]`; a missing gold is
/// treated as empty (accuracy 0).
pub fn score_all(
    rewards: &[Box<dyn RewardFn>],
    completions: &[&str],
    golds: &[&str],
) -> (Vec<f64>, Vec<Vec<f64>>) {
    let rows: Vec<Vec<f64>> = completions
        .par_iter()
        .enumerate()
        .map(|(i, c)| {
            let g = golds.get(i).copied().unwrap_or("");
            rewards.iter().map(|r| r.score(c, g)).collect()
        })
        .collect();
    let totals = rows
        .iter()
        .map(|row| row.iter().zip(rewards).map(|(s, r)| s * r.weight()).sum())
        .collect();
    let per_fn = (0..rewards.len())
        .map(|k| rows.iter().map(|row| row[k]).collect())
        .collect();
    (totals, per_fn)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_reward_lists_valid_names() {
        let err = build_rewards(
            &[RewardSpec {
                name: "acc".into(),
                weight: 1.0,
            }],
            &RewardConfig::default(),
        )
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
        assert!(
            err.contains("`acc`") && err.contains("accuracy, format, length"),
            "{err}"
        );
    }

    #[test]
    fn score_all_weights() {
        let specs = [
            RewardSpec {
                name: "accuracy".into(),
                weight: 1.0,
            },
            RewardSpec {
                name: "format".into(),
                weight: 0.5,
            },
        ];
        let rewards = build_rewards(&specs, &RewardConfig::default()).expect("valid specs");
        let comps = [
            r"so \boxed{\frac{1}{2}}",
            r"\boxed{3} or \boxed{4}",
            "no answer",
        ];
        let golds = ["0.5", "4", "1"];
        let (tot, per) = score_all(&rewards, &comps, &golds);
        // math-verify's extraction takes both boxes of `\boxed{3} or \boxed{4}` as {3, 4}.
        assert_eq!(per[0], vec![1.0, 0.0, 0.0]);
        assert_eq!(per[1], vec![1.0, 0.0, 0.0]);
        assert_eq!(tot, vec![1.5, 0.0, 0.0]);
    }

    #[test]
    fn format_think() {
        let f = Format {
            mode: FormatMode::ThinkThenAnswer,
        };
        assert_eq!(f.score("<think>hmm</think> The answer is 5.", ""), 1.0);
        assert_eq!(f.score("The answer is 5.", ""), 0.0);
        assert_eq!(f.score("<think>hmm</think> nothing", ""), 0.0);
    }

    #[test]
    fn length_penalty() {
        let l = Length {
            target: 10,
            window: 10,
            unit: LengthUnit::Chars,
        };
        assert_eq!(l.score("short", ""), 0.0);
        assert_eq!(l.score(&"x".repeat(15), ""), -0.5);
        assert_eq!(l.score(&"x".repeat(100), ""), -1.0);
    }
}
