//! `grpo generate`: sample completions from a checkpoint.

use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::{json, Value};

use crate::cli::args::{bounded_rows, generation_config, refusal_error, ModelArgs, SamplingArgs};
use crate::model::checkpoint::load_config;
use crate::model::{ChatMessage, Policy, Tokenizer};
use crate::sampler::budget::{self, GenShape, Refusal};
use crate::sampler::{generate, Completion, SamplingParams, TokenEvent};
use crate::trainer::memory::available_cpu_bytes;

/// `--max-new-tokens` when neither the command line nor the checkpoint sets it.
const DEFAULT_MAX_NEW_TOKENS: usize = 256;

/// The long `--help` text. main.rs attaches it to the subcommand: the variant's doc comment
/// there would otherwise replace it.
pub const LONG_ABOUT: &str = "Sample completions from a model (batched, KV-cached).

Prompts come from --prompt (repeatable) or --input (JSONL with a `prompt` or `question` field per
line). Each prompt is wrapped in the checkpoint's chat template (with --system as the system
turn) unless --no-chat-template. Unset sampling options take the checkpoint's
generation_config.json values (temperature, top_p, top_k, min_p; do_sample = false means greedy),
else temperature 1.0 with no truncation. A single prompt with -n 1 streams its text to stdout;
--json prints one JSON object per completion (prompt_index, sample_index, text, token_ids,
logprobs, finish_reason). Log-probs are those of log_softmax(logits / T) over the full
vocabulary, as the trainer computes them. A prompt must leave room in the model's context
(max_position_embeddings): a longer one is an error naming it, and --max-new-tokens is capped, with
a note, at what the longest prompt leaves.

Memory: the request's completions (prompts × -n × --max-new-tokens) and each decoding row's KV
cache and logits are estimated before anything is allocated, against the memory available
(MemAvailable, a cgroup limit, GRPO_MAX_MEMORY). A request that cannot fit is refused naming -n
and --max-new-tokens (a huge -n before the weights are even read); one that fits but not all at
once runs in row batches, with the same completions for the same --seed.

Examples:
  grpo generate --model tests/fixtures/tiny-qwen2 --prompt 'What is 2+3?' --max-new-tokens 32
  grpo generate --model Qwen/Qwen2.5-0.5B-Instruct --input prompts.jsonl -n 8 --temperature 0.7 --json
  grpo generate --model runs/lambda/checkpoint-20 --prompt 'Q: 12*7?' --temperature 0 --stop '\\n\\n'
  grpo generate --model models/tiny-math --adapter runs/lora/checkpoint-200 --prompt 'Q: 12*7?' -t 0
  grpo generate --model tests/fixtures/tiny-qwen2 --bench";

/// Sample completions from a model (batched, KV-cached).
#[derive(Debug, Clone, Args)]
#[command(long_about = LONG_ABOUT)]
pub struct GenerateArgs {
    /// Local Hugging Face directory or hub id (downloaded into the Hugging Face cache if needed).
    #[arg(long, short = 'm', value_name = "DIR|HUB_ID")]
    pub model: String,
    #[command(flatten)]
    pub load: ModelArgs,
    #[command(flatten)]
    pub sampling: SamplingArgs,
    /// A prompt (repeatable).
    #[arg(long, short = 'p', value_name = "TEXT", conflicts_with = "input")]
    pub prompt: Vec<String>,
    /// JSONL file of prompts: a `prompt` or `question` string field per line.
    #[arg(long, short = 'i', value_name = "FILE")]
    pub input: Option<PathBuf>,
    /// Completions per prompt.
    #[arg(long, short = 'n', default_value_t = 1)]
    pub num_samples: usize,
    /// Drop tokens less likely than min_p × the top token's probability, 0 = off.
    #[arg(long)]
    pub min_p: Option<f64>,
    /// Keep generating past EOS tokens.
    #[arg(long)]
    pub ignore_eos: bool,
    /// One JSON object per completion on stdout.
    #[arg(long)]
    pub json: bool,
    /// Throughput benchmark: 8 synthetic prompts × 8 samples × 128 new tokens, EOS ignored.
    #[arg(long, conflicts_with_all = ["prompt", "input"])]
    pub bench: bool,
}

pub fn run(args: &GenerateArgs) -> Result<()> {
    // The prompts are read and the request's completions sized before the weights load: `-n`
    // far beyond memory fails at once.
    let texts = if args.bench {
        Vec::new()
    } else {
        let texts = prompt_texts(args)?;
        precheck(args, texts.len())?;
        texts
    };
    let (dir, tokenizer, policy) = args.load.load(&args.model)?;
    let mut params = sampling_params(args, &dir, &tokenizer)?;

    if args.bench {
        return bench(&policy, &tokenizer, &mut params);
    }
    // Bounded by the model's positions before anything is allocated: a prompt that fills the
    // context is an error naming it, and the new tokens are capped at what the longest leaves.
    let context = policy.config.max_position_embeddings;
    let prompts = texts
        .iter()
        .map(|(name, t)| prepare_prompt(args, &tokenizer, t, context).with_context(|| name.clone()))
        .collect::<Result<Vec<_>>>()?;
    let longest = prompts.iter().map(Vec::len).max().unwrap_or(0);
    let cap = crate::eval::context::context_cap(params.max_new_tokens, longest, context)?;
    if cap < params.max_new_tokens {
        eprintln!(
            "note: --max-new-tokens {} capped at {cap}: the longest prompt has {longest} tokens \
             and the model's context (max_position_embeddings) is {context}",
            params.max_new_tokens
        );
        params.max_new_tokens = cap;
    }
    let shape = GenShape {
        prompts: prompts.len(),
        samples: args.num_samples,
        longest_prompt: longest,
        max_new_tokens: params.max_new_tokens,
    };
    params.max_batch_rows = bounded_rows(&policy.config, &shape, params.max_batch_rows, "")?;

    let start = Instant::now();
    let stream = prompts.len() == 1 && args.num_samples == 1 && !args.json;
    let completions = if stream {
        let stdout = std::io::stdout();
        let mut cb = |e: &TokenEvent<'_>| {
            let mut out = stdout.lock();
            let _ = out.write_all(e.text.as_bytes());
            let _ = out.flush();
        };
        let c = generate(&policy, &tokenizer, &prompts, 1, &params, Some(&mut cb))?;
        println!();
        c
    } else {
        let c = with_progress(prompts.len() * args.num_samples, |cb| {
            generate(
                &policy,
                &tokenizer,
                &prompts,
                args.num_samples,
                &params,
                Some(cb),
            )
        })?;
        print_completions(&c, args.json)?;
        c
    };
    summary(&completions, start.elapsed());
    Ok(())
}

/// Refuses a request whose completions alone cannot be held, before any weight is read: one
/// token of prompt and the new tokens capped by the model's context (`config.json`, when the
/// directory has one) make it a lower bound.
fn precheck(args: &GenerateArgs, prompts: usize) -> Result<()> {
    if args.num_samples == 0 {
        bail!("-n: expected at least 1 completion per prompt");
    }
    let Some(available) = available_cpu_bytes() else {
        return Ok(());
    };
    // A local folder's config caps the new tokens; a hub id is checked once it has resolved
    // (nothing is downloaded just for this).
    let dir = Path::new(&args.model);
    if !dir.is_dir() {
        return Ok(());
    }
    let mut max_new = args
        .sampling
        .max_new_tokens
        .unwrap_or(DEFAULT_MAX_NEW_TOKENS);
    if let Ok(config) = load_config(dir) {
        max_new = max_new.min(config.max_position_embeddings.saturating_sub(1));
    }
    let shape = GenShape {
        prompts,
        samples: args.num_samples,
        longest_prompt: 1,
        max_new_tokens: max_new,
    };
    let need = budget::output_bytes_per_row(max_new).saturating_mul(shape.rows());
    if need > available {
        return Err(refusal_error(
            &shape,
            Refusal::Output { need, available },
            "",
        ));
    }
    Ok(())
}

/// Command-line values, else the checkpoint's generation_config.json, else HF's defaults.
fn sampling_params(args: &GenerateArgs, dir: &Path, tok: &Tokenizer) -> Result<SamplingParams> {
    let path = dir.join("generation_config.json");
    let gen = generation_config(Some(dir))?;
    let a = &args.sampling;
    let num = |key: &str| gen.get(key).and_then(Value::as_f64);
    let greedy_by_default = gen.get("do_sample").and_then(Value::as_bool) == Some(false);
    let temperature = a.temperature.unwrap_or(if greedy_by_default {
        0.0
    } else {
        num("temperature").unwrap_or(1.0)
    });
    let params = SamplingParams {
        temperature,
        top_p: a.top_p.or(num("top_p")).unwrap_or(1.0),
        top_k: a
            .top_k
            .or(gen.get("top_k").and_then(Value::as_u64).map(|k| k as usize))
            .unwrap_or(0),
        min_p: args.min_p.or(num("min_p")).unwrap_or(0.0),
        max_new_tokens: a.max_new_tokens.unwrap_or(DEFAULT_MAX_NEW_TOKENS),
        stop: a.stop.clone(),
        eos_token_ids: tok.eos_token_ids(),
        ignore_eos: args.ignore_eos,
        seed: a.seed,
        max_batch_rows: a.max_batch_rows,
    };
    params
        .logits_processor()
        .with_context(|| format!("sampling settings (command line, then {})", path.display()))?;
    Ok(params)
}

/// Each prompt's text with the name its errors carry (`prompt N`, or `FILE:LINE`).
fn prompt_texts(args: &GenerateArgs) -> Result<Vec<(String, String)>> {
    if let Some(path) = &args.input {
        let file =
            std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
        let mut out = Vec::new();
        for (i, line) in std::io::BufReader::new(file).lines().enumerate() {
            let line = line.with_context(|| format!("reading {}", path.display()))?;
            if line.trim().is_empty() {
                continue;
            }
            let v: Value = serde_json::from_str(&line)
                .with_context(|| format!("{}:{}: invalid JSON", path.display(), i + 1))?;
            let text = ["prompt", "question"]
                .iter()
                .find_map(|k| v.get(*k).and_then(Value::as_str))
                .with_context(|| {
                    format!(
                        "{}:{}: expected a string field `prompt` or `question`",
                        path.display(),
                        i + 1
                    )
                })?;
            out.push((format!("{}:{}", path.display(), i + 1), text.to_string()));
        }
        if out.is_empty() {
            bail!("{}: no prompts", path.display());
        }
        return Ok(out);
    }
    if args.prompt.is_empty() {
        bail!("give prompts with --prompt TEXT or --input FILE (or run --bench)");
    }
    Ok(args
        .prompt
        .iter()
        .enumerate()
        .map(|(i, p)| (format!("--prompt {i}"), p.clone()))
        .collect())
}

/// The prompt's token ids; an error when it leaves no room in a `context`-token model (found
/// by tokenizing only about `context` tokens' worth of its end, however long the text).
fn prepare_prompt(
    args: &GenerateArgs,
    tok: &Tokenizer,
    text: &str,
    context: usize,
) -> Result<Vec<u32>> {
    let chat = !args.sampling.no_chat_template && tok.has_chat_template();
    if !chat && args.sampling.system.is_some() {
        bail!("--system needs a chat template (the model has none, or --no-chat-template)");
    }
    let rendered = if chat {
        let mut messages = Vec::new();
        if let Some(system) = &args.sampling.system {
            messages.push(ChatMessage::new("system", system.clone()));
        }
        messages.push(ChatMessage::new("user", text));
        tok.apply_chat_template(&messages, true)?
    } else {
        text.to_string()
    };
    // A template already spells out the special tokens (as transformers does); raw text gets
    // the tokenizer's.
    let (ids, over) = tok.encode_tail(&rendered, !chat, context)?;
    if over || ids.len() >= context {
        bail!(
            "the prompt ({} characters{}) has at least {context} tokens, the model's whole \
             context (max_position_embeddings), leaving no room to generate; shorten it",
            text.chars().count(),
            if chat { ", in the chat template" } else { "" }
        );
    }
    Ok(ids)
}

/// Runs `f` with a token callback that drives a progress bar on stderr (completed rows, with
/// new tokens and tokens/s in the message).
fn with_progress<T>(
    rows: usize,
    f: impl FnOnce(&mut dyn FnMut(&TokenEvent<'_>)) -> Result<T>,
) -> Result<T> {
    let bar = ProgressBar::new(rows as u64);
    if let Ok(style) = ProgressStyle::with_template(
        "{spinner} [{elapsed_precise}] {bar:30} {pos}/{len} completions  {msg}",
    ) {
        bar.set_style(style);
    }
    let start = Instant::now();
    let mut tokens = 0usize;
    let mut last_update = Instant::now();
    let mut cb = |e: &TokenEvent<'_>| {
        tokens += 1;
        if e.finish_reason.is_some() {
            bar.inc(1);
        }
        if last_update.elapsed() > Duration::from_millis(200) {
            last_update = Instant::now();
            let secs = start.elapsed().as_secs_f64().max(1e-9);
            bar.set_message(format!(
                "{tokens} tokens, {:.1} tok/s",
                tokens as f64 / secs
            ));
        }
    };
    let out = f(&mut cb);
    bar.finish_and_clear();
    out
}

fn print_completions(completions: &[Completion], as_json: bool) -> Result<()> {
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    for c in completions {
        if as_json {
            let line = json!({
                "prompt_index": c.prompt_index,
                "sample_index": c.sample_index,
                "text": c.text,
                "token_ids": c.token_ids,
                "logprobs": c.logprobs,
                "finish_reason": c.finish_reason,
            });
            writeln!(out, "{line}")?;
        } else {
            writeln!(
                out,
                "=== prompt {} sample {} ({}, {} tokens) ===\n{}",
                c.prompt_index,
                c.sample_index,
                c.finish_reason,
                c.token_ids.len(),
                c.text
            )?;
        }
    }
    Ok(())
}

fn summary(completions: &[Completion], elapsed: Duration) {
    let tokens: usize = completions.iter().map(|c| c.token_ids.len()).sum();
    let secs = elapsed.as_secs_f64();
    eprintln!(
        "generated {tokens} new tokens in {} completions in {secs:.2} s ({:.1} tok/s)",
        completions.len(),
        tokens as f64 / secs.max(1e-9)
    );
}

/// Prompts for `--bench` and `benches/generate.rs`: eight questions of different lengths.
pub fn bench_prompts(tok: &Tokenizer) -> Result<Vec<Vec<u32>>> {
    let base = "Natalia sold clips to 48 of her friends in April, and then she sold half as many \
                clips in May. How many clips did Natalia sell altogether in April and May?";
    let words: Vec<&str> = base.split(' ').collect();
    (0..8)
        .map(|i| {
            let n = (8 + 3 * i).min(words.len());
            tok.encode(&format!("Question {i}: {}", words[..n].join(" ")), false)
        })
        .collect()
}

fn bench(policy: &Policy, tok: &Tokenizer, params: &mut SamplingParams) -> Result<()> {
    params.max_new_tokens = 128;
    params.ignore_eos = true;
    params.stop.clear();
    let prompts = bench_prompts(tok)?;
    let start = Instant::now();
    let completions = generate(policy, tok, &prompts, 8, params, None)?;
    let secs = start.elapsed().as_secs_f64();
    let tokens: usize = completions.iter().map(|c| c.token_ids.len()).sum();
    println!(
        "bench: {} prompts × 8 samples × {} new tokens: {tokens} tokens in {secs:.3} s = {:.1} tok/s",
        prompts.len(),
        params.max_new_tokens,
        tokens as f64 / secs.max(1e-9)
    );
    Ok(())
}
