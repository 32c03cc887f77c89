//! The shipped default configs run end to end on the shipped policy (a few steps, CI-sized):
//! the same command README's first line runs, shortened with `--set`.

use std::path::PathBuf;
use std::process::Command;

use serde_json::Value;

#[test]
fn default_configs_train_a_few_steps() {
    let repo = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    for config in [
        "configs/lambda.toml",
        "configs/grpo.toml",
        "configs/chain/lambda.toml",
        "configs/chain/grpo.toml",
    ] {
        let tmp = tempfile::tempdir().unwrap();
        let out = tmp.path().join("run");
        let run = Command::new(env!("CARGO_BIN_EXE_grpo"))
            .current_dir(&repo)
            .args(["train", "--config", config])
            .args(["--set", "train.max_steps=2", "--set", "train.batch_size=2"])
            .args(["--set", "eval.limit=4", "--set", "eval.n=1"])
            .arg("--set")
            .arg(format!("output.dir={}", out.display()))
            .output()
            .unwrap();
        assert!(
            run.status.success(),
            "{config}: {}",
            String::from_utf8_lossy(&run.stderr)
        );
        let stdout = String::from_utf8_lossy(&run.stdout);
        assert!(stdout.contains("validation accuracy"), "{stdout}");
        let summary: Value =
            serde_json::from_str(&std::fs::read_to_string(out.join("summary.json")).unwrap())
                .unwrap();
        assert_eq!(summary["steps"], 2);
        for key in ["initial_val_accuracy", "final_val_accuracy", "wall_time_s"] {
            assert!(summary[key].is_number(), "{config}: {key}");
        }
        let expected = if config.contains("lambda") {
            "lambda_grpo"
        } else {
            "dapo"
        };
        assert_eq!(summary["loss_type"], expected);
        let metrics = std::fs::read_to_string(out.join("metrics.jsonl")).unwrap();
        assert_eq!(metrics.lines().count(), 2);
        assert!(out.join("checkpoint-2/model.safetensors").exists());
    }
}

/// Every shipped config (defaults, toy task, real-checkpoint examples) parses and validates, and
/// the examples for hub checkpoints fail with a clear message when the weights are not cached
/// and `HF_HUB_OFFLINE=1` forbids downloading them (no test reaches the internet).
#[test]
fn every_shipped_config_is_valid() {
    let repo = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    for dir in [
        "configs",
        "configs/chain",
        "configs/tree",
        "configs/examples",
    ] {
        for entry in std::fs::read_dir(repo.join(dir)).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "toml") {
                files.push(path);
            }
        }
    }
    assert!(files.len() >= 12, "{files:?}");
    for path in &files {
        let cfg = grpo::config::Config::load(path, &[])
            .unwrap_or_else(|e| panic!("{}: {e:#}", path.display()));
        cfg.validate()
            .unwrap_or_else(|e| panic!("{}: {e:#}", path.display()));
    }
    let empty_cache = tempfile::tempdir().unwrap();
    let run = Command::new(env!("CARGO_BIN_EXE_grpo"))
        .current_dir(&repo)
        .env("HF_HOME", empty_cache.path())
        .env("HF_HUB_OFFLINE", "1")
        .env("HF_ENDPOINT", "http://127.0.0.1:1")
        .env_remove("HF_HUB_CACHE")
        .args([
            "train",
            "--config",
            "configs/examples/qwen2.5-0.5b-instruct-gsm8k.toml",
        ])
        .arg("--set")
        .arg(format!(
            "output.dir={}",
            empty_cache.path().join("run").display()
        ))
        .output()
        .unwrap();
    assert!(!run.status.success());
    let err = String::from_utf8_lossy(&run.stderr);
    assert!(
        err.contains("Qwen/Qwen2.5-0.5B-Instruct")
            && err.contains("not fully in the Hugging Face cache")
            && err.contains("HF_HUB_OFFLINE=1"),
        "{err}"
    );
}

/// The toy task's validation goes through `grpo eval`'s code with the restricted alphabet: its
/// samples are 4 moves from {L, R}, graded by exact match with the target path. At learning
/// rate 0 the accuracy is the shipped random policy's probability of the target (3.3% measured
/// over 800 training samples, models/README.md).
#[test]
fn tree_validation_samples_only_allowed_moves() {
    let repo = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("run");
    let run = Command::new(env!("CARGO_BIN_EXE_grpo"))
        .current_dir(&repo)
        .args([
            "--log-level",
            "warn",
            "train",
            "--config",
            "configs/tree/lambda.toml",
        ])
        .args(["--set", "data.validation=data/tree/train.jsonl"])
        .args(["--set", "eval.n=400", "--set", "eval.temperature=1.0"])
        .args(["--set", "eval.max_completion_length=4"])
        .args([
            "--set",
            "train.max_steps=1",
            "--set",
            "optim.learning_rate=0",
        ])
        .arg("--set")
        .arg(format!("output.dir={}", out.display()))
        .output()
        .unwrap();
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let summary: Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("summary.json")).unwrap()).unwrap();
    let acc = summary["initial_val_accuracy"].as_f64().unwrap();
    // 400 samples at p ≈ 0.033: ± 0.009 (one std); 0 would mean the grading or the alphabet broke.
    assert!((0.01..=0.07).contains(&acc), "target fraction {acc}");
    assert_eq!(
        summary["final_val_accuracy"].as_f64().unwrap(),
        acc,
        "lr 0 moves nothing"
    );
}

/// The arith-chain configs are the default pair moved to the chain task: the same keys and
/// values as configs/lambda.toml except the model, data, lengths and steps, and among
/// themselves they differ only in the loss type and output folder (a fair comparison).
#[test]
fn chain_configs_differ_only_where_they_should() {
    let repo = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let read = |p: &str| -> toml::Table {
        toml::from_str(&std::fs::read_to_string(repo.join(p)).unwrap()).unwrap()
    };
    let strip = |mut t: toml::Table| {
        t["loss"].as_table_mut().unwrap().remove("type");
        t["output"].as_table_mut().unwrap().remove("dir");
        t
    };
    let lambda = read("configs/chain/lambda.toml");
    assert_eq!(lambda["loss"]["type"].as_str(), Some("lambda_grpo"));
    assert_eq!(
        lambda["model"]["path"].as_str(),
        Some("models/chain-policy")
    );
    assert_eq!(
        lambda["data"]["train"].as_str(),
        Some("data/arith-chain/train.jsonl")
    );
    for (file, loss) in [
        ("configs/chain/grpo.toml", "dapo"),
        ("configs/chain/grpo-seq.toml", "grpo"),
    ] {
        let other = read(file);
        assert_eq!(other["loss"]["type"].as_str(), Some(loss), "{file}");
        assert_eq!(strip(other), strip(lambda.clone()), "{file}");
    }
    // Against the default pair: only these keys change.
    let mut default = read("configs/lambda.toml");
    let mut chain = lambda.clone();
    for (section, key) in [
        ("model", "path"),
        ("data", "train"),
        ("data", "validation"),
        ("sampling", "max_completion_length"),
        ("eval", "max_completion_length"),
        ("train", "max_steps"),
        ("output", "dir"),
    ] {
        default[section].as_table_mut().unwrap().remove(key);
        chain[section].as_table_mut().unwrap().remove(key);
    }
    assert_eq!(default, chain);
}
