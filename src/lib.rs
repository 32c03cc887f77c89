//! `grpo`: RL fine-tuning of causal language models on problems with checkable answers.
//!
//! Data flows one way: [`config`] → [`model`] + [`data`] → [`sampler`] → [`rewards`] →
//! [`trainer`] → checkpoints and metrics. [`eval`] reuses the sampler and rewards; [`cli`] is the
//! glue behind each subcommand of the binary.
//!
//! Layers, lowest first; a module imports only from layers below it:
//!
//! 1. [`config`] (the TOML schema, its enums, device and dtype names) and [`process_sets`]
//!    (the prefix-tree math of λ-GRPO) and [`verifier`] (math answer extraction, parsing and
//!    equivalence) and [`heap_budget`] (the allocator's per-thread budget for chat templates)
//!    and [`hub`] (the Hugging Face cache layout and downloader): import nothing of the crate.
//! 2. [`model`] (policy, checkpoints, tokenizer) and [`record`] (the run record train writes
//!    and sweep, plot and analyze read).
//! 3. [`data`] (datasets, prompts, the built-in tasks) and [`sampler`] (generation).
//! 4. [`rewards`] (the reward functions; `accuracy` grades with [`verifier`]).
//! 5. [`resolve`] (`Config::resolve()`: the specs a run builds once from its config).
//! 6. [`eval`] (benchmarks and validation) and [`analysis`] (rollout statistics, plots).
//! 7. [`trainer`] (the RL and SFT loops, sweeps).
//! 8. [`cli`] (one file per subcommand).

pub mod analysis;
pub mod cli;
pub mod config;
pub mod data;
pub mod eval;
pub mod heap_budget;
pub mod hub;
pub mod model;
pub mod process_sets;
pub mod record;
pub mod resolve;
pub mod rewards;
pub mod sampler;
pub mod trainer;
pub mod verifier;

/// The system allocator with [`heap_budget::with_budget`]'s accounting (a chat template's
/// rendering runs under a budget).
#[global_allocator]
static ALLOC: heap_budget::BudgetAlloc = heap_budget::BudgetAlloc;
