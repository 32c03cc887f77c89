//! Datasets: the built-in `arith` and `arith-chain` tasks, the shipped benchmark files, JSONL loaders, prompts and
//! the tiny model's tokenizer.

pub mod benchmarks;
pub mod chain;
#[cfg(test)]
mod chain_tests;
pub mod dataset;
pub mod hub;
pub mod parquet;
pub mod problem;
pub mod prompt;
pub mod sets;
pub mod task;
pub mod tokenizer;

pub use benchmarks::{benchmark, benchmark_set, data_root, BenchmarkSpec, GoldSource};
pub use dataset::{load_benchmark, load_jsonl, Example};
pub use prompt::{Message, PromptTemplate};
