//! The host inference forward (CPU f32 KV cache) against the training forward and the
//! candle-op inference path (tensor KV cache), on random Qwen2 and Llama shapes with every
//! weight random (biases and norms included), GQA, left padding, chunked prefill, row
//! repetition and compaction.

use candle_core::{DType, Device, Tensor};
use grpo::model::{KvCache, ModelConfig, Policy};
use rand::{Rng, SeedableRng};

fn config(json: serde_json::Value) -> ModelConfig {
    ModelConfig::from_json(json, "test").unwrap()
}

fn qwen2() -> ModelConfig {
    config(serde_json::json!({
        "model_type": "qwen2", "vocab_size": 97, "hidden_size": 48, "intermediate_size": 80,
        "num_hidden_layers": 3, "num_attention_heads": 6, "num_key_value_heads": 2,
        "rope_theta": 10000.0, "tie_word_embeddings": true, "hidden_act": "silu"
    }))
}

fn llama() -> ModelConfig {
    config(serde_json::json!({
        "model_type": "llama", "vocab_size": 61, "hidden_size": 40, "intermediate_size": 72,
        "num_hidden_layers": 2, "num_attention_heads": 3, "num_key_value_heads": 1,
        "head_dim": 16, "attention_bias": true, "mlp_bias": true, "rope_theta": 500.0,
        "tie_word_embeddings": false, "hidden_act": "silu"
    }))
}

/// A policy whose every parameter is random (so biases and norm weights matter).
fn random_policy(cfg: ModelConfig, seed: u64) -> Policy {
    let p = Policy::new_random(cfg, seed, DType::F32, &Device::Cpu).unwrap();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    for (name, var) in p.named_vars() {
        let n = var.as_tensor().elem_count();
        let base = if name.contains("norm") { 1.0 } else { 0.0 };
        let v: Vec<f32> = (0..n)
            .map(|_| base + rng.random_range(-0.3f32..0.3))
            .collect();
        let t = Tensor::from_vec(v, var.as_tensor().shape(), &Device::Cpu).unwrap();
        var.set(&t).unwrap();
    }
    p
}

fn max_abs(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

/// Left-padded batch: rows of lengths 9, 6 and 2 in width 9.
fn batch(vocab: u32) -> (Vec<u32>, Vec<u8>, usize, usize) {
    let (b, t) = (3, 9);
    let lens = [9, 6, 2];
    let mut ids = vec![0u32; b * t];
    let mut mask = vec![0u8; b * t];
    for r in 0..b {
        for j in t - lens[r]..t {
            ids[r * t + j] = (r as u32 * 31 + j as u32 * 7 + 3) % vocab;
            mask[r * t + j] = 1;
        }
    }
    (ids, mask, b, t)
}

/// Logits `[b, t, V]` of the cached path: prefill `pre` positions, then one at a time.
fn cached_logits(
    p: &Policy,
    cache: &mut KvCache,
    ids: &[u32],
    mask: &[u8],
    b: usize,
    t: usize,
) -> Vec<f32> {
    let v = p.config.vocab_size;
    let pre = 5;
    let x = Tensor::from_slice(ids, (b, t), &Device::Cpu).unwrap();
    let m: Vec<u32> = mask.iter().map(|&v| u32::from(v)).collect();
    let m = Tensor::from_vec(m, (b, t), &Device::Cpu).unwrap();
    let mut out = vec![0f32; b * t * v];
    let first = p
        .forward_cached(
            &x.narrow(1, 0, pre).unwrap(),
            Some(&m.narrow(1, 0, pre).unwrap()),
            cache,
        )
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
    for r in 0..b {
        out[r * t * v..(r * t + pre) * v].copy_from_slice(&first[r * pre * v..(r + 1) * pre * v]);
    }
    for j in pre..t {
        let col: Vec<u32> = (0..b).map(|r| ids[r * t + j]).collect();
        let cm: Vec<u8> = (0..b).map(|r| mask[r * t + j]).collect();
        let mut step = Vec::new();
        p.forward_cached_last_host(&col, Some(&cm), b, 1, cache, &mut step)
            .unwrap();
        for r in 0..b {
            out[(r * t + j) * v..(r * t + j + 1) * v].copy_from_slice(&step[r * v..(r + 1) * v]);
        }
    }
    assert_eq!(cache.len(), t);
    out
}

fn masked(logits: &[f32], mask: &[u8], v: usize) -> Vec<f32> {
    logits
        .chunks(v)
        .zip(mask)
        .flat_map(|(row, &m)| row.iter().map(move |&x| if m == 1 { x } else { 0.0 }))
        .collect()
}

#[test]
fn host_and_tensor_caches_match_the_training_forward() {
    for (name, cfg) in [("qwen2", qwen2()), ("llama", llama())] {
        let p = random_policy(cfg, 7);
        let v = p.config.vocab_size;
        let (ids, mask, b, t) = batch(v as u32);
        let x = Tensor::from_slice(&ids, (b, t), &Device::Cpu).unwrap();
        let m: Vec<u32> = mask.iter().map(|&v| u32::from(v)).collect();
        let m = Tensor::from_vec(m, (b, t), &Device::Cpu).unwrap();
        let full = p
            .forward(&x, Some(&m))
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        let spread = full.iter().fold(0f32, |a, &x| a.max(x.abs()));
        assert!(
            spread > 0.5,
            "{name}: logits too flat to test anything ({spread})"
        );
        let mut host = p.new_cache(b, t + 2).unwrap();
        assert!(host.is_host());
        let got = cached_logits(&p, &mut host, &ids, &mask, b, t);
        let err = max_abs(&masked(&got, &mask, v), &masked(&full, &mask, v));
        assert!(err < 1e-4, "{name}: host cache vs training forward {err}");
        let mut tens = KvCache::new_tensors(&p.config, b, t + 2, DType::F32, &Device::Cpu).unwrap();
        assert!(!tens.is_host());
        let got_t = cached_logits(&p, &mut tens, &ids, &mask, b, t);
        let err = max_abs(&masked(&got_t, &mask, v), &masked(&full, &mask, v));
        assert!(err < 1e-4, "{name}: tensor cache vs training forward {err}");

        // Repeat rows, then drop some, then decode one more token: both caches agree.
        let next: Vec<u32> = vec![5, 5, 7, 8, 9, 10];
        let mut outs = vec![];
        for cache in [&host, &tens] {
            let mut rep = cache.repeat_rows(2).unwrap();
            let (mut a, mut bq) = (Vec::new(), Vec::new());
            p.forward_cached_last_host(&next, None, 6, 1, &mut rep, &mut a)
                .unwrap();
            let mut sel = rep.select_rows(&[4, 1]).unwrap();
            p.forward_cached_last_host(&[11, 12], None, 2, 1, &mut sel, &mut bq)
                .unwrap();
            assert_eq!(sel.next_position(0), rep.next_position(4).map(|p| p + 1));
            outs.push((a, bq));
        }
        assert!(
            max_abs(&outs[0].0, &outs[1].0) < 1e-4,
            "{name}: repeat_rows"
        );
        assert!(
            max_abs(&outs[0].1, &outs[1].1) < 1e-4,
            "{name}: select_rows"
        );
        // The two copies of row 0 got the same token: the same logits, exactly.
        assert_eq!(outs[0].0[..v], outs[0].0[v..2 * v], "{name}");
        assert!(
            max_abs(&outs[0].0[..v], &outs[0].0[2 * v..3 * v]) > 1e-3,
            "{name}"
        );
    }
}

#[test]
fn host_forward_rejects_bad_input_without_touching_the_cache() {
    let p = random_policy(qwen2(), 1);
    let mut cache = p.new_cache(2, 4).unwrap();
    let err = p
        .forward_cached_last_host(&[1, 2, 3], None, 2, 1, &mut cache, &mut Vec::new())
        .unwrap_err();
    assert!(format!("{err:#}").contains("shape"), "{err:#}");
    let err = p
        .forward_cached_last_host(&[1, 500], None, 2, 1, &mut cache, &mut Vec::new())
        .unwrap_err();
    assert!(format!("{err:#}").contains("out of range"), "{err:#}");
    let err = p
        .forward_cached_last_host(&[1; 10], None, 2, 5, &mut cache, &mut Vec::new())
        .unwrap_err();
    assert!(format!("{err:#}").contains("overflow"), "{err:#}");
    assert_eq!(cache.len(), 0);
}
