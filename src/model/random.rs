//! The `config.json` of a fresh Qwen2 decoder: shared by `grpo init-model` and `grpo sft`'s
//! random init, which differ only in where the sizes come from.

use anyhow::Result;
use serde_json::{json, Value};

use super::{ModelConfig, Tokenizer};

/// The sizes of a fresh Qwen2 decoder (names as the HF `config.json` keys they end up in).
#[derive(Debug, Clone, PartialEq)]
pub struct Qwen2Shape {
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

/// The HF `config.json` of a fresh Qwen2 decoder of `shape`, with the tokenizer's vocabulary
/// and special tokens; `origin` names the source of the sizes in errors.
pub fn random_qwen2_config(
    shape: &Qwen2Shape,
    tokenizer: &Tokenizer,
    origin: &str,
) -> Result<ModelConfig> {
    let eos = tokenizer.eos_token_ids();
    let raw = json!({
        "architectures": ["Qwen2ForCausalLM"],
        "model_type": "qwen2",
        "vocab_size": tokenizer.vocab_size(),
        "hidden_size": shape.hidden_size,
        "intermediate_size": shape.intermediate_size,
        "num_hidden_layers": shape.num_hidden_layers,
        "num_attention_heads": shape.num_attention_heads,
        "num_key_value_heads": shape.num_key_value_heads,
        "max_position_embeddings": shape.max_position_embeddings,
        "rope_theta": shape.rope_theta,
        "rms_norm_eps": 1e-6,
        "hidden_act": "silu",
        "tie_word_embeddings": shape.tie_word_embeddings,
        "initializer_range": shape.initializer_range,
        "attention_dropout": 0.0,
        "use_sliding_window": false,
        "sliding_window": shape.max_position_embeddings,
        "max_window_layers": shape.num_hidden_layers,
        "use_cache": true,
        "bos_token_id": Value::Null,
        "eos_token_id": if eos.len() == 1 { json!(eos[0]) } else { json!(eos) },
        "pad_token_id": tokenizer.pad_token_id(),
        "torch_dtype": "float32",
    });
    ModelConfig::from_json(raw, origin)
}
