//! The cache layout `huggingface_hub` uses: `blobs/ETAG` holds each file's bytes once,
//! `snapshots/COMMIT/PATH` links to it, `refs/REVISION` names the commit of a branch or tag.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use super::RepoKind;

/// True for a full 40-digit hex commit hash.
pub fn is_commit_hash(s: &str) -> bool {
    s.len() == 40 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// One repo's folder in the cache, and its lock folder (`.locks/`, shared with Python).
#[derive(Debug, Clone)]
pub struct CacheRepo {
    root: PathBuf,
    locks: PathBuf,
}

impl CacheRepo {
    pub fn new(cache: &Path, kind: RepoKind, id: &str) -> CacheRepo {
        let folder = format!("{}--{}", kind.plural(), id.replace('/', "--"));
        CacheRepo {
            root: cache.join(&folder),
            locks: cache.join(".locks").join(folder),
        }
    }

    /// `{cache}/models--org--name`.
    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn snapshot_dir(&self, commit: &str) -> PathBuf {
        self.root.join("snapshots").join(commit)
    }

    /// The commit a revision names locally: itself when it is a hash with a snapshot, else the
    /// content of `refs/{revision}`.
    pub fn resolve_commit(&self, revision: &str) -> Option<String> {
        if is_commit_hash(revision) && self.snapshot_dir(revision).is_dir() {
            return Some(revision.to_string());
        }
        let text = std::fs::read_to_string(self.root.join("refs").join(revision)).ok()?;
        let commit = text.trim();
        is_commit_hash(commit).then(|| commit.to_string())
    }

    /// `blobs/{etag}`; an etag with a path separator is refused.
    pub fn blob_path(&self, etag: &str) -> Result<PathBuf> {
        if etag.is_empty() || etag.contains(['/', '\\']) || etag.starts_with('.') {
            bail!("the Hub sent an unusable ETag `{etag}`");
        }
        Ok(self.root.join("blobs").join(etag))
    }

    /// An exclusive lock on one blob (`.locks/{folder}/{etag}.lock`, the file Python's
    /// `filelock` takes too), held until dropped: two processes never write one blob at once.
    pub fn lock(&self, etag: &str) -> Result<BlobLock> {
        std::fs::create_dir_all(&self.locks)
            .with_context(|| format!("creating {}", self.locks.display()))?;
        let path = self.locks.join(format!("{etag}.lock"));
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .with_context(|| format!("opening {}", path.display()))?;
        lock_exclusive(&file).with_context(|| format!("locking {}", path.display()))?;
        Ok(BlobLock { _file: file })
    }

    /// Links `snapshots/{commit}/{file}` to `blobs/{etag}` (relative, as Python does), replacing
    /// a dangling link; returns the link's path.
    pub fn link(&self, commit: &str, file: &str, etag: &str) -> Result<PathBuf> {
        let link = self.snapshot_dir(commit).join(file);
        let parent = link.parent().context("snapshot path has no parent")?;
        std::fs::create_dir_all(parent)
            .with_context(|| format!("creating {}", parent.display()))?;
        let depth = file.split('/').count() + 1;
        let mut target = PathBuf::new();
        for _ in 0..depth {
            target.push("..");
        }
        target.push("blobs");
        target.push(etag);
        if link.symlink_metadata().is_ok() {
            std::fs::remove_file(&link).with_context(|| format!("replacing {}", link.display()))?;
        }
        match symlink(&target, &link) {
            Ok(()) => Ok(link),
            // Another process linked the same file meanwhile.
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && link.is_file() => Ok(link),
            Err(e) => Err(e)
                .with_context(|| format!("linking {} to {}", link.display(), target.display())),
        }
    }

    /// Writes `refs/{revision}` = commit, through a temporary file and a rename.
    pub fn write_ref(&self, revision: &str, commit: &str) -> Result<()> {
        let path = self.root.join("refs").join(revision);
        let parent = path.parent().context("ref path has no parent")?;
        std::fs::create_dir_all(parent)
            .with_context(|| format!("creating {}", parent.display()))?;
        let tmp = parent.join(format!(
            ".{}.tmp{}",
            path.file_name().unwrap_or_default().to_string_lossy(),
            std::process::id()
        ));
        std::fs::write(&tmp, commit).with_context(|| format!("writing {}", tmp.display()))?;
        std::fs::rename(&tmp, &path).with_context(|| format!("writing {}", path.display()))
    }
}

/// Held while a blob is written.
pub struct BlobLock {
    _file: std::fs::File,
}

#[cfg(unix)]
fn lock_exclusive(file: &std::fs::File) -> std::io::Result<()> {
    use std::os::unix::io::AsRawFd;
    // SAFETY: flock on a descriptor this process owns; released when the file is closed.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) } == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

#[cfg(not(unix))]
fn lock_exclusive(_file: &std::fs::File) -> std::io::Result<()> {
    Ok(())
}

#[cfg(unix)]
fn symlink(target: &Path, link: &Path) -> std::io::Result<()> {
    std::os::unix::fs::symlink(target, link)
}

#[cfg(not(unix))]
fn symlink(target: &Path, link: &Path) -> std::io::Result<()> {
    // Without symlinks the blob is copied into the snapshot, as huggingface_hub does.
    let blob = link.parent().unwrap_or(link).join(target);
    std::fs::copy(blob, link).map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_matches_huggingface_hub() {
        let dir = tempfile::tempdir().unwrap();
        let repo = CacheRepo::new(dir.path(), RepoKind::Dataset, "openai/gsm8k");
        assert!(repo.root().ends_with("datasets--openai--gsm8k"));
        let commit = "e53f048856ff4f594e959d75785d2c2d37b678ee";
        let blob = repo.blob_path("abc").unwrap();
        std::fs::create_dir_all(blob.parent().unwrap()).unwrap();
        std::fs::write(&blob, "x").unwrap();
        let link = repo.link(commit, "main/train.parquet", "abc").unwrap();
        assert_eq!(
            std::fs::read_link(&link).unwrap(),
            PathBuf::from("../../../blobs/abc")
        );
        assert_eq!(std::fs::read_to_string(&link).unwrap(), "x");
        assert_eq!(repo.resolve_commit("main"), None);
        repo.write_ref("main", commit).unwrap();
        assert_eq!(repo.resolve_commit("main").as_deref(), Some(commit));
        assert_eq!(repo.resolve_commit(commit).as_deref(), Some(commit));
        assert!(repo.blob_path("../x").is_err());
    }
}
