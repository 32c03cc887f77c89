//! Sampler throughput: 8 prompts × 8 samples × 128 new tokens (EOS ignored), reported by
//! criterion as elements/s = generated tokens/s. Models: the tiny-qwen2 fixture and a ~10M
//! parameter random Qwen2-shaped model (vocab 8192, hidden 256, 6 layers, 8/2 heads).

use std::path::PathBuf;
use std::time::Duration;

use candle_core::{DType, Device};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use grpo::cli::generate::bench_prompts;
use grpo::model::{ModelConfig, Policy, Tokenizer};
use grpo::sampler::logits::row_rng;
use grpo::sampler::{generate, LogitsProcessor, SamplingParams};
use rand::Rng;

const PROMPTS: usize = 8;
const SAMPLES: usize = 8;
const NEW_TOKENS: usize = 128;

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures")).join(name)
}

fn params() -> SamplingParams {
    SamplingParams {
        temperature: 1.0,
        top_p: 0.95,
        max_new_tokens: NEW_TOKENS,
        ignore_eos: true,
        seed: 0,
        ..SamplingParams::default()
    }
}

fn random_10m() -> Policy {
    let config = serde_json::json!({
        "model_type": "qwen2",
        "hidden_act": "silu",
        "vocab_size": 8192,
        "hidden_size": 256,
        "intermediate_size": 704,
        "num_hidden_layers": 6,
        "num_attention_heads": 8,
        "num_key_value_heads": 2,
        "max_position_embeddings": 2048,
        "rms_norm_eps": 1e-6,
        "rope_theta": 10000.0,
        "tie_word_embeddings": true,
        "initializer_range": 0.02,
    });
    let config = ModelConfig::from_json(config, "bench config").expect("bench config");
    Policy::new_random(config, 0, DType::F32, &Device::Cpu).expect("random model")
}

fn bench_generate(c: &mut Criterion) {
    // RUST_LOG=grpo=debug shows the sampler's prefill / decode / sampling time split.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .try_init();
    let dir = fixture("tiny-qwen2");
    let tokenizer = Tokenizer::load(&dir).expect("fixture tokenizer");
    let prompts = bench_prompts(&tokenizer).expect("bench prompts");
    assert_eq!(prompts.len(), PROMPTS);
    let models = [
        (
            "tiny-qwen2",
            Policy::load(&dir, DType::F32, &Device::Cpu).expect("fixture model"),
        ),
        ("random-10m", random_10m()),
    ];
    let mut group = c.benchmark_group("generate_8x8x128");
    group.sample_size(10);
    group.warm_up_time(Duration::from_secs(1));
    group.measurement_time(Duration::from_secs(10));
    group.throughput(Throughput::Elements(
        (PROMPTS * SAMPLES * NEW_TOKENS) as u64,
    ));
    for (name, policy) in &models {
        eprintln!("{name}: {} parameters", policy.num_parameters());
        group.bench_function(*name, |b| {
            b.iter(|| {
                let out = generate(policy, &tokenizer, &prompts, SAMPLES, &params(), None)
                    .expect("generate");
                assert_eq!(out.len(), PROMPTS * SAMPLES);
                out
            })
        });
    }
    group.finish();
}

/// One row of a Qwen2.5-sized vocabulary (151,936 logits, roughly Gaussian like a real model's):
/// the per-token host-side sampling cost the decode loop pays for every row.
fn bench_sample_row(c: &mut Criterion) {
    let mut rng = row_rng(1, 0, 0);
    let logits: Vec<f32> = (0..151_936)
        .map(|_| {
            let (a, b): (f32, f32) = (rng.random(), rng.random());
            3.0 * (-2.0 * a.max(1e-12).ln()).sqrt() * (std::f32::consts::TAU * b).cos()
        })
        .collect();
    let mut group = c.benchmark_group("sample_row_151936");
    group.sample_size(20);
    group.measurement_time(Duration::from_secs(3));
    group.throughput(Throughput::Elements(1));
    let cases = [
        ("greedy", LogitsProcessor::new(0.0, 0, 1.0, 0.0)),
        ("t1_full", LogitsProcessor::new(1.0, 0, 1.0, 0.0)),
        ("t1_top_p_0.95", LogitsProcessor::new(1.0, 0, 0.95, 0.0)),
        ("t0.7_top_k_50", LogitsProcessor::new(0.7, 50, 1.0, 0.0)),
        ("t1_min_p_0.05", LogitsProcessor::new(1.0, 0, 1.0, 0.05)),
    ];
    for (name, proc) in cases {
        let proc = proc.expect("valid settings");
        let mut row = row_rng(2, 0, 0);
        group.bench_function(name, |b| {
            b.iter(|| proc.sample(&logits, &mut row).expect("sample"))
        });
    }
    group.finish();
}

criterion_group!(benches, bench_generate, bench_sample_row);
criterion_main!(benches);
