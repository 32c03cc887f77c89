//! PEFT parity of LoRA adapters, both ways, against `tests/fixtures/lora/reference.safetensors`
//! (made by `tests/fixtures/lora/make_reference.py` with peft + transformers):
//! - `qwen2/`, `llama/`: adapters written by `grpo` (`write_fixture_adapters` below, ignored
//!   unless asked for); PEFT loads them, and its logits and greedy tokens are the reference.
//! - `from-peft/`: an adapter saved by PEFT itself (rsLoRA), which `grpo` must load.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor, D};
use grpo::model::lora::{LoraConfig, TargetModules};
use grpo::model::Policy;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn here() -> PathBuf {
    repo().join("tests/fixtures/lora")
}

/// (fixture name, base model, LoRA config) of the adapters grpo writes.
fn cases() -> Vec<(&'static str, PathBuf, LoraConfig)> {
    vec![
        (
            "qwen2",
            repo().join("models/tiny-math"),
            LoraConfig {
                r: 4,
                lora_alpha: 16.0,
                lora_dropout: 0.05,
                target_modules: TargetModules::Pattern("all-linear".into()),
                use_rslora: false,
            },
        ),
        (
            "llama",
            repo().join("tests/fixtures/tiny-llama"),
            LoraConfig {
                r: 8,
                lora_alpha: 8.0,
                lora_dropout: 0.0,
                target_modules: TargetModules::List(vec![
                    "q_proj".into(),
                    "v_proj".into(),
                    "down_proj".into(),
                ]),
                use_rslora: true,
            },
        ),
    ]
}

/// A fresh adapter (seeded) whose B is set to fixed non-zero values, as training would leave it.
fn adapter(base: &Path, cfg: &LoraConfig) -> Policy {
    let mut p = Policy::load(base, DType::F32, &Device::Cpu).unwrap();
    p.add_lora(cfg, 11).unwrap();
    for (i, (name, var)) in p.trainable_vars().iter().enumerate() {
        if name.ends_with("lora_B.weight") {
            let n = var.elem_count();
            let v: Vec<f32> = (0..n)
                .map(|k| 0.05 * ((k as f32) * 0.37 + i as f32).sin())
                .collect();
            var.set(&Tensor::from_vec(v, var.shape(), &Device::Cpu).unwrap())
                .unwrap();
        }
    }
    p
}

fn reference() -> HashMap<String, Tensor> {
    candle_core::safetensors::load(here().join("reference.safetensors"), &Device::Cpu).unwrap()
}

fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
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

fn greedy(p: &Policy, prompt: &Tensor, n: usize) -> Vec<u32> {
    let mut ids = prompt.clone();
    let mut out = vec![];
    for _ in 0..n {
        let logits = p.forward(&ids, None).unwrap();
        let t = logits.dim(1).unwrap();
        let next = logits
            .narrow(1, t - 1, 1)
            .unwrap()
            .argmax(D::Minus1)
            .unwrap()
            .to_dtype(DType::U32)
            .unwrap();
        out.push(next.flatten_all().unwrap().to_vec1::<u32>().unwrap()[0]);
        ids = Tensor::cat(&[&ids, &next], 1).unwrap();
    }
    out
}

/// Regenerates the grpo-written adapters: `GRPO_WRITE_FIXTURES=1 cargo test --test lora_peft
/// -- --ignored`, then run make_reference.py.
#[test]
#[ignore]
fn write_fixture_adapters() {
    assert!(
        std::env::var_os("GRPO_WRITE_FIXTURES").is_some(),
        "set GRPO_WRITE_FIXTURES=1"
    );
    for (name, base, cfg) in cases() {
        let rel = base.strip_prefix(repo()).unwrap().display().to_string();
        adapter(&base, &cfg)
            .save_adapter(&here().join(name), &rel)
            .unwrap();
    }
}

#[test]
fn peft_loads_our_adapters_with_equal_logits_and_greedy_tokens() {
    let r = reference();
    let ids = r["input_ids"].to_dtype(DType::U32).unwrap();
    for (name, base, cfg) in cases() {
        // What grpo writes today is what PEFT was given (tensor for tensor, same config).
        let tmp = tempfile::tempdir().unwrap();
        let ours = adapter(&base, &cfg);
        ours.save_adapter(tmp.path(), "x").unwrap();
        let now = candle_core::safetensors::load(
            tmp.path().join("adapter_model.safetensors"),
            &Device::Cpu,
        )
        .unwrap();
        let vendored = candle_core::safetensors::load(
            here().join(name).join("adapter_model.safetensors"),
            &Device::Cpu,
        )
        .unwrap();
        assert_eq!(now.len(), vendored.len(), "{name}");
        for (k, t) in &now {
            assert_eq!(max_abs_diff(t, &vendored[k]), 0.0, "{name}: {k}");
        }
        let read = |p: PathBuf| -> serde_json::Value {
            let mut v: serde_json::Value =
                serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap();
            v["base_model_name_or_path"] = serde_json::Value::Null;
            v
        };
        assert_eq!(
            read(tmp.path().join("adapter_config.json")),
            read(here().join(name).join("adapter_config.json")),
            "{name}: adapter_config.json"
        );

        // The vendored adapter through the loader, against PEFT's logits and greedy tokens.
        let mut p = Policy::load(&base, DType::F32, &Device::Cpu).unwrap();
        p.load_adapter(&here().join(name)).unwrap();
        let d = max_abs_diff(
            &p.forward(&ids, None).unwrap(),
            &r[&format!("{name}.logits")],
        );
        assert!(d < 1e-4, "{name}: logits differ from PEFT's by {d}");
        let want = r[&format!("{name}.greedy")]
            .to_dtype(DType::U32)
            .unwrap()
            .to_vec1::<u32>()
            .unwrap();
        let prompt = ids.narrow(0, 0, 1).unwrap();
        assert_eq!(
            greedy(&p, &prompt, want.len()),
            want,
            "{name}: greedy tokens"
        );
        // The merged model (what the sampler and `grpo export --merge` use) agrees as well.
        let m = p.merged().unwrap();
        let d = max_abs_diff(
            &m.forward(&ids, None).unwrap(),
            &r[&format!("{name}.logits")],
        );
        assert!(d < 1e-4, "{name}: merged logits differ from PEFT's by {d}");
    }
}

#[test]
fn we_load_an_adapter_saved_by_peft() {
    let r = reference();
    let ids = r["input_ids"].to_dtype(DType::U32).unwrap();
    let mut p = Policy::load(&repo().join("models/tiny-math"), DType::F32, &Device::Cpu).unwrap();
    p.load_adapter(&here().join("from-peft")).unwrap();
    let cfg = p.lora_config().unwrap();
    assert!(cfg.use_rslora && cfg.r == 8);
    let d = max_abs_diff(&p.forward(&ids, None).unwrap(), &r["from-peft.logits"]);
    assert!(d < 1e-4, "logits differ from PEFT's by {d}");
}
