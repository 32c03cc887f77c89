//! The RL and SFT training loops, and the sweeps that run them.
//!
//! One GRPO step (`run.rs`, each phase a function): sample `G` completions per prompt
//! ([`crate::sampler`]), score them ([`crate::rewards`]), turn rewards into group-relative
//! [`advantages`] and process-set sizes |λ| ([`crate::process_sets`]), and [`update`] the policy
//! with the [`loss`] of `loss.type` ([`optim`] for AdamW / SGD and clipping); `step.rs` turns
//! the step's outputs into its record ([`crate::record`]) and [`state`] writes and reads
//! checkpoints. [`rollout`] packs prompts and completions into padded batches. [`sft`] is the
//! supervised warm start, sharing the optimizer, gradient accumulation and checkpoint layout.
//! [`sweep`] runs configs × seeds and writes the comparison report.
//!
//! The config arrives resolved ([`crate::config::Config::resolve`]); nothing here parses keys.

pub mod advantages;
pub mod credit;
pub mod inplace;
pub mod lock;
pub mod loss;
pub mod memory;
pub mod optim;
pub mod resume;
pub mod rollout;
pub mod run;
pub mod sft;
pub mod state;
mod step;
pub mod sweep;
pub mod tr_dpo;
pub mod update;

/// The prefix-tree math moved below the trainer (analysis uses it too); this path still works.
pub use crate::process_sets;
