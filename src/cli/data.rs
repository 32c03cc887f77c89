//! `grpo data …`: build the built-in task's splits, train the tiny model's tokenizer, and look
//! at the shipped benchmarks.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Args, Subcommand};

use crate::data::benchmarks::{benchmark, data_root, BENCHMARK_NAMES};
use crate::data::dataset::{load_benchmark, load_jsonl};
use crate::data::task::{self, SplitSizes, Task};
use crate::data::tokenizer;

/// Build task data, train the tiny tokenizer, inspect benchmarks.
#[derive(Debug, Args)]
pub struct DataArgs {
    #[command(subcommand)]
    pub command: DataCommand,
}

#[derive(Debug, Subcommand)]
pub enum DataCommand {
    /// Generate train/validation/test JSONL splits of a built-in task.
    BuildTask(BuildTaskArgs),
    /// Train the byte-level BPE tokenizer of the tiny model on a task's problems.
    Tokenizer(TokenizerArgs),
    /// List the registered benchmarks with their files and row counts.
    List,
    /// Print the first rows of a benchmark with their resolved gold answers.
    Show(ShowArgs),
}

#[derive(Debug, Args)]
pub struct BuildTaskArgs {
    /// Task family (`arith` or `arith-chain`).
    #[arg(long, default_value = "arith")]
    pub task: String,
    /// Seed of the ChaCha8 generator; the same seed gives byte-identical files.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Output folder for train.jsonl, validation.jsonl and test.jsonl [default: data/TASK].
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Training problems [default: the task's committed size, 10000 for arith, 4000 for
    /// arith-chain].
    #[arg(long)]
    pub train: Option<usize>,
    #[arg(long, default_value_t = task::DEFAULT_VALIDATION)]
    pub validation: usize,
    #[arg(long, default_value_t = task::DEFAULT_TEST)]
    pub test: usize,
}

#[derive(Debug, Args)]
pub struct TokenizerArgs {
    /// JSONL file with `question` and `solution` fields.
    #[arg(long, default_value = "data/arith/train.jsonl")]
    pub input: PathBuf,
    /// Total vocabulary, including 3 special and 256 byte tokens.
    #[arg(long, default_value_t = 512)]
    pub vocab_size: usize,
    /// Output folder (tokenizer.json, tokenizer_config.json, generation_config.json).
    #[arg(long, default_value = "models/tiny-math")]
    pub out: PathBuf,
    /// `model_max_length` written to tokenizer_config.json.
    #[arg(long, default_value_t = 512)]
    pub model_max_length: usize,
}

#[derive(Debug, Args)]
pub struct ShowArgs {
    /// Benchmark name (see `grpo data list`).
    pub benchmark: String,
    /// How many rows to print.
    #[arg(short = 'n', long, default_value_t = 3)]
    pub rows: usize,
}

pub fn run(args: &DataArgs) -> Result<()> {
    match &args.command {
        DataCommand::BuildTask(a) => build_task(a),
        DataCommand::Tokenizer(a) => train_tokenizer(a),
        DataCommand::List => list(),
        DataCommand::Show(a) => show(a),
    }
}

fn build_task(a: &BuildTaskArgs) -> Result<()> {
    let task = Task::from_name(&a.task)?;
    let sizes = SplitSizes {
        train: a.train.unwrap_or(task.default_sizes().train),
        validation: a.validation,
        test: a.test,
    };
    let out = a
        .out
        .clone()
        .unwrap_or_else(|| PathBuf::from("data").join(task.name()));
    let splits = task::build_splits(task, a.seed, sizes)?;
    task::write_splits(&splits, &out)?;
    for (name, rows) in splits.named() {
        let path = out.join(format!("{name}.jsonl"));
        let bytes = std::fs::metadata(&path)
            .with_context(|| format!("reading {}", path.display()))?
            .len();
        println!("{}: {} rows, {bytes} bytes", path.display(), rows.len());
    }
    Ok(())
}

fn train_tokenizer(a: &TokenizerArgs) -> Result<()> {
    let examples = load_jsonl(&a.input, "question", "answer")?;
    let rows: Vec<(String, String)> = examples
        .iter()
        .map(|e| {
            let solution = e.solution.clone().with_context(|| {
                format!(
                    "{}: row `{}` has no `solution` (the tokenizer trains on worked solutions)",
                    a.input.display(),
                    e.id
                )
            })?;
            Ok((e.question.clone(), solution))
        })
        .collect::<Result<_>>()?;
    let texts = tokenizer::training_texts(&rows);
    let tok = tokenizer::train_tokenizer(texts.iter(), a.vocab_size)?;
    tokenizer::save_hf(&tok, &a.out, a.model_max_length)?;
    let q = tokenizer::mean_tokens(&tok, rows.iter().map(|r| r.0.as_str()))?;
    let s = tokenizer::mean_tokens(&tok, rows.iter().map(|r| r.1.as_str()))?;
    println!(
        "{}: vocab {} tokens; mean tokens per question {q:.1}, per solution {s:.1}",
        a.out.join("tokenizer.json").display(),
        tok.get_vocab_size(true)
    );
    Ok(())
}

fn list() -> Result<()> {
    println!("data root: {}", data_root().display());
    for name in BENCHMARK_NAMES {
        let spec = benchmark(name)?;
        let rows = load_benchmark(&spec).map(|r| r.len().to_string());
        println!(
            "{name:<14} {:>6} rows  {:<8} {}",
            rows.unwrap_or_else(|e| format!("error: {e:#}")),
            spec.extraction,
            spec.path().display()
        );
    }
    Ok(())
}

fn show(a: &ShowArgs) -> Result<()> {
    let spec = benchmark(&a.benchmark)?;
    for ex in load_benchmark(&spec)?.iter().take(a.rows) {
        println!(
            "--- {} (level {:?}, subject {:?})",
            ex.id, ex.level, ex.subject
        );
        println!("{}", ex.question);
        println!("gold: {}", ex.answer);
    }
    Ok(())
}
