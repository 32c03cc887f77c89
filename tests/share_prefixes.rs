//! `train.share_prefixes = "prompt"` (each group's prompt run once in the update's forward and
//! backward) gives the loss and gradients of `"none"` (every row padded to the same width):
//! on both fixture families, through the fused and the composed ops and with LoRA adapters,
//! with prompts of different lengths in one micro-batch (left padding), micro-batches that
//! split a group, μ = 2 (the second pass against the first pass's log-probs, after an update)
//! and β > 0; and a 4-step `grpo train` with sharing on equals the one with sharing off.

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
    let mut reached = 0;
    for (i, (a, b)) in shared.grads.iter().zip(&none.grads).enumerate() {
        let r = rel(a, b);
        assert!(r < 1e-5, "{what}: gradient {i} differs (rel {r:e})");
        let max = b
            .abs()
            .unwrap()
            .flatten_all()
            .unwrap()
            .max(0)
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        reached += usize::from(max > 0.0);
    }
    assert!(reached > 0, "{what}: all gradients are zero");
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
/// once per micro-batch that holds a row of it, each completion without its last token.
fn shared_tokens(p: &[Vec<u32>], c: &[Vec<u32>], mb: usize) -> usize {
    let mut n = 0;
    for start in (0..p.len()).step_by(mb) {
        let rows = start..(start + mb).min(p.len());
        for r in rows.clone() {
            if r == rows.start || p[r] != p[r - 1] {
                n += p[r].len();
            }
            n += c[r].len() - 1;
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
    };
    let reference = (beta > 0.0).then_some(reference);
    let (mut fs, mut fn_) = (FrozenLogprobs::default(), FrozenLogprobs::default());
    let (bs, bn) = (batch(SharePrefixes::Prompt), batch(SharePrefixes::None));
    for pass in 0..2 {
        let s = accumulate(policy, reference, vars, &bs, &ls, &mut fs).unwrap();
        let n = accumulate(policy, reference, vars, &bn, &ls, &mut fn_).unwrap();
        assert_passes_equal(&s, &n, &format!("{what}, micro-batch {mb}, pass {pass}"));
        let per_forward = shared_tokens(&prompts, &completions, mb);
        let forwards = if pass == 0 && beta > 0.0 { 2 } else { 1 };
        assert_eq!(s.tokens_processed, forwards * per_forward, "{what}");
        // The step's update, the same for both paths.
        for (v, g) in vars.iter().zip(&n.grads) {
            v.set(&(v.as_tensor() - (g * 0.5).unwrap()).unwrap())
                .unwrap();
        }
    }
}

fn load(name: &str) -> Policy {
    Policy::load(&fixture(name), DType::F32, &Device::Cpu).unwrap()
}

fn vars_of(policy: &Policy) -> Vec<Var> {
    policy.named_vars().into_iter().map(|(_, v)| v).collect()
}

#[test]
fn shared_prompt_gives_the_unshared_loss_and_gradients() {
    for family in ["tiny-qwen2", "tiny-llama"] {
        for fused in [true, false] {
            // 12 rows: one micro-batch of three groups; 6 and 5 rows split groups.
            for (mb, beta) in [(12, 0.04), (6, 0.0), (5, 0.04)] {
                let mut policy = load(family);
                policy.set_fused_ops(fused);
                let mut reference = load(family);
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
    let mut policy = load("tiny-qwen2");
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
    let reference = load("tiny-qwen2");
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
    for mode in ["prompt", "none"] {
        let out = tmp.path().join(mode);
        let cfg = write_train_config(
            tmp.path(),
            &format!("{mode}.toml"),
            &out,
            &[
                ("train.max_steps", "4"),
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
    let (on, off) = (&runs[0], &runs[1]);
    assert_eq!(on.len(), 4);
    assert_eq!(off.len(), 4);
    for (a, b) in on.iter().zip(off) {
        for key in ["loss", "grad_norm"] {
            let (x, y) = (a[key].as_f64().unwrap(), b[key].as_f64().unwrap());
            assert!(
                (x - y).abs() <= 1e-4 * y.abs().max(1e-8),
                "step {}: {key} {x} (shared) vs {y}",
                a["step"]
            );
        }
        let (t_on, t_off) = (
            a["tokens_processed"].as_u64().unwrap(),
            b["tokens_processed"].as_u64().unwrap(),
        );
        assert!(t_on < t_off, "tokens_processed {t_on} (shared) vs {t_off}");
    }
}

#[test]
fn share_prefixes_is_shown_and_tree_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = write_train_config(tmp.path(), "c.toml", &tmp.path().join("o"), &[]);
    let o = grpo(&["config", "show", "--config", cfg.to_str().unwrap()]);
    assert!(o.status.success());
    let shown = String::from_utf8_lossy(&o.stdout);
    assert!(
        shown.contains("share_prefixes = \"prompt\""),
        "the default is shown: {shown}"
    );
    for bad in ["\"tree\"", "\"yes\"", "1"] {
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
        assert!(
            err.contains("share_prefixes") && err.contains("prompt") && !err.contains("panicked"),
            "{bad}: {err}"
        );
    }
}
