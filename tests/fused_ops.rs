//! The fused CPU training ops (RMSNorm, stacked q/k/v and gate/up GEMMs, rotary + causal GQA
//! attention with padding, SwiGLU, chunked LM head + log-softmax) give the same log-probs,
//! entropies and gradients of every parameter as the same model composed from basic candle
//! ops. A dropped or wrong gradient in any op changes some parameter's gradient far beyond the
//! tolerance (each test also checks that every gradient is non-zero).

use candle_core::{DType, Device, Tensor};
use grpo::model::{ModelConfig, Policy};

fn config(model_type: &str, heads: usize, kv: usize, tied: bool) -> ModelConfig {
    config_with(model_type, heads, kv, tied, false)
}

fn config_with(
    model_type: &str,
    heads: usize,
    kv: usize,
    tied: bool,
    mlp_bias: bool,
) -> ModelConfig {
    let json = serde_json::json!({
        "model_type": model_type, "hidden_act": "silu", "vocab_size": 61, "hidden_size": 32,
        "intermediate_size": 48, "num_hidden_layers": 2, "num_attention_heads": heads,
        "num_key_value_heads": kv, "max_position_embeddings": 128, "rms_norm_eps": 1e-6,
        "rope_theta": 10000.0, "tie_word_embeddings": tied, "initializer_range": 0.3,
        "attention_bias": model_type == "qwen2" || mlp_bias, "mlp_bias": mlp_bias,
    });
    ModelConfig::from_json(json, "test config").unwrap()
}

/// Two left-padded rows and one full row, 70 tokens (more than one 64-query block).
fn batch() -> (Tensor, Tensor) {
    let (b, t) = (3, 70);
    let mut ids = vec![0u32; b * t];
    let mut mask = vec![0u32; b * t];
    for r in 0..b {
        let pad = [5, 0, 66][r];
        for j in pad..t {
            ids[r * t + j] = ((r * 31 + j * 7) % 58 + 3) as u32;
            mask[r * t + j] = 1;
        }
    }
    (
        Tensor::from_vec(ids, (b, t), &Device::Cpu).unwrap(),
        Tensor::from_vec(mask, (b, t), &Device::Cpu).unwrap(),
    )
}

fn rel_l2(a: &Tensor, b: &Tensor) -> f32 {
    let num = (a - b).unwrap().sqr().unwrap().sum_all().unwrap();
    let den = b.sqr().unwrap().sum_all().unwrap();
    (num.to_scalar::<f32>().unwrap() / den.to_scalar::<f32>().unwrap().max(1e-30)).sqrt()
}

fn check(cfg: ModelConfig, temperature: f64, vocab_bias: Option<Tensor>) {
    let fused = Policy::new_random(cfg, 7, DType::F32, &Device::Cpu).unwrap();
    let mut composed = fused.deep_clone().unwrap();
    composed.set_fused_ops(false);
    let (ids, mask) = batch();
    let (b, t) = ids.dims2().unwrap();
    let start = 3;
    let targets = ids.narrow(1, start + 1, t - start - 1).unwrap();
    let l = t - start - 1;
    let weights: Vec<f32> = (0..b * l)
        .map(|i| ((i * 13 % 7) as f32 - 3.0) / 5.0)
        .collect();
    let weights = Tensor::from_vec(weights, (b, l), &Device::Cpu).unwrap();
    // Positions that predict from a real token (padding positions' states are unspecified).
    let m = mask
        .narrow(1, start, l)
        .unwrap()
        .to_dtype(DType::F32)
        .unwrap();
    let run = |p: &Policy| {
        let (lp, ent) = p
            .completion_logprobs(
                &ids,
                Some(&mask),
                start,
                &targets,
                temperature,
                vocab_bias.as_ref(),
            )
            .unwrap();
        let loss = ((&lp * &weights).unwrap() * &m).unwrap().sum_all().unwrap();
        let grads = loss.backward().unwrap();
        let g: Vec<(String, Tensor)> = p
            .named_vars()
            .into_iter()
            .map(|(n, v)| {
                (
                    n,
                    grads
                        .get(&v)
                        .cloned()
                        .expect("a gradient for every parameter"),
                )
            })
            .collect();
        ((lp * &m).unwrap(), (ent * &m).unwrap(), g)
    };
    let (lf, ef, gf) = run(&fused);
    let (lc, ec, gc) = run(&composed);
    assert!(rel_l2(&lf, &lc) < 1e-5, "log-probs {}", rel_l2(&lf, &lc));
    assert!(rel_l2(&ef, &ec) < 1e-5, "entropy {}", rel_l2(&ef, &ec));
    for ((name, a), (_, b)) in gf.iter().zip(&gc) {
        let norm = b
            .abs()
            .unwrap()
            .sum_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert!(norm > 0.0, "{name}: zero reference gradient");
        let e = rel_l2(a, b);
        assert!(e < 1e-4, "{name}: gradient rel L2 error {e}");
    }
}

#[test]
fn qwen2_gqa_untied_matches_composed() {
    check(config("qwen2", 4, 2, false), 1.0, None);
}

#[test]
fn qwen2_tied_with_temperature_matches_composed() {
    check(config("qwen2", 4, 1, true), 0.7, None);
}

#[test]
fn llama_without_bias_and_vocab_restriction_matches_composed() {
    let bias: Vec<f32> = (0..61)
        .map(|i| if i % 3 == 0 { -1e9 } else { 0.0 })
        .collect();
    let bias = Tensor::from_vec(bias, 61, &Device::Cpu).unwrap();
    check(config("llama", 4, 4, false), 1.0, Some(bias));
}

#[test]
fn llama_with_every_bias_matches_composed() {
    check(config_with("llama", 4, 2, false, true), 1.0, None);
}

#[test]
fn token_logprobs_fused_matches_composed() {
    let fused =
        Policy::new_random(config("qwen2", 4, 2, false), 3, DType::F32, &Device::Cpu).unwrap();
    let mut composed = fused.deep_clone().unwrap();
    composed.set_fused_ops(false);
    let (ids, mask) = batch();
    let a = fused.token_logprobs(&ids, Some(&mask), 1.0).unwrap();
    let b = composed.token_logprobs(&ids, Some(&mask), 1.0).unwrap();
    let m = mask.narrow(1, 0, 69).unwrap().to_dtype(DType::F32).unwrap();
    let (a, b) = ((a * &m).unwrap(), (b * &m).unwrap());
    assert!(rel_l2(&a, &b) < 1e-5);
}
