//! Sampling statistics: empirical token frequencies match the truncated, tempered softmax
//! (chi-square goodness of fit, fixed seeds, α = 0.001).

use grpo::sampler::logits::{row_rng, LogitsProcessor};

/// Logits of a small fixed distribution (distinct values, so truncation sets are unambiguous).
const LOGITS: [f32; 8] = [2.0, 1.6, 1.1, 0.9, 0.2, -0.4, -1.0, -2.5];

/// χ² critical values at α = 0.001 for 1..=7 degrees of freedom.
const CRITICAL: [f64; 7] = [10.828, 13.816, 16.266, 18.467, 20.515, 22.458, 24.322];

/// Truncated distribution computed independently of the crate, straight from the definitions
/// (HF order: temperature, top-k, top-p on the renormalised top-k, min-p).
fn expected(t: f64, top_k: usize, top_p: f64, min_p: f64) -> Vec<f64> {
    let z: Vec<f64> = LOGITS.iter().map(|&l| (f64::from(l) / t).exp()).collect();
    // LOGITS is sorted descending, so rank = index.
    let k = if top_k == 0 { z.len() } else { top_k };
    let mut keep: Vec<bool> = (0..z.len()).map(|i| i < k).collect();
    let mass_k: f64 = z[..k].iter().sum();
    let mut before = 0.0;
    for i in 0..k {
        if before / mass_k >= top_p {
            keep[i] = false;
        }
        before += z[i];
    }
    for i in 0..z.len() {
        if z[i] / z[0] < min_p {
            keep[i] = false;
        }
    }
    let total: f64 = (0..z.len()).filter(|&i| keep[i]).map(|i| z[i]).sum();
    (0..z.len())
        .map(|i| if keep[i] { z[i] / total } else { 0.0 })
        .collect()
}

fn chi_square(t: f64, top_k: usize, top_p: f64, min_p: f64, seed: u64) {
    let n = 40_000usize;
    let proc = LogitsProcessor::new(t, top_k, top_p, min_p).unwrap();
    let mut counts = [0usize; 8];
    // Many rows, a few draws each: exercises the per-row seeding too.
    for row in 0..n / 8 {
        let mut rng = row_rng(seed, row, 0);
        for _ in 0..8 {
            let s = proc.sample(&LOGITS, &mut rng).unwrap();
            counts[s.token as usize] += 1;
        }
    }
    let p = expected(t, top_k, top_p, min_p);
    let mut stat = 0.0;
    let mut cells = 0;
    for (i, &pi) in p.iter().enumerate() {
        if pi == 0.0 {
            assert_eq!(counts[i], 0, "token {i} is truncated but was drawn");
            continue;
        }
        let e = pi * n as f64;
        stat += (counts[i] as f64 - e).powi(2) / e;
        cells += 1;
    }
    assert!(cells >= 2, "degenerate case");
    let crit = CRITICAL[cells - 2];
    assert!(
        stat < crit,
        "T={t} k={top_k} p={top_p} min_p={min_p}: chi2 {stat:.2} >= {crit} (df {}), counts {counts:?}, expected {p:?}",
        cells - 1
    );
    // The crate's own description of the distribution agrees with the definition.
    let d = proc.distribution(&LOGITS).unwrap();
    assert_eq!(d.len(), cells);
    for (tok, prob) in d {
        assert!((prob - p[tok as usize]).abs() < 1e-6);
    }
}

#[test]
fn full_softmax_at_temperature() {
    chi_square(1.0, 0, 1.0, 0.0, 1);
    chi_square(0.6, 0, 1.0, 0.0, 2);
    chi_square(1.7, 0, 1.0, 0.0, 3);
}

#[test]
fn top_k() {
    chi_square(1.0, 3, 1.0, 0.0, 4);
    chi_square(0.8, 5, 1.0, 0.0, 5);
}

#[test]
fn top_p() {
    chi_square(1.0, 0, 0.8, 0.0, 6);
    chi_square(1.3, 0, 0.5, 0.0, 7);
}

#[test]
fn min_p() {
    chi_square(1.0, 0, 1.0, 0.1, 8);
    chi_square(0.7, 0, 1.0, 0.3, 9);
}

#[test]
fn combined_truncation() {
    chi_square(0.9, 6, 0.9, 0.05, 10);
    chi_square(1.2, 4, 0.7, 0.2, 11);
}

#[test]
fn expected_sets_are_the_intended_ones() {
    // Guards the test itself: the cases above really truncate.
    let kept = |p: Vec<f64>| p.iter().filter(|&&x| x > 0.0).count();
    assert_eq!(kept(expected(1.0, 3, 1.0, 0.0)), 3);
    assert_eq!(kept(expected(1.0, 0, 0.8, 0.0)), 4);
    assert_eq!(kept(expected(1.0, 0, 1.0, 0.1)), 5);
    assert!(kept(expected(1.2, 4, 0.7, 0.2)) < 4);
}
