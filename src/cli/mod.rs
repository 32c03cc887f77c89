//! One module per subcommand: its clap arguments and the glue that runs it.
pub mod analyze;
pub mod config;
pub mod data;
pub mod eval;
pub mod generate;
pub mod init_model;
pub mod plot;
pub mod sft;
pub mod sweep;
pub mod train;
pub mod verify;
