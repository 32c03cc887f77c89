//! Every shipped benchmark loads through the registry with a question and a gold answer on
//! every row, and the gold answers come out of their sources as documented in data/README.md.

use grpo::data::benchmarks::{benchmark, benchmark_set, BENCHMARK_NAMES, PAPER_SET};
use grpo::data::{load_benchmark, Example};

fn load(name: &str) -> Vec<Example> {
    load_benchmark(&benchmark(name).unwrap()).unwrap_or_else(|e| panic!("{name}: {e:#}"))
}

#[test]
fn every_benchmark_loads_with_expected_rows() {
    let expected = [
        ("gsm8k", 1319),
        ("gsm8k_train", 7473),
        ("math500", 500),
        ("aime24", 30),
        ("amc23", 40),
        ("minerva_math", 272),
        ("olympiadbench", 669),
        ("arith", 500),
        ("arith_val", 200),
        ("arith_train", 10_000),
    ];
    assert_eq!(expected.len(), BENCHMARK_NAMES.len());
    for (name, n) in expected {
        let spec = benchmark(name).unwrap();
        let rows = load(name);
        assert_eq!(rows.len(), n, "{name}");
        assert_eq!(spec.rows, Some(n), "{name}");
        let mut ids = std::collections::HashSet::new();
        for r in &rows {
            assert!(
                !r.question.trim().is_empty(),
                "{name} {}: empty question",
                r.id
            );
            assert!(!r.answer.trim().is_empty(), "{name} {}: empty gold", r.id);
            assert!(ids.insert(r.id.clone()), "{name}: duplicate id {}", r.id);
        }
    }
}

#[test]
fn gold_answers_resolve_from_their_sources() {
    let gsm = load("gsm8k");
    assert_eq!(gsm[0].answer, "18");
    assert!(gsm
        .iter()
        .all(|r| !r.answer.contains(',') && !r.answer.contains("####")));
    assert!(gsm[0].solution.as_deref().unwrap().ends_with("#### 18"));

    let m = load("math500");
    assert_eq!(m[0].answer, r"\left( 3, \frac{\pi}{2} \right)");
    assert_eq!(m[0].subject.as_deref(), Some("Precalculus"));
    assert_eq!(m[0].level.as_deref(), Some("2"));

    let aime = load("aime24");
    assert_eq!(
        (aime[0].id.as_str(), aime[0].answer.as_str()),
        ("aime24-60", "204")
    );

    let amc = load("amc23");
    assert_eq!(amc[0].answer, "27");
    assert_eq!(amc[15].answer, "-1");

    let minerva = load("minerva_math");
    assert_eq!(minerva[0].answer, "1.6");
    assert_eq!(minerva[1].answer, "4.5e33");
    assert!(minerva.iter().all(|r| !r.answer.contains("boxed")));

    let ob = load("olympiadbench");
    assert_eq!(
        (ob[0].id.as_str(), ob[0].answer.as_str()),
        ("olympiadbench-1606", "2")
    );
    // A multiple-answer gold is one math-mode set (never the decimal 69.84); single answers
    // carry no `$`.
    assert!(ob.iter().any(|r| r.answer == "$69,84$"));
    assert!(ob
        .iter()
        .all(|r| !r.answer.contains('$') || (r.answer.starts_with('$') && r.answer.contains(','))));
}

#[test]
fn paper_set_is_the_five_reported_benchmarks() {
    let names: Vec<String> = benchmark_set("paper")
        .unwrap()
        .into_iter()
        .map(|s| s.name)
        .collect();
    assert_eq!(names, PAPER_SET);
    for s in benchmark_set("paper").unwrap() {
        assert_eq!(s.extraction, "math");
        assert!(grpo::verifier::ExtractPolicy::by_name(&s.extraction).is_some());
    }
    assert!(
        grpo::verifier::ExtractPolicy::by_name(&benchmark("gsm8k").unwrap().extraction).is_some()
    );
    assert!(
        grpo::verifier::ExtractPolicy::by_name(&benchmark("arith").unwrap().extraction).is_some()
    );
}
