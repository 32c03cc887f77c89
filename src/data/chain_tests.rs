//! Tests of the arith-chain generator through the task's split builder. They live beside
//! `chain.rs`, not in it, because they need `task` (which imports `chain`).

use std::collections::HashSet;
use std::path::PathBuf;

use rand::SeedableRng;

use rand_chacha::ChaCha8Rng;

use super::chain::{generate_chain, MAX_TOTAL, MIN_TOTAL};
use super::task::{build_splits, evaluate_chain, SplitSizes, Splits, Task};

fn splits(seed: u64) -> Splits {
    let sizes = SplitSizes {
        train: 400,
        validation: 40,
        test: 40,
    };
    build_splits(Task::ArithChain, seed, sizes).unwrap()
}

/// Every `a op b = c` step of `solution`, as the numbers and the operator.
fn steps(solution: &str) -> Vec<(i64, char, i64, i64)> {
    let body = solution.rsplit_once("\\boxed{").unwrap().0;
    body.split(". ")
        .filter(|s| s.contains('='))
        .map(|s| {
            let (lhs, rhs) = s.split_once('=').unwrap();
            let pos = lhs.find(['+', '-', '*', '/']).unwrap();
            (
                lhs[..pos].parse().unwrap(),
                lhs.as_bytes()[pos] as char,
                lhs[pos + 1..].parse().unwrap(),
                rhs.trim_end_matches('.').parse().unwrap(),
            )
        })
        .collect()
}

#[test]
fn every_step_is_correct_and_the_last_is_the_gold() {
    for seed in [0, 1, 2] {
        let s = splits(seed);
        for (_, rows) in s.named() {
            for p in rows {
                // evaluate_chain recomputes every step and checks the \boxed{} against
                // the last one; the stored answer must be that value.
                let v = evaluate_chain(&p.solution)
                    .unwrap_or_else(|e| panic!("{}: {e:#}: {}", p.id, p.solution));
                assert_eq!(v.to_string(), p.answer, "{}", p.id);
                let st = steps(&p.solution);
                assert_eq!(st.len(), usize::from(p.level) + 1, "{}", p.solution);
                for &(a, op, b, r) in &st {
                    let want = match op {
                        '+' => a + b,
                        '-' => a - b,
                        '*' => a * b,
                        _ => {
                            assert_eq!(a % b, 0, "{}", p.solution);
                            a / b
                        }
                    };
                    assert_eq!(want, r, "{}", p.solution);
                    assert!((MIN_TOTAL..=MAX_TOTAL).contains(&r), "{}", p.solution);
                }
            }
        }
    }
}

/// The answer recomputed from the question's words alone, independently of the generator.
fn simulate(question: &str) -> i64 {
    let words: Vec<&str> = question
        .split([' ', '.', '?'])
        .filter(|w| !w.is_empty())
        .collect();
    let num = |i: usize| -> i64 { words[i].parse().unwrap() };
    let at = |w: &str| words.iter().position(|x| *x == w);
    let mut total = num(at("has").unwrap() + 1);
    let days = num(at("after").unwrap() + 1);
    let mut day: Vec<i64> = Vec::new();
    if let Some(i) = at("finds") {
        day.push(num(i + 1));
    }
    if let Some(i) = at("buys") {
        day.push(num(i + 1) * num(i + 4));
    }
    if let Some(i) = at("gives") {
        day.push(-num(i + 1));
    }
    for _ in 0..days {
        for v in &day {
            total += v;
        }
    }
    total
}

#[test]
fn the_answer_follows_from_the_question_alone() {
    let s = splits(4);
    for (_, rows) in s.named() {
        for p in rows {
            assert_eq!(
                simulate(&p.question).to_string(),
                p.answer,
                "{}",
                p.question
            );
        }
    }
    let q = "Ann has 20 pens. Each day she buys 2 jars of 5 and gives 12 to Tom. How many pens does Ann have after 2 days?";
    assert_eq!(simulate(q), 16);
}

#[test]
fn each_step_continues_the_running_total() {
    // A chain, not a bag of independent sums: every step but the one-off product starts
    // from the total the previous step left.
    let s = splits(5);
    for p in &s.train {
        let st = steps(&p.solution);
        let mut first = p.question.split(|ch: char| !ch.is_ascii_digit());
        let mut total: i64 = first.find(|w| !w.is_empty()).unwrap().parse().unwrap();
        for (i, &(a, op, _, r)) in st.iter().enumerate() {
            if op == '*' {
                assert_eq!(i, 0, "{}", p.solution);
                continue;
            }
            assert_eq!(a, total, "{}", p.solution);
            total = r;
        }
        assert_eq!(total.to_string(), p.answer);
    }
}

#[test]
fn every_operand_is_given_or_computed() {
    let s = splits(3);
    for p in &s.train {
        let mut known: HashSet<i64> = p
            .question
            .split(|ch: char| !ch.is_ascii_digit())
            .filter(|w| !w.is_empty())
            .map(|w| w.parse().unwrap())
            .collect();
        for (a, _, b, r) in steps(&p.solution) {
            assert!(known.contains(&a) && known.contains(&b), "{}", p.id);
            known.insert(r);
        }
    }
}

#[test]
fn solutions_are_40_to_120_tokens_and_levels_cycle() {
    let dir = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/models/tiny-math"));
    let tok = tokenizers::Tokenizer::from_file(dir.join("tokenizer.json")).unwrap();
    let s = splits(0);
    let mut lengths = Vec::new();
    for p in &s.train {
        let n = tok.encode(p.solution.as_str(), false).unwrap().len();
        assert!((40..=120).contains(&n), "{n} tokens: {}", p.solution);
        lengths.push(n);
    }
    let mean = lengths.iter().sum::<usize>() as f64 / lengths.len() as f64;
    assert!((50.0..=90.0).contains(&mean), "mean {mean}");
    let levels: Vec<u8> = s.validation.iter().take(8).map(|p| p.level).collect();
    assert_eq!(levels, [3, 4, 5, 6, 3, 4, 5, 6]);
    assert_eq!(s.test[0].id, "arith-chain-test-00000");
}

#[test]
fn deterministic_mixed_and_bad_levels_rejected() {
    assert_eq!(splits(7), splits(7));
    assert_ne!(splits(7).train[0].question, splits(8).train[0].question);
    // Every routine shows up in a few hundred problems.
    let s = splits(0);
    let all: String = s.train.iter().map(|p| p.question.as_str()).collect();
    for routine in [
        "day she finds",
        "day he gives",
        "of 6. How",
        "more and gives",
        "and gives",
    ] {
        assert!(all.contains(routine), "no `{routine}` problem");
    }
    assert!(all.contains("after 7 days") && all.contains("after 2 days"));
    let mut rng = ChaCha8Rng::seed_from_u64(0);
    let err = generate_chain(2, &mut rng).unwrap_err().to_string();
    assert!(err.contains("3 to 6"), "{err}");
    assert!(Task::from_name("arith-chain").is_ok());
}
