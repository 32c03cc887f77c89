//! What every built-in task generator makes, and the pieces they share: the [`Problem`] row, the
//! word pools (people, items, containers) and the [`Chain`] that writes a worked solution while
//! computing it. `task` (arith, and the task list) and `chain` (arith-chain) both build on this
//! file, so neither needs the other's.

use rand::seq::IndexedRandom;
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

/// One generated problem; field order is the JSONL column order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Problem {
    pub question: String,
    /// The final integer, as a string (the gold answer the verifiers compare against).
    pub answer: String,
    /// Worked steps ending in `\boxed{answer}`, e.g. `12+7=19. 19-5=14. \boxed{14}`.
    pub solution: String,
    pub level: u8,
    pub id: String,
}

pub(super) const NAMES: [(&str, &str); 12] = [
    ("Tom", "He"),
    ("Ann", "She"),
    ("Sam", "He"),
    ("Mia", "She"),
    ("Ben", "He"),
    ("Lily", "She"),
    ("Max", "He"),
    ("Zoe", "She"),
    ("Leo", "He"),
    ("Emma", "She"),
    ("Jack", "He"),
    ("Nora", "She"),
];

pub(super) const ITEMS: [&str; 12] = [
    "apples", "pens", "coins", "books", "cards", "marbles", "cookies", "shells", "stamps", "eggs",
    "stickers", "balls",
];

pub(super) const CONTAINERS: [(&str, &str); 4] = [
    ("box", "boxes"),
    ("bag", "bags"),
    ("pack", "packs"),
    ("jar", "jars"),
];

/// One step of a worked solution.
#[derive(Debug, Clone, Copy)]
pub(super) enum Op {
    Add,
    Sub,
    Mul,
    Div,
}

/// Builds the solution text while computing each value, so text and answer cannot disagree.
pub(super) struct Chain {
    text: String,
}

impl Chain {
    pub(super) fn new() -> Self {
        Chain {
            text: String::new(),
        }
    }

    pub(super) fn step(&mut self, a: i64, op: Op, b: i64) -> i64 {
        let (sym, value) = match op {
            Op::Add => ('+', a + b),
            Op::Sub => ('-', a - b),
            Op::Mul => ('*', a * b),
            Op::Div => ('/', a / b),
        };
        debug_assert!(value >= 0, "generator produced a negative value");
        self.text.push_str(&format!("{a}{sym}{b}={value}. "));
        value
    }

    pub(super) fn finish(mut self, answer: i64) -> (String, String) {
        self.text.push_str(&format!("\\boxed{{{answer}}}"));
        (self.text, answer.to_string())
    }
}

/// Picks two different people, so that "gives 5 to Ann" never reads "Ann gives 5 to Ann".
pub(super) fn two_people(rng: &mut ChaCha8Rng) -> ((&'static str, &'static str), &'static str) {
    let i = rng.random_range(0..NAMES.len());
    let j = (i + rng.random_range(1..NAMES.len())) % NAMES.len();
    (NAMES[i], NAMES[j].0)
}

pub(super) fn pick<T: Copy>(rng: &mut ChaCha8Rng, xs: &[T]) -> T {
    // The pools are non-empty constants.
    *xs.choose(rng).expect("non-empty pool")
}
