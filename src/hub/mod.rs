//! The Hugging Face Hub: the environment users set (`HF_ENDPOINT`, `HF_TOKEN`, `HF_HUB_OFFLINE`,
//! `HF_HOME`, `HF_HUB_CACHE`), the shared cache layout, and a downloader into it.
//!
//! The cache is the one Python's `huggingface_hub` reads and writes
//! (`{cache}/models--org--name/{blobs/ETAG, snapshots/COMMIT/FILE -> ../../blobs/ETAG,
//! refs/REVISION}`), so files downloaded by either side are reused by the other. A file is
//! written to `blobs/ETAG.incomplete` and renamed only once its size matches what the server
//! announced: an interrupted download is resumed (HTTP `Range`) by the next run and never used.
//!
//! This module is the lowest layer: it imports nothing of the crate. Which files a model or a
//! data set needs is decided by `model::source` and `data::hub`.

mod cache;
mod http;
mod progress;

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

pub use cache::{is_commit_hash, CacheRepo};

/// The default endpoint, replaced by `HF_ENDPOINT` (mirrors, test servers).
pub const DEFAULT_ENDPOINT: &str = "https://huggingface.co";

/// Models or data sets: they live under different URL prefixes and cache folders.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RepoKind {
    Model,
    Dataset,
}

impl RepoKind {
    /// `models` / `datasets`: the cache folder prefix and the API path segment.
    pub fn plural(self) -> &'static str {
        match self {
            RepoKind::Model => "models",
            RepoKind::Dataset => "datasets",
        }
    }

    fn noun(self) -> &'static str {
        match self {
            RepoKind::Model => "model",
            RepoKind::Dataset => "dataset",
        }
    }

    /// The prefix of `resolve` URLs and web pages: none for models, `datasets/` for data sets.
    fn url_prefix(self) -> &'static str {
        match self {
            RepoKind::Model => "",
            RepoKind::Dataset => "datasets/",
        }
    }
}

/// What the environment says about the Hub, read once per command.
#[derive(Debug, Clone)]
pub struct HubEnv {
    /// `HF_ENDPOINT` without a trailing slash, else [`DEFAULT_ENDPOINT`].
    pub endpoint: String,
    /// `HF_TOKEN`, else the token file `huggingface-cli login` writes (`$HF_HOME/token`).
    pub token: Option<String>,
    /// `HF_HUB_CACHE`, else `$HF_HOME/hub`, else `~/.cache/huggingface/hub`.
    pub cache: PathBuf,
    /// `HF_HUB_OFFLINE` (or `TRANSFORMERS_OFFLINE`) is 1/true/yes/on: never a network call.
    pub offline: bool,
}

fn var(key: &str) -> Option<String> {
    std::env::var(key).ok().filter(|v| !v.trim().is_empty())
}

fn truthy(v: Option<String>) -> bool {
    v.is_some_and(|v| {
        matches!(
            v.trim().to_ascii_lowercase().as_str(),
            "1" | "true" | "yes" | "on"
        )
    })
}

impl HubEnv {
    /// Reads the variables `huggingface_hub` reads, with its precedence.
    pub fn from_env() -> HubEnv {
        let home = || {
            var("HOME")
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from("."))
        };
        let hf_home = var("HF_HOME").map(PathBuf::from).unwrap_or_else(|| {
            var("XDG_CACHE_HOME")
                .map(PathBuf::from)
                .unwrap_or_else(|| home().join(".cache"))
                .join("huggingface")
        });
        let cache = var("HF_HUB_CACHE")
            .or_else(|| var("HUGGINGFACE_HUB_CACHE"))
            .map(PathBuf::from)
            .unwrap_or_else(|| hf_home.join("hub"));
        let token = var("HF_TOKEN")
            .or_else(|| var("HUGGING_FACE_HUB_TOKEN"))
            .or_else(|| {
                let path = var("HF_TOKEN_PATH")
                    .map(PathBuf::from)
                    .unwrap_or_else(|| hf_home.join("token"));
                std::fs::read_to_string(path).ok()
            })
            .map(|t| t.trim().to_string())
            .filter(|t| !t.is_empty());
        let endpoint = var("HF_ENDPOINT")
            .unwrap_or_else(|| DEFAULT_ENDPOINT.to_string())
            .trim()
            .trim_end_matches('/')
            .to_string();
        let offline = truthy(var("HF_HUB_OFFLINE").or_else(|| var("TRANSFORMERS_OFFLINE")));
        HubEnv {
            endpoint,
            token,
            cache,
            offline,
        }
    }
}

/// True for names the Hub accepts as repo ids: `name` or `org/name` of letters, digits, `-`,
/// `_`, `.` (no `--`, no `..`, at most 96 characters).
pub fn is_repo_id(s: &str) -> bool {
    let parts: Vec<&str> = s.split('/').collect();
    !s.is_empty()
        && s.len() <= 96
        && parts.len() <= 2
        && !s.contains("--")
        && !s.contains("..")
        && parts.iter().all(|p| {
            !p.is_empty()
                && !p.starts_with(['.', '-'])
                && !p.ends_with(['.', '-'])
                && p.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        })
}

/// One repo at one revision as the Hub lists it.
#[derive(Debug, Clone)]
pub struct Listing {
    /// The commit the revision resolved to.
    pub commit: String,
    /// Every file path of the repo at that commit.
    pub files: Vec<String>,
}

/// A repo of the Hub at a revision, and its folder in the cache.
pub struct HubRepo {
    pub env: HubEnv,
    pub kind: RepoKind,
    pub id: String,
    pub revision: String,
    pub cache: CacheRepo,
    client: Option<http::Client>,
}

impl HubRepo {
    /// `revision` defaults to `main`.
    pub fn new(env: HubEnv, kind: RepoKind, id: &str, revision: Option<&str>) -> Result<HubRepo> {
        if !is_repo_id(id) {
            bail!(
                "`{id}` is not a {} repo id (expected `name` or `org/name` of letters, digits, \
                 `-`, `_`, `.`)",
                kind.noun()
            );
        }
        let revision = revision.unwrap_or("main").to_string();
        if revision.trim().is_empty() || revision.contains("..") || revision.starts_with('/') {
            bail!("revision `{revision}`: expected a branch, tag or commit hash");
        }
        let cache = CacheRepo::new(&env.cache, kind, id);
        Ok(HubRepo {
            env,
            kind,
            id: id.to_string(),
            revision,
            cache,
            client: None,
        })
    }

    /// `model `org/name`` or `dataset `org/name``, for messages.
    pub fn describe(&self) -> String {
        let rev = if self.revision == "main" {
            String::new()
        } else {
            format!(" at revision `{}`", self.revision)
        };
        format!("{} `{}`{rev}", self.kind.noun(), self.id)
    }

    /// The snapshot folder of the revision, if the cache knows which commit it is (a commit
    /// hash, or a `refs/` entry): no network call. Whether it holds every file needed is for
    /// the caller to judge.
    pub fn cached_snapshot(&self) -> Option<(String, PathBuf)> {
        let commit = self.cache.resolve_commit(&self.revision)?;
        let dir = self.cache.snapshot_dir(&commit);
        dir.is_dir().then_some((commit, dir))
    }

    /// The error for a revision that is not complete in the cache under `HF_HUB_OFFLINE=1`.
    pub fn offline_error(&self, missing: &str) -> anyhow::Error {
        anyhow::anyhow!(
            "{} is not fully in the Hugging Face cache ({}; looked in {}) and HF_HUB_OFFLINE=1 \
             forbids downloading it: unset HF_HUB_OFFLINE to fetch it from {}, or point \
             HF_HUB_CACHE / HF_HOME at a cache that holds it",
            self.describe(),
            missing,
            self.cache.root().display(),
            self.env.endpoint
        )
    }

    fn client(&mut self) -> Result<&http::Client> {
        if self.env.offline {
            return Err(self.offline_error("a download is needed"));
        }
        if self.client.is_none() {
            self.client = Some(http::Client::new(&self.env));
        }
        Ok(self.client.as_ref().expect("just set"))
    }

    /// The repo's files at the revision, and the commit it resolved to
    /// (`/api/{models|datasets}/{id}/revision/{rev}`).
    pub fn list(&mut self) -> Result<Listing> {
        let url = format!(
            "{}/api/{}/{}/revision/{}",
            self.env.endpoint,
            self.kind.plural(),
            self.id,
            http::encode(&self.revision, false)
        );
        let what = self.describe();
        let body = self.client()?.get_text(&url, &what, None)?;
        let v: serde_json::Value = serde_json::from_str(&body)
            .with_context(|| format!("{url}: the Hub's answer is not JSON"))?;
        let files: Vec<String> = v
            .get("siblings")
            .and_then(|s| s.as_array())
            .with_context(|| format!("{url}: the Hub's answer has no `siblings` (file list)"))?
            .iter()
            .filter_map(|s| s.get("rfilename")?.as_str().map(str::to_string))
            .collect();
        let commit = match v.get("sha").and_then(|s| s.as_str()) {
            Some(sha) => sha.to_string(),
            // A mirror that lists no commit: a file's `X-Repo-Commit` names it.
            None => {
                let first = files
                    .iter()
                    .find(|f| !f.starts_with('.'))
                    .with_context(|| format!("{url}: the repo lists no files"))?;
                let file_url = self.resolve_url(&self.revision, first);
                let file_what = format!("`{first}` of {what}");
                let meta = self.client()?.metadata(&file_url, &file_what)?;
                meta.commit.with_context(|| {
                    format!("{url}: the answer names no commit (`sha`), nor does {file_url}")
                })?
            }
        };
        if !is_commit_hash(&commit) {
            bail!("{url}: the commit `{commit}` is not a 40-digit hash");
        }
        Ok(Listing { commit, files })
    }

    /// `file` of the repo at `commit`, downloaded into the cache unless the snapshot already
    /// has it; returns its path in the snapshot folder.
    pub fn fetch(&mut self, commit: &str, file: &str) -> Result<PathBuf> {
        let linked = self.cache.snapshot_dir(commit).join(file);
        if linked.is_file() {
            return Ok(linked);
        }
        if file
            .split('/')
            .any(|c| c.is_empty() || c == "." || c == "..")
        {
            bail!("{}: refusing the file path `{file}`", self.describe());
        }
        let url = self.resolve_url(commit, file);
        let by_name = self.resolve_url(&self.revision, file);
        let what = format!("`{file}` of {}", self.describe());
        let label = format!("{}/{file}", self.id);
        let cache = self.cache.clone();
        let revision = self.revision.clone();
        let client = self.client()?;
        let meta = match client.metadata(&url, &what) {
            // A mirror that serves branch names but not commits: the name, as long as it still
            // points at the listed commit.
            Err(e) if revision != commit && e.to_string().contains("HTTP 404") => {
                let meta = client.metadata(&by_name, &what).map_err(|_| e)?;
                if let Some(now) = meta.commit.as_deref().filter(|c| *c != commit) {
                    bail!(
                        "{what}: `{revision}` moved from commit {commit} to {now} during the \
                         download; run again"
                    );
                }
                meta
            }
            r => r?,
        };
        let blob = cache.blob_path(&meta.etag)?;
        if !blob.is_file() {
            let _lock = cache.lock(&meta.etag)?;
            if !blob.is_file() {
                client.download(&meta, &blob, &label, &what)?;
            }
        }
        cache.link(commit, file, &meta.etag)
    }

    /// `{endpoint}/{datasets/}{id}/resolve/{revision}/{file}`.
    fn resolve_url(&self, revision: &str, file: &str) -> String {
        format!(
            "{}/{}{}/resolve/{}/{}",
            self.env.endpoint,
            self.kind.url_prefix(),
            self.id,
            http::encode(revision, false),
            http::encode(file, true)
        )
    }

    /// Records that the revision names `commit` (`refs/{revision}`), as `huggingface_hub`
    /// does, so that the next run finds the snapshot without asking the Hub.
    pub fn set_ref(&self, commit: &str) -> Result<()> {
        if self.revision != commit {
            self.cache.write_ref(&self.revision, commit)?;
        }
        Ok(())
    }
}

/// The files of a snapshot folder (relative paths, `/`-separated, sorted), symlinks followed.
pub fn snapshot_files(dir: &Path) -> Vec<String> {
    fn walk(base: &Path, dir: &Path, out: &mut Vec<String>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                walk(base, &p, out);
            } else if p.is_file() {
                if let Ok(rel) = p.strip_prefix(base) {
                    let parts: Vec<String> = rel
                        .components()
                        .map(|c| c.as_os_str().to_string_lossy().into_owned())
                        .collect();
                    out.push(parts.join("/"));
                }
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out.sort();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repo_ids() {
        for ok in [
            "gpt2",
            "Qwen/Qwen2.5-0.5B-Instruct",
            "openai/gsm8k",
            "a_b.c/d-e",
        ] {
            assert!(is_repo_id(ok), "{ok}");
        }
        for bad in [
            "",
            "a/b/c",
            "./x",
            "/abs/path",
            "a--b/c",
            "a/..",
            "x/",
            "models/tiny math",
            "~/m",
        ] {
            assert!(!is_repo_id(bad), "{bad}");
        }
    }

    #[test]
    fn truthy_values() {
        for t in ["1", "true", "YES", "On"] {
            assert!(truthy(Some(t.into())));
        }
        for f in ["0", "false", "no", ""] {
            assert!(!truthy(Some(f.into())));
        }
        assert!(!truthy(None));
    }
}
