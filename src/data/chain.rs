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

use super::problem::{pick, two_people, Chain, Op, Problem, CONTAINERS, ITEMS};

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
