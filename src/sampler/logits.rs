//! One row of logits → one sampled token and its log-probability.
//!
//! Truncation follows Hugging Face's warper order: temperature, then `top_k`, then `top_p` on the
//! renormalised top-k distribution, then `min_p` (relative to the most likely token, which is
//! invariant under renormalisation). Equal probabilities are ranked by the lower token id, so the
//! kept set is a deterministic prefix of the tokens ranked by probability.
//!
//! The log-probability returned with a token is taken under the temperature-scaled **full**
//! distribution `log_softmax(logits / T)`, not the truncated one: that is what the trainer
//! recomputes from a forward pass, so rollout and training log-probs agree. At `T = 0` (greedy)
//! it is `log_softmax(logits)` at `T = 1`.

use std::cell::RefCell;

use anyhow::{bail, Result};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// A chosen token and its log-probability under `log_softmax(logits / T)` (see module docs).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sampled {
    pub token: u32,
    pub logprob: f32,
}

/// Temperature and truncation settings for one generation call.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LogitsProcessor {
    /// 0 means greedy (argmax).
    pub temperature: f64,
    /// 0 means off.
    pub top_k: usize,
    /// 1.0 means off.
    pub top_p: f64,
    /// 0.0 means off.
    pub min_p: f64,
}

/// SplitMix64: decorrelates (seed, step) pairs into independent RNG seeds.
pub fn mix_seed(a: u64, b: u64) -> u64 {
    let mut z = a ^ b
        .wrapping_mul(0x9E37_79B9_7F4A_7C15)
        .wrapping_add(0x632B_E59B_D9B3_E50F);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The RNG of one output row, seeded from `(seed, prompt_index, sample_index)` only, so a row's
/// tokens do not depend on which other rows share its batch or on the thread count.
pub fn row_rng(seed: u64, prompt_index: usize, sample_index: usize) -> ChaCha8Rng {
    let mut bytes = [0u8; 32];
    bytes[..8].copy_from_slice(&seed.to_le_bytes());
    bytes[8..16].copy_from_slice(&(prompt_index as u64).to_le_bytes());
    bytes[16..24].copy_from_slice(&(sample_index as u64).to_le_bytes());
    bytes[24..].copy_from_slice(b"grpo-smp");
    ChaCha8Rng::from_seed(bytes)
}

/// An unnormalised probability `exp((logit - max) / T)` and its token id. Truncation works on
/// a contiguous array of these, so selections compare neighbours in memory, not through ids.
type Weighted = (f32, u32);

thread_local! {
    /// Per-thread scratch (weighted tokens, weights by id) reused across calls to avoid
    /// vocabulary-sized allocations per sampled token.
    static SCRATCH: RefCell<(Vec<Weighted>, Vec<f32>)> =
        const { RefCell::new((Vec::new(), Vec::new())) };
}

impl LogitsProcessor {
    /// Checks ranges; errors name the offending setting.
    pub fn new(temperature: f64, top_k: usize, top_p: f64, min_p: f64) -> Result<Self> {
        if !(temperature.is_finite() && temperature >= 0.0) {
            bail!("temperature: expected a finite number >= 0, got {temperature}");
        }
        if !(top_p > 0.0 && top_p <= 1.0) {
            bail!("top_p: expected a number in (0, 1], got {top_p}");
        }
        if !(0.0..=1.0).contains(&min_p) {
            bail!("min_p: expected a number in [0, 1], got {min_p}");
        }
        Ok(Self {
            temperature,
            top_k,
            top_p,
            min_p,
        })
    }

    pub fn is_greedy(&self) -> bool {
        self.temperature <= 0.0
    }

    fn truncates(&self, vocab: usize) -> bool {
        (self.top_k > 0 && self.top_k < vocab) || self.top_p < 1.0 || self.min_p > 0.0
    }

    /// Draws one token. Greedy rows consume no randomness; sampled rows consume exactly one
    /// `f64` per call, so a row's stream stays aligned however the batch is laid out.
    pub fn sample(&self, logits: &[f32], rng: &mut ChaCha8Rng) -> Result<Sampled> {
        if logits.is_empty() {
            bail!("cannot sample from an empty row of logits");
        }
        let (max, arg) = argmax(logits);
        if self.is_greedy() {
            let sum = sum_exp(logits, max, 1.0);
            check_sum(sum)?;
            let logprob = (f64::from(logits[arg]) - f64::from(max) - sum.ln()) as f32;
            return Ok(Sampled {
                token: arg as u32,
                logprob,
            });
        }
        let inv_t = 1.0 / self.temperature;
        let u: f64 = rng.random();
        SCRATCH.with(|scratch| {
            let (pairs, weights) = &mut *scratch.borrow_mut();
            let total = fill_weights(logits, max, inv_t, weights);
            check_sum(total)?;
            let token = if self.truncates(logits.len()) {
                let kept = self.kept_set(weights, total, pairs);
                let kept_mass = mass(&pairs[..kept]);
                pick(pairs[..kept].iter().copied(), u * kept_mass)
            } else {
                pick(weights.iter().copied().zip(0u32..), u * total)
            };
            let logprob =
                ((f64::from(logits[token as usize]) - f64::from(max)) * inv_t - total.ln()) as f32;
            Ok(Sampled { token, logprob })
        })
    }

    /// The exact distribution [`sample`](Self::sample) draws from: `(token, probability)` sorted
    /// by probability (ties: lower id first). Greedy gives the argmax with probability 1.
    pub fn distribution(&self, logits: &[f32]) -> Result<Vec<(u32, f64)>> {
        if logits.is_empty() {
            bail!("cannot sample from an empty row of logits");
        }
        let (max, arg) = argmax(logits);
        if self.is_greedy() {
            return Ok(vec![(arg as u32, 1.0)]);
        }
        let inv_t = 1.0 / self.temperature;
        let mut weights = Vec::new();
        let mut pairs = Vec::new();
        let total = fill_weights(logits, max, inv_t, &mut weights);
        check_sum(total)?;
        let kept = if self.truncates(logits.len()) {
            self.kept_set(&weights, total, &mut pairs)
        } else {
            pairs.extend(weights.iter().copied().zip(0u32..));
            pairs.len()
        };
        pairs.truncate(kept);
        pairs.sort_unstable_by(by_weight_desc);
        let mass = mass(&pairs);
        Ok(pairs
            .iter()
            .map(|&(w, i)| (i, f64::from(w) / mass))
            .collect())
    }

    /// Leaves in `pairs[..n]` the kept tokens (in no particular order) and returns `n`.
    ///
    /// Tokens are ranked by probability, ties by lower id, and every rule keeps a prefix of
    /// that ranking, so the kept set is found with selections instead of a sort: `top_k` by one
    /// `select_nth`, `top_p` by a bisection on mass (each round one `select_nth` on half the
    /// previous range), `min_p` by a filter. O(vocab) per row even when a flat distribution
    /// keeps most of a 150k vocabulary.
    fn kept_set(&self, weights: &[f32], total: f64, pairs: &mut Vec<Weighted>) -> usize {
        let vocab = weights.len();
        pairs.clear();
        pairs.extend(weights.iter().copied().zip(0u32..));
        let mut n = vocab;
        if self.top_k > 0 && self.top_k < vocab {
            pairs.select_nth_unstable_by(self.top_k - 1, by_weight_desc);
            n = self.top_k;
        }
        if self.top_p < 1.0 {
            // top_p is measured against the renormalised top-k distribution.
            let reference = if n < vocab { mass(&pairs[..n]) } else { total };
            n = smallest_prefix_reaching(&mut pairs[..n], self.top_p * reference);
        }
        if self.min_p > 0.0 {
            // p_i >= min_p * p_max  <=>  weight_i >= min_p (weights are relative to the max,
            // whose weight is exactly 1, so at least one token stays).
            let min_weight = self.min_p as f32;
            let mut m = 0;
            for j in 0..n {
                if pairs[j].0 >= min_weight {
                    pairs.swap(m, j);
                    m += 1;
                }
            }
            n = m.max(1);
        }
        n
    }
}

fn mass(pairs: &[Weighted]) -> f64 {
    pairs.iter().map(|&(w, _)| f64::from(w)).sum()
}

/// Rearranges `pairs` so that `pairs[..m]` holds the `m` top-ranked tokens, for the smallest
/// `m` whose mass reaches `target` (HF's top-p: a token is kept while the mass ranked before
/// it is below `target`), and returns `m` (at least 1).
fn smallest_prefix_reaching(pairs: &mut [Weighted], target: f64) -> usize {
    // Invariant: pairs[..lo] are the top `lo` tokens with mass `acc` < target; answer in
    // (lo, hi].
    let (mut lo, mut hi, mut acc) = (0usize, pairs.len(), 0.0f64);
    while hi - lo > 32 {
        let mid = lo + (hi - lo) / 2;
        pairs[lo..hi].select_nth_unstable_by(mid - lo, by_weight_desc);
        let left = mass(&pairs[lo..mid]);
        if acc + left >= target {
            hi = mid;
        } else {
            acc += left;
            lo = mid;
        }
    }
    pairs[lo..hi].sort_unstable_by(by_weight_desc);
    for (j, &(w, _)) in pairs.iter().enumerate().take(hi).skip(lo) {
        acc += f64::from(w);
        if acc >= target {
            return j + 1;
        }
    }
    // Rounding kept the target out of reach: keep everything considered.
    hi.max(1)
}

/// First index of the maximum (matches `torch.argmax` on ties); NaNs never win.
fn argmax(logits: &[f32]) -> (f32, usize) {
    let mut best = f32::NEG_INFINITY;
    let mut arg = 0;
    for (i, &x) in logits.iter().enumerate() {
        if x > best {
            best = x;
            arg = i;
        }
    }
    (best, arg)
}

fn sum_exp(logits: &[f32], max: f32, inv_t: f64) -> f64 {
    let inv_t = inv_t as f32;
    let mut acc = [0f64; 8];
    let chunks = logits.chunks_exact(8);
    let rest: f64 = chunks
        .remainder()
        .iter()
        .map(|&x| f64::from(exp_nonpositive((x - max) * inv_t)))
        .sum();
    for c in chunks {
        for (a, &x) in acc.iter_mut().zip(c) {
            *a += f64::from(exp_nonpositive((x - max) * inv_t));
        }
    }
    acc.iter().sum::<f64>() + rest
}

/// `weights[i] = exp((logit_i - max) / T)`; returns their sum (f64 for accuracy).
fn fill_weights(logits: &[f32], max: f32, inv_t: f64, weights: &mut Vec<f32>) -> f64 {
    let inv_t = inv_t as f32;
    weights.clear();
    weights.resize(logits.len(), 0.0);
    for (w, &x) in weights.iter_mut().zip(logits) {
        *w = exp_nonpositive((x - max) * inv_t);
    }
    sum_f64(weights)
}

/// Sum in f64 with eight independent accumulators (a fixed order, so still deterministic):
/// one serial chain of f64 adds would cost more than computing the weights.
fn sum_f64(values: &[f32]) -> f64 {
    let mut acc = [0f64; 8];
    let chunks = values.chunks_exact(8);
    let rest: f64 = chunks.remainder().iter().map(|&x| f64::from(x)).sum();
    for c in chunks {
        for (a, &x) in acc.iter_mut().zip(c) {
            *a += f64::from(x);
        }
    }
    acc.iter().sum::<f64>() + rest
}

/// `exp(x)` for `x <= 0` (softmax weights relative to the max): Cephes' `expf` range reduction
/// and polynomial (relative error ~1e-7, as libm), branch-free so the weight loop vectorises
/// instead of calling `expf` per element. Inputs below -87 (subnormal results, and -inf for
/// masked tokens) give exactly 0; NaN stays NaN, so bad logits are still caught by
/// [`check_sum`].
#[inline(always)]
fn exp_nonpositive(x_in: f32) -> f32 {
    let x = if x_in < -87.0 { -87.0 } else { x_in };
    // Adding 1.5 * 2^23 rounds to the nearest integer.
    const ROUND: f32 = 12_582_912.0;
    let shifted = x * std::f32::consts::LOG2_E + ROUND;
    let k = shifted - ROUND;
    // The integer k read from the bits (no saturating float->int cast, which would not
    // vectorise).
    let k_int = shifted.to_bits().wrapping_sub(ROUND.to_bits()) as i32;
    let r = x - k * 0.693_359_4 - k * -2.121_944_4e-4;
    let mut p = 1.987_569_1e-4f32;
    p = p * r + 1.398_199_9e-3;
    p = p * r + 8.333_452e-3;
    p = p * r + 4.166_579_6e-2;
    p = p * r + 1.666_666_5e-1;
    p = p * r + 0.5;
    let y = p * r * r + r + 1.0;
    let e = y * f32::from_bits((k_int.wrapping_add(127) << 23) as u32);
    // Below the normal range (and at -inf, e.g. masked tokens) the weight is exactly 0.
    if x_in < -87.0 {
        0.0
    } else {
        e
    }
}

fn check_sum(sum: f64) -> Result<()> {
    if !(sum.is_finite() && sum >= 1.0) {
        bail!("logits are not finite (softmax normaliser {sum}); the model produced NaN or inf");
    }
    Ok(())
}

/// Higher probability first, then lower id: the ranking every truncation rule cuts.
fn by_weight_desc(a: &Weighted, b: &Weighted) -> std::cmp::Ordering {
    b.0.total_cmp(&a.0).then(a.1.cmp(&b.1))
}

/// Inverse-CDF draw: the first token whose cumulative weight exceeds `threshold`.
fn pick(pairs: impl Iterator<Item = Weighted>, threshold: f64) -> u32 {
    let mut cum = 0.0f64;
    let mut last = 0;
    for (w, i) in pairs {
        if w <= 0.0 {
            continue;
        }
        cum += f64::from(w);
        last = i;
        if cum > threshold {
            return i;
        }
    }
    // Rounding left `threshold` at the very top: fall back to the last token with weight.
    last
}

#[cfg(test)]
mod tests {
    use super::*;

    fn proc(t: f64, k: usize, p: f64, m: f64) -> LogitsProcessor {
        LogitsProcessor::new(t, k, p, m).unwrap()
    }

    #[test]
    fn greedy_takes_first_argmax_and_reports_t1_logprob() {
        let logits = [1.0f32, 3.0, 3.0, -2.0];
        let mut rng = row_rng(0, 0, 0);
        let s = proc(0.0, 0, 1.0, 0.0).sample(&logits, &mut rng).unwrap();
        assert_eq!(s.token, 1);
        let z: f64 = logits.iter().map(|&x| f64::from(x).exp()).sum();
        assert!((f64::from(s.logprob) - (3.0 - z.ln())).abs() < 1e-6);
    }

    #[test]
    fn logprob_is_under_full_tempered_distribution_not_truncated() {
        let logits = [2.0f32, 1.0, 0.5, -1.0, 0.0];
        let p = proc(0.7, 2, 1.0, 0.0);
        let mut rng = row_rng(3, 1, 2);
        for _ in 0..20 {
            let s = p.sample(&logits, &mut rng).unwrap();
            assert!(s.token == 0 || s.token == 1);
            let z: f64 = logits.iter().map(|&x| (f64::from(x) / 0.7).exp()).sum();
            let expect = f64::from(logits[s.token as usize]) / 0.7 - z.ln();
            assert!((f64::from(s.logprob) - expect).abs() < 1e-5);
        }
    }

    #[test]
    fn truncation_sets() {
        // probs at T=1 ∝ exp(logits): 0.4, 0.3, 0.2, 0.1 (exactly, by construction)
        let logits: Vec<f32> = [0.4f64, 0.3, 0.2, 0.1]
            .iter()
            .map(|p| p.ln() as f32)
            .collect();
        let ids = |d: Vec<(u32, f64)>| d.into_iter().map(|(i, _)| i).collect::<Vec<_>>();
        assert_eq!(
            ids(proc(1.0, 0, 1.0, 0.0).distribution(&logits).unwrap()),
            [0, 1, 2, 3]
        );
        assert_eq!(
            ids(proc(1.0, 2, 1.0, 0.0).distribution(&logits).unwrap()),
            [0, 1]
        );
        // top_p 0.65: 0.4 < 0.65, 0.7 >= 0.65 -> two tokens
        assert_eq!(
            ids(proc(1.0, 0, 0.65, 0.0).distribution(&logits).unwrap()),
            [0, 1]
        );
        // top_p 0.75 -> three tokens
        assert_eq!(
            ids(proc(1.0, 0, 0.75, 0.0).distribution(&logits).unwrap()),
            [0, 1, 2]
        );
        // top_k 3 renormalises to 4/9, 3/9, 2/9; top_p 0.7 -> 7/9 >= 0.7 after two
        assert_eq!(
            ids(proc(1.0, 3, 0.7, 0.0).distribution(&logits).unwrap()),
            [0, 1]
        );
        // min_p 0.5: keep p >= 0.2
        let d = proc(1.0, 0, 1.0, 0.5).distribution(&logits).unwrap();
        assert_eq!(ids(d.clone()), [0, 1, 2]);
        assert!((d[0].1 - 0.4 / 0.9).abs() < 1e-6);
        // tiny top_p keeps exactly one token
        assert_eq!(
            ids(proc(1.0, 0, 0.01, 0.0).distribution(&logits).unwrap()),
            [0]
        );
    }

    #[test]
    fn top_p_grows_past_initial_head_on_flat_vocab() {
        let logits: Vec<f32> = (0..1000).map(|i| -(i as f32) * 1e-4).collect();
        let d = proc(1.0, 0, 0.5, 0.0).distribution(&logits).unwrap();
        // The smallest prefix holding half the mass (the head tokens are slightly heavier).
        let w: Vec<f64> = logits.iter().map(|&x| f64::from(x).exp()).collect();
        let total: f64 = w.iter().sum();
        let mut cum = 0.0;
        let n = w
            .iter()
            .position(|&x| {
                cum += x;
                cum >= 0.5 * total
            })
            .unwrap()
            + 1;
        assert!(n > 256, "the case must need several head expansions");
        assert_eq!(d.len(), n);
        let ids: Vec<u32> = d.iter().map(|&(i, _)| i).collect();
        assert_eq!(ids, (0..d.len() as u32).collect::<Vec<_>>());
        // min_p alone must also look past the first head of 64 tokens.
        assert_eq!(
            proc(1.0, 0, 1.0, 0.5).distribution(&logits).unwrap().len(),
            1000
        );
        assert_eq!(
            proc(1.0, 100, 1.0, 0.5)
                .distribution(&logits)
                .unwrap()
                .len(),
            100
        );
    }

    /// Sort-based reference of the kept set, straight from HF's definitions.
    fn reference_set(logits: &[f32], t: f64, k: usize, top_p: f64, min_p: f64) -> Vec<u32> {
        let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let w32: Vec<f32> = logits
            .iter()
            .map(|&x| ((x - max) * (1.0 / t) as f32).exp())
            .collect();
        let mut order: Vec<u32> = (0..logits.len() as u32).collect();
        order.sort_by(|&a, &b| w32[b as usize].total_cmp(&w32[a as usize]).then(a.cmp(&b)));
        let w: Vec<f64> = w32.iter().map(|&x| f64::from(x)).collect();
        let k = if k == 0 {
            order.len()
        } else {
            k.min(order.len())
        };
        let top: Vec<u32> = order[..k].to_vec();
        let z: f64 = top.iter().map(|&i| w[i as usize]).sum();
        let mut before = 0.0;
        let mut kept = Vec::new();
        for &i in &top {
            if !kept.is_empty() && top_p < 1.0 && before >= top_p * z {
                break;
            }
            before += w[i as usize];
            kept.push(i);
        }
        kept.retain(|&i| w[i as usize] as f32 >= min_p as f32);
        kept.sort_unstable();
        kept
    }

    #[test]
    fn kept_set_matches_sorting_reference() {
        let mut rng = row_rng(42, 0, 0);
        for case in 0..300 {
            let vocab = 1 + (rng.random::<u32>() % 3000) as usize;
            let scale = [0.01f32, 1.0, 8.0][case % 3];
            let logits: Vec<f32> = (0..vocab)
                .map(|_| (rng.random::<f32>() - 0.5) * scale)
                .collect();
            let t = [0.5, 1.0, 1.5][(case / 3) % 3];
            let k = [0, 1, 7, 50, 5000][case % 5];
            let top_p = [1.0, 0.9, 0.5, 0.99, 0.1, 0.95, 0.7][case % 7];
            let min_p = [0.0, 0.0, 0.05, 0.5][case % 4];
            let mut d: Vec<u32> = proc(t, k, top_p, min_p)
                .distribution(&logits)
                .unwrap()
                .into_iter()
                .map(|(i, _)| i)
                .collect();
            d.sort_unstable();
            assert_eq!(
                d,
                reference_set(&logits, t, k, top_p, min_p),
                "case {case}: vocab {vocab} t {t} k {k} p {top_p} min_p {min_p}"
            );
        }
    }

    #[test]
    fn fast_exp_matches_libm() {
        let mut worst = 0.0f64;
        for i in 0..=200_000 {
            let x = -87.0 * i as f32 / 200_000.0;
            let exact = f64::from(x).exp();
            let rel = (f64::from(exp_nonpositive(x)) - exact).abs() / exact;
            worst = worst.max(rel);
        }
        assert!(worst < 3e-7, "worst relative error {worst}");
        assert_eq!(exp_nonpositive(0.0), 1.0);
        assert_eq!(exp_nonpositive(-1e4), 0.0);
        assert!(exp_nonpositive(f32::NAN).is_nan());
        assert_eq!(exp_nonpositive(f32::NEG_INFINITY), 0.0);
    }

    #[test]
    fn rejects_bad_settings_and_nan() {
        assert!(LogitsProcessor::new(-1.0, 0, 1.0, 0.0).is_err());
        assert!(LogitsProcessor::new(1.0, 0, 0.0, 0.0).is_err());
        assert!(LogitsProcessor::new(1.0, 0, 1.0, 1.5).is_err());
        let mut rng = row_rng(0, 0, 0);
        assert!(proc(1.0, 0, 1.0, 0.0)
            .sample(&[f32::NAN, 1.0], &mut rng)
            .is_err());
    }

    #[test]
    fn row_rng_depends_on_all_three_keys() {
        let draw = |s, p, i| row_rng(s, p, i).random::<u64>();
        assert_ne!(draw(1, 0, 0), draw(1, 0, 1));
        assert_ne!(draw(1, 0, 1), draw(1, 1, 0));
        assert_ne!(draw(1, 0, 0), draw(2, 0, 0));
        assert_eq!(draw(5, 6, 7), draw(5, 6, 7));
    }
}
