//! `[sft]`: the supervised warm start's section (`grpo sft`, `trainer::sft`).

use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};

/// Where the SFT policy's weights start.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum SftInit {
    /// A fresh decoder with the `[sft]` architecture and the vocabulary of `model.path`'s
    /// tokenizer.
    Random,
    /// The checkpoint in `model.path`.
    Pretrained,
}

/// `[sft]`: the supervised warm start (`grpo sft`). The architecture keys are used only with
/// `init = "random"`; names follow the HF `config.json` keys they end up in.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct SftSection {
    /// `random` or `pretrained`.
    pub init: SftInit,
    /// Passes over the training set; used when `max_steps` is 0.
    pub epochs: usize,
    /// Optimizer steps; 0 = `epochs` passes.
    pub max_steps: usize,
    /// Sequences per optimizer step.
    pub batch_size: usize,
    /// Sequences per forward pass (gradients accumulate over a step); 0 = the whole batch.
    pub micro_batch_size: usize,
    pub logging_steps: usize,
    /// Greedy validation accuracy every N steps; 0 = only at the end.
    pub eval_every: usize,
    /// Validation problems used by evaluations; 0 = all.
    pub eval_limit: usize,
    /// Samples per problem for the final sampled accuracy (at `eval_temperature`); 0 = skip.
    pub eval_samples: usize,
    pub eval_temperature: f64,
    /// Checkpoint into `output.dir/checkpoint-N` every N steps; 0 = only the final model.
    pub save_every: usize,
    /// Seeds the random init and the data order.
    pub seed: u64,
    /// Fraction of training examples (picked by `seed`) whose target is only `\boxed{answer}`,
    /// without the worked steps. A policy trained on the mix has two modes, answering at once
    /// or working it out, the second far more accurate on multi-step problems: a choice RL can
    /// learn to make (the shipped policy is built this way, see models/README.md).
    pub direct_answer_fraction: f64,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub num_key_value_heads: usize,
    pub max_position_embeddings: usize,
    pub rope_theta: f64,
    pub tie_word_embeddings: bool,
    /// Standard deviation of the normal init.
    pub initializer_range: f64,
}

impl Default for SftSection {
    fn default() -> Self {
        Self {
            init: SftInit::Random,
            epochs: 1,
            max_steps: 0,
            batch_size: 32,
            micro_batch_size: 0,
            logging_steps: 10,
            eval_every: 0,
            eval_limit: 0,
            eval_samples: 4,
            eval_temperature: 1.0,
            save_every: 0,
            seed: 0,
            direct_answer_fraction: 0.0,
            hidden_size: 128,
            intermediate_size: 384,
            num_hidden_layers: 4,
            num_attention_heads: 4,
            num_key_value_heads: 2,
            max_position_embeddings: 512,
            rope_theta: 10000.0,
            tie_word_embeddings: true,
            initializer_range: 0.02,
        }
    }
}

impl SftSection {
    /// Checks the keys against each other, naming the key to change.
    pub fn validate(&self) -> Result<()> {
        if self.batch_size == 0 {
            bail!("sft.batch_size: expected at least 1 sequence per step");
        }
        if self.max_steps == 0 && self.epochs == 0 {
            bail!("sft.max_steps / sft.epochs: one of them must be positive");
        }
        if !(0.0..=1.0).contains(&self.direct_answer_fraction) {
            bail!(
                "sft.direct_answer_fraction = {}: expected a fraction between 0 and 1",
                self.direct_answer_fraction
            );
        }
        if self.logging_steps == 0 {
            bail!("sft.logging_steps: expected at least 1");
        }
        if !(self.eval_temperature >= 0.0 && self.eval_temperature.is_finite()) {
            bail!(
                "sft.eval_temperature: expected a finite value >= 0, got {}",
                self.eval_temperature
            );
        }
        if self.init == SftInit::Random {
            if self.hidden_size == 0 || self.num_hidden_layers == 0 || self.intermediate_size == 0 {
                bail!("sft.hidden_size / num_hidden_layers / intermediate_size: expected positive sizes");
            }
            if self.num_attention_heads == 0
                || self.num_key_value_heads == 0
                || !self
                    .num_attention_heads
                    .is_multiple_of(self.num_key_value_heads)
            {
                bail!(
                    "sft.num_attention_heads ({}) must be a positive multiple of sft.num_key_value_heads ({})",
                    self.num_attention_heads,
                    self.num_key_value_heads
                );
            }
            let head_dim = self.hidden_size / self.num_attention_heads;
            if !self.hidden_size.is_multiple_of(self.num_attention_heads)
                || !head_dim.is_multiple_of(2)
            {
                bail!(
                    "sft.hidden_size ({}) must split into num_attention_heads ({}) heads of even size",
                    self.hidden_size,
                    self.num_attention_heads
                );
            }
        }
        Ok(())
    }
}
