//! (filled in by its issue)

pub mod advantages;
pub mod loss;
pub mod process_sets;
pub mod optim;
pub mod rollout;
pub mod state;
pub mod run;
pub mod sft;
pub mod sweep;
