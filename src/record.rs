//! The run record: what `grpo train` writes into `output.dir` and `sweep`, `plot` and `analyze`
//! read back, as serde types rather than string keys.
//!
//! - `metrics.jsonl`: one [`StepMetrics`] per optimizer step;
//! - `summary.json`: one [`TrainSummary`];
//! - `rollouts/step-N.jsonl`: one [`RolloutGroup`] per prompt (with `train.save_rollouts`).
//!
//! Reading is lenient, so that runs written by older versions (and hand-made ones in tests) still
//! load: every metric but `step` is optional, keys this version does not know are kept in
//! [`StepMetrics::other`], and a renamed key can be read through a `#[serde(alias)]` on its field.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::de::{MapAccess, Visitor};
use serde::ser::SerializeMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::{Map, Value};

use crate::config::{LossType, ProcessWeighting};

/// One line of `metrics.jsonl`: the statistics of one optimizer step.
///
/// Fields are written in this order; `None` fields are left out. Token statistics (`kl`,
/// `clip_fraction`, `entropy`) are means over the tokens that count in the loss.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StepMetrics {
    pub step: usize,
    /// The step's loss (first of the μ iterations).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub loss: Option<f64>,
    /// Mean and sample std of the weighted reward sum over the step's completions (TRL's
    /// `reward`, `reward_std`; runs before the rename wrote `reward_mean`).
    #[serde(
        rename = "reward",
        alias = "reward_mean",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub reward_mean: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reward_std: Option<f64>,
    /// `reward/<function>`: each reward function's mean score (unweighted), in config order; and
    /// any key this version does not know.
    #[serde(flatten)]
    pub rewards: RewardScores,
    /// Share of completions whose answer is correct.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub accuracy: Option<f64>,
    /// Completion lengths in tokens (TRL's `completions/mean_length`, `completions/max_length`).
    #[serde(
        rename = "completions/mean_length",
        alias = "completion_length_mean",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub completion_length_mean: Option<f64>,
    #[serde(
        rename = "completions/max_length",
        alias = "completion_length_max",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub completion_length_max: Option<usize>,
    /// Share of completions cut at `max_completion_length` (TRL's `completions/clipped_ratio`).
    #[serde(
        rename = "completions/clipped_ratio",
        alias = "truncated_fraction",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub truncated_fraction: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kl: Option<f64>,
    /// Share of counted tokens where the clipped branch is active, on the passes where it can
    /// be (the 2nd.. of `num_iterations` > 1); = `clip_ratio/region_mean`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clip_fraction: Option<f64>,
    /// TRL's clip ratios: `low` = ρ < 1 − ε_low with a < 0, `high` = ρ > 1 + ε_high with a > 0,
    /// `region` = either; means over tokens, min / max over micro-batches.
    #[serde(
        rename = "clip_ratio/low_mean",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub clip_ratio_low_mean: Option<f64>,
    #[serde(
        rename = "clip_ratio/low_min",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub clip_ratio_low_min: Option<f64>,
    #[serde(
        rename = "clip_ratio/high_mean",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub clip_ratio_high_mean: Option<f64>,
    #[serde(
        rename = "clip_ratio/high_max",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub clip_ratio_high_max: Option<f64>,
    #[serde(
        rename = "clip_ratio/region_mean",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub clip_ratio_region_mean: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entropy: Option<f64>,
    /// Mean |trainer log-prob − sampler log-prob| of the sampled tokens: float noise on-policy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logprob_diff: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grad_norm: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lr: Option<f64>,
    /// The update was skipped (non-finite loss or gradient).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub skipped_update: Option<bool>,
    /// Share of groups whose rewards are all equal, no policy-gradient signal (TRL's
    /// `frac_reward_zero_std`).
    #[serde(
        rename = "frac_reward_zero_std",
        alias = "zero_std_group_fraction",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub zero_std_group_fraction: Option<f64>,
    /// Process-set statistics of the step's groups (`docs/lambda-grpo.md` §7).
    #[serde(
        rename = "process/num_groups",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub process_num_groups: Option<usize>,
    #[serde(
        rename = "process/non_trivial_fraction",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub process_non_trivial_fraction: Option<f64>,
    #[serde(
        rename = "process/mean_path_depth",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub process_mean_path_depth: Option<f64>,
    #[serde(
        rename = "process/mean_intermediate_proportion",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub process_mean_intermediate_proportion: Option<f64>,
    #[serde(
        rename = "process/mean_num_process_sets",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub process_mean_num_process_sets: Option<f64>,
    /// Tokens per `|λ|` value (index = |λ|).
    #[serde(
        rename = "process/lambda_histogram",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub process_lambda_histogram: Option<Vec<u64>>,
    /// Wall-clock seconds of the step's phases.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_generate_s: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_score_s: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_update_s: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_process_sets_s: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step_time_s: Option<f64>,
    /// Tokens the update's forward ran (every pass, policy and reference): lower when
    /// `train.share_prefixes` runs each group's prompt once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokens_processed: Option<u64>,
    /// Generated tokens per second of rollout time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokens_per_s: Option<f64>,
    /// Validation accuracy (mean pass@1), on the steps that validate.
    #[serde(
        rename = "eval/accuracy",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub eval_accuracy: Option<f64>,
}

impl StepMetrics {
    /// A metric by its key in `metrics.jsonl` (`reward_mean`, `process/mean_path_depth`,
    /// `reward/accuracy`, ...), for tools whose user names the metric; `None` when this step
    /// has no numeric value for it.
    pub fn get(&self, key: &str) -> Option<f64> {
        let key = Self::current_key(key);
        if let Some(v) = self.rewards.get(key) {
            return Some(v);
        }
        match serde_json::to_value(self).ok()?.get(key)? {
            Value::Bool(b) => Some(f64::from(u8::from(*b))),
            v => v.as_f64(),
        }
    }

    /// The key this version writes for `key`, which may be a name older runs wrote (the
    /// metrics now carry TRL's names).
    pub fn current_key(key: &str) -> &str {
        match key {
            "reward_mean" => "reward",
            "completion_length_mean" => "completions/mean_length",
            "completion_length_max" => "completions/max_length",
            "truncated_fraction" => "completions/clipped_ratio",
            "zero_std_group_fraction" => "frac_reward_zero_std",
            other => other,
        }
    }

    /// Whether `key` holds a number at this step.
    pub fn has(&self, key: &str) -> bool {
        self.get(key).is_some()
    }

    /// The keys that hold a number at this step, in file order.
    pub fn numeric_keys(&self) -> Vec<String> {
        match serde_json::to_value(self) {
            Ok(Value::Object(m)) => m
                .into_iter()
                .filter(|(_, v)| v.is_number() || v.is_boolean())
                .map(|(k, _)| k)
                .collect(),
            _ => Vec::new(),
        }
    }
}

/// The `reward/<function>` keys of a step, in order, and the keys no field claims.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RewardScores {
    /// (function name, mean score), without the `reward/` prefix.
    pub per_function: Vec<(String, f64)>,
    /// Keys of `metrics.jsonl` this version has no field for (older or newer runs, SFT logs).
    pub other: Map<String, Value>,
}

impl RewardScores {
    const PREFIX: &'static str = "reward/";

    /// `reward/<function>`'s mean score, or a numeric key of [`RewardScores::other`].
    pub fn get(&self, key: &str) -> Option<f64> {
        if let Some(name) = key.strip_prefix(Self::PREFIX) {
            if let Some((_, v)) = self.per_function.iter().find(|(n, _)| n == name) {
                return Some(*v);
            }
        }
        self.other.get(key).and_then(Value::as_f64)
    }
}

impl Serialize for RewardScores {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(None)?;
        for (name, v) in &self.per_function {
            map.serialize_entry(&format!("{}{name}", Self::PREFIX), v)?;
        }
        for (k, v) in &self.other {
            map.serialize_entry(k, v)?;
        }
        map.end()
    }
}

impl<'de> Deserialize<'de> for RewardScores {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = RewardScores;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("metric keys")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<RewardScores, A::Error> {
                let mut out = RewardScores::default();
                while let Some((k, v)) = map.next_entry::<String, Value>()? {
                    match (k.strip_prefix(RewardScores::PREFIX), v.as_f64()) {
                        (Some(name), Some(x)) => out.per_function.push((name.to_string(), x)),
                        _ => {
                            out.other.insert(k, v);
                        }
                    }
                }
                Ok(out)
            }
        }
        deserializer.deserialize_map(V)
    }
}

/// `summary.json`: the outcome of one `grpo train` run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainSummary {
    #[serde(default)]
    pub steps: usize,
    #[serde(default)]
    pub wall_time_s: f64,
    /// Validation accuracy (mean pass@1) before the first step and after the last.
    #[serde(default)]
    pub initial_val_accuracy: Option<f64>,
    #[serde(default)]
    pub final_val_accuracy: Option<f64>,
    #[serde(default)]
    pub final_checkpoint: PathBuf,
    #[serde(default)]
    pub mean_step_time_s: f64,
    /// `loss.type` as configured and the process weighting in force (`lambda_grpo` implies
    /// `lambda`).
    pub loss_type: LossType,
    pub process_weighting: ProcessWeighting,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<u64>,
    /// The commit a hub id in `model.path` resolved to (`model.revision` pins it); absent for
    /// a local folder.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model_commit: Option<String>,
    /// The commit of `data.dataset_name`; absent without one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dataset_commit: Option<String>,
    /// The resolved config (JSON of the TOML), kept as written so that runs of older configs load.
    #[serde(default)]
    pub config: Value,
}

impl TrainSummary {
    /// The seed, from the summary or else from its config.
    pub fn seed(&self) -> Option<u64> {
        self.seed
            .or_else(|| self.config.get("train")?.get("seed")?.as_u64())
    }
}

/// One sampled completion of a group, as dumped by the trainer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RolloutCompletion {
    /// Completion token ids (prompt excluded).
    pub token_ids: Vec<u32>,
    #[serde(default)]
    pub text: String,
    /// Outcome reward `r_i` (weighted sum of the reward functions).
    pub reward: f64,
    #[serde(default)]
    pub advantage: f64,
}

/// One group: the `G` completions of one prompt at one training step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RolloutGroup {
    pub step: usize,
    #[serde(default)]
    pub prompt: String,
    #[serde(default)]
    pub answer: String,
    pub completions: Vec<RolloutCompletion>,
    /// Where the group was read from (`file:line`), for messages.
    #[serde(skip)]
    pub source: String,
}

impl RolloutGroup {
    /// The completions' token ids, in group order.
    pub fn token_ids(&self) -> Vec<&[u32]> {
        self.completions
            .iter()
            .map(|c| c.token_ids.as_slice())
            .collect()
    }

    pub fn rewards(&self) -> Vec<f64> {
        self.completions.iter().map(|c| c.reward).collect()
    }
}

/// The `metrics.jsonl` of a run directory (or the file itself); errors name `file:line`.
pub fn read_metrics(path: &Path) -> Result<Vec<StepMetrics>> {
    let path = metrics_path(path);
    let text = std::fs::read_to_string(&path).with_context(|| {
        format!(
            "reading {} (expected a run directory written by grpo train)",
            path.display()
        )
    })?;
    parse_metrics(&text, &path.display().to_string())
}

/// `metrics.jsonl` text; `origin` names it in errors.
pub fn parse_metrics(text: &str, origin: &str) -> Result<Vec<StepMetrics>> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let at = || format!("{origin}:{}", i + 1);
        let v: Value = serde_json::from_str(line)
            .with_context(|| format!("{}: expected a JSON object per line", at()))?;
        if !v.is_object() {
            bail!("{}: expected a JSON object", at());
        }
        if !v.get("step").is_some_and(Value::is_u64) {
            bail!("{}: expected a numeric \"step\" key", at());
        }
        out.push(
            serde_json::from_value(v)
                .with_context(|| format!("{}: not a metrics line of grpo train", at()))?,
        );
    }
    Ok(out)
}

/// `dir/metrics.jsonl`, or `path` itself when it is a file.
pub fn metrics_path(path: &Path) -> PathBuf {
    if path.is_file() {
        path.to_path_buf()
    } else {
        path.join("metrics.jsonl")
    }
}

/// The `summary.json` of a run directory.
pub fn read_summary(dir: &Path) -> Result<TrainSummary> {
    let path = dir.join("summary.json");
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| {
        format!(
            "{}: expected the summary.json of a grpo train run",
            path.display()
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_written_line_reads_back_equal_and_keeps_key_order() {
        let m = StepMetrics {
            step: 3,
            loss: Some(-0.5),
            reward_mean: Some(0.25),
            rewards: RewardScores {
                per_function: vec![("length".into(), -0.1), ("accuracy".into(), 0.5)],
                other: Map::new(),
            },
            accuracy: Some(0.5),
            completion_length_max: Some(12),
            skipped_update: Some(false),
            process_lambda_histogram: Some(vec![0, 3, 1]),
            eval_accuracy: Some(0.75),
            ..StepMetrics::default()
        };
        let line = serde_json::to_string(&m).unwrap();
        assert_eq!(
            line,
            r#"{"step":3,"loss":-0.5,"reward":0.25,"reward/length":-0.1,"reward/accuracy":0.5,"accuracy":0.5,"completions/max_length":12,"skipped_update":false,"process/lambda_histogram":[0,3,1],"eval/accuracy":0.75}"#
        );
        let back = parse_metrics(&line, "m").unwrap();
        assert_eq!(back, vec![m.clone()]);
        assert_eq!(back[0].get("reward/accuracy"), Some(0.5));
        assert_eq!(back[0].get("eval/accuracy"), Some(0.75));
        assert_eq!(back[0].get("skipped_update"), Some(0.0));
        assert_eq!(back[0].get("kl"), None);
        // The old names still find the renamed metrics.
        assert_eq!(back[0].get("reward_mean"), Some(0.25));
        assert_eq!(back[0].get("completion_length_max"), Some(12.0));
    }

    #[test]
    fn runs_written_with_the_old_metric_names_read() {
        let old = r#"{"step":1,"reward_mean":0.5,"reward_std":0.1,"completion_length_mean":7.5,"completion_length_max":9,"truncated_fraction":0.25,"zero_std_group_fraction":0.5,"clip_fraction":0.0}"#;
        let m = &parse_metrics(old, "m").unwrap()[0];
        assert_eq!(m.reward_mean, Some(0.5));
        assert_eq!(m.completion_length_mean, Some(7.5));
        assert_eq!(m.completion_length_max, Some(9));
        assert_eq!(m.truncated_fraction, Some(0.25));
        assert_eq!(m.zero_std_group_fraction, Some(0.5));
        assert!(m.rewards.other.is_empty(), "{:?}", m.rewards.other);
        // Written back with TRL's names, readable by both.
        let new: Value = serde_json::to_value(m).unwrap();
        for key in [
            "reward",
            "reward_std",
            "completions/mean_length",
            "completions/max_length",
            "completions/clipped_ratio",
            "frac_reward_zero_std",
        ] {
            assert!(new[key].is_number(), "{key}: {new}");
        }
        assert_eq!(m.get("reward"), m.get("reward_mean"));
        assert_eq!(m.get("frac_reward_zero_std"), Some(0.5));
    }

    #[test]
    fn unknown_keys_are_kept_and_bad_lines_name_file_and_line() {
        let m = parse_metrics(
            "{\"step\":1,\"epoch\":0.5,\"val_accuracy_greedy\":0.25}\n",
            "m",
        )
        .unwrap();
        assert_eq!(m[0].get("epoch"), Some(0.5));
        assert_eq!(m[0].get("val_accuracy_greedy"), Some(0.25));
        let e = format!(
            "{:#}",
            parse_metrics("{\"step\":1}\n[1]\n", "m.jsonl").unwrap_err()
        );
        assert!(e.contains("m.jsonl:2"), "{e}");
        let e = format!(
            "{:#}",
            parse_metrics("{\"loss\":1}\n", "m.jsonl").unwrap_err()
        );
        assert!(e.contains("m.jsonl:1") && e.contains("step"), "{e}");
    }

    /// The committed runs of `results/default` (written before these types existed) still read.
    #[test]
    fn committed_runs_read() {
        let runs = Path::new(env!("CARGO_MANIFEST_DIR")).join("results/default/runs");
        let mut n = 0;
        for entry in std::fs::read_dir(&runs).unwrap() {
            let dir = entry.unwrap().path();
            let metrics = read_metrics(&dir).unwrap();
            let summary = read_summary(&dir).unwrap();
            assert_eq!(metrics.len(), summary.steps);
            assert!(
                metrics.iter().all(|m| m.rewards.other.is_empty()),
                "{dir:?}"
            );
            assert!(metrics[0].process_lambda_histogram.is_some());
            assert!(metrics.iter().any(|m| m.eval_accuracy.is_some()));
            // Re-serialised, every line is the line on disk under the current (TRL) names.
            let text = std::fs::read_to_string(dir.join("metrics.jsonl")).unwrap();
            for (line, m) in text.lines().zip(&metrics) {
                let a: Map<String, Value> = serde_json::from_str(line).unwrap();
                let renamed: Map<String, Value> = a
                    .into_iter()
                    .map(|(k, v)| (StepMetrics::current_key(&k).to_string(), v))
                    .collect();
                assert_eq!(serde_json::to_value(m).unwrap(), Value::Object(renamed));
            }
            n += 1;
        }
        assert_eq!(n, 6);
    }
}
