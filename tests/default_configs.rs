//! The shipped default configs run end to end on the shipped policy (a few steps, CI-sized):
//! the same command README's first line runs, shortened with `--set`.

use std::path::PathBuf;
use std::process::Command;

use serde_json::Value;

#[test]
fn default_configs_train_a_few_steps() {
    let repo = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    for config in ["configs/lambda.toml", "configs/grpo.toml"] {
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
