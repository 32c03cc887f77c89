//! `grpo`: RL fine-tuning of causal language models on problems with checkable answers.
//!
//! Data flows one way: [`config`] → [`model`] + [`data`] → [`sampler`] → [`rewards`] →
//! [`trainer`] → checkpoints and metrics. [`eval`] reuses the sampler and rewards; [`cli`] is the
//! glue behind each subcommand of the binary.

pub mod analysis;
pub mod cli;
pub mod config;
pub mod data;
pub mod eval;
pub mod model;
pub mod rewards;
pub mod sampler;
pub mod trainer;
