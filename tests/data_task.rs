//! The committed `data/arith` and `data/arith-chain` splits are exactly what
//! `grpo data build-task --seed 0` writes, are disjoint, and every answer follows from its
//! worked solution.

use std::collections::HashSet;
use std::path::PathBuf;

use grpo::data::task::{build_splits, evaluate_chain, to_jsonl, SplitSizes, Task};
use grpo::data::{benchmark, load_benchmark, load_jsonl};

fn arith_dir() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/data/arith"))
}

#[test]
fn committed_splits_regenerate_byte_identically() {
    let splits = build_splits(Task::Arith, 0, SplitSizes::default()).unwrap();
    for (name, rows) in splits.named() {
        let path = arith_dir().join(format!("{name}.jsonl"));
        let committed = std::fs::read_to_string(&path).unwrap();
        let fresh = to_jsonl(rows).unwrap();
        assert_eq!(committed.len(), fresh.len(), "{}", path.display());
        assert!(
            committed == fresh,
            "{} differs from a fresh build",
            path.display()
        );
    }
}

#[test]
fn splits_are_disjoint_and_sized() {
    let mut seen: HashSet<String> = HashSet::new();
    for (name, n) in [("train", 10_000), ("validation", 200), ("test", 500)] {
        let rows = load_jsonl(
            &arith_dir().join(format!("{name}.jsonl")),
            "question",
            "answer",
        )
        .unwrap();
        assert_eq!(rows.len(), n, "{name}");
        for r in rows {
            assert!(
                seen.insert(r.question.clone()),
                "{name}: `{}` repeats",
                r.question
            );
        }
    }
    assert_eq!(seen.len(), 10_700);
}

#[test]
fn answers_follow_from_solutions_and_levels_are_balanced() {
    let rows = load_benchmark(&benchmark("arith").unwrap()).unwrap();
    let mut per_level = [0usize; 5];
    for r in &rows {
        let solution = r.solution.as_deref().unwrap();
        assert_eq!(
            evaluate_chain(solution).unwrap().to_string(),
            r.answer,
            "{}",
            r.id
        );
        assert!(
            solution.ends_with(&format!("\\boxed{{{}}}", r.answer)),
            "{}",
            r.id
        );
        let level: usize = r.level.as_deref().unwrap().parse().unwrap();
        per_level[level - 1] += 1;
    }
    assert_eq!(per_level, [100; 5]);
    assert_eq!(rows[0].id, "arith-test-00000");
}

fn chain_dir() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/data/arith-chain"))
}

#[test]
fn committed_chain_splits_regenerate_byte_identically_and_check_out() {
    let task = Task::from_name("arith-chain").unwrap();
    let splits = build_splits(task, 0, task.default_sizes()).unwrap();
    assert_eq!(splits.train.len(), 4000);
    let mut seen: HashSet<&str> = HashSet::new();
    for (name, rows) in splits.named() {
        let path = chain_dir().join(format!("{name}.jsonl"));
        let committed = std::fs::read_to_string(&path).unwrap();
        assert!(
            committed == to_jsonl(rows).unwrap(),
            "{} differs from `grpo data build-task --task arith-chain`",
            path.display()
        );
        for p in rows {
            assert!(seen.insert(&p.question), "{}: repeats", p.id);
            assert_eq!(evaluate_chain(&p.solution).unwrap().to_string(), p.answer);
            // Level L = L intermediate results, then the answer.
            assert_eq!(p.solution.matches('=').count(), usize::from(p.level) + 1);
        }
    }
    let per_level: Vec<usize> = (3..=6)
        .map(|l| splits.validation.iter().filter(|p| p.level == l).count())
        .collect();
    assert_eq!(per_level, [50; 4]);
}
