//! The math answer verifier: final-answer extraction, LaTeX normalisation and parsing, exact and
//! numeric values, and equivalence. A ground-floor module: it imports nothing else from the
//! crate. How it relates to math-verify: `src/verifier/README.md`.
//!
//! The reward is the only training signal, so the verifier errs towards exactness: a right
//! answer written differently must score 1, a wrong one 0.
//!
//! # Extraction ([`extract`], [`mv_extract`])
//! The default policy is math-verify's: `\boxed{}` and "final answer" phrases, then "answer:",
//! then the last math environment (`$..$`, `\(..\)`, `\[..\]`, `$$..$$`), then the last
//! expression or number (`1 000`, `1,22`, `$5`, `12%`). Stricter named policies (`lenient`,
//! `boxed`, `math`, `gsm8k`) are for RL rewards and benchmarks ([`ExtractPolicy::by_name`]).
//!
//! # Equivalence ([`is_equiv`])
//! Both answers are cleaned ([`normalize::normalize`]), given a structure
//! ([`structure::parse_answer`]: relations, tuples/intervals, sets, unions, matrices,
//! expressions, text), and compared gold-first by math-verify's rules (`compare.rs`):
//! assignments and equation chains unwrap to their value, relations match when `lhs - rhs`
//! agree (flipped or scaled), sets in any order, tuples in order, intervals bracket by bracket,
//! matrices cell by cell; a decimal and a number literal are rounded to
//! [`EquivOptions::float_rounding`] (6) places; other values must be equal, exactly as
//! rationals (num-bigint) where possible, else as complex floats; expressions with variables
//! must agree at seeded sample points. `src/verifier/README.md` lists every rule, what
//! math-verify does, and where grpo differs on purpose.
//!
//! # Time bound
//! Each answer is at most [`EquivOptions::max_len`] bytes (1000; longer ones only match by
//! exact string equality); extraction scans the last [`mv_extract::MAX_SCAN`] bytes; parser
//! recursion is capped at [`parse::MAX_DEPTH`] (48); exact arithmetic refuses numbers beyond
//! [`value::MAX_BITS`] (20,000 bits) and a float beyond 10^15 or an overflow is never equal to
//! anything (huge values compare exactly or not at all); lists hold at most
//! [`equiv::MAX_ITEMS`] (64) elements; and every parser step, evaluated node and element
//! comparison spends one unit of a per-pair budget ([`EquivOptions::fuel`], default
//! [`equiv::DEFAULT_FUEL`] = 400,000). When the budget is spent the pair is judged not
//! equivalent.

mod compare;
pub mod equiv;
pub mod extract;
pub mod mv_extract;
pub mod normalize;
mod options;
pub mod parse;
pub mod structure;
mod text;
pub mod value;

use std::cell::Cell;

use serde::Serialize;

pub use equiv::{is_equiv, is_equiv_counted, EquivOptions, PercentPolicy};
pub use extract::{extract_answer, last_boxed, ExtractPolicy};

/// Work budget shared by the parser, the evaluator and the comparer for one pair.
#[derive(Debug)]
pub struct Fuel {
    limit: u64,
    used: Cell<u64>,
    /// Whether `i` is the imaginary unit in the answer being parsed (`None`: decide per
    /// expression); set per answer, as math-verify decides it on the whole answer.
    pub imaginary: Cell<Option<bool>>,
}

impl Fuel {
    pub fn new(limit: u64) -> Self {
        Self {
            limit,
            used: Cell::new(0),
            imaginary: Cell::new(None),
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

/// The gold answer as compared. A gold with a marker (`\boxed{}`, `####`, a math environment,
/// an answer phrase) or a plain number (`1 000`, `1,22`, `$5`) goes through math-verify's
/// extraction, as `math_verify.parse(gold)` does; any other gold is one LaTeX answer as written
/// (`\sqrt{2}`, `x \in [1, 2]`), as if it were wrapped in `$...$`.
pub fn gold_answer(gold: &str) -> Option<String> {
    let g = gold.trim();
    if g.is_empty() {
        return None;
    }
    // A gold that is all math (`$x=1$, $y=2$`) is one answer as written.
    let all_math = g.starts_with('$')
        && g.ends_with('$')
        && ![r"\boxed", r"\fbox", "nswer"].iter().any(|m| g.contains(m));
    if all_math {
        return Some(g.to_string());
    }
    let marked = g.len() > mv_extract::MAX_SCAN
        || [r"\boxed", r"\fbox", "####", "$", r"\(", r"\[", "nswer"]
            .iter()
            .any(|m| g.contains(m));
    // A comma makes a plain number only as a thousands separator (`1,000`) or a decimal comma
    // without signs or spaces (`1,22`); `1,-2` and `3, 5, 7` are lists.
    let thousands = g
        .split(',')
        .skip(1)
        .all(|grp| grp.len() >= 3 && grp.as_bytes()[..3].iter().all(u8::is_ascii_digit));
    let comma_ok =
        !g.contains(',') || thousands || g.matches(',').count() == 1 && !g.contains(['-', ' ']);
    let plain_number = !marked
        && comma_ok
        && g.bytes().any(|c| c.is_ascii_digit())
        && g.chars()
            .all(|c| c.is_ascii_digit() || " ,.-+%€£".contains(c));
    if marked || plain_number {
        if let Some(e) = mv_extract::extract(g) {
            return Some(e.answer);
        }
    }
    Some(g.to_string())
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
}
