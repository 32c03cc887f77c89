//! `grpo train` paths that change what the loss counts, each run end to end on the tiny-qwen2
//! fixture and checked through `metrics.jsonl` and the checkpoints:
//! `num_iterations` > 1 (clipping acts), `mask_truncated_completions`, `skip_zero_std_groups`,
//! β > 0 against a frozen reference, half-precision master weights, resuming with a changed
//! config, and plain (colourless) logs.

mod common;
use common::metrics;

use std::path::Path;

use candle_core::{DType, Device};
use common::{fixture, grpo, write_train_config};
use grpo::model::Policy;
use serde_json::Value;

/// Trains with the base config plus `set`; returns the run's metrics and stderr.
fn train(dir: &Path, name: &str, set: &[(&str, &str)]) -> (Vec<Value>, String) {
    let out = dir.join(name);
    let cfg = write_train_config(dir, &format!("{name}.toml"), &out, set);
    let run = grpo(&["train", "--config", cfg.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&run.stderr).to_string();
    assert!(run.status.success(), "{name}: {stderr}");
    (metrics(&out), stderr)
}

fn num(m: &Value, key: &str) -> f64 {
    m[key]
        .as_f64()
        .unwrap_or_else(|| panic!("step {}: {key} = {}", m["step"], m[key]))
}

fn hist_tokens(m: &Value) -> u64 {
    m["process/lambda_histogram"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap())
        .sum()
}

#[test]
fn num_iterations_two_clips_after_the_first_update() {
    let tmp = tempfile::tempdir().unwrap();
    // A large step and a narrow clip range: after the first update ρ leaves [1 − ε, 1 + ε].
    let base = [
        ("optim.learning_rate", "3e-2"),
        ("loss.epsilon", "0.02"),
        ("train.max_steps", "1"),
    ];
    let (one, _) = train(tmp.path(), "mu1", &base);
    let mut set = base.to_vec();
    set.push(("loss.num_iterations", "2"));
    let (two, _) = train(tmp.path(), "mu2", &set);
    // μ = 1: ρ ≡ 1, nothing can clip.
    assert_eq!(num(&one[0], "clip_fraction"), 0.0);
    assert_eq!(num(&one[0], "clip_ratio/region_mean"), 0.0);
    // μ = 2: the second pass sees the updated policy, ρ ≠ 1, and some tokens clip.
    let m = &two[0];
    let region = num(m, "clip_ratio/region_mean");
    assert!(region > 0.0, "{m}");
    assert_eq!(num(m, "clip_fraction"), region);
    let (low, high) = (
        num(m, "clip_ratio/low_mean"),
        num(m, "clip_ratio/high_mean"),
    );
    assert!((low + high - region).abs() < 1e-12, "{m}");
    assert!(num(m, "clip_ratio/low_min") <= low && num(m, "clip_ratio/high_max") >= high);
    // The first pass is the same in both runs: same rollout, same loss.
    assert_eq!(num(&one[0], "loss"), num(m, "loss"));
}

#[test]
fn masked_truncated_completions_count_nowhere() {
    let tmp = tempfile::tempdir().unwrap();
    // Only "a" and "b" can be sampled, so no completion reaches EOS: all are truncated.
    let base = [
        ("sampling.allowed_tokens", r#"["a", "b"]"#),
        ("sampling.max_completion_length", "6"),
        ("train.max_steps", "1"),
    ];
    let (kept, _) = train(tmp.path(), "kept", &base);
    let mut set = base.to_vec();
    set.push(("loss.mask_truncated_completions", "true"));
    let (masked, _) = train(tmp.path(), "masked", &set);
    let (k, m) = (&kept[0], &masked[0]);
    assert_eq!(num(k, "completions/clipped_ratio"), 1.0);
    // Unmasked: every token of the 8 completions is in some process set.
    assert_eq!(hist_tokens(k), 8 * 6, "{k}");
    assert!(num(k, "process/mean_num_process_sets") > 0.0, "{k}");
    // Masked: a masked completion has length 0 and joins no set; nothing is left to learn from.
    assert_eq!(hist_tokens(m), 0, "{m}");
    assert_eq!(num(m, "process/mean_num_process_sets"), 0.0, "{m}");
    assert_eq!(num(m, "loss"), 0.0);
    assert_eq!(num(m, "grad_norm"), 0.0);
}

#[test]
fn skip_zero_std_groups_drops_their_kl_term_too() {
    let tmp = tempfile::tempdir().unwrap();
    // Accuracy alone is 0 for every completion of the random fixture: every group has zero
    // std and zero advantages. Weight decay moves the policy off the reference in step 1, so in
    // step 2 the KL term has a gradient unless the groups are skipped.
    let base = [
        ("rewards.funcs", r#"["accuracy"]"#),
        ("loss.beta", "0.04"),
        ("optim.learning_rate", "1e-2"),
        ("optim.weight_decay", "0.5"),
        ("train.max_steps", "2"),
    ];
    let (kept, _) = train(tmp.path(), "kept", &base);
    let mut set = base.to_vec();
    set.push(("loss.skip_zero_std_groups", "true"));
    let (skipped, _) = train(tmp.path(), "skipped", &set);
    for m in kept.iter().chain(&skipped) {
        assert_eq!(num(m, "frac_reward_zero_std"), 1.0, "{m}");
    }
    assert!(num(&kept[1], "kl") > 0.0, "{}", kept[1]);
    assert!(num(&kept[1], "grad_norm") > 0.0, "{}", kept[1]);
    assert!(hist_tokens(&kept[1]) > 0);
    for m in &skipped {
        assert_eq!(num(m, "loss"), 0.0, "{m}");
        assert_eq!(num(m, "grad_norm"), 0.0, "{m}");
        assert_eq!(hist_tokens(m), 0, "{m}");
    }
}

#[test]
fn kl_to_a_frozen_reference() {
    let tmp = tempfile::tempdir().unwrap();
    let (m, _) = train(
        tmp.path(),
        "kl",
        &[
            ("loss.beta", "0.1"),
            ("optim.learning_rate", "1e-2"),
            ("train.max_steps", "3"),
        ],
    );
    // Step 1 samples from the reference itself: k3 is exactly 0. Afterwards the policy has moved
    // and the reference has not (a reference that followed the policy would keep kl at 0).
    assert_eq!(num(&m[0], "kl"), 0.0, "{}", m[0]);
    assert!(num(&m[0], "grad_norm") > 0.0);
    for line in &m[1..] {
        let kl = num(line, "kl");
        assert!(kl > 0.0 && kl.is_finite(), "{line}");
    }
    // Without β no reference is loaded and no KL is computed.
    let (free, _) = train(
        tmp.path(),
        "free",
        &[("optim.learning_rate", "1e-2"), ("train.max_steps", "3")],
    );
    assert_eq!(num(&free[2], "kl"), 0.0, "β = 0 computes no KL");
}

#[test]
fn half_precision_training_moves_the_weights() {
    // One step at lr 1e-6 in f16 (bf16 on the CPU is mixed precision with f32 parameters,
    // `tests/bf16_mixed.rs`; on a GPU both go through the same f32 master weights). Every Adam update is ~1e-6, below half an f16 ulp of almost every
    // weight: without master weights the checkpoint would equal the f16 model it started from.
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("f16");
    let cfg = write_train_config(
        tmp.path(),
        "f16.toml",
        &out,
        &[
            ("model.dtype", r#""f16""#),
            ("optim.learning_rate", "1e-6"),
            ("train.max_steps", "1"),
            ("data.validation", r#""""#),
        ],
    );
    let run = grpo(&["train", "--config", cfg.to_str().unwrap()]);
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let m = metrics(&out);
    assert!(num(&m[0], "grad_norm") > 0.0);
    let start = Policy::load(&fixture("tiny-qwen2"), DType::F16, &Device::Cpu).unwrap();
    let end = Policy::load(&out.join("checkpoint-1"), DType::F32, &Device::Cpu).unwrap();
    let (mut moved, mut total, mut largest) = (0usize, 0usize, 0f32);
    for ((name, a), (_, b)) in start.named_vars().iter().zip(end.named_vars().iter()) {
        let a = a.as_tensor().to_dtype(DType::F32).unwrap();
        let d = (b.as_tensor() - a)
            .unwrap()
            .abs()
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        total += d.len();
        moved += d.iter().filter(|&&x| x > 0.0).count();
        largest = d.iter().fold(largest, |m, &x| m.max(x));
        assert!(d.iter().all(|x| x.is_finite()), "{name}");
    }
    // Parameters with a gradient move by ~lr (Adam's first step is lr·sign(g)).
    assert!(moved * 2 > total, "{moved} of {total} weights moved");
    assert!(largest < 1e-5, "largest change {largest}");
}

#[test]
fn resume_refuses_a_changed_loss_and_allows_harmless_keys() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("run");
    let cfg = write_train_config(
        tmp.path(),
        "a.toml",
        &out,
        &[("train.max_steps", "1"), ("data.validation", r#""""#)],
    );
    let cfg = cfg.to_str().unwrap();
    let first = grpo(&["train", "--config", cfg]);
    assert!(
        first.status.success(),
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );
    let changed = grpo(&[
        "train",
        "--config",
        cfg,
        "--resume",
        "--set",
        "train.max_steps=2",
        "--set",
        "loss.type=dapo",
    ]);
    let err = String::from_utf8_lossy(&changed.stderr);
    assert!(!changed.status.success(), "{err}");
    assert!(err.contains("loss.type"), "{err}");
    assert!(err.contains("lambda_grpo"), "{err}");
    assert_eq!(metrics(&out).len(), 1, "a refused resume writes nothing");
    // A longer run under the constant schedule, with another logging interval: allowed.
    let longer = grpo(&[
        "train",
        "--config",
        cfg,
        "--resume",
        "--set",
        "train.max_steps=2",
        "--set",
        "train.logging_steps=2",
    ]);
    assert!(
        longer.status.success(),
        "{}",
        String::from_utf8_lossy(&longer.stderr)
    );
    assert_eq!(metrics(&out).len(), 2);
}

#[test]
fn logs_to_a_file_are_plain_and_follow_logging_steps() {
    let tmp = tempfile::tempdir().unwrap();
    // The test captures stderr through a pipe: not a terminal, so no colour codes.
    let (_, stderr) = train(
        tmp.path(),
        "log",
        &[("train.max_steps", "4"), ("train.logging_steps", "2")],
    );
    assert!(!stderr.contains('\u{1b}'), "escape codes in: {stderr:?}");
    let steps: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains(" step ") && l.contains(" loss "))
        .collect();
    assert_eq!(steps.len(), 2, "{stderr}");
    assert!(steps[0].contains("step 2/4") && steps[1].contains("step 4/4"));
    assert!(steps[1].contains("reward") && steps[1].contains("eval/accuracy"));
}

#[test]
fn eval_caps_max_new_tokens_at_the_models_context() {
    // The fixture's context is 512 tokens; the default --max-new-tokens is 2048.
    let model = fixture("tiny-qwen2");
    let run = grpo(&[
        "eval",
        "--model",
        model.to_str().unwrap(),
        "--benchmark",
        "arith",
        "--limit",
        "1",
    ]);
    let err = String::from_utf8_lossy(&run.stderr);
    assert!(run.status.success(), "{err}");
    assert!(
        err.contains("note: arith: max_new_tokens 2048 capped at"),
        "{err}"
    );
    assert!(err.contains("512"), "{err}");
    assert!(!err.contains("exceed the model"), "{err}");
}
