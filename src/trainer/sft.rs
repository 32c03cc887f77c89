//! Supervised fine-tuning on worked solutions: the warm start that gives RL a policy whose
//! rewards are not all zero.
//!
//! No machine here can download a pretrained model, so the shipped `models/tiny-math` policy is
//! a small Qwen2 decoder trained from random weights by this loop (nanoGPT's shape):
//!
//! ```text
//! policy = random Qwen2 from [sft] (init = "random") or model.path (init = "pretrained")
//! rows   = (prompt = PromptFormat(question), completion = solution + <|im_end|>)
//! for step in 0..max_steps:
//!     batch = next batch_size rows of a per-epoch shuffle, sorted by length into micro-batches
//!     loss  = mean cross-entropy over completion tokens (prompt and padding masked out)
//!     backward → clip → AdamW(lr(step))
//!     log; greedy validation every eval_every; checkpoint every save_every
//! save the final policy (HF layout + tokenizer files) into output.dir
//! ```
//!
//! Prompts are built by the same [`PromptFormat`] the RL trainer and `eval` use, so the policy
//! sees at RL time exactly the prompts it was warm-started on.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use candle_core::{DType, Device, Tensor, D};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::Serialize;
use serde_json::{json, Value};

use crate::config::Config;
use crate::data::dataset::Example;
use crate::data::prompt::PromptFormat;
use crate::data::sets::load_data_sets;
use crate::model::{
    copy_tokenizer_files, random_qwen2_config, resolve_model_dir, ModelConfig, Policy, Qwen2Shape,
    Tokenizer,
};
use crate::sampler::{self, mix_seed, SamplingParams};
use crate::trainer::optim::{clip_grad_norm, learning_rate, Optimizer};
use crate::trainer::rollout::{pack, PackedBatch};
use crate::trainer::update::GradAccumulator;
use crate::verifier::{EquivOptions, ExtractPolicy};

pub use crate::config::{SftInit, SftSection};

/// What `output.dir/summary.json` holds.
#[derive(Debug, Clone, Serialize)]
pub struct SftSummary {
    pub steps: usize,
    pub wall_time_s: f64,
    pub num_parameters: usize,
    pub train_examples: usize,
    /// Mean completion-token cross-entropy of the last logged window.
    pub final_loss: f64,
    /// Greedy accuracy on the (limited) validation set; None without `data.validation`.
    pub val_accuracy_greedy: Option<f64>,
    /// Accuracy of `eval_samples` samples per problem at `eval_temperature`.
    pub val_accuracy_sampled: Option<f64>,
    pub eval_temperature: f64,
    pub output_dir: PathBuf,
}

/// One training row: the prompt the RL trainer will also use, and the target completion.
#[derive(Debug, Clone)]
pub struct SftRow {
    pub prompt: Vec<u32>,
    /// The worked solution's tokens followed by one EOS token.
    pub completion: Vec<u32>,
}

/// A padded micro-batch and the mask of the positions that count in the loss.
pub struct SftBatch {
    pub packed: PackedBatch,
    /// [R, Lc] f32: 1 at real completion tokens, 0 at padding. Prompt tokens are not in the
    /// completion window at all, so they never count.
    pub loss_mask: Tensor,
    /// Number of ones in `loss_mask`.
    pub tokens: usize,
}

/// The HF `config.json` of a fresh Qwen2 decoder sized by `[sft]`, with the tokenizer's
/// vocabulary and special tokens.
pub fn random_model_config(sft: &SftSection, tokenizer: &Tokenizer) -> Result<ModelConfig> {
    let shape = Qwen2Shape {
        hidden_size: sft.hidden_size,
        intermediate_size: sft.intermediate_size,
        num_hidden_layers: sft.num_hidden_layers,
        num_attention_heads: sft.num_attention_heads,
        num_key_value_heads: sft.num_key_value_heads,
        max_position_embeddings: sft.max_position_embeddings,
        rope_theta: sft.rope_theta,
        tie_word_embeddings: sft.tie_word_embeddings,
        initializer_range: sft.initializer_range,
    };
    random_qwen2_config(&shape, tokenizer, "[sft] architecture")
}

/// Whether example `index` is trained to answer at once: a pure function of (seed, index), so
/// the split does not depend on the data order or on the other examples.
pub fn is_direct_answer(seed: u64, index: usize, fraction: f64) -> bool {
    const STREAM: u64 = 0xD1EC_7A45;
    let u = (mix_seed(seed ^ STREAM, index as u64) >> 11) as f64 / (1u64 << 53) as f64;
    u < fraction
}

/// Tokenizes the examples into SFT rows; examples without a `solution` are skipped. A
/// `direct_fraction` of them (see [`is_direct_answer`]) gets `\boxed{answer}` as its target.
pub fn build_rows(
    examples: &[Example],
    tokenizer: &Tokenizer,
    format: &PromptFormat,
    direct_fraction: f64,
    seed: u64,
) -> Result<Vec<SftRow>> {
    build_rows_within(
        examples,
        tokenizer,
        format,
        direct_fraction,
        seed,
        usize::MAX,
        "data",
    )
}

/// [`build_rows`] for a model with `context` positions: a row whose prompt plus target is
/// longer is an error naming `source` and the row's line, found without tokenizing more than
/// about `context` tokens' worth of a long row.
pub fn build_rows_within(
    examples: &[Example],
    tokenizer: &Tokenizer,
    format: &PromptFormat,
    direct_fraction: f64,
    seed: u64,
    context: usize,
    source: &str,
) -> Result<Vec<SftRow>> {
    let eos = *tokenizer
        .eos_token_ids()
        .first()
        .context("the tokenizer defines no EOS token: SFT must teach the policy to stop")?;
    let mut rows = Vec::with_capacity(examples.len());
    for (index, ex) in examples.iter().enumerate() {
        let Some(solution) = &ex.solution else {
            continue;
        };
        let direct;
        let solution = if is_direct_answer(seed, index, direct_fraction) {
            direct = format!("\\boxed{{{}}}", ex.answer);
            &direct
        } else {
            solution
        };
        let too_long = || {
            anyhow::anyhow!(
                "{source}: line {}: the prompt and solution are longer than the model's \
                 max_position_embeddings ({context} tokens); shorten the row, or raise \
                 sft.max_position_embeddings for a fresh model",
                ex.line
            )
        };
        let prompt = format
            .encode_bounded(tokenizer, &ex.question, context)
            .map_err(|e| {
                if e.is::<crate::data::prompt::PromptTooLong>() {
                    too_long()
                } else {
                    e.context(format!("{source}: line {}: encoding the prompt", ex.line))
                }
            })?;
        let room = context.saturating_sub(prompt.len());
        let (mut completion, over) = if context == usize::MAX {
            (tokenizer.encode(solution, false)?, false)
        } else {
            tokenizer.encode_tail(solution, false, room)?
        };
        if over || completion.len() >= room {
            return Err(too_long());
        }
        completion.push(eos);
        rows.push(SftRow { prompt, completion });
    }
    Ok(rows)
}

/// Pads rows as the RL trainer does (prompts left, completions right) and masks the loss to
/// the completion tokens.
pub fn make_batch(rows: &[&SftRow], pad_id: u32, device: &Device) -> Result<SftBatch> {
    let prompts: Vec<&[u32]> = rows.iter().map(|r| r.prompt.as_slice()).collect();
    let completions: Vec<&[u32]> = rows.iter().map(|r| r.completion.as_slice()).collect();
    let packed = pack(&prompts, &completions, pad_id, device)?;
    let lc = packed.completion_len;
    let mut mask = vec![0f32; rows.len() * lc];
    for (r, c) in completions.iter().enumerate() {
        mask[r * lc..r * lc + c.len()].fill(1.0);
    }
    let tokens = completions.iter().map(|c| c.len()).sum();
    let loss_mask = Tensor::from_vec(mask, (rows.len(), lc), device)?;
    Ok(SftBatch {
        packed,
        loss_mask,
        tokens,
    })
}

/// Summed negative log-likelihood of the batch's completion tokens (a differentiable scalar).
pub fn completion_nll(policy: &Policy, batch: &SftBatch) -> Result<Tensor> {
    let b = &batch.packed;
    let logits = policy.forward(&b.input_ids, Some(&b.attention_mask))?;
    // Position t predicts token t + 1: the completion is predicted from prompt_len - 1 on.
    let logits = logits.narrow(1, b.prompt_len - 1, b.completion_len)?;
    let logp = candle_nn::ops::log_softmax(&logits, D::Minus1)?
        .gather(&b.targets.unsqueeze(2)?.contiguous()?, 2)?
        .squeeze(2)?;
    Ok((logp * &batch.loss_mask)?.sum_all()?.neg()?)
}

/// Accuracy of `n` completions per example sampled with `params` (its EOS ids must be set),
/// graded by the default math verifier.
pub fn accuracy(
    policy: &Policy,
    tokenizer: &Tokenizer,
    format: &PromptFormat,
    examples: &[Example],
    n: usize,
    params: &SamplingParams,
) -> Result<f64> {
    if examples.is_empty() || n == 0 {
        return Ok(0.0);
    }
    let mut correct = 0usize;
    for chunk in examples.chunks(64) {
        let prompts: Vec<Vec<u32>> = chunk
            .iter()
            .map(|e| format.encode(tokenizer, &e.question))
            .collect::<Result<_>>()?;
        let completions = sampler::generate(policy, tokenizer, &prompts, n, params, None)?;
        for c in &completions {
            let gold = &chunk[c.prompt_index].answer;
            let verdict = crate::verifier::verify_completion(
                &c.text,
                gold,
                &ExtractPolicy::lenient(),
                &EquivOptions::default(),
            );
            correct += usize::from(verdict.correct);
        }
    }
    Ok(correct as f64 / (examples.len() * n) as f64)
}

/// The prompt format the RL trainer builds from `[data]` ([`Config::prompt_format`]).
pub fn prompt_format(cfg: &Config) -> PromptFormat {
    cfg.prompt_format()
}

/// Saves the policy with its tokenizer files in HF layout.
fn save_model(policy: &Policy, tokenizer_dir: &Path, dir: &Path) -> Result<()> {
    policy.save(dir)?;
    let same = match (tokenizer_dir.canonicalize(), dir.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    };
    if !same {
        copy_tokenizer_files(tokenizer_dir, dir)?;
    }
    Ok(())
}

/// Order of the rows for `epoch`: a fresh shuffle per epoch, pure in (seed, epoch).
fn epoch_order(n: usize, seed: u64, epoch: usize) -> Vec<usize> {
    let mut order: Vec<usize> = (0..n).collect();
    order.shuffle(&mut ChaCha8Rng::seed_from_u64(mix_seed(seed, epoch as u64)));
    order
}

/// Runs `[sft]` on `cfg`; writes `metrics.jsonl`, checkpoints, the final model and
/// `summary.json` into `output.dir`.
///
/// When `interrupted` becomes true (Ctrl-C), the model so far is saved to
/// `output.dir/checkpoint-N` and the run stops with an error saying so.
pub fn sft(cfg: &Config, interrupted: Arc<AtomicBool>) -> Result<SftSummary> {
    Ok(train_sft_until(cfg, interrupted)?.0)
}

/// [`sft`] without interruption, also handing back the trained policy (tests compare it with
/// what was saved).
pub fn train_sft(cfg: &Config) -> Result<(SftSummary, Policy)> {
    train_sft_until(cfg, Arc::new(AtomicBool::new(false)))
}

fn train_sft_until(cfg: &Config, interrupted: Arc<AtomicBool>) -> Result<(SftSummary, Policy)> {
    let t0 = Instant::now();
    let s = &cfg.sft;
    s.validate()?;
    let out = cfg.output.dir.clone();
    let _lock = crate::trainer::lock::RunLock::acquire(&out, "grpo sft")?;
    crate::trainer::state::clean_interrupted_saves(&out)?;

    let res = cfg.resolve()?;
    let (device, dtype) = (res.device.clone(), res.dtype);
    let model_dir = resolve_model_dir(&cfg.model.path, cfg.model.revision.as_deref())?;
    let tokenizer = Tokenizer::load(&model_dir)?;
    let policy = match s.init {
        SftInit::Random => {
            Policy::new_random(random_model_config(s, &tokenizer)?, s.seed, dtype, &device)?
        }
        SftInit::Pretrained => Policy::load(&model_dir, dtype, &device)?,
    };
    let format = res.prompt.clone();
    let sets = load_data_sets(&cfg.data, true)?;
    let train_set = sets.train;
    let rows = build_rows_within(
        &train_set,
        &tokenizer,
        &format,
        s.direct_answer_fraction,
        s.seed,
        policy.config.max_position_embeddings,
        &sets.train_label,
    )?;
    if rows.is_empty() {
        bail!(
            "{}: no example has a `solution` field to fine-tune on",
            sets.train_label
        );
    }
    let longest = rows
        .iter()
        .map(|r| r.prompt.len() + r.completion.len())
        .max()
        .unwrap_or(0);
    if longest > policy.config.max_position_embeddings {
        bail!(
            "the longest training sequence has {longest} tokens, more than the model's max_position_embeddings ({}); raise sft.max_position_embeddings",
            policy.config.max_position_embeddings
        );
    }
    let mut val_set = sets.validation;
    if s.eval_limit > 0 {
        val_set.truncate(s.eval_limit);
    }
    let pad = tokenizer.pad_token_id();
    let steps_per_epoch = rows.len().div_ceil(s.batch_size);
    let max_steps = if s.max_steps > 0 {
        s.max_steps
    } else {
        s.epochs * steps_per_epoch
    };
    tracing::info!(
        params = policy.num_parameters(),
        rows = rows.len(),
        skipped = train_set.len() - rows.len(),
        max_steps,
        "sft: starting"
    );

    let mut opt = Optimizer::new(policy.named_vars(), &cfg.optim)?;
    let metrics_path = out.join("metrics.jsonl");
    let mut metrics = std::fs::File::create(&metrics_path)
        .with_context(|| format!("creating {}", metrics_path.display()))?;
    let mut log = |v: Value| -> Result<()> {
        writeln!(metrics, "{v}").with_context(|| format!("writing {}", metrics_path.display()))
    };
    let greedy_params = SamplingParams {
        temperature: 0.0,
        max_new_tokens: cfg.eval.max_completion_length,
        eos_token_ids: tokenizer.eos_token_ids(),
        seed: s.seed,
        ..SamplingParams::default()
    };
    let bar = progress_bar(max_steps);

    let mut order = Vec::new();
    let mut cursor = 0usize;
    let mut epoch = 0usize;
    let (mut window_nll, mut window_tokens) = (0.0f64, 0usize);
    let mut window_start = Instant::now();
    let mut final_loss = f64::NAN;
    let mut last_greedy = None;
    for step in 0..max_steps {
        if interrupted.load(Ordering::SeqCst) {
            bar.finish_and_clear();
            let dir = out.join(format!("checkpoint-{step}"));
            save_model(&policy, &model_dir, &dir)?;
            bail!(
                "interrupted at step {step} of {max_steps}: the model so far is in {}",
                dir.display()
            );
        }
        // The step's rows: the next slice of this epoch's shuffle (a short last batch is kept).
        if cursor >= order.len() {
            if step > 0 {
                epoch += 1;
            }
            order = epoch_order(rows.len(), s.seed, epoch);
            cursor = 0;
        }
        let end = (cursor + s.batch_size).min(order.len());
        let mut idx = order[cursor..end].to_vec();
        cursor = end;
        // Similar lengths share a micro-batch, so little compute goes to padding.
        idx.sort_by_key(|&i| (rows[i].prompt.len(), rows[i].completion.len()));
        let mb = if s.micro_batch_size == 0 {
            idx.len()
        } else {
            s.micro_batch_size
        };
        let step_tokens: usize = idx.iter().map(|&i| rows[i].completion.len()).sum();

        let lr = learning_rate(&cfg.optim, step, max_steps);
        let mut grads = GradAccumulator::new(opt.vars().len());
        let mut step_nll = 0.0f64;
        for chunk in idx.chunks(mb) {
            let batch_rows: Vec<&SftRow> = chunk.iter().map(|&i| &rows[i]).collect();
            let batch = make_batch(&batch_rows, pad, &device)?;
            let nll = completion_nll(&policy, &batch)?;
            step_nll += nll.to_dtype(DType::F64)?.to_scalar::<f64>()?;
            // Mean over the step's tokens, however they are split into micro-batches.
            let loss = (nll / step_tokens as f64)?;
            grads.add(&loss.backward()?, opt.vars())?;
        }
        let mut grads = grads.finish(opt.vars())?;
        let grad_norm = clip_grad_norm(&mut grads, cfg.optim.max_grad_norm)?;
        if !step_nll.is_finite() || !grad_norm.is_finite() {
            bail!(
                "step {step}: non-finite loss ({step_nll}) or gradient norm ({grad_norm}); lower optim.learning_rate"
            );
        }
        opt.step(&grads, lr)?;

        window_nll += step_nll;
        window_tokens += step_tokens;
        let done = step + 1;
        bar.inc(1);
        if done % s.logging_steps == 0 || done == max_steps {
            let loss = window_nll / window_tokens.max(1) as f64;
            let tok_s = window_tokens as f64 / window_start.elapsed().as_secs_f64().max(1e-9);
            final_loss = loss;
            bar.set_message(format!("loss {loss:.4} | {tok_s:.0} tok/s | lr {lr:.2e}"));
            log(json!({
                "step": done,
                "epoch": epoch as f64 + cursor as f64 / order.len() as f64,
                "loss": loss,
                "lr": lr,
                "grad_norm": grad_norm,
                "tokens_per_s": tok_s,
                "elapsed_s": t0.elapsed().as_secs_f64(),
            }))?;
            window_nll = 0.0;
            window_tokens = 0;
            window_start = Instant::now();
        }
        if s.eval_every > 0 && done % s.eval_every == 0 && done < max_steps && !val_set.is_empty() {
            let acc = accuracy(&policy, &tokenizer, &format, &val_set, 1, &greedy_params)?;
            bar.println(format!("step {done}: greedy validation accuracy {acc:.4}"));
            log(json!({"step": done, "val_accuracy_greedy": acc}))?;
            last_greedy = Some(acc);
            // Evaluation time is not training throughput.
            window_start = Instant::now();
        }
        if s.save_every > 0 && done % s.save_every == 0 && done < max_steps {
            save_model(&policy, &model_dir, &out.join(format!("checkpoint-{done}")))?;
        }
    }
    bar.finish_and_clear();
    save_model(&policy, &model_dir, &out)?;

    let (mut greedy, mut sampled) = (last_greedy, None);
    if !val_set.is_empty() {
        let acc = accuracy(&policy, &tokenizer, &format, &val_set, 1, &greedy_params)?;
        greedy = Some(acc);
        let mut line = json!({"step": max_steps, "val_accuracy_greedy": acc});
        if s.eval_samples > 0 {
            let params = SamplingParams {
                temperature: s.eval_temperature,
                ..greedy_params.clone()
            };
            let acc = accuracy(
                &policy,
                &tokenizer,
                &format,
                &val_set,
                s.eval_samples,
                &params,
            )?;
            sampled = Some(acc);
            line["val_accuracy_sampled"] = json!(acc);
            line["eval_temperature"] = json!(s.eval_temperature);
        }
        log(line)?;
    }
    let summary = SftSummary {
        steps: max_steps,
        wall_time_s: t0.elapsed().as_secs_f64(),
        num_parameters: policy.num_parameters(),
        train_examples: rows.len(),
        final_loss,
        val_accuracy_greedy: greedy,
        val_accuracy_sampled: sampled,
        eval_temperature: s.eval_temperature,
        output_dir: out.clone(),
    };
    let path = out.join("summary.json");
    std::fs::write(&path, serde_json::to_string_pretty(&summary)? + "\n")
        .with_context(|| format!("writing {}", path.display()))?;
    Ok((summary, policy))
}

fn progress_bar(total: usize) -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::new(total as u64);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "sft {pos}/{len} [{elapsed_precise} < {eta_precise}] {bar:30} {msg}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    bar
}
