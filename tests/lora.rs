//! LoRA adapters: step 0 equals the base, an update changes only A and B (and computes no
//! gradient for the frozen weights), the gradients of A and B match finite differences, the
//! adapter-off reference and the merged model are what they claim, and save → load is exact.

use std::collections::HashMap;
use std::path::PathBuf;

use candle_core::{DType, Device, Tensor, Var};
use grpo::config::OptimSection;
use grpo::model::lora::{LoraConfig, TargetModules};
use grpo::model::Policy;
use grpo::trainer::optim::Optimizer;
use grpo::trainer::rollout::pack;
use grpo::trainer::run::completion_logprobs;

fn base() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("models/tiny-math")
}

fn lora(r: usize, targets: TargetModules, rslora: bool) -> LoraConfig {
    LoraConfig {
        r,
        lora_alpha: 16.0,
        lora_dropout: 0.0,
        target_modules: targets,
        use_rslora: rslora,
    }
}

fn all_linear() -> TargetModules {
    TargetModules::Pattern("all-linear".into())
}

/// Three completions after two prompts; B·T = 3·9 = 27 rows, unlike any weight dimension.
fn batch() -> grpo::trainer::rollout::PackedBatch {
    let prompts: Vec<&[u32]> = vec![&[5, 17, 42, 7], &[5, 17, 42, 7], &[9, 8, 11, 12]];
    let comps: Vec<&[u32]> = vec![&[30, 31, 32, 33, 34], &[30, 31, 40], &[50, 51, 52, 53]];
    pack(&prompts, &comps, 0, &Device::Cpu).unwrap()
}

/// A fixed linear functional of the completion log-probs (stands in for the GRPO loss).
fn objective(policy: &Policy) -> Tensor {
    let b = batch();
    let (logp, _) = completion_logprobs(policy, &b, 1.0, None).unwrap();
    let (r, l) = logp.dims2().unwrap();
    let w: Vec<f32> = (0..r * l)
        .map(|i| ((i * 7 % 5) as f32 - 2.0) / 3.0)
        .collect();
    let w = Tensor::from_vec(w, (r, l), &Device::Cpu)
        .unwrap()
        .to_dtype(logp.dtype())
        .unwrap();
    let lens = [5usize, 3, 4];
    let m: Vec<f32> = (0..r * l)
        .map(|i| f32::from(u8::from(i % l < lens[i / l])))
        .collect();
    let mask = Tensor::from_vec(m, (r, l), &Device::Cpu)
        .unwrap()
        .to_dtype(logp.dtype())
        .unwrap();
    (logp * w).unwrap().mul(&mask).unwrap().sum_all().unwrap()
}

fn values(vars: &[(String, Var)]) -> HashMap<String, Vec<f64>> {
    vars.iter()
        .map(|(n, v)| {
            let x = v.as_tensor().to_dtype(DType::F64).unwrap();
            (
                n.clone(),
                x.flatten_all().unwrap().to_vec1::<f64>().unwrap(),
            )
        })
        .collect()
}

fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
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

#[test]
fn fresh_adapter_equals_the_base_and_only_adapters_train() {
    let mut policy = Policy::load(&base(), DType::F32, &Device::Cpu).unwrap();
    let ids = batch().input_ids;
    let before = policy.forward(&ids, None).unwrap();
    policy.add_lora(&lora(4, all_linear(), false), 1).unwrap();
    let after = policy.forward(&ids, None).unwrap();
    // B = 0 adds exactly nothing; an adapted model runs the composed ops instead of the fused
    // CPU kernels, so the two forwards differ only by float rounding.
    let d = max_abs_diff(&before, &after);
    assert!(d < 1e-4, "B = 0: step 0 is the base (max |diff| {d})");

    let cfg = policy.config.clone();
    let trainable = policy.trainable_vars();
    assert_eq!(
        trainable.len(),
        2 * 7 * cfg.num_hidden_layers,
        "A and B of 7 projections per layer"
    );
    assert!(
        trainable[0]
            .0
            .starts_with("base_model.model.model.layers.0."),
        "PEFT keys: {}",
        trainable[0].0
    );
    let n_adapter: usize = trainable.iter().map(|(_, v)| v.elem_count()).sum();
    assert!(
        n_adapter * 10 < policy.num_parameters(),
        "{n_adapter} adapter parameters"
    );

    let base_before = values(&policy.named_vars());
    let lora_before = values(&trainable);
    let optim = OptimSection {
        learning_rate: 1e-2,
        ..OptimSection::default()
    };
    let mut opt = Optimizer::new(trainable.clone(), &optim).unwrap();
    let frozen_shapes: Vec<Vec<usize>> = policy
        .named_vars()
        .iter()
        .filter(|(_, v)| v.rank() == 2)
        .map(|(_, v)| v.dims().to_vec())
        .collect();
    for _ in 0..2 {
        let store = objective(&policy).backward().unwrap();
        // No gradient of a frozen weight's shape is computed and kept anywhere in the store.
        for id in store.get_ids() {
            let g = store.get_id(*id).unwrap();
            assert!(
                !frozen_shapes.contains(&g.dims().to_vec()),
                "a gradient of shape {:?} (a frozen weight's) was computed",
                g.dims()
            );
        }
        let grads: Vec<Tensor> = opt
            .vars()
            .iter()
            .map(|v| {
                store
                    .get(v.as_tensor())
                    .cloned()
                    .unwrap_or_else(|| v.zeros_like().unwrap())
            })
            .collect();
        opt.step(&grads, 1e-2).unwrap();
    }
    assert_eq!(
        values(&policy.named_vars()),
        base_before,
        "base weights frozen"
    );
    let lora_after = values(&policy.trainable_vars());
    for (name, v) in &lora_before {
        assert_ne!(&lora_after[name], v, "{name} was not updated");
    }
    let trained = policy.forward(&ids, None).unwrap();
    assert!(
        max_abs_diff(&before, &trained) > 1e-3,
        "the update changed the model"
    );

    // The reference is the base again, and shares its weights.
    let reference = policy.without_adapter().unwrap();
    assert_eq!(
        max_abs_diff(&before, &reference.forward(&ids, None).unwrap()),
        0.0
    );
    // Merged weights give the adapted model's logits.
    let merged = policy.merged().unwrap();
    let d = max_abs_diff(&trained, &merged.forward(&ids, None).unwrap());
    assert!(d < 1e-4, "merged vs adapter logits differ by {d}");
    // The merged model's KV-cached path (what the sampler runs) agrees too.
    let mut cache = merged.new_cache(ids.dim(0).unwrap(), 16).unwrap();
    let cached = merged.forward_cached(&ids, None, &mut cache).unwrap();
    let d = max_abs_diff(&trained, &cached);
    assert!(d < 1e-4, "cached merged vs adapter logits differ by {d}");
}

#[test]
fn adapter_gradients_match_finite_differences() {
    let mut policy = Policy::load(&base(), DType::F64, &Device::Cpu).unwrap();
    let targets = TargetModules::List(vec!["q_proj".into(), "v_proj".into(), "down_proj".into()]);
    policy.add_lora(&lora(2, targets, true), 7).unwrap();
    // Non-zero B, so that A has a gradient too.
    for (i, (name, var)) in policy.trainable_vars().iter().enumerate() {
        if name.ends_with("lora_B.weight") {
            let n = var.elem_count();
            let v: Vec<f64> = (0..n)
                .map(|k| 0.05 * ((k * 13 + i * 5) as f64).sin())
                .collect();
            var.set(&Tensor::from_vec(v, var.shape(), &Device::Cpu).unwrap())
                .unwrap();
        }
    }
    let vars = policy.trainable_vars();
    let store = objective(&policy).backward().unwrap();
    let grads: Vec<Tensor> = vars
        .iter()
        .map(|(n, v)| {
            store
                .get(v.as_tensor())
                .unwrap_or_else(|| panic!("no gradient for {n}"))
                .clone()
        })
        .collect();
    let f = |p: &Policy| {
        objective(p)
            .to_dtype(DType::F64)
            .unwrap()
            .to_scalar::<f64>()
            .unwrap()
    };
    // Directional derivatives along the gradient restricted to all A's, then to all B's: the
    // slope must be |g|² (a wrong scale, transpose or missing path fails this by far).
    for which in ["lora_A", "lora_B"] {
        let sel: Vec<usize> = (0..vars.len())
            .filter(|&i| vars[i].0.contains(which))
            .collect();
        let norm2: f64 = sel
            .iter()
            .map(|&i| {
                grads[i]
                    .sqr()
                    .unwrap()
                    .sum_all()
                    .unwrap()
                    .to_scalar::<f64>()
                    .unwrap()
            })
            .sum();
        assert!(norm2 > 1e-8, "{which}: gradient is zero");
        let h = 2e-3 / norm2.sqrt();
        let orig: Vec<Tensor> = sel
            .iter()
            .map(|&i| vars[i].1.as_tensor().copy().unwrap())
            .collect();
        let shift = |t: f64| {
            for (k, &i) in sel.iter().enumerate() {
                vars[i]
                    .1
                    .set(&(&orig[k] + (&grads[i] * t).unwrap()).unwrap())
                    .unwrap();
            }
        };
        shift(h);
        let up = f(&policy);
        shift(-h);
        let down = f(&policy);
        shift(0.0);
        let fd = (up - down) / (2.0 * h);
        let rel = (fd - norm2).abs() / norm2;
        assert!(
            rel < 1e-3,
            "{which}: finite difference {fd} vs |g|² {norm2} (rel {rel:.2e})"
        );
        // And the single largest entry.
        let (i, flat, g) = sel
            .iter()
            .flat_map(|&i| {
                let v = grads[i].flatten_all().unwrap().to_vec1::<f64>().unwrap();
                v.into_iter().enumerate().map(move |(j, g)| (i, j, g))
            })
            .max_by(|a, b| a.2.abs().total_cmp(&b.2.abs()))
            .unwrap();
        let orig = vars[i].1.as_tensor().copy().unwrap();
        let bump = |t: f64| {
            let mut v = orig.flatten_all().unwrap().to_vec1::<f64>().unwrap();
            v[flat] += t;
            vars[i]
                .1
                .set(&Tensor::from_vec(v, orig.shape(), &Device::Cpu).unwrap())
                .unwrap();
        };
        let e = 2e-3;
        bump(e);
        let up = f(&policy);
        bump(-e);
        let down = f(&policy);
        bump(0.0);
        let fd = (up - down) / (2.0 * e);
        assert!(
            (fd - g).abs() < 2e-3 * g.abs() + 1e-6,
            "{}[{flat}]: finite difference {fd} vs backward {g}",
            vars[i].0
        );
    }
}

#[test]
fn adapter_save_load_round_trip_and_errors() {
    let mut policy = Policy::load(&base(), DType::F32, &Device::Cpu).unwrap();
    let targets =
        TargetModules::Pattern(r"model\.layers\.[13]\.(self_attn\.o_proj|mlp\.up_proj)".into());
    policy.add_lora(&lora(3, targets, false), 3).unwrap();
    for (name, var) in policy.trainable_vars() {
        if name.ends_with("lora_B.weight") {
            var.set(&(var.ones_like().unwrap() * 0.01).unwrap())
                .unwrap();
        }
    }
    assert_eq!(
        policy.trainable_vars().len(),
        8,
        "the regex picks 2 modules in 2 layers"
    );
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("adapter");
    policy
        .save_adapter(&dir, &base().display().to_string())
        .unwrap();
    let cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("adapter_config.json")).unwrap())
            .unwrap();
    assert_eq!(cfg["peft_type"], "LORA");
    assert_eq!(cfg["r"], 3);
    assert_eq!(cfg["lora_alpha"], 16);
    assert_eq!(
        cfg["target_modules"],
        serde_json::json!(["o_proj", "up_proj"])
    );

    let ids = batch().input_ids;
    let want = policy.forward(&ids, None).unwrap();
    // An explicit --adapter, and an adapter directory given as the model (its base is read
    // from base_model_name_or_path).
    let mut loaded = Policy::load(&base(), DType::F32, &Device::Cpu).unwrap();
    loaded.load_adapter(&dir).unwrap();
    assert_eq!(
        max_abs_diff(&want, &loaded.forward(&ids, None).unwrap()),
        0.0
    );
    let auto = Policy::load(&dir, DType::F32, &Device::Cpu).unwrap();
    assert_eq!(max_abs_diff(&want, &auto.forward(&ids, None).unwrap()), 0.0);
    assert_eq!(
        values(&auto.trainable_vars()),
        values(&policy.trainable_vars())
    );

    // A shape that does not fit the model is an error naming the tensor.
    let mut other = policy.config.clone();
    other.hidden_size = 64;
    let bad = tmp.path().join("bad");
    std::fs::create_dir_all(&bad).unwrap();
    std::fs::copy(
        dir.join("adapter_config.json"),
        bad.join("adapter_config.json"),
    )
    .unwrap();
    let t = Tensor::zeros((3, 64), DType::F32, &Device::Cpu).unwrap();
    candle_core::safetensors::save(
        &HashMap::from([
            (
                "base_model.model.model.layers.1.mlp.up_proj.lora_A.weight".to_string(),
                t.clone(),
            ),
            (
                "base_model.model.model.layers.1.mlp.up_proj.lora_B.weight".to_string(),
                t.t().unwrap().contiguous().unwrap(),
            ),
        ]),
        bad.join("adapter_model.safetensors"),
    )
    .unwrap();
    let err = loaded.load_adapter(&bad).unwrap_err().to_string();
    assert!(
        err.contains("mlp.up_proj") && err.contains("[3, 64]"),
        "{err}"
    );
    // Unsupported PEFT options are refused, not ignored.
    let mut j = cfg.clone();
    j["use_dora"] = serde_json::json!(true);
    std::fs::write(bad.join("adapter_config.json"), j.to_string()).unwrap();
    let err = format!("{:#}", loaded.load_adapter(&bad).unwrap_err());
    assert!(err.contains("use_dora"), "{err}");
}

#[test]
fn lora_config_keys_are_checked() {
    use grpo::config::Config;
    let ok = Config::from_overrides(&[
        "lora.r=16".into(),
        "lora.lora_alpha=32".into(),
        "lora.target_modules=all-linear".into(),
    ])
    .unwrap();
    assert_eq!(ok.lora.scaling(), 2.0);
    let ok = Config::from_overrides(&["lora.r=16".into(), "lora.use_rslora=true".into()]).unwrap();
    assert_eq!(ok.lora.scaling(), 8.0 / 4.0);
    for (set, want) in [
        (
            "lora.target_modules=[\"q_proj\", \"qkv\"]",
            "lora.target_modules: `qkv`",
        ),
        ("lora.target_modules=[]", "lora.target_modules: empty list"),
        ("lora.lora_dropout=1.0", "lora.lora_dropout"),
        ("lora.lora_alpha=-1", "lora.lora_alpha"),
        ("lora.target_modules=5", "lora.target_modules"),
        ("lora.rank=4", "lora.rank"),
    ] {
        let err = format!(
            "{:#}",
            Config::from_overrides(&["lora.r=8".into(), set.into()]).unwrap_err()
        );
        assert!(err.contains(want), "{set}: {err}");
    }
    // r = 0 is off, whatever the other keys say.
    assert!(!Config::from_overrides(&[]).unwrap().lora.enabled());
}

/// Sets every B to fixed non-zero values, so that A has a gradient and the adapter a term.
fn nonzero_b(policy: &Policy) {
    for (i, (name, var)) in policy.trainable_vars().iter().enumerate() {
        if name.ends_with("lora_B.weight") {
            let n = var.elem_count();
            let v: Vec<f32> = (0..n)
                .map(|k| 0.05 * ((k * 13 + i * 5) as f32).sin())
                .collect();
            var.set(&Tensor::from_vec(v, var.shape(), &Device::Cpu).unwrap())
                .unwrap();
        }
    }
}

#[test]
fn fused_adapter_op_matches_the_composed_path() {
    // The fused training path runs an adapted projection as one op (`model::lora_op`), also
    // inside the stacked q/k/v GEMM where k may have no adapter: objective and every A/B
    // gradient must equal the composed ops'.
    let partial = TargetModules::List(vec!["q_proj".into(), "v_proj".into(), "down_proj".into()]);
    for targets in [all_linear(), partial] {
        let mut fused = Policy::load(&base(), DType::F32, &Device::Cpu).unwrap();
        fused.add_lora(&lora(3, targets.clone(), false), 5).unwrap();
        nonzero_b(&fused);
        let mut composed = Policy::load(&base(), DType::F32, &Device::Cpu).unwrap();
        composed.add_lora(&lora(3, targets, false), 5).unwrap();
        nonzero_b(&composed);
        composed.set_fused_ops(false);
        let (of, oc) = (objective(&fused), objective(&composed));
        let (sf, sc) = (of.backward().unwrap(), oc.backward().unwrap());
        let (of, oc) = (
            of.to_scalar::<f32>().unwrap(),
            oc.to_scalar::<f32>().unwrap(),
        );
        assert!((of - oc).abs() < 1e-4 * oc.abs().max(1.0), "{of} vs {oc}");
        let (vf, vc) = (fused.trainable_vars(), composed.trainable_vars());
        let mut nonzero = 0;
        for ((name, a), (_, b)) in vf.iter().zip(&vc) {
            let (ga, gb) = (sf.get(a).unwrap(), sc.get(b).unwrap());
            let scale = gb
                .abs()
                .unwrap()
                .max_all()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap();
            let d = max_abs_diff(ga, gb);
            assert!(
                d <= 1e-4 * scale.max(1e-6),
                "{name}: max |diff| {d} (max |g| {scale})"
            );
            nonzero += usize::from(scale > 0.0);
        }
        assert_eq!(nonzero, vf.len(), "every A and B has a gradient");
    }
}
