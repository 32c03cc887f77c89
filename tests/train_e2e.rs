//! End-to-end `grpo train` on the tiny-qwen2 fixture: a few steps with rewards that vary
//! (a length penalty), checkpoints that reload, and a resumed run that matches an
//! uninterrupted one metric for metric.

use std::path::{Path, PathBuf};

use candle_core::{DType, Device};
use grpo::model::Policy;
use serde_json::Value;

mod common;
use common::metrics;
use common::{fixture, grpo, write_train_config};

fn write_config(dir: &Path, loss: &str) -> PathBuf {
    let loss = format!("{loss:?}");
    write_train_config(
        dir,
        "config.toml",
        &dir.join("run"),
        &[
            ("loss.type", &loss),
            ("loss.beta", "0.04"),
            ("train.gradient_accumulation_steps", "2"),
            ("train.max_steps", "4"),
            ("train.save_steps", "2"),
        ],
    )
}

/// The metrics that must not depend on whether the run was interrupted.
fn comparable(m: &Value) -> Vec<(String, Value)> {
    m.as_object()
        .unwrap()
        .iter()
        .filter(|(k, _)| !k.starts_with("time_") && *k != "step_time_s" && *k != "tokens_per_s")
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

#[test]
fn train_checkpoint_reload_and_resume() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = write_config(tmp.path(), "lambda_grpo");
    let cfg_s = cfg.to_str().unwrap();
    let out = tmp.path().join("run");

    let full = grpo(&["train", "--config", cfg_s]);
    assert!(
        full.status.success(),
        "{}",
        String::from_utf8_lossy(&full.stderr)
    );
    let m = metrics(&out);
    assert_eq!(m.len(), 4);
    for (i, line) in m.iter().enumerate() {
        assert_eq!(line["step"], i + 1);
        for key in [
            "loss",
            "reward",
            "reward_std",
            "reward/length",
            "reward/accuracy",
            "accuracy",
            "completions/mean_length",
            "completions/max_length",
            "completions/clipped_ratio",
            "kl",
            "clip_fraction",
            "clip_ratio/low_mean",
            "clip_ratio/low_min",
            "clip_ratio/high_mean",
            "clip_ratio/high_max",
            "clip_ratio/region_mean",
            "entropy",
            "grad_norm",
            "lr",
            "frac_reward_zero_std",
            "time_generate_s",
            "time_score_s",
            "time_update_s",
            "step_time_s",
            "tokens_per_s",
            "process/non_trivial_fraction",
            "process/mean_path_depth",
            "process/mean_intermediate_proportion",
            "process/mean_num_process_sets",
        ] {
            let v = &line[key];
            assert!(v.is_number(), "step {}: {key} = {v}", i + 1);
            assert!(
                v.as_f64().unwrap().is_finite(),
                "step {}: {key} = {v}",
                i + 1
            );
        }
    }
    // The length penalty varies within groups, so the policy gets a gradient and moves.
    assert!(m.iter().any(|l| l["grad_norm"].as_f64().unwrap() > 0.0));
    // The sampler's and the trainer's log-probs of the same tokens agree (the update is
    // on-policy): a position, padding or temperature mismatch shows up here as O(0.1–1).
    for line in &m {
        let d = line["logprob_diff"].as_f64().unwrap();
        assert!(d < 1e-3, "step {}: logprob_diff {d}", line["step"]);
    }
    let summary: Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("summary.json")).unwrap()).unwrap();
    assert_eq!(summary["steps"], 4);
    assert!(summary["initial_val_accuracy"].is_number());
    assert!(summary["final_val_accuracy"].is_number());
    assert_eq!(summary["loss_type"], "lambda_grpo");
    assert_eq!(summary["process_weighting"], "lambda");

    // Checkpoints reload in our loader, and the weights changed.
    for step in [2, 4] {
        assert!(out
            .join(format!("checkpoint-{step}/model.safetensors"))
            .exists());
        assert!(out
            .join(format!("checkpoint-{step}/tokenizer.json"))
            .exists());
    }
    let before = Policy::load(&fixture("tiny-qwen2"), DType::F32, &Device::Cpu).unwrap();
    let after = Policy::load(&out.join("checkpoint-4"), DType::F32, &Device::Cpu).unwrap();
    let mut changed = 0;
    for ((name, a), (_, b)) in before.named_vars().iter().zip(after.named_vars().iter()) {
        let d = (a.as_tensor() - b.as_tensor())
            .unwrap()
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert!(d.is_finite(), "{name}");
        changed += usize::from(d > 0.0);
    }
    assert!(changed > 0, "no parameter changed");

    // Stop at step 2, resume: steps 3-4 equal the uninterrupted run's.
    let out2 = tmp.path().join("run2");
    let set_out = format!("output.dir={}", out2.display());
    let first = grpo(&[
        "train",
        "--config",
        cfg_s,
        "--set",
        &set_out,
        "--set",
        "train.max_steps=2",
    ]);
    assert!(
        first.status.success(),
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );
    let again = grpo(&["train", "--config", cfg_s, "--set", &set_out]);
    assert!(
        !again.status.success(),
        "a fresh run must not overwrite a run with checkpoints"
    );
    let resumed = grpo(&["train", "--config", cfg_s, "--set", &set_out, "--resume"]);
    assert!(
        resumed.status.success(),
        "{}",
        String::from_utf8_lossy(&resumed.stderr)
    );
    let m2 = metrics(&out2);
    assert_eq!(m2.len(), 4);
    for (a, b) in m.iter().zip(&m2) {
        if a["step"].as_u64().unwrap() <= 2 {
            // The stopped run validated at its last step (2); the rest must agree.
            let strip = |v: Vec<(String, Value)>| -> Vec<(String, Value)> {
                v.into_iter()
                    .filter(|(k, _)| k != "eval/accuracy")
                    .collect()
            };
            assert_eq!(strip(comparable(a)), strip(comparable(b)));
        } else {
            assert_eq!(comparable(a), comparable(b));
        }
    }
}

#[test]
fn every_loss_type_trains() {
    for loss in ["grpo", "bnpo", "dapo", "dr_grpo"] {
        let tmp = tempfile::tempdir().unwrap();
        let cfg = write_config(tmp.path(), loss);
        let run = grpo(&[
            "train",
            "--config",
            cfg.to_str().unwrap(),
            "--set",
            "train.max_steps=1",
            "--set",
            "loss.process_weighting=lambda",
        ]);
        assert!(
            run.status.success(),
            "{loss}: {}",
            String::from_utf8_lossy(&run.stderr)
        );
        let m = metrics(&tmp.path().join("run"));
        assert!(m[0]["loss"].as_f64().unwrap().is_finite(), "{loss}");
    }
}
