//! Offline analysis of training runs: the process-set statistics of dumped rollouts
//! (`grpo analyze`, `docs/lambda-grpo.md` §7) and training curves (`grpo plot`).
//!
//! Everything here reads what `grpo train` wrote (`rollouts/step-N.jsonl`, `metrics.jsonl`,
//! `summary.json`); the tree statistics reuse [`crate::process_sets`].

pub mod font;
pub mod groups;
pub mod plot;
pub mod rollouts;
pub mod tree;

use std::path::Path;

use anyhow::{bail, Result};

pub use groups::{analyze_group, analyze_groups, report, Aggregate, GroupAnalysis, Report};
pub use plot::{plot_runs, PlotOptions, PlotSummary, Run};
pub use rollouts::{read_rollouts, RolloutCompletion, RolloutGroup};
pub use tree::TreeView;

/// Picture formats the plotters backends write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImageFormat {
    Png,
    Svg,
}

impl ImageFormat {
    /// The format named by the file extension.
    pub fn from_path(path: &Path) -> Result<ImageFormat> {
        let ext = path
            .extension()
            .and_then(|e| e.to_str())
            .map(str::to_ascii_lowercase);
        match ext.as_deref() {
            Some("png") => Ok(ImageFormat::Png),
            Some("svg") => Ok(ImageFormat::Svg),
            _ => bail!("{}: expected a .png or .svg file name", path.display()),
        }
    }
}
