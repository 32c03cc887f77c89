//! The trainer's `grpo` gradient through the real model equals TRL's formula, checked by
//! finite differences on the tiny-qwen2 fixture in float64.
//!
//! TRL (μ = 1, β = 0): `loss = mean_i( Σ_t −exp(logp − sg(logp))·A_i·m / Σ_t m )`, whose gradient
//! is that of the surrogate `S(θ) = −(1/N) Σ_i A_i/|y_i| Σ_t logp_{i,t}(θ)`. We differentiate `S`
//! numerically and compare with `backward()` of the trainer's loss pipeline. A wrong normaliser,
//! advantage sign or a missing gradient path would be off by far more than the tolerance.

use std::path::PathBuf;

use candle_core::{DType, Device, Tensor};
use grpo::model::Policy;
use grpo::trainer::loss::{
    coefficients_tensor, token_coefficients, token_loss_candle, LossType, ProcessWeighting,
    SeqLayout,
};
use grpo::trainer::process_sets::lambda_sizes;
use grpo::trainer::rollout::pack;
use grpo::trainer::run::completion_logprobs;

mod common;

fn fixture() -> PathBuf {
    common::fixture("tiny-qwen2")
}

struct Batch {
    prompts: Vec<Vec<u32>>,
    completions: Vec<Vec<u32>>,
    adv: Vec<f64>,
}

fn batch() -> Batch {
    // Two groups of three; completions share prefixes and have different lengths.
    Batch {
        prompts: vec![
            vec![5, 17, 42],
            vec![5, 17, 42],
            vec![5, 17, 42],
            vec![9, 8],
            vec![9, 8],
            vec![9, 8],
        ],
        completions: vec![
            vec![30, 31, 32, 33],
            vec![30, 31, 40],
            vec![50, 51],
            vec![60, 61, 62],
            vec![60, 70],
            vec![60, 61, 62, 63, 64],
        ],
        adv: vec![0.9, -0.3, -0.6, 1.1, -0.2, -0.9],
    }
}

/// S(θ) from the current parameters, in f64.
fn surrogate(policy: &Policy, b: &Batch) -> f64 {
    let p: Vec<&[u32]> = b.prompts.iter().map(|v| v.as_slice()).collect();
    let c: Vec<&[u32]> = b.completions.iter().map(|v| v.as_slice()).collect();
    let packed = pack(&p, &c, 0, &Device::Cpu).unwrap();
    let (logp, _) = completion_logprobs(policy, &packed, 1.0, None).unwrap();
    let logp = logp.to_dtype(DType::F64).unwrap().to_vec2::<f64>().unwrap();
    let n = b.completions.len() as f64;
    let mut s = 0.0;
    for (i, comp) in b.completions.iter().enumerate() {
        let sum: f64 = logp[i][..comp.len()].iter().sum();
        s -= b.adv[i] / comp.len() as f64 * sum / n;
    }
    s
}

#[test]
fn grpo_gradient_matches_trl_by_finite_differences() {
    let policy = Policy::load(&fixture(), DType::F64, &Device::Cpu).unwrap();
    let b = batch();
    let p: Vec<&[u32]> = b.prompts.iter().map(|v| v.as_slice()).collect();
    let c: Vec<&[u32]> = b.completions.iter().map(|v| v.as_slice()).collect();
    let packed = pack(&p, &c, 0, &Device::Cpu).unwrap();

    // The trainer's pipeline: coefficients for the whole step, then the candle loss.
    let masks: Vec<Vec<bool>> = b.completions.iter().map(|c| vec![true; c.len()]).collect();
    let lambda: Vec<Vec<u32>> = b.completions.chunks(3).flat_map(lambda_sizes).collect();
    let layouts: Vec<SeqLayout> = masks
        .iter()
        .zip(&lambda)
        .map(|(m, l)| SeqLayout {
            mask: m,
            lambda_sizes: Some(l),
            micro_batch: 0,
        })
        .collect();
    let resolved = LossType::Grpo.resolve(ProcessWeighting::None).unwrap();
    let coef = token_coefficients(&layouts, resolved, 8).unwrap();
    let coef_t =
        coefficients_tensor(&coef, packed.completion_len, DType::F64, &Device::Cpu).unwrap();
    let (logp, _) = completion_logprobs(&policy, &packed, 1.0, None).unwrap();
    let adv = Tensor::new(b.adv.as_slice(), &Device::Cpu).unwrap();
    let (loss, _) =
        token_loss_candle(&logp, &logp.detach(), None, &adv, &coef_t, 0.2, 0.2, 0.0).unwrap();
    let grads = loss.backward().unwrap();

    let vars = policy.named_vars();
    let mut checked = 0;
    for (name, var) in &vars {
        let g = grads
            .get(var.as_tensor())
            .unwrap_or_else(|| panic!("no gradient for {name}"))
            .flatten_all()
            .unwrap()
            .to_vec1::<f64>()
            .unwrap();
        let base = var
            .as_tensor()
            .flatten_all()
            .unwrap()
            .to_vec1::<f64>()
            .unwrap();
        // The largest-gradient element and one fixed element of each tensor.
        let big = (0..g.len())
            .max_by(|&a, &c| g[a].abs().total_cmp(&g[c].abs()))
            .unwrap();
        for k in [big, base.len() / 3] {
            // The model keeps norms, softmax and logits in f32, so the step is large enough
            // for f32 rounding (~1e-7) to stay well below the tolerance.
            let h = 1e-3;
            let mut plus = base.clone();
            plus[k] += h;
            var.set(&Tensor::from_vec(plus, var.shape(), &Device::Cpu).unwrap())
                .unwrap();
            let sp = surrogate(&policy, &b);
            let mut minus = base.clone();
            minus[k] -= h;
            var.set(&Tensor::from_vec(minus, var.shape(), &Device::Cpu).unwrap())
                .unwrap();
            let sm = surrogate(&policy, &b);
            var.set(&Tensor::from_vec(base.clone(), var.shape(), &Device::Cpu).unwrap())
                .unwrap();
            let fd = (sp - sm) / (2.0 * h);
            let tol = 1e-3 + 2e-3 * fd.abs().max(g[k].abs());
            assert!(
                (fd - g[k]).abs() < tol,
                "{name}[{k}]: backward {} vs finite difference {fd}",
                g[k]
            );
            checked += 1;
        }
    }
    assert!(checked >= 2 * vars.len());
}
