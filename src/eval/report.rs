//! What `grpo eval` shows and writes about finished runs: `summary.json`, the per-benchmark
//! table of one model and the side-by-side comparison of several (`--compare`).

use std::collections::BTreeMap;
use std::fs;
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use serde_json::{json, Map, Value};

use super::{average, BenchmarkResult, EvalSettings};

/// The `summary.json` of one model's run: its settings, each benchmark's scores and, over several
/// benchmarks, their average.
pub fn summary_json(
    model: Option<&str>,
    few_shot: Option<usize>,
    s: &EvalSettings,
    results: &[BenchmarkResult],
) -> Value {
    let mut benchmarks = Map::new();
    for r in results {
        benchmarks.insert(r.benchmark.clone(), r.to_json());
    }
    let mut out = json!({
        "model": model.unwrap_or("oracle"),
        "settings": {
            "n": s.n,
            "ks": s.ks,
            "temperature": s.temperature,
            "top_p": s.top_p,
            "top_k": s.top_k,
            "max_new_tokens": s.max_new_tokens,
            "seed": s.seed,
            "limit": s.limit,
            "batch_size": s.batch_size,
            "system": s.prompt.system,
            "user_template": s.prompt.user_template,
            "chat_template": s.prompt.use_chat_template,
            "few_shot": few_shot,
        },
        "benchmarks": benchmarks,
    });
    if results.len() > 1 {
        out["average"] = average(results);
    }
    out
}

fn pct(v: f64) -> String {
    format!("{:.1}", 100.0 * v)
}

/// The per-benchmark table of one model (scores in %), with per-subject / per-level lines.
pub fn results_table(results: &[BenchmarkResult]) -> String {
    let Some(first) = results.first() else {
        return String::new();
    };
    let keys: Vec<String> = first.scores().into_iter().map(|(k, _)| k).collect();
    let mut header = vec!["benchmark".to_string(), "problems".into(), "n".into()];
    header.push(keys[0].clone());
    header.push("95% CI".into());
    header.extend(keys[1..].iter().cloned());
    header.extend(["mean len".into(), "no answer".into()]);
    let mut rows: Vec<Vec<String>> = Vec::new();
    for r in results {
        let scores = r.scores();
        let mut row = vec![
            r.benchmark.clone(),
            r.num_problems.to_string(),
            r.n.to_string(),
        ];
        row.push(pct(r.pass1));
        row.push(format!("[{}, {}]", pct(r.ci.lower), pct(r.ci.upper)));
        row.extend(scores[1..].iter().map(|(_, v)| pct(*v)));
        row.push(format!("{:.0}", r.mean_length));
        row.push(pct(r.no_answer_fraction));
        rows.push(row);
    }
    if results.len() > 1 {
        let avg = average(results);
        let mut row = vec![
            "average".to_string(),
            results
                .iter()
                .map(|r| r.num_problems)
                .sum::<usize>()
                .to_string(),
            String::new(),
        ];
        let get = |k: &str| {
            avg.get(k)
                .and_then(Value::as_f64)
                .map(pct)
                .unwrap_or_default()
        };
        row.push(get(&keys[0]));
        row.push(String::new());
        row.extend(keys[1..].iter().map(|k| get(k)));
        row.extend([String::new(), String::new()]);
        rows.push(row);
    }
    let mut out = table(&header, &rows, 1);
    for r in results {
        for (what, b) in [("subject", &r.by_subject), ("level", &r.by_level)] {
            if b.is_empty() {
                continue;
            }
            let parts: Vec<String> = b
                .iter()
                .map(|(k, v)| format!("{k} {} ({})", pct(v.pass1), v.num_problems))
                .collect();
            out.push_str(&format!(
                "{} pass@1 by {what}: {}\n",
                r.benchmark,
                parts.join(", ")
            ));
        }
    }
    out
}

/// Aligned columns; the first `left` are left-aligned (names), the rest right (numbers).
fn table(header: &[String], rows: &[Vec<String>], left: usize) -> String {
    let cols = header.len();
    let width: Vec<usize> = (0..cols)
        .map(|c| {
            rows.iter()
                .filter_map(|r| r.get(c))
                .chain(std::iter::once(&header[c]))
                .map(|s| s.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let line = |cells: &[String]| -> String {
        cells
            .iter()
            .enumerate()
            .map(|(c, s)| {
                if c < left {
                    format!("{s:<w$}", w = width[c])
                } else {
                    format!("{s:>w$}", w = width[c])
                }
            })
            .collect::<Vec<_>>()
            .join("  ")
            .trim_end()
            .to_string()
    };
    let mut out = line(header) + "\n";
    let rule: Vec<String> = width.iter().map(|w| "-".repeat(*w)).collect();
    out.push_str(&rule.join("  "));
    out.push('\n');
    for r in rows {
        out.push_str(&line(r));
        out.push('\n');
    }
    out
}

/// `(benchmark, [(metric, value)])` rows of one summary.
type ScoreRows = Vec<(String, Vec<(String, f64)>)>;

/// Scores per benchmark (and `average`) from a summary.json value, in file order.
fn scores_of(summary: &Value) -> ScoreRows {
    let mut out = Vec::new();
    let score_keys = |obj: &Map<String, Value>| -> Vec<(String, f64)> {
        obj.iter()
            .filter(|(k, _)| k.starts_with("pass@") || k.starts_with("maj@"))
            .filter_map(|(k, v)| v.as_f64().map(|v| (k.clone(), v)))
            .collect()
    };
    if let Some(b) = summary.get("benchmarks").and_then(Value::as_object) {
        for (name, v) in b {
            if let Some(obj) = v.as_object() {
                out.push((name.clone(), score_keys(obj)));
            }
        }
    }
    if let Some(obj) = summary.get("average").and_then(Value::as_object) {
        out.push(("average".into(), score_keys(obj)));
    }
    out
}

/// Side-by-side table: one row per (benchmark, metric), one column per model (labelled
/// summaries), and B − A when there are two.
pub fn comparison_table(summaries: &[(String, Value)]) -> String {
    let per_model: Vec<ScoreRows> = summaries.iter().map(|(_, s)| scores_of(s)).collect();
    // Rows in first-seen order over all models.
    let mut order: Vec<(String, String)> = Vec::new();
    let mut values: BTreeMap<(String, String), Vec<Option<f64>>> = BTreeMap::new();
    for (m, model) in per_model.iter().enumerate() {
        for (bench, scores) in model {
            for (key, v) in scores {
                let id = (bench.clone(), key.clone());
                if !values.contains_key(&id) {
                    order.push(id.clone());
                }
                values
                    .entry(id)
                    .or_insert_with(|| vec![None; summaries.len()])[m] = Some(*v);
            }
        }
    }
    let mut header = vec!["benchmark".to_string(), "metric".into()];
    header.extend(summaries.iter().map(|(l, _)| l.clone()));
    let two = summaries.len() == 2;
    if two {
        header.push("Δ".into());
    }
    let rows: Vec<Vec<String>> = order
        .iter()
        .map(|id| {
            let v = &values[id];
            let mut row = vec![id.0.clone(), id.1.clone()];
            row.extend(v.iter().map(|x| x.map(pct).unwrap_or_else(|| "-".into())));
            if two {
                row.push(match (v[0], v[1]) {
                    (Some(a), Some(b)) => format!("{:+.1}", 100.0 * (b - a)),
                    _ => "-".into(),
                });
            }
            row
        })
        .collect();
    table(&header, &rows, 2)
}

/// The summaries `--compare DIR...` names: each DIR's summary.json, or the per-model summaries
/// one level down, labelled by their directory.
pub fn load_summaries(dirs: &[PathBuf]) -> Result<Vec<(String, Value)>> {
    let mut summaries = Vec::new();
    for dir in dirs {
        let direct = dir.join("summary.json");
        let mut paths = Vec::new();
        if direct.is_file() {
            paths.push((dir.display().to_string(), direct));
        } else {
            let entries = fs::read_dir(dir)
                .with_context(|| format!("--compare: reading {}", dir.display()))?;
            let mut subs: Vec<PathBuf> = entries
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.join("summary.json").is_file())
                .collect();
            subs.sort();
            for s in subs {
                paths.push((s.display().to_string(), s.join("summary.json")));
            }
        }
        if paths.is_empty() {
            bail!("--compare: {} holds no summary.json", dir.display());
        }
        for (label, path) in paths {
            let text =
                fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
            let v: Value = serde_json::from_str(&text)
                .with_context(|| format!("parsing {}", path.display()))?;
            if v.get("benchmarks").and_then(Value::as_object).is_none() {
                bail!("{}: expected a `benchmarks` object", path.display());
            }
            summaries.push((label, v));
        }
    }
    Ok(summaries)
}
