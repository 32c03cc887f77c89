//! `grpo analyze` on the rollouts of a real `grpo train` run (tiny-qwen2 fixture, 2 steps,
//! `save_rollouts`): its statistics must equal a brute-force evaluation of the §5/§7 definitions
//! on the dumped token ids, and the trainer's own `process/*` metrics.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use serde_json::Value;

mod common;
use common::{grpo, write_train_config};

/// Trains 2 steps, 2 prompts × 6 completions, at a temperature low enough for shared prefixes.
fn train(dir: &Path) -> PathBuf {
    let out = dir.join("run");
    let path = write_train_config(
        dir,
        "config.toml",
        &out,
        &[
            ("sampling.num_generations", "6"),
            ("sampling.temperature", "0.5"),
            ("eval.limit", "2"),
            ("eval.max_completion_length", "4"),
            ("train.save_rollouts", "true"),
        ],
    );
    let o = grpo(&["train", "--config", path.to_str().unwrap()]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    out
}

/// §7 for one group straight from the definitions: λ_{i,t} as the set of completions agreeing on
/// y[0..=t], with no tree at all.
struct Brute {
    num_sets: usize,
    path_depth: Vec<usize>,
    intermediate: Vec<f64>,
    non_trivial: bool,
    hist: BTreeMap<usize, u64>,
    /// Members of every distinct set → mean reward of its members.
    mc: BTreeMap<Vec<usize>, f64>,
}

fn brute(group: &[Vec<u32>], rewards: &[f64]) -> Brute {
    let g = group.len();
    let lam = |i: usize, t: usize| -> Vec<usize> {
        (0..g)
            .filter(|&j| group[j].len() > t && group[j][..=t] == group[i][..=t])
            .collect()
    };
    let mut all: BTreeSet<Vec<usize>> = BTreeSet::new();
    let mut path_depth = Vec::new();
    let mut intermediate = Vec::new();
    let mut non_trivial = false;
    let mut hist = BTreeMap::new();
    for (i, y) in group.iter().enumerate() {
        let mut along: BTreeSet<Vec<usize>> = BTreeSet::new();
        let mut shared = 0;
        for t in 0..y.len() {
            let l = lam(i, t);
            *hist.entry(l.len()).or_insert(0) += 1;
            if l.len() > 1 {
                shared += 1;
                if l.len() < g {
                    non_trivial = true;
                }
            }
            // Members identify a set: a step's members only shrink along a completion.
            along.insert(l.clone());
            all.insert(l);
        }
        path_depth.push(along.len());
        intermediate.push(if y.is_empty() {
            0.0
        } else {
            shared as f64 / y.len() as f64
        });
    }
    let mc = all
        .iter()
        .map(|m| {
            (
                m.clone(),
                m.iter().map(|&j| rewards[j]).sum::<f64>() / m.len() as f64,
            )
        })
        .collect();
    Brute {
        num_sets: all.len(),
        path_depth,
        intermediate,
        non_trivial,
        hist,
        mc,
    }
}

fn mean(v: impl Iterator<Item = f64>) -> f64 {
    let v: Vec<f64> = v.collect();
    v.iter().sum::<f64>() / v.len() as f64
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() < 1e-12
}

#[test]
fn analyze_matches_brute_force_and_trainer_metrics() {
    let tmp = tempfile::tempdir().unwrap();
    let run = train(tmp.path());
    for step in 1..=2 {
        assert!(run.join(format!("rollouts/step-{step}.jsonl")).is_file());
    }
    let o = grpo(&["analyze", "--json", run.to_str().unwrap()]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let rep: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(rep["groups"], 4);
    assert_eq!(rep["steps"], 2);

    // Independent reading of the dumps.
    let mut per_step: BTreeMap<u64, Vec<Brute>> = BTreeMap::new();
    let mut checked_groups = 0;
    let groups = rep["group_stats"].as_array().unwrap();
    let mut gi = 0;
    for step in 1..=2u64 {
        let text =
            std::fs::read_to_string(run.join(format!("rollouts/step-{step}.jsonl"))).unwrap();
        for line in text.lines() {
            let v: Value = serde_json::from_str(line).unwrap();
            let comps = v["completions"].as_array().unwrap();
            let ids: Vec<Vec<u32>> = comps
                .iter()
                .map(|c| serde_json::from_value(c["token_ids"].clone()).unwrap())
                .collect();
            let rewards: Vec<f64> = comps
                .iter()
                .map(|c| c["reward"].as_f64().unwrap())
                .collect();
            let b = brute(&ids, &rewards);
            let got = &groups[gi];
            gi += 1;
            assert_eq!(got["step"], step);
            assert_eq!(got["num_process_sets"], b.num_sets);
            assert_eq!(got["non_trivial"], b.non_trivial);
            let depth: Vec<usize> = serde_json::from_value(got["path_depth"].clone()).unwrap();
            assert_eq!(depth, b.path_depth);
            let inter: Vec<f64> =
                serde_json::from_value(got["intermediate_proportion"].clone()).unwrap();
            for (a, w) in inter.iter().zip(&b.intermediate) {
                assert!(close(*a, *w));
            }
            let hist: Vec<u64> = serde_json::from_value(got["lambda_histogram"].clone()).unwrap();
            for (k, &c) in hist.iter().enumerate() {
                assert_eq!(c, b.hist.get(&k).copied().unwrap_or(0), "|λ| = {k}");
            }
            let sets: BTreeMap<Vec<usize>, f64> = got["process_sets"]
                .as_array()
                .unwrap()
                .iter()
                .map(|s| {
                    (
                        serde_json::from_value(s["members"].clone()).unwrap(),
                        s["mc_reward"].as_f64().unwrap(),
                    )
                })
                .collect();
            assert_eq!(sets.len(), b.mc.len());
            for (m, r) in &b.mc {
                assert!(close(sets[m], *r), "R̂ of {m:?}");
            }
            checked_groups += 1;
            per_step.entry(step).or_default().push(b);
        }
    }
    assert_eq!(checked_groups, 4);

    // Aggregates: means over groups of per-completion means, per step and overall.
    let agg = |bs: &[&Brute]| -> (f64, f64, f64, f64) {
        (
            mean(bs.iter().map(|b| f64::from(u8::from(b.non_trivial)))),
            mean(bs.iter().map(|b| b.num_sets as f64)),
            mean(
                bs.iter()
                    .map(|b| mean(b.path_depth.iter().map(|&d| d as f64))),
            ),
            mean(bs.iter().map(|b| mean(b.intermediate.iter().copied()))),
        )
    };
    let check = |v: &Value, want: (f64, f64, f64, f64)| {
        assert!(close(v["non_trivial_fraction"].as_f64().unwrap(), want.0));
        assert!(close(v["mean_num_process_sets"].as_f64().unwrap(), want.1));
        assert!(close(v["mean_path_depth"].as_f64().unwrap(), want.2));
        assert!(close(
            v["mean_intermediate_proportion"].as_f64().unwrap(),
            want.3
        ));
    };
    let all: Vec<&Brute> = per_step.values().flatten().collect();
    check(&rep, agg(&all));
    let metrics: Vec<Value> = std::fs::read_to_string(run.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    for (k, (step, bs)) in per_step.iter().enumerate() {
        let ps = &rep["per_step"][k];
        assert_eq!(ps["step"], *step);
        let want = agg(&bs.iter().collect::<Vec<_>>());
        check(ps, want);
        // The trainer logged the same numbers for this step.
        let m = metrics.iter().find(|m| m["step"] == *step).unwrap();
        assert!(close(
            m["process/non_trivial_fraction"].as_f64().unwrap(),
            want.0
        ));
        assert!(close(
            m["process/mean_num_process_sets"].as_f64().unwrap(),
            want.1
        ));
        assert!(close(
            m["process/mean_path_depth"].as_f64().unwrap(),
            want.2
        ));
        assert!(close(
            m["process/mean_intermediate_proportion"].as_f64().unwrap(),
            want.3
        ));
        assert_eq!(m["process/lambda_histogram"], ps["lambda_histogram"]);
    }
    // At temperature 0.5 the groups share prefixes, so the check above was not vacuous.
    assert!(rep["mean_intermediate_proportion"].as_f64().unwrap() > 0.0);
}
