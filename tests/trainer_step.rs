//! A real training step equals the definitions: the trainer's own credit assignment
//! (`credit::assign`: advantages, masks, |λ|, coefficients) and its own micro-batch loop
//! (`update::accumulate`: forward, loss, backward, gradients summed over micro-batches) give the
//! loss and gradient of `reference_loss` built from `docs/lambda-grpo.md` (§2 advantages by
//! hand, §5 |λ| by brute force, §4/§6 coefficients), for 1 and for 4 micro-batches.
//!
//! The batch has shared prefixes (so |λ| > 1), identical completions, a truncated completion
//! masked out of the loss, and β > 0 against a reference that differs from the policy. The
//! parameter gradient of the reference is `Σ_{i,t} ∂L/∂logp_{i,t} · ∂logp_{i,t}/∂θ`, taken by
//! backpropagating the reference's `∂L/∂logp` through the model's log-probs.

mod common;

use candle_core::{DType, Device, Tensor, Var};
use common::fixture;
use grpo::config::{LossSection, LossType, ProcessWeighting, SharePrefixes};
use grpo::model::Policy;
use grpo::trainer::credit::{assign, CreditSettings};
use grpo::trainer::loss::{
    reference_loss, token_coefficients, Advantage, LossParams, SeqLayout, SeqTerms,
};
use grpo::trainer::rollout::pack;
use grpo::trainer::update::{
    accumulate, completion_logprobs, FrozenLogprobs, LossSettings, UpdateBatch,
};

const G: usize = 4;
const MAX_LEN: usize = 6;
const TEMPERATURE: f64 = 0.8;
const P: LossParams = LossParams {
    epsilon_low: 0.2,
    epsilon_high: 0.28,
    beta: 0.04,
};

fn prompts() -> Vec<Vec<u32>> {
    let a = vec![5, 17, 42, 7];
    let b = vec![9, 8];
    vec![
        a.clone(),
        a.clone(),
        a.clone(),
        a,
        b.clone(),
        b.clone(),
        b.clone(),
        b,
    ]
}

fn completions() -> Vec<Vec<u32>> {
    vec![
        vec![30, 31, 32, 33, 2],
        vec![30, 31, 40, 2],
        vec![30, 31, 32, 50, 51, 52], // cut at MAX_LEN: truncated, masked
        vec![60, 2],
        vec![70, 71, 2],
        vec![70, 71, 2], // identical to the one before: |λ| = 2 throughout
        vec![70, 80, 81, 2],
        vec![90, 91, 92, 2],
    ]
}

const REWARDS: [f64; 8] = [1.0, 0.0, 1.0, 0.0, 1.0, 1.0, 0.0, 0.5];
const TRUNCATED: [bool; 8] = [false, false, true, false, false, false, false, false];

/// §2: `(r − group mean) / (sample std + 1e-4)`.
fn advantages_by_hand() -> Vec<f64> {
    REWARDS
        .chunks(G)
        .flat_map(|g| {
            let mean = g.iter().sum::<f64>() / G as f64;
            let var = g.iter().map(|r| (r - mean).powi(2)).sum::<f64>() / (G - 1) as f64;
            g.iter()
                .map(move |r| (r - mean) / (var.sqrt() + 1e-4))
                .collect::<Vec<_>>()
        })
        .collect()
}

/// §5 over the counted completions: a masked one has length 0 and joins no set.
fn lambda_by_definition(counted: &[bool]) -> Vec<Vec<u32>> {
    let c = completions();
    (0..c.len())
        .map(|i| {
            let group = (i / G) * G..(i / G + 1) * G;
            (0..c[i].len())
                .map(|t| {
                    if !counted[i] {
                        return 0;
                    }
                    group
                        .clone()
                        .filter(|&j| counted[j] && c[j].len() > t && c[j][..=t] == c[i][..=t])
                        .count() as u32
                })
                .collect()
        })
        .collect()
}

fn rows(t: &Tensor, lens: &[usize]) -> Vec<Vec<f64>> {
    let v = t.to_dtype(DType::F64).unwrap().to_vec2::<f64>().unwrap();
    v.iter().zip(lens).map(|(r, &n)| r[..n].to_vec()).collect()
}

fn models() -> (Policy, Policy) {
    let policy = Policy::load(&fixture("tiny-qwen2"), DType::F32, &Device::Cpu).unwrap();
    // A reference that differs from the policy, so the KL term and its gradient are not 0.
    let reference = Policy::load(&fixture("tiny-qwen2"), DType::F32, &Device::Cpu).unwrap();
    for (name, var) in reference.named_vars() {
        if name.ends_with("mlp.up_proj.weight") {
            var.set(&(var.as_tensor() * 1.1).unwrap()).unwrap();
        }
    }
    (policy, reference)
}

/// The trainer's loss and per-variable gradients for the batch cut into `num_micro` parts.
fn trainer_step(
    policy: &Policy,
    reference: &Policy,
    vars: &[Var],
    loss_type: LossType,
    num_micro: usize,
) -> (f64, Vec<Tensor>) {
    let prompts = prompts();
    let completions = completions();
    let p: Vec<&[u32]> = prompts.iter().map(|v| v.as_slice()).collect();
    let c: Vec<&[u32]> = completions.iter().map(|v| v.as_slice()).collect();
    let micro_batch = c.len() / num_micro;
    let loss = LossSection {
        loss_type,
        mask_truncated_completions: true,
        ..LossSection::default()
    };
    let settings = CreditSettings {
        loss: &loss,
        resolved: loss.resolved().unwrap(),
        group_size: G,
        max_completion_length: MAX_LEN,
        micro_batch,
    };
    let credit = assign(&settings, &c, &TRUNCATED, &REWARDS).unwrap();
    let batch = UpdateBatch {
        prompts: &p,
        completions: &c,
        advantages: &credit.advantages,
        coefficients: &credit.coefficients,
        micro_batch,
        pad: 0,
        sampler_logprobs: None,
        share: SharePrefixes::Tree,
    };
    let loss_settings = LossSettings {
        temperature: TEMPERATURE,
        epsilon_low: P.epsilon_low,
        epsilon_high: P.epsilon_high,
        beta: P.beta,
        vocab_bias: None,
        policy: None,
    };
    let pass = accumulate(
        policy,
        Some(reference),
        vars,
        &batch,
        &loss_settings,
        &mut FrozenLogprobs::default(),
    )
    .unwrap();
    (pass.loss, pass.grads)
}

/// `reference_loss` on the model's log-probs, and its gradient chained through the model.
fn reference_step(
    policy: &Policy,
    reference: &Policy,
    vars: &[Var],
    loss_type: LossType,
    weighting: ProcessWeighting,
) -> (f64, Vec<Tensor>) {
    let prompts = prompts();
    let completions = completions();
    let p: Vec<&[u32]> = prompts.iter().map(|v| v.as_slice()).collect();
    let c: Vec<&[u32]> = completions.iter().map(|v| v.as_slice()).collect();
    let lens: Vec<usize> = c.iter().map(|x| x.len()).collect();
    let packed = pack(&p, &c, 0, &Device::Cpu).unwrap();
    let (logp_t, _) = completion_logprobs(policy, &packed, TEMPERATURE, None).unwrap();
    let (ref_t, _) = completion_logprobs(reference, &packed, TEMPERATURE, None).unwrap();
    let logp = rows(&logp_t, &lens);
    let refl = rows(&ref_t, &lens);

    let counted: Vec<bool> = TRUNCATED.iter().map(|t| !t).collect();
    let lambda = lambda_by_definition(&counted);
    assert_eq!(lambda[1], vec![2, 2, 1, 1], "the prefix 30 31 is shared");
    assert_eq!(
        lambda[0][..3],
        [2, 2, 1],
        "the masked completion joins no set"
    );
    let masks: Vec<Vec<bool>> = c
        .iter()
        .zip(&counted)
        .map(|(x, &k)| vec![k; x.len()])
        .collect();
    let layouts: Vec<SeqLayout> = masks
        .iter()
        .zip(&lambda)
        .map(|(m, l)| SeqLayout {
            mask: m,
            lambda_sizes: Some(l),
            micro_batch: 0,
        })
        .collect();
    let coef =
        token_coefficients(&layouts, loss_type.resolve(weighting).unwrap(), MAX_LEN).unwrap();
    let adv = advantages_by_hand();
    let terms: Vec<SeqTerms> = (0..c.len())
        .map(|i| SeqTerms {
            logp: &logp[i],
            old_logp: &logp[i],
            ref_logp: Some(&refl[i]),
            advantage: Advantage::Sequence(adv[i]),
        })
        .collect();
    let want = reference_loss(&terms, &coef, &P).unwrap();

    // ∂L/∂θ = Σ ∂L/∂logp · ∂logp/∂θ: backpropagate the reference's ∂L/∂logp through the model.
    let width = packed.completion_len;
    let mut g = vec![0f32; c.len() * width];
    for (i, row) in want.grad_logp.iter().enumerate() {
        for (t, &x) in row.iter().enumerate() {
            g[i * width + t] = x as f32;
        }
    }
    let g = Tensor::from_vec(g, (c.len(), width), &Device::Cpu).unwrap();
    let surrogate = (logp_t * g).unwrap().sum_all().unwrap();
    let store = surrogate.backward().unwrap();
    let grads = vars
        .iter()
        .map(|v| match store.get(v.as_tensor()) {
            Some(g) => g.clone(),
            None => v.as_tensor().zeros_like().unwrap(),
        })
        .collect();
    (want.value, grads)
}

/// ‖a − b‖ / max(‖b‖, tiny) per variable, the largest over variables.
fn worst_relative_error(a: &[Tensor], b: &[Tensor]) -> f64 {
    let norm = common::l2_norm;
    a.iter()
        .zip(b)
        .map(|(x, y)| norm(&(x - y).unwrap()) / norm(y).max(1e-12))
        .fold(0.0, f64::max)
}

#[test]
fn a_training_step_equals_the_reference_loss_for_1_and_4_micro_batches() {
    let (policy, reference) = models();
    let vars: Vec<Var> = policy.named_vars().into_iter().map(|(_, v)| v).collect();
    for (loss_type, weighting) in [
        (LossType::LambdaGrpo, ProcessWeighting::Lambda),
        (LossType::Grpo, ProcessWeighting::None),
        (LossType::DrGrpo, ProcessWeighting::None),
    ] {
        let (want_loss, want_grads) =
            reference_step(&policy, &reference, &vars, loss_type, weighting);
        assert!(
            want_loss.abs() > 1e-4,
            "{loss_type:?}: a loss worth checking"
        );
        let grad_norm: f64 = want_grads
            .iter()
            .map(|g| {
                g.sqr()
                    .unwrap()
                    .sum_all()
                    .unwrap()
                    .to_scalar::<f32>()
                    .unwrap() as f64
            })
            .sum::<f64>()
            .sqrt();
        assert!(grad_norm > 1e-3, "{loss_type:?}: gradient {grad_norm}");
        for num_micro in [1, 4] {
            let (loss, grads) = trainer_step(&policy, &reference, &vars, loss_type, num_micro);
            assert!(
                (loss - want_loss).abs() <= 1e-5 * want_loss.abs().max(1.0),
                "{loss_type:?}, {num_micro} micro-batches: loss {loss} vs reference {want_loss}"
            );
            let err = worst_relative_error(&grads, &want_grads);
            assert!(
                err < 1e-4,
                "{loss_type:?}, {num_micro} micro-batches: gradient off by {err:e} (relative)"
            );
        }
    }
}

#[test]
fn bnpo_gives_one_gradient_for_1_and_k_equal_micro_batches() {
    // Two micro-batches with the same token counts (the second group repeats the first's
    // shapes): TRL's bnpo divides by the number of micro-batches, so the gradient is that of
    // one micro-batch holding both (= dapo), not twice it.
    let (policy, reference) = models();
    let vars: Vec<Var> = policy.named_vars().into_iter().map(|(_, v)| v).collect();
    let prompts: Vec<Vec<u32>> = (0..8).map(|i| vec![5, 17 + (i / 4) as u32]).collect();
    let completions: Vec<Vec<u32>> = (0..8)
        .map(|i| match i % 4 {
            0 => vec![30, 31, 2],
            1 => vec![30, 40, 41, 2],
            2 => vec![50, 2],
            _ => vec![60, 61, 62, 63, 2],
        })
        .collect();
    let rewards = [1.0, 0.0, 0.5, 0.0, 0.0, 1.0, 1.0, 0.5];
    let p: Vec<&[u32]> = prompts.iter().map(|v| v.as_slice()).collect();
    let c: Vec<&[u32]> = completions.iter().map(|v| v.as_slice()).collect();
    let run = |loss_type: LossType, micro_batch: usize| {
        let loss = LossSection {
            loss_type,
            ..LossSection::default()
        };
        let settings = CreditSettings {
            loss: &loss,
            resolved: loss.resolved().unwrap(),
            group_size: G,
            max_completion_length: MAX_LEN,
            micro_batch,
        };
        let credit = assign(&settings, &c, &[false; 8], &rewards).unwrap();
        let batch = UpdateBatch {
            prompts: &p,
            completions: &c,
            advantages: &credit.advantages,
            coefficients: &credit.coefficients,
            micro_batch,
            pad: 0,
            sampler_logprobs: None,
            share: SharePrefixes::Tree,
        };
        let s = LossSettings {
            temperature: 1.0,
            epsilon_low: 0.2,
            epsilon_high: 0.2,
            beta: 0.04,
            vocab_bias: None,
            policy: None,
        };
        accumulate(
            &policy,
            Some(&reference),
            &vars,
            &batch,
            &s,
            &mut FrozenLogprobs::default(),
        )
        .unwrap()
    };
    let one = run(LossType::Bnpo, 8);
    let two = run(LossType::Bnpo, 4);
    let dapo = run(LossType::Dapo, 8);
    assert!(
        (one.loss - dapo.loss).abs() < 1e-6,
        "one micro-batch: bnpo = dapo"
    );
    assert!(
        (two.loss - one.loss).abs() < 1e-6 * one.loss.abs().max(1.0),
        "bnpo over 2 equal micro-batches: {} vs {}",
        two.loss,
        one.loss
    );
    let err = worst_relative_error(&two.grads, &one.grads);
    assert!(err < 1e-4, "gradient off by {err:e}");
}

#[test]
fn loss_and_gradient_do_not_depend_on_the_number_of_micro_batches() {
    // What `train.gradient_accumulation_steps = "auto"` relies on: for these losses the step is
    // the same whatever number of micro-batches memory picks (each micro-batch's term is
    // normalised by whole-step counts). Unequal micro-batch token counts (1, 2, 4, 8 parts of
    // a batch with completions of 2 to 6 tokens) make a per-micro-batch normalisation show.
    let (policy, reference) = models();
    let vars: Vec<Var> = policy.named_vars().into_iter().map(|(_, v)| v).collect();
    let norm = |gs: &[Tensor]| -> f64 {
        gs.iter()
            .map(|g| {
                g.sqr()
                    .unwrap()
                    .sum_all()
                    .unwrap()
                    .to_scalar::<f32>()
                    .unwrap() as f64
            })
            .sum::<f64>()
            .sqrt()
    };
    for loss_type in [
        LossType::Dapo,
        LossType::Grpo,
        LossType::DrGrpo,
        LossType::LambdaGrpo,
    ] {
        let (loss1, grads1) = trainer_step(&policy, &reference, &vars, loss_type, 1);
        let norm1 = norm(&grads1);
        assert!(norm1 > 1e-3, "{loss_type:?}: gradient {norm1}");
        for k in [2, 4, 8] {
            let (loss, grads) = trainer_step(&policy, &reference, &vars, loss_type, k);
            assert!(
                (loss - loss1).abs() <= 1e-5 * loss1.abs().max(1.0),
                "{loss_type:?}, {k} micro-batches: loss {loss} vs {loss1}"
            );
            let n = norm(&grads);
            assert!(
                (n - norm1).abs() <= 1e-5 * norm1,
                "{loss_type:?}, {k} micro-batches: grad norm {n} vs {norm1}"
            );
            let err = worst_relative_error(&grads, &grads1);
            assert!(err < 1e-4, "{loss_type:?}, {k}: gradient off by {err:e}");
        }
    }
    // bnpo normalises by each micro-batch's own tokens (TRL's definition): with these unequal
    // micro-batches its loss does change with the split, which is why `auto` warns for it.
    let (b1, _) = trainer_step(&policy, &reference, &vars, LossType::Bnpo, 1);
    let (b4, _) = trainer_step(&policy, &reference, &vars, LossType::Bnpo, 4);
    assert!(
        (b1 - b4).abs() > 1e-6 * b1.abs().max(1e-3),
        "bnpo: {b1} vs {b4}"
    );
}
