//! `grpo train` with `[lora]` end to end on the shipped tiny policy: adapter checkpoints in
//! PEFT's layout, on-policy rollouts (logprob_diff at float noise), β > 0 with the adapter-off
//! reference, a resumed run equal to the uninterrupted one, `grpo generate --adapter` and
//! `grpo export --merge`.

use std::path::{Path, PathBuf};
use std::process::Command;

use candle_core::{DType, Device};
use grpo::model::Policy;
use serde_json::Value;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn grpo(args: &[&str]) -> std::process::Output {
    let out = Command::new(env!("CARGO_BIN_EXE_grpo"))
        .current_dir(repo())
        .args(args)
        .output()
        .expect("running grpo");
    assert!(
        out.status.success(),
        "grpo {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn write_config(dir: &Path) -> PathBuf {
    let text = format!(
        r#"
[model]
path = "models/tiny-math"
[sampling]
num_generations = 4
max_completion_length = 16
[rewards]
funcs = ["length", "accuracy"]
length_target = 8
length_window = 30
[loss]
type = "lambda_grpo"
beta = 0.04
[optim]
learning_rate = 1e-3
[train]
batch_size = 2
max_steps = 4
save_steps = 2
[eval]
limit = 4
max_completion_length = 8
[output]
dir = "{out}"
[lora]
r = 4
lora_alpha = 8
target_modules = ["q_proj", "v_proj", "up_proj"]
"#,
        out = dir.join("run").display(),
    );
    let path = dir.join("config.toml");
    std::fs::write(&path, text).unwrap();
    path
}

fn metrics(dir: &Path) -> Vec<Value> {
    std::fs::read_to_string(dir.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// Metrics that must not depend on an interruption (the stopped run also validated at its
/// last step, hence no `eval/accuracy`).
fn comparable(m: &Value) -> Vec<(String, Value)> {
    m.as_object()
        .unwrap()
        .iter()
        .filter(|(k, _)| {
            !k.starts_with("time_")
                && !["step_time_s", "tokens_per_s", "eval/accuracy"].contains(&k.as_str())
        })
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

#[test]
fn lora_train_resume_generate_and_export() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = write_config(tmp.path());
    let cfg_s = cfg.to_str().unwrap();
    let out = tmp.path().join("run");
    grpo(&["train", "--config", cfg_s]);
    let m = metrics(&out);
    assert_eq!(m.len(), 4);
    for line in &m {
        let d = line["logprob_diff"].as_f64().unwrap();
        assert!(
            d < 1e-4,
            "step {}: logprob_diff {d}: rollouts are not from the policy",
            line["step"]
        );
    }
    assert!(
        m.iter().any(|l| l["kl"].as_f64().unwrap() > 0.0),
        "the adapter moved away from the base"
    );

    // Checkpoints: the adapter in PEFT's layout, no full weights.
    let ck = out.join("checkpoint-4");
    assert!(ck.join("adapter_config.json").is_file());
    assert!(ck.join("adapter_model.safetensors").is_file());
    assert!(!ck.join("model.safetensors").exists());
    let st =
        candle_core::safetensors::load(ck.join("adapter_model.safetensors"), &Device::Cpu).unwrap();
    assert_eq!(st.len(), 2 * 3 * 4, "A and B of 3 projections in 4 layers");
    assert!(st.contains_key("base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight"));

    // Resume from step 2: steps 3-4 equal the uninterrupted run's.
    let out2 = tmp.path().join("run2");
    let set_out = format!("output.dir={}", out2.display());
    grpo(&[
        "train",
        "--config",
        cfg_s,
        "--set",
        &set_out,
        "--set",
        "train.max_steps=2",
    ]);
    grpo(&["train", "--config", cfg_s, "--set", &set_out, "--resume"]);
    let m2 = metrics(&out2);
    assert_eq!(m2.len(), 4);
    for (a, b) in m.iter().zip(&m2) {
        assert_eq!(comparable(a), comparable(b), "step {}", a["step"]);
    }

    // `grpo generate --adapter` gives the adapted model's greedy tokens, and the checkpoint as
    // --model (its base read from adapter_config.json) gives the same.
    let gen = |extra: &[&str]| -> Vec<u64> {
        let mut args = vec![
            "generate",
            "--prompt",
            "What is 7*8?",
            "-t",
            "0",
            "--max-new-tokens",
            "12",
            "--json",
            "--ignore-eos",
        ];
        args.extend_from_slice(extra);
        let o = grpo(&args);
        let v: Value =
            serde_json::from_str(String::from_utf8_lossy(&o.stdout).lines().next().unwrap())
                .unwrap();
        v["token_ids"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_u64().unwrap())
            .collect()
    };
    let ck_s = ck.to_str().unwrap();
    let with_adapter = gen(&["--model", "models/tiny-math", "--adapter", ck_s]);
    assert_eq!(gen(&["--model", ck_s]), with_adapter);

    // `grpo export --merge` writes a plain HF model with the adapted model's logits.
    let merged_dir = tmp.path().join("merged");
    grpo(&[
        "export",
        "--model",
        ck_s,
        "--merge",
        "--out",
        merged_dir.to_str().unwrap(),
    ]);
    assert!(
        merged_dir.join("config.json").is_file() && merged_dir.join("model.safetensors").is_file()
    );
    assert!(merged_dir.join("tokenizer.json").is_file());
    assert_eq!(
        gen(&["--model", merged_dir.to_str().unwrap()]),
        with_adapter
    );
    let merged = Policy::load(&merged_dir, DType::F32, &Device::Cpu).unwrap();
    let adapted = Policy::load(&ck, DType::F32, &Device::Cpu).unwrap();
    let ids = candle_core::Tensor::new(&[[1u32, 20, 30, 40, 50, 60]], &Device::Cpu).unwrap();
    let d = (merged.forward(&ids, None).unwrap() - adapted.forward(&ids, None).unwrap())
        .unwrap()
        .abs()
        .unwrap()
        .max_all()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap();
    assert!(d < 1e-4, "merged vs adapter logits differ by {d}");
    let base = Policy::load(&repo().join("models/tiny-math"), DType::F32, &Device::Cpu).unwrap();
    assert_eq!(base.num_parameters(), merged.num_parameters());

    // Without --merge the adapter alone comes out; --merge on a plain model is an error.
    let adapter_dir = tmp.path().join("adapter");
    grpo(&[
        "export",
        "--model",
        ck_s,
        "--out",
        adapter_dir.to_str().unwrap(),
    ]);
    assert!(adapter_dir.join("adapter_model.safetensors").is_file());
    let bad = Command::new(env!("CARGO_BIN_EXE_grpo"))
        .current_dir(repo())
        .args(["export", "--model", "models/tiny-math", "--merge", "--out"])
        .arg(tmp.path().join("x"))
        .output()
        .unwrap();
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("no LoRA adapter"));
}
