//! `grpo eval`: score models on math benchmarks (pass@k, maj@k), resumable, with side-by-side
//! comparisons.

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use candle_core::DType;
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::{json, Map, Value};

use crate::data::benchmarks::{benchmark_set, BenchmarkSpec};
use crate::data::prompt::PromptFormat;
use crate::data::prompt::PromptTemplate;
use crate::eval::{
    self, average, fewshot, run_benchmark, BenchmarkResult, EvalSet, EvalSettings, Progress,
    SampleRecord, Solver,
};
use crate::model::checkpoint::dtype_from_name;
use crate::model::{resolve_model_dir, Policy, Tokenizer};

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
  grpo eval --oracle -b paper,gsm8k
  grpo eval --compare runs/eval-base runs/eval-l";

/// Score models on math benchmarks (pass@k, maj@k; resumable; comparisons).
#[derive(Debug, Clone, Args)]
#[command(long_about = LONG_ABOUT)]
pub struct EvalArgs {
    /// Local Hugging Face directory or hub id (repeatable: several models are compared).
    #[arg(long, short = 'm', value_name = "DIR|HUB_ID")]
    pub model: Vec<String>,
    /// Hub revision (hub ids only).
    #[arg(long)]
    pub revision: Option<String>,
    /// Benchmark name or comma list (repeatable); `paper` = the paper's five.
    #[arg(long, short = 'b', value_name = "NAME")]
    pub benchmark: Vec<String>,
    /// A local JSONL problem file instead of (or besides) the registered benchmarks.
    #[arg(long, value_name = "FILE.jsonl")]
    pub data: Option<PathBuf>,
    /// Question field of --data rows.
    #[arg(long, default_value = "question", requires = "data")]
    pub question_field: String,
    /// Gold-answer field of --data rows.
    #[arg(long, default_value = "answer", requires = "data")]
    pub answer_field: String,
    /// Completions per problem.
    #[arg(short = 'n', long = "num-samples", default_value_t = 1)]
    pub n: usize,
    /// The k of pass@k and maj@k, comma-separated [default: 1, and n when n > 1].
    #[arg(long, value_delimiter = ',', value_name = "K,K")]
    pub k: Vec<usize>,
    /// Sampling temperature, 0 = greedy [default: 0 for -n 1, else generation_config or 0.6].
    #[arg(long, short = 't')]
    pub temperature: Option<f64>,
    /// Nucleus mass, 1 = off [default: generation_config or 0.95 when sampling].
    #[arg(long)]
    pub top_p: Option<f64>,
    /// Keep the k most likely tokens, 0 = off [default: generation_config when sampling].
    #[arg(long)]
    pub top_k: Option<usize>,
    /// Most new tokens per completion.
    #[arg(long, default_value_t = 2048)]
    pub max_new_tokens: usize,
    /// Base seed of the sampler (each batch derives its own).
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Only the first N problems of each benchmark.
    #[arg(long, value_name = "N")]
    pub limit: Option<usize>,
    /// Problems per generation batch (sampled runs depend on it; greedy ones do not).
    #[arg(long, default_value_t = 64)]
    pub batch_size: usize,
    /// Most rows (problems × samples) per forward pass, 0 = a whole batch (memory bound only).
    #[arg(long, default_value_t = 0)]
    pub max_batch_rows: usize,
    /// System message (overrides the template's).
    #[arg(long, value_name = "TEXT")]
    pub system: Option<String>,
    /// `math` (question + "reason step by step … \boxed{}"), `qwen_math` (that instruction as
    /// the system turn), `qwen_boxed`, `plain`, or a literal template with {question}.
    #[arg(long, default_value = "math", value_name = "NAME|TEMPLATE")]
    pub prompt_template: String,
    /// Tokenize the rendered prompt as it is, without the model's chat template.
    #[arg(long)]
    pub no_chat_template: bool,
    /// Keep at most this many trailing prompt tokens, 0 = no limit.
    #[arg(long, default_value_t = 0)]
    pub max_prompt_length: usize,
    /// K solved examples from the benchmark's train split before each question (skipped, with
    /// a note, for benchmarks without one).
    #[arg(long, value_name = "K")]
    pub few_shot: Option<usize>,
    /// End completions before this string (repeatable).
    #[arg(long, value_name = "TEXT")]
    pub stop: Vec<String>,
    /// Output directory (summary.json, samples.jsonl); re-running resumes.
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Answer with the reference solutions instead of a model (pipeline check).
    #[arg(long, conflicts_with = "model")]
    pub oracle: bool,
    /// Print result directories side by side (their summary.json) and exit.
    #[arg(long, num_args = 1.., value_name = "DIR", conflicts_with_all = ["model", "oracle"])]
    pub compare: Vec<PathBuf>,
    /// Compute dtype: f32, bf16 or f16.
    #[arg(long, default_value = "f32")]
    pub dtype: String,
    /// Device: cpu, cuda or cuda:N.
    #[arg(long, default_value = "cpu")]
    pub device: String,
}

pub fn run(args: &EvalArgs) -> Result<()> {
    if !args.compare.is_empty() {
        return compare(&args.compare);
    }
    let specs = benchmark_specs(args)?;
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
            eval_one(args, None, &specs, out.as_deref())?
        } else {
            eval_one(args, Some(&args.model[i]), &specs, out.as_deref())
                .with_context(|| format!("model {}", args.model[i]))?
        };
        summaries.push((label.clone(), summary));
    }
    if summaries.len() > 1 {
        println!();
        print_comparison(&summaries);
    }
    Ok(())
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
    if specs.is_empty() {
        bail!("nothing to evaluate: give --benchmark NAME (e.g. `paper`, `gsm8k`) or --data FILE");
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

/// generation_config.json of a model directory (`Null` when absent).
fn generation_config(dir: Option<&Path>) -> Result<Value> {
    let Some(path) = dir.map(|d| d.join("generation_config.json")) else {
        return Ok(Value::Null);
    };
    if !path.is_file() {
        return Ok(Value::Null);
    }
    let text = fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))
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
    if let Some(system) = &args.system {
        format.system = Some(system.clone());
    }
    format.use_chat_template = !args.no_chat_template;
    format.max_prompt_length = args.max_prompt_length;
    Ok(format)
}

/// Settings from the command line, then the model's generation_config.json.
fn settings(args: &EvalArgs, gen: &Value) -> Result<EvalSettings> {
    let sampling_default = args.n > 1;
    let temperature = match args.temperature {
        Some(t) => t,
        None if !sampling_default => 0.0,
        None if gen.get("do_sample").and_then(Value::as_bool) == Some(false) => 0.6,
        None => gen
            .get("temperature")
            .and_then(Value::as_f64)
            .unwrap_or(0.6),
    };
    let sampling = temperature > 0.0;
    let top_p = args.top_p.unwrap_or(if sampling {
        gen.get("top_p").and_then(Value::as_f64).unwrap_or(0.95)
    } else {
        1.0
    });
    let top_k = args.top_k.unwrap_or(if sampling {
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
        max_new_tokens: args.max_new_tokens,
        seed: args.seed,
        limit: args.limit,
        prompt: prompt_format(args)?,
        batch_size: args.batch_size,
        max_batch_rows: args.max_batch_rows,
        stop: args.stop.clone(),
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
        "revision": args.revision,
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
        "dtype": args.dtype,
    })
}

/// Evaluates one model (or the oracle) on every benchmark; returns its summary.json value.
fn eval_one(
    args: &EvalArgs,
    model: Option<&str>,
    specs: &[BenchmarkSpec],
    out: Option<&Path>,
) -> Result<Value> {
    let loaded = match model {
        Some(m) => {
            let dir = resolve_model_dir(m, args.revision.as_deref())?;
            let dtype = parse_dtype(&args.dtype)?;
            let device = crate::trainer::run::parse_device(&args.device).context("--device")?;
            let tokenizer = Tokenizer::load(&dir)?;
            let policy = Policy::load(&dir, dtype, &device)
                .with_context(|| format!("loading the model from {}", dir.display()))?;
            Some((dir, tokenizer, policy))
        }
        None => None,
    };
    let gen = generation_config(loaded.as_ref().map(|l| l.0.as_path()))?;
    let settings = settings(args, &gen)?;
    let solver = match &loaded {
        Some((_, tokenizer, policy)) => Solver::Model { policy, tokenizer },
        None => Solver::Oracle,
    };
    let ident = identity(args, model, &settings);
    let mut store = match out {
        Some(dir) => Some(Store::open(dir, &ident)?),
        None => None,
    };

    let mut results: Vec<BenchmarkResult> = Vec::new();
    for spec in specs {
        let mut set = EvalSet::from_spec(spec)?;
        if let Some(k) = args.few_shot.filter(|&k| k > 0) {
            match fewshot::examples(&spec.name, k)? {
                Some(shots) => set.few_shot = shots,
                None => eprintln!(
                    "note: {} has no train split to draw few-shot examples from; evaluating \
                     it zero-shot",
                    spec.name
                ),
            }
        }
        if let Some((_, tokenizer, policy)) = &loaded {
            warn_long_prompts(&set, &settings, tokenizer, policy)?;
        }
        let done = store
            .as_mut()
            .map(|s| s.take(&set, settings.n))
            .transpose()?
            .unwrap_or_default();
        let resumed = done.len() / settings.n;
        let bar = progress_bar(&spec.name);
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
            spec.name,
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

    let summary = summary_json(model, args, &settings, &results);
    if let Some(dir) = out {
        let path = dir.join("summary.json");
        let text = serde_json::to_string_pretty(&summary)? + "\n";
        fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
    }
    println!("model: {}", model.unwrap_or("oracle (reference solutions)"));
    print_results(&results);
    Ok(summary)
}

fn parse_dtype(s: &str) -> Result<DType> {
    let name = match s {
        "f32" => "float32",
        "f16" => "float16",
        other => other,
    };
    match dtype_from_name(name) {
        Some(d) if d != DType::F64 => Ok(d),
        _ => bail!("--dtype: expected f32, bf16 or f16, got `{s}`"),
    }
}

/// Warns when prompts plus --max-new-tokens exceed the model's context.
fn warn_long_prompts(
    set: &EvalSet,
    s: &EvalSettings,
    tokenizer: &Tokenizer,
    policy: &Policy,
) -> Result<()> {
    let ctx = policy.config.max_position_embeddings;
    let mut over = 0;
    let num = set.num_problems(s.limit);
    for ex in &set.examples[..num] {
        if s.prompt.encode(tokenizer, &set.question(ex))?.len() + s.max_new_tokens > ctx {
            over += 1;
        }
    }
    if over > 0 {
        tracing::warn!(
            "{}: {over} of {num} prompts + {} new tokens exceed the model's {ctx}-token context",
            set.name,
            s.max_new_tokens
        );
    }
    Ok(())
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

fn summary_json(
    model: Option<&str>,
    args: &EvalArgs,
    s: &EvalSettings,
    results: &[BenchmarkResult],
) -> Value {
    let mut benchmarks = Map::new();
    for r in results {
        benchmarks.insert(r.benchmark.clone(), r.to_json());
    }
    let mut out = json!({
        "model": model.unwrap_or("oracle"),
        "settings": {
            "n": s.n,
            "ks": s.ks,
            "temperature": s.temperature,
            "top_p": s.top_p,
            "top_k": s.top_k,
            "max_new_tokens": s.max_new_tokens,
            "seed": s.seed,
            "limit": s.limit,
            "batch_size": s.batch_size,
            "system": s.prompt.system,
            "user_template": s.prompt.user_template,
            "chat_template": s.prompt.use_chat_template,
            "few_shot": args.few_shot,
        },
        "benchmarks": benchmarks,
    });
    if results.len() > 1 {
        out["average"] = average(results);
    }
    out
}

fn pct(v: f64) -> String {
    format!("{:.1}", 100.0 * v)
}

/// The per-benchmark table of one model (scores in %).
fn print_results(results: &[BenchmarkResult]) {
    let Some(first) = results.first() else {
        return;
    };
    let keys: Vec<String> = first.scores().into_iter().map(|(k, _)| k).collect();
    let mut header = vec!["benchmark".to_string(), "problems".into(), "n".into()];
    header.push(keys[0].clone());
    header.push("95% CI".into());
    header.extend(keys[1..].iter().cloned());
    header.extend(["mean len".into(), "no answer".into()]);
    let mut rows: Vec<Vec<String>> = Vec::new();
    for r in results {
        let scores = r.scores();
        let mut row = vec![
            r.benchmark.clone(),
            r.num_problems.to_string(),
            r.n.to_string(),
        ];
        row.push(pct(r.pass1));
        row.push(format!("[{}, {}]", pct(r.ci.lower), pct(r.ci.upper)));
        row.extend(scores[1..].iter().map(|(_, v)| pct(*v)));
        row.push(format!("{:.0}", r.mean_length));
        row.push(pct(r.no_answer_fraction));
        rows.push(row);
    }
    if results.len() > 1 {
        let avg = average(results);
        let mut row = vec![
            "average".to_string(),
            results
                .iter()
                .map(|r| r.num_problems)
                .sum::<usize>()
                .to_string(),
            String::new(),
        ];
        let get = |k: &str| {
            avg.get(k)
                .and_then(Value::as_f64)
                .map(pct)
                .unwrap_or_default()
        };
        row.push(get(&keys[0]));
        row.push(String::new());
        row.extend(keys[1..].iter().map(|k| get(k)));
        row.extend([String::new(), String::new()]);
        rows.push(row);
    }
    print_table(&header, &rows, 1);
    for r in results {
        for (what, b) in [("subject", &r.by_subject), ("level", &r.by_level)] {
            if b.is_empty() {
                continue;
            }
            let parts: Vec<String> = b
                .iter()
                .map(|(k, v)| format!("{k} {} ({})", pct(v.pass1), v.num_problems))
                .collect();
            println!("{} pass@1 by {what}: {}", r.benchmark, parts.join(", "));
        }
    }
}

/// Prints aligned columns; the first `left` are left-aligned (names), the rest right (numbers).
fn print_table(header: &[String], rows: &[Vec<String>], left: usize) {
    let cols = header.len();
    let width: Vec<usize> = (0..cols)
        .map(|c| {
            rows.iter()
                .filter_map(|r| r.get(c))
                .chain(std::iter::once(&header[c]))
                .map(|s| s.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let line = |cells: &[String]| -> String {
        cells
            .iter()
            .enumerate()
            .map(|(c, s)| {
                if c < left {
                    format!("{s:<w$}", w = width[c])
                } else {
                    format!("{s:>w$}", w = width[c])
                }
            })
            .collect::<Vec<_>>()
            .join("  ")
            .trim_end()
            .to_string()
    };
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let _ = writeln!(out, "{}", line(header));
    let _ = writeln!(
        out,
        "{}",
        width
            .iter()
            .map(|w| "-".repeat(*w))
            .collect::<Vec<_>>()
            .join("  ")
    );
    for r in rows {
        let _ = writeln!(out, "{}", line(r));
    }
}

/// `(benchmark, [(metric, value)])` rows of one summary.
type ScoreRows = Vec<(String, Vec<(String, f64)>)>;

/// Scores per benchmark (and `average`) from a summary.json value, in file order.
fn scores_of(summary: &Value) -> ScoreRows {
    let mut out = Vec::new();
    let score_keys = |obj: &Map<String, Value>| -> Vec<(String, f64)> {
        obj.iter()
            .filter(|(k, _)| k.starts_with("pass@") || k.starts_with("maj@"))
            .filter_map(|(k, v)| v.as_f64().map(|v| (k.clone(), v)))
            .collect()
    };
    if let Some(b) = summary.get("benchmarks").and_then(Value::as_object) {
        for (name, v) in b {
            if let Some(obj) = v.as_object() {
                out.push((name.clone(), score_keys(obj)));
            }
        }
    }
    if let Some(obj) = summary.get("average").and_then(Value::as_object) {
        out.push(("average".into(), score_keys(obj)));
    }
    out
}

/// Side-by-side table: one row per (benchmark, metric), one column per model, and B − A when
/// there are two.
fn print_comparison(summaries: &[(String, Value)]) {
    let per_model: Vec<ScoreRows> = summaries.iter().map(|(_, s)| scores_of(s)).collect();
    // Rows in first-seen order over all models.
    let mut order: Vec<(String, String)> = Vec::new();
    let mut values: BTreeMap<(String, String), Vec<Option<f64>>> = BTreeMap::new();
    for (m, model) in per_model.iter().enumerate() {
        for (bench, scores) in model {
            for (key, v) in scores {
                let id = (bench.clone(), key.clone());
                if !values.contains_key(&id) {
                    order.push(id.clone());
                }
                values
                    .entry(id)
                    .or_insert_with(|| vec![None; summaries.len()])[m] = Some(*v);
            }
        }
    }
    let mut header = vec!["benchmark".to_string(), "metric".into()];
    header.extend(summaries.iter().map(|(l, _)| l.clone()));
    let two = summaries.len() == 2;
    if two {
        header.push("Δ".into());
    }
    let rows: Vec<Vec<String>> = order
        .iter()
        .map(|id| {
            let v = &values[id];
            let mut row = vec![id.0.clone(), id.1.clone()];
            row.extend(v.iter().map(|x| x.map(pct).unwrap_or_else(|| "-".into())));
            if two {
                row.push(match (v[0], v[1]) {
                    (Some(a), Some(b)) => format!("{:+.1}", 100.0 * (b - a)),
                    _ => "-".into(),
                });
            }
            row
        })
        .collect();
    print_table(&header, &rows, 2);
}

/// `--compare`: each DIR's summary.json, or the per-model summaries one level down.
fn compare(dirs: &[PathBuf]) -> Result<()> {
    let mut summaries = Vec::new();
    for dir in dirs {
        let direct = dir.join("summary.json");
        let mut paths = Vec::new();
        if direct.is_file() {
            paths.push((dir.display().to_string(), direct));
        } else {
            let entries = fs::read_dir(dir)
                .with_context(|| format!("--compare: reading {}", dir.display()))?;
            let mut subs: Vec<PathBuf> = entries
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.join("summary.json").is_file())
                .collect();
            subs.sort();
            for s in subs {
                paths.push((s.display().to_string(), s.join("summary.json")));
            }
        }
        if paths.is_empty() {
            bail!("--compare: {} holds no summary.json", dir.display());
        }
        for (label, path) in paths {
            let text =
                fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
            let v: Value = serde_json::from_str(&text)
                .with_context(|| format!("parsing {}", path.display()))?;
            if v.get("benchmarks").and_then(Value::as_object).is_none() {
                bail!("{}: expected a `benchmarks` object", path.display());
            }
            summaries.push((label, v));
        }
    }
    print_comparison(&summaries);
    Ok(())
}

/// An output directory: run.json (the run's identity), samples.jsonl (appended per batch).
struct Store {
    samples: PathBuf,
    /// Saved rows per benchmark, not yet handed to a benchmark of this run.
    saved: BTreeMap<String, Vec<SampleRecord>>,
}

impl Store {
    /// Opens (or creates) `dir`, checks that a previous run used the same settings, and compacts
    /// samples.jsonl to whole problems (dropping a line cut off by an interruption).
    fn open(dir: &Path, ident: &Value) -> Result<Store> {
        fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let run = dir.join("run.json");
        if run.is_file() {
            let text =
                fs::read_to_string(&run).with_context(|| format!("reading {}", run.display()))?;
            let old: Value = serde_json::from_str(&text)
                .with_context(|| format!("parsing {}", run.display()))?;
            if &old != ident {
                let diff: Vec<String> = ident
                    .as_object()
                    .into_iter()
                    .flatten()
                    .filter(|(k, v)| old.get(k.as_str()) != Some(*v))
                    .map(|(k, v)| {
                        format!(
                            "{k}: was {}, now {v}",
                            old.get(k.as_str()).unwrap_or(&Value::Null)
                        )
                    })
                    .collect();
                bail!(
                    "{} was written with other settings ({}): use another --out or the same \
                     settings to resume",
                    dir.display(),
                    diff.join("; ")
                );
            }
        } else {
            fs::write(&run, serde_json::to_string_pretty(ident)? + "\n")
                .with_context(|| format!("writing {}", run.display()))?;
        }
        let samples = dir.join("samples.jsonl");
        let mut saved: BTreeMap<String, Vec<SampleRecord>> = BTreeMap::new();
        let mut cut = false;
        if samples.is_file() {
            let text = fs::read_to_string(&samples)
                .with_context(|| format!("reading {}", samples.display()))?;
            let lines: Vec<&str> = text.lines().collect();
            for (i, line) in lines.iter().enumerate() {
                if line.trim().is_empty() {
                    continue;
                }
                match serde_json::from_str::<SampleRecord>(line) {
                    Ok(r) => saved.entry(r.benchmark.clone()).or_default().push(r),
                    // The last line may be cut off by an interruption.
                    Err(_) if i + 1 == lines.len() && !text.ends_with('\n') => cut = true,
                    Err(e) => bail!("{}:{}: {e}", samples.display(), i + 1),
                }
            }
        }
        let store = Store { samples, saved };
        if cut {
            // Appending after a cut-off line would glue two records together.
            let rows: Vec<SampleRecord> = store.saved.values().flatten().cloned().collect();
            store.write_all(&rows)?;
        }
        Ok(store)
    }

    /// The saved, complete problems of `set`; rewrites samples.jsonl without partial problems.
    fn take(&mut self, set: &EvalSet, n: usize) -> Result<Vec<SampleRecord>> {
        let rows = self.saved.remove(&set.name).unwrap_or_default();
        let before = rows.len();
        let kept = eval::complete_problems(set, n, rows)?;
        if kept.len() != before || !self.samples.is_file() {
            self.rewrite(&set.name, &kept)?;
        }
        Ok(kept)
    }

    /// Rewrites samples.jsonl: other benchmarks' lines as they are, `name`'s replaced by `rows`.
    fn rewrite(&self, name: &str, rows: &[SampleRecord]) -> Result<()> {
        let mut text = String::new();
        if self.samples.is_file() {
            let old = fs::read_to_string(&self.samples)
                .with_context(|| format!("reading {}", self.samples.display()))?;
            for line in old.lines() {
                if let Ok(r) = serde_json::from_str::<SampleRecord>(line) {
                    if r.benchmark != name {
                        text.push_str(line);
                        text.push('\n');
                    }
                }
            }
        }
        for r in rows {
            text.push_str(&serde_json::to_string(r)?);
            text.push('\n');
        }
        self.write_all_text(text)
    }

    fn write_all(&self, rows: &[SampleRecord]) -> Result<()> {
        let mut text = String::new();
        for r in rows {
            text.push_str(&serde_json::to_string(r)?);
            text.push('\n');
        }
        self.write_all_text(text)
    }

    /// Replaces samples.jsonl atomically.
    fn write_all_text(&self, text: String) -> Result<()> {
        let tmp = self.samples.with_extension("jsonl.tmp");
        fs::write(&tmp, text).with_context(|| format!("writing {}", tmp.display()))?;
        fs::rename(&tmp, &self.samples)
            .with_context(|| format!("replacing {}", self.samples.display()))
    }

    fn append(&mut self, rows: &[SampleRecord]) -> Result<()> {
        let mut text = String::new();
        for r in rows {
            text.push_str(&serde_json::to_string(r)?);
            text.push('\n');
        }
        let mut f = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.samples)
            .with_context(|| format!("opening {}", self.samples.display()))?;
        f.write_all(text.as_bytes())
            .and_then(|_| f.flush())
            .with_context(|| format!("appending to {}", self.samples.display()))
    }
}
