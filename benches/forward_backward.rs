//! Training throughput: forward + backward of loss = -mean(token_logprobs) for one micro-batch
//! of 8 × 256 tokens on a ~8.4M-parameter random Qwen2-shaped model (vocab 8192, hidden 256,
//! 6 layers, 8 / 2 heads, intermediate 704, untied head). Criterion reports elements/s =
//! tokens/s; the forward-only and cached-decode numbers show where the time goes.

use std::time::{Duration, Instant};

use candle_core::{DType, Device, Tensor};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use grpo::model::{ModelConfig, Policy};
use rand::{Rng, SeedableRng};

const BATCH: usize = 8;
const SEQ: usize = 256;

fn model() -> Policy {
    let config = serde_json::json!({
        "model_type": "qwen2", "hidden_act": "silu", "vocab_size": 8192, "hidden_size": 256,
        "intermediate_size": 704, "num_hidden_layers": 6, "num_attention_heads": 8,
        "num_key_value_heads": 2, "max_position_embeddings": 2048, "rms_norm_eps": 1e-6,
        "rope_theta": 10000.0, "tie_word_embeddings": false, "initializer_range": 0.02,
    });
    let config = ModelConfig::from_json(config, "bench config").expect("bench config");
    Policy::new_random(config, 0, DType::F32, &Device::Cpu).expect("random model")
}

/// Random tokens with the first rows left-padded, as a real GRPO micro-batch is.
fn batch() -> (Tensor, Tensor) {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
    let mut ids = vec![0u32; BATCH * SEQ];
    let mut mask = vec![0u32; BATCH * SEQ];
    for r in 0..BATCH {
        let pad = (r * 8) % 40;
        for t in pad..SEQ {
            ids[r * SEQ + t] = rng.random_range(3..8192);
            mask[r * SEQ + t] = 1;
        }
    }
    let ids = Tensor::from_vec(ids, (BATCH, SEQ), &Device::Cpu).expect("ids");
    let mask = Tensor::from_vec(mask, (BATCH, SEQ), &Device::Cpu).expect("mask");
    (ids, mask)
}

fn step(p: &Policy, ids: &Tensor, mask: &Tensor) -> f32 {
    let lp = p.token_logprobs(ids, Some(mask), 1.0).expect("forward");
    let loss = lp.mean_all().and_then(|l| l.neg()).expect("loss");
    let grads = loss.backward().expect("backward");
    std::hint::black_box(grads);
    loss.to_scalar::<f32>().expect("scalar")
}

fn bench(c: &mut Criterion) {
    let p = model();
    let (ids, mask) = batch();
    println!("model: {} parameters", p.num_parameters());
    let tokens = (BATCH * SEQ) as f64;
    let t0 = Instant::now();
    step(&p, &ids, &mask);
    let dt = t0.elapsed().as_secs_f64();
    println!(
        "one forward+backward of {BATCH}x{SEQ}: {dt:.3} s = {:.0} tokens/s",
        tokens / dt
    );

    let mut g = c.benchmark_group("train_step");
    g.sample_size(10).measurement_time(Duration::from_secs(20));
    g.throughput(Throughput::Elements((BATCH * SEQ) as u64));
    g.bench_function("forward_backward_8x256", |b| {
        b.iter(|| step(&p, &ids, &mask))
    });
    let mut composed = p.deep_clone().expect("clone");
    composed.set_fused_ops(false);
    g.bench_function("forward_backward_8x256_composed_ops", |b| {
        b.iter(|| step(&composed, &ids, &mask))
    });
    g.bench_function("forward_only_8x256", |b| {
        b.iter(|| {
            let lp = p.token_logprobs(&ids, Some(&mask), 1.0).expect("forward");
            std::hint::black_box(lp)
        })
    });
    g.finish();

    // Cached decoding: 64 rows share a 64-token prefill (repeat_rows), then 64 steps.
    let mut g = c.benchmark_group("decode");
    g.sample_size(10).measurement_time(Duration::from_secs(20));
    const ROWS: usize = 64;
    const STEPS: usize = 64;
    g.throughput(Throughput::Elements((ROWS * STEPS) as u64));
    let prompt = ids
        .narrow(0, 0, 1)
        .and_then(|t| t.narrow(1, 64, 64))
        .expect("prompt");
    g.bench_function("decode_64rows_x64steps", |b| {
        b.iter(|| {
            let mut cache = p.new_cache(1, 64 + STEPS).expect("cache");
            p.forward_cached_last(&prompt, None, &mut cache)
                .expect("prefill");
            let mut cache = cache.repeat_rows(ROWS).expect("repeat");
            let mut next = Tensor::zeros((ROWS, 1), DType::U32, &Device::Cpu).expect("ids");
            for _ in 0..STEPS {
                let logits = p
                    .forward_cached_last(&next, None, &mut cache)
                    .expect("step");
                next = logits
                    .argmax_keepdim(candle_core::D::Minus1)
                    .expect("argmax");
            }
            std::hint::black_box(next)
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
