//! The output directory of `grpo eval --out DIR`: `run.json` (what the samples depend on) and
//! `samples.jsonl` (one graded sample per line, appended per finished batch), so that an
//! interrupted run resumes where it stopped and a run with other settings is refused.

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde_json::Value;

use super::{complete_problems, EvalSet, SampleRecord};

/// An output directory: run.json (the run's identity), samples.jsonl (appended per batch).
pub struct Store {
    samples: PathBuf,
    /// Saved rows per benchmark, not yet handed to a benchmark of this run.
    saved: BTreeMap<String, Vec<SampleRecord>>,
}

impl Store {
    /// Opens (or creates) `dir`, checks that a previous run used the same settings, and compacts
    /// samples.jsonl to whole problems (dropping a line cut off by an interruption).
    pub fn open(dir: &Path, ident: &Value) -> Result<Store> {
        fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let run = dir.join("run.json");
        if run.is_file() {
            let text =
                fs::read_to_string(&run).with_context(|| format!("reading {}", run.display()))?;
            let old: Value = serde_json::from_str(&text)
                .with_context(|| format!("parsing {}", run.display()))?;
            if &old != ident {
                let diff: Vec<String> = ident
                    .as_object()
                    .into_iter()
                    .flatten()
                    .filter(|(k, v)| old.get(k.as_str()) != Some(*v))
                    .map(|(k, v)| {
                        format!(
                            "{k}: was {}, now {v}",
                            old.get(k.as_str()).unwrap_or(&Value::Null)
                        )
                    })
                    .collect();
                bail!(
                    "{} was written with other settings ({}): use another --out or the same \
                     settings to resume",
                    dir.display(),
                    diff.join("; ")
                );
            }
        } else {
            fs::write(&run, serde_json::to_string_pretty(ident)? + "\n")
                .with_context(|| format!("writing {}", run.display()))?;
        }
        let samples = dir.join("samples.jsonl");
        let mut saved: BTreeMap<String, Vec<SampleRecord>> = BTreeMap::new();
        let mut cut = false;
        if samples.is_file() {
            let text = fs::read_to_string(&samples)
                .with_context(|| format!("reading {}", samples.display()))?;
            let lines: Vec<&str> = text.lines().collect();
            for (i, line) in lines.iter().enumerate() {
                if line.trim().is_empty() {
                    continue;
                }
                match serde_json::from_str::<SampleRecord>(line) {
                    Ok(r) => saved.entry(r.benchmark.clone()).or_default().push(r),
                    // The last line may be cut off by an interruption.
                    Err(_) if i + 1 == lines.len() && !text.ends_with('\n') => cut = true,
                    Err(e) => bail!("{}:{}: {e}", samples.display(), i + 1),
                }
            }
        }
        let store = Store { samples, saved };
        if cut {
            // Appending after a cut-off line would glue two records together.
            let rows: Vec<SampleRecord> = store.saved.values().flatten().cloned().collect();
            store.write_all(&rows)?;
        }
        Ok(store)
    }

    /// The saved, complete problems of `set`; rewrites samples.jsonl without partial problems.
    pub fn take(&mut self, set: &EvalSet, n: usize) -> Result<Vec<SampleRecord>> {
        let rows = self.saved.remove(&set.name).unwrap_or_default();
        let before = rows.len();
        let kept = complete_problems(set, n, rows)?;
        if kept.len() != before || !self.samples.is_file() {
            self.rewrite(&set.name, &kept)?;
        }
        Ok(kept)
    }

    /// Rewrites samples.jsonl: other benchmarks' lines as they are, `name`'s replaced by `rows`.
    fn rewrite(&self, name: &str, rows: &[SampleRecord]) -> Result<()> {
        let mut text = String::new();
        if self.samples.is_file() {
            let old = fs::read_to_string(&self.samples)
                .with_context(|| format!("reading {}", self.samples.display()))?;
            for line in old.lines() {
                if let Ok(r) = serde_json::from_str::<SampleRecord>(line) {
                    if r.benchmark != name {
                        text.push_str(line);
                        text.push('\n');
                    }
                }
            }
        }
        for r in rows {
            text.push_str(&serde_json::to_string(r)?);
            text.push('\n');
        }
        self.write_all_text(text)
    }

    fn write_all(&self, rows: &[SampleRecord]) -> Result<()> {
        let mut text = String::new();
        for r in rows {
            text.push_str(&serde_json::to_string(r)?);
            text.push('\n');
        }
        self.write_all_text(text)
    }

    /// Replaces samples.jsonl atomically.
    fn write_all_text(&self, text: String) -> Result<()> {
        let tmp = self.samples.with_extension("jsonl.tmp");
        fs::write(&tmp, text).with_context(|| format!("writing {}", tmp.display()))?;
        fs::rename(&tmp, &self.samples)
            .with_context(|| format!("replacing {}", self.samples.display()))
    }

    pub fn append(&mut self, rows: &[SampleRecord]) -> Result<()> {
        let mut text = String::new();
        for r in rows {
            text.push_str(&serde_json::to_string(r)?);
            text.push('\n');
        }
        let mut f = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.samples)
            .with_context(|| format!("opening {}", self.samples.display()))?;
        f.write_all(text.as_bytes())
            .and_then(|_| f.flush())
            .with_context(|| format!("appending to {}", self.samples.display()))
    }
}
