//! `[loss]` and the enums it holds (`docs/lambda-grpo.md` §2, §4, §6). The loss math that reads
//! them lives in `trainer::loss` and `trainer::advantages`.

use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};

/// `[loss]`: the policy objective (see `docs` in `src/trainer/loss.rs`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct LossSection {
    /// `grpo`, `bnpo`, `dapo`, `dr_grpo`, `cispo`, `sapo`, `luspo`, `vespo` or `lambda_grpo`.
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
    /// `token` (one ratio per token) or `sequence` (GSPO: `exp` of the mean log-ratio).
    pub importance_sampling_level: ImportanceSamplingLevel,
    /// Two-sided clipping (INTELLECT-2): the unclipped ratio is capped at `delta`.
    pub delta: Option<f64>,
    /// DeepSeek-V3.2's off-policy sequence mask: a completion with a negative advantage whose
    /// mean `old − current` log-prob exceeds this is left out of the policy term.
    pub off_policy_mask_threshold: Option<f64>,
    /// Keep only the top quantile of counted tokens by entropy in the policy term (1 = all).
    pub top_entropy_quantile: f64,
    /// Weight of the entropy bonus (mean entropy per token, subtracted from the loss).
    pub entropy_coef: f64,
    /// Skywork-OR1's adaptive entropy control: `entropy_coef` moves by `entropy_coef_delta`
    /// per optimizer step towards keeping the entropy above `entropy_target`.
    pub use_adaptive_entropy: bool,
    pub entropy_coef_min: f64,
    pub entropy_coef_max: f64,
    pub entropy_coef_delta: f64,
    pub entropy_target: f64,
    /// Multiply the KL term by the importance ratio (DeepSeek-V3.2's unbiased KL gradient).
    pub use_bias_correction_kl: bool,
    /// `sapo`'s gate temperatures for positive and non-positive advantages.
    pub sapo_temperature_pos: f64,
    pub sapo_temperature_neg: f64,
    /// `vespo`'s Gamma weighting `φ(w) = e^λ·w^k·e^(−λw)` per advantage sign.
    pub vespo_k_pos: f64,
    pub vespo_lambda_pos: f64,
    pub vespo_k_neg: f64,
    pub vespo_lambda_neg: f64,
    /// TR-DPO: every `ref_model_sync_steps` steps the reference becomes
    /// `α·policy + (1 − α)·reference` with `α = ref_model_mixup_alpha`.
    pub sync_ref_model: bool,
    pub ref_model_mixup_alpha: f64,
    pub ref_model_sync_steps: usize,
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
            importance_sampling_level: ImportanceSamplingLevel::Token,
            delta: None,
            off_policy_mask_threshold: None,
            top_entropy_quantile: 1.0,
            entropy_coef: 0.0,
            use_adaptive_entropy: false,
            entropy_coef_min: 0.0,
            entropy_coef_max: 1.0,
            entropy_coef_delta: 0.005,
            entropy_target: 0.2,
            use_bias_correction_kl: true,
            sapo_temperature_pos: 1.0,
            sapo_temperature_neg: 1.05,
            vespo_k_pos: 2.0,
            vespo_lambda_pos: 3.0,
            vespo_k_neg: 3.0,
            vespo_lambda_neg: 2.0,
            sync_ref_model: false,
            ref_model_mixup_alpha: 0.6,
            ref_model_sync_steps: 512,
        }
    }
}

impl LossSection {
    /// The checks of the keys TRL 1.16 added, with the pairs its `GRPOTrainer` warns about
    /// refused (their messages are TRL's, naming our keys).
    pub fn validate_options(&self) -> Result<()> {
        let seq = self.importance_sampling_level == ImportanceSamplingLevel::Sequence;
        match self.loss_type {
            LossType::Luspo if !seq => bail!(
                "loss.importance_sampling_level: loss.type = \"luspo\" needs importance_sampling_level = \"sequence\" \
                 (LUSPO scales GSPO's sequence-level loss by length; TRL warns: \"should be set to 'sequence' to mirror \
                 the paper's setup\")"
            ),
            LossType::Vespo if seq => bail!(
                "loss.importance_sampling_level: loss.type = \"vespo\" computes sequence-level importance weights \
                 itself; importance_sampling_level must be \"token\" (the default)"
            ),
            LossType::Bnpo | LossType::DrGrpo | LossType::Dapo | LossType::Cispo | LossType::LambdaGrpo
                if seq =>
            {
                bail!(
                    "loss.importance_sampling_level: with importance_sampling_level = \"sequence\", the `{}` loss \
                     sums per-token contributions, which weights each sequence by its completion length instead of \
                     optimizing the per-sequence objective; use loss.type = \"grpo\" (GSPO), \"sapo\" or \"luspo\"",
                    self.loss_type
                )
            }
            _ => {}
        }
        let finite = |key: &str, v: f64, ok: bool, what: &str| -> Result<()> {
            if !(v.is_finite() && ok) {
                bail!("loss.{key} = {v}: expected {what}");
            }
            Ok(())
        };
        if let Some(d) = self.delta {
            finite(
                "delta",
                d,
                d > 0.0,
                "a finite number > 0 (the cap on the ratio; TRL recommends > 1 + epsilon)",
            )?;
        }
        if let Some(t) = self.off_policy_mask_threshold {
            finite(
                "off_policy_mask_threshold",
                t,
                t >= 0.0,
                "a finite number >= 0 (a KL threshold, e.g. 0.5)",
            )?;
        }
        let q = self.top_entropy_quantile;
        finite(
            "top_entropy_quantile",
            q,
            (0.0..=1.0).contains(&q),
            "a number in [0, 1]",
        )?;
        finite("entropy_coef", self.entropy_coef, true, "a finite number")?;
        finite(
            "entropy_coef_min",
            self.entropy_coef_min,
            true,
            "a finite number",
        )?;
        finite(
            "entropy_coef_max",
            self.entropy_coef_max,
            self.entropy_coef_max >= self.entropy_coef_min,
            "a finite number >= loss.entropy_coef_min",
        )?;
        finite(
            "entropy_coef_delta",
            self.entropy_coef_delta,
            self.entropy_coef_delta >= 0.0,
            "a finite number >= 0",
        )?;
        finite(
            "entropy_target",
            self.entropy_target,
            true,
            "a finite number (nats)",
        )?;
        for (key, v) in [
            ("sapo_temperature_pos", self.sapo_temperature_pos),
            ("sapo_temperature_neg", self.sapo_temperature_neg),
        ] {
            finite(
                key,
                v,
                v > 0.0,
                "a finite number > 0 (the gate divides by it)",
            )?;
        }
        for (key, v) in [
            ("vespo_k_pos", self.vespo_k_pos),
            ("vespo_lambda_pos", self.vespo_lambda_pos),
            ("vespo_k_neg", self.vespo_k_neg),
            ("vespo_lambda_neg", self.vespo_lambda_neg),
        ] {
            finite(key, v, true, "a finite number")?;
        }
        let a = self.ref_model_mixup_alpha;
        finite(
            "ref_model_mixup_alpha",
            a,
            (0.0..=1.0).contains(&a),
            "a number in [0, 1]",
        )?;
        if self.ref_model_sync_steps == 0 {
            bail!("loss.ref_model_sync_steps = 0: expected at least 1");
        }
        if self.sync_ref_model && self.beta == 0.0 {
            bail!(
                "loss.sync_ref_model: `sync_ref_model = true` while `beta = 0`, which means the reference model is \
                 not used during training, so there is nothing to synchronize; set loss.sync_ref_model = false, or \
                 loss.beta to a non-zero value"
            );
        }
        Ok(())
    }

    /// The entropy bonus is on (TRL: a non-zero coefficient, or adaptive control).
    pub fn entropy_bonus(&self) -> bool {
        self.entropy_coef != 0.0 || self.use_adaptive_entropy
    }
}

/// `loss.importance_sampling_level` (GSPO).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ImportanceSamplingLevel {
    #[default]
    Token,
    Sequence,
}

/// `rewards.multi_objective_aggregation` (TRL's names; GDPO is `normalize_then_sum`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MultiObjectiveAggregation {
    /// Weighted sum of the rewards, then `scale_rewards`.
    #[default]
    SumThenNormalize,
    /// Each reward normalised within its group, weighted sum, then normalised over the batch.
    NormalizeThenSum,
}

/// What the policy term of a token is (TRL's `_compute_loss` branches).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Objective {
    /// `−min(ρ·a, clip(ρ)·a)` (`grpo`, `bnpo`, `dapo`, `dr_grpo`, `luspo`).
    Clip,
    /// `−sg(min(ρ, ε_high))·a·log π` (MiniMax-M1).
    Cispo,
    /// `−σ(τ(ρ − 1))·4/τ·a` (soft gate).
    Sapo,
    /// `−sg(φ(w))·a·log π`, `w` the sequence ratio (Gamma weighting).
    Vespo,
}

/// `loss.type` (§4, §6).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LossType {
    Grpo,
    Bnpo,
    Dapo,
    DrGrpo,
    /// MiniMax-M1: clipped, detached IS weight × advantage × log-prob, normalised like `dapo`.
    Cispo,
    /// Soft Adaptive Policy Optimization: a sigmoid gate instead of clipping, normalised like `grpo`.
    Sapo,
    /// Length-Unbiased Sequence Policy Optimization: each completion's term times its length.
    Luspo,
    /// Gamma weighting of the sequence-level IS weight, normalised like `dapo`.
    Vespo,
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
    /// `N`: each completion's token sum, then mean over completions (`luspo`).
    Luspo,
}

/// A `loss.type` + `process_weighting` pair after §6's shorthand is expanded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct ResolvedLoss {
    pub aggregation: Aggregation,
    pub weighting: ProcessWeighting,
    pub objective: Objective,
}

impl LossType {
    /// The config name (`lambda_grpo`, ...), as serde writes it.
    pub fn as_str(self) -> &'static str {
        match self {
            LossType::Grpo => "grpo",
            LossType::Bnpo => "bnpo",
            LossType::Dapo => "dapo",
            LossType::DrGrpo => "dr_grpo",
            LossType::Cispo => "cispo",
            LossType::Sapo => "sapo",
            LossType::Luspo => "luspo",
            LossType::Vespo => "vespo",
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
        let (aggregation, objective) = match self {
            LossType::Grpo => (Aggregation::Grpo, Objective::Clip),
            LossType::Bnpo => (Aggregation::Bnpo, Objective::Clip),
            LossType::Dapo => (Aggregation::Dapo, Objective::Clip),
            LossType::DrGrpo => (Aggregation::DrGrpo, Objective::Clip),
            LossType::Cispo => (Aggregation::Dapo, Objective::Cispo),
            LossType::Sapo => (Aggregation::Grpo, Objective::Sapo),
            LossType::Luspo => (Aggregation::Luspo, Objective::Clip),
            LossType::Vespo => (Aggregation::Dapo, Objective::Vespo),
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
                    objective: Objective::Clip,
                });
            }
        };
        Ok(ResolvedLoss {
            aggregation,
            weighting,
            objective,
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
            LossType::Cispo,
            LossType::Sapo,
            LossType::Luspo,
            LossType::Vespo,
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
