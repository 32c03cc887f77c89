//! One module per subcommand: its clap arguments and the glue that runs it.
pub mod analyze;
pub mod args;
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

/// A flag set by the first Ctrl-C (the trainer checks it between steps and saves a
/// checkpoint); a second Ctrl-C exits at once.
pub(crate) fn interrupt_flag(
    message: &'static str,
) -> std::sync::Arc<std::sync::atomic::AtomicBool> {
    use std::sync::atomic::{AtomicBool, Ordering};
    let flag = std::sync::Arc::new(AtomicBool::new(false));
    let handler_flag = flag.clone();
    let _ = ctrlc::set_handler(move || {
        if handler_flag.swap(true, Ordering::SeqCst) {
            std::process::exit(130);
        }
        eprintln!("\ngrpo: interrupt received: {message}");
    });
    flag
}
