//! Batched sampling of completions from a [`Policy`](crate::model::Policy) with a KV cache.
//!
//! [`generate`] prefills each prompt once, shares that prefill across its samples
//! (`KvCache::repeat_rows`), then decodes one token per step for every live row, compacting
//! finished rows out of the cache as they accumulate. Each row draws from its own RNG seeded by
//! `(seed, prompt_index, sample_index)`, so results do not depend on batch layout, micro-batch
//! size or thread count. Log-probs are those of the temperature-scaled full distribution (see
//! [`logits`]), which is what the trainer recomputes.

mod batch;
pub mod budget;
pub mod logits;
pub mod stop;

use serde::{Deserialize, Serialize};

pub use batch::{generate, generate_restricted, OnToken};
pub use logits::{mix_seed, LogitsProcessor, Sampled};
pub use stop::FinishReason;

/// How to sample. Field names follow vLLM / TRL.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct SamplingParams {
    /// 0 = greedy.
    pub temperature: f64,
    /// 1.0 = off.
    pub top_p: f64,
    /// 0 = off.
    pub top_k: usize,
    /// 0.0 = off.
    pub min_p: f64,
    pub max_new_tokens: usize,
    /// Completions end before the first of these strings (excluded from `text`).
    pub stop: Vec<String>,
    /// Completions end after one of these tokens (included in `token_ids`).
    pub eos_token_ids: Vec<u32>,
    /// Generate exactly `max_new_tokens` even past EOS (benchmarks, fixture tests).
    pub ignore_eos: bool,
    pub seed: u64,
    /// Most rows (prompts × samples) decoded in one forward pass; 0 = all at once. Bounds
    /// memory; results do not depend on it.
    pub max_batch_rows: usize,
}

impl Default for SamplingParams {
    fn default() -> Self {
        Self {
            temperature: 1.0,
            top_p: 1.0,
            top_k: 0,
            min_p: 0.0,
            max_new_tokens: 256,
            stop: Vec::new(),
            eos_token_ids: Vec::new(),
            ignore_eos: false,
            seed: 0,
            max_batch_rows: 0,
        }
    }
}

impl SamplingParams {
    /// The per-row truncation settings, validated.
    pub fn logits_processor(&self) -> anyhow::Result<LogitsProcessor> {
        LogitsProcessor::new(self.temperature, self.top_k, self.top_p, self.min_p)
    }
}

/// One sampled completion.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Completion {
    pub prompt_index: usize,
    pub sample_index: usize,
    /// New tokens only: the EOS token is included when it was generated, and so are the tokens
    /// that spelled a stop string.
    pub token_ids: Vec<u32>,
    /// `log_softmax(logits / T)` of each token in `token_ids` (T = 1 when greedy).
    pub logprobs: Vec<f32>,
    pub finish_reason: FinishReason,
    /// Decoded `token_ids` without special tokens, cut before the stop string.
    pub text: String,
}

/// One new token of one row, for streaming and progress reporting.
#[derive(Debug, Clone, Copy)]
pub struct TokenEvent<'a> {
    pub prompt_index: usize,
    pub sample_index: usize,
    pub token_id: u32,
    pub logprob: f32,
    /// Newly decoded text that can no longer become part of a stop string (may be empty).
    pub text: &'a str,
    /// Set on the row's last token.
    pub finish_reason: Option<FinishReason>,
}
