//! The `grpo` command line: argument parsing and dispatch only; the work lives in the library.

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use grpo::cli;

/// RL fine-tuning of causal language models on problems with checkable answers
/// (GRPO and λ-GRPO, math first).
#[derive(Debug, Parser)]
#[command(name = "grpo", version, propagate_version = true)]
#[command(after_help = "Start with: grpo train --config configs/lambda.toml")]
struct Cli {
    /// Log level (error, warn, info, debug, trace); RUST_LOG takes precedence when set.
    #[arg(long, global = true, default_value = "info")]
    log_level: String,
    /// Worker threads for rayon and candle's CPU kernels (default: all cores).
    #[arg(long, global = true)]
    threads: Option<usize>,
    /// Load checkpoints whose weights hold NaN or infinite values (refused by default: one such
    /// value turns every output it reaches into NaN). Also `model.allow_non_finite` in a config.
    #[arg(long, global = true)]
    allow_non_finite: bool,
    #[command(subcommand)]
    command: Command,
}

// Parsed once per process: the size of the largest variant (`eval`'s flags) costs nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
enum Command {
    /// Train a policy with GRPO or λ-GRPO on a TOML config.
    #[command(long_about = cli::train::LONG_ABOUT)]
    Train(cli::train::TrainArgs),
    /// Train several configs over several seeds and write one comparison report.
    #[command(long_about = cli::sweep::LONG_ABOUT)]
    Sweep(cli::sweep::SweepArgs),
    /// Write a randomly initialised Qwen2 model (HF layout) for a tokenizer.
    #[command(long_about = cli::init_model::LONG_ABOUT)]
    InitModel(cli::init_model::InitModelArgs),
    /// Inspect configuration files (`grpo config show`).
    Config(cli::config::ConfigArgs),
    /// Build the built-in task's data, train the tiny tokenizer, list benchmarks.
    Data(cli::data::DataArgs),
    /// Supervised warm start on worked solutions (builds the shipped tiny policy).
    #[command(long_about = cli::sft::LONG_ABOUT)]
    Sft(cli::sft::SftArgs),
    /// Sample completions from a model (batched, KV-cached).
    #[command(long_about = cli::generate::LONG_ABOUT)]
    Generate(cli::generate::GenerateArgs),
    /// Write a model or adapter for other tools (`--merge`: LoRA merged into the weights).
    #[command(long_about = cli::export::LONG_ABOUT)]
    Export(cli::export::ExportArgs),
    /// Score models on math benchmarks (pass@k, maj@k; resumable; comparisons).
    #[command(long_about = cli::eval::LONG_ABOUT)]
    Eval(cli::eval::EvalArgs),
    /// Check answers for mathematical equivalence (the verifier behind the accuracy reward).
    #[command(long_about = cli::verify::LONG_ABOUT)]
    Verify(cli::verify::VerifyArgs),
    /// Process-set statistics of dumped rollouts; one group's prefix tree as text or picture.
    #[command(long_about = cli::analyze::LONG_ABOUT)]
    Analyze(cli::analyze::AnalyzeArgs),
    /// Plot training curves of runs (metrics.jsonl) to a PNG or SVG grid of panels.
    #[command(long_about = cli::plot::LONG_ABOUT)]
    Plot(cli::plot::PlotArgs),
    /// Speed measurements (`grpo bench train`: tokens/s and peak RSS of a training step).
    #[command(long_about = cli::bench::LONG_ABOUT)]
    Bench(cli::bench::BenchArgs),
}

fn main() -> ExitCode {
    let args = Cli::parse();
    if let Err(err) = init(&args) {
        eprintln!("grpo: {err:#}");
        return ExitCode::from(2);
    }
    let result = match &args.command {
        Command::Train(a) => cli::train::run(a),
        Command::Sweep(a) => cli::sweep::run(a),
        Command::InitModel(a) => cli::init_model::run(a),
        Command::Config(a) => cli::config::run(a),
        Command::Data(a) => cli::data::run(a),
        Command::Sft(a) => cli::sft::run(a),
        Command::Generate(a) => cli::generate::run(a),
        Command::Eval(a) => cli::eval::run(a),
        Command::Export(a) => cli::export::run(a),
        Command::Verify(a) => cli::verify::run(a),
        Command::Analyze(a) => cli::analyze::run(a),
        Command::Plot(a) => cli::plot::run(a),
        Command::Bench(a) => cli::bench::run(a),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("grpo: {}", cli::error_message(&err));
            ExitCode::from(2)
        }
    }
}

fn init(args: &Cli) -> anyhow::Result<()> {
    grpo::heap_budget::keep_freed_memory();
    if args.allow_non_finite {
        grpo::model::finite::set_allow_non_finite(true);
    }
    let env = grpo::trainer::memory::MAX_MEMORY_ENV;
    if let Ok(v) = std::env::var(env) {
        anyhow::ensure!(
            grpo::trainer::memory::parse_bytes(&v).is_some(),
            "{env}=`{v}`: expected a number of bytes, optionally with a K, M, G or T suffix \
             (e.g. 8G)"
        );
    }
    // A bad GRPO_BF16_TIER is an error before any work, not a silent default.
    grpo::model::kernels::bf16::tier_from_env().map_err(anyhow::Error::msg)?;
    // candle's element-wise CPU kernels spin-wait in their own thread pool; on small models and
    // busy machines that costs more than it saves (measured 1.6-3x slower training on 2 cores).
    // Matmuls still use every rayon thread. Set CANDLE_NUM_THREADS to override.
    if std::env::var_os("CANDLE_NUM_THREADS").is_none() {
        std::env::set_var("CANDLE_NUM_THREADS", "1");
    }
    if let Some(n) = args.threads {
        anyhow::ensure!(n > 0, "--threads: expected at least 1");
        // candle's CPU kernels read the same variable as rayon.
        std::env::set_var("RAYON_NUM_THREADS", n.to_string());
        rayon::ThreadPoolBuilder::new()
            .num_threads(n)
            .build_global()
            .map_err(|e| anyhow::anyhow!("--threads: {e}"))?;
    }
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .or_else(|_| tracing_subscriber::EnvFilter::try_new(&args.log_level))
        .map_err(|e| anyhow::anyhow!("--log-level {}: {e}", args.log_level))?;
    // Colours only on a terminal: a log redirected to a file gets plain text, no `\x1b[2m`.
    let ansi = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(ansi)
        .with_target(false)
        .init();
    Ok(())
}
