//! Reading the rollout dumps `grpo train` writes with `train.save_rollouts = true`
//! (`output.dir/rollouts/step-N.jsonl`, one JSON object per group), plain or gzipped.

use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::Deserialize;

pub use crate::record::{RolloutCompletion, RolloutGroup};

/// Like [`RolloutGroup`] but with an optional step, filled from the file name when absent.
#[derive(Deserialize)]
struct RawGroup {
    step: Option<usize>,
    #[serde(default)]
    prompt: String,
    #[serde(default)]
    answer: String,
    completions: Vec<RolloutCompletion>,
}

/// Reads every group from `inputs`: rollout files (`.jsonl`, `.jsonl.gz`), directories of them,
/// or run directories holding a `rollouts/` folder. Groups come back sorted by step; within a
/// step they keep the order of the inputs and of the lines.
pub fn read_rollouts<P: AsRef<Path>>(inputs: &[P]) -> Result<Vec<RolloutGroup>> {
    if inputs.is_empty() {
        bail!("no rollout files given");
    }
    let mut groups = Vec::new();
    for input in inputs {
        for file in rollout_files(input.as_ref())? {
            groups.extend(read_rollout_file(&file)?);
        }
    }
    groups.sort_by_key(|g| g.step);
    Ok(groups)
}

/// The rollout files an input names: itself, or the dumps inside a directory ordered by step.
pub fn rollout_files(input: &Path) -> Result<Vec<PathBuf>> {
    if !input.is_dir() {
        if !input.exists() {
            bail!(
                "{}: no such file or directory (expected a rollout .jsonl[.gz] file or a directory of them)",
                input.display()
            );
        }
        return Ok(vec![input.to_path_buf()]);
    }
    let nested = input.join("rollouts");
    let dir = if nested.is_dir() {
        nested
    } else {
        input.to_path_buf()
    };
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .with_context(|| format!("listing {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.is_file()
                && p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.ends_with(".jsonl") || n.ends_with(".jsonl.gz"))
        })
        .collect();
    if files.is_empty() {
        bail!(
            "{}: no rollout files (*.jsonl or *.jsonl.gz) found; train with train.save_rollouts = true",
            dir.display()
        );
    }
    files.sort_by(|a, b| (step_from_name(a), a).cmp(&(step_from_name(b), b)));
    Ok(files)
}

/// `N` of a file named `step-N.jsonl[.gz]`.
pub fn step_from_name(path: &Path) -> Option<usize> {
    let name = path.file_name()?.to_str()?;
    let stem = name
        .strip_suffix(".gz")
        .unwrap_or(name)
        .strip_suffix(".jsonl")?;
    stem.strip_prefix("step-")?.parse().ok()
}

/// Reads one dump; gzip is recognised by its magic bytes, whatever the file is called.
pub fn read_rollout_file(path: &Path) -> Result<Vec<RolloutGroup>> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let text = if bytes.starts_with(&[0x1f, 0x8b]) {
        let mut s = String::new();
        flate2::read::MultiGzDecoder::new(bytes.as_slice())
            .read_to_string(&mut s)
            .with_context(|| {
                format!(
                    "{}: decompressing gzip (expected UTF-8 JSONL)",
                    path.display()
                )
            })?;
        s
    } else {
        String::from_utf8(bytes)
            .with_context(|| format!("{}: expected UTF-8 JSONL", path.display()))?
    };
    let file_step = step_from_name(path);
    let mut groups = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let at = format!("{}:{}", path.display(), i + 1);
        let raw: RawGroup = serde_json::from_str(line).with_context(|| {
            format!(
                "{at}: expected a rollout group {{\"step\", \"prompt\", \"completions\": [{{\"token_ids\", \"reward\", ..}}]}}"
            )
        })?;
        let Some(step) = raw.step.or(file_step) else {
            bail!("{at}: no \"step\" key, and the file name is not step-N.jsonl");
        };
        if raw.completions.is_empty() {
            bail!("{at}: a group needs at least one completion");
        }
        groups.push(RolloutGroup {
            step,
            prompt: raw.prompt,
            answer: raw.answer,
            completions: raw.completions,
            source: at,
        });
    }
    Ok(groups)
}
