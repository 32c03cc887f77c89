//! The training loop, in the order a reader expects (nanoGPT's shape):
//!
//! ```text
//! for step in start..max_steps:
//!     lr = learning_rate(step)
//!     prompts     = the step's B prompts (pure in seed and step)
//!     completions = sample G per prompt (KV-cached sampler)
//!     rewards     = reward functions on each completion
//!     advantages  = group-relative (r − mean) / (std + eps)
//!     |λ|         = process-set sizes from each group's prefix tree
//!     for μ iterations: loss over micro-batches → backward → clip → AdamW
//!     log metrics; checkpoint every save_steps; validate every eval.every
//! ```

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use candle_core::{DType, Device, Tensor};
use serde::Serialize;
use serde_json::{json, Map, Value};

use crate::config::Config;
use crate::data::dataset::Example;
use crate::data::prompt::PromptFormat;
use crate::model::{resolve_model_dir, Policy, Tokenizer};
use crate::rewards::{self, RewardSpec};
use crate::sampler::{self, mix_seed, Completion, FinishReason, SamplingParams};
use crate::trainer::advantages::{advantages, zero_std_groups};
use crate::trainer::loss::{self, LossStats, SeqLayout};
use crate::trainer::optim::{clip_grad_norm, learning_rate, Optimizer};
use crate::trainer::process_sets;
use crate::trainer::rollout::{pack, step_prompt_indices};
use crate::trainer::state::{
    latest_checkpoint, load_state, prune_checkpoints, save_checkpoint, TrainerState,
};

/// Where to resume from.
#[derive(Debug, Clone)]
pub enum Resume {
    /// Start fresh (an existing checkpoint in `output.dir` is an error, not silently reused).
    No,
    /// The newest `checkpoint-N` in `output.dir`.
    Latest,
    Dir(PathBuf),
}

/// What `summary.json` holds.
#[derive(Debug, Clone, Serialize)]
pub struct TrainSummary {
    pub steps: usize,
    pub wall_time_s: f64,
    pub initial_val_accuracy: Option<f64>,
    pub final_val_accuracy: Option<f64>,
    pub final_checkpoint: PathBuf,
    pub mean_step_time_s: f64,
    pub loss_type: String,
    pub process_weighting: String,
    pub seed: u64,
    pub config: Value,
}

pub fn train(cfg: &Config, resume: Resume, interrupted: Arc<AtomicBool>) -> Result<TrainSummary> {
    let t0 = Instant::now();
    let out = cfg.output.dir.clone();
    std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;

    // Model, reference model (only when beta > 0), tokenizer.
    let device = parse_device(&cfg.model.device)?;
    let dtype = cfg.model.dtype.to_candle();
    let base_dir = resolve_model_dir(&cfg.model.path, cfg.model.revision.as_deref())?;
    let resume_dir = match &resume {
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
    let weights_dir = resume_dir.clone().unwrap_or_else(|| base_dir.clone());
    let policy = Policy::load(&weights_dir, dtype, &device)?;
    let tokenizer = Tokenizer::load(&base_dir)?;
    let reference = if cfg.loss.beta > 0.0 {
        Some(Policy::load(&base_dir, dtype, &device)?)
    } else {
        None
    };
    tracing::info!(
        model = %base_dir.display(),
        params = policy.num_parameters(),
        loss = ?cfg.loss.loss_type,
        weighting = ?cfg.loss.weighting(),
        "loaded policy"
    );

    let train_set = load_examples(&cfg.data.train, cfg)?;
    let val_set = if cfg.data.validation.is_empty() {
        Vec::new()
    } else {
        let mut v = load_examples(&cfg.data.validation, cfg)?;
        if cfg.eval.limit > 0 {
            v.truncate(cfg.eval.limit);
        }
        v
    };
    let format = PromptFormat {
        system: (!cfg.data.system_prompt.is_empty()).then(|| cfg.data.system_prompt.clone()),
        user_template: cfg.data.prompt_template.clone(),
        use_chat_template: cfg.data.use_chat_template,
        max_prompt_length: cfg.data.max_prompt_length,
    };
    let specs: Vec<RewardSpec> = cfg
        .reward_weights()
        .into_iter()
        .map(|(name, weight)| RewardSpec { name, weight })
        .collect();
    let reward_cfg = cfg.rewards.reward_config()?;
    let reward_fns = rewards::build_rewards(&specs, &reward_cfg)?;

    let resolved = cfg.loss.loss_type.resolve(cfg.loss.weighting())?;
    let mut opt = Optimizer::new(policy.named_vars(), &cfg.optim)?;
    let mut state = TrainerState {
        step: 0,
        nonfinite_streak: 0,
        initial_val_accuracy: None,
        elapsed_s: 0.0,
        config: cfg.to_toml()?,
    };
    if let Some(dir) = &resume_dir {
        state = load_state(dir)?;
        opt.load(&dir.join("optimizer.safetensors"))?;
        tracing::info!(step = state.step, dir = %dir.display(), "resumed");
        truncate_metrics(&out.join("metrics.jsonl"), state.step)?;
    } else {
        let _ = std::fs::remove_file(out.join("metrics.jsonl"));
    }

    let eos = tokenizer.eos_token_ids();
    let allowed = allowed_token_ids(&tokenizer, &cfg.sampling.allowed_tokens)?;
    let vocab_bias = match &allowed[..] {
        [] => None,
        ids => Some(allowed_bias(ids, policy.config.vocab_size, &device)?),
    };
    let pad = tokenizer.pad_token_id();
    // Validation runs the same code as `grpo eval` (mean pass@1 over `eval.n` samples), with the
    // toy tasks' restricted alphabet when there is one.
    let validate = |policy: &Policy| -> Result<Option<f64>> {
        if val_set.is_empty() {
            return Ok(None);
        }
        let set = crate::eval::EvalSet::new("validation", val_set.clone(), reward_cfg.policy);
        let settings = crate::eval::EvalSettings {
            n: cfg.eval.n.max(1),
            ks: vec![1],
            temperature: cfg.eval.temperature,
            max_new_tokens: cfg.eval.max_completion_length,
            seed: cfg.train.seed,
            prompt: format.clone(),
            stop: cfg.sampling.stop.clone(),
            equiv: reward_cfg.opts.clone(),
            allowed_tokens: allowed.clone(),
            ..crate::eval::EvalSettings::default()
        };
        let result = crate::eval::evaluate(policy, &tokenizer, &set, &settings, None)?;
        Ok(Some(result.pass1))
    };
    if resume_dir.is_none() {
        state.initial_val_accuracy = validate(&policy)?;
        if let Some(acc) = state.initial_val_accuracy {
            tracing::info!("validation accuracy before training: {acc:.4}");
        }
    }

    let mut metrics_file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(out.join("metrics.jsonl"))
        .with_context(|| format!("opening {}", out.join("metrics.jsonl").display()))?;
    let bar = progress_bar(cfg.train.max_steps, state.step);
    let loop_start = Instant::now();
    let mut step_times = Vec::new();
    let mut last_saved = None;
    let mut final_val = None;

    while state.step < cfg.train.max_steps {
        if interrupted.load(Ordering::SeqCst) {
            tracing::warn!("interrupted: saving checkpoint-{} and stopping", state.step);
            state.elapsed_s += loop_start.elapsed().as_secs_f64();
            save_checkpoint(&out, &policy, &base_dir, &opt, &state)?;
            bail!(
                "interrupted at step {} (checkpoint saved; continue with --resume)",
                state.step
            );
        }
        let step = state.step;
        let ts = Instant::now();
        let lr = learning_rate(&cfg.optim, step, cfg.train.max_steps);

        // Rollout.
        let idx = step_prompt_indices(
            train_set.len(),
            cfg.train.batch_size,
            cfg.train.seed,
            step,
            cfg.data.shuffle,
        );
        let examples: Vec<&Example> = idx.iter().map(|&i| &train_set[i]).collect();
        let prompt_ids: Vec<Vec<u32>> = examples
            .iter()
            .map(|e| format.encode(&tokenizer, &e.question))
            .collect::<Result<_>>()?;
        let params = SamplingParams {
            temperature: cfg.sampling.temperature,
            top_p: cfg.sampling.top_p,
            top_k: cfg.sampling.top_k,
            min_p: cfg.sampling.min_p,
            max_new_tokens: cfg.sampling.max_completion_length,
            stop: cfg.sampling.stop.clone(),
            eos_token_ids: eos.clone(),
            ignore_eos: false,
            seed: mix_seed(cfg.train.seed, step as u64 + 1),
            max_batch_rows: 0,
        };
        let g = cfg.sampling.num_generations;
        let completions = sampler::generate_restricted(
            &policy,
            &tokenizer,
            &prompt_ids,
            g,
            &params,
            None,
            &allowed,
        )?;
        let time_generate = ts.elapsed().as_secs_f64();

        // Rewards and advantages.
        let ts_score = Instant::now();
        let texts: Vec<&str> = completions.iter().map(|c| c.text.as_str()).collect();
        let golds: Vec<&str> = completions
            .iter()
            .map(|c| examples[c.prompt_index].answer.as_str())
            .collect();
        let (rewards_total, per_function) = rewards::score_all(&reward_fns, &texts, &golds);
        let correct: Vec<f64> = match reward_fns.iter().position(|r| r.name() == "accuracy") {
            Some(k) => per_function[k].clone(),
            None => texts
                .iter()
                .zip(&golds)
                .map(|(t, g)| {
                    let v = rewards::verify_completion(t, g, &reward_cfg.policy, &reward_cfg.opts);
                    f64::from(u8::from(v.correct))
                })
                .collect(),
        };
        let adv = advantages(&rewards_total, g, cfg.loss.scale_rewards)?;
        let zero_std = zero_std_groups(&rewards_total, g)?;
        let token_ids: Vec<&[u32]> = completions.iter().map(|c| c.token_ids.as_slice()).collect();
        let ts_process = Instant::now();
        // One prefix tree per group serves both the loss weights and the logged statistics.
        let trees: Vec<_> = token_ids.chunks(g).map(process_sets::build).collect();
        let lambda: Vec<Vec<u32>> = trees.iter().flat_map(|t| t.lambda_sizes()).collect();
        let group_stats: Vec<_> = trees.iter().map(|t| t.stats()).collect();
        let proc_stats = process_sets::batch_stats(&group_stats);
        let time_process_sets = ts_process.elapsed().as_secs_f64();
        let time_score = ts_score.elapsed().as_secs_f64();

        // Token masks and the step's loss coefficients (normalisers over the whole step).
        let ts_update = Instant::now();
        let n = completions.len();
        let mb = n / cfg.train.gradient_accumulation_steps;
        let masks: Vec<Vec<bool>> = completions
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let truncated =
                    cfg.loss.mask_truncated_completions && c.finish_reason == FinishReason::Length;
                let skipped = cfg.loss.skip_zero_std_groups && zero_std[i / g];
                let keep = !truncated && !skipped;
                vec![keep; c.token_ids.len()]
            })
            .collect();
        let layouts: Vec<SeqLayout> = masks
            .iter()
            .zip(&lambda)
            .enumerate()
            .map(|(i, (m, l))| SeqLayout {
                mask: m,
                lambda_sizes: Some(l),
                micro_batch: i / mb,
            })
            .collect();
        let coef =
            loss::token_coefficients(&layouts, resolved, cfg.sampling.max_completion_length)?;

        let prompt_of: Vec<&[u32]> = completions
            .iter()
            .map(|c| prompt_ids[c.prompt_index].as_slice())
            .collect();
        let mut old_logp: Vec<Option<Tensor>> = vec![None; n.div_ceil(mb)];
        let mut ref_logp: Vec<Option<Tensor>> = vec![None; n.div_ceil(mb)];
        let mut acc = StepAccumulator::default();
        let mut skipped = false;
        let mut grad_norm = 0.0;
        let mut logprob_diff = (0.0f64, 0usize);
        for iteration in 0..cfg.loss.num_iterations {
            let mut grads: Vec<Option<Tensor>> = vec![None; opt.vars().len()];
            let mut loss_sum = 0.0;
            for (k, start) in (0..n).step_by(mb).enumerate() {
                let rows = start..(start + mb).min(n);
                let batch = pack(
                    &prompt_of[rows.clone()],
                    &token_ids[rows.clone()],
                    pad,
                    &device,
                )?;
                let (logp, entropy) = completion_logprobs(
                    &policy,
                    &batch,
                    cfg.sampling.temperature,
                    vocab_bias.as_ref(),
                )?;
                if iteration == 0 {
                    // How far the trainer's log-probs are from the sampler's (same weights,
                    // other code path): should be float noise; a gap means the update is off-policy.
                    let trainer_lp = logp.to_dtype(DType::F32)?.to_vec2::<f32>()?;
                    for (row, c) in trainer_lp.iter().zip(&completions[rows.clone()]) {
                        for (a, b) in row.iter().zip(&c.logprobs) {
                            logprob_diff.0 += f64::from((a - b).abs());
                            logprob_diff.1 += 1;
                        }
                    }
                    old_logp[k] = Some(logp.detach());
                    if let Some(reference) = &reference {
                        let (r, _) = completion_logprobs(
                            reference,
                            &batch,
                            cfg.sampling.temperature,
                            vocab_bias.as_ref(),
                        )?;
                        ref_logp[k] = Some(r.detach());
                    }
                }
                let lc = batch.completion_len;
                let coef_t =
                    loss::coefficients_tensor(&coef[rows.clone()], lc, DType::F32, &device)?;
                let adv_t = Tensor::from_vec(
                    adv[rows.clone()]
                        .iter()
                        .map(|&a| a as f32)
                        .collect::<Vec<_>>(),
                    rows.len(),
                    &device,
                )?;
                let old = old_logp[k].as_ref().context("old log-probs")?;
                let (loss_t, stats) = loss::token_loss_candle(
                    &logp,
                    old,
                    ref_logp[k].as_ref(),
                    &adv_t,
                    &coef_t,
                    cfg.loss.epsilon,
                    cfg.loss.epsilon_high(),
                    cfg.loss.beta,
                )?;
                let value = loss_t.to_dtype(DType::F64)?.to_scalar::<f64>()?;
                loss_sum += value;
                if iteration == 0 {
                    acc.add(&entropy, &coef_t, stats)?;
                }
                let store = loss_t.backward()?;
                for (slot, var) in grads.iter_mut().zip(opt.vars()) {
                    if let Some(gr) = store.get(var.as_tensor()) {
                        *slot = Some(match slot.take() {
                            Some(prev) => (prev + gr)?,
                            None => gr.clone(),
                        });
                    }
                }
            }
            let mut grads: Vec<Tensor> = grads
                .into_iter()
                .zip(opt.vars())
                .map(|(gr, var)| match gr {
                    Some(gr) => Ok(gr),
                    None => var.as_tensor().zeros_like(),
                })
                .collect::<candle_core::Result<_>>()?;
            grad_norm = clip_grad_norm(&mut grads, cfg.optim.max_grad_norm)?;
            if !loss_sum.is_finite() || !grad_norm.is_finite() {
                skipped = true;
                state.nonfinite_streak += 1;
                tracing::warn!(
                    step,
                    loss = loss_sum,
                    grad_norm,
                    "non-finite loss or gradient: update skipped"
                );
                if state.nonfinite_streak >= cfg.train.max_nonfinite_steps.max(1) {
                    bail!(
                        "{} consecutive steps with a NaN/Inf loss or gradient (last: loss {loss_sum}, grad norm {grad_norm}); lower optim.learning_rate or check the data",
                        state.nonfinite_streak
                    );
                }
                break;
            }
            state.nonfinite_streak = 0;
            opt.step(&grads, lr)?;
            if iteration == 0 {
                acc.loss = loss_sum;
            }
        }
        let time_update = ts_update.elapsed().as_secs_f64();
        state.step += 1;
        let step_time = ts.elapsed().as_secs_f64();
        step_times.push(step_time);

        // Metrics.
        let new_tokens: usize = completions.iter().map(|c| c.token_ids.len()).sum();
        let lens: Vec<usize> = completions.iter().map(|c| c.token_ids.len()).collect();
        let mut m = Map::new();
        m.insert("step".into(), json!(state.step));
        m.insert("loss".into(), json!(acc.loss));
        let reward_mean = mean(&rewards_total);
        m.insert("reward_mean".into(), json!(reward_mean));
        m.insert("reward_std".into(), json!(std_dev(&rewards_total)));
        for (f, vals) in reward_fns.iter().zip(&per_function) {
            m.insert(format!("reward/{}", f.name()), json!(mean(vals)));
        }
        let accuracy = mean(&correct);
        m.insert("accuracy".into(), json!(accuracy));
        m.insert(
            "completion_length_mean".into(),
            json!(lens.iter().sum::<usize>() as f64 / n as f64),
        );
        m.insert(
            "completion_length_max".into(),
            json!(lens.iter().max().copied().unwrap_or(0)),
        );
        m.insert(
            "truncated_fraction".into(),
            json!(
                completions
                    .iter()
                    .filter(|c| c.finish_reason == FinishReason::Length)
                    .count() as f64
                    / n as f64
            ),
        );
        m.insert("kl".into(), json!(acc.kl()));
        m.insert("clip_fraction".into(), json!(acc.clip_fraction()));
        m.insert("entropy".into(), json!(acc.entropy()));
        m.insert(
            "logprob_diff".into(),
            json!(logprob_diff.0 / logprob_diff.1.max(1) as f64),
        );
        m.insert("grad_norm".into(), json!(grad_norm));
        m.insert("lr".into(), json!(lr));
        m.insert("skipped_update".into(), json!(skipped));
        m.insert(
            "zero_std_group_fraction".into(),
            json!(zero_std.iter().filter(|&&z| z).count() as f64 / zero_std.len() as f64),
        );
        if let Value::Object(ps) = serde_json::to_value(&proc_stats)? {
            for (k, v) in ps {
                m.insert(format!("process/{k}"), v);
            }
        }
        m.insert("time_generate_s".into(), json!(time_generate));
        m.insert("time_score_s".into(), json!(time_score));
        m.insert("time_update_s".into(), json!(time_update));
        m.insert("time_process_sets_s".into(), json!(time_process_sets));
        m.insert("step_time_s".into(), json!(step_time));
        m.insert(
            "tokens_per_s".into(),
            json!(new_tokens as f64 / time_generate.max(1e-9)),
        );

        if cfg.train.save_rollouts {
            write_rollouts(
                &out,
                state.step,
                &examples,
                &completions,
                &rewards_total,
                &adv,
            )?;
        }
        let last = state.step == cfg.train.max_steps;
        if last || (cfg.eval.every > 0 && state.step.is_multiple_of(cfg.eval.every)) {
            if let Some(v) = validate(&policy)? {
                m.insert("eval/accuracy".into(), json!(v));
                if last {
                    final_val = Some(v);
                }
            }
        }
        writeln!(metrics_file, "{}", Value::Object(m))?;
        metrics_file.flush()?;
        bar.set_position(state.step as u64);
        bar.set_message(format!(
            "reward {reward_mean:.3} acc {accuracy:.3} len {:.0} {:.1}s/step",
            lens.iter().sum::<usize>() as f64 / n as f64,
            step_time
        ));
        if state.step.is_multiple_of(cfg.train.logging_steps) {
            tracing::debug!(step = state.step, loss = acc.loss, reward_mean, "step");
        }
        if cfg.train.save_steps > 0 && state.step.is_multiple_of(cfg.train.save_steps) {
            let mut s = state.clone();
            s.elapsed_s += loop_start.elapsed().as_secs_f64();
            last_saved = Some(save_checkpoint(&out, &policy, &base_dir, &opt, &s)?);
            prune_checkpoints(&out, cfg.train.save_total_limit)?;
        }
    }
    bar.finish_and_clear();

    state.elapsed_s += loop_start.elapsed().as_secs_f64();
    let final_checkpoint = match last_saved {
        Some(p) if p == crate::trainer::state::checkpoint_dir(&out, state.step) => p,
        _ => {
            let p = save_checkpoint(&out, &policy, &base_dir, &opt, &state)?;
            prune_checkpoints(&out, cfg.train.save_total_limit)?;
            p
        }
    };
    if final_val.is_none() {
        final_val = validate(&policy)?;
    }
    let summary = TrainSummary {
        steps: state.step,
        wall_time_s: t0.elapsed().as_secs_f64(),
        initial_val_accuracy: state.initial_val_accuracy,
        final_val_accuracy: final_val,
        final_checkpoint,
        mean_step_time_s: if step_times.is_empty() {
            0.0
        } else {
            mean(&step_times)
        },
        loss_type: enum_name(&cfg.loss.loss_type),
        process_weighting: enum_name(&cfg.loss.weighting()),
        seed: cfg.train.seed,
        config: serde_json::to_value(cfg)?,
    };
    std::fs::write(
        out.join("summary.json"),
        serde_json::to_string_pretty(&summary)?,
    )
    .with_context(|| format!("writing {}", out.join("summary.json").display()))?;
    Ok(summary)
}

fn enum_name<T: Serialize>(v: &T) -> String {
    serde_json::to_value(v)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default()
}

pub fn parse_device(spec: &str) -> Result<Device> {
    match spec {
        "cpu" => Ok(Device::Cpu),
        s if s == "cuda" || s.starts_with("cuda:") => {
            let ordinal = s
                .strip_prefix("cuda:")
                .map(str::parse)
                .transpose()
                .with_context(|| format!("model.device: bad cuda ordinal in `{s}`"))?
                .unwrap_or(0);
            Device::new_cuda(ordinal).with_context(|| {
                format!(
                    "model.device = \"{s}\": this build has no CUDA support or no GPU is visible"
                )
            })
        }
        other => bail!("model.device: expected `cpu`, `cuda` or `cuda:N`, got `{other}`"),
    }
}

/// Log-probs [R, Lc] of each completion token (differentiable) and per-token entropy [R, Lc]
/// (detached), both from logits / temperature as the sampler drew them (doc §1).
///
/// `vocab_bias` ([V], 0 for allowed tokens and a large negative number for the rest) restricts
/// the distribution the way the sampler did when `sampling.allowed_tokens` is set.
pub fn completion_logprobs(
    policy: &Policy,
    batch: &crate::trainer::rollout::PackedBatch,
    temperature: f64,
    vocab_bias: Option<&Tensor>,
) -> Result<(Tensor, Tensor)> {
    policy.completion_logprobs(
        &batch.input_ids,
        Some(&batch.attention_mask),
        batch.prompt_len - 1,
        &batch.targets,
        temperature,
        vocab_bias,
    )
}

/// Per-step sums of the logged token statistics, over counted tokens.
#[derive(Default)]
struct StepAccumulator {
    loss: f64,
    entropy_sum: f64,
    stats: LossStats,
}

impl StepAccumulator {
    fn add(&mut self, entropy: &Tensor, coef: &Tensor, stats: LossStats) -> Result<()> {
        let mask = coef.ne(0.0)?.to_dtype(DType::F32)?;
        self.entropy_sum += (entropy * mask)?.sum_all()?.to_scalar::<f32>()? as f64;
        self.stats += stats;
        Ok(())
    }
    fn entropy(&self) -> f64 {
        self.entropy_sum / self.stats.tokens.max(1.0)
    }
    fn kl(&self) -> f64 {
        self.stats.kl_mean()
    }
    fn clip_fraction(&self) -> f64 {
        self.stats.clip_fraction()
    }
}

fn mean(v: &[f64]) -> f64 {
    if v.is_empty() {
        0.0
    } else {
        v.iter().sum::<f64>() / v.len() as f64
    }
}

fn std_dev(v: &[f64]) -> f64 {
    if v.len() < 2 {
        return 0.0;
    }
    let m = mean(v);
    (v.iter().map(|x| (x - m).powi(2)).sum::<f64>() / (v.len() - 1) as f64).sqrt()
}

/// Loads a training / validation set named in `data.train` / `data.validation`: a shipped
/// benchmark or task split by name, else a JSONL file.
pub fn load_examples(spec: &str, cfg: &Config) -> Result<Vec<Example>> {
    let examples = if let Ok(b) = crate::data::benchmarks::benchmark(spec) {
        crate::data::dataset::load_benchmark(&b)?
    } else {
        let path = Path::new(spec);
        if !path.exists() {
            bail!("data: `{spec}` is neither a shipped benchmark name nor an existing JSONL file");
        }
        crate::data::dataset::load_jsonl(path, &cfg.data.question_field, &cfg.data.answer_field)?
    };
    if examples.is_empty() {
        bail!("data: `{spec}` holds no examples");
    }
    Ok(examples)
}

fn write_rollouts(
    out: &Path,
    step: usize,
    examples: &[&Example],
    completions: &[Completion],
    rewards: &[f64],
    adv: &[f64],
) -> Result<()> {
    let dir = out.join("rollouts");
    std::fs::create_dir_all(&dir)?;
    let mut text = String::new();
    let g = completions.len() / examples.len().max(1);
    for (p, ex) in examples.iter().enumerate() {
        let comps: Vec<Value> = (p * g..(p + 1) * g)
            .map(|i| {
                json!({
                    "token_ids": completions[i].token_ids,
                    "text": completions[i].text,
                    "reward": rewards[i],
                    "advantage": adv[i],
                })
            })
            .collect();
        let obj =
            json!({"step": step, "prompt": ex.question, "answer": ex.answer, "completions": comps});
        text.push_str(&obj.to_string());
        text.push('\n');
    }
    let path = dir.join(format!("step-{step}.jsonl"));
    std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))
}

/// After a resume, drop metric lines past the checkpoint so the file reads as one run.
fn truncate_metrics(path: &Path, step: usize) -> Result<()> {
    let Ok(text) = std::fs::read_to_string(path) else {
        return Ok(());
    };
    let kept: Vec<&str> = text
        .lines()
        .filter(|l| {
            serde_json::from_str::<Value>(l)
                .ok()
                .and_then(|v| v.get("step").and_then(Value::as_u64))
                .is_some_and(|s| s as usize <= step)
        })
        .collect();
    let mut out = kept.join("\n");
    if !out.is_empty() {
        out.push('\n');
    }
    std::fs::write(path, out).with_context(|| format!("rewriting {}", path.display()))
}

fn progress_bar(total: usize, start: usize) -> indicatif::ProgressBar {
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
