//! The built-in `arith-chain` task: a daily routine repeated for several days, one running total.
//!
//! On `arith` the policy's main choice is made at its first token ("answer at once" or "work it
//! out"); λ-GRPO's argument is about shared steps deeper in a completion. Here every problem is a
//! chain: a person starts with some items and every day finds some, gives some away or buys boxes
//! of them, for 2–7 days, so each step starts from the total the previous one left. A problem of
//! level L needs L intermediate results before the answer (L+1 `a op b = c.` steps, 40–120
//! tokens of solution with the tiny-math tokenizer): completions share long correct prefixes and
//! part ways at the first slip or at a miscounted day. The question holds only 2–4 numbers (like
//! `arith`), so a tiny policy can copy them; the length comes from the repetition. A first design
//! with a different event, and so a different number, at every step was too hard for the 0.85M
//! tiny-math policy to copy (2 % greedy after 200 SFT steps). Totals stay in
//! [`MIN_TOTAL`]..=[`MAX_TOTAL`]; generation is a pure function of the seed (ChaCha8) like `arith`.

use anyhow::{bail, ensure, Result};
use rand::Rng;
use rand_chacha::ChaCha8Rng;

use super::task::{pick, two_people, Chain, Op, Problem, CONTAINERS, ITEMS};

/// Levels = intermediate results before the answer.
pub const CHAIN_LEVELS: [u8; 4] = [3, 4, 5, 6];

/// Smallest running total, product and added or taken amount: two-digit operands keep every
/// solution at 40 tokens or more.
pub const MIN_TOTAL: i64 = 10;

/// Largest running total (keeps every number at three digits or fewer).
pub const MAX_TOTAL: i64 = 300;

/// What happens every day.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Routine {
    /// `s+x.` per day.
    Find,
    /// `s-y.` per day.
    Give,
    /// `n*k=p.` once, then `s+p.` per day.
    Buy,
    /// `s+x. s-y.` per day.
    FindGive,
    /// `n*k=p.` once, then `s+p. s-y.` per day.
    BuyGive,
}

impl Routine {
    /// Days that make `steps` steps, with the one-off product counted.
    fn days(self, steps: usize) -> usize {
        match self {
            Routine::Find | Routine::Give => steps,
            Routine::Buy => steps - 1,
            Routine::FindGive => steps / 2,
            Routine::BuyGive => (steps - 1) / 2,
        }
    }
}

/// One draw of a problem's numbers.
struct Draw {
    start: i64,
    find: i64,
    give: i64,
    boxes: (i64, i64),
}

/// The day's operations for `routine` with the drawn numbers (`p` = the product).
fn daily(routine: Routine, d: &Draw) -> Vec<(Op, i64)> {
    let p = d.boxes.0 * d.boxes.1;
    match routine {
        Routine::Find => vec![(Op::Add, d.find)],
        Routine::Give => vec![(Op::Sub, d.give)],
        Routine::Buy => vec![(Op::Add, p)],
        Routine::FindGive => vec![(Op::Add, d.find), (Op::Sub, d.give)],
        Routine::BuyGive => vec![(Op::Add, p), (Op::Sub, d.give)],
    }
}

/// Whether every running total of the draw stays in range.
fn in_range(routine: Routine, d: &Draw, days: usize) -> bool {
    let mut s = d.start;
    for _ in 0..days {
        for (op, v) in daily(routine, d) {
            s = match op {
                Op::Add => s + v,
                _ => s - v,
            };
            if !(MIN_TOTAL..=MAX_TOTAL).contains(&s) {
                return false;
            }
        }
    }
    true
}

/// Generates one problem with `level` intermediate results (3–6); `id` is left empty.
pub fn generate_chain(level: u8, rng: &mut ChaCha8Rng) -> Result<Problem> {
    ensure!(
        CHAIN_LEVELS.contains(&level),
        "unknown arith-chain level {level}: expected 3 to 6 (intermediate results)"
    );
    let steps = usize::from(level) + 1;
    let ((name, pron), other) = two_people(rng);
    let items = pick(rng, &ITEMS);
    let (_, boxes) = pick(rng, &CONTAINERS);
    // Two-operation days fit an even number of steps, or an odd one after the product.
    let paired = if steps % 2 == 0 {
        Routine::FindGive
    } else {
        Routine::BuyGive
    };
    let routine = pick(rng, &[Routine::Find, Routine::Give, Routine::Buy, paired]);
    let days = routine.days(steps);
    let mut attempts = 0;
    let d = loop {
        attempts += 1;
        if attempts > 10_000 {
            bail!("arith-chain: no {routine:?} problem over {days} days stays in range");
        }
        let start = if routine == Routine::Give {
            rng.random_range(100..=250)
        } else {
            rng.random_range(10..=60)
        };
        let d = Draw {
            start,
            find: rng.random_range(10..=40),
            give: rng.random_range(10..=30),
            boxes: box_counts(rng, 40),
        };
        if in_range(routine, &d, days) {
            break d;
        }
    };
    let (n, k) = d.boxes;
    let mut c = Chain::new();
    let mut total = d.start;
    if matches!(routine, Routine::Buy | Routine::BuyGive) {
        c.step(n, Op::Mul, k);
    }
    for _ in 0..days {
        for (op, v) in daily(routine, &d) {
            total = c.step(total, op, v);
        }
    }
    let (x, y) = (d.find, d.give);
    let each_day = match routine {
        Routine::Find => format!("finds {x} more"),
        Routine::Give => format!("gives {y} to {other}"),
        Routine::Buy => format!("buys {n} {boxes} of {k}"),
        Routine::FindGive => format!("finds {x} more and gives {y} to {other}"),
        Routine::BuyGive => format!("buys {n} {boxes} of {k} and gives {y} to {other}"),
    };
    let question = format!(
        "{name} has {start} {items}. Each day {pron_l} {each_day}. How many {items} does {name} have after {days} days?",
        start = d.start,
        pron_l = pron.to_lowercase(),
    );
    let (solution, answer) = c.finish(total);
    Ok(Problem {
        question,
        answer,
        solution,
        level,
        id: String::new(),
    })
}

/// `n` boxes of `k` (both 2–9) with `MIN_TOTAL <= n*k <= max`, drawn until one fits
/// (`max >= 10` always has 2*5).
fn box_counts(rng: &mut ChaCha8Rng, max: i64) -> (i64, i64) {
    loop {
        let n = rng.random_range(2..=9);
        let k = rng.random_range(2..=9);
        if (MIN_TOTAL..=max).contains(&(n * k)) {
            return (n, k);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;
    use std::path::PathBuf;

    use rand::SeedableRng;

    use super::*;
    use crate::data::task::{build_splits, evaluate_chain, SplitSizes, Task};

    fn splits(seed: u64) -> crate::data::task::Splits {
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
}
