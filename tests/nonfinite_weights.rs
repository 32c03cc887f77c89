//! Damaged checkpoints: a NaN or infinite value in any stored float weight (f32, bf16, f16, f64;
//! first or last element; one file or a shard) is refused at load, naming the tensor and the
//! file, by the library and by `train`, `eval`, `generate` and `export` (exit 2); the opt-out
//! `--allow-non-finite` / `model.allow_non_finite` loads it. Denormals, huge finite values and
//! files mixing dtypes load unchanged.
//!
//! Every case is a rewritten copy of the vendored `tests/fixtures/tiny-qwen2` (f32 on disk).

mod common;

use std::path::{Path, PathBuf};

use candle_core::{DType, Device};
use common::{fails_with, fixture, grpo, stderr, succeeds, write_train_config};
use grpo::model::Policy;
use half::{bf16, f16};
use safetensors::Dtype;

const VICTIM: &str = "model.layers.1.mlp.down_proj.weight";

/// The fixture's tensors as (name, shape, f32 values), in file order.
fn fixture_tensors() -> Vec<(String, Vec<usize>, Vec<f32>)> {
    let bytes = std::fs::read(fixture("tiny-qwen2").join("model.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut out: Vec<_> = st
        .tensors()
        .into_iter()
        .map(|(n, v)| {
            assert_eq!(v.dtype(), Dtype::F32);
            let vals = v
                .data()
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect();
            (n, v.shape().to_vec(), vals)
        })
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

fn encode(vals: &[f32], dtype: Dtype) -> Vec<u8> {
    match dtype {
        Dtype::F32 => vals.iter().flat_map(|v| v.to_le_bytes()).collect(),
        Dtype::F64 => vals
            .iter()
            .flat_map(|v| f64::from(*v).to_le_bytes())
            .collect(),
        Dtype::BF16 => vals
            .iter()
            .flat_map(|v| bf16::from_f32(*v).to_le_bytes())
            .collect(),
        Dtype::F16 => vals
            .iter()
            .flat_map(|v| f16::from_f32(*v).to_le_bytes())
            .collect(),
        other => panic!("{other:?}"),
    }
}

/// Writes `tensors` into `files` safetensors files (plus an index when more than one), each
/// tensor stored as `dtype_of(name)`.
fn write_model(
    dir: &Path,
    tensors: &[(String, Vec<usize>, Vec<f32>)],
    dtype_of: impl Fn(&str) -> Dtype,
    files: usize,
) {
    std::fs::create_dir_all(dir).unwrap();
    for f in [
        "config.json",
        "tokenizer.json",
        "tokenizer_config.json",
        "generation_config.json",
    ] {
        std::fs::copy(fixture("tiny-qwen2").join(f), dir.join(f)).unwrap();
    }
    let encoded: Vec<(String, Dtype, Vec<usize>, Vec<u8>)> = tensors
        .iter()
        .map(|(n, s, v)| {
            let d = dtype_of(n);
            (n.clone(), d, s.clone(), encode(v, d))
        })
        .collect();
    let per_file = encoded.len().div_ceil(files);
    let mut weight_map = serde_json::Map::new();
    for (i, chunk) in encoded.chunks(per_file).enumerate() {
        let name = if files == 1 {
            "model.safetensors".to_string()
        } else {
            format!("model-{:05}-of-{files:05}.safetensors", i + 1)
        };
        let views: Vec<(String, safetensors::tensor::TensorView)> = chunk
            .iter()
            .map(|(n, d, s, b)| {
                weight_map.insert(n.clone(), name.clone().into());
                (
                    n.clone(),
                    safetensors::tensor::TensorView::new(*d, s.clone(), b).unwrap(),
                )
            })
            .collect();
        safetensors::serialize_to_file(views, None, &dir.join(&name)).unwrap();
    }
    if files > 1 {
        let index = serde_json::json!({"metadata": {}, "weight_map": weight_map});
        std::fs::write(
            dir.join("model.safetensors.index.json"),
            serde_json::to_string_pretty(&index).unwrap(),
        )
        .unwrap();
    }
}

/// A copy of the fixture with `value` at element `at` of `victim`, every tensor stored as
/// `dtype`, in `files` files.
fn damaged(
    dir: &Path,
    victim: &str,
    at: impl Fn(usize) -> usize,
    value: f32,
    dtype: Dtype,
    files: usize,
) -> PathBuf {
    let mut tensors = fixture_tensors();
    let t = tensors.iter_mut().find(|t| t.0 == victim).unwrap();
    let i = at(t.2.len());
    t.2[i] = value;
    write_model(dir, &tensors, |_| dtype, files);
    dir.to_path_buf()
}

fn load(dir: &Path) -> anyhow::Result<Policy> {
    Policy::load(dir, DType::F32, &Device::Cpu)
}

#[test]
fn nan_and_infinities_in_every_float_dtype_are_refused_naming_the_tensor() {
    let tmp = tempfile::tempdir().unwrap();
    let mut case = 0;
    for dtype in [Dtype::F32, Dtype::BF16, Dtype::F16, Dtype::F64] {
        for (value, kind) in [
            (f32::NAN, "NaN"),
            (f32::INFINITY, "+inf"),
            (f32::NEG_INFINITY, "-inf"),
        ] {
            for (where_, at) in [("first", 0usize), ("last", usize::MAX)] {
                case += 1;
                let dir = tmp.path().join(format!("m{case}"));
                let pick = |n: usize| if at == usize::MAX { n - 1 } else { at };
                damaged(&dir, VICTIM, pick, value, dtype, 1);
                let err = format!(
                    "{:#}",
                    load(&dir).err().unwrap_or_else(|| {
                        panic!("{dtype:?} {kind} at the {where_} element was accepted")
                    })
                );
                let n: usize = fixture_tensors()
                    .iter()
                    .find(|t| t.0 == VICTIM)
                    .map(|t| t.2.len())
                    .unwrap();
                let index = if at == usize::MAX { n - 1 } else { 0 };
                for needle in [
                    VICTIM,
                    kind,
                    "model.safetensors",
                    &format!("flat index {index}"),
                    "allow_non_finite",
                ] {
                    assert!(
                        err.contains(needle),
                        "{dtype:?} {kind} {where_}: `{needle}` in {err}"
                    );
                }
            }
        }
    }
}

#[test]
fn a_nan_in_the_second_shard_names_that_shard() {
    let tmp = tempfile::tempdir().unwrap();
    // Tensors are sorted by name and split in two: `model.norm.weight` is in the second half.
    let dir = damaged(
        tmp.path(),
        "model.norm.weight",
        |n| n / 2,
        f32::NAN,
        Dtype::BF16,
        2,
    );
    let err = format!("{:#}", load(&dir).err().expect("accepted"));
    assert!(err.contains("model-00002-of-00002.safetensors"), "{err}");
    assert!(
        err.contains("model.norm.weight") && err.contains("NaN"),
        "{err}"
    );
    // The same shards undamaged load.
    write_model(
        &tmp.path().join("ok"),
        &fixture_tensors(),
        |_| Dtype::BF16,
        2,
    );
    load(&tmp.path().join("ok")).unwrap();
}

#[test]
fn denormals_huge_finite_values_and_mixed_dtypes_load_unchanged() {
    let tmp = tempfile::tempdir().unwrap();
    let mut tensors = fixture_tensors();
    let special = [
        f32::MIN_POSITIVE / 8.0, // f32 denormal
        f32::MAX,
        f32::MIN,
        -0.0,
        1e-40,
    ];
    let t = tensors.iter_mut().find(|t| t.0 == VICTIM).unwrap();
    t.2[..special.len()].copy_from_slice(&special);
    // f32 and f64 keep the values; a mixed file stores other tensors as bf16 and f16.
    for (i, victim_dtype) in [Dtype::F32, Dtype::F64].into_iter().enumerate() {
        let dir = tmp.path().join(format!("m{i}"));
        write_model(
            &dir,
            &tensors,
            |n| {
                if n == VICTIM {
                    victim_dtype
                } else if n.contains("self_attn") {
                    Dtype::BF16
                } else if n.contains("mlp") {
                    Dtype::F16
                } else {
                    Dtype::F32
                }
            },
            1,
        );
        let p = load(&dir).unwrap();
        let vars = p.named_vars();
        let w = vars
            .iter()
            .find(|(n, _)| n == VICTIM)
            .unwrap()
            .1
            .as_tensor()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        for (got, want) in w.iter().zip(special) {
            assert_eq!(got.to_bits(), want.to_bits(), "{victim_dtype:?}");
        }
    }
    // bf16 and f16 extremes (their own max and smallest denormal) are finite too.
    let mut tensors = fixture_tensors();
    let v = tensors.iter().position(|t| t.0 == VICTIM).unwrap();
    tensors[v].2[0] = bf16::MAX.to_f32();
    tensors[v].2[1] = bf16::from_bits(1).to_f32();
    write_model(&tmp.path().join("b"), &tensors, |_| Dtype::BF16, 1);
    load(&tmp.path().join("b")).unwrap();
    tensors[v].2[0] = f16::MAX.to_f32();
    tensors[v].2[1] = f16::from_bits(1).to_f32();
    write_model(&tmp.path().join("h"), &tensors, |_| Dtype::F16, 1);
    load(&tmp.path().join("h")).unwrap();
}

#[test]
fn a_bad_value_in_one_tensor_of_a_mixed_dtype_file_is_named() {
    let tmp = tempfile::tempdir().unwrap();
    let mut tensors = fixture_tensors();
    let t = tensors.iter_mut().find(|t| t.0 == VICTIM).unwrap();
    t.2[3] = f32::INFINITY;
    write_model(
        tmp.path(),
        &tensors,
        |n| if n == VICTIM { Dtype::F16 } else { Dtype::F32 },
        1,
    );
    let err = format!("{:#}", load(tmp.path()).err().expect("accepted"));
    assert!(
        err.contains(VICTIM) && err.contains("+inf") && err.contains("flat index 3"),
        "{err}"
    );
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn every_command_that_loads_weights_refuses_them_and_the_opt_out_loads_them() {
    let tmp = tempfile::tempdir().unwrap();
    let model = damaged(
        &tmp.path().join("m"),
        VICTIM,
        |_| 7,
        f32::NAN,
        Dtype::F32,
        1,
    );
    let needles = [VICTIM, "NaN", "model.safetensors"];
    let gen = |extra: &[&str]| {
        let mut a = vec![
            "generate",
            "--model",
            s(&model),
            "--prompt",
            "1+1=",
            "--max-new-tokens",
            "2",
        ];
        a.extend_from_slice(extra);
        grpo(&a)
    };
    fails_with(&gen(&[]), &needles);
    let data = common::repo().join("data/arith/validation.jsonl");
    let out = grpo(&[
        "eval",
        "--model",
        s(&model),
        "--data",
        s(&data),
        "--limit",
        "2",
        "--max-new-tokens",
        "2",
    ]);
    fails_with(&out, &needles);
    let out = grpo(&[
        "export",
        "--model",
        s(&model),
        "--out",
        s(&tmp.path().join("x")),
    ]);
    fails_with(&out, &needles);
    let model_path = format!("\"{}\"", s(&model));
    let cfg = write_train_config(
        tmp.path(),
        "t.toml",
        &tmp.path().join("run"),
        &[("model.path", model_path.as_str())],
    );
    fails_with(&grpo(&["train", "--config", s(&cfg)]), &needles);
    assert!(!tmp.path().join("run/checkpoint-2").exists());

    // The opt-out: the flag on any command, or the config key for train.
    // The weights load; the NaN then reaches the logits, which the sampler reports.
    let out = gen(&["--allow-non-finite"]);
    let err = stderr(&out);
    assert!(
        !err.contains("non-finite value") && !err.contains(VICTIM),
        "{err}"
    );
    assert!(err.contains("logits are not finite"), "{err}");
    // An undamaged copy generates with the flag as without it.
    let clean = tmp.path().join("clean");
    write_model(&clean, &fixture_tensors(), |_| Dtype::F32, 1);
    succeeds(&grpo(&[
        "generate",
        "--model",
        s(&clean),
        "--prompt",
        "1+1=",
        "--max-new-tokens",
        "2",
        "--allow-non-finite",
    ]));
    let out = grpo(&[
        "train",
        "--config",
        s(&cfg),
        "--set",
        "model.allow_non_finite=true",
        "--set",
        "train.max_steps=1",
        "--set",
        &format!("output.dir=\"{}\"", s(&tmp.path().join("run2"))),
    ]);
    let err = stderr(&out);
    assert!(!err.contains("non-finite value"), "{err}");
    assert!(err.contains("loaded policy"), "{err}");
}

#[test]
fn a_lora_adapter_with_an_infinity_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let src = fixture("lora/qwen2");
    std::fs::copy(
        src.join("adapter_config.json"),
        tmp.path().join("adapter_config.json"),
    )
    .unwrap();
    let bytes = std::fs::read(src.join("adapter_model.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut tensors: Vec<(String, Dtype, Vec<usize>, Vec<u8>)> = st
        .tensors()
        .into_iter()
        .map(|(n, v)| (n, v.dtype(), v.shape().to_vec(), v.data().to_vec()))
        .collect();
    tensors.sort_by(|a, b| a.0.cmp(&b.0));
    let victim = tensors
        .iter_mut()
        .find(|t| t.0.ends_with("lora_B.weight"))
        .unwrap();
    assert_eq!(victim.1, Dtype::F32);
    victim.3[4..8].copy_from_slice(&f32::NEG_INFINITY.to_le_bytes());
    let name = victim.0.clone();
    let views: Vec<(String, safetensors::tensor::TensorView)> = tensors
        .iter()
        .map(|(n, d, s, b)| {
            (
                n.clone(),
                safetensors::tensor::TensorView::new(*d, s.clone(), b).unwrap(),
            )
        })
        .collect();
    safetensors::serialize_to_file(views, None, &tmp.path().join("adapter_model.safetensors"))
        .unwrap();
    let mut p = Policy::load(
        &common::repo().join("models/tiny-math"),
        DType::F32,
        &Device::Cpu,
    )
    .unwrap();
    let err = format!("{:#}", p.load_adapter(tmp.path()).expect_err("accepted"));
    assert!(
        err.contains(&name) && err.contains("-inf") && err.contains("flat index 1"),
        "{err}"
    );
    // The undamaged adapter loads.
    p.load_adapter(&src).unwrap();
}
