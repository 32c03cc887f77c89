//! Parity of the policy model with transformers on the tiny Qwen2 / Llama fixtures, the KV
//! cache, checkpoint round trips and error messages.

use candle_core::{DType, Device, Tensor, D};
use grpo::model::{ChatMessage, KvCache, ModelConfig, Policy, Tokenizer};
use std::collections::HashMap;
use std::path::Path;

const FIXTURES: [&str; 2] = ["tiny-qwen2", "tiny-llama"];

mod common;
use common::fixture;

fn reference(name: &str) -> HashMap<String, Tensor> {
    candle_core::safetensors::load(fixture(name).join("reference.safetensors"), &Device::Cpu)
        .unwrap()
}

fn load(name: &str) -> Policy {
    Policy::load(&fixture(name), DType::F32, &Device::Cpu).unwrap()
}

fn ids(t: &Tensor) -> Tensor {
    t.to_dtype(DType::U32).unwrap()
}

fn max_abs(a: &Tensor, b: &Tensor) -> f32 {
    assert_eq!(a.dims(), b.dims());
    (a - b)
        .unwrap()
        .abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_scalar::<f32>()
        .unwrap()
}

fn rel_l2(a: &Tensor, b: &Tensor) -> f32 {
    (common::l2_norm(&(a - b).unwrap()) / common::l2_norm(b).max(1e-30)) as f32
}

#[test]
fn logits_match_transformers() {
    for name in FIXTURES {
        let p = load(name);
        let r = reference(name);
        let logits = p.forward(&ids(&r["input_ids"]), None).unwrap();
        let err = max_abs(&logits, &r["logits"]);
        eprintln!("{name}: max |logits - ref| = {err:e}");
        assert!(err < 1e-4, "{name}: {err}");
    }
}

#[test]
fn padded_logits_match_where_mask_is_one() {
    for name in FIXTURES {
        let p = load(name);
        let r = reference(name);
        let mask = &r["padded_attention_mask"];
        let logits = p
            .forward(&ids(&r["padded_input_ids"]), Some(&ids(mask)))
            .unwrap();
        let m = mask.to_dtype(DType::F32).unwrap().unsqueeze(2).unwrap();
        let masked = logits.broadcast_mul(&m).unwrap();
        let err = max_abs(&masked, &r["padded_logits"]);
        eprintln!("{name}: max |padded logits - ref| = {err:e}");
        assert!(err < 1e-4, "{name}: {err}");
        // The mask must matter: without it the padded rows differ.
        let unmasked = p.forward(&ids(&r["padded_input_ids"]), None).unwrap();
        let diff = max_abs(&unmasked.broadcast_mul(&m).unwrap(), &r["padded_logits"]);
        assert!(diff > 1e-2, "{name}: mask had no effect ({diff})");
    }
}

#[test]
fn token_logprobs_and_gradients_match() {
    // Both the fused CPU ops (default) and the composed-op path used on other devices.
    for (name, fused) in FIXTURES.iter().flat_map(|n| [(*n, true), (*n, false)]) {
        let mut p = load(name);
        p.set_fused_ops(fused);
        let name = format!("{name} (fused ops: {fused})");
        let name = name.as_str();
        let r = reference(name.split(' ').next().unwrap());
        let lp = p.token_logprobs(&ids(&r["input_ids"]), None, 1.0).unwrap();
        let err = max_abs(&lp, &r["token_logprobs"]);
        eprintln!("{name}: max |token_logprobs - ref| = {err:e}");
        assert!(err < 1e-4, "{name}: {err}");
        let loss = lp.mean_all().unwrap().neg().unwrap();
        let l = loss.to_scalar::<f32>().unwrap();
        let lref = r["loss"].flatten_all().unwrap().to_vec1::<f32>().unwrap()[0];
        assert!((l - lref).abs() < 1e-4, "{name}: loss {l} vs {lref}");
        let grads = loss.backward().unwrap();
        let vars = p.named_vars();
        let n_ref = r.keys().filter(|k| k.starts_with("grad.")).count();
        assert_eq!(
            vars.len(),
            n_ref,
            "{name}: parameter count vs reference grads"
        );
        let mut worst = 0f32;
        for (pname, var) in &vars {
            let g = grads
                .get(var.as_tensor())
                .unwrap_or_else(|| panic!("{name}: no gradient for {pname}"));
            let e = rel_l2(g, &r[&format!("grad.{pname}")]);
            assert!(e < 1e-3, "{name}: grad {pname} rel L2 error {e}");
            worst = worst.max(e);
        }
        eprintln!("{name}: worst gradient rel L2 error = {worst:e}");
    }
}

#[test]
fn temperature_scales_logits() {
    let p = load("tiny-qwen2");
    let r = reference("tiny-qwen2");
    let x = ids(&r["input_ids"]);
    let lp = p.token_logprobs(&x, None, 0.7).unwrap();
    let logits = (p.forward(&x, None).unwrap() / 0.7).unwrap();
    let t = logits.dim(1).unwrap();
    let ls = candle_nn::ops::log_softmax(&logits.narrow(1, 0, t - 1).unwrap(), D::Minus1).unwrap();
    let tgt = x
        .narrow(1, 1, t - 1)
        .unwrap()
        .contiguous()
        .unwrap()
        .unsqueeze(2)
        .unwrap();
    let expect = ls.gather(&tgt, 2).unwrap().squeeze(2).unwrap();
    assert!(max_abs(&lp, &expect) < 1e-5);
}

#[test]
fn cached_inference_matches_full_forward() {
    for name in FIXTURES {
        let p = load(name);
        let r = reference(name);
        // Left-padded batch: prefill 20 positions, then one token at a time.
        let x = ids(&r["padded_input_ids"]);
        let mask = ids(&r["padded_attention_mask"]);
        let full = p.forward(&x, Some(&mask)).unwrap();
        let (b, t) = x.dims2().unwrap();
        let mut cache = KvCache::new(&p.config, b, t + 4, DType::F32, &Device::Cpu).unwrap();
        let pre = 20;
        let mut outs = vec![p
            .forward_cached(
                &x.narrow(1, 0, pre).unwrap(),
                Some(&mask.narrow(1, 0, pre).unwrap()),
                &mut cache,
            )
            .unwrap()];
        for i in pre..t {
            let step = p
                .forward_cached(
                    &x.narrow(1, i, 1).unwrap(),
                    Some(&mask.narrow(1, i, 1).unwrap()),
                    &mut cache,
                )
                .unwrap();
            outs.push(step);
        }
        assert_eq!(cache.len(), t);
        let cached = Tensor::cat(&outs, 1).unwrap();
        let m = mask.to_dtype(DType::F32).unwrap().unsqueeze(2).unwrap();
        let err = max_abs(
            &cached.broadcast_mul(&m).unwrap(),
            &full.broadcast_mul(&m).unwrap(),
        );
        eprintln!("{name}: max |cached - full| = {err:e}");
        assert!(err < 1e-4, "{name}: {err}");
        let err_ref = max_abs(&cached.broadcast_mul(&m).unwrap(), &r["padded_logits"]);
        assert!(err_ref < 1e-4, "{name}: cached vs transformers {err_ref}");
    }
}

#[test]
fn greedy_generation_matches_transformers() {
    for name in FIXTURES {
        let p = load(name);
        let tok = Tokenizer::load(&fixture(name)).unwrap();
        let r = reference(name);
        let json: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(fixture(name).join("reference.json")).unwrap(),
        )
        .unwrap();
        let prompts = json["prompts"].as_array().unwrap();
        let expected = json["greedy_new_token_ids"].as_array().unwrap();
        let padded = r["padded_input_ids"]
            .to_dtype(DType::U32)
            .unwrap()
            .to_vec2::<u32>()
            .unwrap();
        let pmask = r["padded_attention_mask"]
            .to_dtype(DType::U32)
            .unwrap()
            .to_vec2::<u32>()
            .unwrap();
        for (i, prompt) in prompts.iter().enumerate() {
            let prompt_ids = tok.encode(prompt.as_str().unwrap(), false).unwrap();
            let from_ref: Vec<u32> = padded[i]
                .iter()
                .zip(&pmask[i])
                .filter(|(_, &m)| m == 1)
                .map(|(&t, _)| t)
                .collect();
            assert_eq!(prompt_ids, from_ref, "{name}: tokenization of prompt {i}");
            let mut cache = p.new_cache(1, prompt_ids.len() + 16).unwrap();
            let x = Tensor::new(prompt_ids.as_slice(), &Device::Cpu)
                .unwrap()
                .unsqueeze(0)
                .unwrap();
            let mut last = p.forward_cached_last(&x, None, &mut cache).unwrap();
            let mut got = vec![];
            for _ in 0..16 {
                let next = last.argmax(D::Minus1).unwrap().to_vec1::<u32>().unwrap()[0];
                got.push(next);
                let x = Tensor::new(&[[next]], &Device::Cpu).unwrap();
                last = p.forward_cached_last(&x, None, &mut cache).unwrap();
            }
            let want: Vec<u32> = expected[i]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_u64().unwrap() as u32)
                .collect();
            assert_eq!(got, want, "{name}: greedy tokens for prompt {i}");
            let text = tok.decode(&got, false).unwrap();
            assert_eq!(text, json["greedy_new_text"][i].as_str().unwrap());
        }
    }
}

#[test]
fn cache_repeat_and_select_rows() {
    let p = load("tiny-llama");
    let r = reference("tiny-llama");
    let x = ids(&r["padded_input_ids"]);
    let mask = ids(&r["padded_attention_mask"]);
    let (_, t) = x.dims2().unwrap();
    let mut cache = p.new_cache(2, t + 3).unwrap();
    p.forward_cached(&x, Some(&mask), &mut cache).unwrap();
    let mut rep = cache.repeat_rows(2).unwrap();
    assert_eq!(rep.batch_size(), 4);
    assert_eq!(rep.len(), t);
    // Rows 0,1 continue prompt 0 with different tokens; rows 2,3 prompt 1.
    let next = Tensor::new(&[[5u32], [6], [7], [8]], &Device::Cpu).unwrap();
    let got = p.forward_cached(&next, None, &mut rep).unwrap();
    let xs = x.to_vec2::<u32>().unwrap();
    let ms = mask.to_vec2::<u32>().unwrap();
    for (row, tokn) in [5u32, 6, 7, 8].iter().enumerate() {
        let src = row / 2;
        let mut seq: Vec<u32> = xs[src].clone();
        seq.push(*tokn);
        let mut m: Vec<u32> = ms[src].clone();
        m.push(1);
        let full = p
            .forward(
                &Tensor::new(seq.as_slice(), &Device::Cpu)
                    .unwrap()
                    .unsqueeze(0)
                    .unwrap(),
                Some(
                    &Tensor::new(m.as_slice(), &Device::Cpu)
                        .unwrap()
                        .unsqueeze(0)
                        .unwrap(),
                ),
            )
            .unwrap();
        let want = full.narrow(1, t, 1).unwrap().squeeze(0).unwrap();
        let have = got.narrow(0, row, 1).unwrap().squeeze(0).unwrap();
        assert!(max_abs(&have, &want) < 1e-4, "row {row}");
    }
    // Keep rows 3 and 0 (in that order) and take another step.
    let mut sel = rep.select_rows(&[3, 0]).unwrap();
    assert_eq!(sel.batch_size(), 2);
    let next2 = Tensor::new(&[[9u32], [10]], &Device::Cpu).unwrap();
    let got2 = p.forward_cached(&next2, None, &mut sel).unwrap();
    for (i, (src_row, tok1, tok2)) in [(1usize, 8u32, 9u32), (0, 5, 10)].iter().enumerate() {
        let mut seq = xs[*src_row].clone();
        seq.extend([*tok1, *tok2]);
        let mut m = ms[*src_row].clone();
        m.extend([1, 1]);
        let full = p
            .forward(
                &Tensor::new(seq.as_slice(), &Device::Cpu)
                    .unwrap()
                    .unsqueeze(0)
                    .unwrap(),
                Some(
                    &Tensor::new(m.as_slice(), &Device::Cpu)
                        .unwrap()
                        .unsqueeze(0)
                        .unwrap(),
                ),
            )
            .unwrap();
        let want = full.narrow(1, t + 1, 1).unwrap().squeeze(0).unwrap();
        let have = got2.narrow(0, i, 1).unwrap().squeeze(0).unwrap();
        assert!(max_abs(&have, &want) < 1e-4, "selected row {i}");
    }
    // Overflowing the capacity is an error, not a panic.
    let too_many = Tensor::zeros((2, 2), DType::U32, &Device::Cpu).unwrap();
    let e = p
        .forward_cached(&too_many, None, &mut sel)
        .unwrap_err()
        .to_string();
    assert!(e.contains("capacity"), "{e}");
    assert!(sel.select_rows(&[2]).is_err());
}

fn safetensors_header(path: &Path) -> serde_json::Map<String, serde_json::Value> {
    let bytes = std::fs::read(path).unwrap();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    serde_json::from_slice(&bytes[8..8 + n]).unwrap()
}

#[test]
fn saving_a_loaded_fixture_reproduces_it() {
    for name in FIXTURES {
        let p = load(name);
        let tmp = tempfile::tempdir().unwrap();
        let out = tmp.path().join("ckpt");
        p.save(&out).unwrap();
        // Same tensors: names, dtypes, shapes, values.
        let orig =
            candle_core::safetensors::load(fixture(name).join("model.safetensors"), &Device::Cpu)
                .unwrap();
        let saved =
            candle_core::safetensors::load(out.join("model.safetensors"), &Device::Cpu).unwrap();
        let mut a: Vec<_> = orig.keys().collect();
        let mut b: Vec<_> = saved.keys().collect();
        a.sort();
        b.sort();
        assert_eq!(a, b, "{name}: tensor names");
        for (k, t) in &orig {
            assert_eq!(t.dtype(), saved[k].dtype(), "{name}: {k} dtype");
            assert_eq!(max_abs(t, &saved[k]), 0.0, "{name}: {k} values");
        }
        let h_orig = safetensors_header(&fixture(name).join("model.safetensors"));
        let h_saved = safetensors_header(&out.join("model.safetensors"));
        assert_eq!(h_saved.get("__metadata__"), h_orig.get("__metadata__"));
        // Same config keys and values.
        let read = |p: &Path| -> serde_json::Value {
            serde_json::from_str(&std::fs::read_to_string(p.join("config.json")).unwrap()).unwrap()
        };
        assert_eq!(read(&out), read(&fixture(name)), "{name}: config.json");
        // Only the two files, no temporary directory left behind.
        let mut files: Vec<_> = std::fs::read_dir(tmp.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        files.sort();
        assert_eq!(files, vec!["ckpt"]);
        // Round trip: bit-identical logits; saving over an existing directory works too.
        let q = Policy::load(&out, DType::F32, &Device::Cpu).unwrap();
        q.save(&out).unwrap();
        let r = reference(name);
        let x = ids(&r["input_ids"]);
        let la = p.forward(&x, None).unwrap();
        let lb = q.forward(&x, None).unwrap();
        assert_eq!(max_abs(&la, &lb), 0.0);
        assert_eq!(p.num_parameters(), q.num_parameters());
    }
}

#[test]
fn num_parameters_matches_transformers() {
    for name in FIXTURES {
        let json: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(fixture(name).join("reference.json")).unwrap(),
        )
        .unwrap();
        assert_eq!(
            load(name).num_parameters() as u64,
            json["num_parameters"].as_u64().unwrap()
        );
    }
}

fn other_shapes() -> Vec<serde_json::Value> {
    vec![
        serde_json::json!({"model_type": "qwen2", "vocab_size": 97, "hidden_size": 48,
            "intermediate_size": 80, "num_hidden_layers": 3, "num_attention_heads": 3,
            "num_key_value_heads": 1, "rms_norm_eps": 1e-6, "rope_theta": 1e6,
            "tie_word_embeddings": false, "max_position_embeddings": 128, "eos_token_id": 2,
            "initializer_range": 0.2, "torch_dtype": "float32"}),
        serde_json::json!({"model_type": "llama", "vocab_size": 64, "hidden_size": 32,
            "intermediate_size": 40, "num_hidden_layers": 2, "num_attention_heads": 4,
            "num_key_value_heads": 4, "head_dim": 16, "attention_bias": true, "mlp_bias": true,
            "rope_theta": 5e5, "tie_word_embeddings": true, "initializer_range": 0.2,
            "rope_scaling": {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                "high_freq_factor": 4.0, "original_max_position_embeddings": 16}}),
    ]
}

#[test]
fn random_models_of_other_shapes_round_trip() {
    for cfg in other_shapes() {
        let config = ModelConfig::from_json(cfg.clone(), "test").unwrap();
        let p = Policy::new_random(config.clone(), 7, DType::F32, &Device::Cpu).unwrap();
        // Deterministic in the seed, different across seeds.
        let p2 = Policy::new_random(config.clone(), 7, DType::F32, &Device::Cpu).unwrap();
        let p3 = Policy::new_random(config, 8, DType::F32, &Device::Cpu).unwrap();
        let x = Tensor::new(
            &[[3u32, 5, 7, 11, 13, 17], [0, 0, 1, 2, 3, 4]],
            &Device::Cpu,
        )
        .unwrap();
        let m = Tensor::new(&[[1u32, 1, 1, 1, 1, 1], [0, 0, 1, 1, 1, 1]], &Device::Cpu).unwrap();
        let la = p.forward(&x, Some(&m)).unwrap();
        assert_eq!(max_abs(&la, &p2.forward(&x, Some(&m)).unwrap()), 0.0);
        assert!(max_abs(&la, &p3.forward(&x, Some(&m)).unwrap()) > 1e-3);
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("m");
        p.save(&dir).unwrap();
        let q = Policy::load(&dir, DType::F32, &Device::Cpu).unwrap();
        assert_eq!(max_abs(&la, &q.forward(&x, Some(&m)).unwrap()), 0.0);
        // Cached path agrees with the training path on this shape too.
        let mut cache = q.new_cache(2, 8).unwrap();
        let a = q
            .forward_cached(
                &x.narrow(1, 0, 4).unwrap(),
                Some(&m.narrow(1, 0, 4).unwrap()),
                &mut cache,
            )
            .unwrap();
        let b = q
            .forward_cached(&x.narrow(1, 4, 2).unwrap(), None, &mut cache)
            .unwrap();
        let cached = Tensor::cat(&[a, b], 1).unwrap();
        let keep = m.to_dtype(DType::F32).unwrap().unsqueeze(2).unwrap();
        let err = max_abs(
            &cached.broadcast_mul(&keep).unwrap(),
            &la.broadcast_mul(&keep).unwrap(),
        );
        assert!(err < 1e-4, "{cfg}: cached vs full {err}");
        // Every parameter receives a gradient.
        let loss = q
            .token_logprobs(&x, Some(&m), 1.0)
            .unwrap()
            .sum_all()
            .unwrap();
        let grads = loss.backward().unwrap();
        for (n, v) in q.named_vars() {
            assert!(grads.get(v.as_tensor()).is_some(), "{n} has no gradient");
        }
        let saved = safetensors_header(&dir.join("model.safetensors"));
        let tied = cfg["tie_word_embeddings"].as_bool().unwrap();
        assert_eq!(saved.contains_key("lm_head.weight"), !tied);
    }
}

#[test]
fn error_messages_name_the_problem() {
    let tmp = tempfile::tempdir().unwrap();
    // Missing directory.
    let missing = tmp.path().join("nope");
    let e = format!(
        "{:#}",
        Policy::load(&missing, DType::F32, &Device::Cpu)
            .err()
            .unwrap()
    );
    assert!(e.contains("does not exist") && e.contains("nope"), "{e}");
    // Missing config.json.
    let empty = tmp.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    let e = format!(
        "{:#}",
        Policy::load(&empty, DType::F32, &Device::Cpu)
            .err()
            .unwrap()
    );
    assert!(e.contains("config.json"), "{e}");
    // Corrupt (truncated) safetensors.
    let bad = tmp.path().join("bad");
    std::fs::create_dir(&bad).unwrap();
    std::fs::copy(
        fixture("tiny-qwen2").join("config.json"),
        bad.join("config.json"),
    )
    .unwrap();
    let bytes = std::fs::read(fixture("tiny-qwen2").join("model.safetensors")).unwrap();
    std::fs::write(bad.join("model.safetensors"), &bytes[..bytes.len() / 2]).unwrap();
    let e = format!(
        "{:#}",
        Policy::load(&bad, DType::F32, &Device::Cpu).err().unwrap()
    );
    assert!(
        e.contains(&bad.join("model.safetensors").display().to_string()),
        "{e}"
    );
    // Unsupported model_type.
    let mut cfg: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(fixture("tiny-qwen2").join("config.json")).unwrap(),
    )
    .unwrap();
    cfg["model_type"] = "mistral".into();
    std::fs::write(bad.join("config.json"), cfg.to_string()).unwrap();
    let e = format!(
        "{:#}",
        Policy::load(&bad, DType::F32, &Device::Cpu).err().unwrap()
    );
    assert!(
        e.contains("mistral")
            && e.contains("qwen2")
            && e.contains("llama")
            && e.contains("config.json"),
        "{e}"
    );
    // Missing tensor, and a shape mismatch.
    let part = tmp.path().join("part");
    std::fs::create_dir(&part).unwrap();
    std::fs::copy(
        fixture("tiny-llama").join("config.json"),
        part.join("config.json"),
    )
    .unwrap();
    let mut ts = candle_core::safetensors::load(
        fixture("tiny-llama").join("model.safetensors"),
        &Device::Cpu,
    )
    .unwrap();
    ts.remove("model.layers.1.mlp.up_proj.weight");
    candle_core::safetensors::save(&ts, part.join("model.safetensors")).unwrap();
    let e = format!(
        "{:#}",
        Policy::load(&part, DType::F32, &Device::Cpu).err().unwrap()
    );
    assert!(e.contains("model.layers.1.mlp.up_proj.weight"), "{e}");
    ts.insert(
        "model.layers.1.mlp.up_proj.weight".into(),
        Tensor::zeros((3, 48), DType::F32, &Device::Cpu).unwrap(),
    );
    candle_core::safetensors::save(&ts, part.join("model.safetensors")).unwrap();
    let e = format!(
        "{:#}",
        Policy::load(&part, DType::F32, &Device::Cpu).err().unwrap()
    );
    assert!(
        e.contains("model.layers.1.mlp.up_proj.weight")
            && e.contains("[3, 48]")
            && e.contains("[112, 48]"),
        "{e}"
    );
}

#[test]
fn resolves_local_dirs_and_hub_cache_snapshots() {
    let local = fixture("tiny-qwen2");
    assert_eq!(
        grpo::model::resolve_model_dir(local.to_str().unwrap(), None).unwrap(),
        local
    );
    // A hub-cache layout: models--org--name/refs/main + snapshots/<commit>/{config.json, ...}.
    let tmp = tempfile::tempdir().unwrap();
    let hub = tmp.path().join("hub");
    let repo = hub.join("models--org--tiny");
    let commit = "abc1230000000000000000000000000000000000";
    std::fs::create_dir_all(repo.join("refs")).unwrap();
    std::fs::write(repo.join("refs/main"), commit).unwrap();
    let snap = repo.join("snapshots").join(commit);
    std::fs::create_dir_all(&snap).unwrap();
    for f in [
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "tokenizer_config.json",
    ] {
        std::fs::copy(local.join(f), snap.join(f)).unwrap();
    }
    // The only test in this binary that touches HF_HUB_CACHE / HF_HUB_OFFLINE (offline: a
    // model that is not cached must fail here, never reach the network).
    std::env::set_var("HF_HUB_CACHE", &hub);
    std::env::set_var("HF_HUB_OFFLINE", "1");
    assert_eq!(
        grpo::model::resolve_model_dir("org/tiny", None).unwrap(),
        snap
    );
    let e = format!(
        "{:#}",
        grpo::model::resolve_model_dir("no-such-org/no-such-model", None).unwrap_err()
    );
    assert!(
        e.contains("no-such-org/no-such-model")
            && e.contains("not fully in the Hugging Face cache")
            && e.contains(&hub.display().to_string()),
        "{e}"
    );
    // An incomplete snapshot (no weights) is not used.
    std::fs::remove_file(snap.join("model.safetensors")).unwrap();
    let e = format!(
        "{:#}",
        grpo::model::resolve_model_dir("org/tiny", None).unwrap_err()
    );
    assert!(e.contains("no model.safetensors"), "{e}");
}

#[test]
fn tokenizer_and_chat_template() {
    let tok = Tokenizer::load(&fixture("tiny-qwen2")).unwrap();
    assert_eq!(tok.vocab_size(), 512);
    assert_eq!(tok.eos_token_ids(), vec![2]);
    assert_eq!(tok.pad_token_id(), 0);
    assert!(tok.has_chat_template());
    let msgs = [
        ChatMessage::new("system", "Be brief."),
        ChatMessage::new("user", "What is 2+2?"),
    ];
    let s = tok.apply_chat_template(&msgs, true).unwrap();
    assert_eq!(
        s,
        "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n"
    );
    let s = tok.apply_chat_template(&msgs[1..], false).unwrap();
    assert_eq!(s, "<|im_start|>user\nWhat is 2+2?<|im_end|>\n");
    // Special tokens are single ids and survive a round trip.
    let ids = tok.encode(&s, false).unwrap();
    assert_eq!(ids[0], 1);
    assert_eq!(ids[ids.len() - 2], 2);
    assert_eq!(tok.decode(&ids, false).unwrap(), s);
    assert_eq!(tok.decode(&ids, true).unwrap(), "user\nWhat is 2+2?\n");
    // Without a template: the plain content.
    let tmp = tempfile::tempdir().unwrap();
    std::fs::copy(
        fixture("tiny-qwen2").join("tokenizer.json"),
        tmp.path().join("tokenizer.json"),
    )
    .unwrap();
    let plain = Tokenizer::load(tmp.path()).unwrap();
    assert!(!plain.has_chat_template());
    assert_eq!(
        plain.apply_chat_template(&msgs[1..], true).unwrap(),
        "What is 2+2?"
    );
    assert!(plain.eos_token_ids().is_empty());
    // copy_tokenizer_files copies what exists.
    let out = tmp.path().join("out");
    let copied = grpo::model::copy_tokenizer_files(&fixture("tiny-qwen2"), &out).unwrap();
    assert_eq!(
        copied,
        vec![
            "tokenizer.json",
            "tokenizer_config.json",
            "generation_config.json"
        ]
    );
    let t2 = Tokenizer::load(&out).unwrap();
    assert_eq!(
        t2.apply_chat_template(&msgs, true).unwrap(),
        tok.apply_chat_template(&msgs, true).unwrap()
    );
}

#[test]
fn bf16_checkpoints_keep_their_dtype_on_save() {
    // Hub checkpoints are mostly bf16: loaded as f32 for CPU compute, saved back as bf16.
    let mut cfg = other_shapes().remove(0);
    cfg["torch_dtype"] = "bfloat16".into();
    let config = ModelConfig::from_json(cfg, "test").unwrap();
    let p = Policy::new_random(config, 3, DType::F32, &Device::Cpu).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let a = tmp.path().join("a");
    p.save(&a).unwrap();
    let header = safetensors_header(&a.join("model.safetensors"));
    assert_eq!(header["model.norm.weight"]["dtype"], "BF16");
    assert_eq!(header["lm_head.weight"]["dtype"], "BF16");
    let q = Policy::load(&a, DType::F32, &Device::Cpu).unwrap();
    // Values are the bf16 roundings of the f32 originals.
    for (name, var) in p.named_vars() {
        let rounded = var
            .as_tensor()
            .to_dtype(DType::BF16)
            .unwrap()
            .to_dtype(DType::F32)
            .unwrap();
        let loaded = q
            .named_vars()
            .into_iter()
            .find(|(n, _)| *n == name)
            .unwrap()
            .1;
        assert_eq!(max_abs(&rounded, loaded.as_tensor()), 0.0, "{name}");
    }
    // Saving the loaded model again is bit-identical.
    let b = tmp.path().join("b");
    q.save(&b).unwrap();
    assert_eq!(
        std::fs::read(a.join("model.safetensors")).unwrap(),
        std::fs::read(b.join("model.safetensors")).unwrap()
    );
    // bf16 compute on the CPU is mixed precision: f32 parameters holding the bf16 values, and
    // a save writes the same bf16 file.
    let m = Policy::load(&a, DType::BF16, &Device::Cpu).unwrap();
    assert_eq!(m.precision(), grpo::model::kernels::bf16::Precision::Bf16);
    assert!(m.named_vars().iter().all(|(_, v)| v.dtype() == DType::F32));
    let c = tmp.path().join("c");
    m.save(&c).unwrap();
    assert_eq!(
        std::fs::read(a.join("model.safetensors")).unwrap(),
        std::fs::read(c.join("model.safetensors")).unwrap()
    );
}

#[test]
fn sharded_checkpoints_load() {
    let src = fixture("tiny-llama");
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("sharded");
    std::fs::create_dir(&dir).unwrap();
    std::fs::copy(src.join("config.json"), dir.join("config.json")).unwrap();
    let all = candle_core::safetensors::load(src.join("model.safetensors"), &Device::Cpu).unwrap();
    let (mut s1, mut s2) = (HashMap::new(), HashMap::new());
    let mut weight_map = serde_json::Map::new();
    for (k, t) in all {
        let file = if k.contains("layers.1") || k.starts_with("lm_head") {
            s2.insert(k.clone(), t);
            "model-00002-of-00002.safetensors"
        } else {
            s1.insert(k.clone(), t);
            "model-00001-of-00002.safetensors"
        };
        weight_map.insert(k, file.into());
    }
    candle_core::safetensors::save(&s1, dir.join("model-00001-of-00002.safetensors")).unwrap();
    candle_core::safetensors::save(&s2, dir.join("model-00002-of-00002.safetensors")).unwrap();
    let index = serde_json::json!({"metadata": {}, "weight_map": weight_map});
    std::fs::write(dir.join("model.safetensors.index.json"), index.to_string()).unwrap();
    let p = Policy::load(&dir, DType::F32, &Device::Cpu).unwrap();
    let r = reference("tiny-llama");
    let logits = p.forward(&ids(&r["input_ids"]), None).unwrap();
    assert!(max_abs(&logits, &r["logits"]) < 1e-4);
    // A missing shard is named.
    std::fs::remove_file(dir.join("model-00002-of-00002.safetensors")).unwrap();
    let e = format!(
        "{:#}",
        Policy::load(&dir, DType::F32, &Device::Cpu).err().unwrap()
    );
    assert!(e.contains("model-00002-of-00002.safetensors"), "{e}");
}

#[test]
fn completion_logprobs_match_the_composed_reference() {
    // What a trainer would write by hand: full forward, narrow, log_softmax, gather, entropy.
    let r = reference("tiny-qwen2");
    let x = ids(&r["padded_input_ids"]);
    let mask = ids(&r["padded_attention_mask"]);
    let (start, l) = (30, 16);
    let targets = x.narrow(1, start + 1, l).unwrap();
    let mut bias = vec![0f32; 512];
    for b in bias.iter_mut().skip(300) {
        *b = -1e9;
    }
    let bias = Tensor::from_vec(bias, 512, &Device::Cpu).unwrap();
    for (temp, vb) in [(1.0, None), (0.6, None), (0.8, Some(&bias))] {
        for fused in [true, false] {
            let mut p = load("tiny-qwen2");
            p.set_fused_ops(fused);
            let (lp, ent) = p
                .completion_logprobs(&x, Some(&mask), start, &targets, temp, vb)
                .unwrap();
            let grads = lp.sum_all().unwrap().backward().unwrap();
            let q = load("tiny-qwen2");
            let logits = q
                .forward(&x, Some(&mask))
                .unwrap()
                .narrow(1, start, l)
                .unwrap();
            let mut z = (logits / temp).unwrap();
            if let Some(b) = vb {
                z = z.broadcast_add(b).unwrap();
            }
            let ls = candle_nn::ops::log_softmax(&z, D::Minus1).unwrap();
            let want = ls
                .gather(&targets.unsqueeze(2).unwrap().contiguous().unwrap(), 2)
                .unwrap()
                .squeeze(2)
                .unwrap();
            let want_ent = (ls.exp().unwrap() * &ls)
                .unwrap()
                .sum(D::Minus1)
                .unwrap()
                .neg()
                .unwrap();
            assert!(max_abs(&lp, &want) < 1e-4, "temp {temp} fused {fused}");
            assert!(
                max_abs(&ent, &want_ent) < 1e-4,
                "entropy temp {temp} fused {fused}"
            );
            let want_grads = want.sum_all().unwrap().backward().unwrap();
            for ((n, a), (_, b)) in p.named_vars().iter().zip(q.named_vars().iter()) {
                let e = rel_l2(grads.get(a).unwrap(), want_grads.get(b).unwrap());
                assert!(e < 1e-4, "{n}: {e} (temp {temp}, fused {fused})");
            }
        }
    }
}

#[test]
fn degenerate_inputs_are_errors_not_panics() {
    let p = load("tiny-qwen2");
    let empty = Tensor::zeros((1, 0), DType::U32, &Device::Cpu).unwrap();
    assert!(p.forward(&empty, None).is_err());
    let mut cache = p.new_cache(1, 4).unwrap();
    assert!(p.forward_cached_last(&empty, None, &mut cache).is_err());
    let one = Tensor::new(&[[5u32]], &Device::Cpu).unwrap();
    assert!(p.token_logprobs(&one, None, 1.0).is_err());
    assert!(p
        .token_logprobs(&Tensor::new(&[[5u32, 6]], &Device::Cpu).unwrap(), None, 0.0)
        .is_err());
    let oov = Tensor::new(&[[5u32, 512]], &Device::Cpu).unwrap();
    let e = p.forward(&oov, None).unwrap_err().to_string();
    assert!(e.contains("512") && e.contains("vocab_size"), "{e}");
    let bad_mask = Tensor::ones((1, 3), DType::U32, &Device::Cpu).unwrap();
    assert!(p
        .forward(
            &Tensor::new(&[[5u32, 6]], &Device::Cpu).unwrap(),
            Some(&bad_mask)
        )
        .is_err());
    // Selecting no rows (every sequence finished) gives an empty cache.
    p.forward_cached(&one, None, &mut cache).unwrap();
    let none = cache.select_rows(&[]).unwrap();
    assert_eq!((none.batch_size(), none.len(), none.capacity()), (0, 1, 4));
    assert_eq!(cache.repeat_rows(3).unwrap().next_position(2), Some(1));
}
