//! HTTP against the Hub (or `HF_ENDPOINT`): the errors users can act on, file metadata from
//! the headers `huggingface_hub` reads (`X-Linked-Etag`/`ETag`, `X-Linked-Size`,
//! `X-Repo-Commit`, redirects), and resumable downloads into `blobs/`.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};

use super::progress::{human, Progress};
use super::HubEnv;

/// Percent-encodes a revision (`/` too: `refs/pr/1`) or a file path (`/` kept).
pub fn encode(s: &str, keep_slash: bool) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) || (keep_slash && b == b'/') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// `scheme://host[:port]` of a URL.
fn origin(url: &str) -> &str {
    let after = url.find("://").map(|i| i + 3).unwrap_or(0);
    match url[after..].find('/') {
        Some(i) => &url[..after + i],
        None => url,
    }
}

/// The absolute URL a `Location` header points to.
fn join(base: &str, location: &str) -> String {
    if location.contains("://") {
        location.to_string()
    } else if let Some(rest) = location.strip_prefix("//") {
        let scheme = base.split("://").next().unwrap_or("https");
        format!("{scheme}://{rest}")
    } else if location.starts_with('/') {
        format!("{}{location}", origin(base))
    } else {
        let dir = base.rsplit_once('/').map(|(d, _)| d).unwrap_or(base);
        format!("{dir}/{location}")
    }
}

/// `"abc"` / `W/"abc"` → `abc`.
fn clean_etag(s: &str) -> String {
    s.trim()
        .trim_start_matches("W/")
        .trim_matches('"')
        .to_string()
}

/// What the Hub says about one file before it is downloaded.
pub struct Metadata {
    /// The blob's name in the cache (`X-Linked-Etag`, else `ETag`).
    pub etag: String,
    /// Bytes the file has (`X-Linked-Size`, `Content-Range` or `Content-Length`).
    pub size: Option<u64>,
    /// Where the bytes are served after redirects.
    pub url: String,
    /// `X-Repo-Commit`: the commit the URL's revision names.
    pub commit: Option<String>,
}

pub struct Client {
    agent: ureq::Agent,
    endpoint: String,
    token: Option<String>,
    cache: PathBuf,
}

impl Client {
    pub fn new(env: &HubEnv) -> Client {
        let agent = ureq::AgentBuilder::new()
            .redirects(0)
            .timeout_connect(Duration::from_secs(20))
            .timeout_read(Duration::from_secs(120))
            .try_proxy_from_env(true)
            .user_agent(concat!("grpo/", env!("CARGO_PKG_VERSION"), "; hf_hub/rust"))
            .build();
        Client {
            agent,
            endpoint: env.endpoint.clone(),
            token: env.token.clone(),
            cache: env.cache.clone(),
        }
    }

    /// One GET without following redirects; the token goes only to the endpoint's own host.
    /// 4xx/5xx and network failures become messages naming `what` and what to do.
    fn get(&self, url: &str, range: Option<&str>, what: &str) -> Result<ureq::Response> {
        let mut req = self.agent.get(url).set("Accept-Encoding", "identity");
        if let Some(r) = range {
            req = req.set("Range", r);
        }
        if let Some(t) = &self.token {
            if origin(url) == origin(&self.endpoint) {
                req = req.set("Authorization", &format!("Bearer {t}"));
            }
        }
        match req.call() {
            Ok(resp) => Ok(resp),
            Err(ureq::Error::Status(code, resp)) => Err(self.status_error(code, &resp, url, what)),
            Err(ureq::Error::Transport(t)) => Err(anyhow!(
                "cannot reach the Hugging Face Hub at {} for {what} ({t}): check the network \
                 (HF_ENDPOINT sets a mirror), or, with a copy already in the cache ({}), set \
                 HF_HUB_OFFLINE=1 to use it without the network",
                self.endpoint,
                self.cache.display()
            )),
        }
    }

    fn status_error(
        &self,
        code: u16,
        resp: &ureq::Response,
        url: &str,
        what: &str,
    ) -> anyhow::Error {
        let hub_code = resp.header("X-Error-Code").unwrap_or_default().to_string();
        let hub_msg = resp
            .header("X-Error-Message")
            .map(|m| format!(" ({m})"))
            .unwrap_or_default();
        let page = repo_page(&self.endpoint, url);
        match code {
            401 | 403 => {
                let token = match &self.token {
                    Some(_) => "the token in use (HF_TOKEN or the `huggingface-cli login` token file) was refused or has no access to it",
                    None => "no token is set",
                };
                anyhow!(
                    "{what} is gated or private (HTTP {code} from {url}){hub_msg}: {token}. \
                     Log in on the Hub and accept the repo's terms at {page}, create a token at \
                     {}/settings/tokens and set HF_TOKEN (or run `huggingface-cli login`)",
                    self.endpoint
                )
            }
            404 => {
                let which = match hub_code.as_str() {
                    "RevisionNotFound" => "the revision does not exist",
                    "EntryNotFound" => "the file does not exist",
                    "RepoNotFound" => "the repo does not exist (or is private: set HF_TOKEN)",
                    _ => "check the repo id, revision and file name",
                };
                anyhow!("{what} was not found (HTTP 404 from {url}){hub_msg}: {which}")
            }
            416 => anyhow!("{what}: HTTP 416 (range not satisfiable) from {url}"),
            _ => anyhow!(
                "{what}: HTTP {code} from {url}{hub_msg}; the Hub (or the mirror in HF_ENDPOINT) \
                 failed, try again later"
            ),
        }
    }

    /// GET of a small text body (the API's JSON), following redirects.
    pub fn get_text(&self, url: &str, what: &str, range: Option<&str>) -> Result<String> {
        let mut url = url.to_string();
        for _ in 0..10 {
            let resp = self.get(&url, range, what)?;
            if (300..400).contains(&resp.status()) {
                url = redirect(&resp, &url)?;
                continue;
            }
            return resp
                .into_string()
                .with_context(|| format!("reading the answer of {url}"));
        }
        bail!("{what}: more than 10 redirects from {url}")
    }

    /// ETag, size and final URL of a file, from a one-byte GET (`Range: bytes=0-0`) that
    /// follows redirects by hand: the first response names the blob (`X-Linked-Etag` of an LFS
    /// file), the last one serves it.
    pub fn metadata(&self, url: &str, what: &str) -> Result<Metadata> {
        let mut url = url.to_string();
        let mut linked_etag: Option<String> = None;
        let mut etag: Option<String> = None;
        let mut size: Option<u64> = None;
        let mut commit: Option<String> = None;
        let mut range = Some("bytes=0-0");
        for _ in 0..10 {
            let resp = match self.get(&url, range, what) {
                // An empty file has no byte 0: ask for all of it instead.
                Err(e) if range.is_some() && e.to_string().contains("HTTP 416") => {
                    range = None;
                    self.get(&url, None, what)?
                }
                r => r?,
            };
            if linked_etag.is_none() {
                linked_etag = resp.header("X-Linked-Etag").map(clean_etag);
            }
            if etag.is_none() {
                etag = resp.header("ETag").map(clean_etag);
            }
            if size.is_none() {
                size = resp
                    .header("X-Linked-Size")
                    .and_then(|s| s.trim().parse().ok());
            }
            if commit.is_none() {
                commit = resp.header("X-Repo-Commit").map(|c| c.trim().to_string());
            }
            let status = resp.status();
            if (300..400).contains(&status) {
                url = redirect(&resp, &url)?;
                continue;
            }
            if size.is_none() {
                size = match status {
                    206 => resp
                        .header("Content-Range")
                        .and_then(|r| r.rsplit('/').next())
                        .and_then(|s| s.trim().parse().ok()),
                    _ => resp
                        .header("Content-Length")
                        .and_then(|s| s.trim().parse().ok()),
                };
            }
            let etag = linked_etag
                .or(etag)
                .filter(|e| !e.is_empty())
                .with_context(|| {
                    format!(
                        "{what}: the server sent no ETag for {url}, so the file cannot be cached \
                     (is HF_ENDPOINT a Hugging Face Hub mirror?)"
                    )
                })?;
            return Ok(Metadata {
                etag,
                size,
                url,
                commit,
            });
        }
        bail!("{what}: more than 10 redirects from {url}")
    }

    /// Downloads into `{blob}.incomplete` (resuming what an earlier run left there) and
    /// renames it to `blob` once complete. A cut-off transfer leaves the `.incomplete` file
    /// for the next run and fails; a full disk removes it and fails.
    pub fn download(&self, meta: &Metadata, blob: &Path, label: &str, what: &str) -> Result<()> {
        let dir = blob.parent().context("blob path has no parent")?;
        std::fs::create_dir_all(dir)
            .map_err(|e| io_error(e, dir, what))
            .with_context(|| format!("creating {}", dir.display()))?;
        let part = PathBuf::from(format!("{}.incomplete", blob.display()));
        let mut have = std::fs::metadata(&part).map(|m| m.len()).unwrap_or(0);
        if meta.size.is_some_and(|s| have > s) {
            have = 0;
        }
        if let Some(size) = meta.size {
            check_free_space(dir, size.saturating_sub(have), what)?;
        }
        let mut resp = None;
        if meta.size != Some(have) || have == 0 {
            let range = (have > 0).then(|| format!("bytes={have}-"));
            let r = match self.get(&meta.url, range.as_deref(), what) {
                // The partial file is longer than the server's copy: start over.
                Err(e) if have > 0 && e.to_string().contains("HTTP 416") => {
                    have = 0;
                    self.get(&meta.url, None, what)?
                }
                r => r?,
            };
            if (300..400).contains(&r.status()) {
                bail!(
                    "{what}: {} redirected again after its metadata was read",
                    meta.url
                );
            }
            // A server that ignores Range answers 200 with the whole file.
            let start = match r.status() {
                206 => r
                    .header("Content-Range")
                    .and_then(|c| c.trim().strip_prefix("bytes "))
                    .and_then(|c| c.split('-').next())
                    .and_then(|s| s.trim().parse::<u64>().ok())
                    .unwrap_or(0),
                _ => 0,
            };
            if start != have {
                if start != 0 {
                    bail!("{what}: the server resumed at byte {start}, not {have}");
                }
                have = 0;
            }
            resp = Some(r);
        }
        let mut file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&part)
            .map_err(|e| io_error(e, &part, what))?;
        file.set_len(have).map_err(|e| io_error(e, &part, what))?;
        let mut written = have;
        if let Some(resp) = resp {
            let progress = Progress::start(label, meta.size, have);
            match copy(resp.into_reader(), &mut file, &progress, &mut written) {
                Ok(()) => {}
                Err(CopyError::Write(e)) => {
                    progress.abandon();
                    drop(file);
                    let full = is_disk_full(&e);
                    if full {
                        std::fs::remove_file(&part).ok();
                    }
                    return Err(io_error(e, &part, what));
                }
                Err(CopyError::Read(e)) => {
                    progress.abandon();
                    bail!(
                        "the download of {what} was cut off after {} of {} ({e}); the part \
                         is kept in {} and the next run resumes it",
                        human(written),
                        meta.size.map(human).unwrap_or_else(|| "?".into()),
                        part.display()
                    );
                }
            }
            progress.finish(written);
        }
        file.sync_all().map_err(|e| io_error(e, &part, what))?;
        drop(file);
        if let Some(size) = meta.size {
            if written < size {
                bail!(
                    "the download of {what} was cut off after {} of {}; the part is kept in {} \
                     and the next run resumes it",
                    human(written),
                    human(size),
                    part.display()
                );
            }
            if written > size {
                std::fs::remove_file(&part).ok();
                bail!(
                    "the download of {what} sent {written} bytes where the Hub announced {size}; \
                     nothing was kept, run again"
                );
            }
        }
        std::fs::rename(&part, blob).map_err(|e| io_error(e, blob, what))?;
        Ok(())
    }
}

/// The `Location` of a redirect, made absolute.
fn redirect(resp: &ureq::Response, url: &str) -> Result<String> {
    let loc = resp
        .header("Location")
        .with_context(|| format!("{url}: HTTP {} redirect without a Location", resp.status()))?;
    Ok(join(url, loc))
}

/// The repo's web page for an API or resolve URL (`{endpoint}/{datasets/}org/name`).
fn repo_page(endpoint: &str, url: &str) -> String {
    let rest = url
        .strip_prefix(endpoint)
        .unwrap_or(url)
        .trim_start_matches('/');
    let rest = rest
        .strip_prefix("api/")
        .map(|r| r.strip_prefix("models/").unwrap_or(r).to_string());
    let rest = rest.unwrap_or_else(|| {
        url.strip_prefix(endpoint)
            .unwrap_or(url)
            .trim_start_matches('/')
            .to_string()
    });
    let mut parts = rest.split('/');
    let first = parts.next().unwrap_or_default();
    let page = if first == "datasets" {
        let a = parts.next().unwrap_or_default();
        let b = parts.next().unwrap_or_default();
        match b {
            "resolve" | "revision" | "" => format!("datasets/{a}"),
            _ => format!("datasets/{a}/{b}"),
        }
    } else {
        match parts.next().unwrap_or_default() {
            "resolve" | "revision" | "" => first.to_string(),
            b => format!("{first}/{b}"),
        }
    };
    format!("{endpoint}/{page}")
}

enum CopyError {
    Read(std::io::Error),
    Write(std::io::Error),
}

fn copy(
    mut from: impl Read,
    to: &mut File,
    progress: &Progress,
    written: &mut u64,
) -> std::result::Result<(), CopyError> {
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(CopyError::Read(e)),
        };
        to.write_all(&buf[..n]).map_err(CopyError::Write)?;
        *written += n as u64;
        progress.advance(n as u64);
    }
}

/// ENOSPC / EDQUOT.
pub fn is_disk_full(e: &std::io::Error) -> bool {
    e.kind() == std::io::ErrorKind::StorageFull
        || matches!(e.raw_os_error(), Some(c) if c == libc::ENOSPC || c == libc::EDQUOT)
}

/// An I/O error on `path`, with a disk-full error said plainly.
pub fn io_error(e: std::io::Error, path: &Path, what: &str) -> anyhow::Error {
    if is_disk_full(&e) {
        anyhow!(
            "disk full while writing {} ({what}): nothing was kept; free some space or point \
             HF_HUB_CACHE (or HF_HOME) at a disk with room",
            path.display()
        )
    } else {
        anyhow!("{}: {e} ({what})", path.display())
    }
}

/// Refuses a download the filesystem cannot hold, before writing anything.
fn check_free_space(dir: &Path, need: u64, what: &str) -> Result<()> {
    let Some(avail) = free_space(dir) else {
        return Ok(());
    };
    if avail < need {
        bail!(
            "disk full: {what} needs {} but {} has {} free; free some space or point \
             HF_HUB_CACHE (or HF_HOME) at a disk with room",
            human(need),
            dir.display(),
            human(avail)
        );
    }
    Ok(())
}

#[cfg(unix)]
fn free_space(dir: &Path) -> Option<u64> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(dir.as_os_str().as_bytes()).ok()?;
    // SAFETY: statvfs writes into the zeroed struct we own; the path is NUL-terminated.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statvfs(c.as_ptr(), &mut st) } != 0 {
        return None;
    }
    Some((st.f_bavail as u64).saturating_mul(st.f_frsize as u64))
}

#[cfg(not(unix))]
fn free_space(_dir: &Path) -> Option<u64> {
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        assert_eq!(encode("refs/pr/1", false), "refs%2Fpr%2F1");
        assert_eq!(
            encode("main/train 1.parquet", true),
            "main/train%201.parquet"
        );
        assert_eq!(origin("http://127.0.0.1:8080/a/b"), "http://127.0.0.1:8080");
        assert_eq!(join("http://h:1/a/b", "/c/d"), "http://h:1/c/d");
        assert_eq!(join("https://h/a/b", "https://cdn/x"), "https://cdn/x");
        assert_eq!(join("https://h/a/b", "//cdn/x"), "https://cdn/x");
        assert_eq!(clean_etag("W/\"abc\""), "abc");
        assert_eq!(
            repo_page("http://h", "http://h/api/models/org/m/revision/main"),
            "http://h/org/m"
        );
        assert_eq!(
            repo_page("http://h", "http://h/datasets/org/d/resolve/abc/x.parquet"),
            "http://h/datasets/org/d"
        );
        assert_eq!(
            repo_page("http://h", "http://h/org/m/resolve/main/config.json"),
            "http://h/org/m"
        );
    }

    #[test]
    fn disk_full_is_named() {
        let e = std::io::Error::from_raw_os_error(libc::ENOSPC);
        assert!(is_disk_full(&e));
        let msg = io_error(
            e,
            Path::new("/c/blobs/x.incomplete"),
            "`m.safetensors` of model `a/b`",
        )
        .to_string();
        assert!(
            msg.starts_with("disk full while writing /c/blobs/x.incomplete"),
            "{msg}"
        );
        assert!(msg.contains("HF_HUB_CACHE"), "{msg}");
        assert!(!is_disk_full(&std::io::Error::from_raw_os_error(
            libc::EACCES
        )));
        let err = check_free_space(Path::new("/"), u64::MAX, "x").unwrap_err();
        assert!(err.to_string().starts_with("disk full: x needs"), "{err}");
    }
}
