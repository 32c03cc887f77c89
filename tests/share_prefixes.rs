//! `train.share_prefixes = "prompt"` (each group's prompt run once in the update's forward and
//! backward) and `"tree"` (each node of a group's prefix tree once) give the loss and
//! gradients of `"none"` (every row padded to the same width):
//! on both fixture families, through the fused (f32) and the composed (f64) ops and with LoRA
//! adapters,
//! with prompts of different lengths in one micro-batch (left padding), micro-batches that
//! split a group, μ = 2 (the second pass against the first pass's log-probs, after an update)
//! and β > 0; and 4-step `grpo train` runs with sharing on equal the one with sharing off.

mod common;

use candle_core::{DType, Device, Tensor, Var};
use common::{fixture, grpo, write_train_config};
use grpo::config::{LossSection, LossType, SharePrefixes};
use grpo::model::lora::{LoraConfig, TargetModules};
use grpo::model::Policy;
use grpo::trainer::credit::{assign, CreditSettings};
use grpo::trainer::update::{accumulate, FrozenLogprobs, LossSettings, Pass, UpdateBatch};
use serde_json::Value;

const G: usize = 4;

/// Three groups of G rows; the prompts have 5, 2 and 4 tokens.
fn prompts() -> Vec<Vec<u32>> {
    let groups = [vec![5, 17, 42, 7, 3], vec![9, 8], vec![11, 12, 13, 14]];
    groups
        .iter()
        .flat_map(|p| std::iter::repeat_n(p.clone(), G))
        .collect()
}

/// Lengths 1..=7, shared prefixes and an identical pair, the eos id 2 at the end of some.
fn completions() -> Vec<Vec<u32>> {
    vec![
        vec![30, 31, 32, 33, 2],
        vec![30, 31, 40, 2],
        vec![30, 31, 32, 50, 51, 52, 53],
        vec![2],
        vec![70, 71, 2],
        vec![70, 71, 2],
        vec![70, 80, 81, 82, 83, 2],
        vec![90, 91],
        vec![60, 61, 62, 2],
        vec![63, 2],
        vec![60, 64, 65, 66, 67],
        vec![60, 61, 68, 2],
    ]
}

const REWARDS: [f64; 12] = [1.0, 0.0, 1.0, 0.0, 1.0, 1.0, 0.0, 0.5, 0.0, 1.0, 0.25, 0.0];

/// ‖a − b‖ / ‖b‖.
fn rel(a: &Tensor, b: &Tensor) -> f64 {
    let norm = |t: &Tensor| {
        t.to_dtype(DType::F64)
            .unwrap()
            .sqr()
            .unwrap()
            .sum_all()
            .unwrap()
            .to_scalar::<f64>()
            .unwrap()
            .sqrt()
    };
    norm(&(a - b).unwrap()) / norm(b).max(1e-30)
}

fn assert_passes_equal(shared: &Pass, none: &Pass, what: &str) {
    let dl = (shared.loss - none.loss).abs() / none.loss.abs().max(1e-12);
    assert!(
        dl < 1e-5,
        "{what}: loss {} vs {} (rel {dl:e})",
        shared.loss,
        none.loss
    );
    assert!(none.loss.abs() > 1e-6, "{what}: a zero loss tests nothing");
    assert_eq!(shared.grads.len(), none.grads.len());
    // The whole gradient as one vector to 1e-5; each tensor to 1e-4 of its own norm (a tensor
    // whose gradient nearly cancels, like a key bias under RoPE, has a larger relative noise).
    let flat = |g: &[Tensor]| {
        let v: Vec<Tensor> = g
            .iter()
            .map(|t| t.flatten_all().unwrap().to_dtype(DType::F64).unwrap())
            .collect();
        Tensor::cat(&v, 0).unwrap()
    };
    let r = rel(&flat(&shared.grads), &flat(&none.grads));
    if std::env::var("DBG").is_ok() {
        eprintln!("{what}: loss rel {dl:e} grad rel {r:e}");
    }
    assert!(r < 1e-5, "{what}: gradients differ (rel {r:e})");
    for (i, (a, b)) in shared.grads.iter().zip(&none.grads).enumerate() {
        let r = rel(a, b);
        assert!(r < 1e-4, "{what}: gradient {i} differs (rel {r:e})");
    }
    let norm = flat(&none.grads).abs().unwrap().max(0).unwrap();
    assert!(
        norm.to_scalar::<f64>().unwrap() > 0.0,
        "{what}: all gradients are zero"
    );
    let de = (shared.entropy_sum - none.entropy_sum).abs() / none.entropy_sum.abs();
    assert!(de < 1e-5, "{what}: entropy sum rel {de:e}");
    assert!(
        shared.tokens_processed < none.tokens_processed,
        "{what}: shared ran {} tokens, unshared {}",
        shared.tokens_processed,
        none.tokens_processed
    );
}

/// Tokens the shared forward runs per pass for micro-batches of `mb` rows: each group's prompt
/// once per micro-batch that holds a row of it, and each completion without its last token
/// (`tree`: each distinct prefix of those once per micro-batch and group).
fn shared_tokens(p: &[Vec<u32>], c: &[Vec<u32>], mb: usize, tree: bool) -> usize {
    let mut n = 0;
    for start in (0..p.len()).step_by(mb) {
        let rows = start..(start + mb).min(p.len());
        let mut seen = std::collections::HashSet::new();
        for r in rows.clone() {
            if r == rows.start || p[r] != p[r - 1] {
                n += p[r].len();
                seen.clear();
            }
            for k in 1..c[r].len() {
                n += usize::from(!tree || seen.insert(c[r][..k].to_vec()));
            }
        }
    }
    n
}

/// Two passes (μ = 2) of `accumulate` with sharing on and off, the weights moved by the
/// unshared gradient in between; each pass compared.
fn check(policy: &Policy, reference: &Policy, vars: &[Var], mb: usize, beta: f64, what: &str) {
    let (prompts, completions) = (prompts(), completions());
    let p: Vec<&[u32]> = prompts.iter().map(|v| v.as_slice()).collect();
    let c: Vec<&[u32]> = completions.iter().map(|v| v.as_slice()).collect();
    let loss = LossSection {
        loss_type: LossType::Dapo,
        ..LossSection::default()
    };
    let settings = CreditSettings {
        loss: &loss,
        resolved: loss.resolved().unwrap(),
        group_size: G,
        max_completion_length: 7,
        micro_batch: mb,
    };
    let credit = assign(&settings, &c, &[false; 12], &REWARDS).unwrap();
    let batch = |share| UpdateBatch {
        prompts: &p,
        completions: &c,
        advantages: &credit.advantages,
        coefficients: &credit.coefficients,
        micro_batch: mb,
        pad: 0,
        sampler_logprobs: None,
        share,
    };
    let ls = LossSettings {
        temperature: 0.9,
        epsilon_low: 0.2,
        epsilon_high: 0.28,
        beta,
        vocab_bias: None,
        policy: None,
    };
    let reference = (beta > 0.0).then_some(reference);
    let modes = [
        SharePrefixes::None,
        SharePrefixes::Prompt,
        SharePrefixes::Tree,
    ];
    let mut frozen: Vec<FrozenLogprobs> = modes.iter().map(|_| Default::default()).collect();
    for pass in 0..2 {
        let mut passes = Vec::new();
        for (mode, frozen) in modes.iter().zip(&mut frozen) {
            let b = batch(*mode);
            passes.push(accumulate(policy, reference, vars, &b, &ls, frozen).unwrap());
        }
        let n = &passes[0];
        let forwards = if pass == 0 && beta > 0.0 { 2 } else { 1 };
        for (mode, s) in modes.iter().zip(&passes).skip(1) {
            let what = format!("{what}, {mode:?}, micro-batch {mb}, pass {pass}");
            assert_passes_equal(s, n, &what);
            let tree = *mode == SharePrefixes::Tree;
            let per_forward = shared_tokens(&prompts, &completions, mb, tree);
            assert_eq!(s.tokens_processed, forwards * per_forward, "{what}");
        }
        assert!(passes[2].tokens_processed < passes[1].tokens_processed);
        // The step's update, the same for both paths.
        for (v, g) in vars.iter().zip(&n.grads) {
            v.set(&(v.as_tensor() - (g * 0.02).unwrap()).unwrap())
                .unwrap();
        }
    }
}

fn load(name: &str, dtype: DType) -> Policy {
    Policy::load(&fixture(name), dtype, &Device::Cpu).unwrap()
}

fn vars_of(policy: &Policy) -> Vec<Var> {
    policy.named_vars().into_iter().map(|(_, v)| v).collect()
}

#[test]
fn shared_prompt_gives_the_unshared_loss_and_gradients() {
    for family in ["tiny-qwen2", "tiny-llama"] {
        // The fused ops are the f32 CPU path; the composed ops (adapters, other dtypes) are
        // checked in f64, where the two layouts' rounding does not reach 1e-5 (in f32 the
        // composed ops' own noise does, on a μ = 2 pass whose ratios amplify it).
        for (fused, dtype) in [(true, DType::F32), (false, DType::F64)] {
            // 12 rows: one micro-batch of three groups; 6 and 5 rows split groups.
            for (mb, beta) in [(12, 0.04), (6, 0.0), (5, 0.04)] {
                let mut policy = load(family, dtype);
                policy.set_fused_ops(fused);
                let mut reference = load(family, dtype);
                reference.set_fused_ops(fused);
                for (name, var) in reference.named_vars() {
                    if name.ends_with("mlp.up_proj.weight") {
                        var.set(&(var.as_tensor() * 1.1).unwrap()).unwrap();
                    }
                }
                let vars = vars_of(&policy);
                let what = format!("{family}, fused {fused}, beta {beta}");
                check(&policy, &reference, &vars, mb, beta, &what);
            }
        }
    }
}

#[test]
fn shared_prompt_gives_the_unshared_gradients_with_lora() {
    // Adapted models run the composed ops: f64, as above.
    let mut policy = load("tiny-qwen2", DType::F64);
    let lora = LoraConfig {
        r: 4,
        lora_alpha: 16.0,
        lora_dropout: 0.0,
        target_modules: TargetModules::Pattern("all-linear".into()),
        use_rslora: false,
    };
    policy.add_lora(&lora, 3).unwrap();
    let vars: Vec<Var> = policy
        .trainable_vars()
        .into_iter()
        .map(|(_, v)| v)
        .collect();
    // B starts at 0 (so A's gradient is 0): move every adapter weight off its init first.
    for (i, v) in vars.iter().enumerate() {
        let bump = Tensor::ones_like(v.as_tensor()).unwrap() * (0.01 * (i % 5 + 1) as f64);
        v.set(&(v.as_tensor() + bump.unwrap()).unwrap()).unwrap();
    }
    let reference = load("tiny-qwen2", DType::F64);
    check(&policy, &reference, &vars, 6, 0.04, "LoRA");
}

fn metrics(dir: &std::path::Path) -> Vec<Value> {
    std::fs::read_to_string(dir.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .filter(|m: &Value| m.get("loss").is_some())
        .collect()
}

#[test]
fn a_four_step_run_with_sharing_equals_one_without() {
    let tmp = tempfile::tempdir().unwrap();
    let mut runs = Vec::new();
    for mode in ["prompt", "tree", "none"] {
        let out = tmp.path().join(mode);
        let cfg = write_train_config(
            tmp.path(),
            &format!("{mode}.toml"),
            &out,
            &[
                ("train.max_steps", "4"),
                // Not the base 1e-3: there Adam turns float-level gradient differences of
                // parameters whose true gradient is ~0 (the key biases: softmax is shift
                // invariant) into lr-sized weight differences, enough to flip one sampled
                // token at step 4 in some orderings of the float sums, after which the runs
                // train on different rollouts. Sharing is checked on the same rollouts.
                ("optim.learning_rate", "3e-4"),
                ("train.gradient_accumulation_steps", "2"),
                ("train.batch_size", "3"),
                ("loss.beta", "0.04"),
                ("loss.num_iterations", "2"),
                ("eval.every", "0"),
                ("train.share_prefixes", &format!("\"{mode}\"")),
            ],
        );
        let o = grpo(&["train", "--config", cfg.to_str().unwrap()]);
        assert!(
            o.status.success(),
            "{mode}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        runs.push(metrics(&out));
    }
    let off = &runs[2];
    assert_eq!(off.len(), 4);
    for (on, mode) in runs[..2].iter().zip(["prompt", "tree"]) {
        assert_eq!(on.len(), 4);
        for (a, b) in on.iter().zip(off) {
            for key in ["loss", "grad_norm"] {
                let (x, y) = (a[key].as_f64().unwrap(), b[key].as_f64().unwrap());
                assert!(
                    (x - y).abs() <= 1e-4 * y.abs().max(1e-8),
                    "step {}: {key} {x} ({mode}) vs {y}",
                    a["step"]
                );
            }
            let (t_on, t_off) = (
                a["tokens_processed"].as_u64().unwrap(),
                b["tokens_processed"].as_u64().unwrap(),
            );
            assert!(t_on < t_off, "tokens_processed {t_on} ({mode}) vs {t_off}");
        }
    }
}

#[test]
fn share_prefixes_is_shown_and_an_unknown_value_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = write_train_config(tmp.path(), "c.toml", &tmp.path().join("o"), &[]);
    let o = grpo(&["config", "show", "--config", cfg.to_str().unwrap()]);
    assert!(o.status.success());
    let shown = String::from_utf8_lossy(&o.stdout);
    assert!(
        shown.contains("share_prefixes = \"tree\""),
        "the default is shown: {shown}"
    );
    for bad in ["\"forest\"", "\"yes\"", "1"] {
        let o = grpo(&[
            "config",
            "show",
            "--config",
            cfg.to_str().unwrap(),
            "--set",
            &format!("train.share_prefixes={bad}"),
        ]);
        assert!(!o.status.success(), "{bad} accepted");
        let err = String::from_utf8_lossy(&o.stderr);
        let names_values = !bad.starts_with('"') || err.contains("prompt");
        assert!(
            err.contains("share_prefixes") && names_values && !err.contains("panicked"),
            "{bad}: {err}"
        );
    }
}
