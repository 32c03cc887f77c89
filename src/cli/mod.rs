//! One module per subcommand: its clap arguments and the glue that runs it.
pub mod config;
pub mod data;
pub mod eval;
pub mod generate;
pub mod sft;
pub mod train;
pub mod verify;
pub mod sweep;
pub mod analyze;
pub mod plot;
pub mod init_model;
