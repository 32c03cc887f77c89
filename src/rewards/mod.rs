//! Outcome rewards: final-answer extraction, mathematical equivalence, and the reward functions
//! the trainer sums.
//!
//! The reward is the only training signal, so the verifier errs towards exactness: a right
//! answer written differently must score 1, a wrong one 0.
//!
//! # Extraction ([`extract`])
//! The last balanced `\boxed{}`/`\fbox{}`, then (per [`ExtractPolicy`]) the text after `####`,
//! then "The final answer is X" / "the answer is X" / "answer: X", then optionally the last number.
//!
//! # Equivalence rules ([`is_equiv`])
//! Both answers are cleaned ([`latex::normalize`]): `$`, `\(..\)`, `\[..\]` delimiters, `\left`/
//! `\right`, `\!`, `\,`, `\;`, `~`, `\displaystyle`, `\dfrac`/`\tfrac` → `\frac`, `^\circ`/`°`,
//! `\$`, trailing periods, `\text{}`/`\mathrm{}`/`\textbf{}`/`\mbox{}` wrappers (unwrapped, or
//! dropped when they hold a unit after a number: `5 \text{ cm}`), bare unit words after a
//! number (`5 cm`, `12 dollars`), `x \in S` → `S`. Then, in order:
//! - identical strings match; pure words (`Monday`, `\text{(B)}` vs `B`) match case-insensitively;
//! - plain integers/decimals take a fast path (`025` = `25`, `1.50` = `1.5`);
//! - `1,234` (groups of three digits) is one number; any other top-level comma makes a list;
//! - structures: a bare list `1, 2` and `\{1,2\}` are order-free (a perfect matching, so the
//!   verdict does not depend on order; [`EquivOptions::unordered_lists`] can make bare lists
//!   ordered); tuples/points/intervals keep order and their brackets must match (`(1,3]` ≠
//!   `(1,3)`); `\cup` unions are order-free; `pmatrix`/`bmatrix` compare cell-wise (a one-row
//!   or one-column matrix equals the tuple of its cells); `a \pm b` is the set `{a+b, a-b}`;
//! - relations: `x = 3` equals `3` and `y = 2x+1` equals `2x+1` when the left side is a name
//!   (`x`, `f(x)`, `(x, y)`); two equations match side by side, swapped, or when `lhs - rhs`
//!   are proportional; `<`, `\le` (`>`/`\ge` flipped) must match side by side, and an
//!   inequality in one variable equals its interval (`x > 3` = `(3, \infty)`,
//!   `-2 \le x \le 7` = `[-2, 7]`);
//! - expressions are parsed ([`latex::parse_expr`]) and compared by value: exactly as rationals
//!   (num-bigint) when both sides are rational (`\frac{6}{4}` = `1.5` = `1\frac12`, `\sqrt{16}`
//!   = `4`); with relative tolerance [`EquivOptions::rel_tol`] (1e-6) only when a decimal
//!   literal is involved (`0.3333333` = `1/3`, but `0.333` ≠ `1/3`); as complex floats to 1e-9
//!   for irrationals (`\sqrt{8}` = `2\sqrt2`, `\pi/2` = `\frac{\pi}{2}`, `i^2` = `-1`); with
//!   free variables by evaluation at 6 fixed pseudo-random points in [0.5, 2.5] (seeded; points
//!   where either side is undefined are skipped; at least 3 must be defined and all must agree;
//!   with `|x|`, floor or ceil the points also take negative values); odd roots of negative
//!   reals are real (`\sqrt[3]{-8}` = `(-8)^{1/3}` = `-2`);
//! - `e` is Euler's number, `i` the imaginary unit; `\log` without base is natural;
//! - percentages per [`PercentPolicy`]: by default `50\%` equals `50` and `0.5`;
//! - a number with a base subscript (`204_5`) only equals the same text.
//!
//! # Time bound
//! Each answer is at most [`EquivOptions::max_len`] bytes (1000; longer ones only match by
//! exact string equality); parser recursion is capped at [`latex::MAX_DEPTH`] (48); exact
//! arithmetic refuses numbers beyond [`eval::MAX_BITS`] (20,000 bits) and falls back to floats;
//! lists hold at most [`equiv::MAX_ITEMS`] (64) elements; and every parser step, evaluated node
//! and element comparison spends one unit of a per-pair budget ([`EquivOptions::fuel`], default
//! [`equiv::DEFAULT_FUEL`] = 400,000). When the budget is spent the pair is judged not
//! equivalent. The worst case is therefore a few hundred thousand cheap steps (well under
//! 100 ms); typical pairs take 1-20 µs and plain numbers ~50 ns.

pub mod equiv;
pub mod eval;
pub mod extract;
pub mod latex;
pub mod tree;

use std::cell::Cell;

use anyhow::bail;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

pub use equiv::{is_equiv, is_equiv_counted, EquivOptions, PercentPolicy};
pub use extract::{extract_answer, last_boxed, ExtractPolicy};

/// Work budget shared by the parser, the evaluator and the comparer for one pair.
#[derive(Debug)]
pub struct Fuel {
    limit: u64,
    used: Cell<u64>,
}

impl Fuel {
    pub fn new(limit: u64) -> Self {
        Self {
            limit,
            used: Cell::new(0),
        }
    }
    /// Spend `n` units; `false` once the budget is exhausted (callers then give up).
    pub fn tick(&self, n: u64) -> bool {
        let u = self.used.get().saturating_add(n);
        self.used.set(u.min(self.limit));
        u <= self.limit
    }
    pub fn exhausted(&self) -> bool {
        self.used.get() >= self.limit
    }
    pub fn used(&self) -> u64 {
        self.used.get()
    }
}

/// The outcome of grading one completion.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Verdict {
    pub correct: bool,
    /// The answer extracted from the completion (`None`: nothing found).
    pub pred_parsed: Option<String>,
    /// The gold answer as compared (extracted when the gold is a whole solution).
    pub gold_parsed: Option<String>,
}

/// The gold answer as compared: a solution with `\boxed{}` or `####` is reduced to its answer.
pub fn gold_answer(gold: &str) -> Option<String> {
    let g = gold.trim();
    if g.contains(r"\boxed") || g.contains(r"\fbox") || g.contains("####") {
        return extract_answer(g, &ExtractPolicy::default());
    }
    (!g.is_empty()).then(|| g.to_string())
}

/// Extract the completion's answer under `policy` and compare it with the gold answer.
pub fn verify_completion(
    completion: &str,
    gold: &str,
    policy: &ExtractPolicy,
    opts: &EquivOptions,
) -> Verdict {
    let gold_parsed = gold_answer(gold);
    // A completion that is the gold answer itself counts even when no extraction rule applies
    // (answers that are not maths, such as the toy task's `LRRL`).
    let pred_parsed = extract_answer(completion, policy).or_else(|| {
        let whole = completion.trim();
        (!whole.is_empty() && whole == gold.trim()).then(|| whole.to_string())
    });
    let correct = match (&gold_parsed, &pred_parsed) {
        (Some(g), Some(p)) => is_equiv(g, p, opts),
        _ => false,
    };
    Verdict {
        correct,
        pred_parsed,
        gold_parsed,
    }
}

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
                            && extract_answer(after, &ExtractPolicy::default()).is_some()
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
    fn a_completion_that_is_the_gold_answer_counts_without_extraction() {
        let policy = ExtractPolicy::by_name("default").unwrap();
        let opts = EquivOptions::default();
        let v = verify_completion(" LRRL\n", "LRRL", &policy, &opts);
        assert!(v.correct, "{v:?}");
        assert_eq!(v.pred_parsed.as_deref(), Some("LRRL"));
        for wrong in ["LRRR", "LRRLL", "", "path LRRL"] {
            assert!(
                !verify_completion(wrong, "LRRL", &policy, &opts).correct,
                "{wrong}"
            );
        }
        // Extraction still comes first: the last boxed answer decides.
        assert!(!verify_completion("\\boxed{3}", "\\boxed{4}", &policy, &opts).correct);
    }

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
        assert_eq!(per[0], vec![1.0, 1.0, 0.0]);
        assert_eq!(per[1], vec![1.0, 0.0, 0.0]);
        assert_eq!(tot, vec![1.5, 1.0, 0.0]);
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
