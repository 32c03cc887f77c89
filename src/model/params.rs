//! The parameter list of a Qwen2 / Llama decoder (HF names and shapes), from its config alone:
//! what the decoder loads, LoRA targets and `grpo bench` counts, without importing the decoder.

use super::config::{ModelConfig, ModelFamily};

/// The HF name and shape of every parameter, in file order; `lm_head.weight` is absent when
/// embeddings are tied.
pub(crate) fn parameter_specs(cfg: &ModelConfig) -> Vec<(String, Vec<usize>)> {
    let (h, i, v) = (cfg.hidden_size, cfg.intermediate_size, cfg.vocab_size);
    let qd = cfg.num_attention_heads * cfg.head_dim;
    let kvd = cfg.num_key_value_heads * cfg.head_dim;
    let mut specs = vec![("model.embed_tokens.weight".to_string(), vec![v, h])];
    for l in 0..cfg.num_hidden_layers {
        let p = format!("model.layers.{l}");
        let mut add = |n: &str, s: Vec<usize>| specs.push((format!("{p}.{n}"), s));
        add("input_layernorm.weight", vec![h]);
        add("post_attention_layernorm.weight", vec![h]);
        add("self_attn.q_proj.weight", vec![qd, h]);
        add("self_attn.k_proj.weight", vec![kvd, h]);
        add("self_attn.v_proj.weight", vec![kvd, h]);
        add("self_attn.o_proj.weight", vec![h, qd]);
        if cfg.attention_bias {
            add("self_attn.q_proj.bias", vec![qd]);
            add("self_attn.k_proj.bias", vec![kvd]);
            add("self_attn.v_proj.bias", vec![kvd]);
        }
        if cfg.family == ModelFamily::Llama && cfg.attention_bias {
            add("self_attn.o_proj.bias", vec![h]);
        }
        add("mlp.gate_proj.weight", vec![i, h]);
        add("mlp.up_proj.weight", vec![i, h]);
        add("mlp.down_proj.weight", vec![h, i]);
        if cfg.mlp_bias {
            add("mlp.gate_proj.bias", vec![i]);
            add("mlp.up_proj.bias", vec![i]);
            add("mlp.down_proj.bias", vec![h]);
        }
    }
    specs.push(("model.norm.weight".to_string(), vec![h]));
    if !cfg.tie_word_embeddings {
        specs.push(("lm_head.weight".to_string(), vec![v, h]));
    }
    specs
}
