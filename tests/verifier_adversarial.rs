//! Adversarial inputs through the whole `grpo verify` path (extraction + equivalence, default
//! policy): no panic, a verdict for every pair, and each pair answered in under 50 ms (the best
//! of five runs, so that a busy machine's scheduling does not decide the test).

use std::time::{Duration, Instant};

use grpo::cli::verify::judge;
use grpo::verifier::{EquivOptions, ExtractPolicy};

fn timed(gold: &str, pred: &str) -> (bool, Duration) {
    let (policy, opts) = (ExtractPolicy::default(), EquivOptions::default());
    let mut best = Duration::MAX;
    let mut verdict = false;
    for _ in 0..5 {
        let t = Instant::now();
        verdict = judge(gold, pred, &policy, &opts).correct;
        best = best.min(t.elapsed());
    }
    (verdict, best)
}

#[test]
fn every_adversarial_pair_is_answered_within_50_ms() {
    // Compile the extraction patterns once (a one-time cost of the process, not of a pair).
    let _ = timed("1", "1");
    let digits: String = (0..100_000)
        .map(|i| char::from(b'0' + (i % 10) as u8))
        .collect();
    let digits_plus: String = format!("{}1", &digits[..99_999]);
    let five_mb = "x".repeat(5 << 20);
    let braces = format!("{}1{}", "{".repeat(5 << 20), "}".repeat(10));
    let nested_boxes = format!("{}7{}", r"\boxed{".repeat(100_000), "}".repeat(100_000));
    let dollars = "$1$ ".repeat(1 << 20);
    let deep_frac = format!("${}1{}$", r"\frac{".repeat(20_000), "}{2}".repeat(20_000));
    let cases: Vec<(String, String, bool)> = vec![
        (digits.clone(), digits.clone(), true),
        (digits.clone(), digits_plus, false),
        (
            format!("${digits}$"),
            format!("The answer is ${digits}1$."),
            false,
        ),
        ("5".into(), five_mb.clone(), false),
        (five_mb.clone(), "x".into(), false),
        ("1".into(), braces, false),
        ("7".into(), nested_boxes, false),
        ("1".into(), dollars, true),
        ("0".into(), deep_frac, false),
        (
            r"$10^{10^{10^{10}}}$".into(),
            r"$10^{10^{10^{10}}}+1$".into(),
            false,
        ),
        (
            r"$e^{e^{e^{e^e}}}$".into(),
            r"$e^{e^{e^{e^e}}}+1$".into(),
            false,
        ),
        (r"$9^{9^{9^{9}}}$".into(), r"$9^{9^{9^{9}}}$".into(), true),
        ("$100000!$".into(), "$100000! + 1$".into(), false),
        (r"$(10^{100})!$".into(), "$5$".into(), false),
        (
            r"$\binom{10^{9}}{5 \cdot 10^{8}}$".into(),
            "$2$".into(),
            false,
        ),
        ("$2^{-100000}$".into(), "$0$".into(), false),
        (r"$\log(0)$".into(), r"$-\infty$".into(), false),
        ("$1e999999$".into(), r"$10^{999999}$".into(), false),
        (format!("${}$", "(".repeat(50_000)), "$1$".into(), false),
        (
            format!("${}$", r"\sqrt{".repeat(30_000)),
            "$1$".into(),
            false,
        ),
        (
            format!("{}5", "Final Answer: ".repeat(100_000)),
            "5".into(),
            true,
        ),
    ];
    let mut slow = Vec::new();
    for (gold, pred, want) in &cases {
        let (got, took) = timed(gold, pred);
        let short = |s: &str| s.chars().take(40).collect::<String>();
        let label = format!(
            "{:?} vs {:?} ({} and {} bytes)",
            short(gold),
            short(pred),
            gold.len(),
            pred.len()
        );
        assert_eq!(got, *want, "{label}");
        if took > Duration::from_millis(50) {
            slow.push(format!("{label}: {took:?}"));
        }
    }
    assert!(slow.is_empty(), "pairs over 50 ms:\n{}", slow.join("\n"));
}
