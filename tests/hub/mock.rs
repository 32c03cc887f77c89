//! A mock of the Hugging Face Hub on 127.0.0.1 for the hub tests: the URL layout
//! (`/api/{models,datasets}/{id}/revision/{rev}`, `/{id}/resolve/{rev}/{file}`,
//! `/datasets/{id}/resolve/...`), `ETag` / `X-Repo-Commit` / `X-Linked-Etag` headers, LFS-style
//! redirects of large files to `/cdn/{etag}`, `Range` requests, 404 and 401, and a switch that
//! cuts one download off mid-file. Every request is recorded so tests can count them.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::thread;

/// One repo: its commit, files, and whether a token is needed.
#[derive(Clone, Default)]
pub struct Repo {
    pub commit: String,
    pub files: BTreeMap<String, Vec<u8>>,
    /// Other revision names (branches, tags) for this commit.
    pub branches: Vec<String>,
    /// Served only with `Authorization: Bearer {token}`.
    pub token: Option<String>,
}

/// A recorded request: method, path, and its Range and Authorization headers.
#[derive(Clone, Debug)]
pub struct Request {
    pub path: String,
    pub range: Option<String>,
    pub auth: Option<String>,
}

#[derive(Default)]
struct State {
    /// Keyed by `models/{id}` or `datasets/{id}`.
    repos: BTreeMap<String, Repo>,
    requests: Vec<Request>,
    /// Cut the next full body of this file after this many bytes.
    cut: Option<(String, usize)>,
}

pub struct MockHub {
    pub url: String,
    state: Arc<Mutex<State>>,
}

/// A stable fake content hash (FNV-1a, 64 hex digits like a sha256).
pub fn etag_of(bytes: &[u8]) -> String {
    let mut h: u64 = 0xcbf29ce484222325;
    for &b in bytes {
        h ^= b as u64;
        h = h.wrapping_mul(0x100000001b3);
    }
    format!("{h:016x}").repeat(4)
}

fn is_lfs(file: &str) -> bool {
    file.ends_with(".safetensors") || file.ends_with(".parquet")
}

impl MockHub {
    pub fn start() -> MockHub {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1");
        let url = format!("http://{}", listener.local_addr().unwrap());
        let state = Arc::new(Mutex::new(State::default()));
        let st = state.clone();
        thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let st = st.clone();
                thread::spawn(move || {
                    let _ = serve(stream, &st);
                });
            }
        });
        MockHub { url, state }
    }

    /// Adds a model (`kind` = "models") or data set ("datasets") repo.
    pub fn add(&self, kind: &str, id: &str, repo: Repo) {
        self.state
            .lock()
            .unwrap()
            .repos
            .insert(format!("{kind}/{id}"), repo);
    }

    pub fn requests(&self) -> Vec<Request> {
        self.state.lock().unwrap().requests.clone()
    }

    /// The next full download of `file` (a path ending) stops after `bytes` bytes.
    pub fn cut_next(&self, file: &str, bytes: usize) {
        self.state.lock().unwrap().cut = Some((file.to_string(), bytes));
    }
}

fn respond(s: &mut TcpStream, status: &str, headers: &[(String, String)], body: &[u8]) {
    let mut head = format!("HTTP/1.1 {status}\r\nConnection: close\r\n");
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    if !headers.iter().any(|(k, _)| k == "Content-Length") {
        head.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    head.push_str("\r\n");
    let _ = s.write_all(head.as_bytes());
    let _ = s.write_all(body);
}

fn error(s: &mut TcpStream, status: &str, code: &str) {
    let h = vec![("X-Error-Code".to_string(), code.to_string())];
    respond(
        s,
        status,
        &h,
        format!("{{\"error\":\"{code}\"}}").as_bytes(),
    );
}

/// Serves `bytes` honouring `Range: bytes=a-[b]`; `cut` sends only a prefix of the body.
fn send_file(
    s: &mut TcpStream,
    mut headers: Vec<(String, String)>,
    bytes: &[u8],
    range: Option<&str>,
    cut: Option<usize>,
) {
    let total = bytes.len();
    let (status, start, end) = match range.and_then(|r| r.strip_prefix("bytes=")) {
        Some(r) => {
            let (a, b) = r.split_once('-').unwrap_or((r, ""));
            let a: usize = a.parse().unwrap_or(0);
            let b: usize = b.parse().map(|b: usize| b + 1).unwrap_or(total).min(total);
            if a >= total {
                headers.push(("Content-Range".into(), format!("bytes */{total}")));
                respond(s, "416 Range Not Satisfiable", &headers, b"");
                return;
            }
            headers.push((
                "Content-Range".into(),
                format!("bytes {a}-{}/{total}", b - 1),
            ));
            ("206 Partial Content", a, b)
        }
        None => ("200 OK", 0, total),
    };
    let body = &bytes[start..end];
    match cut {
        Some(n) => {
            headers.push(("Content-Length".into(), body.len().to_string()));
            respond(s, status, &headers, &body[..n.min(body.len())]);
        }
        None => respond(s, status, &headers, body),
    }
}

fn serve(stream: TcpStream, st: &Mutex<State>) -> std::io::Result<()> {
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let path = line.split_whitespace().nth(1).unwrap_or("/").to_string();
    let (mut range, mut auth) = (None, None);
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h)? == 0 || h.trim().is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            match k.trim().to_ascii_lowercase().as_str() {
                "range" => range = Some(v.trim().to_string()),
                "authorization" => auth = Some(v.trim().to_string()),
                _ => {}
            }
        }
    }
    let mut s = stream;
    let mut state = st.lock().unwrap();
    state.requests.push(Request {
        path: path.clone(),
        range: range.clone(),
        auth: auth.clone(),
    });
    let path = path.replace("%2F", "/");
    // The CDN: blobs by etag, no auth.
    if let Some(etag) = path.strip_prefix("/cdn/") {
        for repo in state.repos.values() {
            for (name, bytes) in &repo.files {
                if etag_of(bytes) == etag {
                    let cut = match &state.cut {
                        Some((f, n))
                            if name.ends_with(f.as_str())
                                && range.as_deref() != Some("bytes=0-0") =>
                        {
                            Some(*n)
                        }
                        _ => None,
                    };
                    let bytes = bytes.clone();
                    if cut.is_some() {
                        state.cut = None;
                    }
                    drop(state);
                    let h = vec![("ETag".to_string(), format!("\"cdn-{etag}\""))];
                    send_file(&mut s, h, &bytes, range.as_deref(), cut);
                    return Ok(());
                }
            }
        }
        error(&mut s, "404 Not Found", "EntryNotFound");
        return Ok(());
    }
    let (kind, rest) = if let Some(r) = path.strip_prefix("/api/models/") {
        ("api-models", r)
    } else if let Some(r) = path.strip_prefix("/api/datasets/") {
        ("api-datasets", r)
    } else if let Some(r) = path.strip_prefix("/datasets/") {
        ("datasets", r)
    } else {
        ("models", path.trim_start_matches('/'))
    };
    let sep = if kind.starts_with("api") {
        "/revision/"
    } else {
        "/resolve/"
    };
    let Some((id, tail)) = rest.split_once(sep) else {
        error(&mut s, "404 Not Found", "RepoNotFound");
        return Ok(());
    };
    let key = format!("{}/{id}", kind.trim_start_matches("api-"));
    let Some(repo) = state.repos.get(&key).cloned() else {
        // The Hub answers 401 for unknown repos without a token; the mock says 404.
        error(&mut s, "404 Not Found", "RepoNotFound");
        return Ok(());
    };
    if let Some(t) = &repo.token {
        if auth.as_deref() != Some(&format!("Bearer {t}")) {
            error(&mut s, "401 Unauthorized", "GatedRepo");
            return Ok(());
        }
    }
    let (rev, file) = match kind.starts_with("api") {
        true => (tail, ""),
        false => tail.split_once('/').unwrap_or((tail, "")),
    };
    if rev != repo.commit && rev != "main" && !repo.branches.iter().any(|b| b == rev) {
        error(&mut s, "404 Not Found", "RevisionNotFound");
        return Ok(());
    }
    if kind.starts_with("api") {
        let siblings: Vec<String> = repo
            .files
            .keys()
            .map(|f| format!("{{\"rfilename\":\"{f}\"}}"))
            .collect();
        let body = format!(
            "{{\"id\":\"{id}\",\"sha\":\"{}\",\"siblings\":[{}]}}",
            repo.commit,
            siblings.join(",")
        );
        respond(&mut s, "200 OK", &[], body.as_bytes());
        return Ok(());
    }
    let Some(bytes) = repo.files.get(file) else {
        error(&mut s, "404 Not Found", "EntryNotFound");
        return Ok(());
    };
    let etag = etag_of(bytes);
    let mut h = vec![("X-Repo-Commit".to_string(), repo.commit.clone())];
    if is_lfs(file) {
        // Large files: a relative redirect to the CDN, the blob named by X-Linked-Etag.
        h.push(("X-Linked-Etag".into(), format!("\"{etag}\"")));
        h.push(("X-Linked-Size".into(), bytes.len().to_string()));
        h.push(("ETag".into(), "\"git-pointer\"".into()));
        h.push(("Location".into(), format!("/cdn/{etag}")));
        respond(&mut s, "302 Found", &h, b"");
        return Ok(());
    }
    let cut = match &state.cut {
        Some((f, n)) if file.ends_with(f.as_str()) => Some(*n),
        _ => None,
    };
    if cut.is_some() && range.as_deref() != Some("bytes=0-0") {
        state.cut = None;
    }
    drop(state);
    h.push(("ETag".into(), format!("\"{etag}\"")));
    let cut = cut.filter(|_| range.as_deref() != Some("bytes=0-0"));
    send_file(&mut s, h, bytes, range.as_deref(), cut);
    Ok(())
}
