//! Bad input gets a clear error naming the file / key and what was expected, and a non-zero
//! exit: never a panic, never a silent default.

use std::path::{Path, PathBuf};
use std::process::Output;

mod common;
use common::{fixture, grpo};

fn fails_with(out: &Output, needles: &[&str]) {
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "expected failure, got success; stderr: {err}"
    );
    assert!(!err.contains("panicked"), "panic: {err}");
    for n in needles {
        assert!(err.contains(n), "stderr lacks `{n}`: {err}");
    }
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

#[test]
fn unknown_config_key_names_file_line_and_closest_key() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = write(tmp.path(), "c.toml", "[optim]\nlerning_rate = 1e-5\n");
    let out = grpo(&["config", "show", "--config", cfg.to_str().unwrap()]);
    fails_with(
        &out,
        &[
            "c.toml",
            "line 2",
            "lerning_rate",
            "did you mean `learning_rate`",
        ],
    );
}

#[test]
fn wrong_type_names_key() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = write(tmp.path(), "c.toml", "[train]\nmax_steps = \"many\"\n");
    let out = grpo(&["config", "show", "--config", cfg.to_str().unwrap()]);
    fails_with(&out, &["c.toml", "line 2", "train.max_steps", "expected"]);
    let out = grpo(&["config", "show", "--set", "train.seed=abc"]);
    fails_with(&out, &["--set train.seed=abc", "expected"]);
}

#[test]
fn missing_config_file() {
    let out = grpo(&["config", "show", "--config", "/nonexistent/c.toml"]);
    fails_with(&out, &["/nonexistent/c.toml"]);
}

#[test]
fn config_show_prints_resolved_defaults() {
    let out = grpo(&["config", "show", "--set", "loss.type=lambda_grpo"]);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    for key in [
        "[sampling]",
        "num_generations = 8",
        "type = \"lambda_grpo\"",
        "[output]",
    ] {
        assert!(text.contains(key), "{key} missing from:\n{text}");
    }
}

fn train_with_model(dir: &Path, model: &Path) -> Output {
    let cfg = write(
        dir,
        "c.toml",
        &format!(
            "[model]\npath = \"{}\"\n[output]\ndir = \"{}\"\n",
            model.display(),
            dir.join("run").display()
        ),
    );
    grpo(&["train", "--config", cfg.to_str().unwrap()])
}

#[test]
fn missing_model_dir() {
    let tmp = tempfile::tempdir().unwrap();
    let out = train_with_model(tmp.path(), &tmp.path().join("no-such-model"));
    fails_with(&out, &["no-such-model"]);
}

fn copy_fixture(to: &Path) {
    let from = fixture("tiny-qwen2");
    std::fs::create_dir_all(to).unwrap();
    for f in [
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "tokenizer_config.json",
    ] {
        std::fs::copy(from.join(f), to.join(f)).unwrap();
    }
}

#[test]
fn corrupt_safetensors_names_the_file() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tmp.path().join("model");
    copy_fixture(&model);
    let st = model.join("model.safetensors");
    let bytes = std::fs::read(&st).unwrap();
    std::fs::write(&st, &bytes[..bytes.len() / 2]).unwrap();
    let out = train_with_model(tmp.path(), &model);
    fails_with(&out, &["model.safetensors"]);
}

#[test]
fn unsupported_model_type_lists_supported() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tmp.path().join("model");
    copy_fixture(&model);
    let cfg = model.join("config.json");
    let text = std::fs::read_to_string(&cfg)
        .unwrap()
        .replace("\"qwen2\"", "\"gpt2\"");
    std::fs::write(&cfg, text).unwrap();
    let out = train_with_model(tmp.path(), &model);
    fails_with(&out, &["gpt2", "qwen2", "llama"]);
}

/// Every subcommand's `--help` carries its long text with examples (a doc comment on the
/// subcommand's enum variant in main.rs would silently replace it).
#[test]
fn every_subcommand_help_has_examples() {
    for cmd in [
        "train",
        "sweep",
        "init-model",
        "sft",
        "generate",
        "eval",
        "verify",
        "analyze",
        "plot",
    ] {
        let out = grpo(&[cmd, "--help"]);
        assert!(out.status.success(), "{cmd}");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            text.contains("Examples:"),
            "`grpo {cmd} --help` has no examples:\n{text}"
        );
    }
}
