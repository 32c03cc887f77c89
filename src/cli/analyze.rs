//! `grpo analyze`: process-set statistics (`docs/lambda-grpo.md` §7) of dumped rollouts, and one
//! group's prefix tree as text or a picture.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};

use crate::analysis::groups::format_table;
use crate::analysis::{analyze_group, read_rollouts, report, ImageFormat, RolloutGroup, TreeView};
use crate::model::Tokenizer;

/// The `-h` long text for `grpo analyze` (also used by `main.rs` on the subcommand).
pub const LONG_ABOUT: &str = "\
Process-set statistics of the rollouts `grpo train` dumps with train.save_rollouts = true.

Each group's completions are put into a prefix tree over their token ids; its compressed nodes
are the process sets λ (docs/lambda-grpo.md §5). Per group: the number of process sets, the
|λ| histogram over tokens, the path depth and intermediate proportion (means over the group's
completions), whether the group is non-trivial (some 1 < |λ| < G) and each set's Monte-Carlo
step reward R̂ (mean reward of its members). These are aggregated per step and overall (means
over groups), exactly as the trainer's process/* metrics.

Inputs: step-N.jsonl or step-N.jsonl.gz files, directories of them, or run directories (their
rollouts/ folder is read).

Examples:
  grpo analyze runs/lambda/rollouts                 # table: one row per step, then overall
  grpo analyze runs/lambda --per-group              # plus one row per group
  grpo analyze runs/lambda --json > stats.json      # overall keys, per_step, group_stats
  grpo analyze runs/lambda --step 3 --group 1 --tokenizer runs/lambda/checkpoint-100
  grpo analyze runs/lambda --step 3 --group 1 --svg tree.svg --png tree.png";

/// Process-set statistics of dumped rollouts; one group's prefix tree as text or picture.
#[derive(Debug, Clone, clap::Args)]
#[command(long_about = LONG_ABOUT)]
pub struct AnalyzeArgs {
    /// Rollout files (step-N.jsonl[.gz]), directories of them, or run directories.
    #[arg(required = true, value_name = "ROLLOUTS")]
    pub inputs: Vec<PathBuf>,
    /// Print one JSON object instead of the table (with --group: that group's statistics).
    #[arg(long)]
    pub json: bool,
    /// Add one table row per group.
    #[arg(long)]
    pub per_group: bool,
    /// Leave the per-group list (`group_stats`) out of --json.
    #[arg(long)]
    pub brief: bool,
    /// Only this training step (with --group: the step the group belongs to).
    #[arg(long, value_name = "N")]
    pub step: Option<usize>,
    /// Show the prefix tree of group K (0-based, within --step) instead of the statistics.
    #[arg(long, value_name = "K")]
    pub group: Option<usize>,
    /// Tokenizer directory (tokenizer.json) to decode each process step's tokens.
    #[arg(long, value_name = "DIR", requires = "group")]
    pub tokenizer: Option<PathBuf>,
    /// Draw the group's tree as SVG.
    #[arg(long, value_name = "FILE", requires = "group")]
    pub svg: Option<PathBuf>,
    /// Draw the group's tree as PNG.
    #[arg(long, value_name = "FILE", requires = "group")]
    pub png: Option<PathBuf>,
}

pub fn run(args: &AnalyzeArgs) -> Result<()> {
    let mut groups = read_rollouts(&args.inputs)?;
    if let Some(s) = args.step {
        groups.retain(|g| g.step == s);
        if groups.is_empty() {
            bail!("--step {s}: no group of the inputs belongs to step {s}");
        }
    }
    if let Some(k) = args.group {
        return show_group(args, &groups, k);
    }
    let rep = report(&groups, args.brief);
    if args.json {
        println!("{}", serde_json::to_string_pretty(&rep)?);
    } else {
        print!("{}", format_table(&rep, args.per_group));
    }
    Ok(())
}

fn show_group(args: &AnalyzeArgs, groups: &[RolloutGroup], k: usize) -> Result<()> {
    let mut steps: Vec<usize> = groups.iter().map(|g| g.step).collect();
    steps.dedup();
    let step = match (args.step, steps.as_slice()) {
        (Some(s), _) => s,
        (None, [s]) => *s,
        (None, _) => bail!(
            "--group {k}: the inputs hold {} steps; say which with --step N",
            steps.len()
        ),
    };
    let in_step: Vec<&RolloutGroup> = groups.iter().filter(|g| g.step == step).collect();
    let Some(group) = in_step.get(k) else {
        bail!(
            "--group {k}: step {step} has {} groups (0..{})",
            in_step.len(),
            in_step.len()
        );
    };
    let tokenizer = match &args.tokenizer {
        Some(dir) => {
            Some(Tokenizer::load(dir).with_context(|| format!("--tokenizer {}", dir.display()))?)
        }
        None => None,
    };
    let view = TreeView::new(group, k, tokenizer.as_ref())?;
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&analyze_group(group, k))?
        );
    } else {
        print!("{}", view.to_text());
    }
    for (path, format) in [(&args.svg, ImageFormat::Svg), (&args.png, ImageFormat::Png)] {
        if let Some(p) = path {
            if ImageFormat::from_path(p).ok() != Some(format) {
                bail!(
                    "{}: expected a .{} file name",
                    p.display(),
                    if format == ImageFormat::Svg {
                        "svg"
                    } else {
                        "png"
                    }
                );
            }
            view.draw(p, format)?;
            eprintln!("wrote {}", p.display());
        }
    }
    Ok(())
}
