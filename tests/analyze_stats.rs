//! `grpo analyze` on hand-built groups whose trees are worked out by hand, and on the groups of
//! `tests/fixtures/losses.json` (whose `group_stats` it must reproduce), through the library and
//! through the binary (`--json`, gzip, directories, `--group` text and pictures, errors).

use std::io::Write;
use std::path::Path;

use grpo::analysis::{analyze_groups, read_rollouts, report, RolloutCompletion, RolloutGroup};
use serde_json::{json, Value};

const TOL: f64 = 1e-12;

mod common;
use common::{fixture, grpo};

fn ok_stdout(args: &[&str]) -> String {
    let out = grpo(args);
    assert!(
        out.status.success(),
        "grpo {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn group_line(step: usize, comps: &[&[u32]], rewards: &[f64]) -> String {
    let completions: Vec<Value> = comps
        .iter()
        .zip(rewards)
        .map(|(c, r)| json!({"token_ids": c, "text": "", "reward": r, "advantage": 0.0}))
        .collect();
    json!({"step": step, "prompt": format!("p{step}"), "answer": "1", "completions": completions})
        .to_string()
}

/// Step 1: group A (worked out below) and group B (two identical completions, trivial);
/// step 2: group C (no shared first token, trivial).
///
/// Group A: y0 = 1 2 3, y1 = 1 2 4, y2 = 1 5, y3 = 6, rewards 1 0 0 1. Compressed trie:
/// [1]{0,1,2} → [2]{0,1} → [3]{0}, [4]{1}; [1] → [5]{2}; [6]{3}: 6 sets. Path depths 3 3 2 1
/// (mean 9/4); shared-token shares 2/3 2/3 1/2 0 (mean 11/24); |λ| = 3 on three tokens, 2 on
/// two, 1 on four; 1 < 3 < 4 so non-trivial. R̂: {0,1,2} 1/3, {0,1} 1/2, leaves their reward.
fn hand_lines() -> (String, String) {
    let a = group_line(
        1,
        &[&[1, 2, 3], &[1, 2, 4], &[1, 5], &[6]],
        &[1.0, 0.0, 0.0, 1.0],
    );
    let b = group_line(1, &[&[7, 8], &[7, 8]], &[0.5, 0.5]);
    let c = group_line(2, &[&[1], &[2], &[3]], &[0.0, 1.0, 0.0]);
    (format!("{a}\n{b}\n"), format!("{c}\n"))
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() < TOL
}

fn num(v: &Value, key: &str) -> f64 {
    v[key]
        .as_f64()
        .unwrap_or_else(|| panic!("{key} missing in {v}"))
}

fn hist(v: &Value) -> Vec<u64> {
    v["lambda_histogram"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap())
        .collect()
}

fn check_hand_report(v: &Value) {
    assert_eq!(v["groups"], 3);
    assert_eq!(v["steps"], 2);
    assert!(close(num(v, "non_trivial_fraction"), 1.0 / 3.0));
    assert!(close(num(v, "mean_num_process_sets"), 10.0 / 3.0));
    assert!(close(num(v, "mean_path_depth"), (2.25 + 1.0 + 1.0) / 3.0));
    assert!(close(
        num(v, "mean_intermediate_proportion"),
        (11.0 / 24.0 + 1.0 + 0.0) / 3.0
    ));
    assert_eq!(hist(v), vec![0, 7, 6, 3, 0]);
    // 16 tokens in all; Σ k·count = 7 + 12 + 9 = 28.
    assert!(close(num(v, "mean_lambda"), 28.0 / 16.0));

    let steps = v["per_step"].as_array().unwrap();
    assert_eq!(steps.len(), 2);
    let s1 = &steps[0];
    assert_eq!(s1["step"], 1);
    assert_eq!(s1["groups"], 2);
    assert!(close(num(s1, "non_trivial_fraction"), 0.5));
    assert!(close(num(s1, "mean_num_process_sets"), 3.5));
    assert!(close(num(s1, "mean_path_depth"), 1.625));
    assert!(close(
        num(s1, "mean_intermediate_proportion"),
        (11.0 / 24.0 + 1.0) / 2.0
    ));
    assert_eq!(hist(s1), vec![0, 4, 6, 3, 0]);
    let s2 = &steps[1];
    assert_eq!(s2["step"], 2);
    assert_eq!(s2["groups"], 1);
    assert!(close(num(s2, "non_trivial_fraction"), 0.0));
    assert!(close(num(s2, "mean_num_process_sets"), 3.0));
    assert!(close(num(s2, "mean_path_depth"), 1.0));
    assert!(close(num(s2, "mean_intermediate_proportion"), 0.0));
    assert_eq!(hist(s2), vec![0, 3, 0, 0]);

    let groups = v["group_stats"].as_array().unwrap();
    assert_eq!(groups.len(), 3);
    let a = &groups[0];
    assert_eq!(
        (a["step"].as_u64(), a["group"].as_u64()),
        (Some(1), Some(0))
    );
    assert_eq!(a["num_process_sets"], 6);
    assert_eq!(a["path_depth"], json!([3, 3, 2, 1]));
    assert!(close(num(a, "mean_path_depth"), 2.25));
    assert!(close(num(a, "mean_intermediate_proportion"), 11.0 / 24.0));
    assert_eq!(a["non_trivial"], true);
    assert_eq!(hist(a), vec![0, 4, 2, 3, 0]);
    let sets: Vec<(Vec<u64>, usize, usize, f64)> = a["process_sets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["members"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|m| m.as_u64().unwrap())
                    .collect(),
                s["start"].as_u64().unwrap() as usize,
                s["depth"].as_u64().unwrap() as usize,
                s["mc_reward"].as_f64().unwrap(),
            )
        })
        .collect();
    let want: Vec<(Vec<u64>, usize, usize, f64)> = vec![
        (vec![0, 1, 2], 0, 1, 1.0 / 3.0),
        (vec![0, 1], 1, 2, 0.5),
        (vec![0], 2, 3, 1.0),
        (vec![1], 2, 3, 0.0),
        (vec![2], 1, 2, 0.0),
        (vec![3], 0, 1, 1.0),
    ];
    assert_eq!(sets.len(), want.len());
    for (got, want) in sets.iter().zip(&want) {
        assert_eq!((&got.0, got.1, got.2), (&want.0, want.1, want.2));
        assert!(close(got.3, want.3), "{got:?} vs {want:?}");
    }
    let b = &groups[1];
    assert_eq!(b["non_trivial"], false);
    assert_eq!(b["num_process_sets"], 1);
    assert!(close(num(b, "mean_intermediate_proportion"), 1.0));
    assert_eq!(hist(b), vec![0, 0, 4]);
}

fn write(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap();
}

fn gzip(path: &Path, text: &str) {
    let f = std::fs::File::create(path).unwrap();
    let mut enc = flate2::write::GzEncoder::new(f, flate2::Compression::default());
    enc.write_all(text.as_bytes()).unwrap();
    enc.finish().unwrap();
}

#[test]
fn hand_built_groups_library() {
    let tmp = tempfile::tempdir().unwrap();
    let (s1, s2) = hand_lines();
    let f = tmp.path().join("all.jsonl");
    write(&f, &(s1 + &s2));
    let groups = read_rollouts(&[&f]).unwrap();
    assert_eq!(groups.len(), 3);
    let rep = report(&groups, false);
    check_hand_report(&serde_json::to_value(&rep).unwrap());
    let brief = report(&groups, true);
    assert!(brief.group_stats.is_empty());
    assert_eq!(brief.overall, rep.overall);
}

#[test]
fn analyze_json_cli_plain_gzip_and_directory() {
    let tmp = tempfile::tempdir().unwrap();
    let (s1, s2) = hand_lines();
    // One file with both steps, out of order: groups are sorted by step.
    let f = tmp.path().join("mixed.jsonl");
    write(&f, &(s2.clone() + &s1));
    let v: Value =
        serde_json::from_str(&ok_stdout(&["analyze", "--json", f.to_str().unwrap()])).unwrap();
    check_hand_report(&v);

    // A run directory with rollouts/step-N.jsonl[.gz]; the step may also come from the name.
    let run = tmp.path().join("run");
    std::fs::create_dir_all(run.join("rollouts")).unwrap();
    gzip(&run.join("rollouts/step-1.jsonl.gz"), &s1);
    let no_step = s2.replace("\"step\":2,", "");
    assert_ne!(no_step, s2);
    write(&run.join("rollouts/step-2.jsonl"), &no_step);
    let v2: Value =
        serde_json::from_str(&ok_stdout(&["analyze", "--json", run.to_str().unwrap()])).unwrap();
    check_hand_report(&v2);

    // --step filters; --brief drops the per-group list.
    let v3: Value = serde_json::from_str(&ok_stdout(&[
        "analyze",
        "--json",
        "--brief",
        "--step",
        "1",
        run.to_str().unwrap(),
    ]))
    .unwrap();
    assert_eq!(v3["groups"], 2);
    assert_eq!(v3["group_stats"], json!([]));
    assert!(close(num(&v3, "non_trivial_fraction"), 0.5));

    // The table: one row per step and the overall row.
    let table = ok_stdout(&["analyze", run.to_str().unwrap()]);
    let rows: Vec<&str> = table.lines().collect();
    assert_eq!(rows.len(), 4, "{table}");
    assert!(rows[1].trim_start().starts_with("1 "));
    assert!(rows[1].contains("50.0%") && rows[1].contains("1:4 2:6 3:3"));
    assert!(rows[3].trim_start().starts_with("all") && rows[3].contains("33.3%"));
}

#[test]
fn group_tree_text_and_pictures() {
    let tmp = tempfile::tempdir().unwrap();
    let (s1, s2) = hand_lines();
    let f = tmp.path().join("r.jsonl");
    write(&f, &(s1 + &s2));
    let svg = tmp.path().join("tree.svg");
    let png = tmp.path().join("tree.png");
    let text = ok_stdout(&[
        "analyze",
        f.to_str().unwrap(),
        "--step",
        "1",
        "--group",
        "0",
        "--svg",
        svg.to_str().unwrap(),
        "--png",
        png.to_str().unwrap(),
    ]);
    let tree: Vec<&str> = text
        .lines()
        .skip_while(|l| !l.starts_with("prompt  "))
        .collect();
    assert_eq!(
        tree,
        vec![
            "prompt  |λ|=4  R̂=0.5000",
            "  - [0..1) |λ|=3  R̂=0.3333  {0,1,2}  [1]",
            "    - [1..2) |λ|=2  R̂=0.5000  {0,1}  [2]",
            "      - [2..3) |λ|=1  R̂=1.0000  {0}  [3]  ends: {0}",
            "      - [2..3) |λ|=1  R̂=0.0000  {1}  [4]  ends: {1}",
            "    - [1..2) |λ|=1  R̂=0.0000  {2}  [5]  ends: {2}",
            "  - [0..1) |λ|=1  R̂=1.0000  {3}  [6]  ends: {3}",
        ],
        "{text}"
    );
    let svg_text = std::fs::read_to_string(&svg).unwrap();
    assert!(svg_text.starts_with("<svg"));
    assert!(svg_text.contains("|λ| = 3"), "SVG lacks the node sizes");
    assert!(svg_text.contains("mean r = 0.333"));
    let png_bytes = std::fs::read(&png).unwrap();
    assert_eq!(&png_bytes[..8], b"\x89PNG\r\n\x1a\n");

    // --json with --group: that group's statistics only.
    let v: Value = serde_json::from_str(&ok_stdout(&[
        "analyze",
        f.to_str().unwrap(),
        "--step",
        "2",
        "--group",
        "0",
        "--json",
    ]))
    .unwrap();
    assert_eq!(v["num_process_sets"], 3);
    assert_eq!(v["non_trivial"], false);
}

#[test]
fn group_tree_decodes_with_tokenizer() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = fixture("tiny-qwen2");
    let tok = grpo::model::Tokenizer::load(&dir).unwrap();
    let a = tok.encode("12 + 7 = 19", false).unwrap();
    let b = tok.encode("12 + 7 = 20", false).unwrap();
    let f = tmp.path().join("step-5.jsonl");
    write(&f, &group_line(5, &[&a, &b], &[1.0, 0.0]));
    let text = ok_stdout(&[
        "analyze",
        f.to_str().unwrap(),
        "--group",
        "0",
        "--tokenizer",
        dir.to_str().unwrap(),
    ]);
    // The shared step decodes to the common text, the branches to the rest of each answer.
    let shared = text
        .lines()
        .find(|l| l.contains("- [") && l.contains("|λ|=2"))
        .unwrap_or_else(|| panic!("{text}"));
    assert!(shared.contains("\"12 + 7 ="), "{shared}");
    let leaves: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("- [") && l.contains("|λ|=1"))
        .collect();
    assert_eq!(leaves.len(), 2, "{text}");
    assert!(
        leaves[0].contains("19\"") && leaves[1].contains("20\""),
        "{text}"
    );
}

#[test]
fn errors_name_the_file_and_line() {
    let tmp = tempfile::tempdir().unwrap();
    let (s1, _) = hand_lines();
    let f = tmp.path().join("bad.jsonl");
    write(&f, &format!("{s1}{{\"step\": 3, \"completions\": 5}}\n"));
    let out = grpo(&["analyze", f.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("bad.jsonl:3"), "{err}");

    let empty = tmp.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    let err =
        String::from_utf8_lossy(&grpo(&["analyze", empty.to_str().unwrap()]).stderr).into_owned();
    assert!(err.contains("no rollout files"), "{err}");

    let good = tmp.path().join("good.jsonl");
    write(&good, &s1);
    let out = grpo(&["analyze", good.to_str().unwrap(), "--group", "7"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("step 1 has 2 groups"));
    let out = grpo(&["analyze", good.to_str().unwrap(), "--step", "9"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("--step 9"));
    let out = grpo(&[
        "analyze",
        good.to_str().unwrap(),
        "--group",
        "0",
        "--svg",
        "x.pdf",
    ]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("expected a .svg"));
}

// ---------------------------------------------------------------------------------------------
// tests/fixtures/losses.json: the analyze path reproduces every expected `group_stats`.

fn fixture_groups() -> Vec<(String, RolloutGroup, Value)> {
    let path = fixture("losses.json");
    let v: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let mut out = Vec::new();
    for (ci, case) in v["cases"].as_array().unwrap().iter().enumerate() {
        let g = case["group_size"].as_u64().unwrap() as usize;
        let comps: Vec<Vec<u32>> = serde_json::from_value(case["completions"].clone()).unwrap();
        let rewards: Vec<f64> = serde_json::from_value(case["rewards"].clone()).unwrap();
        let expected = case["expected"]["group_stats"].as_array().unwrap();
        assert_eq!(expected.len(), comps.len() / g);
        for (k, (cs, rs)) in comps.chunks(g).zip(rewards.chunks(g)).enumerate() {
            let group = RolloutGroup {
                step: ci + 1,
                prompt: format!("{} group {k}", case["name"]),
                answer: String::new(),
                completions: cs
                    .iter()
                    .zip(rs)
                    .map(|(c, &r)| RolloutCompletion {
                        token_ids: c.clone(),
                        text: String::new(),
                        reward: r,
                        advantage: 0.0,
                    })
                    .collect(),
                source: String::new(),
            };
            out.push((
                case["name"].as_str().unwrap().to_string(),
                group,
                expected[k].clone(),
            ));
        }
    }
    out
}

fn check_against_fixture(name: &str, got: &Value, want: &Value) {
    for key in ["num_process_sets", "non_trivial", "path_depth"] {
        assert_eq!(got[key], want[key], "{name}: {key}");
    }
    for key in [
        "mean_path_depth",
        "mean_intermediate_proportion",
        "sum_inverse_lambda",
    ] {
        assert!(
            (num(got, key) - num(want, key)).abs() < 1e-9,
            "{name}: {key} {} vs {}",
            got[key],
            want[key]
        );
    }
    let gi = got["intermediate_proportion"].as_array().unwrap();
    let wi = want["intermediate_proportion"].as_array().unwrap();
    assert_eq!(gi.len(), wi.len());
    for (a, b) in gi.iter().zip(wi) {
        assert!(
            (a.as_f64().unwrap() - b.as_f64().unwrap()).abs() < 1e-9,
            "{name}"
        );
    }
}

#[test]
fn losses_fixture_group_stats_library() {
    let groups = fixture_groups();
    assert!(groups.len() >= 6);
    let all: Vec<RolloutGroup> = groups.iter().map(|g| g.1.clone()).collect();
    let analysed = analyze_groups(&all);
    for ((name, _, want), got) in groups.iter().zip(&analysed) {
        check_against_fixture(name, &serde_json::to_value(got).unwrap(), want);
    }
}

#[test]
fn losses_fixture_group_stats_cli() {
    let tmp = tempfile::tempdir().unwrap();
    let groups = fixture_groups();
    let mut text = String::new();
    for (_, g, _) in &groups {
        text.push_str(&serde_json::to_string(g).unwrap());
        text.push('\n');
    }
    let f = tmp.path().join("fixture.jsonl");
    write(&f, &text);
    let v: Value =
        serde_json::from_str(&ok_stdout(&["analyze", "--json", f.to_str().unwrap()])).unwrap();
    let got = v["group_stats"].as_array().unwrap();
    assert_eq!(got.len(), groups.len());
    for ((name, _, want), g) in groups.iter().zip(got) {
        check_against_fixture(name, g, want);
    }
    let n = groups.len() as f64;
    let nt = groups
        .iter()
        .filter(|g| g.2["non_trivial"].as_bool().unwrap())
        .count() as f64;
    assert!(close(num(&v, "non_trivial_fraction"), nt / n));
    let depth: f64 = groups.iter().map(|g| num(&g.2, "mean_path_depth")).sum();
    assert!((num(&v, "mean_path_depth") - depth / n).abs() < 1e-9);
}
