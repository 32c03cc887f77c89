//! Typed TOML configuration.
//!
//! A run is described by one TOML file with the sections `model`, `data`, `sampling`, `rewards`,
//! `loss`, `optim`, `train`, `eval` and `output`. Key names follow TRL's `GRPOConfig` where one
//! exists (`num_generations`, `beta`, `epsilon`, `max_completion_length`, `temperature`,
//! `scale_rewards`, ...), so a TRL user can read a config without a manual.
//!
//! Loading is staged, as in ripgrep's low → high args: the file (plus `--set` overrides) is
//! parsed into [`Config`] with `deny_unknown_fields`; [`Config::validate`] checks keys against
//! each other, the way TRL's `__post_init__` does; and `Config::resolve` (in
//! [`crate::resolve`], the layer that knows the sampler, rewards and prompt types) builds what
//! a run needs from it once. Every error names the file, the key and what was expected; for an
//! unknown key it also names the closest valid one.
//!
//! This module is the ground floor: it imports nothing else of the crate. It owns the enums its
//! keys hold ([`LossType`], [`ProcessWeighting`], [`ScaleRewards`], [`DType`], ...), the loss
//! shorthand ([`LossType::resolve`]) and the device / dtype names every subcommand accepts.

use std::fmt;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use serde::{Deserialize, Serialize};

mod accumulation;
mod device;
pub mod lora;
mod loss;
mod ranges;
mod sft;

pub use accumulation::Accumulation;
pub use device::{parse_device, DType, Device};
pub use loss::{Aggregation, LossSection, LossType, ProcessWeighting, ResolvedLoss, ScaleRewards};
pub use sft::{SftInit, SftSection};

/// The whole run, one struct per TOML section.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub model: ModelSection,
    pub data: DataSection,
    pub sampling: SamplingSection,
    pub rewards: RewardsSection,
    pub loss: LossSection,
    pub optim: OptimSection,
    pub train: TrainSection,
    pub eval: EvalSection,
    pub output: OutputSection,
    pub sft: SftSection,
    /// LoRA adapters instead of full fine-tuning when `lora.r > 0` (PEFT's `LoraConfig` keys).
    pub lora: lora::LoraConfig,
}

/// `[model]`: which checkpoint to train and in what precision.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ModelSection {
    /// A local Hugging Face directory or a hub id (downloaded into the Hugging Face cache if
    /// needed).
    pub path: String,
    /// Hub revision, used only for hub ids.
    pub revision: Option<String>,
    /// `f32` (CPU default), `bf16` or `f16` (for devices that support them).
    pub dtype: DType,
    /// `cpu` or `cuda` / `cuda:N` (needs a build with the `cuda` feature).
    pub device: Device,
    /// Load weights holding NaN or infinite values instead of refusing them (as
    /// `--allow-non-finite` does).
    pub allow_non_finite: bool,
}

impl Default for ModelSection {
    fn default() -> Self {
        Self {
            path: "models/tiny-math".into(),
            revision: None,
            dtype: DType::F32,
            device: Device::Cpu,
            allow_non_finite: false,
        }
    }
}

/// `[data]`: where prompts and gold answers come from, and how prompts are built.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct DataSection {
    /// Training set: a JSONL file or the name of a shipped benchmark / built-in task split.
    pub train: String,
    /// Validation set (file or name) used for `initial_val_accuracy` / `final_val_accuracy`
    /// and `eval.every`; empty = none.
    pub validation: String,
    /// A data set on the Hugging Face Hub (`openai/gsm8k`) to train on instead of `train`
    /// (TRL's `dataset_name`); empty = none. Its Parquet / JSONL files are fetched into the
    /// hub cache.
    pub dataset_name: String,
    /// The data set's config (`main` of `openai/gsm8k`); empty = its only or `default` one.
    pub dataset_config: String,
    /// Split of `dataset_name` to train on.
    pub train_split: String,
    /// Split of `dataset_name` to validate on; empty = none (then `validation` applies when set).
    pub validation_split: String,
    pub question_field: String,
    pub answer_field: String,
    /// System message for the chat template; empty = none.
    pub system_prompt: String,
    /// User message; `{question}` is replaced by the problem.
    pub prompt_template: String,
    /// Render prompts with the checkpoint's own chat template (falls back to the raw user
    /// message when the checkpoint has none).
    pub use_chat_template: bool,
    /// Prompts longer than this (in tokens) are left-truncated; 0 = no limit.
    pub max_prompt_length: usize,
    pub shuffle: bool,
}

impl Default for DataSection {
    fn default() -> Self {
        Self {
            train: "data/arith/train.jsonl".into(),
            validation: "data/arith/validation.jsonl".into(),
            dataset_name: String::new(),
            dataset_config: String::new(),
            train_split: "train".into(),
            validation_split: String::new(),
            question_field: "question".into(),
            answer_field: "answer".into(),
            system_prompt: String::new(),
            prompt_template: "{question}".into(),
            use_chat_template: true,
            max_prompt_length: 0,
            shuffle: true,
        }
    }
}

/// `[sampling]`: rollout generation (TRL names).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct SamplingSection {
    /// G, completions per prompt.
    pub num_generations: usize,
    pub max_completion_length: usize,
    pub temperature: f64,
    pub top_p: f64,
    /// 0 = off.
    pub top_k: usize,
    /// 0 = off.
    pub min_p: f64,
    /// Extra stop strings (EOS ids always stop).
    pub stop: Vec<String>,
    /// When non-empty, only these tokens (each must be a single token of the tokenizer) can be
    /// sampled, and log-probs are renormalised over them (the `tree` toy task's L/R alphabet).
    pub allowed_tokens: Vec<String>,
}

impl Default for SamplingSection {
    fn default() -> Self {
        Self {
            num_generations: 8,
            max_completion_length: 256,
            temperature: 1.0,
            top_p: 1.0,
            top_k: 0,
            min_p: 0.0,
            stop: Vec::new(),
            allowed_tokens: Vec::new(),
        }
    }
}

/// `[rewards]`: outcome reward functions, summed with weights (TRL's `reward_funcs` /
/// `reward_weights`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RewardsSection {
    /// Names of reward functions: `accuracy`, `format`, `length`.
    pub funcs: Vec<String>,
    /// One weight per function; empty = all 1.0.
    pub weights: Vec<f64>,
    /// How a completion's answer is found: `default` (math-verify's extraction), `lenient`
    /// (last `\boxed{}`, `####`, "the answer is"), `math`, `gsm8k` (also the last number),
    /// `boxed` (only `\boxed{}`).
    pub extract: String,
    /// `format` reward: `boxed` (exactly one `\boxed{}`) or `think` (`<think>…</think>` then
    /// an answer).
    pub format: String,
    /// `length` reward: 0 up to `length_target` characters, falling linearly to −1 at
    /// `length_target + length_window`.
    pub length_target: usize,
    pub length_window: usize,
    /// `tree` reward (toy task): paths sharing the target's first `tree_n` moves but not the
    /// target score `tree_r_neg`; other non-target paths `tree_r_other`; the target 1.0.
    pub tree_n: usize,
    pub tree_r_neg: f64,
    pub tree_r_other: f64,
}

impl Default for RewardsSection {
    fn default() -> Self {
        Self {
            funcs: vec!["accuracy".into()],
            weights: Vec::new(),
            extract: "default".into(),
            format: "boxed".into(),
            length_target: 4000,
            length_window: 4000,
            tree_n: 1,
            tree_r_neg: -1.0,
            tree_r_other: 0.7,
        }
    }
}

impl RewardsSection {
    /// `rewards.extract` spellings: the documented four, then the verifier's aliases for them
    /// (`Config::resolve` maps a name to its extraction policy).
    pub const EXTRACT_NAMES: &'static [&'static str] = &[
        "default",
        "math",
        "gsm8k",
        "boxed",
        "lenient",
        "math500",
        "minerva",
        "minerva_math",
        "olympiadbench",
        "aime",
        "aime24",
        "amc",
        "amc23",
        "boxed_only",
        "strict",
        "math_verify",
        "math-verify",
    ];

    /// Names checked here, so that `grpo config show` rejects what a run would reject.
    fn validate(&self) -> Result<()> {
        if !Self::EXTRACT_NAMES.contains(&self.extract.to_ascii_lowercase().as_str()) {
            bail!(
                "rewards.extract: expected one of default, lenient, math, gsm8k, boxed; got `{}`",
                self.extract
            );
        }
        if !matches!(self.format.as_str(), "boxed" | "think") {
            bail!(
                "rewards.format: expected `boxed` or `think`, got `{}`",
                self.format
            );
        }
        Ok(())
    }
}

/// `[optim]`: AdamW (or SGD) with warmup and a constant / cosine / linear schedule.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct OptimSection {
    /// `adamw` (default; `adamw_torch` is accepted, as in transformers) or `sgd`.
    pub optim: OptimKind,
    pub learning_rate: f64,
    pub adam_beta1: f64,
    pub adam_beta2: f64,
    pub adam_epsilon: f64,
    pub weight_decay: f64,
    /// Global-norm gradient clipping; 0 = off.
    pub max_grad_norm: f64,
    /// `constant`, `cosine` or `linear` (after warmup).
    pub lr_scheduler_type: LrScheduler,
    pub warmup_steps: usize,
}

impl Default for OptimSection {
    fn default() -> Self {
        Self {
            optim: OptimKind::Adamw,
            learning_rate: 1e-6,
            adam_beta1: 0.9,
            adam_beta2: 0.999,
            adam_epsilon: 1e-8,
            weight_decay: 0.0,
            max_grad_norm: 1.0,
            lr_scheduler_type: LrScheduler::Constant,
            warmup_steps: 0,
        }
    }
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum OptimKind {
    #[serde(alias = "adamw_torch")]
    Adamw,
    Sgd,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LrScheduler {
    Constant,
    Cosine,
    Linear,
}

/// `[train]`: the loop.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct TrainSection {
    /// Prompts per optimizer step (each gets `num_generations` completions).
    pub batch_size: usize,
    /// Micro-batches per optimizer step (the step's B·G completions are split evenly), or
    /// `"auto"`: the fewest whose activations fit the memory left (see [`Accumulation`]).
    pub gradient_accumulation_steps: Accumulation,
    pub max_steps: usize,
    pub seed: u64,
    /// Checkpoint every N steps (and always at the end); 0 = only at the end.
    pub save_steps: usize,
    /// Keep at most this many checkpoints, deleting the oldest (TRL's `save_total_limit`);
    /// 0 = keep all.
    pub save_total_limit: usize,
    pub logging_steps: usize,
    /// Write each step's groups to `output.dir/rollouts/step-N.jsonl`.
    pub save_rollouts: bool,
    /// Abort after this many consecutive steps with a NaN/Inf loss or gradient.
    pub max_nonfinite_steps: usize,
    /// What the update's forward computes once per micro-batch instead of once per completion.
    pub share_prefixes: SharePrefixes,
}

/// `train.share_prefixes`: `prompt` runs each group's prompt once in the update's forward and
/// backward (its keys and values read by the G completions); `tree` also each completion
/// prefix the group's completions have in common (each node of its prefix tree); `none` runs
/// every completion with its own copy. All give the same loss and gradients up to float
/// rounding.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum SharePrefixes {
    Prompt,
    /// The default: fewest tokens, fastest (on the default run 916 tokens per step vs 1,542
    /// for `prompt` and 5,376 for `none`).
    #[default]
    Tree,
    None,
}

impl Default for TrainSection {
    fn default() -> Self {
        Self {
            batch_size: 4,
            gradient_accumulation_steps: Accumulation::Auto,
            max_steps: 100,
            seed: 42,
            save_steps: 0,
            save_total_limit: 0,
            logging_steps: 1,
            save_rollouts: false,
            max_nonfinite_steps: 5,
            share_prefixes: SharePrefixes::default(),
        }
    }
}

/// `[eval]`: validation during and around training.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct EvalSection {
    /// Evaluate on `data.validation` every N steps; 0 = only before and after training.
    pub every: usize,
    /// Use at most this many validation problems; 0 = all.
    pub limit: usize,
    /// Samples per problem.
    pub n: usize,
    pub temperature: f64,
    pub max_completion_length: usize,
}

impl Default for EvalSection {
    fn default() -> Self {
        Self {
            every: 0,
            limit: 0,
            n: 1,
            temperature: 0.0,
            max_completion_length: 256,
        }
    }
}

/// `[output]`: where metrics and checkpoints go.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct OutputSection {
    pub dir: PathBuf,
}

impl Default for OutputSection {
    fn default() -> Self {
        Self {
            dir: PathBuf::from("runs/default"),
        }
    }
}

/// A config error that already carries its location (`file: key: message`).
#[derive(Debug)]
pub struct ConfigError(pub String);

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ConfigError {}

impl Config {
    /// Reads `path`, applies `--set section.key=value` overrides, validates.
    pub fn load(path: &Path, overrides: &[String]) -> Result<Config> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read config file {}", path.display()))?;
        Self::from_toml_str(&text, &path.display().to_string(), overrides)
    }

    /// Like [`Config::load`] for text already in memory; `origin` names it in errors.
    pub fn from_toml_str(text: &str, origin: &str, overrides: &[String]) -> Result<Config> {
        // Parse the file alone first, so errors in it carry its line numbers.
        let mut value: toml::Table = toml::from_str(text)
            .map_err(|e| ConfigError(format!("{origin}: {}", describe_toml_error(&e, text))))?;
        let _: Config = toml::from_str(text)
            .map_err(|e| ConfigError(format!("{origin}: {}", describe_toml_error(&e, text))))?;
        // Apply overrides one at a time so an error names the `--set` that caused it.
        for ov in overrides {
            apply_override(&mut value, ov)?;
            Config::deserialize(toml::Value::Table(value.clone()))
                .map_err(|e| ConfigError(format!("--set {ov}: {}", describe_toml_error(&e, ""))))?;
        }
        let cfg: Config = Config::deserialize(toml::Value::Table(value))
            .map_err(|e| ConfigError(format!("{origin}: {}", describe_toml_error(&e, ""))))?;
        cfg.validate()
            .map_err(|e| ConfigError(format!("{origin}: {e}")))?;
        Ok(cfg)
    }

    /// The built-in defaults plus overrides (for commands that run without a file).
    pub fn from_overrides(overrides: &[String]) -> Result<Config> {
        Self::from_toml_str("", "defaults", overrides)
    }

    /// Cross-key checks, with messages that name the fix.
    pub fn validate(&self) -> Result<()> {
        ranges::check(self)?;
        let s = &self.sampling;
        if s.num_generations < 2 {
            bail!(
                "sampling.num_generations: expected at least 2 (group-relative advantages need a group), got {}",
                s.num_generations
            );
        }
        if s.max_completion_length == 0 {
            bail!("sampling.max_completion_length: expected a positive number of tokens");
        }
        if s.temperature.is_nan() || s.temperature <= 0.0 {
            bail!(
                "sampling.temperature: expected > 0 for training rollouts (log-probs are taken from logits / temperature), got {}",
                s.temperature
            );
        }
        if !(s.top_p > 0.0 && s.top_p <= 1.0) {
            bail!(
                "sampling.top_p: expected a value in (0, 1], got {}",
                s.top_p
            );
        }
        if !(0.0..1.0).contains(&s.min_p) {
            bail!(
                "sampling.min_p: expected a value in [0, 1), got {}",
                s.min_p
            );
        }
        let l = &self.loss;
        l.resolved()?;
        self.lora.validate("lora")?;
        // `grpo sft` reads [sft]; `config show` and `train` check it too, so that every
        // command names the same bad value.
        self.sft.validate()?;
        if l.beta < 0.0 {
            bail!("loss.beta: expected >= 0, got {}", l.beta);
        }
        if l.epsilon < 0.0 || l.epsilon_high.is_some_and(|e| e < 0.0) {
            bail!("loss.epsilon / loss.epsilon_high: expected >= 0");
        }
        if l.num_iterations == 0 {
            bail!("loss.num_iterations: expected at least 1");
        }
        let t = &self.train;
        if t.batch_size == 0 {
            bail!("train.batch_size: expected at least 1 prompt per step");
        }
        if let Some(k) = t.gradient_accumulation_steps.fixed() {
            if k == 0 {
                bail!("train.gradient_accumulation_steps: expected at least 1 (or \"auto\")");
            }
            let n = t.batch_size * s.num_generations;
            if !n.is_multiple_of(k) {
                bail!(
                    "train.gradient_accumulation_steps: the step's batch_size × num_generations = {n} completions must be divisible by gradient_accumulation_steps ({k}); change one of them, or use \"auto\""
                );
            }
        }
        if t.logging_steps == 0 {
            bail!("train.logging_steps: expected at least 1");
        }
        if !self.rewards.weights.is_empty()
            && self.rewards.weights.len() != self.rewards.funcs.len()
        {
            bail!(
                "rewards.weights: expected one weight per reward function ({} funcs, {} weights)",
                self.rewards.funcs.len(),
                self.rewards.weights.len()
            );
        }
        self.rewards.validate()?;
        if self.rewards.funcs.is_empty() {
            bail!("rewards.funcs: expected at least one reward function, e.g. [\"accuracy\"]");
        }
        if self.optim.learning_rate < 0.0 {
            bail!("optim.learning_rate: expected >= 0");
        }
        if self.model.path.is_empty() {
            bail!("model.path: expected a model directory or hub id");
        }
        Ok(())
    }

    /// The resolved config as TOML (defaults included), for `grpo config show` and summaries.
    pub fn to_toml(&self) -> Result<String> {
        toml::to_string_pretty(self).context("serialising the config")
    }

    /// Rewards as (name, weight) pairs with missing weights filled in.
    pub fn reward_weights(&self) -> Vec<(String, f64)> {
        self.rewards
            .funcs
            .iter()
            .enumerate()
            .map(|(i, n)| {
                (
                    n.clone(),
                    self.rewards.weights.get(i).copied().unwrap_or(1.0),
                )
            })
            .collect()
    }
}

/// Applies one `section.key=value` override. The value is read as a TOML literal (`4`, `1e-6`,
/// `true`, `["a", "b"]`) and falls back to a plain string (`runs/x`, `grpo`).
fn apply_override(table: &mut toml::Table, spec: &str) -> Result<()> {
    let (key, raw) = spec
        .split_once('=')
        .ok_or_else(|| anyhow!("--set {spec}: expected section.key=value"))?;
    let key = key.trim();
    let parts: Vec<&str> = key.split('.').collect();
    if parts.len() < 2 || parts.iter().any(|p| p.is_empty()) {
        bail!("--set {spec}: expected section.key=value, e.g. train.max_steps=4");
    }
    let value = parse_literal(raw.trim());
    let mut cur = table;
    for (i, part) in parts.iter().enumerate() {
        if i + 1 == parts.len() {
            cur.insert(part.to_string(), value);
            return Ok(());
        }
        let entry = cur
            .entry(part.to_string())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        cur = entry
            .as_table_mut()
            .ok_or_else(|| anyhow!("--set {spec}: `{part}` is not a section"))?;
    }
    Ok(())
}

fn parse_literal(raw: &str) -> toml::Value {
    #[derive(Deserialize)]
    struct Wrap {
        v: toml::Value,
    }
    match toml::from_str::<Wrap>(&format!("v = {raw}")) {
        Ok(w) => w.v,
        Err(_) => toml::Value::String(raw.to_string()),
    }
}

/// Turns a toml error into `line N: section.key: message`, adding the closest valid key for
/// unknown ones.
fn describe_toml_error(err: &toml::de::Error, text: &str) -> String {
    let msg = err.message().trim().to_string();
    let location = err
        .span()
        .filter(|_| !text.is_empty())
        .map(|span| {
            let start = span.start.min(text.len());
            let line_no = text[..start].matches('\n').count() + 1;
            let line = text.lines().nth(line_no - 1).unwrap_or("").trim();
            let section = text[..start]
                .lines()
                .rev()
                .map(str::trim)
                .find(|l| l.starts_with('[') && l.ends_with(']'))
                .map(|l| l.trim_matches(|c| c == '[' || c == ']').trim().to_string());
            let key = line
                .split_once('=')
                .map(|(k, _)| k.trim().trim_matches('"').to_string())
                .filter(|k| !k.is_empty() && !line.starts_with('['));
            let path = match (section, key) {
                (Some(s), Some(k)) => format!("{s}.{k}: "),
                (None, Some(k)) => format!("{k}: "),
                _ => String::new(),
            };
            format!("line {line_no}: {path}")
        })
        .unwrap_or_default();
    let hint = suggest_unknown_field(&msg)
        .map(|s| format!(" (did you mean `{s}`?)"))
        .unwrap_or_default();
    format!("{location}{msg}{hint}")
}

/// serde reports "unknown field `x`, expected one of `a`, `b`": find the closest of those.
fn suggest_unknown_field(msg: &str) -> Option<String> {
    let rest = msg.strip_prefix("unknown field `")?;
    let (bad, expected) = rest.split_once('`')?;
    let candidates: Vec<&str> = expected.split('`').skip(1).step_by(2).collect();
    candidates
        .into_iter()
        .map(|c| (strsim::damerau_levenshtein(bad, c), c))
        .filter(|(d, c)| *d <= 3.max(c.len() / 3))
        .min()
        .map(|(_, c)| c.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(text: &str, overrides: &[&str]) -> String {
        let ov: Vec<String> = overrides.iter().map(|s| s.to_string()).collect();
        format!(
            "{:#}",
            Config::from_toml_str(text, "c.toml", &ov).unwrap_err()
        )
    }

    #[test]
    fn defaults_validate_and_round_trip() {
        let cfg = Config::from_overrides(&[]).unwrap();
        let text = cfg.to_toml().unwrap();
        let back = Config::from_toml_str(&text, "shown", &[]).unwrap();
        assert_eq!(cfg, back);
    }

    #[test]
    fn unknown_key_names_line_and_closest_key() {
        let e = err("[optim]\nlearning_rate = 1e-5\nlerning_rate = 2\n", &[]);
        assert!(e.contains("c.toml: line 3"), "{e}");
        assert!(e.contains("lerning_rate"), "{e}");
        assert!(e.contains("did you mean `learning_rate`"), "{e}");
    }

    #[test]
    fn wrong_type_names_key() {
        let e = err("[train]\nmax_steps = \"ten\"\n", &[]);
        assert!(
            e.contains("c.toml: line 2: train.max_steps: invalid type"),
            "{e}"
        );
    }

    #[test]
    fn set_overrides_are_typed() {
        let ov = [
            "train.max_steps=4".to_string(),
            "output.dir=runs/x".to_string(),
            "loss.type=lambda_grpo".to_string(),
            "optim.learning_rate=3e-5".to_string(),
            "sampling.stop=[\"\\n\\n\"]".to_string(),
        ];
        let cfg = Config::from_toml_str("[train]\nmax_steps = 9\n", "c.toml", &ov).unwrap();
        assert_eq!(cfg.train.max_steps, 4);
        assert_eq!(cfg.output.dir, PathBuf::from("runs/x"));
        assert_eq!(cfg.loss.loss_type, LossType::LambdaGrpo);
        assert_eq!(cfg.optim.learning_rate, 3e-5);
        assert_eq!(cfg.sampling.stop, vec!["\n\n".to_string()]);
    }

    #[test]
    fn bad_override_is_reported() {
        let e = err("", &["train.max_step=4"]);
        assert!(e.contains("--set"), "{e}");
        assert!(e.contains("did you mean `max_steps`"), "{e}");
        let e = err("", &["train.max_steps=four"]);
        assert!(e.contains("max_steps"), "{e}");
        let e = err("", &["nonsense"]);
        assert!(e.contains("section.key=value"), "{e}");
    }

    #[test]
    fn cross_key_checks_name_the_fix() {
        let e = err(
            "[train]\nbatch_size = 3\ngradient_accumulation_steps = 5\n[sampling]\nnum_generations = 4\n",
            &[],
        );
        assert!(
            e.contains("divisible by gradient_accumulation_steps"),
            "{e}"
        );
        let e = err("[loss]\ntype = \"ppo\"\n", &[]);
        assert!(e.contains("line 2") && e.contains("lambda_grpo"), "{e}");
        let e = err(
            "[loss]\ntype = \"lambda_grpo\"\nprocess_weighting = \"none\"\n",
            &[],
        );
        assert!(e.contains("contradicts"), "{e}");
    }

    #[test]
    fn lambda_grpo_implies_lambda_weighting() {
        let cfg = Config::from_overrides(&["loss.type=lambda_grpo".into()]).unwrap();
        assert_eq!(cfg.loss.weighting(), ProcessWeighting::Lambda);
        let cfg = Config::from_overrides(&["loss.process_weighting=lambda".into()]).unwrap();
        assert_eq!(cfg.loss.loss_type, LossType::Grpo);
        assert_eq!(cfg.loss.weighting(), ProcessWeighting::Lambda);
    }
}
