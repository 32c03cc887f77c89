//! Requests sized by memory before anything large is allocated: `grpo generate` and `grpo eval`
//! refuse what cannot fit (naming `-n` / `--max-new-tokens`) and run what can in row batches
//! (the same completions as all at once), and `train.gradient_accumulation_steps = "auto"`
//! picks the micro-batches that fit, logs the number, and resumes. `GRPO_MAX_MEMORY` stands in
//! for a smaller machine.

mod common;

use std::path::Path;
use std::process::{Command, Output};

use common::{fails_with, fixture, grpo, repo, stderr, succeeds, write_train_config};
use grpo::config::Config;
use grpo::model::checkpoint::load_config;
use grpo::model::Tokenizer;
use grpo::sampler::budget::{estimate, GenShape};
use grpo::trainer::memory::{estimate_with, num_parameters, AUTO_ACTIVATION_HEADROOM};

fn grpo_env(args: &[&str], max_memory: u64) -> Output {
    Command::new(env!("CARGO_BIN_EXE_grpo"))
        .args(args)
        .env("GRPO_MAX_MEMORY", max_memory.to_string())
        .output()
        .unwrap()
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn generate_with_ten_million_samples_is_refused_before_loading() {
    let model = fixture("tiny-qwen2");
    let out = grpo(&[
        "generate",
        "--model",
        s(&model),
        "--prompt",
        "2+3=",
        "-n",
        "10000000",
    ]);
    let err = fails_with(
        &out,
        &[
            "-n 10000000",
            "--max-new-tokens 256",
            "is available",
            "not enough memory",
        ],
    );
    // Refused by the pre-check: the weights were never read.
    assert!(!err.contains("loaded"), "{err}");
    // Shorter completions that still cannot be held name the same flags.
    let out = grpo_env(
        &[
            "generate",
            "--model",
            s(&model),
            "--prompt",
            "2+3=",
            "-n",
            "1000",
            "--max-new-tokens",
            "100",
        ],
        100_000,
    );
    fails_with(
        &out,
        &["-n 1000", "--max-new-tokens 100", "0.00 GB is available"],
    );
}

#[test]
fn a_completion_whose_kv_cache_cannot_fit_names_max_new_tokens() {
    let model = fixture("tiny-qwen2");
    let m = load_config(&model).unwrap();
    // Room for the completions but not one row's KV cache of 400 new tokens.
    let shape = GenShape {
        prompts: 1,
        samples: 1,
        longest_prompt: 1,
        max_new_tokens: 400,
    };
    let mem = estimate(&m, &shape);
    let out = grpo_env(
        &[
            "generate",
            "--model",
            s(&model),
            "--prompt",
            "2+3=",
            "--max-new-tokens",
            "400",
            "--no-chat-template",
        ],
        weights(&m) + mem.output + mem.per_row / 4,
    );
    fails_with(
        &out,
        &["--max-new-tokens 400", "KV cache", "lower --max-new-tokens"],
    );
}

/// Bytes of the model's f32 weights, which count against `GRPO_MAX_MEMORY` once loaded.
fn weights(m: &grpo::model::ModelConfig) -> u64 {
    num_parameters(m) * 4
}

/// The prompt's ids as `grpo generate --no-chat-template` encodes them.
fn prompt_len(model: &Path, text: &str) -> usize {
    Tokenizer::load(model)
        .unwrap()
        .encode(text, true)
        .unwrap()
        .len()
}

#[test]
fn a_large_request_that_fits_runs_in_row_batches_with_the_same_completions() {
    let model = fixture("tiny-qwen2");
    let m = load_config(&model).unwrap();
    let (n, new) = (12usize, 10usize);
    let args = |extra: &[&str]| -> Vec<String> {
        let mut a: Vec<String> = [
            "generate",
            "--model",
            s(&model),
            "--prompt",
            "12+7=",
            "--prompt",
            "3*4=",
            "-n",
            "12",
            "--max-new-tokens",
            "10",
            "--no-chat-template",
            "--temperature",
            "1",
            "--seed",
            "5",
            "--json",
            "--ignore-eos",
        ]
        .iter()
        .map(|x| x.to_string())
        .collect();
        a.extend(extra.iter().map(|x| x.to_string()));
        a
    };
    let longest = prompt_len(&model, "12+7=").max(prompt_len(&model, "3*4="));
    let shape = GenShape {
        prompts: 2,
        samples: n,
        longest_prompt: longest,
        max_new_tokens: new,
    };
    let mem = estimate(&m, &shape);
    // Room for all completions and 5.5 decoding rows: batches of 5 of the 24 rows.
    let cap = weights(&m) + mem.output + 5 * mem.per_row + mem.per_row / 2;
    let a = args(&[]);
    let refs: Vec<&str> = a.iter().map(String::as_str).collect();
    let batched = grpo_env(&refs, cap);
    succeeds(&batched);
    let note = stderr(&batched);
    assert!(
        note.contains("24 completions run in batches of 5 rows"),
        "{note}"
    );
    let whole = grpo(&refs);
    succeeds(&whole);
    assert!(!stderr(&whole).contains("run in batches"));
    let lines = |o: &Output| -> Vec<serde_json::Value> {
        String::from_utf8_lossy(&o.stdout)
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    };
    let (b, w) = (lines(&batched), lines(&whole));
    assert_eq!(b.len(), 24);
    for (x, y) in b.iter().zip(&w) {
        assert_eq!(x["token_ids"], y["token_ids"]);
        assert_eq!(x["prompt_index"], y["prompt_index"]);
        assert_eq!(x["sample_index"], y["sample_index"]);
        assert_eq!(x["token_ids"].as_array().unwrap().len(), new);
    }
    // The samples differ from one another (a sampled run, not 24 copies).
    assert_ne!(b[0]["token_ids"], b[1]["token_ids"]);
}

#[test]
fn eval_with_too_many_samples_is_refused_naming_n() {
    let model = fixture("tiny-qwen2");
    let data = repo().join("data/arith/validation.jsonl");
    let out = grpo(&[
        "eval",
        "--model",
        s(&model),
        "--data",
        s(&data),
        "--limit",
        "3",
        "-n",
        "100000000",
        "-t",
        "1",
        "--max-new-tokens",
        "64",
    ]);
    fails_with(
        &out,
        &[
            "-n 100000000",
            "--max-new-tokens 64",
            "or --batch-size",
            "is available",
        ],
    );
}

/// `grpo train` output on the tiny fixture with `auto` micro-batches under `max_memory`.
fn train_auto(dir: &Path, max_memory: Option<u64>, extra: &[&str]) -> Output {
    let cfg = dir.join("auto.toml");
    let mut args = vec!["train", "--config", s(&cfg)];
    args.extend_from_slice(extra);
    match max_memory {
        Some(m) => grpo_env(&args, m),
        None => grpo(&args),
    }
}

fn chosen(log: &str) -> usize {
    let at = log
        .find("train.gradient_accumulation_steps = \"auto\": ")
        .unwrap_or_else(|| panic!("no auto line: {log}"));
    let rest = &log[at + "train.gradient_accumulation_steps = \"auto\": ".len()..];
    rest.split(' ').next().unwrap().parse().unwrap()
}

#[test]
fn auto_micro_batches_fit_the_memory_log_the_number_and_resume() {
    let tmp = tempfile::tempdir().unwrap();
    let out_dir = tmp.path().join("run");
    let cfg_path = write_train_config(
        tmp.path(),
        "auto.toml",
        &out_dir,
        &[
            ("train.gradient_accumulation_steps", "\"auto\""),
            ("train.max_steps", "1"),
            ("train.save_steps", "1"),
            ("sampling.max_completion_length", "64"),
            ("data.max_prompt_length", "32"),
            ("data.validation", "\"\""),
        ],
    );
    // Plenty of memory: one micro-batch (the old default).
    let out = train_auto(tmp.path(), None, &[]);
    succeeds(&out);
    assert_eq!(chosen(&stderr(&out)), 1, "{}", stderr(&out));

    // GRPO_MAX_MEMORY for the resident state (weights included: the cap is the process's)
    // plus less than HEADROOM × one whole-step micro-batch of the shortest possible prompt: 1
    // cannot be chosen, and one row per micro-batch fits.
    let cfg = Config::load(&cfg_path, &[]).unwrap();
    let m = load_config(&fixture("tiny-qwen2")).unwrap();
    let e = estimate_with(&cfg, &m, 1, 0, 1);
    let cap = e.resident + AUTO_ACTIVATION_HEADROOM * e.update * 99 / 100;
    std::fs::remove_dir_all(&out_dir).unwrap();
    let out = train_auto(tmp.path(), Some(cap), &[]);
    succeeds(&out);
    let k = chosen(&stderr(&out));
    assert!(k > 1 && 8 % k == 0, "{k}: {}", stderr(&out));
    let metrics = std::fs::read_to_string(out_dir.join("metrics.jsonl")).unwrap();
    assert!(metrics.lines().count() >= 1);
    // Resumed, `auto` is resolved again (same memory, same number).
    let out = train_auto(
        tmp.path(),
        Some(cap),
        &["--resume", "--set", "train.max_steps=2"],
    );
    succeeds(&out);
    assert_eq!(chosen(&stderr(&out)), k);

    // `grpo config show` prints the key as written and what it resolves to here.
    let out = grpo_env(&["config", "show", "--config", s(&cfg_path)], cap);
    succeeds(&out);
    assert!(String::from_utf8_lossy(&out.stdout).contains("gradient_accumulation_steps = \"auto\""));
    assert!(stderr(&out).contains("resolves to"), "{}", stderr(&out));
}

#[test]
fn a_malformed_max_memory_is_an_error() {
    let out = Command::new(env!("CARGO_BIN_EXE_grpo"))
        .args(["config", "show"])
        .env("GRPO_MAX_MEMORY", "lots")
        .output()
        .unwrap();
    fails_with(&out, &["GRPO_MAX_MEMORY", "lots", "8G"]);
}
