//! From graded samples to a benchmark's scores: pass@1, pass@k, maj@k, CI, lengths, breakdowns,
//! and their `summary.json` form.
//!
//! Everything here is a pure function of the sample records, so a resumed run (records read back
//! from `samples.jsonl`) summarizes to exactly what an uninterrupted run would.

use std::collections::BTreeMap;

use anyhow::{bail, Context, Result};
use serde_json::{json, Map, Value};

use super::metrics::{majority_vote, mean_pass_at_k, normal_interval, wilson_interval, Z_95};
use super::SampleRecord;
use crate::verifier::{is_equiv, EquivOptions};

/// Scores of one slice of a benchmark (a subject or a level).
#[derive(Debug, Clone, PartialEq)]
pub struct Breakdown {
    pub num_problems: usize,
    pub pass1: f64,
}

/// A 95 % confidence interval on pass@1.
#[derive(Debug, Clone, PartialEq)]
pub struct Interval {
    pub lower: f64,
    pub upper: f64,
    /// `wilson` (one sample per problem) or `normal` (mean of per-problem pass@1 values).
    pub method: String,
}

/// The scores of one benchmark.
#[derive(Debug, Clone, PartialEq)]
pub struct BenchmarkResult {
    pub benchmark: String,
    pub num_problems: usize,
    /// Samples per problem.
    pub n: usize,
    /// Mean correctness over all samples.
    pub pass1: f64,
    /// Unbiased pass@k for each requested k (ascending).
    pub pass_at_k: Vec<(usize, f64)>,
    /// Majority vote over the first k samples' extracted answers, graded.
    pub maj_at_k: Vec<(usize, f64)>,
    pub ci: Interval,
    /// Mean completion length in tokens.
    pub mean_length: f64,
    /// Fraction of samples with no extractable answer.
    pub no_answer_fraction: f64,
    /// Fraction of samples cut off by the token limit.
    pub truncated_fraction: f64,
    /// Empty when the data has no subjects.
    pub by_subject: BTreeMap<String, Breakdown>,
    /// Empty when the data has no levels.
    pub by_level: BTreeMap<String, Breakdown>,
}

impl BenchmarkResult {
    /// Every score under its `summary.json` key, in display order: `pass@1`, `pass@k`…, `maj@k`….
    pub fn scores(&self) -> Vec<(String, f64)> {
        let mut out = vec![("pass@1".to_string(), self.pass1)];
        for &(k, v) in &self.pass_at_k {
            if k != 1 {
                out.push((format!("pass@{k}"), v));
            }
        }
        for &(k, v) in &self.maj_at_k {
            out.push((format!("maj@{k}"), v));
        }
        out
    }

    /// The `summary.json` object of this benchmark.
    pub fn to_json(&self) -> Value {
        let mut m = Map::new();
        m.insert("benchmark".into(), json!(self.benchmark));
        m.insert("num_problems".into(), json!(self.num_problems));
        m.insert("n".into(), json!(self.n));
        for (key, v) in self.scores() {
            m.insert(key, json!(v));
        }
        m.insert(
            "ci".into(),
            json!({"level": 0.95, "method": self.ci.method, "lower": self.ci.lower, "upper": self.ci.upper}),
        );
        m.insert("mean_length".into(), json!(self.mean_length));
        m.insert("no_answer_fraction".into(), json!(self.no_answer_fraction));
        m.insert("truncated_fraction".into(), json!(self.truncated_fraction));
        let breakdown = |b: &BTreeMap<String, Breakdown>| -> Value {
            b.iter()
                .map(|(k, v)| {
                    (
                        k.clone(),
                        json!({"num_problems": v.num_problems, "pass@1": v.pass1}),
                    )
                })
                .collect::<Map<String, Value>>()
                .into()
        };
        if !self.by_subject.is_empty() {
            m.insert("by_subject".into(), breakdown(&self.by_subject));
        }
        if !self.by_level.is_empty() {
            m.insert("by_level".into(), breakdown(&self.by_level));
        }
        Value::Object(m)
    }
}

/// The summary of `records` for problems `0..num_problems`, which must each have exactly `n`
/// samples (other problem indices are ignored: a resumed run with a smaller `--limit`).
pub fn summarize(
    benchmark: &str,
    num_problems: usize,
    n: usize,
    ks: &[usize],
    records: &[SampleRecord],
    equiv: &EquivOptions,
) -> Result<BenchmarkResult> {
    if num_problems == 0 {
        bail!("{benchmark}: no problems to summarize");
    }
    let mut by_problem: Vec<Vec<&SampleRecord>> = vec![Vec::new(); num_problems];
    for r in records.iter().filter(|r| r.problem_index < num_problems) {
        by_problem[r.problem_index].push(r);
    }
    for (p, rows) in by_problem.iter_mut().enumerate() {
        rows.sort_by_key(|r| r.sample_index);
        let indices: Vec<usize> = rows.iter().map(|r| r.sample_index).collect();
        if indices != (0..n).collect::<Vec<_>>() {
            bail!("{benchmark}: problem {p} has samples {indices:?}, expected 0..{n}");
        }
    }
    let counts: Vec<(usize, usize)> = by_problem
        .iter()
        .map(|rows| (n, rows.iter().filter(|r| r.correct).count()))
        .collect();
    let per_problem: Vec<f64> = counts.iter().map(|&(n, c)| c as f64 / n as f64).collect();
    let pass1 = per_problem.iter().sum::<f64>() / num_problems as f64;

    let mut ks: Vec<usize> = ks.to_vec();
    ks.sort_unstable();
    ks.dedup();
    let mut pass_at_k = Vec::new();
    let mut maj_at_k = Vec::new();
    for &k in &ks {
        pass_at_k.push((
            k,
            mean_pass_at_k(&counts, k).with_context(|| format!("{benchmark}: pass@{k}"))?,
        ));
        let mut hits = 0usize;
        for rows in &by_problem {
            let answers: Vec<Option<&str>> =
                rows[..k].iter().map(|r| r.extracted.as_deref()).collect();
            if let Some(win) = majority_vote(&answers, |a, b| is_equiv(a, b, equiv)) {
                hits += usize::from(rows[win.index].correct);
            }
        }
        maj_at_k.push((k, hits as f64 / num_problems as f64));
    }

    let ci = if n == 1 {
        let c = wilson_interval(counts.iter().map(|c| c.1).sum(), num_problems, Z_95)?;
        Interval {
            lower: c.lower,
            upper: c.upper,
            method: "wilson".into(),
        }
    } else {
        let c = normal_interval(&per_problem, Z_95)?;
        Interval {
            lower: c.lower.max(0.0),
            upper: c.upper.min(1.0),
            method: "normal".into(),
        }
    };

    let all: Vec<&SampleRecord> = by_problem.iter().flatten().copied().collect();
    let total = all.len() as f64;
    let mean_length = all.iter().map(|r| r.num_tokens as f64).sum::<f64>() / total;
    let no_answer_fraction = all.iter().filter(|r| r.extracted.is_none()).count() as f64 / total;
    let truncated_fraction =
        all.iter().filter(|r| r.finish_reason == "length").count() as f64 / total;

    let breakdown = |key: fn(&SampleRecord) -> Option<&String>| {
        let mut acc: BTreeMap<String, (usize, f64)> = BTreeMap::new();
        for (rows, score) in by_problem.iter().zip(&per_problem) {
            if let Some(k) = key(rows[0]) {
                let e = acc.entry(k.clone()).or_default();
                e.0 += 1;
                e.1 += score;
            }
        }
        acc.into_iter()
            .map(|(k, (count, sum))| {
                (
                    k,
                    Breakdown {
                        num_problems: count,
                        pass1: sum / count as f64,
                    },
                )
            })
            .collect::<BTreeMap<_, _>>()
    };

    Ok(BenchmarkResult {
        benchmark: benchmark.to_string(),
        num_problems,
        n,
        pass1,
        pass_at_k,
        maj_at_k,
        ci,
        mean_length,
        no_answer_fraction,
        truncated_fraction,
        by_subject: breakdown(|r| r.subject.as_ref()),
        by_level: breakdown(|r| r.level.as_ref()),
    })
}

/// The macro-average of the scores every result shares (`pass@1`, `maj@4`, …), as
/// `summary.json`'s `average` object.
pub fn average(results: &[BenchmarkResult]) -> Value {
    let mut m = Map::new();
    m.insert(
        "benchmarks".into(),
        json!(results.iter().map(|r| &r.benchmark).collect::<Vec<_>>()),
    );
    if let Some(first) = results.first() {
        for (key, _) in first.scores() {
            let vals: Vec<f64> = results
                .iter()
                .filter_map(|r| r.scores().into_iter().find(|(k, _)| *k == key))
                .map(|(_, v)| v)
                .collect();
            if vals.len() == results.len() {
                m.insert(key, json!(vals.iter().sum::<f64>() / vals.len() as f64));
            }
        }
    }
    Value::Object(m)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(p: usize, s: usize, extracted: Option<&str>, correct: bool) -> SampleRecord {
        SampleRecord {
            benchmark: "t".into(),
            problem_index: p,
            id: format!("t-{p}"),
            sample_index: s,
            prompt: String::new(),
            completion: String::new(),
            extracted: extracted.map(str::to_string),
            gold: "1/2".into(),
            correct,
            num_tokens: 10 * (s + 1),
            finish_reason: if s == 0 { "length" } else { "eos" }.into(),
            subject: Some(if p == 0 { "Algebra" } else { "Geometry" }.into()),
            level: None,
        }
    }

    #[test]
    fn majority_vote_clusters_equivalent_answers() {
        // Problem 0: `\frac12` and `0.5` are the same answer and outvote `3`, even though `3`
        // comes first; problem 1: three different wrong answers, the first wins and is wrong.
        let records = vec![
            rec(0, 0, Some("3"), false),
            rec(0, 1, Some("\\frac12"), true),
            rec(0, 2, Some("0.5"), true),
            rec(0, 3, None, false),
            rec(1, 0, Some("7"), false),
            rec(1, 1, None, false),
            rec(1, 2, Some("8"), false),
            rec(1, 3, Some("1/2"), true),
        ];
        let r = summarize("t", 2, 4, &[1, 3, 4], &records, &EquivOptions::default()).unwrap();
        assert_eq!(r.pass1, (2.0 / 4.0 + 1.0 / 4.0) / 2.0);
        // maj@1: first samples `3` and `7`, both wrong; maj@3: problem 0 → 0.5-cluster (2 votes).
        assert_eq!(r.maj_at_k, vec![(1, 0.0), (3, 0.5), (4, 0.5)]);
        // pass@3 with n = 4: problem 0 (c = 2) → 1, problem 1 (c = 1) → 3/4.
        assert!((r.pass_at_k[1].1 - (1.0 + 0.75) / 2.0).abs() < 1e-12);
        assert_eq!(r.no_answer_fraction, 2.0 / 8.0);
        assert_eq!(r.truncated_fraction, 2.0 / 8.0);
        assert_eq!(r.mean_length, 25.0);
        assert_eq!(r.by_subject["Geometry"].pass1, 0.25);
        assert!(r.by_level.is_empty());
        assert_eq!(r.ci.method, "normal");
        let j = r.to_json();
        assert_eq!(j["maj@3"], json!(0.5));
        assert_eq!(j["by_subject"]["Algebra"]["num_problems"], json!(1));
        assert!(j.get("pass@3").is_some() && j.get("by_level").is_none());
    }

    #[test]
    fn missing_or_extra_samples_are_errors() {
        let records = vec![rec(0, 0, Some("1"), false), rec(0, 2, Some("1"), false)];
        let err = summarize("t", 1, 2, &[1], &records, &EquivOptions::default()).unwrap_err();
        assert!(
            err.to_string().contains("problem 0 has samples [0, 2]"),
            "{err}"
        );
        // Records past num_problems are ignored (a resume with a smaller --limit).
        let records = vec![rec(0, 0, Some("1/2"), true), rec(1, 0, None, false)];
        let r = summarize("t", 1, 1, &[1], &records, &EquivOptions::default()).unwrap();
        assert_eq!(r.pass1, 1.0);
        assert_eq!(r.ci.method, "wilson");
        assert!(r.ci.lower > 0.2 && r.ci.upper == 1.0, "{:?}", r.ci);
    }
}
