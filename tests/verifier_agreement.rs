//! Agreement with math-verify: tables of (gold, pred) pairs labelled by math-verify's default
//! `parse` + `verify` (`tests/fixtures/verifier/make_tables.py`), judged as `grpo verify
//! --input` judges them (default policy). Two seeds: `tuning` (the cases the rules were
//! developed on) and `heldout` (generated afterwards with another seed, never tuned on).

use std::collections::BTreeMap;

use grpo::cli::verify::judge;
use grpo::verifier::{EquivOptions, ExtractPolicy};
use serde_json::Value;

struct Outcome {
    total: usize,
    agree: usize,
    false_accepts: Vec<String>,
    by_category: BTreeMap<String, (usize, usize)>,
    disagreements: Vec<String>,
}

fn run(file: &str) -> Outcome {
    let path = format!(
        "{}/tests/fixtures/verifier/{file}",
        env!("CARGO_MANIFEST_DIR")
    );
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let (policy, opts) = (ExtractPolicy::default(), EquivOptions::default());
    let mut o = Outcome {
        total: 0,
        agree: 0,
        false_accepts: Vec::new(),
        by_category: BTreeMap::new(),
        disagreements: Vec::new(),
    };
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let v: Value = serde_json::from_str(line).expect("valid JSONL");
        let (gold, pred) = (v["gold"].as_str().unwrap(), v["pred"].as_str().unwrap());
        let expected = v["expected"].as_bool().unwrap();
        let got = judge(gold, pred, &policy, &opts).correct;
        let cat = v["category"].as_str().unwrap_or("").to_string();
        let e = o.by_category.entry(cat.clone()).or_default();
        e.0 += 1;
        o.total += 1;
        if got == expected {
            o.agree += 1;
            e.1 += 1;
        } else {
            let msg = format!("[{cat}] expected {expected}: {gold:?} vs {pred:?}");
            if got {
                o.false_accepts.push(msg.clone());
            }
            o.disagreements.push(msg);
        }
    }
    o
}

fn check(file: &str, min_agreement: f64) {
    let o = run(file);
    let rate = o.agree as f64 / o.total as f64;
    for (cat, (n, a)) in &o.by_category {
        eprintln!("{file} {cat}: {a}/{n}");
    }
    for d in o.disagreements.iter().take(80) {
        eprintln!("{d}");
    }
    eprintln!(
        "{file}: agreement {:.2}% ({} of {}), {} false accepts",
        100.0 * rate,
        o.agree,
        o.total,
        o.false_accepts.len()
    );
    assert!(
        o.false_accepts.is_empty(),
        "{file}: accepted answers math-verify rejects:\n{}",
        o.false_accepts.join("\n")
    );
    assert!(
        rate >= min_agreement,
        "{file}: agreement {rate:.4} < {min_agreement}"
    );
}

#[test]
fn agrees_with_math_verify_on_its_kinds_of_cases() {
    check("tuning_categories.jsonl", 0.97);
}

#[test]
fn agrees_with_math_verify_on_realistic_completions() {
    check("tuning_completions.jsonl", 0.97);
}

#[test]
fn rejects_every_answer_math_verify_rejects() {
    check("tuning_wrong.jsonl", 1.0);
}

#[test]
fn agrees_with_math_verify_on_held_out_cases() {
    check("heldout_categories.jsonl", 0.97);
}

#[test]
fn agrees_with_math_verify_on_held_out_completions() {
    check("heldout_completions.jsonl", 0.97);
}

#[test]
fn rejects_every_held_out_answer_math_verify_rejects() {
    check("heldout_wrong.jsonl", 1.0);
}
