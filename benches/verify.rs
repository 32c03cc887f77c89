//! Verifier throughput, and its ratio to math-verify measured in the same run.
//!
//! `cargo bench --bench verify`. First the side-by-side: every MATH-500 answer as a pair
//! (gold `$answer$`, pred "… The answer is $\boxed{answer}$.", a quarter of them with a wrong
//! answer) is judged by grpo on one core (`grpo verify --input`'s path, default policy) and by
//! math-verify's `verify(parse(gold), parse(pred))` (`benches/peers/verify_peer.py`, run with
//! `$GRPO_PEER_PYTHON`, else `../.venv-peer/bin/python`, else `python3`; skipped when none has
//! math_verify). Then criterion groups: plain numbers (the fast path), MATH-style LaTeX answers,
//! and whole completions, on one core and with rayon on all cores.

use std::io::Write;
use std::path::Path;
use std::process::Command;
use std::time::Instant;

use criterion::{criterion_group, BenchmarkId, Criterion, Throughput};
use grpo::cli::verify::judge;
use grpo::verifier::{is_equiv, EquivOptions, ExtractPolicy};
use rayon::prelude::*;
use serde_json::{json, Value};

fn math500_pairs() -> Vec<(String, String)> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("data/benchmarks/math500/test.jsonl");
    let text = std::fs::read_to_string(&path).expect("data/benchmarks/math500/test.jsonl");
    text.lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .enumerate()
        .map(|(i, v)| {
            let a = v["answer"].as_str().unwrap_or("").trim().to_string();
            let p = if i % 4 == 3 {
                format!("{a}+1")
            } else {
                a.clone()
            };
            (
                format!("${a}$"),
                format!("We simplify step by step. The answer is $\\boxed{{{p}}}$."),
            )
        })
        .collect()
}

fn peer_python() -> Option<String> {
    let mut candidates = Vec::new();
    if let Ok(p) = std::env::var("GRPO_PEER_PYTHON") {
        candidates.push(p);
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    for v in ["../.venv-peer", "../.venv-mv", ".venv-peer"] {
        candidates.push(root.join(v).join("bin/python").display().to_string());
    }
    candidates.push("python3".into());
    candidates.into_iter().find(|p| {
        Command::new(p)
            .args(["-c", "import math_verify"])
            .output()
            .is_ok_and(|o| o.status.success())
    })
}

/// grpo vs math-verify on the same MATH-500 pairs, one core each.
fn side_by_side() {
    let pairs = math500_pairs();
    let (policy, opts) = (ExtractPolicy::default(), EquivOptions::default());
    let mut best = f64::INFINITY;
    let mut correct = 0;
    for _ in 0..5 {
        let t = Instant::now();
        correct = pairs
            .iter()
            .filter(|(g, p)| judge(g, p, &policy, &opts).correct)
            .count();
        best = best.min(t.elapsed().as_secs_f64());
    }
    let ours = pairs.len() as f64 / best;
    println!(
        "verify/math500: grpo {ours:.0} pairs/s on one core ({correct} of {} correct)",
        pairs.len()
    );
    let Some(py) = peer_python() else {
        println!("verify/math500: math-verify not found (set GRPO_PEER_PYTHON); no ratio");
        return;
    };
    let mut file = tempfile::NamedTempFile::new().expect("temp file");
    for (g, p) in &pairs {
        writeln!(file, "{}", json!({"gold": g, "pred": p})).expect("write pairs");
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/peers/verify_peer.py");
    let out = Command::new(&py).arg(&script).arg(file.path()).output();
    let peer = out
        .ok()
        .filter(|o| o.status.success())
        .and_then(|o| serde_json::from_slice::<Value>(&o.stdout).ok());
    match peer {
        Some(v) => {
            let theirs = v["pairs_per_s"].as_f64().unwrap_or(f64::NAN);
            println!(
                "verify/math500: math-verify {theirs:.0} pairs/s on one core ({} correct); grpo is {:.0}x faster",
                v["correct"],
                ours / theirs
            );
        }
        None => println!("verify/math500: the peer script failed ({py})"),
    }
}

fn numeric_pairs(n: usize) -> Vec<(String, String)> {
    (0..n)
        .map(|i| {
            let g = (i * 7919 % 100_000).to_string();
            let p = match i % 4 {
                0 => g.clone(),
                1 => format!("{}", i * 7919 % 100_000 + 1),
                2 => format!("{g}.0"),
                _ => format!("0{g}"),
            };
            (g, p)
        })
        .collect()
}

const LATEX: &[(&str, &str)] = &[
    (r"\frac{1}{2}", "0.5"),
    (r"\sqrt{8}", r"2\sqrt{2}"),
    ("(x+1)^2", "x^2+2x+1"),
    (r"\left( 3, \frac{\pi}{2} \right)", r"(3, \pi/2)"),
    (r"(-\infty, 3]", r"(-\infty,3)"),
    (r"\{1,2\}", "2, 1"),
    (r"10,\!080", "10080"),
    (r"5 \text{ cm}", "5"),
    (r"\text{(B)}", "B"),
    (r"\frac{\sqrt{3}}{2}", r"\sqrt3/2"),
    ("y = 2x + 3", "2x - y + 3 = 0"),
    (
        r"\begin{pmatrix} 1/5 \\ -18/5 \end{pmatrix}",
        r"\begin{bmatrix} 0.2 \\ -3.6 \end{bmatrix}",
    ),
];

fn latex_pairs(n: usize) -> Vec<(String, String)> {
    (0..n)
        .map(|i| LATEX[i % LATEX.len()])
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect()
}

fn bench(c: &mut Criterion) {
    let opts = EquivOptions::default();
    let n = 10_000;
    let mut group = c.benchmark_group("verify");
    group.throughput(Throughput::Elements(n as u64));
    group.sample_size(10);
    for (name, pairs) in [("numeric", numeric_pairs(n)), ("latex", latex_pairs(n))] {
        group.bench_with_input(BenchmarkId::new("one_core", name), &pairs, |b, pairs| {
            b.iter(|| pairs.iter().filter(|(g, p)| is_equiv(g, p, &opts)).count())
        });
        group.bench_with_input(
            BenchmarkId::new("rayon_all_cores", name),
            &pairs,
            |b, pairs| {
                b.iter(|| {
                    pairs
                        .par_iter()
                        .filter(|(g, p)| is_equiv(g, p, &opts))
                        .count()
                })
            },
        );
    }
    // Whole completions: extraction + verification, as the accuracy reward does it.
    let completions: Vec<(String, String)> = numeric_pairs(n)
        .into_iter()
        .map(|(g, p)| {
            (
                g,
                format!("Adding the two amounts gives the total. The answer is \\boxed{{{p}}}."),
            )
        })
        .collect();
    let policy = ExtractPolicy::default();
    group.bench_function("one_core/completion_numeric", |b| {
        b.iter(|| {
            completions
                .iter()
                .filter(|(g, c)| judge(g, c, &policy, &opts).correct)
                .count()
        })
    });
    let math = math500_pairs();
    group.throughput(Throughput::Elements(math.len() as u64));
    group.bench_function("one_core/math500", |b| {
        b.iter(|| {
            math.iter()
                .filter(|(g, c)| judge(g, c, &policy, &opts).correct)
                .count()
        })
    });
    group.finish();
}

criterion_group!(benches, bench);

fn main() {
    side_by_side();
    benches();
    Criterion::default().configure_from_args().final_summary();
}
