//! Checkpoints: `output.dir/checkpoint-N/` holds the model in Hugging Face layout (so
//! `transformers` and `grpo generate` load it unchanged), or for a LoRA run the adapter in
//! PEFT's layout (`adapter_config.json`, `adapter_model.safetensors`), plus what a resumed run needs:
//! `optimizer.safetensors` (AdamW moments) and `trainer_state.json` (step, counters, config).
//!
//! A checkpoint is written into a staging folder beside its final name and renamed into place,
//! so an interrupted save never leaves a half-written `checkpoint-N`.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

use crate::model::{copy_tokenizer_files, Policy};
use crate::trainer::optim::Optimizer;

/// What `trainer_state.json` holds besides the weights and moments.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TrainerState {
    /// Optimizer steps completed (the checkpoint is taken after step `step`).
    pub step: usize,
    /// Consecutive non-finite steps so far (the NaN guard's counter).
    pub nonfinite_streak: usize,
    /// Validation accuracy before training, carried into the final summary.
    pub initial_val_accuracy: Option<f64>,
    /// Wall time spent before this checkpoint, so summaries of resumed runs add up.
    pub elapsed_s: f64,
    /// The resolved config of the run, as TOML.
    pub config: String,
    /// The entropy bonus's coefficient and last entropy (adaptive control), when it is on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entropy_control: Option<crate::trainer::loss::EntropyControl>,
}

pub fn checkpoint_dir(out: &Path, step: usize) -> PathBuf {
    out.join(format!("checkpoint-{step}"))
}

/// Writes `checkpoint-N` atomically: model, tokenizer files, optimizer, state.
pub fn save_checkpoint(
    out: &Path,
    policy: &Policy,
    tokenizer_dir: &Path,
    opt: &Optimizer,
    state: &TrainerState,
) -> Result<PathBuf> {
    let final_dir = checkpoint_dir(out, state.step);
    let staging = out.join(format!(".checkpoint-{}.partial", state.step));
    if staging.exists() {
        std::fs::remove_dir_all(&staging)
            .with_context(|| format!("removing stale {}", staging.display()))?;
    }
    if policy.lora_config().is_some() {
        policy.save_adapter(&staging, &tokenizer_dir.display().to_string())?;
    } else {
        // Half-precision runs store the f32 master weights: the bf16/f16 copy loses small updates.
        let master = if opt.has_master_weights() {
            Some(opt.master_weights()?)
        } else {
            None
        };
        policy.save_weights(&staging, master.as_deref())?;
    }
    copy_tokenizer_files(tokenizer_dir, &staging)?;
    opt.save(&staging.join("optimizer.safetensors"))?;
    let json = serde_json::to_string_pretty(state)?;
    std::fs::write(staging.join("trainer_state.json"), json)
        .with_context(|| format!("writing {}", staging.join("trainer_state.json").display()))?;
    if final_dir.exists() {
        // Rename can't replace a non-empty directory: move the old one aside first.
        let old = out.join(format!(".checkpoint-{}.old", state.step));
        let _ = std::fs::remove_dir_all(&old);
        std::fs::rename(&final_dir, &old)?;
        std::fs::rename(&staging, &final_dir)?;
        let _ = std::fs::remove_dir_all(&old);
    } else {
        std::fs::rename(&staging, &final_dir).with_context(|| {
            format!("renaming {} to {}", staging.display(), final_dir.display())
        })?;
    }
    Ok(final_dir)
}

/// Removes the oldest complete checkpoints so that at most `keep` remain (TRL's
/// `save_total_limit`); `keep = 0` keeps all. Called only after a new checkpoint is in place,
/// so the newest one always survives.
pub fn prune_checkpoints(out: &Path, keep: usize) -> Result<()> {
    if keep == 0 {
        return Ok(());
    }
    let mut all = complete_checkpoints(out)?;
    all.sort();
    let excess = all.len().saturating_sub(keep);
    for (_, dir) in all.into_iter().take(excess) {
        std::fs::remove_dir_all(&dir)
            .with_context(|| format!("removing old checkpoint {}", dir.display()))?;
    }
    Ok(())
}

/// Removes what a save killed midway leaves in `out` (the caller holds the folder's lock, so no
/// other run is writing there): `.grpo-save-*` temporary folders and `.checkpoint-N.partial`
/// staging folders. A `.checkpoint-N.old` is the previous `checkpoint-N` moved aside for a
/// replacement: it is put back when the replacement never arrived, else removed. Returns the
/// paths removed or restored.
pub fn clean_interrupted_saves(out: &Path) -> Result<Vec<PathBuf>> {
    let mut cleaned = Vec::new();
    if !out.is_dir() {
        return Ok(cleaned);
    }
    let mut entries: Vec<PathBuf> = std::fs::read_dir(out)
        .with_context(|| format!("reading {}", out.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    entries.sort();
    for path in entries {
        let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
            continue;
        };
        let restore_to = name
            .strip_prefix(".checkpoint-")
            .and_then(|s| s.strip_suffix(".old"))
            .and_then(|n| n.parse::<usize>().ok())
            .map(|n| checkpoint_dir(out, n));
        if let Some(final_dir) = restore_to.filter(|d| !d.exists()) {
            std::fs::rename(&path, &final_dir).with_context(|| {
                format!("restoring {} to {}", path.display(), final_dir.display())
            })?;
            tracing::warn!(
                "restored {} from {} (a save was interrupted while replacing it)",
                final_dir.display(),
                path.display()
            );
            cleaned.push(path);
            continue;
        }
        let leftover = name.starts_with(".grpo-save-")
            || (name.starts_with(".checkpoint-")
                && (name.ends_with(".partial") || name.ends_with(".old")));
        if leftover && path.is_dir() {
            std::fs::remove_dir_all(&path)
                .with_context(|| format!("removing the interrupted save {}", path.display()))?;
            tracing::info!("removed {} (left by an interrupted save)", path.display());
            cleaned.push(path);
        }
    }
    Ok(cleaned)
}

/// The newest complete `checkpoint-N` in `out`, if any.
pub fn latest_checkpoint(out: &Path) -> Result<Option<PathBuf>> {
    Ok(complete_checkpoints(out)?.into_iter().max().map(|(_, p)| p))
}

/// (N, path) of every `checkpoint-N` in `out` that has its `trainer_state.json`.
fn complete_checkpoints(out: &Path) -> Result<Vec<(usize, PathBuf)>> {
    let mut found = Vec::new();
    if !out.exists() {
        return Ok(found);
    }
    for entry in std::fs::read_dir(out).with_context(|| format!("reading {}", out.display()))? {
        let path = entry?.path();
        let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
            continue;
        };
        let Some(n) = name
            .strip_prefix("checkpoint-")
            .and_then(|s| s.parse::<usize>().ok())
        else {
            continue;
        };
        if !path.join("trainer_state.json").exists() {
            continue;
        }
        found.push((n, path));
    }
    Ok(found)
}

pub fn load_state(dir: &Path) -> Result<TrainerState> {
    let path = dir.join("trainer_state.json");
    let text = std::fs::read_to_string(&path).with_context(|| {
        format!(
            "{} is not a grpo checkpoint (no trainer_state.json)",
            dir.display()
        )
    })?;
    let state: TrainerState =
        serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
    if !dir.join("optimizer.safetensors").exists() {
        bail!("{}: optimizer.safetensors is missing", dir.display());
    }
    Ok(state)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fake_checkpoint(out: &Path, step: usize, complete: bool) {
        let dir = checkpoint_dir(out, step);
        std::fs::create_dir_all(&dir).unwrap();
        if complete {
            std::fs::write(dir.join("trainer_state.json"), "{}").unwrap();
        }
    }

    #[test]
    fn prune_keeps_the_newest_complete_checkpoints() {
        let tmp = tempfile::tempdir().unwrap();
        let out = tmp.path();
        // Numeric, not lexicographic, order: checkpoint-10 is newer than checkpoint-9.
        for step in [5, 9, 10, 20] {
            fake_checkpoint(out, step, true);
        }
        fake_checkpoint(out, 30, false);
        assert_eq!(
            latest_checkpoint(out).unwrap(),
            Some(checkpoint_dir(out, 20))
        );
        prune_checkpoints(out, 0).unwrap();
        assert!(checkpoint_dir(out, 5).exists(), "0 keeps everything");
        prune_checkpoints(out, 2).unwrap();
        let left: Vec<bool> = [5, 9, 10, 20, 30]
            .iter()
            .map(|&s| checkpoint_dir(out, s).exists())
            .collect();
        assert_eq!(
            left,
            [false, false, true, true, true],
            "incomplete ones are not counted"
        );
    }

    #[test]
    fn resume_cleanup_removes_leftover_grpo_save_folders() {
        let tmp = tempfile::tempdir().unwrap();
        let out = tmp.path();
        fake_checkpoint(out, 2, true);
        for junk in [
            ".grpo-save-Ab12Cd",
            ".checkpoint-4.partial",
            ".checkpoint-2.old",
        ] {
            std::fs::create_dir_all(out.join(junk)).unwrap();
            std::fs::write(out.join(junk).join("model.safetensors"), "x").unwrap();
        }
        // Killed between moving checkpoint-3 aside and renaming its replacement in.
        std::fs::create_dir_all(out.join(".checkpoint-3.old")).unwrap();
        std::fs::write(out.join(".checkpoint-3.old/trainer_state.json"), "{}").unwrap();
        std::fs::write(out.join("metrics.jsonl"), "").unwrap();
        let cleaned = clean_interrupted_saves(out).unwrap();
        assert_eq!(cleaned.len(), 4, "{cleaned:?}");
        let mut left: Vec<String> = std::fs::read_dir(out)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        assert_eq!(left, ["checkpoint-2", "checkpoint-3", "metrics.jsonl"]);
        assert_eq!(
            latest_checkpoint(out).unwrap(),
            Some(checkpoint_dir(out, 3))
        );
    }
}
