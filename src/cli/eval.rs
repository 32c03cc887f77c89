//! `grpo eval`: score models on math benchmarks (pass@k, maj@k), resumable, with side-by-side
//! comparisons.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::{json, Value};

use crate::cli::args::{bounded_rows, generation_config, ModelArgs, SamplingArgs};
use crate::data::benchmarks::{benchmark_set, BenchmarkSpec};
use crate::data::hub::{load_hub_split, HubSplit};
use crate::data::prompt::PromptFormat;
use crate::data::prompt::PromptTemplate;
use crate::eval::store::Store;
use crate::eval::{
    self, fewshot, report, run_benchmark, BenchmarkResult, EvalSet, EvalSettings, Progress,
    SampleRecord, Solver,
};
use crate::sampler::budget::GenShape;
use crate::verifier::extract::ExtractPolicy;

/// `grpo eval --help` text: what is measured, where results go, examples.
pub const LONG_ABOUT: &str = "\
Score one or more models on math benchmarks: n completions per problem, each graded by the
same verifier as the accuracy reward (last \\boxed{} answer, mathematical equivalence).

Reports pass@1 (mean over samples, with a 95% CI: Wilson for n = 1, normal over problems
otherwise), unbiased pass@k and maj@k (majority vote over the first k extracted answers,
equivalent answers such as \\frac12 and 0.5 voting together) for each --k, mean completion
length in tokens, the fraction of completions with no extractable answer, and per-subject /
per-level scores where the data has them. `paper` stands for aime24, math500, amc23,
minerva_math and olympiadbench; with several benchmarks their average is shown too.

Sampling: greedy when -n 1 and no --temperature; otherwise --temperature, else the model's
generation_config.json, else 0.6 (top-p 0.95). Problems are generated --batch-size at a time
with a seed derived from --seed and the batch, so results are reproducible.

Memory: before a batch is sampled its completions (--batch-size problems × -n × --max-new-tokens)
and per-row KV cache and logits are estimated against the memory available (MemAvailable, a
cgroup limit, GRPO_MAX_MEMORY); a batch that cannot fit is refused naming -n, --max-new-tokens
and --batch-size, and one that fits but not all at once runs in row batches (same results).

--out DIR writes DIR/summary.json (settings and, per benchmark, num_problems, n, pass@1,
pass@k, maj@k, ci, mean_length, no_answer_fraction, truncated_fraction, by_subject, by_level),
DIR/samples.jsonl (one line per completion: benchmark, problem_index, id, sample_index,
prompt, completion, extracted, gold, correct, num_tokens, finish_reason) and DIR/run.json.
Re-running with the same --out resumes: finished problems are read back, not regenerated, and
the summary equals an uninterrupted run's. With several --model, each gets DIR/<model>/.

--oracle answers every problem with its reference solution (or \\boxed{answer}) instead of a
model: a check that prompts, answer extraction and verification agree (expect 100%).

Examples:
  grpo eval --model Qwen/Qwen2.5-Math-1.5B --benchmark paper --out runs/eval-base
  grpo eval -m runs/lambda/final -b math500 -n 8 --k 1,4,8 --temperature 0.6 --out runs/eval-l
  grpo eval -m Qwen/Qwen2.5-Math-1.5B -m runs/lambda/final -b gsm8k --limit 200
  grpo eval -m runs/arith/final -b arith --prompt-template plain --max-new-tokens 64
  grpo eval -m tests/fixtures/tiny-qwen2 --data my.jsonl --question-field q --answer-field a
  grpo eval -m Qwen/Qwen2.5-0.5B-Instruct -b gsm8k --few-shot 4 --limit 100
  grpo eval -m Qwen/Qwen2.5-0.5B-Instruct --dataset openai/gsm8k --dataset-config main --limit 100
  grpo eval -m runs/lambda/final --dataset HuggingFaceH4/MATH-500 --question-field problem
  grpo eval --oracle -b paper,gsm8k
  grpo eval --compare runs/eval-base runs/eval-l";

/// Score models on math benchmarks (pass@k, maj@k; resumable; comparisons).
#[derive(Debug, Clone, Args)]
#[command(long_about = LONG_ABOUT)]
pub struct EvalArgs {
    /// Local Hugging Face directory or hub id (repeatable: several models are compared).
    #[arg(long, short = 'm', value_name = "DIR|HUB_ID")]
    pub model: Vec<String>,
    #[command(flatten)]
    pub load: ModelArgs,
    #[command(flatten)]
    pub sampling: SamplingArgs,
    /// Benchmark name or comma list (repeatable); `paper` = the paper's five.
    #[arg(long, short = 'b', value_name = "NAME")]
    pub benchmark: Vec<String>,
    /// A local JSONL problem file instead of (or besides) the registered benchmarks.
    #[arg(long, value_name = "FILE.jsonl")]
    pub data: Option<PathBuf>,
    /// A data set on the Hugging Face Hub (`openai/gsm8k`, `HuggingFaceH4/MATH-500`): its own
    /// Parquet / JSONL files for --dataset-config and --split, fetched into the hub cache.
    #[arg(long, value_name = "HUB_ID")]
    pub dataset: Option<String>,
    /// Config of --dataset (`main` of openai/gsm8k) [default: its only or `default` config].
    #[arg(long, value_name = "NAME", requires = "dataset")]
    pub dataset_config: Option<String>,
    /// Split of --dataset.
    #[arg(
        long,
        value_name = "NAME",
        default_value = "test",
        requires = "dataset"
    )]
    pub split: String,
    /// Question field of --data / --dataset rows.
    #[arg(long, default_value = "question")]
    pub question_field: String,
    /// Gold-answer field of --data / --dataset rows (for --dataset, a worked solution is cut
    /// to the answer after its `####` line or in its last \boxed{}).
    #[arg(long, default_value = "answer")]
    pub answer_field: String,
    /// Completions per problem.
    #[arg(short = 'n', long = "num-samples", default_value_t = 1)]
    pub n: usize,
    /// The k of pass@k and maj@k, comma-separated [default: 1, and n when n > 1].
    #[arg(long, value_delimiter = ',', value_name = "K,K")]
    pub k: Vec<usize>,
    /// Only the first N problems of each benchmark.
    #[arg(long, value_name = "N")]
    pub limit: Option<usize>,
    /// Problems per generation batch (sampled runs depend on it; greedy ones do not).
    #[arg(long, default_value_t = 64)]
    pub batch_size: usize,
    /// `math` (question + "reason step by step … \boxed{}"), `qwen_math` (that instruction as
    /// the system turn), `qwen_boxed`, `plain`, or a literal template with {question}.
    #[arg(long, default_value = "math", value_name = "NAME|TEMPLATE")]
    pub prompt_template: String,
    /// Keep at most this many trailing prompt tokens, 0 = no limit.
    #[arg(long, default_value_t = 0)]
    pub max_prompt_length: usize,
    /// K solved examples from the benchmark's train split before each question (skipped, with
    /// a note, for benchmarks without one).
    #[arg(long, value_name = "K")]
    pub few_shot: Option<usize>,
    /// Output directory (summary.json, samples.jsonl); re-running resumes.
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Answer with the reference solutions instead of a model (pipeline check).
    #[arg(long, conflicts_with = "model")]
    pub oracle: bool,
    /// Print result directories side by side (their summary.json) and exit.
    #[arg(long, num_args = 1.., value_name = "DIR", conflicts_with_all = ["model", "oracle"])]
    pub compare: Vec<PathBuf>,
}

pub fn run(args: &EvalArgs) -> Result<()> {
    if !args.compare.is_empty() {
        return compare(&args.compare);
    }
    let (sets, dataset_commit) = eval_sets(args)?;
    if !args.oracle && args.model.is_empty() {
        bail!("give --model DIR|HUB_ID (repeatable), --oracle, or --compare DIR DIR");
    }
    let labels = model_labels(args);
    let mut summaries: Vec<(String, Value)> = Vec::new();
    for (i, label) in labels.iter().enumerate() {
        let out = args.out.as_ref().map(|dir| {
            if labels.len() > 1 {
                dir.join(label)
            } else {
                dir.clone()
            }
        });
        let summary = if args.oracle {
            eval_one(args, None, &sets, &dataset_commit, out.as_deref())?
        } else {
            eval_one(
                args,
                Some(&args.model[i]),
                &sets,
                &dataset_commit,
                out.as_deref(),
            )
            .with_context(|| format!("model {}", args.model[i]))?
        };
        summaries.push((label.clone(), summary));
    }
    if summaries.len() > 1 {
        println!();
        print!("{}", report::comparison_table(&summaries));
    }
    Ok(())
}

/// The problem sets of --benchmark, --data and --dataset, in order, and the commit --dataset
/// resolved to.
fn eval_sets(args: &EvalArgs) -> Result<(Vec<EvalSet>, Option<String>)> {
    let fields_given = args.question_field != "question" || args.answer_field != "answer";
    if fields_given && args.data.is_none() && args.dataset.is_none() {
        bail!("--question-field / --answer-field apply to --data or --dataset rows: give one");
    }
    let mut sets = Vec::new();
    let mut commit = None;
    for spec in benchmark_specs(args)? {
        sets.push(EvalSet::from_spec(&spec)?);
    }
    if let Some(name) = &args.dataset {
        let want = HubSplit {
            name: name.clone(),
            config: args.dataset_config.clone(),
            split: args.split.clone(),
        };
        let rows = load_hub_split(&want, None, &args.question_field, &args.answer_field)
            .with_context(|| format!("--dataset {name}"))?;
        let short = name.rsplit('/').next().unwrap_or(name);
        let label = format!("{short}-{}", args.split);
        if sets.iter().any(|s: &EvalSet| s.name == label) {
            bail!("two benchmarks are named `{label}`: samples.jsonl keys rows by benchmark name");
        }
        let extraction = ExtractPolicy::by_name("math").context("the `math` extraction policy")?;
        sets.push(EvalSet::new(&label, rows.examples, extraction));
        commit = Some(rows.commit);
    }
    if sets.is_empty() {
        bail!(
            "nothing to evaluate: give --benchmark NAME (e.g. `paper`, `gsm8k`), --data FILE or \
             --dataset HUB_ID"
        );
    }
    Ok((sets, commit))
}

/// The benchmarks named by --benchmark and --data, in order.
fn benchmark_specs(args: &EvalArgs) -> Result<Vec<BenchmarkSpec>> {
    let mut specs = if args.benchmark.is_empty() {
        Vec::new()
    } else {
        benchmark_set(&args.benchmark.join(","))?
    };
    if let Some(path) = &args.data {
        let stem = path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| "data".into());
        let abs =
            std::path::absolute(path).with_context(|| format!("--data {}", path.display()))?;
        specs.push(BenchmarkSpec::custom(
            &stem,
            abs,
            &args.question_field,
            &args.answer_field,
        ));
    }
    for (i, s) in specs.iter().enumerate() {
        if specs[..i].iter().any(|o| o.name == s.name) {
            bail!(
                "two benchmarks are named `{}` (rename the --data file): samples.jsonl keys rows \
                 by benchmark name",
                s.name
            );
        }
    }
    Ok(specs)
}

/// Directory-safe, distinct names for the models (`oracle` for --oracle).
fn model_labels(args: &EvalArgs) -> Vec<String> {
    if args.oracle {
        return vec!["oracle".into()];
    }
    // The last path component when that tells the models apart, else the whole path.
    let last = |m: &str| {
        m.trim_end_matches('/')
            .rsplit('/')
            .next()
            .unwrap_or_default()
            .to_string()
    };
    let mut lasts: Vec<String> = args.model.iter().map(|m| last(m)).collect();
    lasts.sort();
    lasts.dedup();
    let short = lasts.len() == args.model.len();
    let mut out: Vec<String> = Vec::new();
    for m in &args.model {
        let name = if short { last(m) } else { m.clone() };
        let trimmed = name.trim_start_matches("./").trim_end_matches('/');
        let base: String = trimmed
            .replace('/', "--")
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || "-_.".contains(c) {
                    c
                } else {
                    '-'
                }
            })
            .collect::<String>()
            .trim_start_matches(['.', '-'])
            .to_string();
        let base = if base.is_empty() {
            "model".into()
        } else {
            base
        };
        let mut label = base.clone();
        let mut i = 2;
        while out.contains(&label) {
            label = format!("{base}-{i}");
            i += 1;
        }
        out.push(label);
    }
    out
}

fn prompt_format(args: &EvalArgs) -> Result<PromptFormat> {
    let mut format = match args.prompt_template.as_str() {
        "math" => eval::math_prompt(),
        t if t.contains("{question}") => PromptFormat {
            system: None,
            user_template: t.to_string(),
            use_chat_template: true,
            max_prompt_length: 0,
        },
        name => {
            let t = PromptTemplate::by_name(name).with_context(|| {
                "--prompt-template: expected `math`, a template name or a text with {question}"
            })?;
            PromptFormat {
                system: t.system,
                user_template: t.user,
                use_chat_template: true,
                max_prompt_length: 0,
            }
        }
    };
    if let Some(system) = &args.sampling.system {
        format.system = Some(system.clone());
    }
    format.use_chat_template = !args.sampling.no_chat_template;
    format.max_prompt_length = args.max_prompt_length;
    Ok(format)
}

/// Settings from the command line, then the model's generation_config.json.
fn settings(args: &EvalArgs, gen: &Value) -> Result<EvalSettings> {
    let a = &args.sampling;
    let sampling_default = args.n > 1;
    let temperature = match a.temperature {
        Some(t) => t,
        None if !sampling_default => 0.0,
        None if gen.get("do_sample").and_then(Value::as_bool) == Some(false) => 0.6,
        None => gen
            .get("temperature")
            .and_then(Value::as_f64)
            .unwrap_or(0.6),
    };
    let sampling = temperature > 0.0;
    let top_p = a.top_p.unwrap_or(if sampling {
        gen.get("top_p").and_then(Value::as_f64).unwrap_or(0.95)
    } else {
        1.0
    });
    let top_k = a.top_k.unwrap_or(if sampling {
        gen.get("top_k").and_then(Value::as_u64).unwrap_or(0) as usize
    } else {
        0
    });
    let ks = if args.k.is_empty() {
        if args.n > 1 {
            vec![1, args.n]
        } else {
            vec![1]
        }
    } else {
        args.k.clone()
    };
    let s = EvalSettings {
        n: args.n,
        ks,
        temperature,
        top_p,
        top_k,
        max_new_tokens: a.max_new_tokens.unwrap_or(2048),
        seed: a.seed,
        limit: args.limit,
        prompt: prompt_format(args)?,
        batch_size: args.batch_size,
        max_batch_rows: a.max_batch_rows,
        stop: a.stop.clone(),
        ..EvalSettings::default()
    };
    s.validate().context("eval settings")?;
    if s.n > 1 && s.temperature == 0.0 {
        tracing::warn!(
            "greedy decoding with n = {}: all samples are identical",
            s.n
        );
    }
    Ok(s)
}

/// What a run's samples depend on; a resume must match it.
fn identity(args: &EvalArgs, model: Option<&str>, s: &EvalSettings) -> Value {
    json!({
        "model": model.unwrap_or("oracle"),
        "revision": args.load.revision,
        "n": s.n,
        "temperature": s.temperature,
        "top_p": s.top_p,
        "top_k": s.top_k,
        "max_new_tokens": s.max_new_tokens,
        "seed": s.seed,
        "batch_size": s.batch_size,
        "system": s.prompt.system,
        "user_template": s.prompt.user_template,
        "chat_template": s.prompt.use_chat_template,
        "max_prompt_length": s.prompt.max_prompt_length,
        "few_shot": args.few_shot,
        "stop": s.stop,
        "dtype": args.load.dtype,
    })
}

/// Evaluates one model (or the oracle) on every benchmark; returns its summary.json value.
fn eval_one(
    args: &EvalArgs,
    model: Option<&str>,
    sets: &[EvalSet],
    dataset_commit: &Option<String>,
    out: Option<&Path>,
) -> Result<Value> {
    let (loaded, model_commit) = match model {
        Some(m) => {
            let (source, tokenizer, policy) = args.load.load_source(m)?;
            (Some((source.dir, tokenizer, policy)), source.commit)
        }
        None => (None, None),
    };
    let gen = generation_config(loaded.as_ref().map(|l| l.0.as_path()))?;
    let settings = settings(args, &gen)?;
    let solver = match &loaded {
        Some((_, tokenizer, policy)) => Solver::Model { policy, tokenizer },
        None => Solver::Oracle,
    };
    let mut ident = identity(args, model, &settings);
    // Hub inputs: what they resolved to belongs to the run's identity (run.json).
    if let Some(c) = &model_commit {
        ident["model_commit"] = json!(c);
    }
    if let Some(c) = dataset_commit {
        ident["dataset"] = json!({
            "name": args.dataset,
            "config": args.dataset_config,
            "split": args.split,
            "commit": c,
        });
    }
    let mut store = match out {
        Some(dir) => Some(Store::open(dir, &ident)?),
        None => None,
    };

    let mut results: Vec<BenchmarkResult> = Vec::new();
    for set in sets {
        let mut set = set.clone();
        if let Some(k) = args.few_shot.filter(|&k| k > 0) {
            match fewshot::examples(&set.name, k)? {
                Some(shots) => set.few_shot = shots,
                None => eprintln!(
                    "note: {} has no train split to draw few-shot examples from; evaluating \
                     it zero-shot",
                    set.name
                ),
            }
        }
        // A completion gets only the context left after its prompt: the default 2048 new
        // tokens are capped for small models, with a note.
        let fitted = match &loaded {
            Some((_, tokenizer, policy)) => {
                let ctx = policy.config.max_position_embeddings;
                let (mut fitted, note, longest) =
                    crate::eval::context::fit_to_context(&settings, &set, tokenizer, ctx)?;
                if let Some(note) = note {
                    eprintln!("note: {note}");
                }
                // One generate call holds a batch of problems' completions: sized before it
                // runs, in row batches when they do not fit at once.
                let shape = GenShape {
                    prompts: fitted.batch_size.min(set.num_problems(fitted.limit)).max(1),
                    samples: fitted.n,
                    longest_prompt: longest,
                    max_new_tokens: fitted.max_new_tokens,
                };
                let extra = if shape.prompts > 1 {
                    " or --batch-size"
                } else {
                    ""
                };
                fitted.max_batch_rows =
                    bounded_rows(&policy.config, &shape, fitted.max_batch_rows, extra)?;
                fitted
            }
            None => settings.clone(),
        };
        let settings = fitted;
        let done = store
            .as_mut()
            .map(|s| s.take(&set, settings.n))
            .transpose()?
            .unwrap_or_default();
        let resumed = done.len() / settings.n;
        let bar = progress_bar(&set.name);
        let start = Instant::now();
        let mut tokens = 0usize;
        let mut cb = |p: &Progress| {
            if bar.length() != Some(p.samples_total as u64) {
                bar.set_length(p.samples_total as u64);
                bar.set_position(p.samples_done as u64);
                bar.reset_eta();
            }
            bar.set_position(p.samples_done as u64);
            tokens = p.tokens;
            let secs = start.elapsed().as_secs_f64().max(1e-9);
            bar.set_message(format!("{:.0} tok/s", p.tokens as f64 / secs));
        };
        let mut sink = |rows: &[SampleRecord]| match store.as_mut() {
            Some(s) => s.append(rows),
            None => Ok(()),
        };
        let result = run_benchmark(solver, &set, &settings, done, &mut sink, Some(&mut cb))?;
        bar.finish_and_clear();
        let secs = start.elapsed().as_secs_f64();
        let fresh = result.num_problems.saturating_sub(resumed);
        eprintln!(
            "{}: {} problems ({} resumed) × {} samples, {} new tokens in {:.2} s: {:.2} problems/s, \
             {:.1} tok/s",
            set.name,
            result.num_problems,
            resumed.min(result.num_problems),
            settings.n,
            tokens,
            secs,
            fresh as f64 / secs.max(1e-9),
            tokens as f64 / secs.max(1e-9)
        );
        results.push(result);
    }

    let mut summary = report::summary_json(model, args.few_shot, &settings, &results);
    if let Some(c) = &model_commit {
        summary["model_commit"] = json!(c);
    }
    if let Some(d) = ident.get("dataset") {
        summary["dataset"] = d.clone();
    }
    if let Some(dir) = out {
        let path = dir.join("summary.json");
        let text = serde_json::to_string_pretty(&summary)? + "\n";
        fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
    }
    println!("model: {}", model.unwrap_or("oracle (reference solutions)"));
    print!("{}", report::results_table(&results));
    Ok(summary)
}

fn progress_bar(name: &str) -> ProgressBar {
    let bar = ProgressBar::new(0);
    if let Ok(style) = ProgressStyle::with_template(
        "{prefix} [{elapsed_precise} < {eta_precise}] {bar:30} {pos}/{len} samples  {msg}",
    ) {
        bar.set_style(style);
    }
    bar.set_prefix(name.to_string());
    bar
}

/// `--compare`: the side-by-side table of result directories.
fn compare(dirs: &[PathBuf]) -> Result<()> {
    print!(
        "{}",
        report::comparison_table(&report::load_summaries(dirs)?)
    );
    Ok(())
}
