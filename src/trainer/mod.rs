//! (filled in by its issue)

pub mod advantages;
pub mod loss;
pub mod process_sets;
pub mod sft;
