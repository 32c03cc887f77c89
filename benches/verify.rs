//! Verifier throughput: pairs per second on one core and with rayon on all cores.
//!
//! `cargo bench --bench verify`. "numeric" is GSM8K-like plain numbers (the fast path);
//! "latex" is MATH-style answers that go through normalisation, parsing and evaluation.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use grpo::rewards::{is_equiv, verify_completion, EquivOptions, ExtractPolicy};
use rayon::prelude::*;

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
    (r"\begin{pmatrix} 1/5 \\ -18/5 \end{pmatrix}", "(0.2, -3.6)"),
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
    group.sample_size(20);
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
                .filter(|(g, c)| verify_completion(c, g, &policy, &opts).correct)
                .count()
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
