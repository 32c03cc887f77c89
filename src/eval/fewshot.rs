//! Few-shot prompting: solved examples from a benchmark's train split, written before the
//! question in the same user message (so every prompt template and chat template works).

use std::sync::OnceLock;

use anyhow::Result;
use regex::Regex;

use crate::data::benchmarks::benchmark;
use crate::data::dataset::{load_benchmark, Example};
use crate::verifier::extract::after_hashes;

/// The registered train split of a benchmark, when it has one.
pub fn train_split(benchmark: &str) -> Option<&'static str> {
    match benchmark {
        "gsm8k" => Some("gsm8k_train"),
        "arith" | "arith_val" => Some("arith_train"),
        _ => None,
    }
}

/// The first `k` solved examples of `benchmark`'s train split; `None` when it has no train
/// split (the caller skips few-shot with a note).
pub fn examples(benchmark_name: &str, k: usize) -> Result<Option<Vec<Example>>> {
    let Some(split) = train_split(benchmark_name) else {
        return Ok(None);
    };
    let rows = load_benchmark(&benchmark(split)?)?;
    Ok(Some(
        rows.into_iter()
            .filter(|e| e.solution.is_some())
            .take(k)
            .collect(),
    ))
}

/// An example's solution as a demonstration: GSM8K's `<<48/2=24>>` calculator notes dropped and
/// its `#### 72` line turned into the `\boxed{72}` the prompt asks for.
pub fn demonstration(example: &Example) -> String {
    static CALC: OnceLock<Option<Regex>> = OnceLock::new();
    let solution = example.solution.as_deref().unwrap_or_default();
    let mut text = match CALC.get_or_init(|| Regex::new(r"<<[^>]*>>").ok()).as_ref() {
        Some(re) => re.replace_all(solution, "").into_owned(),
        None => solution.to_string(),
    };
    if let (Some(_), Some(pos)) = (after_hashes(&text), text.rfind("####")) {
        text.truncate(pos);
        text = format!(
            "{}\nThe final answer is \\boxed{{{}}}.",
            text.trim_end(),
            example.answer
        );
    } else if !text.contains("\\boxed") {
        text = format!(
            "{}\nThe final answer is \\boxed{{{}}}.",
            text.trim_end(),
            example.answer
        );
    }
    text.trim().to_string()
}

/// `question` preceded by the demonstrations (unchanged when `shots` is empty).
pub fn with_examples(shots: &[Example], question: &str) -> String {
    if shots.is_empty() {
        return question.to_string();
    }
    let mut out = String::new();
    for s in shots {
        out.push_str(&format!(
            "Problem:\n{}\n\nSolution:\n{}\n\n",
            s.question.trim(),
            demonstration(s)
        ));
    }
    out.push_str(&format!("Problem:\n{}", question.trim()));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ex(solution: &str, answer: &str) -> Example {
        Example {
            id: "x".into(),
            question: "Q?".into(),
            answer: answer.into(),
            solution: Some(solution.into()),
            subject: None,
            level: None,
            line: 0,
        }
    }

    #[test]
    fn gsm8k_solutions_become_boxed_demonstrations() {
        let e = ex("She has 48/2 = <<48/2=24>>24 left.\n#### 24", "24");
        assert_eq!(
            demonstration(&e),
            "She has 48/2 = 24 left.\nThe final answer is \\boxed{24}."
        );
        let e = ex("so \\boxed{5}.", "5");
        assert_eq!(demonstration(&e), "so \\boxed{5}.");
        let q = with_examples(&[e], "What is 2+3?");
        assert_eq!(
            q,
            "Problem:\nQ?\n\nSolution:\nso \\boxed{5}.\n\nProblem:\nWhat is 2+3?"
        );
        assert_eq!(with_examples(&[], "x"), "x");
    }

    #[test]
    fn only_benchmarks_with_train_splits_get_shots() {
        assert_eq!(train_split("gsm8k"), Some("gsm8k_train"));
        assert_eq!(train_split("math500"), None);
        assert!(examples("aime24", 2).unwrap().is_none());
        let shots = examples("gsm8k", 2).unwrap().unwrap();
        assert_eq!(shots.len(), 2);
        assert!(
            demonstration(&shots[0]).ends_with('}') || demonstration(&shots[0]).ends_with("}.")
        );
    }
}
