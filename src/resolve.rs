//! `Config::resolve()`: the high half of ripgrep's low → high args. A [`Config`] holds what the
//! TOML said; [`Resolved`] holds what a run builds from it, once: the loss after the
//! `lambda_grpo` shorthand, the reward functions' settings, the prompt format, the rollout
//! sampling parameters and the opened device. `train`, `sft` and the validation inside training
//! read these instead of re-deriving them from the raw keys.
//!
//! It sits above the layers whose types it builds (data, sampler, rewards) and below the ones
//! that use them (eval, trainer, cli), which is why it is not in `config.rs`.

use anyhow::{anyhow, bail, Result};

use crate::config::{Config, ResolvedLoss, RewardsSection};
use crate::data::prompt::PromptFormat;
use crate::rewards::{FormatMode, Length, LengthUnit, RewardConfig, RewardSpec};
use crate::sampler::SamplingParams;
use crate::verifier::ExtractPolicy;

/// Everything a run derives from its [`Config`].
#[derive(Debug, Clone)]
pub struct Resolved {
    /// `loss.type` + `loss.process_weighting`, the shorthand expanded.
    pub loss: ResolvedLoss,
    /// `rewards.funcs` with their weights (missing weights are 1).
    pub rewards: Vec<RewardSpec>,
    /// The reward functions' shared settings (answer extraction, equivalence, format, length).
    pub reward_config: RewardConfig,
    /// How `[data]` turns a question into a prompt.
    pub prompt: PromptFormat,
    /// Rollout sampling from `[sampling]`; `eos_token_ids` and `seed` are filled in per run / step.
    pub sampling: SamplingParams,
    pub dtype: candle_core::DType,
    pub device: candle_core::Device,
}

impl Config {
    /// Builds the [`Resolved`] run once; errors name the key at fault.
    pub fn resolve(&self) -> Result<Resolved> {
        let s = &self.sampling;
        Ok(Resolved {
            loss: self.loss.resolved()?,
            rewards: self
                .reward_weights()
                .into_iter()
                .map(|(name, weight)| RewardSpec { name, weight })
                .collect(),
            reward_config: reward_config(&self.rewards)?,
            prompt: self.prompt_format(),
            sampling: SamplingParams {
                temperature: s.temperature,
                top_p: s.top_p,
                top_k: s.top_k,
                min_p: s.min_p,
                max_new_tokens: s.max_completion_length,
                stop: s.stop.clone(),
                ..SamplingParams::default()
            },
            dtype: self.model.dtype.to_candle(),
            device: self
                .model
                .device
                .open()
                .map_err(|e| anyhow!("model.device = \"{}\": {e:#}", self.model.device))?,
        })
    }

    /// The prompt format `[data]` describes (the same for RL, SFT and validation).
    pub fn prompt_format(&self) -> PromptFormat {
        let d = &self.data;
        PromptFormat {
            system: (!d.system_prompt.is_empty()).then(|| d.system_prompt.clone()),
            user_template: d.prompt_template.clone(),
            use_chat_template: d.use_chat_template,
            max_prompt_length: d.max_prompt_length,
        }
    }
}

/// The reward functions' shared settings from `[rewards]`.
pub fn reward_config(r: &RewardsSection) -> Result<RewardConfig> {
    let policy = ExtractPolicy::by_name(&r.extract).ok_or_else(|| {
        anyhow!(
            "rewards.extract: expected one of default, lenient, math, gsm8k, boxed; got `{}`",
            r.extract
        )
    })?;
    let format = match r.format.as_str() {
        "boxed" => FormatMode::OneBoxed,
        "think" => FormatMode::ThinkThenAnswer,
        other => bail!("rewards.format: expected `boxed` or `think`, got `{other}`"),
    };
    Ok(RewardConfig {
        policy,
        format,
        length: Length {
            target: r.length_target,
            window: r.length_window.max(1),
            unit: LengthUnit::Chars,
        },
        tree: crate::rewards::tree::TreePath {
            n: r.tree_n,
            r_neg: r.tree_r_neg,
            r_other: r.tree_r_other,
        },
        ..RewardConfig::default()
    })
}

#[cfg(test)]
mod tests {
    use crate::config::{Aggregation, Config, ProcessWeighting};

    #[test]
    fn resolve_builds_each_spec_once_from_the_keys() {
        let cfg = Config::from_overrides(&[
            "loss.type=lambda_grpo".into(),
            "rewards.funcs=[\"accuracy\", \"length\"]".into(),
            "rewards.weights=[1.0, 0.5]".into(),
            "sampling.temperature=0.7".into(),
            "sampling.max_completion_length=32".into(),
            "data.system_prompt=Be brief.".into(),
        ])
        .unwrap();
        let r = cfg.resolve().unwrap();
        assert_eq!(r.loss.aggregation, Aggregation::Dapo);
        assert_eq!(r.loss.weighting, ProcessWeighting::Lambda);
        let names: Vec<(&str, f64)> = r
            .rewards
            .iter()
            .map(|s| (s.name.as_str(), s.weight))
            .collect();
        assert_eq!(names, vec![("accuracy", 1.0), ("length", 0.5)]);
        assert_eq!(r.sampling.temperature, 0.7);
        assert_eq!(r.sampling.max_new_tokens, 32);
        assert_eq!(r.prompt.system.as_deref(), Some("Be brief."));
        assert!(r.device.is_cpu());
        assert_eq!(r.dtype, candle_core::DType::F32);
    }
}
