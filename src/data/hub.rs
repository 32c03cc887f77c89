//! Data sets by hub id (`data.dataset_name`, `grpo eval --dataset`): the repo's own Parquet or
//! JSONL files for one config and split, found by the file naming `datasets` uses
//! (`{config}/{split}-*.parquet`, `data/{split}-*`, `{split}.jsonl`, `{config}/{split}/*`),
//! fetched into the Hugging Face cache and read as JSONL rows are.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use super::benchmarks::{BenchmarkSpec, GoldSource};
use super::dataset::{example_from_row, read_rows, Example, Row};
use super::parquet::read_parquet_rows;
use crate::hub::{snapshot_files, HubEnv, HubRepo, RepoKind};

/// One split of one config of a hub data set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HubSplit {
    pub name: String,
    /// `None`: the data set's only config (or `default`).
    pub config: Option<String>,
    pub split: String,
}

impl HubSplit {
    fn describe(&self) -> String {
        match &self.config {
            Some(c) => format!("`{}` (config `{c}`, split `{}`)", self.name, self.split),
            None => format!("`{}` (split `{}`)", self.name, self.split),
        }
    }
}

/// The examples of a hub split and the commit they were read at.
#[derive(Debug, Clone)]
pub struct HubRows {
    pub examples: Vec<Example>,
    pub commit: String,
}

/// `datasets`' split names and the words that stand for them in file names.
const SPLIT_WORDS: &[(&str, &[&str])] = &[
    ("train", &["train", "training"]),
    ("validation", &["validation", "valid", "dev", "val"]),
    ("test", &["test", "testing", "eval", "evaluation"]),
];

fn canonical(word: &str) -> Option<&'static str> {
    let w = word.to_ascii_lowercase();
    SPLIT_WORDS
        .iter()
        .find(|(_, words)| words.contains(&w.as_str()))
        .map(|(name, _)| *name)
}

fn is_data_file(path: &str) -> bool {
    let lower = path.to_ascii_lowercase();
    !path.split('/').any(|c| c.starts_with('.'))
        && [".parquet", ".jsonl", ".json"]
            .iter()
            .any(|e| lower.ends_with(e))
}

/// The config a data file belongs to: its top folder, unless that is `data` or a split name.
fn config_of(path: &str) -> &str {
    match path.split_once('/') {
        Some((top, _))
            if top != "data" && canonical(top.trim_start_matches("partial-")).is_none() =>
        {
            top
        }
        _ => "default",
    }
}

/// The split a data file belongs to: a folder named after one, else the first split word of
/// the file name (`train-00000-of-00001.parquet`, `test.jsonl`, `gsm8k_dev.json`), else the
/// requested split when the name starts with it (custom splits), else `train`.
fn split_of(path: &str, requested: &str) -> String {
    let parts: Vec<&str> = path.split('/').collect();
    let (file, dirs) = parts.split_last().expect("split yields one part");
    for d in dirs.iter().rev() {
        let d = d.trim_start_matches("partial-");
        if d == requested {
            return requested.to_string();
        }
        if let Some(c) = canonical(d) {
            return c.to_string();
        }
    }
    let stem = file.split('.').next().unwrap_or(file);
    let sep = |c: char| "-._ ".contains(c) || c.is_ascii_digit();
    if stem == requested
        || stem
            .strip_prefix(requested)
            .is_some_and(|rest| rest.starts_with(sep))
    {
        return canonical(requested).unwrap_or(requested).to_string();
    }
    for word in stem.split(sep) {
        if let Some(c) = canonical(word) {
            return c.to_string();
        }
    }
    "train".to_string()
}

/// The data files of `want` among a repo's files (sorted), or an error listing the configs or
/// splits that exist.
fn choose(files: &[String], want: &HubSplit) -> Result<Vec<String>> {
    let data: Vec<&String> = files.iter().filter(|f| is_data_file(f)).collect();
    if data.is_empty() {
        bail!(
            "data set {} has no Parquet or JSONL data files (files: {})",
            want.describe(),
            files
                .iter()
                .take(20)
                .cloned()
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    let mut by_config: BTreeMap<&str, Vec<&String>> = BTreeMap::new();
    for f in &data {
        by_config.entry(config_of(f)).or_default().push(f);
    }
    let configs: Vec<&str> = by_config.keys().copied().collect();
    let config = match &want.config {
        Some(c) => c.as_str(),
        None if configs.len() == 1 => configs[0],
        None if by_config.contains_key("default") => "default",
        None => bail!(
            "data set `{}` has several configs ({}): choose one with data.dataset_config \
             (or --dataset-config)",
            want.name,
            configs.join(", ")
        ),
    };
    let Some(in_config) = by_config.get(config) else {
        bail!(
            "data set `{}` has no config `{config}`; configs: {}",
            want.name,
            configs.join(", ")
        );
    };
    let rel = |f: &str| -> String {
        match config {
            "default" => f.strip_prefix("data/").unwrap_or(f).to_string(),
            c => f.strip_prefix(&format!("{c}/")).unwrap_or(f).to_string(),
        }
    };
    let wanted = canonical(&want.split).unwrap_or(want.split.as_str());
    let mut splits = BTreeSet::new();
    let mut chosen = Vec::new();
    for f in in_config {
        let s = split_of(&rel(f.as_str()), &want.split);
        if s == wanted {
            chosen.push((*f).clone());
        }
        splits.insert(s);
    }
    if chosen.is_empty() {
        bail!(
            "data set {} has no split `{}`; splits: {}",
            want.describe(),
            want.split,
            splits.into_iter().collect::<Vec<_>>().join(", ")
        );
    }
    chosen.sort();
    Ok(chosen)
}

/// For files named `…-00000-of-00003.…`: whether every shard is there.
fn shards_complete(files: &[String]) -> bool {
    let mut expected: BTreeMap<String, (usize, BTreeSet<usize>)> = BTreeMap::new();
    for f in files {
        let Some((head, tail)) = f.rsplit_once("-of-") else {
            continue;
        };
        let total: String = tail.chars().take_while(char::is_ascii_digit).collect();
        let Some((prefix, idx)) = head.rsplit_once('-') else {
            continue;
        };
        if let (Ok(total), Ok(idx)) = (total.parse::<usize>(), idx.parse::<usize>()) {
            let e = expected.entry(format!("{prefix}/{total}")).or_default();
            e.0 = total;
            e.1.insert(idx);
        }
    }
    expected.values().all(|(n, got)| got.len() == *n)
}

/// Reads a split of a hub data set; `revision` defaults to `main`. A snapshot in the cache
/// that has the split's files is used with no network call.
pub fn load_hub_split(
    want: &HubSplit,
    revision: Option<&str>,
    question_field: &str,
    answer_field: &str,
) -> Result<HubRows> {
    let mut repo = HubRepo::new(HubEnv::from_env(), RepoKind::Dataset, &want.name, revision)?;
    let cached = repo.cached_snapshot().and_then(|(commit, dir)| {
        let files = snapshot_files(&dir);
        let chosen = choose(&files, want).ok()?;
        shards_complete(&chosen).then_some((commit, dir, chosen))
    });
    let (commit, paths) = match cached {
        Some((commit, dir, chosen)) => {
            let paths = chosen.iter().map(|f| dir.join(f)).collect();
            (commit, paths)
        }
        None if repo.env.offline => {
            let why = match repo.cached_snapshot() {
                Some((_, dir)) => choose(&snapshot_files(&dir), want)
                    .err()
                    .map(|e| e.to_string())
                    .unwrap_or_else(|| "some shards are missing".into()),
                None => "no snapshot of it".into(),
            };
            return Err(repo.offline_error(&why));
        }
        None => {
            let listing = repo.list()?;
            let chosen = choose(&listing.files, want)?;
            let mut paths = Vec::new();
            for f in &chosen {
                paths.push(repo.fetch(&listing.commit, f)?);
            }
            repo.set_ref(&listing.commit)?;
            (listing.commit, paths)
        }
    };
    let examples = read_examples(want, &paths, question_field, answer_field)
        .with_context(|| format!("data set {}", want.describe()))?;
    Ok(HubRows { examples, commit })
}

fn read_examples(
    want: &HubSplit,
    paths: &[PathBuf],
    question_field: &str,
    answer_field: &str,
) -> Result<Vec<Example>> {
    let short = want.name.rsplit('/').next().unwrap_or(&want.name);
    let mut spec = BenchmarkSpec::custom(
        &format!("{short}-{}", want.split),
        PathBuf::new(),
        question_field,
        answer_field,
    );
    spec.gold = GoldSource::FinalAnswerOf(answer_field.to_string());
    let mut examples = Vec::new();
    for path in paths {
        for row in read_file_rows(path)? {
            let i = examples.len();
            examples.push(example_from_row(path, &row, &spec, i)?);
        }
    }
    if examples.is_empty() {
        bail!("no rows");
    }
    Ok(examples)
}

/// Rows of one data file: Parquet, JSONL, or a `.json` array of objects.
fn read_file_rows(path: &Path) -> Result<Vec<Row>> {
    let name = path.to_string_lossy().to_ascii_lowercase();
    if name.ends_with(".parquet") {
        return read_parquet_rows(path);
    }
    if name.ends_with(".json") {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        if text.trim_start().starts_with('[') {
            let v: Vec<serde_json::Value> = serde_json::from_str(&text)
                .with_context(|| format!("{}: invalid JSON", path.display()))?;
            return v
                .into_iter()
                .enumerate()
                .map(|(i, v)| match v {
                    serde_json::Value::Object(m) => Ok((i + 1, m)),
                    _ => bail!("{}: item {}: expected a JSON object", path.display(), i + 1),
                })
                .collect();
        }
    }
    read_rows(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn want(config: Option<&str>, split: &str) -> HubSplit {
        HubSplit {
            name: "org/ds".into(),
            config: config.map(str::to_string),
            split: split.into(),
        }
    }

    fn files(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn gsm8k_layout() {
        let f = files(&[
            ".gitattributes",
            "README.md",
            "main/test-00000-of-00001.parquet",
            "main/train-00000-of-00001.parquet",
            "socratic/test-00000-of-00001.parquet",
            "socratic/train-00000-of-00001.parquet",
        ]);
        assert_eq!(
            choose(&f, &want(Some("main"), "test")).unwrap(),
            ["main/test-00000-of-00001.parquet"]
        );
        let err = choose(&f, &want(None, "test")).unwrap_err().to_string();
        assert!(err.contains("several configs (main, socratic)"), "{err}");
        let err = choose(&f, &want(Some("mian"), "test"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("no config `mian`; configs: main, socratic"),
            "{err}"
        );
        let err = choose(&f, &want(Some("main"), "validation"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("no split `validation`; splits: test, train"),
            "{err}"
        );
    }

    #[test]
    fn other_layouts() {
        let f = files(&["README.md", "test.jsonl"]);
        assert_eq!(choose(&f, &want(None, "test")).unwrap(), ["test.jsonl"]);
        let f = files(&[
            "data/train-00000-of-00002.parquet",
            "data/train-00001-of-00002.parquet",
            "data/validation-00000-of-00001.parquet",
        ]);
        assert_eq!(choose(&f, &want(None, "train")).unwrap().len(), 2);
        assert_eq!(choose(&f, &want(None, "validation")).unwrap().len(), 1);
        assert!(shards_complete(&f));
        assert!(!shards_complete(&f[..1]));
        let f = files(&["default/train/0000.parquet", "default/test/0000.parquet"]);
        assert_eq!(
            choose(&f, &want(None, "test")).unwrap(),
            ["default/test/0000.parquet"]
        );
        let f = files(&["gsm8k_dev.json", "gsm8k_train.json", "custom_split.jsonl"]);
        assert_eq!(
            choose(&f, &want(None, "validation")).unwrap(),
            ["gsm8k_dev.json"]
        );
        assert_eq!(
            choose(&f, &want(None, "custom_split")).unwrap(),
            ["custom_split.jsonl"]
        );
    }
}
