//! Hostile inputs and faults against the `grpo` binary: one run per output folder, inputs
//! bounded before they cost memory, damaged checkpoints named, cleanup after killed saves.
//! Every case must end with a clear error or a documented safe behaviour within seconds.
//!
//! Runs use the shipped 0.85M-parameter `models/tiny-math` for 1-2 steps.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;

mod common;
use common::{
    edit_json, fails_with, grpo, hold_lock, model_copy, read_json, repo, stderr, succeeds,
};

/// A 1-step run of the tiny model into `dir/run`, no validation; `extra` is appended (later
/// keys of a section go in `--set`).
fn config(dir: &Path, extra: &str) -> PathBuf {
    let text = format!(
        r#"
[model]
path = "{model}"
[data]
train = "{data}"
validation = ""
[sampling]
num_generations = 2
max_completion_length = 8
[train]
batch_size = 1
max_steps = 1
seed = 1
[output]
dir = "{out}"
{extra}
"#,
        model = repo().join("models/tiny-math").display(),
        data = repo().join("data/arith/train.jsonl").display(),
        out = dir.join("run").display(),
    );
    let path = dir.join("c.toml");
    std::fs::write(&path, text).unwrap();
    path
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn second_run_into_a_locked_output_dir_stops_naming_the_holder_pid() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = config(tmp.path(), "");
    // Hold the folder's lock the way a running `grpo train` does.
    let run = tmp.path().join("run");
    let lock = hold_lock(&run, 4242, "grpo train");
    let t0 = Instant::now();
    let out = grpo(&["train", "--config", s(&cfg)]);
    fails_with(&out, &["in use by another run", "pid 4242", "grpo train"]);
    let out = grpo(&["train", "--config", s(&cfg), "--resume"]);
    fails_with(&out, &["pid 4242"]);
    let out = grpo(&["sft", "--config", s(&cfg)]);
    fails_with(&out, &["pid 4242"]);
    assert!(t0.elapsed() < Duration::from_secs(30));
    assert!(
        !run.join("metrics.jsonl").exists(),
        "the locked folder was written to"
    );
    // Released: the next run goes ahead.
    drop(lock);
    succeeds(&grpo(&["train", "--config", s(&cfg)]));
}

#[test]
fn sweep_into_a_locked_folder_stops_naming_the_holder_pid() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = config(tmp.path(), "");
    let out_dir = tmp.path().join("sweep");
    let _lock = hold_lock(&out_dir, 777, "grpo sweep");
    let out = grpo(&["sweep", "-c", s(&cfg), "--seeds", "1", "--out", s(&out_dir)]);
    fails_with(&out, &["pid 777", "grpo sweep"]);
}

#[test]
fn concurrent_runs_into_one_output_dir_never_mix() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = config(tmp.path(), "");
    let spawn = |seed: u64| {
        Command::new(env!("CARGO_BIN_EXE_grpo"))
            .args(["train", "--config", s(&cfg)])
            .args([
                "--set",
                &format!("train.seed={seed}"),
                "--set",
                "train.max_steps=2",
            ])
            .stderr(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    };
    let (a, b) = (spawn(1), spawn(2));
    let outs = [a.wait_with_output().unwrap(), b.wait_with_output().unwrap()];
    let ok: Vec<usize> = (0..2).filter(|&i| outs[i].status.success()).collect();
    assert_eq!(
        ok.len(),
        1,
        "exactly one run may succeed: {:?}",
        outs.map(|o| stderr(&o))
    );
    let loser = &outs[1 - ok[0]];
    let err = fails_with(loser, &[]);
    assert!(
        err.contains("in use by another run") || err.contains("already holds"),
        "{err}"
    );
    // The folder holds one run: each step once, the winner's seed in its checkpoint.
    let run = tmp.path().join("run");
    let steps: Vec<u64> = std::fs::read_to_string(run.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["step"]
                .as_u64()
                .unwrap()
        })
        .collect();
    assert_eq!(steps, [1, 2]);
    let summary = read_json(&run.join("summary.json"));
    assert_eq!(summary["seed"], ok[0] as u64 + 1);
}

#[test]
fn stale_lock_from_a_dead_process_does_not_block() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = config(tmp.path(), "");
    let run = tmp.path().join("run");
    std::fs::create_dir_all(&run).unwrap();
    // What a `kill -9`ed run leaves: the file with its pid, no lock held.
    std::fs::write(run.join(".grpo.lock"), "999999\ngrpo train\n").unwrap();
    succeeds(&grpo(&["train", "--config", s(&cfg)]));
    let text = std::fs::read_to_string(run.join(".grpo.lock")).unwrap();
    assert!(!text.starts_with("999999"), "{text}");
}

#[test]
fn empty_output_dir_is_rejected() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = config(tmp.path(), "");
    for cmd in [&["config", "show"][..], &["train"], &["sft"]] {
        let mut args = cmd.to_vec();
        args.extend(["--config", s(&cfg), "--set", "output.dir="]);
        fails_with(&grpo(&args), &["output.dir", "empty"]);
    }
    // clap already refuses an empty --out.
    let out = grpo(&["sweep", "-c", s(&cfg), "--seeds", "1", "--out", ""]);
    fails_with(&out, &["--out"]);
}

/// A data file whose second row is a 10 MB question.
fn long_prompt_data(dir: &Path) -> PathBuf {
    let path = dir.join("long.jsonl");
    let long = "Tom has 3 pens and ".repeat(550_000);
    let text = format!(
        "{{\"question\":\"Tom has 3 pens. How many?\",\"answer\":\"3\"}}\n{{\"question\":\"{long}\",\"answer\":\"3\"}}\n"
    );
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn prompt_longer_than_the_model_is_rejected_naming_file_and_line() {
    let tmp = tempfile::tempdir().unwrap();
    let data = long_prompt_data(tmp.path());
    let cfg = config(tmp.path(), "");
    let t0 = Instant::now();
    let out = grpo(&[
        "train",
        "--config",
        s(&cfg),
        "--set",
        &format!("data.train={}", data.display()),
    ]);
    fails_with(
        &out,
        &[
            "long.jsonl",
            "line 2",
            "max_position_embeddings (512)",
            "data.max_prompt_length",
        ],
    );
    assert!(t0.elapsed() < Duration::from_secs(30), "{:?}", t0.elapsed());
}

#[test]
fn max_prompt_length_truncates_long_prompts_within_seconds() {
    let tmp = tempfile::tempdir().unwrap();
    let data = long_prompt_data(tmp.path());
    let cfg = config(tmp.path(), "");
    let t0 = Instant::now();
    let out = grpo(&[
        "train",
        "--config",
        s(&cfg),
        "--set",
        &format!("data.train={}", data.display()),
        "--set",
        "data.max_prompt_length=64",
        "--set",
        "data.shuffle=false",
        "--set",
        "train.batch_size=2",
    ]);
    succeeds(&out);
    assert!(t0.elapsed() < Duration::from_secs(30), "{:?}", t0.elapsed());
}

#[test]
fn max_prompt_length_beyond_the_model_context_is_rejected() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = config(tmp.path(), "");
    let out = grpo(&[
        "train",
        "--config",
        s(&cfg),
        "--set",
        "data.max_prompt_length=600",
    ]);
    fails_with(
        &out,
        &[
            "data.max_prompt_length = 600",
            "max_position_embeddings (512)",
        ],
    );
}

#[test]
fn runaway_chat_template_fails_fast() {
    let tmp = tempfile::tempdir().unwrap();
    let model = model_copy(tmp.path());
    let cfg = config(tmp.path(), "");
    let model_set = format!("model.path={}", model.display());
    for template in [
        // 10^8 characters.
        "{% for i in range(100000) %}{{ 'x' * 1000 }}{% endfor %}",
        // 10^10 iterations printing nothing.
        "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}",
    ] {
        edit_json(&model.join("tokenizer_config.json"), |v| {
            v["chat_template"] = template.into()
        });
        let t0 = Instant::now();
        let out = grpo(&["train", "--config", s(&cfg), "--set", &model_set]);
        fails_with(&out, &["train.jsonl`: line ", "chat template"]);
        assert!(t0.elapsed() < Duration::from_secs(30), "{:?}", t0.elapsed());
    }
}

#[test]
fn huge_num_generations_fails_on_memory_naming_the_key() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = config(tmp.path(), "");
    let t0 = Instant::now();
    let out = grpo(&[
        "train",
        "--config",
        s(&cfg),
        "--set",
        "sampling.num_generations=10000000",
        "--set",
        "sampling.max_completion_length=256",
    ]);
    fails_with(
        &out,
        &["not enough memory", "sampling.num_generations = 10000000"],
    );
    assert!(t0.elapsed() < Duration::from_secs(30), "{:?}", t0.elapsed());
}

#[test]
fn absurd_num_hidden_layers_fails_fast() {
    let tmp = tempfile::tempdir().unwrap();
    let model = model_copy(tmp.path());
    edit_json(&model.join("config.json"), |v| {
        v["num_hidden_layers"] = 1_000_000_000u64.into()
    });
    let cfg = config(tmp.path(), "");
    let t0 = Instant::now();
    let out = grpo(&[
        "train",
        "--config",
        s(&cfg),
        "--set",
        &format!("model.path={}", model.display()),
    ]);
    fails_with(&out, &["num_hidden_layers = 1000000000", "config.json"]);
    assert!(t0.elapsed() < Duration::from_secs(30), "{:?}", t0.elapsed());
}

#[test]
fn non_float_tensor_dtype_is_rejected() {
    let tmp = tempfile::tempdir().unwrap();
    let model = model_copy(tmp.path());
    // Re-store one weight as I32 with its shape, as a damaged or foreign checkpoint would.
    let file = model.join("model.safetensors");
    let bytes = std::fs::read(&file).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut tensors: Vec<(String, safetensors::Dtype, Vec<usize>, Vec<u8>)> = st
        .tensors()
        .into_iter()
        .map(|(n, v)| (n, v.dtype(), v.shape().to_vec(), v.data().to_vec()))
        .collect();
    let victim = tensors
        .iter_mut()
        .find(|t| t.0 == "model.layers.0.mlp.up_proj.weight")
        .unwrap();
    victim.1 = safetensors::Dtype::I32;
    let views: Vec<(String, safetensors::tensor::TensorView)> = tensors
        .iter()
        .map(|(n, d, s, b)| {
            (
                n.clone(),
                safetensors::tensor::TensorView::new(*d, s.clone(), b).unwrap(),
            )
        })
        .collect();
    safetensors::serialize_to_file(views, None, &file).unwrap();
    let cfg = config(tmp.path(), "");
    let out = grpo(&[
        "train",
        "--config",
        s(&cfg),
        "--set",
        &format!("model.path={}", model.display()),
    ]);
    fails_with(
        &out,
        &["model.layers.0.mlp.up_proj.weight", "I32", "floating point"],
    );
}

#[test]
fn max_position_embeddings_smaller_than_a_prompt_is_rejected() {
    let tmp = tempfile::tempdir().unwrap();
    let model = model_copy(tmp.path());
    edit_json(&model.join("config.json"), |v| {
        v["max_position_embeddings"] = 24.into()
    });
    let cfg = config(tmp.path(), "");
    let out = grpo(&[
        "train",
        "--config",
        s(&cfg),
        "--set",
        &format!("model.path={}", model.display()),
    ]);
    fails_with(
        &out,
        &["train.jsonl", "line ", "max_position_embeddings (24)"],
    );
}

#[test]
fn missing_tokenizer_config_warns_and_names_the_template_used() {
    let tmp = tempfile::tempdir().unwrap();
    let model = model_copy(tmp.path());
    std::fs::remove_file(model.join("tokenizer_config.json")).unwrap();
    let cfg = config(tmp.path(), "");
    let out = grpo(&[
        "train",
        "--config",
        s(&cfg),
        "--set",
        &format!("model.path={}", model.display()),
    ]);
    succeeds(&out);
    let err = stderr(&out);
    assert!(err.contains("WARN"), "{err}");
    assert!(err.contains("has no tokenizer_config.json"), "{err}");
    assert!(err.contains("prompts are rendered as plain text"), "{err}");
    // With it, the log names the chat template's file.
    let out = grpo(&[
        "train",
        "--config",
        s(&cfg),
        "--set",
        &format!("output.dir={}", tmp.path().join("r2").display()),
    ]);
    succeeds(&out);
    assert!(
        stderr(&out).contains("the chat template of")
            && stderr(&out).contains("tokenizer_config.json"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn resume_removes_leftover_saves_and_wall_time_covers_all_processes() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = config(tmp.path(), "");
    let run = tmp.path().join("run");
    succeeds(&grpo(&["train", "--config", s(&cfg)]));
    let first = read_json(&run.join("summary.json"));
    let first_wall = first["wall_time_s"].as_f64().unwrap();
    // What a save killed midway leaves behind.
    for junk in [".grpo-save-Xy12ab", ".checkpoint-2.partial"] {
        std::fs::create_dir_all(run.join(junk)).unwrap();
        std::fs::write(run.join(junk).join("model.safetensors"), "partial").unwrap();
    }
    let out = grpo(&[
        "train",
        "--config",
        s(&cfg),
        "--resume",
        "--set",
        "train.max_steps=2",
    ]);
    succeeds(&out);
    assert!(!run.join(".grpo-save-Xy12ab").exists());
    assert!(!run.join(".checkpoint-2.partial").exists());
    let resumed = read_json(&run.join("summary.json"));
    let state = read_json(&run.join("checkpoint-1/trainer_state.json"));
    let before = state["elapsed_s"].as_f64().unwrap();
    assert!(
        before > 0.0 && before <= first_wall,
        "{before} vs {first_wall}"
    );
    let wall = resumed["wall_time_s"].as_f64().unwrap();
    assert!(
        wall > before,
        "wall_time_s {wall} must include the first process's {before}"
    );
}

#[test]
fn non_utf8_data_file_names_its_line() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("bad.jsonl");
    let mut bytes = b"{\"question\":\"1+1?\",\"answer\":\"2\"}\n".to_vec();
    bytes.extend_from_slice(b"{\"question\":\"2+\xff?\",\"answer\":\"4\"}\n");
    std::fs::write(&data, bytes).unwrap();
    let cfg = config(tmp.path(), "");
    let out = grpo(&[
        "train",
        "--config",
        s(&cfg),
        "--set",
        &format!("data.train={}", data.display()),
    ]);
    let err = fails_with(&out, &["bad.jsonl:2: not valid UTF-8"]);
    assert!(!err.contains("GRPO_DATA_DIR"), "{err}");
}

#[test]
fn config_show_and_train_reject_the_same_bad_values() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = config(tmp.path(), "");
    for (set, needle) in [
        (
            "optim.adam_beta1=1.0",
            "optim.adam_beta1 = 1: expected a number in [0, 1)",
        ),
        ("optim.learning_rate=nan", "optim.learning_rate = NaN"),
        ("loss.beta=nan", "loss.beta = NaN"),
        ("eval.n=0", "eval.n = 0"),
        ("eval.temperature=-1", "eval.temperature = -1"),
        ("data.train=", "data.train: expected"),
        ("sampling.temperature=inf", "sampling.temperature = inf"),
        (
            "sampling.num_generations=10000000",
            "sampling.num_generations = 10000000",
        ),
    ] {
        for cmd in ["config show", "train"] {
            let mut args: Vec<&str> = cmd.split(' ').collect();
            args.extend(["--config", s(&cfg), "--set", set]);
            let t0 = Instant::now();
            fails_with(&grpo(&args), &[needle]);
            assert!(t0.elapsed() < Duration::from_secs(30), "{cmd} --set {set}");
        }
    }
}

#[test]
fn config_show_rejects_what_train_rejects_before_loading_a_model() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = config(tmp.path(), "");
    for (set, needle) in [
        (
            "rewards.funcs=[\"acuracy\"]",
            "unknown reward function `acuracy`",
        ),
        ("model.device=tpu", "model.device"),
        ("data.prompt_template=Solve it", "{question}"),
        ("sampling.stop=[\"\"]", "sampling.stop[0]"),
        // Sections other commands read: checked by every command.
        (
            "lora.lora_alpha=nan",
            "lora.lora_alpha: expected a positive number",
        ),
        ("lora.lora_dropout=1.5", "lora.lora_dropout"),
        ("sft.epochs=0", "sft.max_steps / sft.epochs"),
    ] {
        for cmd in ["config show", "train"] {
            let mut args: Vec<&str> = cmd.split(' ').collect();
            args.extend(["--config", s(&cfg), "--set", set]);
            fails_with(&grpo(&args), &[needle]);
        }
    }
}
