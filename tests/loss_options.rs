//! TRL 1.16's loss options end to end: the config accepts TRL's names (in any key order) and
//! refuses the pairs TRL warns about with the key named; a short `grpo train` with each loss type
//! and option on the shipped task and policy gives finite losses and TRL's metrics.

use std::path::Path;

mod common;
use common::metrics;
use common::{fails_with, grpo, repo, succeeds, write_train_config};

fn show(toml: &str) -> std::process::Output {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("c.toml");
    std::fs::write(&p, toml).unwrap();
    grpo(&["config", "show", "--config", p.to_str().unwrap()])
}

#[test]
fn allowed_pairs_in_any_key_order() {
    for (t, level) in [
        ("grpo", "sequence"),
        ("sapo", "sequence"),
        ("luspo", "sequence"),
        ("grpo", "token"),
        ("dapo", "token"),
        ("cispo", "token"),
        ("vespo", "token"),
        ("bnpo", "token"),
        ("dr_grpo", "token"),
        ("sapo", "token"),
    ] {
        for toml in [
            format!("[loss]\ntype = \"{t}\"\nimportance_sampling_level = \"{level}\"\n"),
            format!("[loss]\nimportance_sampling_level = \"{level}\"\ntype = \"{t}\"\n"),
        ] {
            let out = show(&toml);
            succeeds(&out);
            let text = String::from_utf8_lossy(&out.stdout);
            assert!(text.contains(&format!("type = \"{t}\"")), "{text}");
            assert!(
                text.contains(&format!("importance_sampling_level = \"{level}\"")),
                "{text}"
            );
        }
    }
    // Every new key with TRL's default is shown.
    let out = show("");
    succeeds(&out);
    let text = String::from_utf8_lossy(&out.stdout);
    for key in [
        "importance_sampling_level = \"token\"",
        "top_entropy_quantile = 1.0",
        "entropy_coef = 0.0",
        "entropy_coef_delta = 0.005",
        "entropy_target = 0.2",
        "entropy_coef_max = 1.0",
        "use_bias_correction_kl = true",
        "sapo_temperature_neg = 1.05",
        "vespo_k_pos = 2.0",
        "vespo_lambda_pos = 3.0",
        "vespo_k_neg = 3.0",
        "vespo_lambda_neg = 2.0",
        "sync_ref_model = false",
        "ref_model_mixup_alpha = 0.6",
        "ref_model_sync_steps = 512",
        "multi_objective_aggregation = \"sum_then_normalize\"",
    ] {
        assert!(text.contains(key), "config show lacks `{key}`:\n{text}");
    }
}

#[test]
fn trl_refusals_name_the_key() {
    let cases: &[(&str, &[&str])] = &[
        (
            "[loss]\ntype = \"luspo\"\n",
            &["loss.importance_sampling_level", "luspo", "sequence"],
        ),
        (
            "[loss]\nimportance_sampling_level = \"sequence\"\ntype = \"vespo\"\n",
            &["loss.importance_sampling_level", "vespo", "token"],
        ),
        (
            "[loss]\ntype = \"cispo\"\nimportance_sampling_level = \"sequence\"\n",
            &[
                "loss.importance_sampling_level",
                "cispo",
                "completion length",
            ],
        ),
        (
            "[loss]\ntype = \"dapo\"\nimportance_sampling_level = \"sequence\"\n",
            &["loss.importance_sampling_level", "dapo"],
        ),
        (
            "[loss]\ntype = \"bnpo\"\nimportance_sampling_level = \"sequence\"\n",
            &["loss.importance_sampling_level", "bnpo"],
        ),
        (
            "[loss]\ntype = \"dr_grpo\"\nimportance_sampling_level = \"sequence\"\n",
            &["loss.importance_sampling_level", "dr_grpo"],
        ),
        (
            "[loss]\nimportance_sampling_level = \"tokens\"\n",
            &["loss.importance_sampling_level", "tokens"],
        ),
        (
            "[loss]\nsync_ref_model = true\n",
            &["loss.sync_ref_model", "beta"],
        ),
        (
            "[loss]\nbeta = 0.1\nsync_ref_model = true\n[lora]\nr = 4\n",
            &["loss.sync_ref_model", "lora"],
        ),
        (
            "[loss]\ntop_entropy_quantile = 1.5\n",
            &["loss.top_entropy_quantile", "[0, 1]"],
        ),
        ("[loss]\ndelta = 0.0\n", &["loss.delta"]),
        (
            "[loss]\nsapo_temperature_pos = 0.0\n",
            &["loss.sapo_temperature_pos"],
        ),
        (
            "[loss]\nentropy_coef_min = 0.5\nentropy_coef_max = 0.1\n",
            &["loss.entropy_coef_max"],
        ),
        (
            "[loss]\nref_model_mixup_alpha = 2.0\n",
            &["loss.ref_model_mixup_alpha"],
        ),
        (
            "[loss]\nref_model_sync_steps = 0\n",
            &["loss.ref_model_sync_steps"],
        ),
        (
            "[loss]\noff_policy_mask_threshold = -1.0\n",
            &["loss.off_policy_mask_threshold"],
        ),
        (
            "[rewards]\nmulti_objective_aggregation = \"sum\"\n",
            &["multi_objective_aggregation", "normalize_then_sum"],
        ),
    ];
    for (toml, needles) in cases {
        fails_with(&show(toml), needles);
    }
}

/// A run: its name, its `--set` keys, and the metrics TRL logs for it.
type Run<'a> = (&'a str, &'a [(&'a str, &'a str)], &'a [&'a str]);

/// Each type and option for 2 steps on the shipped policy and task: finite losses, and the
/// metrics TRL logs for it.
#[test]
fn every_type_and_option_trains() {
    let model = repo().join("models/tiny-math");
    let model = format!("{:?}", model.display().to_string());
    let runs: &[Run] = &[
        (
            "grpo",
            &[("loss.type", "\"grpo\"")],
            &["clip_ratio/region_mean"],
        ),
        (
            "gspo_lambda",
            &[
                ("loss.type", "\"grpo\""),
                ("loss.importance_sampling_level", "\"sequence\""),
                ("loss.process_weighting", "\"lambda\""),
                ("loss.num_iterations", "2"),
            ],
            &["clip_ratio/region_mean"],
        ),
        ("bnpo", &[("loss.type", "\"bnpo\"")], &[]),
        (
            "dapo_delta_offpolicy",
            &[
                ("loss.type", "\"dapo\""),
                ("loss.delta", "1.5"),
                ("loss.off_policy_mask_threshold", "0.01"),
                ("loss.num_iterations", "2"),
            ],
            &[],
        ),
        (
            "dr_grpo_top_entropy",
            &[
                ("loss.type", "\"dr_grpo\""),
                ("loss.top_entropy_quantile", "0.2"),
            ],
            &[],
        ),
        (
            "cispo_lambda",
            &[
                ("loss.type", "\"cispo\""),
                ("loss.epsilon_high", "5.0"),
                ("loss.process_weighting", "\"lambda\""),
            ],
            &["cispo_clip_ratio"],
        ),
        (
            "sapo_lambda",
            &[
                ("loss.type", "\"sapo\""),
                ("loss.sapo_temperature_pos", "0.8"),
                ("loss.sapo_temperature_neg", "1.2"),
                ("loss.process_weighting", "\"lambda\""),
            ],
            &[],
        ),
        (
            "luspo_lambda",
            &[
                ("loss.type", "\"luspo\""),
                ("loss.importance_sampling_level", "\"sequence\""),
                ("loss.process_weighting", "\"lambda\""),
            ],
            &["clip_ratio/low_mean"],
        ),
        (
            "vespo_lambda",
            &[
                ("loss.type", "\"vespo\""),
                ("loss.vespo_k_pos", "1.5"),
                ("loss.vespo_lambda_neg", "1.0"),
                ("loss.process_weighting", "\"lambda\""),
                ("loss.num_iterations", "2"),
            ],
            &["vespo/phi_seq_mean"],
        ),
        (
            "lambda_entropy_bonus",
            &[
                ("loss.type", "\"lambda_grpo\""),
                ("loss.entropy_coef", "0.01"),
            ],
            &["policy_loss", "entropy_coef"],
        ),
        (
            "adaptive_entropy",
            &[
                ("loss.entropy_coef", "0.01"),
                ("loss.use_adaptive_entropy", "true"),
                ("loss.entropy_target", "100.0"),
                ("loss.entropy_coef_delta", "0.02"),
            ],
            &["policy_loss", "entropy_coef"],
        ),
        (
            "kl_no_bias_correction",
            &[
                ("loss.beta", "0.05"),
                ("loss.use_bias_correction_kl", "false"),
            ],
            &["kl"],
        ),
        (
            "tr_dpo",
            &[
                ("loss.beta", "0.05"),
                ("loss.sync_ref_model", "true"),
                ("loss.ref_model_sync_steps", "1"),
                ("loss.ref_model_mixup_alpha", "0.5"),
            ],
            &["kl"],
        ),
        (
            "gdpo",
            &[
                (
                    "rewards.multi_objective_aggregation",
                    "\"normalize_then_sum\"",
                ),
                ("rewards.weights", "[1.0, 0.5]"),
            ],
            &[],
        ),
    ];
    let tmp = tempfile::tempdir().unwrap();
    for (name, set, keys) in runs {
        let out = tmp.path().join(name);
        let mut all: Vec<(&str, &str)> = vec![("model.path", &model), ("loss.beta", "0.0")];
        all.extend_from_slice(set);
        let cfg = write_train_config(tmp.path(), &format!("{name}.toml"), &out, &all);
        let run = grpo(&["train", "--config", cfg.to_str().unwrap()]);
        succeeds(&run);
        let m = metrics(&out);
        assert_eq!(m.len(), 2, "{name}");
        for line in &m {
            let loss = line["loss"].as_f64().unwrap_or(f64::NAN);
            assert!(loss.is_finite(), "{name}: loss {loss}");
            assert!(
                line["grad_norm"].as_f64().is_some_and(f64::is_finite),
                "{name}"
            );
            for k in *keys {
                assert!(
                    line[*k].as_f64().is_some_and(f64::is_finite),
                    "{name}: no finite `{k}` in {line}"
                );
            }
        }
        if *name == "adaptive_entropy" {
            // The entropy is below the (huge) target: the coefficient rises by delta per step.
            let c: Vec<f64> = m
                .iter()
                .map(|l| l["entropy_coef"].as_f64().unwrap())
                .collect();
            assert!(
                (c[0] - 0.03).abs() < 1e-12 && (c[1] - 0.05).abs() < 1e-12,
                "{c:?}"
            );
        }
        if name.starts_with("cispo") {
            assert!(m[0].get("clip_ratio/region_mean").is_none(), "{name}");
        }
    }
}

/// TR-DPO's update is `α·policy + (1 − α)·reference` on every parameter, only on multiples of
/// `ref_model_sync_steps`; the synchronized reference is saved beside checkpoints and restored.
#[test]
fn tr_dpo_mixes_the_reference_into_the_policy() {
    use candle_core::{DType, Device};
    use grpo::config::LossSection;
    use grpo::model::Policy;
    use grpo::trainer::tr_dpo::{maybe_sync, restore_reference, save_reference};

    let dir = common::fixture("tiny-qwen2");
    let policy = Policy::load(&dir, DType::F64, &Device::Cpu).unwrap();
    let reference = Policy::load(&dir, DType::F64, &Device::Cpu).unwrap();
    // Move the policy away from the reference: θ ← 2θ + 0.1.
    for (_, v) in policy.named_vars() {
        v.set(&((v.as_tensor() * 2.0).unwrap() + 0.1).unwrap())
            .unwrap();
    }
    let before: Vec<Vec<f64>> = reference
        .named_vars()
        .iter()
        .map(|(_, v)| v.as_tensor().flatten_all().unwrap().to_vec1().unwrap())
        .collect();
    let l = LossSection {
        beta: 0.1,
        sync_ref_model: true,
        ref_model_mixup_alpha: 0.25,
        ref_model_sync_steps: 3,
        ..LossSection::default()
    };
    assert!(!maybe_sync(&l, 2, &policy, &reference).unwrap());
    assert!(maybe_sync(&l, 3, &policy, &reference).unwrap());
    for ((_, r), r0) in reference.named_vars().iter().zip(&before) {
        let r: Vec<f64> = r.as_tensor().flatten_all().unwrap().to_vec1().unwrap();
        for (x, x0) in r.iter().zip(r0) {
            let want = 0.25 * (2.0 * x0 + 0.1) + 0.75 * x0;
            assert!((x - want).abs() < 1e-12, "{x} vs {want}");
        }
    }
    let off = LossSection {
        sync_ref_model: false,
        ..l.clone()
    };
    assert!(!maybe_sync(&off, 3, &policy, &reference).unwrap());
    // Saved beside a checkpoint and put back on resume; missing past a sync: refused.
    let tmp = tempfile::tempdir().unwrap();
    save_reference(&l, tmp.path(), Some(&reference)).unwrap();
    let fresh = Policy::load(&dir, DType::F64, &Device::Cpu).unwrap();
    restore_reference(&l, tmp.path(), 4, Some(&fresh)).unwrap();
    for ((_, a), (_, b)) in fresh.named_vars().iter().zip(reference.named_vars().iter()) {
        let d = (a.as_tensor() - b.as_tensor()).unwrap().abs().unwrap();
        assert_eq!(
            d.flatten_all()
                .unwrap()
                .max(0)
                .unwrap()
                .to_scalar::<f64>()
                .unwrap(),
            0.0
        );
    }
    let empty = tempfile::tempdir().unwrap();
    assert!(restore_reference(&l, empty.path(), 2, Some(&fresh)).is_ok());
    let e = restore_reference(&l, empty.path(), 4, Some(&fresh))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("loss.sync_ref_model") && e.contains("step 3"),
        "{e}"
    );
}

/// A TR-DPO run resumed after a synchronization continues exactly like the uninterrupted run.
#[test]
fn tr_dpo_resumes_exactly() {
    let model = repo().join("models/tiny-math");
    let model = format!("{:?}", model.display().to_string());
    let tmp = tempfile::tempdir().unwrap();
    let set = |steps: &'static str| -> Vec<(&'static str, String)> {
        vec![
            ("model.path", model.clone()),
            ("loss.beta", "0.05".into()),
            ("loss.sync_ref_model", "true".into()),
            ("loss.ref_model_sync_steps", "1".into()),
            ("train.max_steps", steps.into()),
            ("train.save_steps", "1".into()),
            ("eval.every", "0".into()),
        ]
    };
    let write = |name: &str, out: &Path, steps: &'static str| {
        let s = set(steps);
        let s: Vec<(&str, &str)> = s.iter().map(|(k, v)| (*k, v.as_str())).collect();
        write_train_config(tmp.path(), name, out, &s)
    };
    let (full, part) = (tmp.path().join("full"), tmp.path().join("part"));
    let a = write("a.toml", &full, "3");
    succeeds(&grpo(&["train", "--config", a.to_str().unwrap()]));
    let b = write("b.toml", &part, "2");
    succeeds(&grpo(&["train", "--config", b.to_str().unwrap()]));
    assert!(part.join("checkpoint-2/ref_model.safetensors").exists());
    let c = write("c.toml", &part, "3");
    succeeds(&grpo(&[
        "train",
        "--config",
        c.to_str().unwrap(),
        "--resume",
    ]));
    let (ma, mb) = (metrics(&full), metrics(&part));
    assert_eq!(mb.len(), 3);
    for key in ["loss", "kl", "grad_norm", "reward"] {
        assert_eq!(ma[2][key], mb[2][key], "{key} at step 3");
    }
    // Without the saved reference the resume is refused, naming the key.
    std::fs::remove_file(part.join("checkpoint-3/ref_model.safetensors")).unwrap();
    let d = write("d.toml", &part, "4");
    fails_with(
        &grpo(&["train", "--config", d.to_str().unwrap(), "--resume"]),
        &["loss.sync_ref_model"],
    );
}

/// The adaptive entropy coefficient is kept in `trainer_state.json`: a resumed run applies and
/// moves it exactly as the uninterrupted one.
#[test]
fn adaptive_entropy_resumes_exactly() {
    let model = format!(
        "{:?}",
        repo().join("models/tiny-math").display().to_string()
    );
    let tmp = tempfile::tempdir().unwrap();
    let write = |name: &str, out: &Path, steps: &str| {
        let s: Vec<(&str, &str)> = vec![
            ("model.path", &model),
            ("loss.beta", "0.0"),
            ("loss.entropy_coef", "0.01"),
            ("loss.use_adaptive_entropy", "true"),
            ("loss.entropy_target", "100.0"),
            ("loss.entropy_coef_delta", "0.02"),
            ("train.max_steps", steps),
            ("train.save_steps", "1"),
            ("eval.every", "0"),
        ];
        write_train_config(tmp.path(), name, out, &s)
    };
    let (full, part) = (tmp.path().join("full"), tmp.path().join("part"));
    succeeds(&grpo(&[
        "train",
        "--config",
        write("a.toml", &full, "3").to_str().unwrap(),
    ]));
    succeeds(&grpo(&[
        "train",
        "--config",
        write("b.toml", &part, "2").to_str().unwrap(),
    ]));
    let c = write("c.toml", &part, "3");
    succeeds(&grpo(&[
        "train",
        "--config",
        c.to_str().unwrap(),
        "--resume",
    ]));
    let (ma, mb) = (metrics(&full), metrics(&part));
    for key in ["loss", "policy_loss", "entropy_coef", "grad_norm"] {
        assert_eq!(ma[2][key], mb[2][key], "{key} at step 3");
    }
    assert!((ma[2]["entropy_coef"].as_f64().unwrap() - 0.07).abs() < 1e-12);
}
