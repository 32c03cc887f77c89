//! `grpo eval` end to end: the oracle on every shipped benchmark, the fixture model on every
//! benchmark, resume after an interruption, comparisons and argument errors.

use std::fs;
use std::path::{Path, PathBuf};

use clap::Parser;
use grpo::cli::eval::{run, EvalArgs};
use grpo::data::benchmarks::{benchmark, BENCHMARK_NAMES};
use serde_json::Value;

#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    args: EvalArgs,
}

mod common;

fn fixture() -> String {
    common::fixture("tiny-qwen2").display().to_string()
}

fn eval(args: &[&str]) -> anyhow::Result<()> {
    let cli = Cli::try_parse_from(std::iter::once("eval").chain(args.iter().copied()))?;
    run(&cli.args)
}

fn read_json(path: &Path) -> Value {
    serde_json::from_str(&fs::read_to_string(path).unwrap()).unwrap()
}

fn samples(dir: &Path) -> Vec<Value> {
    fs::read_to_string(dir.join("samples.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn oracle_scores_every_row_of_every_shipped_benchmark() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("oracle");
    let names = BENCHMARK_NAMES.join(",");
    eval(&["--oracle", "-b", &names, "--out", out.to_str().unwrap()]).unwrap();
    let summary = read_json(&out.join("summary.json"));
    assert_eq!(summary["model"], "oracle");
    for name in BENCHMARK_NAMES {
        let b = &summary["benchmarks"][*name];
        let rows = benchmark(name).unwrap().rows.unwrap();
        assert_eq!(b["num_problems"], rows, "{name}");
        assert_eq!(b["no_answer_fraction"], 0.0, "{name}");
        // Every reference answer is graded correct against itself, OlympiadBench's 91
        // multiple-answer rows (`1,3`: a set, not the decimal 1.3) included.
        assert_eq!(b["pass@1"], 1.0, "{name}: {b}");
        assert_eq!(b["maj@1"], 1.0, "{name}: {b}");
    }
    assert_eq!(summary["average"]["pass@1"], 1.0);
    let rows = samples(&out);
    let total: usize = BENCHMARK_NAMES
        .iter()
        .map(|n| benchmark(n).unwrap().rows.unwrap())
        .sum();
    assert_eq!(rows.len(), total);
    let wrong: Vec<&Value> = rows.iter().filter(|r| r["correct"] != true).collect();
    assert!(
        wrong.is_empty(),
        "reference solutions graded wrong: {wrong:?}"
    );
    // A multiple-answer gold is the set: both answers in any order, never one of them alone.
    let row = |id: &str| rows.iter().find(|r| r["id"] == id).unwrap();
    assert_eq!(row("olympiadbench-1800")["gold"], "$1,3$");
    assert_eq!(row("olympiadbench-1664")["gold"], "$69,84$");
    // MATH-500 carries subjects and levels.
    let m = &summary["benchmarks"]["math500"];
    assert_eq!(m["by_level"].as_object().unwrap().len(), 5, "{m}");
    assert!(m["by_subject"]["Algebra"]["num_problems"].as_u64().unwrap() > 50);
}

#[test]
fn multiple_answer_gold_is_a_set_never_one_member_or_a_decimal() {
    use grpo::verifier::{EquivOptions, ExtractPolicy};
    let (policy, opts) = (ExtractPolicy::default(), EquivOptions::default());
    // OlympiadBench `is_multiple_answer` golds as the loader writes them (`$69,84$`); the
    // verdicts are math-verify's on the same pairs.
    for (pred, expected) in [
        (r"The answer is \boxed{69,84}.", true),
        (r"The answer is \boxed{84, 69}.", true),
        (r"The answer is $n=69$ and $n=84$.", true),
        (r"The answer is \boxed{69}.", false),
        (r"The answer is \boxed{69.84}.", false),
        (r"The answer is \boxed{69,84,1}.", false),
    ] {
        let v = grpo::cli::verify::judge("$69,84$", pred, &policy, &opts);
        assert_eq!(v.correct, expected, "{pred}");
    }
}

#[test]
fn fixture_model_runs_every_shipped_benchmark() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("tiny");
    let names = BENCHMARK_NAMES.join(",");
    let started = std::time::Instant::now();
    eval(&[
        "--model",
        &fixture(),
        "-b",
        &names,
        "--limit",
        "2",
        "-n",
        "2",
        "--k",
        "1,2",
        "--max-new-tokens",
        "8",
        "--out",
        out.to_str().unwrap(),
    ])
    .unwrap();
    eprintln!(
        "fixture eval: {} problems in {:.2} s",
        2 * BENCHMARK_NAMES.len(),
        started.elapsed().as_secs_f64()
    );
    let summary = read_json(&out.join("summary.json"));
    assert_eq!(summary["settings"]["n"], 2);
    // n > 1 without --temperature samples at 0.6 (the fixture's generation_config has none).
    assert_eq!(summary["settings"]["temperature"], 0.6);
    for name in BENCHMARK_NAMES {
        let b = &summary["benchmarks"][*name];
        assert_eq!(b["num_problems"], 2, "{name}");
        assert_eq!(b["n"], 2, "{name}");
        for key in [
            "pass@1",
            "pass@2",
            "maj@1",
            "maj@2",
            "mean_length",
            "no_answer_fraction",
            "truncated_fraction",
        ] {
            let v = b[key].as_f64().unwrap_or_else(|| panic!("{name}: {key}"));
            assert!((0.0..=8.0).contains(&v), "{name}: {key} = {v}");
        }
        let ci = &b["ci"];
        assert_eq!(ci["method"], "normal");
        assert!(ci["lower"].as_f64().unwrap() <= b["pass@1"].as_f64().unwrap());
        assert!(b["mean_length"].as_f64().unwrap() <= 8.0);
    }
    let rows = samples(&out);
    assert_eq!(rows.len(), BENCHMARK_NAMES.len() * 2 * 2);
    for r in &rows {
        for key in ["id", "prompt", "completion", "gold", "finish_reason"] {
            assert!(r[key].is_string(), "{key}: {r}");
        }
        assert!(r.get("extracted").is_some(), "{r}");
        assert!(r["correct"].is_boolean());
        assert!(r["num_tokens"].as_u64().unwrap() <= 8);
        // The default prompt asks for a boxed answer inside the chat template.
        let prompt = r["prompt"].as_str().unwrap();
        assert!(prompt.starts_with("<|im_start|>user\n"), "{prompt}");
        assert!(prompt.contains("within \\boxed{}."), "{prompt}");
    }
    for name in BENCHMARK_NAMES {
        let mut keys: Vec<(u64, u64)> = rows
            .iter()
            .filter(|r| r["benchmark"] == *name)
            .map(|r| {
                (
                    r["problem_index"].as_u64().unwrap(),
                    r["sample_index"].as_u64().unwrap(),
                )
            })
            .collect();
        keys.sort();
        assert_eq!(keys, vec![(0, 0), (0, 1), (1, 0), (1, 1)], "{name}");
    }
}

fn resume_args(out: &Path) -> Vec<String> {
    [
        "--model",
        &fixture(),
        "-b",
        "math500,gsm8k",
        "--limit",
        "3",
        "-n",
        "2",
        "--temperature",
        "1.0",
        "--max-new-tokens",
        "8",
        "--batch-size",
        "2",
        "--out",
        out.to_str().unwrap(),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

fn sorted_lines(path: &Path) -> Vec<String> {
    let mut l: Vec<String> = fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect();
    l.sort();
    l
}

#[test]
fn interrupted_run_resumes_to_the_same_summary() {
    let dir = tempfile::tempdir().unwrap();
    let full: PathBuf = dir.path().join("full");
    let part: PathBuf = dir.path().join("part");
    let a = resume_args(&full);
    eval(&a.iter().map(String::as_str).collect::<Vec<_>>()).unwrap();
    let b = resume_args(&part);
    let b: Vec<&str> = b.iter().map(String::as_str).collect();
    eval(&b).unwrap();

    // Interrupt: keep math500's first problem and half a line of its second.
    let text = fs::read_to_string(part.join("samples.jsonl")).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2 * 3 * 2);
    let first: Vec<&str> = lines
        .iter()
        .copied()
        .filter(|l| l.contains("\"problem_index\":0") && l.contains("\"math500\""))
        .collect();
    assert_eq!(first.len(), 2);
    let cut = format!("{}\n{}", first.join("\n"), &lines[2][..lines[2].len() / 2]);
    fs::write(part.join("samples.jsonl"), cut).unwrap();
    fs::remove_file(part.join("summary.json")).unwrap();

    eval(&b).unwrap();
    assert_eq!(
        fs::read_to_string(full.join("summary.json")).unwrap(),
        fs::read_to_string(part.join("summary.json")).unwrap()
    );
    // The regenerated samples are the very same completions (sampled at T = 1).
    assert_eq!(
        sorted_lines(&full.join("samples.jsonl")),
        sorted_lines(&part.join("samples.jsonl"))
    );

    // A finished run re-run is a no-op; other settings are refused.
    eval(&b).unwrap();
    assert_eq!(samples(&part).len(), 12);
    let mut other = b.clone();
    let pos = other.iter().position(|s| *s == "1.0").unwrap();
    other[pos] = "0.5";
    let err = format!("{:#}", eval(&other).unwrap_err());
    assert!(
        err.contains("other settings") && err.contains("temperature: was 1.0, now 0.5"),
        "{err}"
    );
}

#[test]
fn custom_data_few_shot_and_compare() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("mine.jsonl");
    fs::write(
        &data,
        "{\"q\":\"What is 1/2 as a decimal?\",\"a\":\"0.5\",\"topic\":\"x\"}\n\
         {\"q\":\"2+2?\",\"a\":\"4\",\"solution\":\"2+2=4, so \\\\boxed{4}\"}\n",
    )
    .unwrap();
    let o1 = dir.path().join("o1");
    eval(&[
        "--oracle",
        "--data",
        data.to_str().unwrap(),
        "--question-field",
        "q",
        "--answer-field",
        "a",
        "-n",
        "3",
        "--out",
        o1.to_str().unwrap(),
    ])
    .unwrap();
    let s = read_json(&o1.join("summary.json"));
    let b = &s["benchmarks"]["mine"];
    assert_eq!(b["num_problems"], 2);
    assert_eq!(b["pass@3"], 1.0);
    assert_eq!(b["maj@3"], 1.0);
    let rows = samples(&o1);
    assert_eq!(rows[0]["completion"], "The final answer is \\boxed{0.5}.");
    assert_eq!(rows[3]["completion"], "2+2=4, so \\boxed{4}");

    // Few-shot: gsm8k draws from its train split; math500 has none and runs zero-shot.
    let o2 = dir.path().join("o2");
    eval(&[
        "--oracle",
        "-b",
        "gsm8k,math500",
        "--few-shot",
        "2",
        "--limit",
        "1",
        "--out",
        o2.to_str().unwrap(),
    ])
    .unwrap();
    let rows = samples(&o2);
    let gsm = rows[0]["prompt"].as_str().unwrap();
    assert_eq!(gsm.matches("Problem:\n").count(), 3, "{gsm}");
    assert!(gsm.contains("The final answer is \\boxed{72}."), "{gsm}");
    assert!(!gsm.contains("<<"), "{gsm}");
    assert!(!rows[1]["prompt"].as_str().unwrap().contains("Problem:\n"));

    eval(&["--compare", o1.to_str().unwrap(), o2.to_str().unwrap()]).unwrap();
    let err = eval(&["--compare", dir.path().join("nope").to_str().unwrap()]).unwrap_err();
    assert!(format!("{err:#}").contains("nope"), "{err:#}");
}

#[test]
fn bad_arguments_are_explained() {
    let err = format!(
        "{:#}",
        eval(&["--oracle", "-b", "gsm8k", "-n", "2", "--k", "4"]).unwrap_err()
    );
    assert!(err.contains("k = 4 needs 1 ≤ k ≤ n = 2"), "{err}");
    let err = format!("{:#}", eval(&["--oracle"]).unwrap_err());
    assert!(err.contains("--benchmark"), "{err}");
    let err = format!("{:#}", eval(&["-b", "gsm8k"]).unwrap_err());
    assert!(err.contains("--model"), "{err}");
    let err = format!("{:#}", eval(&["--oracle", "-b", "gsm9k"]).unwrap_err());
    assert!(err.contains("unknown benchmark `gsm9k`"), "{err}");
    let err = format!(
        "{:#}",
        eval(&["--oracle", "-b", "gsm8k", "--prompt-template", "nope"]).unwrap_err()
    );
    assert!(err.contains("--prompt-template"), "{err}");
}

#[test]
fn binary_prints_tables_and_comparisons() {
    let bin = env!("CARGO_BIN_EXE_grpo");
    let dir = tempfile::tempdir().unwrap();
    let run = |args: &[&str]| {
        let out = std::process::Command::new(bin)
            .arg("eval")
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let a = dir.path().join("a");
    let b = dir.path().join("b");
    let stdout = run(&[
        "--oracle",
        "-b",
        "amc23",
        "--limit",
        "3",
        "--out",
        a.to_str().unwrap(),
    ]);
    assert!(stdout.contains("model: oracle"), "{stdout}");
    let row = stdout.lines().find(|l| l.starts_with("amc23")).unwrap();
    let cells: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(&cells[..4], ["amc23", "3", "1", "100.0"], "{row}");
    run(&[
        "--oracle",
        "-b",
        "amc23,aime24",
        "--limit",
        "2",
        "--out",
        b.to_str().unwrap(),
    ]);
    let stdout = run(&["--compare", a.to_str().unwrap(), b.to_str().unwrap()]);
    let header = stdout.lines().next().unwrap();
    assert!(
        header.starts_with("benchmark") && header.ends_with('Δ'),
        "{stdout}"
    );
    let row = stdout
        .lines()
        .find(|l| l.starts_with("amc23") && l.contains("pass@1"))
        .unwrap();
    assert!(row.ends_with("+0.0"), "{row}");
    let row = stdout.lines().find(|l| l.starts_with("aime24")).unwrap();
    assert!(row.ends_with('-'), "{row}");
    let help = run(&["--help"]);
    assert!(
        help.contains("Examples:") && help.contains("--oracle"),
        "{help}"
    );
}
