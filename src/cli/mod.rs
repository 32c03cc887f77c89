//! One module per subcommand: its clap arguments and the glue that runs it.
pub mod analyze;
pub mod args;
pub mod bench;
pub mod config;
pub mod data;
pub mod eval;
pub mod export;
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

/// An error and its causes on one line, as `{:#}` prints them, minus a cause that only
/// repeats the end of the message before it: errors such as safetensors' `I/O error: {e}`
/// both print and return their source, which would state a disk-full cause twice.
pub fn error_message(err: &anyhow::Error) -> String {
    let mut parts: Vec<String> = Vec::new();
    for cause in err.chain() {
        let text = cause.to_string();
        if parts.last().is_some_and(|prev| prev.ends_with(&text)) {
            continue;
        }
        parts.push(text);
    }
    parts.join(": ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn disk_full_message_states_its_cause_once() {
        let io = std::io::Error::from_raw_os_error(28);
        let st = safetensors::SafeTensorError::IoError(io);
        let err = anyhow::Error::new(st).context("writing runs/x/checkpoint-4/model.safetensors");
        let msg = error_message(&err);
        assert_eq!(msg.matches("No space left on device").count(), 1, "{msg}");
        assert!(
            msg.starts_with("writing runs/x/checkpoint-4/model.safetensors: "),
            "{msg}"
        );
        // Distinct causes are all kept.
        let err = anyhow::anyhow!("inner").context("middle").context("outer");
        assert_eq!(error_message(&err), "outer: middle: inner");
    }
}
