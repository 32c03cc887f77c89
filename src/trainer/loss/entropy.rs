//! The entropy options of TRL 1.16: the high-entropy token mask (`top_entropy_quantile`,
//! "Beyond the 80/20 Rule") and the adaptive entropy coefficient (Skywork-OR1).

use serde::{Deserialize, Serialize};

use crate::config::LossSection;

/// `torch.quantile(x, q)` with its default linear interpolation; `x` sorted ascending, non-empty.
pub fn quantile(sorted: &[f64], q: f64) -> f64 {
    let pos = q.clamp(0.0, 1.0) * (sorted.len() - 1) as f64;
    let (lo, hi) = (pos.floor() as usize, pos.ceil() as usize);
    let (a, b) = (sorted[lo], sorted[hi]);
    a + (b - a) * (pos - lo as f64)
}

/// TRL's `get_high_entropy_mask`: the counted tokens whose entropy is at least the `threshold`
/// quantile of the counted tokens' entropies (over the whole micro-batch). No counted token:
/// all false.
pub fn high_entropy_mask(
    entropies: &[&[f64]],
    masks: &[&[bool]],
    threshold: f64,
) -> Vec<Vec<bool>> {
    let mut all: Vec<f64> = entropies
        .iter()
        .zip(masks)
        .flat_map(|(h, m)| m.iter().zip(h.iter()).filter(|p| *p.0).map(|p| *p.1))
        .collect();
    if all.is_empty() {
        return masks.iter().map(|m| vec![false; m.len()]).collect();
    }
    all.sort_by(f64::total_cmp);
    let cut = quantile(&all, threshold);
    entropies
        .iter()
        .zip(masks)
        .map(|(h, m)| {
            m.iter()
                .enumerate()
                .map(|(t, &k)| k && h[t] >= cut)
                .collect()
        })
        .collect()
}

/// The entropy coefficient across optimizer steps. With `use_adaptive_entropy` the coefficient
/// applies only once the last step's entropy is at or below `entropy_target`, and after every
/// optimizer step it moves by `entropy_coef_delta` (up when the entropy is at or below the target,
/// down otherwise), within `[entropy_coef_min, entropy_coef_max]`. Saved in `trainer_state.json`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct EntropyControl {
    pub coef: f64,
    /// The entropy of the last optimizer step (over the bonus's tokens); `None` before the
    /// first (TRL's `inf`, so no bonus applies on the first step).
    pub last_entropy: Option<f64>,
}

impl EntropyControl {
    pub fn new(l: &LossSection) -> Self {
        Self {
            coef: l.entropy_coef,
            last_entropy: None,
        }
    }

    /// The coefficient this optimizer step applies.
    pub fn applied(&self, l: &LossSection) -> f64 {
        if !l.use_adaptive_entropy {
            return self.coef;
        }
        match self.last_entropy {
            Some(h) if h <= l.entropy_target => self.coef,
            _ => 0.0,
        }
    }

    /// After an optimizer step whose bonus tokens had entropy `sum` over `count` tokens.
    pub fn update(&mut self, l: &LossSection, sum: f64, count: f64) {
        if !l.use_adaptive_entropy {
            return;
        }
        let h = sum / count.max(1.0);
        self.coef = if h <= l.entropy_target {
            (self.coef + l.entropy_coef_delta).min(l.entropy_coef_max)
        } else {
            (self.coef - l.entropy_coef_delta).max(l.entropy_coef_min)
        };
        self.last_entropy = Some(h);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantile_interpolates_like_torch() {
        let x = [1.0, 2.0, 4.0, 8.0];
        assert_eq!(quantile(&x, 0.0), 1.0);
        assert_eq!(quantile(&x, 1.0), 8.0);
        // pos = 0.5·3 = 1.5: halfway between 2 and 4.
        assert_eq!(quantile(&x, 0.5), 3.0);
        let h: [&[f64]; 2] = [&[0.5, 3.0, 9.0], &[2.0, 1.0, 7.0]];
        let m: [&[bool]; 2] = [&[true, true, false], &[true, true, true]];
        // Counted: 0.5, 3, 2, 1, 7 → sorted 0.5 1 2 3 7; q = 0.8 → pos 3.2 → 3.8.
        let mask = high_entropy_mask(&h, &m, 0.8);
        assert_eq!(mask, vec![vec![false; 3], vec![false, false, true]]);
    }

    #[test]
    fn adaptive_control_moves_within_bounds() {
        let l = LossSection {
            entropy_coef: 0.01,
            use_adaptive_entropy: true,
            entropy_target: 1.0,
            entropy_coef_delta: 0.02,
            entropy_coef_max: 0.04,
            ..LossSection::default()
        };
        let mut c = EntropyControl::new(&l);
        assert_eq!(c.applied(&l), 0.0);
        c.update(&l, 1.8, 2.0);
        assert!((c.coef - 0.03).abs() < 1e-15);
        assert_eq!(c.applied(&l), 0.03);
        c.update(&l, 0.5, 2.0);
        assert_eq!(c.coef, 0.04);
        c.update(&l, 5.0, 1.0);
        assert!((c.coef - 0.02).abs() < 1e-15);
        assert_eq!(c.applied(&l), 0.0);
    }
}
