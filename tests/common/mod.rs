//! Helpers shared by the integration tests: where the repository and its vendored fixtures are,
//! how to run the built binary, and the small training config most end-to-end tests start from.
//!
//! Each test file that uses it declares `mod common;`, so a helper one file leaves unused is not
//! dead code of the crate.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The repository root.
pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A vendored fixture under `tests/fixtures/` (`tiny-qwen2`, `tiny-llama`, `losses.json`; origin
/// and how to rebuild them: `tests/fixtures/README.md`).
pub fn fixture(name: &str) -> PathBuf {
    repo().join("tests/fixtures").join(name)
}

/// Runs the `grpo` binary built for this test run.
pub fn grpo(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_grpo"))
        .args(args)
        .output()
        .expect("running grpo")
}

/// A CI-sized training config on the tiny-qwen2 fixture and the shipped arithmetic task, writing
/// into `out`. `set` overrides or adds keys as `("section.key", TOML literal)`, like `--set`.
///
/// Base: 2 prompts × 4 completions of at most 12 tokens, a length reward next to accuracy (so
/// rewards vary even for a random model), `lambda_grpo`, lr 1e-3, 2 steps, no checkpoints, and a
/// 4-problem validation of 8 tokens.
pub fn train_toml(out: &Path, set: &[(&str, &str)]) -> String {
    let base = format!(
        r#"
[model]
path = "{model}"
[data]
train = "{data}/arith/train.jsonl"
validation = "{data}/arith/validation.jsonl"
[sampling]
num_generations = 4
max_completion_length = 12
[rewards]
funcs = ["length", "accuracy"]
length_target = 8
length_window = 30
[loss]
type = "lambda_grpo"
[optim]
learning_rate = 1e-3
[train]
batch_size = 2
max_steps = 2
save_steps = 0
[eval]
limit = 4
max_completion_length = 8
[output]
dir = "{out}"
"#,
        model = toml_path(&fixture("tiny-qwen2")),
        data = toml_path(&repo().join("data")),
        out = toml_path(out),
    );
    let mut table: toml::Table = base.parse().expect("base config");
    for (key, value) in set {
        let (section, name) = key.split_once('.').expect("section.key");
        let value: toml::Value = format!("v = {value}")
            .parse::<toml::Table>()
            .unwrap_or_else(|e| panic!("{key} = {value}: {e}"))
            .remove("v")
            .unwrap();
        table
            .entry(section)
            .or_insert_with(|| toml::Value::Table(Default::default()))
            .as_table_mut()
            .expect("a section")
            .insert(name.to_string(), value);
    }
    toml::to_string(&table).expect("serialising the config")
}

/// Writes [`train_toml`] to `dir/name` and returns its path.
pub fn write_train_config(dir: &Path, name: &str, out: &Path, set: &[(&str, &str)]) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, train_toml(out, set)).unwrap();
    path
}

/// A path as a TOML basic string, quotes included (a `set` value of [`train_toml`]).
pub fn toml_string(p: &Path) -> String {
    format!("\"{}\"", toml_path(p))
}

/// A path as the inside of a TOML basic string (backslashes escaped, for Windows paths).
fn toml_path(p: &Path) -> String {
    p.display().to_string().replace('\\', "\\\\")
}

/// The process's stderr as text.
pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Asserts a clean failure (exit 2, no panic) whose message holds every needle; returns it.
pub fn fails_with(out: &Output, needles: &[&str]) -> String {
    let err = stderr(out);
    assert_eq!(out.status.code(), Some(2), "expected exit 2; stderr: {err}");
    assert!(!err.contains("panicked"), "panic: {err}");
    for n in needles {
        assert!(err.contains(n), "stderr lacks `{n}`: {err}");
    }
    err
}

/// Asserts the process exited 0.
pub fn succeeds(out: &Output) {
    assert!(out.status.success(), "grpo failed: {}", stderr(out));
}

/// A copy of the shipped `models/tiny-math` in `dir/model`, for a test to damage.
pub fn model_copy(dir: &Path) -> PathBuf {
    let to = dir.join("model");
    std::fs::create_dir_all(&to).unwrap();
    for e in std::fs::read_dir(repo().join("models/tiny-math")).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
    }
    to
}

/// A JSON file, parsed.
pub fn read_json(path: &Path) -> serde_json::Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap()
}

/// Rewrites a JSON file through `f`.
pub fn edit_json(path: &Path, f: impl FnOnce(&mut serde_json::Value)) {
    let mut v = read_json(path);
    f(&mut v);
    std::fs::write(path, serde_json::to_string_pretty(&v).unwrap()).unwrap();
}

/// Holds `dir`'s run lock the way a running `grpo` does (pid and command in the file) until
/// the returned file is dropped.
pub fn hold_lock(dir: &Path, pid: u32, command: &str) -> std::fs::File {
    use std::io::Write;
    std::fs::create_dir_all(dir).unwrap();
    let mut lock = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(dir.join(".grpo.lock"))
        .unwrap();
    lock.try_lock().unwrap();
    write!(lock, "{pid}\n{command}\n").unwrap();
    lock
}

/// Runs `f` and asserts it took less than `secs` seconds (hostile inputs must fail fast).
pub fn within<T>(secs: u64, what: &str, f: impl FnOnce() -> T) -> T {
    let t0 = std::time::Instant::now();
    let out = f();
    let took = t0.elapsed();
    assert!(took.as_secs() < secs, "{what} took {took:?}");
    out
}

/// The records of a run's `metrics.jsonl`, in order.
pub fn metrics(dir: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(dir.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// ‖t‖₂ of an f32 tensor.
pub fn l2_norm(t: &candle_core::Tensor) -> f64 {
    t.sqr()
        .unwrap()
        .sum_all()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap()
        .sqrt() as f64
}

/// Log-probs of each next token from host logits `[rows, len, vocab]` of the sequences `ids`
/// (`[rows, len]`): `rows × (len − 1)` values, as the trainer's `completion_logprobs`.
pub fn next_token_logprobs(
    logits: &[f32],
    ids: &[u32],
    rows: usize,
    len: usize,
    vocab: usize,
) -> Vec<f32> {
    let mut out = Vec::with_capacity(rows * (len - 1));
    for r in 0..rows {
        for i in 0..len - 1 {
            let z = &logits[(r * len + i) * vocab..(r * len + i + 1) * vocab];
            let m = z.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
            let lse = m + z.iter().map(|x| (x - m).exp()).sum::<f32>().ln();
            out.push(z[ids[r * len + i + 1] as usize] - lse);
        }
    }
    out
}

/// Mean |a − b|, as `logprob_diff`.
pub fn mean_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).sum::<f32>() / a.len() as f32
}
