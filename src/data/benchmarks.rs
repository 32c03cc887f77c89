//! The benchmark registry: which file holds each benchmark and how to read its gold answers.
//!
//! Every file lives under [`data_root`] and ships with the repository (`data/benchmarks/`, see
//! its README for sources and licences), so evaluation never needs a network.

use std::path::{Path, PathBuf};

use anyhow::{bail, Result};

/// Every registered benchmark name, in the order `grpo data list` shows them.
pub const BENCHMARK_NAMES: &[&str] = &[
    "gsm8k",
    "gsm8k_train",
    "math500",
    "aime24",
    "amc23",
    "minerva_math",
    "olympiadbench",
    "arith",
    "arith_val",
    "arith_train",
];

/// The five benchmarks the λ-GRPO paper reports (`paper` in a benchmark list).
pub const PAPER_SET: &[&str] = &[
    "aime24",
    "math500",
    "amc23",
    "minerva_math",
    "olympiadbench",
];

/// Where a row's gold answer comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GoldSource {
    /// The field's value as it is (numbers rendered as text, `27.0` as `27`).
    Field(String),
    /// The last `\boxed{}` inside the field (Minerva keeps its answer only in the solution).
    LastBoxedIn(String),
    /// The text after `####` in the field, thousands commas removed (GSM8K).
    AfterHashes(String),
    /// The field as it is, unless it is a worked solution: then the text after its `####` line
    /// (GSM8K's `answer`), else its last `\boxed{}` (hub data sets, whose answer field may be
    /// either).
    FinalAnswerOf(String),
    /// A list of LaTeX answers with `$` delimiters (OlympiadBench `final_answer`). Several
    /// answers (more than one item, or a row whose boolean field `multiple` is true, as
    /// OlympiadBench's `is_multiple_answer` marks `["1,3"]`) become one math-mode list `$1,3$`,
    /// which the verifier reads as a set, as math-verify reads the dataset's own `$1,3$`; bare,
    /// `1,3` would be the decimal 1.3 to both.
    ListField {
        field: String,
        multiple: Option<String>,
    },
}

/// One benchmark (or any JSONL problem file) and how to read it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BenchmarkSpec {
    pub name: String,
    /// Relative to [`data_root`], unless absolute.
    pub file: PathBuf,
    pub question_field: String,
    pub gold: GoldSource,
    pub id_field: Option<String>,
    pub solution_field: Option<String>,
    pub subject_field: Option<String>,
    pub level_field: Option<String>,
    /// Answer-extraction policy for predictions, a name `grpo::verifier::extract::ExtractPolicy::by_name`
    /// accepts: `math` (last `\boxed{}` first), `gsm8k` (also `####` and the last number) or
    /// `boxed` (strict, for the built-in task the tiny model is trained to box).
    pub extraction: String,
    /// Row count of the shipped file, checked by tests (`None` for user files).
    pub rows: Option<usize>,
}

impl BenchmarkSpec {
    /// A spec for a user JSONL file with plain question/answer fields (and the optional `id`,
    /// `solution`, `subject`, `level` fields when present).
    pub fn custom(
        name: &str,
        file: impl Into<PathBuf>,
        question_field: &str,
        answer_field: &str,
    ) -> BenchmarkSpec {
        BenchmarkSpec {
            name: name.to_string(),
            file: file.into(),
            question_field: question_field.to_string(),
            gold: GoldSource::Field(answer_field.to_string()),
            id_field: Some("id".into()),
            solution_field: Some("solution".into()),
            subject_field: Some("subject".into()),
            level_field: Some("level".into()),
            extraction: "math".into(),
            rows: None,
        }
    }

    /// The file's location: `file` itself when absolute, else under [`data_root`].
    pub fn path(&self) -> PathBuf {
        if self.file.is_absolute() {
            self.file.clone()
        } else {
            data_root().join(&self.file)
        }
    }
}

/// The folder holding `benchmarks/` and `arith/`.
///
/// `GRPO_DATA_DIR` wins; otherwise the repository's `data/` (found at build time, so the binary
/// works from any working directory), falling back to `./data` for a relocated binary.
pub fn data_root() -> PathBuf {
    if let Some(dir) = std::env::var_os("GRPO_DATA_DIR") {
        return PathBuf::from(dir);
    }
    let built = Path::new(env!("CARGO_MANIFEST_DIR")).join("data");
    if built.is_dir() {
        built
    } else {
        PathBuf::from("data")
    }
}

fn s(x: &str) -> String {
    x.to_string()
}

fn some(x: &str) -> Option<String> {
    Some(x.to_string())
}

/// Looks a benchmark up by name; the error lists the valid names.
pub fn benchmark(name: &str) -> Result<BenchmarkSpec> {
    let arith = |split: &str, rows: usize| BenchmarkSpec {
        name: s(name),
        file: PathBuf::from(format!("arith/{split}.jsonl")),
        question_field: s("question"),
        gold: GoldSource::Field(s("answer")),
        id_field: some("id"),
        solution_field: some("solution"),
        subject_field: None,
        level_field: some("level"),
        extraction: s("boxed"),
        rows: Some(rows),
    };
    let gsm8k = |split: &str, rows: usize| BenchmarkSpec {
        name: s(name),
        file: PathBuf::from(format!("benchmarks/gsm8k/{split}.jsonl")),
        question_field: s("question"),
        gold: GoldSource::AfterHashes(s("answer")),
        id_field: None,
        solution_field: some("answer"),
        subject_field: None,
        level_field: None,
        extraction: s("gsm8k"),
        rows: Some(rows),
    };
    let spec = match name {
        "gsm8k" => gsm8k("test", 1319),
        "gsm8k_train" => gsm8k("train", 7473),
        "math500" => BenchmarkSpec {
            name: s(name),
            file: PathBuf::from("benchmarks/math500/test.jsonl"),
            question_field: s("problem"),
            gold: GoldSource::Field(s("answer")),
            id_field: None,
            solution_field: some("solution"),
            subject_field: some("subject"),
            level_field: some("level"),
            extraction: s("math"),
            rows: Some(500),
        },
        "aime24" => BenchmarkSpec {
            name: s(name),
            file: PathBuf::from("benchmarks/aime24/test.jsonl"),
            question_field: s("problem"),
            gold: GoldSource::Field(s("answer")),
            id_field: some("id"),
            solution_field: some("solution"),
            subject_field: None,
            level_field: None,
            extraction: s("math"),
            rows: Some(30),
        },
        "amc23" => BenchmarkSpec {
            name: s(name),
            file: PathBuf::from("benchmarks/amc23/test.jsonl"),
            question_field: s("problem"),
            gold: GoldSource::Field(s("answer")),
            id_field: some("id"),
            solution_field: None,
            subject_field: None,
            level_field: None,
            extraction: s("math"),
            rows: Some(40),
        },
        "minerva_math" => BenchmarkSpec {
            name: s(name),
            file: PathBuf::from("benchmarks/minerva_math/test.jsonl"),
            question_field: s("problem"),
            gold: GoldSource::LastBoxedIn(s("solution")),
            id_field: some("idx"),
            solution_field: some("solution"),
            subject_field: some("type"),
            level_field: None,
            extraction: s("math"),
            rows: Some(272),
        },
        "olympiadbench" => BenchmarkSpec {
            name: s(name),
            file: PathBuf::from("benchmarks/olympiadbench/test.jsonl"),
            question_field: s("question"),
            gold: GoldSource::ListField {
                field: s("final_answer"),
                multiple: some("is_multiple_answer"),
            },
            id_field: some("id"),
            solution_field: some("solution"),
            subject_field: some("subfield"),
            level_field: None,
            extraction: s("math"),
            rows: Some(669),
        },
        "arith" => arith("test", crate::data::task::DEFAULT_TEST),
        "arith_val" => arith("validation", crate::data::task::DEFAULT_VALIDATION),
        "arith_train" => arith("train", crate::data::task::DEFAULT_TRAIN),
        other => bail!(
            "unknown benchmark `{other}`: expected one of {} (or `paper` for {})",
            BENCHMARK_NAMES.join(", "),
            PAPER_SET.join(", ")
        ),
    };
    Ok(spec)
}

/// Expands a comma-separated list of names, where `paper` stands for [`PAPER_SET`];
/// duplicates are dropped, order is kept.
pub fn benchmark_set(names: &str) -> Result<Vec<BenchmarkSpec>> {
    let mut out: Vec<BenchmarkSpec> = Vec::new();
    for name in names.split(',').map(str::trim).filter(|n| !n.is_empty()) {
        let expanded: Vec<&str> = if name == "paper" {
            PAPER_SET.to_vec()
        } else {
            vec![name]
        };
        for n in expanded {
            if !out.iter().any(|s| s.name == n) {
                out.push(benchmark(n)?);
            }
        }
    }
    if out.is_empty() {
        bail!("empty benchmark list: expected names such as `paper` or `gsm8k,math500`");
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_registered_name_resolves_and_unknown_lists_them() {
        for name in BENCHMARK_NAMES {
            let spec = benchmark(name).unwrap();
            assert_eq!(spec.name, *name);
            assert!(spec.rows.unwrap() > 0);
        }
        let err = benchmark("gsm8").unwrap_err().to_string();
        assert!(err.contains("unknown benchmark `gsm8`"), "{err}");
        assert!(
            err.contains("minerva_math") && err.contains("arith_val"),
            "{err}"
        );
    }

    #[test]
    fn paper_expands_in_order_without_duplicates() {
        let names: Vec<String> = benchmark_set("gsm8k, paper,math500")
            .unwrap()
            .into_iter()
            .map(|s| s.name)
            .collect();
        assert_eq!(
            names,
            [
                "gsm8k",
                "aime24",
                "math500",
                "amc23",
                "minerva_math",
                "olympiadbench"
            ]
        );
        assert!(benchmark_set(" , ").is_err());
        assert!(benchmark_set("paper,nope").is_err());
    }

    #[test]
    fn custom_absolute_paths_bypass_the_data_root() {
        let spec = BenchmarkSpec::custom("mine", "/tmp/x.jsonl", "q", "a");
        assert_eq!(spec.path(), PathBuf::from("/tmp/x.jsonl"));
        let spec = benchmark("gsm8k").unwrap();
        assert!(spec.path().ends_with("benchmarks/gsm8k/test.jsonl"));
    }
}
