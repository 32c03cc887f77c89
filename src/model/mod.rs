//! The policy model: Qwen2 / Llama decoders with a differentiable training path and a
//! KV-cached inference path, Hugging Face checkpoint load/save, and the tokenizer with its
//! chat template.

mod attention_op;
mod bf16_copies;
pub mod checkpoint;
pub mod config;
pub mod finite;
mod host_kv;
mod infer;
pub mod kernels;
pub mod kv_cache;
mod layer_ops;
mod linear;
mod linear_op;
mod lm_head_op;
pub mod lora;
mod lora_op;
mod mlp_op;
pub(crate) mod ops;
mod params;
pub mod policy;
pub mod qwen2;
pub mod random;
pub mod source;
pub mod tokenizer;

pub use checkpoint::copy_tokenizer_files;
pub use config::ModelConfig;
pub use kv_cache::KvCache;
pub use policy::{EntropyGrad, Policy};
pub use random::{random_qwen2_config, Qwen2Shape};
pub use source::{cached_model_dir, resolve_model, resolve_model_dir, ModelSource, Need};
pub use tokenizer::{ChatMessage, Tokenizer};
