//! LoRA in mixed precision (`model.dtype = "bf16"` with `[lora]`):
//!
//! - The sampler runs the merged model, whose weights are `round_bf16(W + s·B·A)`; the trainer
//!   multiplies by the same rounded merged weights, so their log-probs differ by f32 summation
//!   order only (`logprob_diff` ≤ 5e-4), not by where the adapter's term is rounded.
//! - The adapters' bf16 gradients are the f32 path's within a bf16 tolerance.
//! - `grpo train` with `[lora]` in bf16 keeps `logprob_diff` ≤ 5e-4 at every step.

use candle_core::{DType, Device, Tensor};
use grpo::model::lora::{LoraConfig, TargetModules};
use grpo::model::Policy;

mod common;
use common::{grpo, l2_norm, mean_abs_diff as diff, metrics, succeeds, write_train_config};

fn adapted(dtype: DType) -> Policy {
    let mut p = Policy::load(
        &common::repo().join("models/tiny-math"),
        dtype,
        &Device::Cpu,
    )
    .unwrap();
    let cfg = LoraConfig {
        r: 8,
        lora_alpha: 16.0,
        lora_dropout: 0.0,
        target_modules: TargetModules::Pattern("all-linear".into()),
        use_rslora: false,
    };
    p.add_lora(&cfg, 3).unwrap();
    // B starts at zero (the adapter off); give it a term as large as a trained one's.
    for (i, (name, var)) in p.trainable_vars().iter().enumerate() {
        if name.ends_with("lora_B.weight") {
            let v: Vec<f32> = (0..var.elem_count())
                .map(|k| 0.05 * ((k * 13 + i * 5) as f32).sin())
                .collect();
            var.set(&Tensor::from_vec(v, var.shape(), &Device::Cpu).unwrap())
                .unwrap();
        }
    }
    p
}

const ROWS: usize = 3;
const LEN: usize = 13;

fn ids() -> Vec<u32> {
    (0..ROWS * LEN).map(|i| (i as u32 * 29 + 5) % 500).collect()
}

fn ids_tensor() -> Tensor {
    Tensor::from_vec(ids(), (ROWS, LEN), &Device::Cpu).unwrap()
}

/// The trainer's log-probs of tokens 1.. given their prefixes.
fn trainer_lp(p: &Policy) -> Vec<f32> {
    let t = ids_tensor();
    let (lp, _) = p
        .completion_logprobs(&t, None, 0, &t.narrow(1, 1, LEN - 1).unwrap(), 1.0, None)
        .unwrap();
    lp.flatten_all().unwrap().to_vec1::<f32>().unwrap()
}

/// The sampler's: the merged model's KV-cache forward, log-softmax on the host.
fn sampler_lp(p: &Policy) -> Vec<f32> {
    let merged = p.for_sampling().unwrap().expect("an adapted policy merges");
    let mut cache = merged.new_cache(ROWS, LEN + 3).unwrap();
    let logits = merged
        .forward_cached(&ids_tensor(), None, &mut cache)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
    common::next_token_logprobs(&logits, &ids(), ROWS, LEN, p.config.vocab_size)
}

#[test]
fn bf16_lora_sampler_matches_the_trainer() {
    let p = adapted(DType::BF16);
    let (s, t) = (sampler_lp(&p), trainer_lp(&p));
    let d = diff(&s, &t);
    eprintln!("bf16 LoRA: sampler vs trainer mean |Δ log-prob| {d:e}");
    assert!(d < 5e-4, "sampler vs trainer {d}");
    // What the comparison can tell apart: the adapter moves the log-probs, and bf16 rounding
    // moves them by far more than the agreement above.
    let base = p.without_adapter().unwrap();
    assert!(
        diff(&trainer_lp(&base), &t) > 1e-2,
        "the adapter has no term"
    );
    let f = adapted(DType::F32);
    let d32 = diff(&trainer_lp(&f), &t);
    assert!(d32 > 10.0 * d, "bf16 vs f32 {d32}: no bf16 rounding?");
    // f32 LoRA agrees at f32 noise.
    let d = diff(&sampler_lp(&f), &trainer_lp(&f));
    assert!(d < 2e-5, "f32 sampler vs trainer {d}");
}

fn rel_l2(a: &Tensor, b: &Tensor) -> f64 {
    l2_norm(&(a - b).unwrap()) / l2_norm(a)
}

#[test]
fn bf16_lora_gradients_match_f32_within_bf16_tolerance() {
    let grads = |p: &Policy| {
        let t = ids_tensor();
        let (lp, _) = p
            .completion_logprobs(&t, None, 0, &t.narrow(1, 1, LEN - 1).unwrap(), 1.0, None)
            .unwrap();
        let g = (lp.sum_all().unwrap() / -((ROWS * (LEN - 1)) as f64))
            .unwrap()
            .backward()
            .unwrap();
        p.trainable_vars()
            .into_iter()
            .map(|(n, v)| (n, g.get(&v).expect("adapter gradient").clone()))
            .collect::<Vec<_>>()
    };
    let (g32, g16) = (grads(&adapted(DType::F32)), grads(&adapted(DType::BF16)));
    assert_eq!(g32.len(), g16.len());
    assert!(!g32.is_empty());
    let mut worst = 0f64;
    for ((n, a), (_, b)) in g32.iter().zip(&g16) {
        let rel = rel_l2(a, b);
        // The bound of tests/bf16_mixed.rs (GRAD_REL_L2), for the same reasons.
        assert!(rel.is_finite() && rel <= 0.1, "{n}: relative L2 {rel}");
        worst = worst.max(rel);
    }
    eprintln!("bf16 LoRA: largest relative L2 adapter-gradient error {worst:e}");
    assert!(worst > 1e-4, "bf16 adapter gradients equal f32's");
}

#[test]
fn bf16_lora_train_keeps_logprob_diff_at_float_noise() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("run");
    let model = common::toml_string(&common::repo().join("models/tiny-math"));
    let cfg = write_train_config(
        tmp.path(),
        "lora-bf16.toml",
        &out,
        &[
            ("model.path", &model),
            ("model.dtype", "\"bf16\""),
            ("optim.learning_rate", "3e-3"),
            ("train.max_steps", "4"),
            ("lora.r", "8"),
            ("lora.lora_alpha", "16"),
            ("lora.target_modules", "\"all-linear\""),
        ],
    );
    succeeds(&grpo(&["train", "--config", cfg.to_str().unwrap()]));
    let m = metrics(&out);
    assert_eq!(m.len(), 4);
    let worst = m
        .iter()
        .map(|l| l["logprob_diff"].as_f64().unwrap())
        .fold(0.0, f64::max);
    eprintln!("bf16 LoRA run: largest logprob_diff {worst:e}");
    for line in &m {
        let d = line["logprob_diff"].as_f64().unwrap();
        assert!(
            d.is_finite() && d <= 5e-4,
            "step {}: logprob_diff {d}",
            line["step"]
        );
    }
    assert!(m.iter().any(|l| l["grad_norm"].as_f64().unwrap() > 0.0));
}
