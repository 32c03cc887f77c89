//! What one step produces (its rollout, scores, update and timings) and how that becomes the
//! step's record: the `metrics.jsonl` line, the `rollouts/step-N.jsonl` file, the log line and
//! the progress bar. The loop in `run.rs` fills these; nothing here touches the model.

use std::path::Path;

use anyhow::{Context, Result};

use crate::data::dataset::Example;
use crate::record::{RewardScores, RolloutCompletion, RolloutGroup, StepMetrics};
use crate::rewards::RewardFn;
use crate::sampler::{Completion, FinishReason};
use crate::trainer::credit::Credit;
use crate::trainer::loss::{LossStats, Objective};

/// One step's prompts and the completions sampled for them (`G` per prompt, in prompt order).
pub(super) struct Rollout<'a> {
    pub(super) examples: Vec<&'a Example>,
    pub(super) prompt_ids: Vec<Vec<u32>>,
    pub(super) completions: Vec<Completion>,
    pub(super) time_generate: f64,
}

/// Outcome rewards of a rollout.
pub(super) struct Scores {
    /// `r_i`: the weighted sum of the reward functions.
    pub(super) total: Vec<f64>,
    /// Each function's unweighted scores, in `rewards.funcs` order.
    pub(super) per_function: Vec<Vec<f64>>,
    /// 1 when the answer is correct (the `accuracy` reward, or the verifier without it).
    pub(super) correct: Vec<f64>,
}

/// The outcome of a step's update.
pub(super) struct Update {
    /// The loss of the first of the μ passes.
    pub(super) loss: f64,
    /// Token statistics and entropy of the first pass (the policy that sampled the batch).
    pub(super) stats: LossStats,
    pub(super) entropy_sum: f64,
    /// Clip counts where clipping can act: the passes after the first when μ > 1 (on the
    /// first, ρ ≡ 1), else the only one. `low_min` / `high_max` are TRL's extremes over those
    /// passes' micro-batches.
    pub(super) clip: LossStats,
    pub(super) clip_low_min: f64,
    pub(super) clip_high_max: f64,
    pub(super) logprob_diff: f64,
    /// TRL's `policy_loss` (first pass), and the entropy coefficient after the step.
    pub(super) policy_loss: f64,
    pub(super) entropy_coef: Option<f64>,
    /// Which metrics TRL logs for the type: `clip_ratio/*`, `cispo_clip_ratio` or `vespo/*`.
    pub(super) objective: Objective,
    pub(super) grad_norm: f64,
    /// The update was skipped (non-finite loss or gradient).
    pub(super) skipped: bool,
    pub(super) time: f64,
    /// Tokens the decoder ran over the update's passes.
    pub(super) tokens_processed: usize,
}

pub(super) struct StepTimes {
    pub(super) generate: f64,
    pub(super) score: f64,
    pub(super) process_sets: f64,
    pub(super) update: f64,
    pub(super) step: f64,
}

/// The `metrics.jsonl` record of a finished step (validation is added by the caller).
#[allow(clippy::too_many_arguments)]
pub(super) fn step_metrics(
    step: usize,
    lr: f64,
    reward_fns: &[Box<dyn RewardFn>],
    rollout: &Rollout,
    scores: &Scores,
    credit: &Credit,
    update: &Update,
    times: &StepTimes,
) -> StepMetrics {
    let comps = &rollout.completions;
    let n = comps.len() as f64;
    let lens: Vec<usize> = comps.iter().map(|c| c.token_ids.len()).collect();
    let new_tokens: usize = lens.iter().sum();
    let truncated = comps
        .iter()
        .filter(|c| c.finish_reason == FinishReason::Length)
        .count();
    let zero_std = credit.zero_std.iter().filter(|&&z| z).count();
    let p = &credit.process;
    let clip = update.objective == Objective::Clip;
    StepMetrics {
        step,
        loss: Some(update.loss),
        reward_mean: Some(mean(&scores.total)),
        reward_std: Some(std_dev(&scores.total)),
        rewards: RewardScores {
            per_function: reward_fns
                .iter()
                .zip(&scores.per_function)
                .map(|(f, vals)| (f.name().to_string(), mean(vals)))
                .collect(),
            ..RewardScores::default()
        },
        accuracy: Some(mean(&scores.correct)),
        completion_length_mean: Some(new_tokens as f64 / n),
        completion_length_max: Some(lens.iter().max().copied().unwrap_or(0)),
        truncated_fraction: Some(truncated as f64 / n),
        kl: Some(update.stats.kl_mean()),
        clip_fraction: clip.then(|| update.clip.clip_fraction()),
        clip_ratio_low_mean: clip.then(|| update.clip.low_clip_fraction()),
        clip_ratio_low_min: clip.then_some(update.clip_low_min),
        clip_ratio_high_mean: clip.then(|| update.clip.high_clip_fraction()),
        clip_ratio_high_max: clip.then_some(update.clip_high_max),
        clip_ratio_region_mean: clip.then(|| update.clip.clip_fraction()),
        cispo_clip_ratio: (update.objective == Objective::Cispo)
            .then(|| update.clip.cispo_clip_ratio()),
        vespo_phi_seq_mean: (update.objective == Objective::Vespo)
            .then(|| update.stats.phi_seq_mean()),
        policy_loss: update.entropy_coef.map(|_| update.policy_loss),
        entropy_coef: update.entropy_coef,
        entropy: Some(update.entropy_sum / update.stats.tokens.max(1.0)),
        logprob_diff: Some(update.logprob_diff),
        grad_norm: Some(update.grad_norm),
        lr: Some(lr),
        skipped_update: Some(update.skipped),
        zero_std_group_fraction: Some(zero_std as f64 / credit.zero_std.len() as f64),
        process_num_groups: Some(p.num_groups),
        process_non_trivial_fraction: Some(p.non_trivial_fraction),
        process_mean_path_depth: Some(p.mean_path_depth),
        process_mean_intermediate_proportion: Some(p.mean_intermediate_proportion),
        process_mean_num_process_sets: Some(p.mean_num_process_sets),
        process_lambda_histogram: Some(p.lambda_histogram.clone()),
        time_generate_s: Some(times.generate),
        time_score_s: Some(times.score),
        time_update_s: Some(times.update),
        time_process_sets_s: Some(times.process_sets),
        step_time_s: Some(times.step),
        tokens_processed: Some(update.tokens_processed as u64),
        tokens_per_s: Some(new_tokens as f64 / times.generate.max(1e-9)),
        eval_accuracy: None,
    }
}

pub(super) fn mean(v: &[f64]) -> f64 {
    if v.is_empty() {
        0.0
    } else {
        v.iter().sum::<f64>() / v.len() as f64
    }
}

pub(super) fn std_dev(v: &[f64]) -> f64 {
    if v.len() < 2 {
        return 0.0;
    }
    let m = mean(v);
    (v.iter().map(|x| (x - m).powi(2)).sum::<f64>() / (v.len() - 1) as f64).sqrt()
}

/// `rollouts/step-N.jsonl`: one [`RolloutGroup`] per prompt.
pub(super) fn write_rollouts(
    out: &Path,
    step: usize,
    rollout: &Rollout,
    scores: &Scores,
    credit: &Credit,
) -> Result<()> {
    let dir = out.join("rollouts");
    std::fs::create_dir_all(&dir)?;
    let mut text = String::new();
    let comps = &rollout.completions;
    let g = comps.len() / rollout.examples.len().max(1);
    for (p, ex) in rollout.examples.iter().enumerate() {
        let group = RolloutGroup {
            step,
            prompt: ex.question.clone(),
            answer: ex.answer.clone(),
            completions: (p * g..(p + 1) * g)
                .map(|i| RolloutCompletion {
                    token_ids: comps[i].token_ids.clone(),
                    text: comps[i].text.clone(),
                    reward: scores.total[i],
                    advantage: credit.advantages[i],
                })
                .collect(),
            source: String::new(),
        };
        text.push_str(&serde_json::to_string(&group)?);
        text.push('\n');
    }
    let path = dir.join(format!("step-{step}.jsonl"));
    std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))
}

/// After a resume, drop metric lines past the checkpoint so the file reads as one run.
pub(super) fn truncate_metrics(path: &Path, step: usize) -> Result<()> {
    let Ok(text) = std::fs::read_to_string(path) else {
        return Ok(());
    };
    let kept: Vec<&str> = text
        .lines()
        .filter(|l| serde_json::from_str::<StepMetrics>(l).is_ok_and(|m| m.step <= step))
        .collect();
    let mut out = kept.join("\n");
    if !out.is_empty() {
        out.push('\n');
    }
    std::fs::write(path, out).with_context(|| format!("rewriting {}", path.display()))
}

/// `step N/M loss … reward … (eval/accuracy …)`: the step's headline metrics as one log line.
pub(super) fn log_line(m: &StepMetrics, max_steps: usize) -> String {
    let mut line = format!("step {}/{max_steps}", m.step);
    for (key, label) in [
        ("loss", "loss"),
        ("reward", "reward"),
        ("reward_std", "reward_std"),
        ("accuracy", "accuracy"),
        ("completions/mean_length", "length"),
        ("kl", "kl"),
        ("entropy", "entropy"),
        ("clip_fraction", "clip"),
        ("grad_norm", "grad_norm"),
        ("lr", "lr"),
        ("step_time_s", "step_time_s"),
        ("eval/accuracy", "eval/accuracy"),
    ] {
        if let Some(v) = m.get(key) {
            if v != 0.0 && v.abs() < 1e-3 {
                line.push_str(&format!(" {label} {v:.3e}"));
            } else {
                line.push_str(&format!(" {label} {v:.4}"));
            }
        }
    }
    line
}

pub(super) fn progress_bar(total: usize, start: usize) -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::new(total as u64);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "step {pos}/{len} [{elapsed_precise} < {eta_precise}] {bar:30} {msg}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    bar.set_position(start as u64);
    bar
}
