//! (filled in by its issue)

pub mod advantages;
pub mod loss;
pub mod optim;
pub mod process_sets;
pub mod rollout;
pub mod run;
pub mod sft;
pub mod state;
pub mod sweep;
