//! Every policy loss of TRL 1.16 against TRL's own `GRPOTrainer._compute_loss`
//! (`tests/fixtures/trl_losses/`: the generator calls it on fixed float64 tensors), and
//! λ weighting composed with each option against a float64 reference of its definition
//! (`docs/lambda-grpo.md` §9).
//!
//! `GRPO_TRL_LOSS_FIXTURE=path.json cargo test --test trl_losses` checks another batch made by
//! the same generator without changing code.

use std::collections::BTreeMap;

use grpo::config::LossSection;
use grpo::trainer::loss::{
    micro_batch_loss, policy_loss_metric, token_coefficients, Advantage, EntropyControl,
    PolicyOptions, PolicyRow, ProcessWeighting, SeqLayout,
};
use serde::Deserialize;
use serde_json::Value;

const FIXTURE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/trl_losses/losses.json"
);

#[derive(Deserialize)]
struct Fixture {
    trl_version: String,
    tolerance: f64,
    #[serde(default)]
    batches: BTreeMap<String, Vec<MicroBatch>>,
    cases: Vec<Case>,
}

#[derive(Deserialize, Clone)]
struct MicroBatch {
    logp: Vec<Vec<f64>>,
    old_logp: Vec<Vec<f64>>,
    ref_logp: Vec<Vec<f64>>,
    entropy: Vec<Vec<f64>>,
    mask: Vec<Vec<f64>>,
    /// `[rows]` or `[rows][width]`.
    advantages: Value,
}

#[derive(Deserialize)]
struct Case {
    name: String,
    options: serde_json::Map<String, Value>,
    state: State,
    #[serde(default)]
    batch: Option<String>,
    #[serde(default)]
    micro_batches: Option<Vec<MicroBatch>>,
    expected: Expected,
}

#[derive(Deserialize)]
struct State {
    entropy_coef: f64,
    last_entropy: Option<f64>,
}

#[derive(Deserialize)]
struct Expected {
    loss: Vec<f64>,
    grad_logp: Vec<Vec<Vec<f64>>>,
    grad_entropy: Vec<Vec<Vec<f64>>>,
    metrics: BTreeMap<String, Vec<f64>>,
    entropy_coef_after: f64,
}

/// TRL's option names are ours (`loss_type` is `type`); a `null` is an unset key.
fn section(opts: &serde_json::Map<String, Value>) -> (LossSection, usize) {
    let mut o = opts.clone();
    let max_len = o
        .remove("max_completion_length")
        .and_then(|v| v.as_u64())
        .expect("max_completion_length") as usize;
    if let Some(t) = o.remove("loss_type") {
        o.insert("type".into(), t);
    }
    o.retain(|_, v| !v.is_null());
    let l: LossSection = serde_json::from_value(Value::Object(o)).expect("options as [loss]");
    (l, max_len)
}

fn advantage_of(v: &Value, i: usize) -> Vec<f64> {
    match &v[i] {
        Value::Array(a) => a.iter().map(|x| x.as_f64().unwrap()).collect(),
        x => vec![x.as_f64().unwrap()],
    }
}

fn close(a: f64, b: f64, tol: f64) -> bool {
    (a - b).abs() <= tol * (1.0 + b.abs())
}

struct Outcome {
    loss: Vec<f64>,
    grad_logp: Vec<Vec<Vec<f64>>>,
    grad_entropy: Vec<Vec<Vec<f64>>>,
    metrics: BTreeMap<String, Vec<f64>>,
    entropy_coef_after: f64,
}

/// Our loss over the micro-batches of a case, with `lambda` sizes per row when given.
fn run(
    l: &LossSection,
    max_len: usize,
    state: &State,
    mbs: &[MicroBatch],
    lambda: Option<&[Vec<Vec<u32>>]>,
) -> Outcome {
    let weighting = if lambda.is_some() {
        ProcessWeighting::Lambda
    } else {
        ProcessWeighting::None
    };
    let resolved = l.loss_type.resolve(weighting).unwrap();
    let masks: Vec<Vec<Vec<bool>>> = mbs
        .iter()
        .map(|mb| {
            mb.mask
                .iter()
                .map(|r| r.iter().map(|&m| m != 0.0).collect())
                .collect()
        })
        .collect();
    let layouts: Vec<SeqLayout> = masks
        .iter()
        .enumerate()
        .flat_map(|(k, mb)| {
            mb.iter().enumerate().map(move |(i, m)| SeqLayout {
                mask: m,
                lambda_sizes: lambda.map(|l| l[k][i].as_slice()),
                micro_batch: k,
            })
        })
        .collect();
    let coef = token_coefficients(&layouts, resolved, max_len).unwrap();
    let mut ctl = EntropyControl {
        coef: state.entropy_coef,
        last_entropy: state.last_entropy,
    };
    let opts = PolicyOptions::new(l, resolved, ctl.applied(l));
    let mut out = Outcome {
        loss: vec![],
        grad_logp: vec![],
        grad_entropy: vec![],
        metrics: BTreeMap::new(),
        entropy_coef_after: 0.0,
    };
    let (mut bonus_sum, mut bonus_count) = (0.0, 0.0);
    let mut row0 = 0;
    for (k, mb) in mbs.iter().enumerate() {
        let advs: Vec<Vec<f64>> = (0..mb.logp.len())
            .map(|i| advantage_of(&mb.advantages, i))
            .collect();
        let rows: Vec<PolicyRow> = (0..mb.logp.len())
            .map(|i| PolicyRow {
                logp: &mb.logp[i],
                old_logp: &mb.old_logp[i],
                ref_logp: Some(&mb.ref_logp[i]),
                advantage: if advs[i].len() == 1 {
                    Advantage::Sequence(advs[i][0])
                } else {
                    Advantage::Token(&advs[i])
                },
                mask: &masks[k][i],
                coef: &coef[row0 + i],
                entropy: Some(&mb.entropy[i]),
            })
            .collect();
        row0 += rows.len();
        let r = micro_batch_loss(&rows, &opts, mbs.len()).unwrap();
        out.loss.push(r.value);
        out.grad_logp.push(r.grad_logp.clone());
        out.grad_entropy.push(r.grad_entropy.clone());
        let s = r.stats;
        let mut put = |k: &str, v: f64| out.metrics.entry(k.into()).or_default().push(v);
        put("kl", s.kl_mean());
        put("clip_ratio/low_mean", s.low_clip_fraction());
        put("clip_ratio/high_mean", s.high_clip_fraction());
        put("clip_ratio/region_mean", s.clip_fraction());
        put("cispo_clip_ratio", s.cispo_clip_ratio());
        put("vespo/phi_seq_mean", s.phi_seq_mean());
        put(
            "policy_loss",
            policy_loss_metric(opts.aggregation, r.policy_value, mbs.len()),
        );
        bonus_sum += s.bonus_entropy_sum;
        bonus_count += s.bonus_tokens;
    }
    ctl.update(l, bonus_sum, bonus_count);
    out.entropy_coef_after = ctl.coef;
    out
}

fn fixture() -> Fixture {
    let path = std::env::var("GRPO_TRL_LOSS_FIXTURE").unwrap_or_else(|_| FIXTURE.to_string());
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn batch_of<'a>(f: &'a Fixture, c: &'a Case) -> &'a [MicroBatch] {
    match (&c.micro_batches, &c.batch) {
        (Some(m), _) => m,
        (None, Some(k)) => &f.batches[k],
        (None, None) => panic!("{}: no micro_batches and no batch", c.name),
    }
}

#[test]
fn every_trl_loss_matches_trl_compute_loss() {
    let f = fixture();
    assert!(f.trl_version.starts_with("1.16"), "{}", f.trl_version);
    let tol = f.tolerance.max(1e-6);
    assert!(f.cases.len() >= 80, "{} cases", f.cases.len());
    let mut failures = Vec::new();
    for c in &f.cases {
        let (l, max_len) = section(&c.options);
        let got = run(&l, max_len, &c.state, batch_of(&f, c), None);
        let e = &c.expected;
        let mut bad = |what: String| failures.push(format!("{}: {what}", c.name));
        for (k, (a, b)) in got.loss.iter().zip(&e.loss).enumerate() {
            if !close(*a, *b, tol) {
                bad(format!("loss[{k}] {a} vs TRL {b}"));
            }
        }
        for (name, ours, theirs) in [
            ("grad_logp", &got.grad_logp, &e.grad_logp),
            ("grad_entropy", &got.grad_entropy, &e.grad_entropy),
        ] {
            for (k, (gm, em)) in ours.iter().zip(theirs).enumerate() {
                for (i, (gr, er)) in gm.iter().zip(em).enumerate() {
                    for (t, (a, b)) in gr.iter().zip(er).enumerate() {
                        if !close(*a, *b, tol) {
                            bad(format!("{name}[{k}][{i}][{t}] {a} vs TRL {b}"));
                        }
                    }
                }
            }
        }
        // The metrics TRL logged for this case and we compute per micro-batch.
        for (key, theirs) in &e.metrics {
            let Some(ours) = got.metrics.get(key) else {
                continue;
            };
            for (k, (a, b)) in ours.iter().zip(theirs).enumerate() {
                if !close(*a, *b, 1e-6) {
                    bad(format!("metric {key}[{k}] {a} vs TRL {b}"));
                }
            }
        }
        if !close(got.entropy_coef_after, e.entropy_coef_after, 1e-12) {
            bad(format!(
                "entropy_coef after the step {} vs TRL {}",
                got.entropy_coef_after, e.entropy_coef_after
            ));
        }
        assert_eq!(got.loss.len(), e.loss.len(), "{}", c.name);
    }
    assert!(
        failures.is_empty(),
        "{} mismatches:\n{}",
        failures.len(),
        failures[..failures.len().min(40)].join("\n")
    );
}

/// The fixture is not trivial: clipping, masks and the entropy bonus all act in it.
#[test]
fn the_fixture_exercises_every_option() {
    let f = fixture();
    let names: Vec<&str> = f.cases.iter().map(|c| c.name.as_str()).collect();
    for t in [
        "grpo", "bnpo", "dapo", "dr_grpo", "cispo", "sapo", "luspo", "vespo",
    ] {
        for level in ["token", "sequence"] {
            for beta in ["beta0", "beta0.04"] {
                let n = format!("{t}/{level}/{beta}");
                assert!(names.contains(&n.as_str()), "missing {n}");
            }
        }
    }
    let metric_sum = |key: &str| -> f64 {
        f.cases
            .iter()
            .flat_map(|c| c.expected.metrics.get(key).into_iter().flatten())
            .sum()
    };
    assert!(metric_sum("clip_ratio/region_mean") > 1.0);
    assert!(metric_sum("cispo_clip_ratio") > 0.0);
    assert!(f.cases.iter().any(|c| c
        .expected
        .grad_entropy
        .iter()
        .flatten()
        .flatten()
        .any(|&g| g != 0.0)));
}

/// The definition of §9, term by term: `Σ_{i,t} (1/|λ_{i,t}|)/Z_i · ℓ_{i,t}` − the entropy bonus,
/// with `Z_i` the type's normaliser written out here and `ℓ_{i,t}` each token's unweighted term
/// (its policy term with the masks, plus β·KL; sequence ratios, VESPO's φ and the off-policy
/// mask over the counted tokens), read one token at a time with a one-hot coefficient, and the
/// gradient as the same sum of each token term's gradient (the detached weights of `cispo` and
/// `vespo` stay detached).
fn lambda_reference(
    l: &LossSection,
    max_len: usize,
    state: &State,
    mbs: &[MicroBatch],
    lambda: &[Vec<Vec<u32>>],
) -> Vec<(f64, Vec<Vec<f64>>)> {
    use grpo::config::Aggregation;
    let resolved = l.loss_type.resolve(ProcessWeighting::None).unwrap();
    let ctl = EntropyControl {
        coef: state.entropy_coef,
        last_entropy: state.last_entropy,
    };
    let opts = PolicyOptions::new(l, resolved, ctl.applied(l));
    let counted = |r: &Vec<f64>| r.iter().filter(|&&m| m != 0.0).count() as f64;
    let n: f64 = mbs.iter().map(|mb| mb.mask.len() as f64).sum();
    let step_tokens: f64 = mbs.iter().flat_map(|mb| mb.mask.iter().map(counted)).sum();
    mbs.iter()
        .enumerate()
        .map(|(k, mb)| {
            let masks: Vec<Vec<bool>> = mb
                .mask
                .iter()
                .map(|r| r.iter().map(|&m| m != 0.0).collect())
                .collect();
            let mb_tokens: f64 = mb.mask.iter().map(counted).sum();
            let advs: Vec<f64> = (0..mb.logp.len())
                .map(|i| advantage_of(&mb.advantages, i)[0])
                .collect();
            let rows = |coef: &[Vec<f64>]| -> (f64, Vec<Vec<f64>>) {
                let rows: Vec<PolicyRow> = (0..mb.logp.len())
                    .map(|i| PolicyRow {
                        logp: &mb.logp[i],
                        old_logp: &mb.old_logp[i],
                        ref_logp: Some(&mb.ref_logp[i]),
                        advantage: Advantage::Sequence(advs[i]),
                        mask: &masks[i],
                        coef: &coef[i],
                        entropy: Some(&mb.entropy[i]),
                    })
                    .collect();
                let r = micro_batch_loss(&rows, &opts, mbs.len()).unwrap();
                (r.value, r.grad_logp)
            };
            let zeros: Vec<Vec<f64>> = mb.mask.iter().map(|r| vec![0.0; r.len()]).collect();
            let (bonus, _) = rows(&zeros);
            let mut total = bonus;
            let mut grad = zeros.clone();
            for (i, r) in mb.mask.iter().enumerate() {
                let z = match resolved.aggregation {
                    Aggregation::Grpo => n * counted(r),
                    Aggregation::Bnpo => mb_tokens * mbs.len() as f64,
                    Aggregation::Dapo => step_tokens,
                    Aggregation::DrGrpo => n * max_len as f64,
                    Aggregation::Luspo => n,
                };
                for t in 0..r.len() {
                    if r[t] == 0.0 {
                        continue;
                    }
                    let mut one = zeros.clone();
                    one[i][t] = 1.0;
                    let (value, g) = rows(&one);
                    let w = 1.0 / f64::from(lambda[k][i][t]) / z;
                    total += (value - bonus) * w;
                    for (gr, tr) in grad.iter_mut().zip(&g) {
                        for (x, y) in gr.iter_mut().zip(tr) {
                            *x += y * w;
                        }
                    }
                }
            }
            (total, grad)
        })
        .collect()
}

/// λ with every type and option: our loss equals the definition of `docs/lambda-grpo.md` §9 —
/// each token's policy and KL term times `1/|λ|` (inside the type's normaliser), sequence
/// statistics over the unweighted tokens — evaluated here directly in float64, value and gradient.
#[test]
fn lambda_composes_with_every_type_and_option() {
    let f = fixture();
    let mut checked = 0;
    for c in f.cases.iter().filter(|c| !c.name.contains("mu1")) {
        let (l, max_len) = section(&c.options);
        let mbs = batch_of(&f, c);
        // |λ| sizes: a pattern over positions (1..3), as a prefix tree of a group gives.
        let lambda: Vec<Vec<Vec<u32>>> = mbs
            .iter()
            .map(|mb| {
                mb.mask
                    .iter()
                    .enumerate()
                    .map(|(i, r)| (0..r.len()).map(|t| 1 + ((i + 2 * t) % 3) as u32).collect())
                    .collect()
            })
            .collect();
        let weighted = run(&l, max_len, &c.state, mbs, Some(&lambda));
        let reference = lambda_reference(&l, max_len, &c.state, mbs, &lambda);
        for (k, (a, (b, gb))) in weighted.loss.iter().zip(&reference).enumerate() {
            assert!(
                close(*a, *b, 1e-12),
                "{}: mb {k}: λ loss {a} vs definition {b}",
                c.name
            );
            for (i, (ra, rb)) in weighted.grad_logp[k].iter().zip(gb).enumerate() {
                for (t, (x, y)) in ra.iter().zip(rb).enumerate() {
                    assert!(
                        close(*x, *y, 1e-12),
                        "{}: mb {k} [{i}][{t}]: grad {x} vs {y}",
                        c.name
                    );
                }
            }
        }
        checked += 1;
    }
    assert!(checked > 50);
}
