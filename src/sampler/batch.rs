//! The batched decode loop behind [`generate`].

use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;

use super::logits::{row_rng, LogitsProcessor, Sampled};
use super::stop::{cut_at_stop, validate_stops, IncrementalDecoder, StopMatcher};
use super::{Completion, FinishReason, SamplingParams, TokenEvent};
use crate::model::{KvCache, Policy, Tokenizer};

/// Callback for every generated token (streaming, progress bars).
pub type OnToken<'a> = &'a mut dyn FnMut(&TokenEvent<'_>);

/// Rows × vocabulary below which sampling stays on one thread (rayon would cost more).
const PARALLEL_SAMPLING_MIN_WORK: usize = 1 << 16;

/// Most logits elements (prompts × positions × vocab) one prefill forward may produce; longer
/// prefills are split into position chunks.
const PREFILL_CHUNK_ELEMS: usize = 1 << 24;

/// Samples `num_samples` completions for each prompt (token ids, no padding).
///
/// Returns them prompt-major, sample-minor: completion `p * num_samples + s` is sample `s` of
/// prompt `p`. Each prompt is prefilled once and its KV cache shared by its samples; rows that
/// finish are compacted out of the cache once a quarter of the batch has finished. A row's
/// tokens depend only on its prompt, `params` (including `seed`) and its `(prompt, sample)`
/// indices, not on the other prompts or on `max_batch_rows`.
pub fn generate(
    policy: &Policy,
    tokenizer: &Tokenizer,
    prompts: &[Vec<u32>],
    num_samples: usize,
    params: &SamplingParams,
    on_token: Option<OnToken<'_>>,
) -> Result<Vec<Completion>> {
    generate_restricted(
        policy,
        tokenizer,
        prompts,
        num_samples,
        params,
        on_token,
        &[],
    )
}

/// [`generate`] where only the `allowed` tokens can be sampled (a fixed alphabet, as in the
/// `tree` toy task); log-probs are those of the distribution renormalised over `allowed`.
/// An empty `allowed` means the whole vocabulary, as [`generate`].
pub fn generate_restricted(
    policy: &Policy,
    tokenizer: &Tokenizer,
    prompts: &[Vec<u32>],
    num_samples: usize,
    params: &SamplingParams,
    on_token: Option<OnToken<'_>>,
    allowed: &[u32],
) -> Result<Vec<Completion>> {
    generate_with_prefill_chunk(
        policy,
        tokenizer,
        prompts,
        num_samples,
        params,
        on_token,
        None,
        allowed,
    )
}

#[allow(clippy::too_many_arguments)]
/// [`generate`] with a fixed prefill chunk length (tests force chunking with short prompts).
fn generate_with_prefill_chunk(
    policy: &Policy,
    tokenizer: &Tokenizer,
    prompts: &[Vec<u32>],
    num_samples: usize,
    params: &SamplingParams,
    mut on_token: Option<OnToken<'_>>,
    prefill_chunk: Option<usize>,
    allowed: &[u32],
) -> Result<Vec<Completion>> {
    let processor = params.logits_processor()?;
    validate_stops(&params.stop)?;
    if num_samples == 0 {
        bail!("num_samples must be at least 1");
    }
    if let Some(p) = prompts.iter().position(Vec::is_empty) {
        bail!("prompt {p} is empty: generation needs at least one prompt token");
    }
    let mut out: Vec<Option<Completion>> = vec![None; prompts.len() * num_samples];
    if params.max_new_tokens == 0 {
        for (p, prompt) in prompts.iter().enumerate() {
            let _ = prompt;
            for s in 0..num_samples {
                out[p * num_samples + s] = Some(Completion {
                    prompt_index: p,
                    sample_index: s,
                    token_ids: Vec::new(),
                    logprobs: Vec::new(),
                    finish_reason: FinishReason::Length,
                    text: String::new(),
                });
            }
        }
        return Ok(out.into_iter().flatten().collect());
    }

    // Similar lengths share a micro-batch, so less compute goes to padding.
    let mut order: Vec<usize> = (0..prompts.len()).collect();
    order.sort_by_key(|&p| std::cmp::Reverse(prompts[p].len()));
    // A batch is some prompts with all their samples, or, when fewer rows than one prompt's
    // samples fit, one prompt with a range of its samples (each row's RNG depends only on its
    // indices, so the split does not change the outputs).
    let rows_per_batch = match params.max_batch_rows {
        0 => usize::MAX,
        r => r,
    };
    let prompts_per_batch = if rows_per_batch == usize::MAX {
        prompts.len().max(1)
    } else {
        (rows_per_batch / num_samples).max(1)
    };
    let samples_per_batch = rows_per_batch.min(num_samples);
    let sample_ranges: Vec<std::ops::Range<usize>> = (0..num_samples)
        .step_by(samples_per_batch)
        .map(|s| s..(s + samples_per_batch).min(num_samples))
        .collect();
    let ctx = Ctx {
        policy,
        allowed,
        tokenizer,
        params,
        processor,
        track_text: !params.stop.is_empty() || on_token.is_some(),
        prefill_chunk,
    };
    for chunk in order.chunks(prompts_per_batch) {
        let batch: Vec<(usize, &[u32])> = chunk.iter().map(|&p| (p, &prompts[p][..])).collect();
        for samples in &sample_ranges {
            for c in ctx.run_batch(&batch, samples.clone(), &mut on_token)? {
                let i = c.prompt_index * num_samples + c.sample_index;
                out[i] = Some(c);
            }
        }
    }
    out.into_iter()
        .enumerate()
        .map(|(i, c)| c.with_context(|| format!("internal error: completion {i} missing")))
        .collect()
}

struct Ctx<'a> {
    policy: &'a Policy,
    /// Tokens that may be sampled; empty = all.
    allowed: &'a [u32],
    tokenizer: &'a Tokenizer,
    params: &'a SamplingParams,
    processor: LogitsProcessor,
    /// Decode text as it grows (needed for stop strings and streaming).
    track_text: bool,
    /// Positions per prefill forward; None = bounded by `PREFILL_CHUNK_ELEMS`.
    prefill_chunk: Option<usize>,
}

/// Where a micro-batch's time went (logged at debug level; the decode loop dominates GRPO).
#[derive(Default)]
struct Timing {
    prefill: Duration,
    decode: Duration,
    sample: Duration,
    compact: Duration,
    steps: usize,
}

/// One output row while it is being generated.
struct Row {
    prompt_index: usize,
    sample_index: usize,
    rng: ChaCha8Rng,
    tokens: Vec<u32>,
    logprobs: Vec<f32>,
    finish: Option<FinishReason>,
    decoder: IncrementalDecoder,
    matcher: StopMatcher,
    /// Text released by the last step, for the callback.
    ready: String,
    /// A token was added this step and not yet reported.
    new_token: bool,
}

impl Ctx<'_> {
    /// Generates samples `samples` of every prompt of a micro-batch of `(prompt_index, tokens)`.
    fn run_batch(
        &self,
        batch: &[(usize, &[u32])],
        samples: std::ops::Range<usize>,
        on_token: &mut Option<OnToken<'_>>,
    ) -> Result<Vec<Completion>> {
        let g = samples.len();
        let max_new = self.params.max_new_tokens;
        let mut rows: Vec<Row> = batch
            .iter()
            .flat_map(|&(p, _)| samples.clone().map(move |s| (p, s)))
            .map(|(p, s)| Row {
                prompt_index: p,
                sample_index: s,
                rng: row_rng(self.params.seed, p, s),
                tokens: Vec::with_capacity(max_new),
                logprobs: Vec::with_capacity(max_new),
                finish: None,
                decoder: IncrementalDecoder::default(),
                matcher: StopMatcher::new(&self.params.stop),
                ready: String::new(),
                new_token: false,
            })
            .collect();

        let mut timing = Timing::default();
        let t0 = Instant::now();
        let (mut cache, prefill_logits) = self.prefill(batch, g)?;
        timing.prefill += t0.elapsed();
        let vocab = prefill_logits.len() / batch.len();
        // Which row sits in each cache slot.
        let mut slots: Vec<usize> = (0..rows.len()).collect();
        // Logits of each slot for this step, [slots, vocab] row-major; the first step reads a
        // prompt's prefill logits for all its samples.
        let mut logits = prefill_logits;
        let mut first = true;
        let mut step_tokens: Vec<u32> = Vec::with_capacity(rows.len());
        loop {
            let parallel = slots.len() * vocab >= PARALLEL_SAMPLING_MIN_WORK;
            let step = |(slot, row): (usize, &mut Row)| -> Result<()> {
                if row.finish.is_some() {
                    return Ok(());
                }
                let lrow = if first { slot / g } else { slot };
                let l = &logits[lrow * vocab..(lrow + 1) * vocab];
                let masked: Vec<f32>;
                let l = if self.allowed.is_empty() {
                    l
                } else {
                    masked = mask_to_allowed(l, self.allowed);
                    &masked
                };
                let s = self.processor.sample(l, &mut row.rng)?;
                self.push_token(row, s)
            };
            let t0 = Instant::now();
            {
                let mut in_cache: Vec<(usize, &mut Row)> = Vec::with_capacity(slots.len());
                let mut by_row: Vec<Option<&mut Row>> = rows.iter_mut().map(Some).collect();
                for (slot, &r) in slots.iter().enumerate() {
                    if let Some(row) = by_row[r].take() {
                        in_cache.push((slot, row));
                    }
                }
                if parallel {
                    in_cache.into_par_iter().try_for_each(step)?;
                } else {
                    in_cache.into_iter().try_for_each(step)?;
                }
            }
            first = false;
            timing.sample += t0.elapsed();
            for &r in &slots {
                let row = &mut rows[r];
                if !std::mem::take(&mut row.new_token) {
                    continue;
                }
                if let (Some(cb), Some(&t), Some(&lp)) =
                    (on_token.as_mut(), row.tokens.last(), row.logprobs.last())
                {
                    cb(&TokenEvent {
                        prompt_index: row.prompt_index,
                        sample_index: row.sample_index,
                        token_id: t,
                        logprob: lp,
                        text: &row.ready,
                        finish_reason: row.finish,
                    });
                }
            }

            let live: Vec<usize> = (0..slots.len())
                .filter(|&slot| rows[slots[slot]].finish.is_none())
                .collect();
            if live.is_empty() {
                break;
            }
            // Compact once a quarter of the slots hold finished rows: fewer rows per step
            // without paying for a cache copy every time a single row ends.
            let finished = slots.len() - live.len();
            if finished > 0 && finished * 4 >= slots.len() {
                let t0 = Instant::now();
                cache = cache
                    .select_rows(&live)
                    .context("compacting finished rows out of the KV cache")?;
                slots = live.iter().map(|&slot| slots[slot]).collect();
                timing.compact += t0.elapsed();
            }
            step_tokens.clear();
            step_tokens.extend(slots.iter().map(|&r| {
                // Finished rows still in the cache get a dummy token; their output is ignored.
                rows[r].tokens.last().copied().unwrap_or(0)
            }));
            let t0 = Instant::now();
            self.policy
                .forward_cached_last_host(
                    &step_tokens,
                    None,
                    slots.len(),
                    1,
                    &mut cache,
                    &mut logits,
                )
                .context("decode step")?;
            timing.decode += t0.elapsed();
            timing.steps += 1;
        }
        tracing::debug!(
            rows = rows.len(),
            steps = timing.steps,
            prefill_s = timing.prefill.as_secs_f64(),
            decode_forward_s = timing.decode.as_secs_f64(),
            sampling_s = timing.sample.as_secs_f64(),
            compaction_s = timing.compact.as_secs_f64(),
            "sampler micro-batch done"
        );
        rows.into_iter().map(|row| self.finish_row(row)).collect()
    }

    /// Left-pads the prompts into one batch, runs them through the model once and repeats each
    /// prompt's cache rows for its `samples` samples. Returns the cache and the last-position logits of
    /// each prompt (`[prompts, vocab]` row-major).
    fn prefill(&self, batch: &[(usize, &[u32])], samples: usize) -> Result<(KvCache, Vec<f32>)> {
        let b = batch.len();
        let max_len = batch.iter().map(|(_, p)| p.len()).max().unwrap_or(0);
        let capacity = max_len + self.params.max_new_tokens;
        let pad = self.tokenizer.pad_token_id();
        let mut ids = Vec::with_capacity(b * max_len);
        let mut mask = Vec::with_capacity(b * max_len);
        for (_, p) in batch {
            let n_pad = max_len - p.len();
            ids.extend(std::iter::repeat_n(pad, n_pad));
            ids.extend_from_slice(p);
            mask.extend(std::iter::repeat_n(0u8, n_pad));
            mask.extend(std::iter::repeat_n(1u8, p.len()));
        }
        let mut cache = self.policy.new_cache(b, capacity)?;
        // The attention scores of a chunk are [b, heads, chunk, len]: bound them for long
        // prompts by feeding the prompt in position chunks.
        let heads = self.policy.config.num_attention_heads.max(1);
        let chunk = self.prefill_chunk.unwrap_or_else(|| {
            (PREFILL_CHUNK_ELEMS / (b * heads * max_len).max(1)).clamp(64, max_len.max(64))
        });
        let chunk = chunk.max(1);
        let mut start = 0;
        let mut logits = Vec::new();
        let (mut cids, mut cmask) = (Vec::new(), Vec::new());
        while start < max_len {
            let t = chunk.min(max_len - start);
            cids.clear();
            cmask.clear();
            for r in 0..b {
                cids.extend_from_slice(&ids[r * max_len + start..r * max_len + start + t]);
                cmask.extend_from_slice(&mask[r * max_len + start..r * max_len + start + t]);
            }
            self.policy
                .forward_cached_last_host(&cids, Some(&cmask), b, t, &mut cache, &mut logits)
                .with_context(|| format!("prefill of {b} prompts of up to {max_len} tokens"))?;
            start += t;
        }
        if logits.is_empty() {
            bail!("prefill of an empty batch");
        }
        if samples > 1 {
            cache = cache.repeat_rows(samples)?;
        }
        Ok((cache, logits))
    }

    /// Records a sampled token and decides whether the row is done.
    fn push_token(&self, row: &mut Row, s: Sampled) -> Result<()> {
        row.tokens.push(s.token);
        row.logprobs.push(s.logprob);
        row.ready.clear();
        row.new_token = true;
        let params = self.params;
        let eos = !params.ignore_eos && params.eos_token_ids.contains(&s.token);
        if self.track_text {
            let decode = |ids: &[u32]| self.tokenizer.decode(ids, true);
            let done = eos || row.tokens.len() >= params.max_new_tokens;
            let delta = if done {
                row.decoder.flush(&row.tokens, decode)?
            } else {
                row.decoder.next(&row.tokens, decode)?
            };
            if row.matcher.push(&delta) {
                row.finish = Some(FinishReason::Stop);
            }
            let finished = done || row.matcher.stopped();
            row.ready.push_str(row.matcher.take_ready(finished));
        }
        if row.finish.is_none() {
            if eos {
                row.finish = Some(FinishReason::Eos);
            } else if row.tokens.len() >= params.max_new_tokens {
                row.finish = Some(FinishReason::Length);
            }
        }
        Ok(())
    }

    fn finish_row(&self, row: Row) -> Result<Completion> {
        let finish_reason = row.finish.unwrap_or(FinishReason::Length);
        let full = self
            .tokenizer
            .decode(&row.tokens, true)
            .with_context(|| format!("decoding completion of prompt {}", row.prompt_index))?;
        let text = if finish_reason == FinishReason::Stop {
            cut_at_stop(&full, &self.params.stop).to_string()
        } else {
            full
        };
        Ok(Completion {
            prompt_index: row.prompt_index,
            sample_index: row.sample_index,
            token_ids: row.tokens,
            logprobs: row.logprobs,
            finish_reason,
            text,
        })
    }
}

/// A row of logits with every token outside `allowed` at −∞: sampling and the reported
/// log-probs then use the distribution renormalised over `allowed`.
fn mask_to_allowed(logits: &[f32], allowed: &[u32]) -> Vec<f32> {
    let mut out = vec![f32::NEG_INFINITY; logits.len()];
    for &t in allowed {
        if let Some(&v) = logits.get(t as usize) {
            out[t as usize] = v;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device};

    /// Chunked prefill (3 positions per forward, so left padding fills whole chunks of the
    /// shorter prompt) gives the same greedy tokens as `transformers`.
    #[test]
    fn chunked_prefill_matches_reference() {
        let dir = std::path::Path::new(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/tiny-qwen2"
        ));
        let policy = Policy::load(dir, DType::F32, &Device::Cpu).unwrap();
        let tok = Tokenizer::load(dir).unwrap();
        let reference: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(dir.join("reference.json")).unwrap())
                .unwrap();
        let prompts: Vec<Vec<u32>> = reference["prompts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| tok.encode(p.as_str().unwrap(), false).unwrap())
            .collect();
        assert!(prompts[0].len() > prompts[1].len() + 6);
        let params = SamplingParams {
            temperature: 0.0,
            max_new_tokens: 16,
            ignore_eos: true,
            ..SamplingParams::default()
        };
        let out =
            generate_with_prefill_chunk(&policy, &tok, &prompts, 2, &params, None, Some(3), &[])
                .unwrap();
        for c in &out {
            let expected: Vec<u32> = reference["greedy_new_token_ids"][c.prompt_index]
                .as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_u64().unwrap() as u32)
                .collect();
            assert_eq!(c.token_ids, expected, "prompt {}", c.prompt_index);
        }
    }
}
