//! The toy task of the λ-GRPO paper (§8 of `docs/lambda-grpo.md`): a completion is a path of
//! L/R moves down a depth-4 binary tree. The target path scores 1.0; a path that shares the
//! target's first `n` moves but is not the target scores `r_neg` (a trap right next to the
//! goal); every other path scores 0.7. GRPO, which counts a shared prefix once per completion,
//! pushes the target's prefix down with its trapped siblings; λ-GRPO counts it once.

use super::RewardFn;

/// Scores a completion's L/R path against the target (the gold answer, e.g. `LRRL`).
#[derive(Debug, Clone)]
pub struct TreePath {
    /// Moves shared with the target that make a non-target path a trap.
    pub n: usize,
    pub r_neg: f64,
    /// Reward of every path that is neither the target nor a trap.
    pub r_other: f64,
}

impl Default for TreePath {
    fn default() -> Self {
        Self {
            n: 1,
            r_neg: -1.0,
            r_other: 0.7,
        }
    }
}

/// The L/R moves of a completion, ignoring whitespace and anything else.
fn moves(text: &str) -> Vec<char> {
    text.chars().filter(|c| matches!(c, 'L' | 'R')).collect()
}

impl RewardFn for TreePath {
    fn name(&self) -> &str {
        "tree"
    }
    fn score(&self, completion: &str, gold: &str) -> f64 {
        let (path, target) = (moves(completion), moves(gold));
        if path == target {
            1.0
        } else if path.len() >= self.n
            && target.len() >= self.n
            && path[..self.n] == target[..self.n]
        {
            self.r_neg
        } else {
            self.r_other
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paper_reward_scheme() {
        let r = TreePath {
            n: 2,
            r_neg: -1.5,
            r_other: 0.7,
        };
        assert_eq!(r.score("LRRL", "LRRL"), 1.0);
        assert_eq!(r.score("LRLL", "LRRL"), -1.5); // shares "LR"
        assert_eq!(r.score("LRRR", "LRRL"), -1.5);
        assert_eq!(r.score("LLRL", "LRRL"), 0.7); // shares only "L"
        assert_eq!(r.score("RRRL", "LRRL"), 0.7);
        assert_eq!(r.score(" L R R L", "LRRL"), 1.0);
        let r1 = TreePath { n: 1, ..r };
        assert_eq!(r1.score("LLLL", "LRRL"), -1.5);
        assert_eq!(r1.score("RLLL", "LRRL"), 0.7);
    }
}
