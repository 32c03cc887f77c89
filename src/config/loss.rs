//! `[loss]` and the enums it holds (`docs/lambda-grpo.md` §2, §4, §6). The loss math that reads
//! them lives in `trainer::loss` and `trainer::advantages`.

use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};

/// `[loss]`: the policy objective (see `docs` in `src/trainer/loss.rs`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct LossSection {
    /// `grpo`, `bnpo`, `dapo`, `dr_grpo` or `lambda_grpo`.
    #[serde(rename = "type")]
    pub loss_type: LossType,
    /// `none` or `lambda` (divide each token's term by its process-set size |λ|). Unset means
    /// `none`, except under `lambda_grpo`, which implies `lambda`.
    pub process_weighting: Option<ProcessWeighting>,
    /// KL coefficient to the frozen reference model; 0 = no reference model is loaded.
    pub beta: f64,
    /// Lower PPO clip range ε.
    pub epsilon: f64,
    /// Upper clip range; defaults to `epsilon`.
    pub epsilon_high: Option<f64>,
    /// μ: optimizer passes over each generated batch.
    pub num_iterations: usize,
    /// `group`, `batch` or `none`.
    pub scale_rewards: ScaleRewards,
    /// Mask completions cut at `max_completion_length` out of the loss.
    pub mask_truncated_completions: bool,
    /// Leave groups whose rewards are all equal out of the loss (they still count in metrics).
    pub skip_zero_std_groups: bool,
}

impl LossSection {
    /// `loss.type` + `loss.process_weighting` after the `lambda_grpo` shorthand is expanded;
    /// an error when they contradict each other (the one place that checks it).
    pub fn resolved(&self) -> Result<ResolvedLoss> {
        let weighting = self
            .process_weighting
            .unwrap_or(self.loss_type.implied_weighting());
        self.loss_type.resolve(weighting)
    }

    /// The process weighting in force (`lambda_grpo` implies `lambda`, doc §6); a config that
    /// contradicts itself never gets this far (it fails [`Config::validate`](super::Config::validate)).
    pub fn weighting(&self) -> ProcessWeighting {
        self.resolved()
            .map_or(ProcessWeighting::None, |r| r.weighting)
    }

    pub fn epsilon_high(&self) -> f64 {
        self.epsilon_high.unwrap_or(self.epsilon)
    }
}

impl Default for LossSection {
    fn default() -> Self {
        Self {
            loss_type: LossType::Grpo,
            process_weighting: None,
            beta: 0.0,
            epsilon: 0.2,
            epsilon_high: None,
            num_iterations: 1,
            scale_rewards: ScaleRewards::Group,
            mask_truncated_completions: false,
            skip_zero_std_groups: false,
        }
    }
}

/// `loss.type` (§4, §6).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LossType {
    Grpo,
    Bnpo,
    Dapo,
    DrGrpo,
    /// Shorthand for `dapo` + `process_weighting = "lambda"` (§6).
    LambdaGrpo,
}

/// `loss.process_weighting` (§6): `lambda` divides each token's term by `|λ_{i,t}|`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProcessWeighting {
    #[default]
    None,
    Lambda,
}

impl ProcessWeighting {
    /// The config name (`none` or `lambda`), as serde writes it.
    pub fn as_str(self) -> &'static str {
        match self {
            ProcessWeighting::None => "none",
            ProcessWeighting::Lambda => "lambda",
        }
    }
}

impl std::fmt::Display for LossType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::fmt::Display for ProcessWeighting {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The normaliser `Z` of §4.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Aggregation {
    /// `N·|y_i|`: token mean per completion, then mean over the step's `N` completions.
    Grpo,
    /// Token total of the micro-batch × number of micro-batches of the step (TRL divides the
    /// micro-batch token mean by the gradient-accumulation steps).
    Bnpo,
    /// Token total of the whole step.
    Dapo,
    /// `N·max_completion_length` over the step.
    DrGrpo,
}

/// A `loss.type` + `process_weighting` pair after §6's shorthand is expanded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct ResolvedLoss {
    pub aggregation: Aggregation,
    pub weighting: ProcessWeighting,
}

impl LossType {
    /// The config name (`lambda_grpo`, ...), as serde writes it.
    pub fn as_str(self) -> &'static str {
        match self {
            LossType::Grpo => "grpo",
            LossType::Bnpo => "bnpo",
            LossType::Dapo => "dapo",
            LossType::DrGrpo => "dr_grpo",
            LossType::LambdaGrpo => "lambda_grpo",
        }
    }

    /// The weighting a type implies when `loss.process_weighting` is unset.
    pub fn implied_weighting(self) -> ProcessWeighting {
        match self {
            LossType::LambdaGrpo => ProcessWeighting::Lambda,
            _ => ProcessWeighting::None,
        }
    }

    /// Expands `lambda_grpo` to `dapo` + `lambda`; `lambda_grpo` with weighting `none` contradicts
    /// itself and is an error (§6).
    pub fn resolve(self, weighting: ProcessWeighting) -> Result<ResolvedLoss> {
        let aggregation = match self {
            LossType::Grpo => Aggregation::Grpo,
            LossType::Bnpo => Aggregation::Bnpo,
            LossType::Dapo => Aggregation::Dapo,
            LossType::DrGrpo => Aggregation::DrGrpo,
            LossType::LambdaGrpo => {
                if weighting == ProcessWeighting::None {
                    bail!(
                        "loss.process_weighting: `lambda_grpo` is `dapo` with process weighting \
                         `lambda`, so `none` contradicts it; drop the key or use type = \"dapo\""
                    );
                }
                return Ok(ResolvedLoss {
                    aggregation: Aggregation::Dapo,
                    weighting: ProcessWeighting::Lambda,
                });
            }
        };
        Ok(ResolvedLoss {
            aggregation,
            weighting,
        })
    }
}

/// `scale_rewards` of §2 (TRL's names).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ScaleRewards {
    /// `s_i` = sample std of the rewards of `g(i)`.
    #[default]
    Group,
    /// `s_i` = sample std of all `N` rewards of the step (the mean stays the group's).
    Batch,
    /// `s_i = 1 − eps`: no division.
    None,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_the_serde_names() {
        for t in [
            LossType::Grpo,
            LossType::Bnpo,
            LossType::Dapo,
            LossType::DrGrpo,
            LossType::LambdaGrpo,
        ] {
            assert_eq!(serde_json::to_value(t).unwrap(), t.as_str());
        }
        for w in [ProcessWeighting::None, ProcessWeighting::Lambda] {
            assert_eq!(serde_json::to_value(w).unwrap(), w.as_str());
        }
    }

    #[test]
    fn the_shorthand_and_its_contradiction_live_here() {
        let l = |t, w| LossSection {
            loss_type: t,
            process_weighting: w,
            ..LossSection::default()
        };
        let r = l(LossType::LambdaGrpo, None).resolved().unwrap();
        assert_eq!(
            (r.aggregation, r.weighting),
            (Aggregation::Dapo, ProcessWeighting::Lambda)
        );
        let r = l(LossType::Grpo, Some(ProcessWeighting::Lambda))
            .resolved()
            .unwrap();
        assert_eq!(
            (r.aggregation, r.weighting),
            (Aggregation::Grpo, ProcessWeighting::Lambda)
        );
        let e = l(LossType::LambdaGrpo, Some(ProcessWeighting::None))
            .resolved()
            .unwrap_err()
            .to_string();
        assert!(e.contains("contradicts"), "{e}");
        assert_eq!(l(LossType::Dapo, None).weighting(), ProcessWeighting::None);
    }
}
