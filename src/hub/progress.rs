//! Download progress: a bar per file on a terminal, plain lines otherwise (log files).

use std::io::IsTerminal;
use std::time::Instant;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

pub struct Progress {
    bar: Option<ProgressBar>,
    label: String,
    started: Instant,
    from: u64,
}

/// `1.5 MB`, for plain lines.
pub fn human(bytes: u64) -> String {
    let b = bytes as f64;
    match bytes {
        0..=9_999 => format!("{bytes} B"),
        10_000..=9_999_999 => format!("{:.1} kB", b / 1e3),
        10_000_000..=9_999_999_999 => format!("{:.1} MB", b / 1e6),
        _ => format!("{:.2} GB", b / 1e9),
    }
}

impl Progress {
    /// Starts reporting a download of `total` bytes (if known) resuming at `from`.
    pub fn start(label: &str, total: Option<u64>, from: u64) -> Progress {
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = ProgressBar::with_draw_target(total, ProgressDrawTarget::stderr());
            if let Ok(style) = ProgressStyle::with_template(
                "{prefix} {bar:30} {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
            ) {
                bar.set_style(style);
            }
            bar.set_prefix(label.to_string());
            bar.set_position(from);
            bar
        });
        if bar.is_none() {
            let size = total.map(human).unwrap_or_else(|| "size unknown".into());
            let resume = if from > 0 {
                format!(", resuming at {}", human(from))
            } else {
                String::new()
            };
            eprintln!("downloading {label} ({size}{resume})");
        }
        Progress {
            bar,
            label: label.to_string(),
            started: Instant::now(),
            from,
        }
    }

    pub fn advance(&self, n: u64) {
        if let Some(bar) = &self.bar {
            bar.inc(n);
        }
    }

    /// Ends the bar; prints one line with the size and rate either way.
    pub fn finish(self, total: u64) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
        let secs = self.started.elapsed().as_secs_f64();
        let rate = (total.saturating_sub(self.from)) as f64 / secs.max(1e-3);
        eprintln!(
            "downloaded {} ({} in {secs:.1} s, {}/s)",
            self.label,
            human(total),
            human(rate as u64)
        );
    }

    /// Ends the bar without a success line (the caller reports the error).
    pub fn abandon(self) {
        if let Some(bar) = &self.bar {
            bar.abandon();
        }
    }
}
