//! `grpo sweep` end to end on the shipped default configs (CI-sized): the report files, the
//! fields outside checks read, the paired overhead, and that a rerun only rewrites the report
//! while a run whose metrics are missing is trained again, identically.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

fn sweep(out: &Path) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_grpo"))
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .args(["--log-level", "warn", "sweep"])
        .args([
            "--config",
            "configs/lambda.toml",
            "--config",
            "configs/grpo.toml",
        ])
        .args(["--seeds", "1,2"])
        .args(["--set", "train.max_steps=2", "--set", "train.batch_size=2"])
        .args(["--set", "train.save_steps=0", "--set", "eval.every=1"])
        .args(["--set", "eval.limit=4", "--set", "eval.n=1"])
        .arg("--out")
        .arg(out)
        .output()
        .unwrap()
}

fn json(path: PathBuf) -> Value {
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
}

#[test]
fn sweep_writes_the_comparison_report_and_resumes() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("sweep");
    let first = sweep(&out);
    assert!(
        first.status.success(),
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );
    for f in ["report.md", "report.json", "curves.png", "curves.svg"] {
        assert!(out.join(f).is_file(), "{f}");
    }
    let report = json(out.join("report.json"));
    let runs = report["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 4);
    for r in runs {
        for key in [
            "peak_val_accuracy",
            "final_val_accuracy",
            "steps_to_95pct_peak",
            "mean_step_time_s",
        ] {
            assert!(r[key].is_number(), "{key}: {r}");
        }
        let (t, w) = (
            r["loss_type"].as_str().unwrap(),
            r["process_weighting"].as_str().unwrap(),
        );
        assert!(
            (t, w) == ("lambda_grpo", "lambda") || (t, w) == ("dapo", "none"),
            "{t} {w}"
        );
        assert!(r["seed"] == 1 || r["seed"] == 2);
        // The peak is the best validation point, the final one is among them.
        let peak = r["peak_val_accuracy"].as_f64().unwrap();
        assert!(peak >= r["final_val_accuracy"].as_f64().unwrap());
    }
    let configs = report["configs"].as_array().unwrap();
    assert_eq!(configs.len(), 2);
    for c in configs {
        assert_eq!(
            c["final_val_accuracy"]["n"], 2,
            "mean ± std over both seeds"
        );
        assert!(c["wall_time_s"]["std"].is_number());
    }
    assert_eq!(report["lambda_step_time_overhead_pct_by_seed"]["n"], 2);
    let md = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(md.contains("| lambda | lambda_grpo | lambda | 2 |"), "{md}");
    assert!(md.contains("per seed"), "{md}");

    // Rerun: nothing is trained again. Then drop one run's metrics: that run alone is retrained,
    // to the same numbers.
    let run = out.join("runs/grpo-seed2");
    let metrics = std::fs::read_to_string(run.join("metrics.jsonl")).unwrap();
    let stamp = std::fs::metadata(out.join("runs/lambda-seed1/summary.json"))
        .unwrap()
        .modified()
        .unwrap();
    std::fs::remove_file(run.join("metrics.jsonl")).unwrap();
    let second = sweep(&out);
    assert!(
        second.status.success(),
        "{}",
        String::from_utf8_lossy(&second.stderr)
    );
    let stderr = String::from_utf8_lossy(&second.stderr);
    assert!(stderr.contains("grpo seed 2"), "{stderr}");
    assert!(!stderr.contains("lambda seed 1"), "{stderr}");
    let stamp2 = std::fs::metadata(out.join("runs/lambda-seed1/summary.json"))
        .unwrap()
        .modified()
        .unwrap();
    assert_eq!(stamp, stamp2, "finished runs are not touched");
    let again = std::fs::read_to_string(run.join("metrics.jsonl")).unwrap();
    let strip = |text: &str| -> Vec<Value> {
        text.lines()
            .map(|l| {
                let mut v: Value = serde_json::from_str(l).unwrap();
                let m = v.as_object_mut().unwrap();
                m.retain(|k, _| {
                    !k.starts_with("time_") && k != "step_time_s" && k != "tokens_per_s"
                });
                v
            })
            .collect()
    };
    assert_eq!(strip(&metrics), strip(&again));
}
