//! Inputs bounded before they cost memory, and saves that leave nothing behind, through the
//! `grpo` binary (issue 19's leftovers): a chat template that doubles a string, prompts longer
//! than the model for `generate` and `eval`, and the staging folder of `sft`'s final save.
//! Each case ends with a clear error or a documented safe behaviour within seconds.

use std::path::{Path, PathBuf};

mod common;
use common::{edit_json, fails_with, grpo, model_copy, repo, stderr, succeeds, within};

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn tiny_math() -> String {
    repo().join("models/tiny-math").display().to_string()
}

/// A JSONL file of `{"question", "answer", "solution"}` rows in `dir/name`.
fn data(dir: &Path, name: &str, questions: &[&str]) -> PathBuf {
    let path = dir.join(name);
    let text: String = questions
        .iter()
        .map(|q| {
            serde_json::json!({"question": q, "answer": "3", "solution": "\\boxed{3}"}).to_string()
                + "\n"
        })
        .collect();
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn chat_template_doubling_a_string_is_stopped_naming_its_file() {
    let tmp = tempfile::tempdir().unwrap();
    let model = model_copy(tmp.path());
    // 60 doublings ask for 2^60 bytes while printing nothing until the end: neither the output
    // cap nor the instruction fuel sees it; the heap budget does.
    edit_json(&model.join("tokenizer_config.json"), |v| {
        v["chat_template"] = "{% set ns = namespace(s='x') %}{% for i in range(60) %}\
             {% set ns.s = ns.s ~ ns.s %}{% endfor %}{{ ns.s }}"
            .into()
    });
    let out = within(30, "generate", || {
        grpo(&[
            "generate",
            "-m",
            s(&model),
            "--prompt",
            "1+1?",
            "--max-new-tokens",
            "2",
        ])
    });
    fails_with(
        &out,
        &[
            "chat template of",
            "tokenizer_config.json",
            "more than 256 MiB",
        ],
    );
    let cfg = common::write_train_config(tmp.path(), "c.toml", &tmp.path().join("run"), &[]);
    let out = within(30, "train", || {
        grpo(&[
            "train",
            "--config",
            s(&cfg),
            "--set",
            &format!("model.path={}", model.display()),
        ])
    });
    fails_with(&out, &["tokenizer_config.json", "more than 256 MiB"]);
}

#[test]
fn generate_prompt_longer_than_the_context_is_rejected_naming_it() {
    let tmp = tempfile::tempdir().unwrap();
    let long = "Tom has 3 pens and ".repeat(600);
    let out = within(30, "generate --prompt", || {
        grpo(&[
            "generate",
            "-m",
            &tiny_math(),
            "--prompt",
            "1+1?",
            "--prompt",
            &long,
        ])
    });
    fails_with(&out, &["--prompt 1", "11400 characters", "512 tokens"]);
    // From a file: its path and line. A 10 MB line is refused as fast.
    let huge = "Tom has 3 pens and ".repeat(550_000);
    let input = tmp.path().join("p.jsonl");
    std::fs::write(
        &input,
        format!("{{\"prompt\":\"1+1?\"}}\n{{\"prompt\":\"{huge}\"}}\n"),
    )
    .unwrap();
    let out = within(30, "generate --input", || {
        grpo(&["generate", "-m", &tiny_math(), "--input", s(&input)])
    });
    fails_with(&out, &["p.jsonl:2", "512 tokens"]);
}

#[test]
fn generate_new_tokens_are_capped_at_what_the_context_leaves() {
    let out = grpo(&[
        "generate",
        "-m",
        &tiny_math(),
        "--prompt",
        "1+1?",
        "--max-new-tokens",
        "4000",
        "-t",
        "0",
        "--json",
    ]);
    succeeds(&out);
    let err = stderr(&out);
    assert!(err.contains("--max-new-tokens 4000 capped at"), "{err}");
    let line: serde_json::Value =
        serde_json::from_str(String::from_utf8_lossy(&out.stdout).lines().next().unwrap()).unwrap();
    assert!(line["token_ids"].as_array().unwrap().len() < 512, "{line}");
}

#[test]
fn eval_problem_longer_than_the_context_is_rejected_naming_its_line() {
    let tmp = tempfile::tempdir().unwrap();
    let long = "Tom has 3 pens and ".repeat(550_000);
    let file = data(tmp.path(), "long.jsonl", &["1+1?", &long]);
    let out = within(30, "eval", || {
        grpo(&[
            "eval",
            "-m",
            &tiny_math(),
            "--data",
            s(&file),
            "--max-new-tokens",
            "4",
        ])
    });
    fails_with(&out, &["long: problem", "(line 2)", "--max-prompt-length"]);
    // Documented alternative: keep the end of each prompt.
    let out = within(30, "eval --max-prompt-length", || {
        grpo(&[
            "eval",
            "-m",
            &tiny_math(),
            "--data",
            s(&file),
            "--max-new-tokens",
            "4",
            "--max-prompt-length",
            "64",
        ])
    });
    succeeds(&out);
}

#[test]
fn sft_cleans_a_killed_final_save_and_stages_inside_its_output_dir() {
    let tmp = tempfile::tempdir().unwrap();
    let rows: Vec<String> = (0..4).map(|i| format!("{i}+1?")).collect();
    let rows: Vec<&str> = rows.iter().map(String::as_str).collect();
    let train = data(tmp.path(), "t.jsonl", &rows);
    let run = tmp.path().join("run");
    let cfg = common::write_train_config(
        tmp.path(),
        "c.toml",
        &run,
        &[
            ("model.path", &format!("{:?}", tiny_math())),
            ("data.train", &format!("{:?}", s(&train))),
            ("data.validation", "\"\""),
            ("sft.max_steps", "1"),
            ("sft.batch_size", "2"),
        ],
    );
    // What a final save killed midway leaves: its staging folder inside output.dir.
    let junk = run.join(".grpo-save-Ab12Cd");
    std::fs::create_dir_all(&junk).unwrap();
    std::fs::write(junk.join("model.safetensors"), "partial").unwrap();
    let out = grpo(&["sft", "--config", s(&cfg)]);
    succeeds(&out);
    assert!(!junk.exists(), "{}", stderr(&out));
    assert!(run.join("model.safetensors").exists());
    // The final save into the existing folder staged inside it, not in the shared parent.
    let strays: Vec<String> = std::fs::read_dir(tmp.path())
        .unwrap()
        .chain(std::fs::read_dir(&run).unwrap())
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".grpo-save-"))
        .collect();
    assert!(strays.is_empty(), "{strays:?}");
}
