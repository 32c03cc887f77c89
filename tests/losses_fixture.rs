//! Reproduces every case of `tests/fixtures/losses.json` (definitions: `src/trainer/loss.rs`;
//! origin: `tests/fixtures/README.md`)
//! and checks the invariants of §5–§6 on it and on random groups.

use anyhow::{Context, Result};
use candle_core::{DType, Device, Tensor, Var};
use grpo::trainer::advantages::{advantages, ScaleRewards};
use grpo::trainer::loss::{
    coefficients_tensor, reference_loss, token_coefficients, token_loss_candle, Advantage,
    LossParams, LossType, ProcessWeighting, SeqLayout, SeqTerms,
};
use grpo::trainer::process_sets::{group_stats, lambda_sizes, ProcessTree};
use proptest::prelude::*;
use serde::Deserialize;

const FIXTURE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/losses.json");
const TOL: f64 = 1e-6;

#[derive(Deserialize)]
struct Fixture {
    std_eps: f64,
    tolerance: f64,
    cases: Vec<Case>,
}

#[derive(Deserialize)]
struct Case {
    name: String,
    group_size: usize,
    completions: Vec<Vec<u32>>,
    rewards: Vec<f64>,
    logp: Vec<Vec<f64>>,
    old_logp: Vec<Vec<f64>>,
    ref_logp: Vec<Vec<f64>>,
    max_completion_length: usize,
    params: Params,
    expected: Expected,
}

#[derive(Deserialize)]
struct Params {
    beta: f64,
    epsilon_low: f64,
    epsilon_high: f64,
    scale_rewards: ScaleRewards,
}

#[derive(Deserialize)]
struct Expected {
    advantages: Vec<f64>,
    lambda_sizes: Vec<Vec<u32>>,
    mc_advantages: Vec<Vec<f64>>,
    group_stats: Vec<ExpectedStats>,
    losses: Losses,
    dapo_loss_with_mc_advantages: f64,
}

#[derive(Deserialize)]
struct ExpectedStats {
    num_process_sets: usize,
    path_depth: Vec<usize>,
    mean_path_depth: f64,
    intermediate_proportion: Vec<f64>,
    mean_intermediate_proportion: f64,
    non_trivial: bool,
    sum_inverse_lambda: f64,
}

#[derive(Deserialize)]
struct Losses {
    grpo: ByWeighting,
    bnpo: ByWeighting,
    dapo: ByWeighting,
    dr_grpo: ByWeighting,
    lambda_grpo: LossCase,
}

#[derive(Deserialize)]
struct ByWeighting {
    none: LossCase,
    lambda: LossCase,
}

#[derive(Deserialize)]
struct LossCase {
    value: f64,
    grad_logp: Vec<Vec<f64>>,
}

fn load() -> Result<Fixture> {
    let text = std::fs::read_to_string(FIXTURE).with_context(|| format!("reading {FIXTURE}"))?;
    serde_json::from_str(&text).with_context(|| format!("parsing {FIXTURE}"))
}

impl Case {
    fn params(&self) -> LossParams {
        LossParams {
            epsilon_low: self.params.epsilon_low,
            epsilon_high: self.params.epsilon_high,
            beta: self.params.beta,
        }
    }

    fn lambda(&self) -> Vec<Vec<u32>> {
        self.completions
            .chunks(self.group_size)
            .flat_map(lambda_sizes)
            .collect()
    }

    fn advantages(&self) -> Vec<f64> {
        advantages(&self.rewards, self.group_size, self.params.scale_rewards).unwrap()
    }

    /// Every (type, weighting, expected) combination of the case, `lambda_grpo` included.
    fn loss_cases(&self) -> Vec<(LossType, ProcessWeighting, &LossCase)> {
        use ProcessWeighting::{Lambda, None};
        let l = &self.expected.losses;
        vec![
            (LossType::Grpo, None, &l.grpo.none),
            (LossType::Grpo, Lambda, &l.grpo.lambda),
            (LossType::Bnpo, None, &l.bnpo.none),
            (LossType::Bnpo, Lambda, &l.bnpo.lambda),
            (LossType::Dapo, None, &l.dapo.none),
            (LossType::Dapo, Lambda, &l.dapo.lambda),
            (LossType::DrGrpo, None, &l.dr_grpo.none),
            (LossType::DrGrpo, Lambda, &l.dr_grpo.lambda),
            (LossType::LambdaGrpo, Lambda, &l.lambda_grpo),
        ]
    }

    /// Coefficients for the whole case; `micro` assigns each completion a micro-batch.
    fn coef(
        &self,
        t: LossType,
        w: ProcessWeighting,
        lambda: &[Vec<u32>],
        micro: impl Fn(usize) -> usize,
    ) -> Vec<Vec<f64>> {
        let masks: Vec<Vec<bool>> = self
            .completions
            .iter()
            .map(|c| vec![true; c.len()])
            .collect();
        let layout: Vec<SeqLayout> = masks
            .iter()
            .zip(lambda)
            .enumerate()
            .map(|(i, (m, l))| SeqLayout {
                mask: m,
                lambda_sizes: Some(l),
                micro_batch: micro(i),
            })
            .collect();
        token_coefficients(&layout, t.resolve(w).unwrap(), self.max_completion_length).unwrap()
    }

    fn terms<'a>(&'a self, adv: &'a [f64], logp: &'a [Vec<f64>]) -> Vec<SeqTerms<'a>> {
        (0..self.completions.len())
            .map(|i| SeqTerms {
                logp: &logp[i],
                old_logp: &self.old_logp[i],
                ref_logp: Some(&self.ref_logp[i]),
                advantage: Advantage::Sequence(adv[i]),
            })
            .collect()
    }
}

fn max_abs_diff(a: &[Vec<f64>], b: &[Vec<f64>]) -> f64 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .flat_map(|(x, y)| {
            assert_eq!(x.len(), y.len());
            x.iter().zip(y).map(|(u, v)| (u - v).abs())
        })
        .fold(0.0, f64::max)
}

#[test]
fn fixture_header() -> Result<()> {
    let f = load()?;
    assert_eq!(f.std_eps, grpo::trainer::advantages::STD_EPS);
    assert_eq!(f.tolerance, TOL);
    assert_eq!(f.cases.len(), 6);
    Ok(())
}

#[test]
fn fixture_advantages() -> Result<()> {
    for c in load()?.cases {
        let a = c.advantages();
        let err = a
            .iter()
            .zip(&c.expected.advantages)
            .map(|(x, y)| (x - y).abs())
            .fold(0.0, f64::max);
        assert!(err < TOL, "{}: advantages off by {err}", c.name);
    }
    Ok(())
}

#[test]
fn fixture_lambda_sizes_and_step_advantages() -> Result<()> {
    for c in load()?.cases {
        assert_eq!(c.lambda(), c.expected.lambda_sizes, "{}", c.name);
        let a = c.advantages();
        let mut mc = Vec::new();
        for (g, ag) in c
            .completions
            .chunks(c.group_size)
            .zip(a.chunks(c.group_size))
        {
            mc.extend(ProcessTree::build(g).step_advantages(ag)?);
        }
        let err = max_abs_diff(&mc, &c.expected.mc_advantages);
        assert!(err < TOL, "{}: step advantages off by {err}", c.name);
    }
    Ok(())
}

#[test]
fn fixture_group_stats() -> Result<()> {
    for c in load()?.cases {
        let groups: Vec<_> = c.completions.chunks(c.group_size).collect();
        assert_eq!(groups.len(), c.expected.group_stats.len());
        for (g, want) in groups.iter().zip(&c.expected.group_stats) {
            let s = group_stats(g);
            assert_eq!(s.num_process_sets, want.num_process_sets, "{}", c.name);
            assert_eq!(s.path_depth, want.path_depth, "{}", c.name);
            assert!((s.mean_path_depth - want.mean_path_depth).abs() < TOL);
            for (x, y) in s
                .intermediate_proportion
                .iter()
                .zip(&want.intermediate_proportion)
            {
                assert!((x - y).abs() < TOL, "{}", c.name);
            }
            assert!(
                (s.mean_intermediate_proportion - want.mean_intermediate_proportion).abs() < TOL
            );
            assert_eq!(s.non_trivial, want.non_trivial, "{}", c.name);
            assert_eq!(s.sum_inverse_lambda, want.sum_inverse_lambda, "{}", c.name);
            // Σ 1/|λ| computed from the sizes = number of distinct prefixes (§6 property).
            let direct: f64 = lambda_sizes(g)
                .iter()
                .flatten()
                .map(|&l| 1.0 / f64::from(l))
                .sum();
            assert!(
                (direct - want.sum_inverse_lambda).abs() < 1e-9,
                "{}",
                c.name
            );
            let tokens: u64 = s.lambda_histogram.iter().sum();
            assert_eq!(tokens as usize, g.iter().map(|y| y.len()).sum::<usize>());
        }
    }
    Ok(())
}

#[test]
fn fixture_losses_f64() -> Result<()> {
    let mut worst: f64 = 0.0;
    for c in load()?.cases {
        let lambda = c.lambda();
        let adv = c.advantages();
        let terms = c.terms(&adv, &c.logp);
        for (t, w, want) in c.loss_cases() {
            let coef = c.coef(t, w, &lambda, |_| 0);
            let got = reference_loss(&terms, &coef, &c.params())?;
            let ev = (got.value - want.value).abs();
            let eg = max_abs_diff(&got.grad_logp, &want.grad_logp);
            assert!(
                ev < TOL && eg < TOL,
                "{} {t:?}/{w:?}: value {ev}, grad {eg}",
                c.name
            );
            worst = worst.max(ev).max(eg);
        }
    }
    eprintln!("max error vs losses.json (f64): {worst:e}");
    Ok(())
}

/// The gradient of the f64 reference also matches central finite differences of its value.
#[test]
fn reference_gradient_matches_finite_differences() -> Result<()> {
    let f = load()?;
    let c = f
        .cases
        .iter()
        .find(|c| c.name == "two_groups_clipped_kl")
        .context("case")?;
    let lambda = c.lambda();
    let adv = c.advantages();
    let coef = c.coef(
        LossType::LambdaGrpo,
        ProcessWeighting::Lambda,
        &lambda,
        |_| 0,
    );
    let base = reference_loss(&c.terms(&adv, &c.logp), &coef, &c.params())?;
    let h = 1e-6;
    for i in 0..c.logp.len() {
        for t in 0..c.logp[i].len() {
            let mut up = c.logp.clone();
            up[i][t] += h;
            let mut dn = c.logp.clone();
            dn[i][t] -= h;
            let lu = reference_loss(&c.terms(&adv, &up), &coef, &c.params())?.value;
            let ld = reference_loss(&c.terms(&adv, &dn), &coef, &c.params())?.value;
            let fd = (lu - ld) / (2.0 * h);
            assert!((fd - base.grad_logp[i][t]).abs() < 1e-7, "{i},{t}: fd {fd}");
        }
    }
    Ok(())
}

#[test]
fn fixture_theorem1_mc_advantages() -> Result<()> {
    for c in load()?.cases {
        let adv = c.advantages();
        let mut mc = Vec::new();
        for (g, ag) in c
            .completions
            .chunks(c.group_size)
            .zip(adv.chunks(c.group_size))
        {
            mc.extend(ProcessTree::build(g).step_advantages(ag)?);
        }
        let lambda = c.lambda();
        let coef = c.coef(LossType::Dapo, ProcessWeighting::None, &lambda, |_| 0);
        let terms: Vec<SeqTerms> = (0..c.completions.len())
            .map(|i| SeqTerms {
                logp: &c.logp[i],
                old_logp: &c.old_logp[i],
                ref_logp: Some(&c.ref_logp[i]),
                advantage: Advantage::Token(&mc[i]),
            })
            .collect();
        let got = reference_loss(&terms, &coef, &c.params())?.value;
        let want = c.expected.dapo_loss_with_mc_advantages;
        assert!((got - want).abs() < TOL, "{}: {got} vs {want}", c.name);
        // Theorem 1: equal to the plain dapo loss when old == logp (μ = 1).
        if c.old_logp == c.logp {
            assert!(
                (got - c.expected.losses.dapo.none.value).abs() < 1e-12,
                "{}",
                c.name
            );
        }
    }
    Ok(())
}

#[test]
fn fixture_losses_candle_f32() -> Result<()> {
    let dev = Device::Cpu;
    let mut worst: f64 = 0.0;
    for c in load()?.cases {
        let lambda = c.lambda();
        let adv = c.advantages();
        let r = c.completions.len();
        let width = c.completions.iter().map(Vec::len).max().unwrap_or(0);
        let pad = |x: &[Vec<f64>]| -> Result<Tensor> {
            let mut flat = vec![0f32; r * width];
            for (i, row) in x.iter().enumerate() {
                for (t, &v) in row.iter().enumerate() {
                    flat[i * width + t] = v as f32;
                }
            }
            Ok(Tensor::from_vec(flat, (r, width), &dev)?)
        };
        let old = pad(&c.old_logp)?;
        let refl = pad(&c.ref_logp)?;
        let adv_t = Tensor::from_vec(adv.iter().map(|&a| a as f32).collect::<Vec<_>>(), r, &dev)?;
        let p = c.params();
        for (t, w, want) in c.loss_cases() {
            let coef = c.coef(t, w, &lambda, |_| 0);
            let coef_t = coefficients_tensor(&coef, width, DType::F32, &dev)?;
            let var = Var::from_tensor(&pad(&c.logp)?)?;
            let (loss, stats) = token_loss_candle(
                var.as_tensor(),
                &old,
                Some(&refl),
                &adv_t,
                &coef_t,
                p.epsilon_low,
                p.epsilon_high,
                p.beta,
            )?;
            let ev = (f64::from(loss.to_scalar::<f32>()?) - want.value).abs();
            let grads = loss.backward()?;
            let g = grads
                .get(var.as_tensor())
                .context("no gradient for logp")?
                .to_vec2::<f32>()?;
            let g: Vec<Vec<f64>> = g
                .iter()
                .zip(&c.completions)
                .map(|(row, y)| row[..y.len()].iter().map(|&v| f64::from(v)).collect())
                .collect();
            let eg = max_abs_diff(&g, &want.grad_logp);
            assert!(
                ev < 1e-5 && eg < 1e-5,
                "{} {t:?}/{w:?}: value {ev}, grad {eg}",
                c.name
            );
            worst = worst.max(ev).max(eg);
            let total: usize = c.completions.iter().map(Vec::len).sum();
            assert_eq!(stats.tokens, total as f64);
            let ref_stats = reference_loss(&c.terms(&adv, &c.logp), &coef, &p)?.stats;
            assert_eq!(stats.clipped_low, ref_stats.clipped_low, "{}", c.name);
            assert_eq!(stats.clipped_high, ref_stats.clipped_high, "{}", c.name);
            assert!((stats.kl_sum - ref_stats.kl_sum).abs() < 1e-5);
        }
    }
    eprintln!("max error vs losses.json (candle f32): {worst:e}");
    Ok(())
}

/// The clipping case really exercises both clipped regions (else the clip tests prove nothing).
#[test]
fn fixture_clipping_case_clips() -> Result<()> {
    let f = load()?;
    let c = f
        .cases
        .iter()
        .find(|c| c.name == "two_groups_clipped_kl")
        .context("case")?;
    let adv = c.advantages();
    let lambda = c.lambda();
    let coef = c.coef(LossType::Dapo, ProcessWeighting::None, &lambda, |_| 0);
    let s = reference_loss(&c.terms(&adv, &c.logp), &coef, &c.params())?.stats;
    assert!(s.clipped_low + s.clipped_high > 0.0, "{s:?}");
    assert!(s.clip_fraction() < 1.0);
    Ok(())
}

#[test]
fn fixture_micro_batch_split_independence() -> Result<()> {
    for c in load()?.cases {
        let lambda = c.lambda();
        let adv = c.advantages();
        let terms = c.terms(&adv, &c.logp);
        for (t, w) in [
            (LossType::Grpo, ProcessWeighting::None),
            (LossType::Grpo, ProcessWeighting::Lambda),
            (LossType::Dapo, ProcessWeighting::None),
            (LossType::DrGrpo, ProcessWeighting::None),
            (LossType::DrGrpo, ProcessWeighting::Lambda),
            (LossType::LambdaGrpo, ProcessWeighting::Lambda),
        ] {
            let whole = c.coef(t, w, &lambda, |_| 0);
            let split = c.coef(t, w, &lambda, |i| i % 3);
            assert_eq!(whole, split, "{} {t:?}", c.name);
            // Summing per-micro-batch losses gives the whole-step loss and gradient.
            let p = c.params();
            let full = reference_loss(&terms, &whole, &p)?;
            let mut sum = 0.0;
            let mut grad = vec![Vec::new(); terms.len()];
            for mb in 0..3 {
                let idx: Vec<usize> = (0..terms.len()).filter(|i| i % 3 == mb).collect();
                let tm: Vec<SeqTerms> = idx.iter().map(|&i| terms[i]).collect();
                let cm: Vec<Vec<f64>> = idx.iter().map(|&i| split[i].clone()).collect();
                let part = reference_loss(&tm, &cm, &p)?;
                sum += part.value;
                for (k, &i) in idx.iter().enumerate() {
                    grad[i] = part.grad_logp[k].clone();
                }
            }
            assert!((sum - full.value).abs() < 1e-12);
            assert!(max_abs_diff(&grad, &full.grad_logp) < 1e-15);
        }
        // bnpo normalises per micro-batch: splitting changes it unless every part has equal tokens.
        let whole = c.coef(LossType::Bnpo, ProcessWeighting::None, &lambda, |_| 0);
        let split = c.coef(LossType::Bnpo, ProcessWeighting::None, &lambda, |i| i % 2);
        let dapo = c.coef(LossType::Dapo, ProcessWeighting::None, &lambda, |i| i % 2);
        assert_eq!(whole, dapo, "{}: one micro-batch bnpo = dapo", c.name);
        let tokens = |p: usize| -> usize {
            c.completions
                .iter()
                .enumerate()
                .filter(|(i, _)| i % 2 == p)
                .map(|(_, y)| y.len())
                .sum()
        };
        if tokens(0) != tokens(1) {
            assert_ne!(whole, split, "{}", c.name);
        }
    }
    Ok(())
}

#[test]
fn no_shared_first_tokens_lambda_equals_dapo_exactly() -> Result<()> {
    let f = load()?;
    let c = f
        .cases
        .iter()
        .find(|c| c.name == "no_shared_prefix")
        .context("case")?;
    let lambda = c.lambda();
    assert!(lambda.iter().flatten().all(|&l| l == 1));
    let adv = c.advantages();
    let terms = c.terms(&adv, &c.logp);
    let p = c.params();
    let a = reference_loss(
        &terms,
        &c.coef(LossType::Dapo, ProcessWeighting::None, &lambda, |_| 0),
        &p,
    )?;
    let b = reference_loss(
        &terms,
        &c.coef(
            LossType::LambdaGrpo,
            ProcessWeighting::Lambda,
            &lambda,
            |_| 0,
        ),
        &p,
    )?;
    assert_eq!(a.value, b.value);
    assert_eq!(a.grad_logp, b.grad_logp);
    Ok(())
}

#[test]
fn identical_completions_only_kl_is_left() -> Result<()> {
    let f = load()?;
    let c = f
        .cases
        .iter()
        .find(|c| c.name == "identical_completions")
        .context("case")?;
    let g = c.group_size;
    assert!(c.lambda().iter().flatten().all(|&l| l as usize == g));
    assert!(c.advantages().iter().all(|&a| a == 0.0));
    // §6: the λ-GRPO loss is β·Σ k3 / (G·Σ|y_i|).
    let k3: f64 = c
        .logp
        .iter()
        .zip(&c.ref_logp)
        .flat_map(|(l, r)| l.iter().zip(r).map(|(l, r)| (r - l).exp() - (r - l) - 1.0))
        .sum();
    let total: usize = c.completions.iter().map(Vec::len).sum();
    let want = c.params.beta * k3 / (g as f64 * total as f64);
    assert!((c.expected.losses.lambda_grpo.value - want).abs() < 1e-12);
    let lambda = c.lambda();
    let adv = c.advantages();
    let coef = c.coef(
        LossType::LambdaGrpo,
        ProcessWeighting::Lambda,
        &lambda,
        |_| 0,
    );
    let got = reference_loss(&c.terms(&adv, &c.logp), &coef, &c.params())?.value;
    assert!((got - want).abs() < 1e-12);
    Ok(())
}

/// Random group: small alphabet so that prefixes are often shared; lengths 0..8.
fn group_strategy() -> impl Strategy<Value = Vec<Vec<u32>>> {
    prop::collection::vec(prop::collection::vec(0u32..3, 0..8), 1..8)
}

fn brute_lambda(group: &[Vec<u32>]) -> Vec<Vec<u32>> {
    group
        .iter()
        .map(|yi| {
            (0..yi.len())
                .map(|t| {
                    group
                        .iter()
                        .filter(|yj| yj.len() > t && yj[..=t] == yi[..=t])
                        .count() as u32
                })
                .collect()
        })
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig { failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn trie_matches_definition(group in group_strategy()) {
        let tree = ProcessTree::build(&group);
        let sizes = tree.lambda_sizes();
        prop_assert_eq!(&sizes, &brute_lambda(&group));
        // Σ 1/|λ| = distinct non-empty prefixes.
        let mut prefixes = std::collections::HashSet::new();
        for y in &group {
            for t in 1..=y.len() {
                prefixes.insert(y[..t].to_vec());
            }
        }
        let s = tree.stats();
        let inv: f64 = sizes.iter().flatten().map(|&l| 1.0 / f64::from(l)).sum();
        prop_assert!((inv - prefixes.len() as f64).abs() < 1e-9);
        prop_assert_eq!(s.sum_inverse_lambda, prefixes.len() as f64);
        // Process sets = distinct member sets; path depth = distinct sets along a completion.
        let sets = |i: usize, t: usize| -> Vec<usize> {
            (0..group.len()).filter(|&j| group[j].len() > t && group[j][..=t] == group[i][..=t]).collect()
        };
        let mut all = std::collections::HashSet::new();
        for (i, y) in group.iter().enumerate() {
            let mut along = std::collections::HashSet::new();
            for t in 0..y.len() {
                all.insert(sets(i, t));
                along.insert(sets(i, t));
            }
            prop_assert_eq!(s.path_depth[i], along.len());
        }
        prop_assert_eq!(s.num_process_sets, all.len());
        // Every node's members share its tokens at its span.
        for n in &tree.nodes {
            for &j in &n.members {
                prop_assert_eq!(&group[j][n.span()], &n.tokens[..]);
            }
        }
    }

    /// Theorem 1 on random groups: with shared prefixes carrying equal logp/ref (a function of the
    /// prefix) and μ = 1, the dapo loss and gradient-free value with a_i equals that with A_{i,t}.
    #[test]
    fn theorem1_random(group in group_strategy(), seed in 0u64..1000, beta in 0.0f64..0.1) {
        let g = group.len();
        let rewards: Vec<f64> = (0..g).map(|i| ((i as u64 * 7 + seed) % 5) as f64 / 4.0).collect();
        let adv = advantages(&rewards, g, ScaleRewards::Group).unwrap();
        let tree = ProcessTree::build(&group);
        let mc = tree.step_advantages(&adv).unwrap();
        // logp/ref as deterministic functions of the prefix.
        let h = |p: &[u32], salt: u64| -> f64 {
            let mut x = seed ^ salt;
            for &v in p { x = x.wrapping_mul(6364136223846793005).wrapping_add(u64::from(v) + 1); }
            -((x >> 11) as f64 / (1u64 << 53) as f64) * 3.0
        };
        let logp: Vec<Vec<f64>> = group.iter().map(|y| (0..y.len()).map(|t| h(&y[..=t], 1)).collect()).collect();
        let refl: Vec<Vec<f64>> = group.iter().map(|y| (0..y.len()).map(|t| h(&y[..=t], 2)).collect()).collect();
        let masks: Vec<Vec<bool>> = group.iter().map(|y| vec![true; y.len()]).collect();
        let layout: Vec<SeqLayout> = masks.iter().map(|m| SeqLayout { mask: m, lambda_sizes: None, micro_batch: 0 }).collect();
        let coef = token_coefficients(&layout, LossType::Dapo.resolve(ProcessWeighting::None).unwrap(), 8).unwrap();
        let p = LossParams { epsilon_low: 0.2, epsilon_high: 0.2, beta };
        let with_a: Vec<SeqTerms> = (0..g).map(|i| SeqTerms { logp: &logp[i], old_logp: &logp[i], ref_logp: Some(&refl[i]), advantage: Advantage::Sequence(adv[i]) }).collect();
        let with_mc: Vec<SeqTerms> = (0..g).map(|i| SeqTerms { logp: &logp[i], old_logp: &logp[i], ref_logp: Some(&refl[i]), advantage: Advantage::Token(&mc[i]) }).collect();
        let a = reference_loss(&with_a, &coef, &p).unwrap().value;
        let b = reference_loss(&with_mc, &coef, &p).unwrap().value;
        prop_assert!((a - b).abs() < 1e-9, "{} vs {}", a, b);
    }
}
