//! Where a model comes from: a local folder, or a hub id fetched into (or found in) the
//! Hugging Face cache with only the files a checkpoint needs.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use super::checkpoint::TOKENIZER_FILES;
use crate::hub::{is_repo_id, HubEnv, HubRepo, RepoKind};

const CONFIG: &str = "config.json";
const WEIGHTS: &str = "model.safetensors";
const INDEX: &str = "model.safetensors.index.json";

/// Which files are needed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    /// config, generation config, tokenizer files and the safetensors weights.
    Model,
    /// The tokenizer files only (`init-model --tokenizer`).
    Tokenizer,
}

/// A resolved model folder, and the commit when it came from the Hub.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelSource {
    pub dir: PathBuf,
    /// The commit the hub revision resolved to; `None` for a local folder.
    pub commit: Option<String>,
}

/// A local directory if `name_or_path` is one, else the snapshot of that hub id (downloaded
/// when the cache does not already hold every file needed).
pub fn resolve_model_dir(name_or_path: &str, revision: Option<&str>) -> Result<PathBuf> {
    Ok(resolve_model(name_or_path, revision, Need::Model)?.dir)
}

/// Resolves a model folder or hub id. A revision whose snapshot in the cache (`refs/{rev}`, or
/// the commit itself) already holds every needed file is used with no network call, whatever
/// the mode: unlike `huggingface_hub`, a cached branch is not checked for newer commits (pin a
/// commit, or remove `refs/main`, to move on). Otherwise the repo's file list is read from the
/// Hub and the missing files are downloaded (never under `HF_HUB_OFFLINE=1`).
pub fn resolve_model(
    name_or_path: &str,
    revision: Option<&str>,
    need: Need,
) -> Result<ModelSource> {
    let p = Path::new(name_or_path);
    if p.is_dir() {
        return Ok(ModelSource {
            dir: p.to_path_buf(),
            commit: None,
        });
    }
    if !is_repo_id(name_or_path) {
        bail!("model `{name_or_path}`: no such directory, and not a hub id (`org/name`) either");
    }
    let mut repo = HubRepo::new(HubEnv::from_env(), RepoKind::Model, name_or_path, revision)?;
    let not_local = || {
        format!(
            "`{name_or_path}` is not a local directory, so it is read from the Hugging Face Hub"
        )
    };
    if let Some((commit, dir)) = repo.cached_snapshot() {
        if missing(&dir, need).is_none() {
            tracing::debug!(dir = %dir.display(), "model from the Hugging Face cache");
            return Ok(ModelSource {
                dir,
                commit: Some(commit),
            });
        }
    }
    if repo.env.offline {
        let why = match repo.cached_snapshot() {
            Some((_, dir)) => missing(&dir, need).unwrap_or_default(),
            None => "no snapshot of it".into(),
        };
        return Err(repo.offline_error(&why)).with_context(not_local);
    }
    download(&mut repo, need).with_context(not_local)
}

/// A local folder, or the complete cached snapshot of a hub id; never a network call.
pub fn cached_model_dir(name_or_path: &str, revision: Option<&str>) -> Option<PathBuf> {
    let p = Path::new(name_or_path);
    if p.is_dir() {
        return Some(p.to_path_buf());
    }
    let repo = HubRepo::new(HubEnv::from_env(), RepoKind::Model, name_or_path, revision).ok()?;
    let (_, dir) = repo.cached_snapshot()?;
    missing(&dir, Need::Model).is_none().then_some(dir)
}

/// What a snapshot folder lacks for `need` (`None`: complete).
fn missing(dir: &Path, need: Need) -> Option<String> {
    let has = |f: &str| dir.join(f).is_file();
    let tokenizer = has("tokenizer.json") || has("tokenizer_config.json");
    if !tokenizer {
        return Some("no tokenizer.json or tokenizer_config.json".into());
    }
    if need == Need::Tokenizer {
        return None;
    }
    if !has(CONFIG) {
        return Some("no config.json".into());
    }
    if has(WEIGHTS) {
        return None;
    }
    if !has(INDEX) {
        return Some("no model.safetensors".into());
    }
    let Ok(shards) = shards(&dir.join(INDEX)) else {
        return Some(format!("an unreadable {INDEX}"));
    };
    let absent: Vec<&String> = shards.iter().filter(|s| !has(s)).collect();
    (!absent.is_empty()).then(|| format!("shard {} missing", absent[0]))
}

/// The shard files `model.safetensors.index.json` names.
fn shards(index: &Path) -> Result<BTreeSet<String>> {
    let text =
        std::fs::read_to_string(index).with_context(|| format!("reading {}", index.display()))?;
    let json: serde_json::Value =
        serde_json::from_str(&text).with_context(|| format!("parsing {}", index.display()))?;
    let map = json
        .get("weight_map")
        .and_then(|m| m.as_object())
        .with_context(|| format!("{}: missing object `weight_map`", index.display()))?;
    let files: BTreeSet<String> = map
        .values()
        .filter_map(|v| v.as_str().map(str::to_string))
        .collect();
    if files.is_empty() {
        bail!("{}: `weight_map` lists no files", index.display());
    }
    Ok(files)
}

/// Lists the repo, then fetches config, tokenizer files and safetensors weights (never
/// `*.bin`, `*.pth`, `*.gguf`); the ref is written last, once the snapshot is complete.
fn download(repo: &mut HubRepo, need: Need) -> Result<ModelSource> {
    let listing = repo.list()?;
    let top: BTreeSet<&str> = listing
        .files
        .iter()
        .map(String::as_str)
        .filter(|f| !f.contains('/'))
        .collect();
    let mut wanted: Vec<&str> = Vec::new();
    if need == Need::Model {
        if !top.contains(CONFIG) {
            bail!(
                "{} has no config.json at commit {}: not a transformers checkpoint",
                repo.describe(),
                listing.commit
            );
        }
        wanted.push(CONFIG);
    }
    wanted.extend(TOKENIZER_FILES.iter().copied().filter(|f| top.contains(f)));
    if !wanted.contains(&"tokenizer.json") && !wanted.contains(&"tokenizer_config.json") {
        bail!(
            "{} has no tokenizer.json or tokenizer_config.json at commit {}",
            repo.describe(),
            listing.commit
        );
    }
    let commit = listing.commit.clone();
    for f in &wanted {
        repo.fetch(&commit, f)?;
    }
    if need == Need::Model {
        if top.contains(WEIGHTS) {
            repo.fetch(&commit, WEIGHTS)?;
        } else if top.contains(INDEX) {
            let index = repo.fetch(&commit, INDEX)?;
            for shard in shards(&index)? {
                if !top.contains(shard.as_str()) {
                    bail!(
                        "{}: {INDEX} names `{shard}`, which the repo does not have",
                        repo.describe()
                    );
                }
                repo.fetch(&commit, &shard)?;
            }
        } else {
            let other: Vec<&str> = top
                .iter()
                .copied()
                .filter(|f| {
                    [".bin", ".pth", ".pt", ".gguf", ".h5", ".msgpack"]
                        .iter()
                        .any(|e| f.ends_with(e))
                })
                .collect();
            bail!(
                "{} has no safetensors weights (model.safetensors or {INDEX}) at commit {}; \
                 grpo reads safetensors only{}",
                repo.describe(),
                commit,
                if other.is_empty() {
                    String::new()
                } else {
                    format!(" (the repo has {})", other.join(", "))
                }
            );
        }
    }
    repo.set_ref(&commit)?;
    let dir = repo.cache.snapshot_dir(&commit);
    if let Some(what) = missing(&dir, need) {
        bail!(
            "{}: after downloading, the snapshot still has {what}",
            repo.describe()
        );
    }
    Ok(ModelSource {
        dir,
        commit: Some(commit),
    })
}
