//! The training loop, in the order a reader expects (nanoGPT's shape); each line below is one
//! function of this file:
//!
//! ```text
//! setup:      config → model (+ reference when β > 0), tokenizer, data, reward functions
//! for step in start..max_steps:
//!     rollout:    the step's B prompts (pure in seed and step) → G completions each
//!     score:      reward functions on each completion
//!     credit:     advantages (r − mean) / (std + eps), masks, |λ| from each group's prefix tree
//!                 of its counted completions, and the loss coefficients (`credit::assign`)
//!     update:     for μ iterations: loss over micro-batches → backward → clip → AdamW
//!     log:        one metrics.jsonl line (validation every eval.every steps)
//!     checkpoint: every save_steps
//! finish:     final checkpoint, final validation, summary.json
//! ```

use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use candle_core::{Device, Tensor};

use crate::config::{Aggregation, Config};
use crate::data::dataset::Example;
use crate::data::sets::load_data_sets;
use crate::eval::{evaluate, EvalSet, EvalSettings};
use crate::model::{resolve_model, Need, Policy, Tokenizer};
use crate::resolve::Resolved;
use crate::rewards::{self, RewardFn};
use crate::sampler::{self, mix_seed, FinishReason, SamplingParams};
use crate::trainer::credit::{self, Credit, CreditSettings};
use crate::trainer::lock::RunLock;
use crate::trainer::loss::LossStats;
use crate::trainer::memory;
use crate::trainer::optim::{clip_grad_norm, learning_rate, Optimizer};
use crate::trainer::rollout::step_prompt_indices;
use crate::trainer::state::{
    checkpoint_dir, clean_interrupted_saves, latest_checkpoint, load_state, prune_checkpoints,
    save_checkpoint, TrainerState,
};
use crate::trainer::step::{
    log_line, mean, progress_bar, step_metrics, truncate_metrics, write_rollouts, Rollout, Scores,
    StepTimes, Update,
};
use crate::trainer::update::{accumulate, FrozenLogprobs, LossSettings, UpdateBatch};

pub use crate::record::TrainSummary;
pub use crate::trainer::update::completion_logprobs;

/// Where to resume from.
#[derive(Debug, Clone)]
pub enum Resume {
    /// Start fresh (an existing checkpoint in `output.dir` is an error, not silently reused).
    No,
    /// The newest `checkpoint-N` in `output.dir`.
    Latest,
    Dir(PathBuf),
}

/// Runs `cfg` to `train.max_steps`; writes metrics, checkpoints and the summary into
/// `output.dir`. When `interrupted` becomes true (Ctrl-C), saves a checkpoint and stops with an
/// error saying so.
pub fn train(cfg: &Config, resume: Resume, interrupted: Arc<AtomicBool>) -> Result<TrainSummary> {
    let t0 = Instant::now();
    let run = setup(cfg, &resume)?;
    let mut opt = Optimizer::new(run.policy.trainable_vars(), &cfg.optim)?;
    let mut state = TrainerState {
        step: 0,
        nonfinite_streak: 0,
        initial_val_accuracy: None,
        elapsed_s: 0.0,
        config: cfg.to_toml()?,
    };
    let metrics_path = run.out.join("metrics.jsonl");
    if let Some(dir) = &run.resume_dir {
        state = load_state(dir)?;
        crate::trainer::resume::check_resume_config(&state.config, &cfg.to_toml()?, state.step)
            .with_context(|| format!("resuming from {}", dir.display()))?;
        // Harmless changes (output, logging, eval) take the new values from here on.
        state.config = cfg.to_toml()?;
        opt.load(&dir.join("optimizer.safetensors"))?;
        tracing::info!(step = state.step, dir = %dir.display(), "resumed");
        truncate_metrics(&metrics_path, state.step)?;
    } else {
        let _ = std::fs::remove_file(&metrics_path);
        state.initial_val_accuracy = run.validate(cfg)?;
        if let Some(acc) = state.initial_val_accuracy {
            tracing::info!("validation accuracy before training: {acc:.4}");
        }
    }

    let mut metrics_file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&metrics_path)
        .with_context(|| format!("opening {}", metrics_path.display()))?;
    let bar = progress_bar(cfg.train.max_steps, state.step);
    // Wall time of the processes before this one (up to the checkpoint resumed from), so
    // `wall_time_s` covers the whole run across resumes.
    let prior_elapsed = state.elapsed_s;
    let mut step_times = Vec::new();
    let mut last_saved = None;
    let mut final_val = None;

    while state.step < cfg.train.max_steps {
        if interrupted.load(Ordering::SeqCst) {
            tracing::warn!("interrupted: saving checkpoint-{} and stopping", state.step);
            state.elapsed_s = prior_elapsed + t0.elapsed().as_secs_f64();
            save_checkpoint(&run.out, &run.policy, &run.base_dir, &opt, &state)?;
            bail!(
                "interrupted at step {} (checkpoint saved; continue with --resume)",
                state.step
            );
        }
        let ts = Instant::now();
        let lr = learning_rate(&cfg.optim, state.step, cfg.train.max_steps);
        run.policy
            .set_dropout_seed(mix_seed(cfg.train.seed ^ 0x1025, state.step as u64));
        let rollout = run.rollout(cfg, state.step)?;
        let ts_score = Instant::now();
        let scores = run.score(&rollout);
        let credit = run.credit(cfg, &rollout, &scores)?;
        let time_score = ts_score.elapsed().as_secs_f64();
        let update = run.update(cfg, &mut opt, &mut state, &rollout, &credit, lr)?;
        state.step += 1;
        let step_time = ts.elapsed().as_secs_f64();
        step_times.push(step_time);

        let times = StepTimes {
            generate: rollout.time_generate,
            score: time_score,
            process_sets: credit.time_process_sets,
            update: update.time,
            step: step_time,
        };
        let mut m = step_metrics(
            state.step,
            lr,
            &run.reward_fns,
            &rollout,
            &scores,
            &credit,
            &update,
            &times,
        );
        if cfg.train.save_rollouts {
            write_rollouts(&run.out, state.step, &rollout, &scores, &credit)?;
        }
        let last = state.step == cfg.train.max_steps;
        if last || (cfg.eval.every > 0 && state.step.is_multiple_of(cfg.eval.every)) {
            if let Some(v) = run.validate(cfg)? {
                m.eval_accuracy = Some(v);
                if last {
                    final_val = Some(v);
                }
            }
        }
        writeln!(metrics_file, "{}", serde_json::to_string(&m)?)?;
        metrics_file.flush()?;
        bar.set_position(state.step as u64);
        bar.set_message(format!(
            "reward {:.3} acc {:.3} len {:.0} {step_time:.1}s/step",
            m.reward_mean.unwrap_or(0.0),
            m.accuracy.unwrap_or(0.0),
            m.completion_length_mean.unwrap_or(0.0),
        ));
        if state.step.is_multiple_of(cfg.train.logging_steps) || last {
            // One plain line per `logging_steps` (the progress bar draws only on a terminal).
            let line = log_line(&m, cfg.train.max_steps);
            bar.suspend(|| tracing::info!("{line}"));
        }
        if cfg.train.save_steps > 0 && state.step.is_multiple_of(cfg.train.save_steps) {
            let mut s = state.clone();
            s.elapsed_s = prior_elapsed + t0.elapsed().as_secs_f64();
            last_saved = Some(save_checkpoint(
                &run.out,
                &run.policy,
                &run.base_dir,
                &opt,
                &s,
            )?);
            prune_checkpoints(&run.out, cfg.train.save_total_limit)?;
        }
    }
    bar.finish_and_clear();

    state.elapsed_s = prior_elapsed + t0.elapsed().as_secs_f64();
    let final_checkpoint = match last_saved {
        Some(p) if p == checkpoint_dir(&run.out, state.step) => p,
        _ => {
            let p = save_checkpoint(&run.out, &run.policy, &run.base_dir, &opt, &state)?;
            prune_checkpoints(&run.out, cfg.train.save_total_limit)?;
            p
        }
    };
    if final_val.is_none() {
        final_val = run.validate(cfg)?;
    }
    let summary = TrainSummary {
        steps: state.step,
        wall_time_s: prior_elapsed + t0.elapsed().as_secs_f64(),
        initial_val_accuracy: state.initial_val_accuracy,
        final_val_accuracy: final_val,
        final_checkpoint,
        mean_step_time_s: mean(&step_times),
        loss_type: cfg.loss.loss_type,
        process_weighting: run.res.loss.weighting,
        seed: Some(cfg.train.seed),
        model_commit: run.model_commit.clone(),
        dataset_commit: run.dataset_commit.clone(),
        config: serde_json::to_value(cfg)?,
    };
    let path = run.out.join("summary.json");
    std::fs::write(&path, serde_json::to_string_pretty(&summary)?)
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(summary)
}

/// What the loop reads and never changes (besides the policy's weights).
struct Run {
    out: PathBuf,
    /// The model the run started from (tokenizer files, reference model).
    base_dir: PathBuf,
    resume_dir: Option<PathBuf>,
    /// The commits a hub `model.path` and `data.dataset_name` resolved to.
    model_commit: Option<String>,
    dataset_commit: Option<String>,
    res: Resolved,
    policy: Policy,
    /// The frozen reference model, loaded only when β > 0.
    reference: Option<Policy>,
    tokenizer: Tokenizer,
    train_set: Vec<Example>,
    /// The token ids of every training prompt, encoded (and bounded) once at setup.
    train_prompts: Vec<Vec<u32>>,
    /// `data.validation`, cut to `eval.limit`.
    val_set: Vec<Example>,
    reward_fns: Vec<Box<dyn RewardFn>>,
    /// `sampling.allowed_tokens` as ids, and the matching `[V]` logit bias.
    allowed: Vec<u32>,
    vocab_bias: Option<Tensor>,
    /// Micro-batches per step: `train.gradient_accumulation_steps`, `auto` resolved at setup.
    micro_batches: usize,
    /// The output folder's lock, held as long as the run.
    _lock: RunLock,
}

/// Model, reference model, tokenizer, data and reward functions, from the config.
fn setup(cfg: &Config, resume: &Resume) -> Result<Run> {
    let out = cfg.output.dir.clone();
    // One run per folder, held until the run ends; then leftovers of a killed save.
    let lock = RunLock::acquire(&out, "grpo train")?;
    clean_interrupted_saves(&out)?;
    let res = cfg.resolve()?;
    let source = resolve_model(&cfg.model.path, cfg.model.revision.as_deref(), Need::Model)?;
    let base_dir = source.dir.clone();
    let resume_dir = match resume {
        Resume::No => {
            if let Some(existing) = latest_checkpoint(&out)? {
                bail!(
                    "{} already holds {}: pass --resume to continue that run, or choose another output.dir",
                    out.display(),
                    existing.display()
                );
            }
            None
        }
        Resume::Latest => Some(latest_checkpoint(&out)?.with_context(|| {
            format!(
                "--resume: no checkpoint-N with trainer_state.json in {}",
                out.display()
            )
        })?),
        Resume::Dir(d) => Some(d.clone()),
    };
    let lora = cfg.lora.enabled();
    let weights_dir = match &resume_dir {
        Some(d) if !lora => d.clone(),
        _ => base_dir.clone(),
    };
    if cfg.model.allow_non_finite {
        crate::model::finite::set_allow_non_finite(true);
    }
    let mut policy = Policy::load(&weights_dir, res.dtype, &res.device)?;
    if lora {
        // LoRA: the base stays frozen; adapters are fresh or the checkpoint's (PEFT layout).
        match &resume_dir {
            Some(d) => policy.load_adapter(d)?,
            None => policy.add_lora(&cfg.lora, cfg.train.seed)?,
        }
    }
    let tokenizer = Tokenizer::load(&base_dir)?;
    let reference = match cfg.loss.beta > 0.0 {
        // The base with the adapter off: shares the policy's weights, no second copy.
        true if lora => Some(policy.without_adapter()?),
        true => Some(Policy::load(&base_dir, res.dtype, &res.device)?),
        false => None,
    };
    tracing::info!(
        model = %base_dir.display(),
        params = policy.num_parameters(),
        loss = ?cfg.loss.loss_type,
        weighting = ?res.loss.weighting,
        "loaded policy"
    );

    let sets = load_data_sets(&cfg.data, true)?;
    let (train_set, mut val_set) = (sets.train, sets.validation);
    if cfg.eval.limit > 0 {
        val_set.truncate(cfg.eval.limit);
    }
    let format = &res.prompt;
    if cfg.data.use_chat_template && !tokenizer.has_chat_template() {
        tracing::warn!("prompts are rendered as {}", format.describe(&tokenizer));
    } else {
        tracing::info!("prompts are rendered as {}", format.describe(&tokenizer));
    }
    // Every prompt is encoded once, bounded by the model's context, before any rollout
    // allocates: a row too long names its file and line here rather than exhausting memory later.
    let context = policy.config.max_position_embeddings;
    let train_prompts = format.encode_all(
        &tokenizer,
        &train_set,
        &sets.train_label,
        context,
        cfg.sampling.max_completion_length,
        "sampling.max_completion_length",
    )?;
    let val_prompt_len = format
        .encode_all(
            &tokenizer,
            &val_set,
            &sets.validation_label,
            context,
            cfg.eval.max_completion_length,
            "eval.max_completion_length",
        )?
        .iter()
        .map(Vec::len)
        .max()
        .unwrap_or(0);
    let prompt_len = train_prompts.iter().map(Vec::len).max().unwrap_or(0);
    // Free memory now, with the loaded weights held (the reference model's too).
    let loaded = memory::estimate(cfg, &policy.config, 0, 0).weights;
    let free = match res.device.is_cpu() {
        true => memory::available_cpu_bytes_after(loaded),
        false => None,
    };
    let micro_batches =
        memory::micro_batches(cfg, &policy.config, prompt_len, val_prompt_len, free);
    let rows = cfg.train.batch_size * cfg.sampling.num_generations;
    if cfg.train.gradient_accumulation_steps.fixed().is_none() {
        tracing::info!(
            "train.gradient_accumulation_steps = \"auto\": {micro_batches} micro-batch(es) of {} \
             completions per step ({})",
            rows / micro_batches,
            match free {
                Some(f) => format!("{:.2} GB free after loading the weights", f as f64 / 1e9),
                None => "no memory figure on this device: 1".to_string(),
            }
        );
        if micro_batches > 1 && res.loss.aggregation == Aggregation::Bnpo {
            tracing::warn!(
                "loss.type = \"bnpo\" normalises by each micro-batch's tokens, so its loss depends \
                 on the {micro_batches} micro-batches \"auto\" chose for this machine's memory; set \
                 train.gradient_accumulation_steps to a number for results that do not"
            );
        }
    }
    let need = memory::estimate_with(
        cfg,
        &policy.config,
        prompt_len,
        val_prompt_len,
        micro_batches,
    );
    if let Some(free) = free {
        // The weights are loaded already: what is free now must hold the rest.
        memory::check(cfg, &need, free.saturating_add(need.weights))?;
    }
    let reward_fns = rewards::build_rewards(&res.rewards, &res.reward_config)?;
    let allowed = allowed_token_ids(&tokenizer, &cfg.sampling.allowed_tokens)?;
    let vocab_bias = match &allowed[..] {
        [] => None,
        ids => Some(allowed_bias(ids, policy.config.vocab_size, &res.device)?),
    };
    Ok(Run {
        out,
        base_dir,
        resume_dir,
        model_commit: source.commit,
        dataset_commit: sets.dataset_commit,
        res,
        policy,
        reference,
        tokenizer,
        train_set,
        train_prompts,
        val_set,
        reward_fns,
        allowed,
        vocab_bias,
        micro_batches,
        _lock: lock,
    })
}

impl Run {
    /// The step's `B` prompts and `G` completions for each.
    fn rollout(&self, cfg: &Config, step: usize) -> Result<Rollout<'_>> {
        let ts = Instant::now();
        let idx = step_prompt_indices(
            self.train_set.len(),
            cfg.train.batch_size,
            cfg.train.seed,
            step,
            cfg.data.shuffle,
        );
        let examples: Vec<&Example> = idx.iter().map(|&i| &self.train_set[i]).collect();
        let prompt_ids: Vec<Vec<u32>> =
            idx.iter().map(|&i| self.train_prompts[i].clone()).collect();
        let params = SamplingParams {
            eos_token_ids: self.tokenizer.eos_token_ids(),
            seed: mix_seed(cfg.train.seed, step as u64 + 1),
            ..self.res.sampling.clone()
        };
        let merged = self.policy.for_sampling()?;
        let completions = sampler::generate_restricted(
            merged.as_ref().unwrap_or(&self.policy),
            &self.tokenizer,
            &prompt_ids,
            cfg.sampling.num_generations,
            &params,
            None,
            &self.allowed,
        )?;
        Ok(Rollout {
            examples,
            prompt_ids,
            completions,
            time_generate: ts.elapsed().as_secs_f64(),
        })
    }

    /// Every reward function on every completion.
    fn score(&self, rollout: &Rollout) -> Scores {
        let texts: Vec<&str> = rollout
            .completions
            .iter()
            .map(|c| c.text.as_str())
            .collect();
        let golds: Vec<&str> = rollout
            .completions
            .iter()
            .map(|c| rollout.examples[c.prompt_index].answer.as_str())
            .collect();
        let (total, per_function) = rewards::score_all(&self.reward_fns, &texts, &golds);
        let rc = &self.res.reward_config;
        let correct = match self.reward_fns.iter().position(|r| r.name() == "accuracy") {
            Some(k) => per_function[k].clone(),
            None => texts
                .iter()
                .zip(&golds)
                .map(|(t, g)| {
                    let v = crate::verifier::verify_completion(t, g, &rc.policy, &rc.opts);
                    f64::from(u8::from(v.correct))
                })
                .collect(),
        };
        Scores {
            total,
            per_function,
            correct,
        }
    }

    /// `num_iterations` passes of loss → backward → clip → optimizer step over the rollout.
    fn update(
        &self,
        cfg: &Config,
        opt: &mut Optimizer,
        state: &mut TrainerState,
        rollout: &Rollout,
        credit: &Credit,
        lr: f64,
    ) -> Result<Update> {
        let ts = Instant::now();
        let comps = &rollout.completions;
        let n = comps.len();
        let mb = n / self.micro_batches;
        let prompts: Vec<&[u32]> = comps
            .iter()
            .map(|c| rollout.prompt_ids[c.prompt_index].as_slice())
            .collect();
        let completions: Vec<&[u32]> = comps.iter().map(|c| c.token_ids.as_slice()).collect();
        let sampled: Vec<Vec<f32>> = comps.iter().map(|c| c.logprobs.clone()).collect();
        let batch = UpdateBatch {
            prompts: &prompts,
            completions: &completions,
            advantages: &credit.advantages,
            coefficients: &credit.coefficients,
            micro_batch: mb,
            pad: self.tokenizer.pad_token_id(),
            sampler_logprobs: Some(&sampled),
            share: cfg.train.share_prefixes,
        };
        let settings = LossSettings {
            temperature: cfg.sampling.temperature,
            epsilon_low: cfg.loss.epsilon,
            epsilon_high: cfg.loss.epsilon_high(),
            beta: cfg.loss.beta,
            vocab_bias: self.vocab_bias.as_ref(),
        };
        let mut frozen = FrozenLogprobs::default();
        let mut first = None;
        let (mut grad_norm, mut skipped) = (0.0, false);
        let mut clip = LossStats::default();
        let mut tokens_processed = 0;
        let (mut low_min, mut high_max) = (None::<f64>, None::<f64>);
        for iteration in 0..cfg.loss.num_iterations {
            let mut pass = accumulate(
                &self.policy,
                self.reference.as_ref(),
                opt.vars(),
                &batch,
                &settings,
                &mut frozen,
            )?;
            tokens_processed += pass.tokens_processed;
            grad_norm = clip_grad_norm(&mut pass.grads, cfg.optim.max_grad_norm)?;
            let loss = pass.loss;
            if first.is_none() {
                first = Some((pass.loss, pass.stats, pass.entropy_sum, pass.logprob_diff));
            }
            if iteration > 0 || cfg.loss.num_iterations == 1 {
                clip += pass.stats;
                for mb in &pass.micro_batch_stats {
                    if mb.tokens > 0.0 {
                        let (lo, hi) = (mb.low_clip_fraction(), mb.high_clip_fraction());
                        low_min = Some(low_min.map_or(lo, |m| m.min(lo)));
                        high_max = Some(high_max.map_or(hi, |m| m.max(hi)));
                    }
                }
            }
            if !loss.is_finite() || !grad_norm.is_finite() {
                skipped = true;
                state.nonfinite_streak += 1;
                tracing::warn!(
                    step = state.step,
                    loss,
                    grad_norm,
                    "non-finite loss or gradient: update skipped"
                );
                if state.nonfinite_streak >= cfg.train.max_nonfinite_steps.max(1) {
                    bail!(
                        "{} consecutive steps with a NaN/Inf loss or gradient (last: loss {loss}, grad norm {grad_norm}); lower optim.learning_rate or check the data",
                        state.nonfinite_streak
                    );
                }
                break;
            }
            state.nonfinite_streak = 0;
            opt.step(&pass.grads, lr)?;
        }
        let (loss, stats, entropy_sum, diff) = first.context("loss.num_iterations is 0")?;
        Ok(Update {
            loss,
            stats,
            entropy_sum,
            clip,
            clip_low_min: low_min.unwrap_or(0.0),
            clip_high_max: high_max.unwrap_or(0.0),
            logprob_diff: diff.0 / diff.1.max(1) as f64,
            grad_norm,
            skipped,
            time: ts.elapsed().as_secs_f64(),
            tokens_processed,
        })
    }

    /// Advantages, masks, |λ| and loss coefficients of a rollout ([`credit::assign`]).
    fn credit(&self, cfg: &Config, rollout: &Rollout, scores: &Scores) -> Result<Credit> {
        let comps = &rollout.completions;
        let token_ids: Vec<&[u32]> = comps.iter().map(|c| c.token_ids.as_slice()).collect();
        let truncated: Vec<bool> = comps
            .iter()
            .map(|c| c.finish_reason == FinishReason::Length)
            .collect();
        let settings = CreditSettings {
            loss: &cfg.loss,
            resolved: self.res.loss,
            group_size: cfg.sampling.num_generations,
            max_completion_length: cfg.sampling.max_completion_length,
            micro_batch: comps.len() / self.micro_batches,
        };
        credit::assign(&settings, &token_ids, &truncated, &scores.total)
    }

    /// Validation accuracy (mean pass@1 over `eval.n` samples) by the same code as `grpo eval`,
    /// with the toy tasks' restricted alphabet when there is one; None without a validation set.
    fn validate(&self, cfg: &Config) -> Result<Option<f64>> {
        if self.val_set.is_empty() {
            return Ok(None);
        }
        let rc = &self.res.reward_config;
        let set = EvalSet::new("validation", self.val_set.clone(), rc.policy);
        let settings = EvalSettings {
            n: cfg.eval.n.max(1),
            ks: vec![1],
            temperature: cfg.eval.temperature,
            max_new_tokens: cfg.eval.max_completion_length,
            seed: cfg.train.seed,
            prompt: self.res.prompt.clone(),
            stop: cfg.sampling.stop.clone(),
            equiv: rc.opts.clone(),
            allowed_tokens: self.allowed.clone(),
            ..EvalSettings::default()
        };
        let merged = self.policy.for_sampling()?;
        let policy = merged.as_ref().unwrap_or(&self.policy);
        let result = evaluate(policy, &self.tokenizer, &set, &settings, None)?;
        Ok(Some(result.pass1))
    }
}

/// Token ids of `sampling.allowed_tokens`; each entry must be exactly one token.
fn allowed_token_ids(tokenizer: &Tokenizer, tokens: &[String]) -> Result<Vec<u32>> {
    tokens
        .iter()
        .map(|t| {
            let ids = tokenizer.encode(t, false)?;
            match ids[..] {
                [id] => Ok(id),
                _ => bail!(
                    "sampling.allowed_tokens: `{t}` is {} tokens for this tokenizer; expected exactly one",
                    ids.len()
                ),
            }
        })
        .collect()
}

/// [V] additive bias: 0 on allowed tokens, −1e9 elsewhere (finite, so entropies stay finite).
fn allowed_bias(ids: &[u32], vocab: usize, device: &Device) -> Result<Tensor> {
    let mut bias = vec![-1e9f32; vocab];
    for &id in ids {
        if let Some(b) = bias.get_mut(id as usize) {
            *b = 0.0;
        }
    }
    Ok(Tensor::from_vec(bias, vocab, device)?)
}
