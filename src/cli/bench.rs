//! `grpo bench train`: times one training step on a named model shape, the measurement
//! `benches/peers/torch_train_step.py` makes with PyTorch, so the two compare as a ratio.
//! `grpo bench gemm`: the matrix product every training op runs, alone (for kernel tuning).

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use candle_core::{DType, Device, Tensor, Var};
use clap::{Args, Subcommand, ValueEnum};
use rand::{Rng, SeedableRng};

use crate::config::lora::{LoraConfig, TargetModules};
use crate::config::OptimSection;
use crate::model::kernels::bf16;
use crate::model::{ModelConfig, Policy};
use crate::trainer::memory::{activation_bytes_per_token, available_cpu_bytes};
use crate::trainer::optim::Optimizer;
use crate::trainer::update::GradAccumulator;

pub const LONG_ABOUT: &str = "Time a training step on a named model shape.

`grpo bench train` builds a Qwen2 model of the shape with random weights (no files), draws
B x T random tokens and times loss = -mean(token log-probs) forward + backward (and an AdamW
update with --adamw, or the forward alone with --forward-only): best of --repeat runs after one
warm-up. It is the same measurement as benches/peers/torch_train_step.py, the PyTorch side of the
comparison (benches/peers/run.sh prints the ratios). --model-config FILE builds the architecture
of any Qwen2/Llama config.json instead of a named shape (as torch_train_step.py --model-config).
--dtype bf16 is mixed precision as `model.dtype = \"bf16\"` trains: f32 weights, gradients and AdamW,
every weight product on bf16 inputs with f32 accumulation (torch_train_step.py --bf16 is the
PyTorch side); the JSON names the bf16 kernel tier that ran.

Shapes:
  bench         vocab 8192, hidden 256, intermediate 704, 6 layers, 8/2 heads, untied (8.4M)
  qwen2.5-0.5b  Qwen2.5-0.5B: vocab 151936, hidden 896, intermediate 4864, 24 layers, 14/2 heads,
                tied, rope_theta 1e6, q/k/v bias (494M)

`grpo bench gemm --m M --n N --k K [--trans-a] [--trans-b]` times C = A·B on the GEMM kernel
every training op uses (GFLOP/s, best of --repeat); the defaults are a Qwen2.5-0.5B MLP product
at 576 tokens. `--dtype bf16` times the mixed-precision product instead (bf16 inputs, f32
accumulation and output) on the best tier this CPU has (`amx`, `avx512-bf16`, else `f32`: the f32
kernels on rounded inputs); `--tier NAME` or GRPO_BF16_TIER=NAME forces a lower one. The
peer is benches/peers/torch_gemm.py (--dtype float32 / bfloat16).

Examples:
  grpo bench train --shape bench --batch 8 --seq 256 --json
  grpo bench train --shape qwen2.5-0.5b --batch 8 --seq 72 --adamw --json
  grpo bench train --shape bench --dtype bf16 --forward-only --json
  grpo bench train --model-config ~/my-model/config.json --batch 4 --seq 128 --json
  grpo --threads 1 bench gemm --m 576 --n 4864 --k 896 --trans-b
  grpo bench gemm --m 576 --n 4864 --k 896 --dtype bf16 --json
  grpo bench gemm --dtype bf16 --tier f32 --json";

/// Speed measurements.
#[derive(Debug, Args)]
#[command(long_about = LONG_ABOUT)]
pub struct BenchArgs {
    #[command(subcommand)]
    pub command: BenchCommand,
}

#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// Tokens/s and peak RSS of a training step (forward + backward [+ AdamW]).
    Train(TrainBenchArgs),
    /// GFLOP/s of one matrix product C[m×n] = op(A)·op(B) on the training GEMM (f32 or bf16).
    Gemm(GemmBenchArgs),
}

/// `grpo bench gemm`: the kernel every training product runs, alone.
#[derive(Debug, Args)]
pub struct GemmBenchArgs {
    #[arg(long, default_value_t = 576)]
    pub m: usize,
    #[arg(long, default_value_t = 4864)]
    pub n: usize,
    #[arg(long, default_value_t = 896)]
    pub k: usize,
    /// A is stored k×m (transposed), as in a weight gradient dYᵀ·X.
    #[arg(long)]
    pub trans_a: bool,
    /// B is stored n×k (transposed), as in a linear layer's x·Wᵀ.
    #[arg(long)]
    pub trans_b: bool,
    /// Timed runs after the warm-up; the best is reported.
    #[arg(long, default_value_t = 5)]
    pub repeat: usize,
    /// Input precision: f32, or bf16 (inputs stored as bf16, f32 accumulation and output).
    #[arg(long, value_enum, default_value = "f32")]
    pub dtype: GemmDtype,
    /// bf16 only: run this tier (amx, avx512-bf16, f32) or the best one below it this CPU has
    /// (default: the best, or GRPO_BF16_TIER).
    #[arg(long, value_name = "NAME")]
    pub tier: Option<String>,
    /// Print one JSON line instead of a sentence.
    #[arg(long)]
    pub json: bool,
}

/// Input precision of `grpo bench gemm`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum GemmDtype {
    #[value(alias = "fp32", alias = "float32")]
    F32,
    #[value(alias = "bfloat16")]
    Bf16,
}

/// A named model shape (random weights).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Shape {
    /// benches/forward_backward.rs: 8.4M parameters, vocab 8192.
    Bench,
    /// Qwen2.5-0.5B's architecture.
    #[value(name = "qwen2.5-0.5b")]
    Qwen25_05b,
}

#[derive(Debug, Args)]
pub struct TrainBenchArgs {
    #[arg(long, value_enum, default_value = "bench")]
    pub shape: Shape,
    /// A Hugging Face config.json (Qwen2 or Llama) whose architecture to build instead of
    /// --shape (random weights).
    #[arg(long, value_name = "FILE", conflicts_with = "shape")]
    pub model_config: Option<PathBuf>,
    /// f32, or bf16: mixed precision (f32 weights and AdamW, bf16 weight products with f32
    /// accumulation), as `model.dtype = "bf16"` trains.
    #[arg(long, default_value = "f32")]
    pub dtype: crate::config::DType,
    /// Sequences per step.
    #[arg(long, default_value_t = 8)]
    pub batch: usize,
    /// Tokens per sequence.
    #[arg(long, default_value_t = 256)]
    pub seq: usize,
    /// Add an AdamW update (lr 1e-6, weight decay 0.01, as torch.optim.AdamW's defaults).
    #[arg(long, conflicts_with = "forward_only")]
    pub adamw: bool,
    /// Time the forward pass alone (log-probs, no backward).
    #[arg(long)]
    pub forward_only: bool,
    /// Sequences per forward/backward pass; the step sums their gradients (as the trainer's
    /// micro-batches do: same gradient). 0 = as many as keep a pass's saved activations under
    /// 3 GB.
    #[arg(long, default_value_t = 0)]
    pub micro_batch: usize,
    /// Train LoRA adapters of this rank on all linear layers (lora_alpha = 2r) instead of the
    /// whole model; 0 = full fine-tuning.
    #[arg(long, default_value_t = 0)]
    pub lora_r: usize,
    /// Timed runs after the warm-up; the best is reported.
    #[arg(long, default_value_t = 3)]
    pub repeat: usize,
    /// Print one JSON line instead of a sentence.
    #[arg(long)]
    pub json: bool,
}

/// Saved activations one pass may hold when `--micro-batch` is 0 (auto).
const ACTIVATION_BUDGET: u64 = 3_000_000_000;

/// Sequences per pass: `requested`, or (0) the most whose activations fit the budget.
pub fn micro_batch_rows(cfg: &ModelConfig, batch: usize, seq: usize, requested: usize) -> usize {
    if requested > 0 {
        return requested.min(batch);
    }
    let per_row = activation_bytes_per_token(cfg, 4)
        .saturating_mul(seq as u64)
        .max(1);
    ((ACTIVATION_BUDGET / per_row) as usize).clamp(1, batch)
}

/// The model config of a named shape.
pub fn shape_config(shape: Shape) -> Result<ModelConfig> {
    let json = match shape {
        Shape::Bench => serde_json::json!({
            "model_type": "qwen2", "hidden_act": "silu", "vocab_size": 8192, "hidden_size": 256,
            "intermediate_size": 704, "num_hidden_layers": 6, "num_attention_heads": 8,
            "num_key_value_heads": 2, "max_position_embeddings": 4096, "rms_norm_eps": 1e-6,
            "rope_theta": 10000.0, "tie_word_embeddings": false, "initializer_range": 0.02,
        }),
        Shape::Qwen25_05b => serde_json::json!({
            "model_type": "qwen2", "hidden_act": "silu", "vocab_size": 151936,
            "hidden_size": 896, "intermediate_size": 4864, "num_hidden_layers": 24,
            "num_attention_heads": 14, "num_key_value_heads": 2,
            "max_position_embeddings": 32768, "rms_norm_eps": 1e-6, "rope_theta": 1000000.0,
            "tie_word_embeddings": true, "initializer_range": 0.02,
        }),
    };
    ModelConfig::from_json(json, "bench shape")
}

/// The name `--json` prints for a named shape.
fn shape_name(shape: Shape) -> &'static str {
    match shape {
        Shape::Bench => "bench",
        Shape::Qwen25_05b => "qwen2.5-0.5b",
    }
}

/// Fails, naming `path`, when the model of `cfg` would not fit this machine's memory: f32
/// weights and gradients, a bf16 copy, AdamW's two moments (a lower bound of the step).
fn check_fits(cfg: &ModelConfig, a: &TrainBenchArgs, path: &std::path::Path) -> Result<()> {
    let params = crate::trainer::memory::num_parameters(cfg);
    let per_param =
        8 + if a.dtype == crate::config::DType::Bf16 {
            2
        } else {
            0
        } + if a.adamw { 8 } else { 0 };
    let need = params.saturating_mul(per_param);
    if let Some(avail) = available_cpu_bytes() {
        if need > avail {
            bail!(
                "{}: a model of {params} parameters needs at least {:.1} GB for a training step, but {:.1} GB are available",
                path.display(),
                need as f64 / 1e9,
                avail as f64 / 1e9
            );
        }
    }
    Ok(())
}

/// Parameters of a named shape (a tied head counted once), without building it.
pub fn shape_parameters(shape: Shape) -> Result<usize> {
    let cfg = shape_config(shape)?;
    Ok(crate::model::qwen2::parameter_specs(&cfg)
        .iter()
        .map(|(_, s)| s.iter().product::<usize>())
        .sum())
}

/// Peak resident set size of this process in GB (1e9 bytes), from /proc (`VmHWM`).
pub fn peak_rss_gb() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1e6)
}

pub fn run(args: &BenchArgs) -> Result<()> {
    match &args.command {
        BenchCommand::Gemm(g) => {
            let v = gemm(g)?;
            if g.json {
                println!("{v}");
            } else {
                println!(
                    "{}x{}x{} {} ({} kernels, {} threads): {:.1} GFLOP/s (best of {}: {:.5} s)",
                    g.m,
                    g.n,
                    g.k,
                    v["dtype"].as_str().unwrap_or(""),
                    v["tier"].as_str().unwrap_or(""),
                    v["threads"],
                    v["gflops"].as_f64().unwrap_or(0.0),
                    g.repeat.max(1),
                    v["best_s"].as_f64().unwrap_or(0.0),
                );
            }
            Ok(())
        }
        BenchCommand::Train(a) => {
            let line = train(a)?;
            if a.json {
                println!("{line}");
            } else {
                println!(
                    "{} {}x{} {}: {:.0} tokens/s (best of {} runs: {:.3} s), peak RSS {:.2} GB",
                    line["shape"].as_str().unwrap_or(""),
                    a.batch,
                    a.seq,
                    line["what"].as_str().unwrap_or(""),
                    line["tokens_per_s"].as_f64().unwrap_or(0.0),
                    a.repeat,
                    line["best_s"].as_f64().unwrap_or(0.0),
                    line["peak_rss_gb"].as_f64().unwrap_or(0.0),
                );
            }
            Ok(())
        }
    }
}

/// Best time of `C = op(A)·op(B)` as a JSON line with GFLOP/s and the kernels (`tier`) used.
pub fn gemm(g: &GemmBenchArgs) -> Result<serde_json::Value> {
    use crate::model::kernels::bf16::{self, Data, Operand16, Tier};
    use crate::model::kernels::gemm::{matmul, Operand};
    if g.m == 0 || g.n == 0 || g.k == 0 {
        bail!("--m, --n and --k must be at least 1");
    }
    let (m, n, k) = (g.m, g.n, g.k);
    let requested = match (&g.tier, g.dtype) {
        (Some(_), GemmDtype::F32) => bail!("--tier applies to --dtype bf16 only"),
        (Some(t), GemmDtype::Bf16) => {
            Some(Tier::parse(t).map_err(|e| anyhow::anyhow!("--tier: {e}"))?)
        }
        (None, _) => None,
    };
    let a: Vec<f32> = (0..m * k).map(|i| ((i % 17) as f32 - 8.0) / 8.0).collect();
    let b: Vec<f32> = (0..k * n).map(|i| ((i % 13) as f32 - 6.0) / 6.0).collect();
    let (a16, b16) = (bf16::to_bf16_vec(&a), bf16::to_bf16_vec(&b));
    let mut c = vec![0f32; m * n];
    let (lda, ldb) = (if g.trans_a { m } else { k }, if g.trans_b { k } else { n });
    let tier = match g.dtype {
        GemmDtype::F32 => None,
        GemmDtype::Bf16 => {
            let t = match requested {
                Some(r) => {
                    let t = bf16::force_tier(r);
                    if t != r {
                        eprintln!(
                            "grpo: bf16 tier {} is not available on this CPU; using {}",
                            r.name(),
                            t.name()
                        );
                    }
                    t
                }
                None => bf16::tier(),
            };
            Some(t)
        }
    };
    fn op(d: &[f32], ld: usize, t: bool) -> Operand<'_> {
        if t {
            Operand::t(d, ld)
        } else {
            Operand::new(d, ld)
        }
    }
    let (a32, b32) = (op(&a, lda, g.trans_a), op(&b, ldb, g.trans_b));
    let a16o = if g.trans_a {
        Operand16::t(Data::Bf16(&a16), lda)
    } else {
        Operand16::new(Data::Bf16(&a16), lda)
    };
    let b16o = if g.trans_b {
        Operand16::t(Data::Bf16(&b16), ldb)
    } else {
        Operand16::new(Data::Bf16(&b16), ldb)
    };
    let mut run = || match tier {
        None => matmul(&mut c, n, a32, b32, m, n, k, false),
        Some(t) => bf16::matmul_bf16_on(t, &mut c, n, a16o, b16o, m, n, k, false),
    };
    let mut best = f64::INFINITY;
    for _ in 0..=g.repeat.max(1) {
        let t = Instant::now();
        run();
        best = best.min(t.elapsed().as_secs_f64());
    }
    let gflops = 2.0 * (m * n * k) as f64 / best / 1e9;
    let dtype = match g.dtype {
        GemmDtype::F32 => "f32",
        GemmDtype::Bf16 => "bf16",
    };
    Ok(
        serde_json::json!({"m": m, "n": n, "k": k, "trans_a": g.trans_a, "trans_b": g.trans_b,
        "dtype": dtype, "tier": tier.map_or("f32", |t| t.name()),
        "best_s": best, "gflops": gflops, "threads": rayon::current_num_threads()}),
    )
}

/// Gradient of −mean(token log-probs of `ids [B, T]`) for `vars`, computed `rows` sequences
/// per pass and summed: the same gradient for any `rows`, and each pass's graph (its
/// activations) is freed before the next one starts.
pub fn batch_gradient(
    policy: &Policy,
    ids: &Tensor,
    rows: usize,
    vars: &[Var],
) -> Result<Vec<Tensor>> {
    let (b, t) = ids.dims2()?;
    let tokens = (b * t) as f64;
    let mut grads = GradAccumulator::new(vars.len());
    for start in (0..b).step_by(rows.max(1)) {
        let part = ids.narrow(0, start, rows.max(1).min(b - start))?;
        let (lp, _) = policy.completion_logprobs(&part, None, 0, &part, 1.0, None)?;
        let loss = (lp.sum_all()? / -tokens)?;
        grads.add(&loss.backward()?, vars)?;
    }
    grads.finish(vars)
}

/// Runs the measurement; returns the JSON object printed by `--json`.
pub fn train(a: &TrainBenchArgs) -> Result<serde_json::Value> {
    if a.batch == 0 || a.seq == 0 {
        bail!("--batch and --seq must be at least 1");
    }
    if a.repeat == 0 {
        bail!("--repeat must be at least 1");
    }
    let (config, shape) = match &a.model_config {
        Some(path) => {
            let c = ModelConfig::from_file(path)?;
            check_fits(&c, a, path)?;
            (c, path.display().to_string())
        }
        None => (shape_config(a.shape)?, shape_name(a.shape).to_string()),
    };
    let dtype = match a.dtype {
        crate::config::DType::F32 => DType::F32,
        crate::config::DType::Bf16 => DType::BF16,
        crate::config::DType::F16 => bail!("--dtype: bench train takes f32 or bf16, got f16"),
    };
    let vocab = config.vocab_size;
    let rows = micro_batch_rows(&config, a.batch, a.seq, a.micro_batch);
    let mut policy = Policy::new_random(config, 0, dtype, &Device::Cpu)?;
    if a.lora_r > 0 {
        let lora = LoraConfig {
            r: a.lora_r,
            lora_alpha: 2.0 * a.lora_r as f64,
            target_modules: TargetModules::Pattern("all-linear".into()),
            ..LoraConfig::default()
        };
        policy.add_lora(&lora, 0)?;
    }
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
    let hi = vocab.min(8192) as u32;
    let ids: Vec<u32> = (0..a.batch * a.seq)
        .map(|_| rng.random_range(3..hi))
        .collect();
    let ids = Tensor::from_vec(ids, (a.batch, a.seq), &Device::Cpu)?;
    let optim = OptimSection {
        weight_decay: 0.01,
        ..OptimSection::default()
    };
    let trainable = policy.trainable_vars();
    let trainable_params: usize = trainable.iter().map(|(_, v)| v.elem_count()).sum();
    let mut opt = if a.adamw {
        Some(Optimizer::new(trainable.clone(), &optim)?)
    } else {
        None
    };
    let vars: Vec<Var> = trainable.into_iter().map(|(_, v)| v).collect();
    let mut step = || -> Result<()> {
        if a.forward_only {
            // As torch_train_step.py's `torch.no_grad()`: no graph, no kept activations.
            let frozen = policy.without_grad()?;
            let p = frozen.as_ref().unwrap_or(&policy);
            for start in (0..a.batch).step_by(rows) {
                let part = ids.narrow(0, start, rows.min(a.batch - start))?;
                let (lp, _) = p.completion_logprobs(&part, None, 0, &part, 1.0, None)?;
                std::hint::black_box(lp.detach());
            }
            return Ok(());
        }
        let g = batch_gradient(&policy, &ids, rows, &vars)?;
        if let Some(opt) = opt.as_mut() {
            opt.step(&g, optim.learning_rate)?;
            policy.weights_changed();
        }
        Ok(())
    };
    step().context("warm-up step")?;
    let mut best = f64::INFINITY;
    for _ in 0..a.repeat {
        let t0 = Instant::now();
        step()?;
        best = best.min(t0.elapsed().as_secs_f64());
    }
    let what = if a.forward_only {
        "forward"
    } else if a.adamw {
        "fwd+bwd+adamw"
    } else {
        "fwd+bwd"
    };
    let tier = match policy.precision() {
        bf16::Precision::F32 => "f32",
        bf16::Precision::Bf16 => bf16::tier().name(),
    };
    Ok(serde_json::json!({
        "tool": "grpo",
        "shape": shape,
        "dtype": if dtype == DType::BF16 { "bf16" } else { "f32" },
        "tier": tier,
        "batch": a.batch,
        "seq": a.seq,
        "what": what,
        "threads": rayon::current_num_threads(),
        "best_s": best,
        "tokens_per_s": (a.batch * a.seq) as f64 / best,
        "params": policy.num_parameters(),
        "trainable_params": trainable_params,
        "micro_batch": rows,
        "lora_r": a.lora_r,
        "peak_rss_gb": peak_rss_gb().unwrap_or(f64::NAN),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gemm_bench_reports_the_product_it_timed() {
        let g = GemmBenchArgs {
            m: 33,
            n: 70,
            k: 17,
            trans_a: true,
            trans_b: false,
            repeat: 2,
            dtype: GemmDtype::F32,
            tier: None,
            json: true,
        };
        let v = gemm(&g).unwrap();
        assert_eq!(v["dtype"].as_str(), Some("f32"));
        assert_eq!(
            (v["m"].as_u64(), v["n"].as_u64(), v["k"].as_u64()),
            (Some(33), Some(70), Some(17))
        );
        assert_eq!(v["trans_a"].as_bool(), Some(true));
        let (best, gflops) = (v["best_s"].as_f64().unwrap(), v["gflops"].as_f64().unwrap());
        assert!(
            best > 0.0
                && (gflops - 2.0 * 33.0 * 70.0 * 17.0 / best / 1e9).abs() < 1e-9 * gflops.max(1.0)
        );
    }

    #[test]
    fn gemm_bench_bf16_reports_its_tier_and_rejects_bad_flags() {
        use crate::model::kernels::bf16;
        let mut g = GemmBenchArgs {
            m: 40,
            n: 33,
            k: 19,
            trans_a: false,
            trans_b: true,
            repeat: 1,
            dtype: GemmDtype::Bf16,
            tier: Some("f32".into()),
            json: true,
        };
        let before = bf16::tier();
        let v = gemm(&g).unwrap();
        assert_eq!(
            (v["dtype"].as_str(), v["tier"].as_str()),
            (Some("bf16"), Some("f32"))
        );
        assert!(v["gflops"].as_f64().unwrap() > 0.0);
        // Asking for more than the CPU has runs (and reports) the best it has.
        g.tier = Some("amx".into());
        let v = gemm(&g).unwrap();
        assert_eq!(v["tier"].as_str(), Some(bf16::hardware_tier().name()));
        g.tier = Some("avx9".into());
        let e = gemm(&g).unwrap_err().to_string();
        assert!(e.contains("--tier") && e.contains("avx512-bf16"), "{e}");
        g.dtype = GemmDtype::F32;
        g.tier = Some("f32".into());
        assert!(gemm(&g).unwrap_err().to_string().contains("--dtype bf16"));
        bf16::force_tier(before);
    }

    #[test]
    fn micro_batches_give_the_gradient_of_one_pass() {
        let cfg = ModelConfig::from_json(
            serde_json::json!({"model_type": "qwen2", "vocab_size": 50, "hidden_size": 32,
                "intermediate_size": 48, "num_hidden_layers": 2, "num_attention_heads": 4,
                "num_key_value_heads": 2, "tie_word_embeddings": true}),
            "t",
        )
        .unwrap();
        let policy = Policy::new_random(cfg, 3, DType::F32, &Device::Cpu).unwrap();
        let ids: Vec<u32> = (0..5 * 7).map(|i| (i * 17 + 3) % 50).collect();
        let ids = Tensor::from_vec(ids, (5, 7), &Device::Cpu).unwrap();
        let vars: Vec<Var> = policy.named_vars().into_iter().map(|(_, v)| v).collect();
        let one = batch_gradient(&policy, &ids, 5, &vars).unwrap();
        for rows in [1, 2, 3] {
            let split = batch_gradient(&policy, &ids, rows, &vars).unwrap();
            for (a, b) in one.iter().zip(&split) {
                let scale = a
                    .abs()
                    .unwrap()
                    .max_all()
                    .unwrap()
                    .to_scalar::<f32>()
                    .unwrap();
                let d = (a - b)
                    .unwrap()
                    .abs()
                    .unwrap()
                    .max_all()
                    .unwrap()
                    .to_scalar::<f32>()
                    .unwrap();
                assert!(
                    scale > 0.0 && d <= 1e-5 * scale,
                    "rows {rows}: {d} vs {scale}"
                );
            }
        }
        // The auto choice keeps a pass's activations under the budget.
        let q = shape_config(Shape::Qwen25_05b).unwrap();
        assert_eq!(micro_batch_rows(&q, 8, 72, 0), 8);
        assert_eq!(micro_batch_rows(&q, 8, 700, 0), 2);
        assert_eq!(micro_batch_rows(&q, 8, 700, 3), 3);
    }
}
