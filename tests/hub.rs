//! Models and data sets by hub id, against a mock Hub on 127.0.0.1 (`tests/hub/mock.rs`):
//! downloads into the standard cache layout, the same tokens as a local folder, no request
//! once cached, `HF_HUB_OFFLINE=1`, Python-written caches, tokens, and every failure the issue
//! names (404, 401, no network, a download cut off mid-file). No test reaches the internet,
//! and every test uses its own temporary `HF_HOME` / `HF_HUB_CACHE`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Arc;

mod common;
#[path = "hub/mock.rs"]
mod mock;

use common::{fails_with, read_json, stderr, succeeds};
use mock::{etag_of, MockHub, Repo};

const COMMIT: &str = "0123456789abcdef0123456789abcdef01234567";
const DATA_COMMIT: &str = "89abcdef0123456789abcdef0123456789abcdef";
/// Nothing listens on port 1: a network that cannot be reached.
const DEAD: &str = "http://127.0.0.1:1";

/// The tiny-qwen2 fixture's files, plus files that must never be fetched.
fn model_files() -> BTreeMap<String, Vec<u8>> {
    let mut files = BTreeMap::new();
    for name in [
        "config.json",
        "generation_config.json",
        "model.safetensors",
        "tokenizer.json",
        "tokenizer_config.json",
    ] {
        let bytes = std::fs::read(common::fixture("tiny-qwen2").join(name)).unwrap();
        files.insert(name.to_string(), bytes);
    }
    for decoy in [
        "pytorch_model.bin",
        "model.gguf",
        "consolidated.pth",
        "onnx/model.onnx",
    ] {
        files.insert(decoy.to_string(), b"never fetched".to_vec());
    }
    files.insert("README.md".into(), b"# tiny".to_vec());
    files
}

fn model_repo() -> Repo {
    Repo {
        commit: COMMIT.into(),
        files: model_files(),
        branches: vec!["v1".into()],
        token: None,
    }
}

/// A Parquet file with `question` / `answer` string columns (snappy, as `datasets` writes).
fn parquet(rows: &[(&str, &str)]) -> Vec<u8> {
    use parquet::data_type::{ByteArray, ByteArrayType};
    use parquet::file::properties::WriterProperties;
    use parquet::file::writer::SerializedFileWriter;
    let schema = Arc::new(
        parquet::schema::parser::parse_message_type(
            "message schema { required binary question (UTF8); required binary answer (UTF8); }",
        )
        .unwrap(),
    );
    let props = Arc::new(
        WriterProperties::builder()
            .set_compression(parquet::basic::Compression::SNAPPY)
            .build(),
    );
    let mut buf = Vec::new();
    let mut w = SerializedFileWriter::new(&mut buf, schema, props).unwrap();
    let mut rg = w.next_row_group().unwrap();
    for col in 0..2 {
        let mut c = rg.next_column().unwrap().unwrap();
        let vals: Vec<ByteArray> = rows
            .iter()
            .map(|r| ByteArray::from(if col == 0 { r.0 } else { r.1 }))
            .collect();
        c.typed::<ByteArrayType>()
            .write_batch(&vals, None, None)
            .unwrap();
        c.close().unwrap();
    }
    rg.close().unwrap();
    w.close().unwrap();
    buf
}

const TEST_ROWS: &[(&str, &str)] = &[
    ("What is 2+3?", "2 and 3 make 5.\n#### 5"),
    ("What is 10*10?", "#### 100"),
    ("What is 7-9?", "-2"),
];

/// A gsm8k-like data set: configs `main` and `other`, splits `train` and `test` as Parquet.
fn dataset_repo() -> Repo {
    let mut files = BTreeMap::new();
    files.insert(
        "main/train-00000-of-00001.parquet".into(),
        parquet(&[("What is 1+1?", "#### 2"), ("What is 2+2?", "#### 4")]),
    );
    files.insert(
        "main/test-00000-of-00001.parquet".into(),
        parquet(TEST_ROWS),
    );
    files.insert(
        "other/test-00000-of-00001.parquet".into(),
        parquet(&[("x", "1")]),
    );
    files.insert("README.md".into(), b"---\nconfigs: []\n---".to_vec());
    Repo {
        commit: DATA_COMMIT.into(),
        files,
        branches: vec![],
        token: None,
    }
}

/// A MATH-500-like data set: one `test.jsonl` with `problem` / `answer`.
fn jsonl_repo() -> Repo {
    let mut files = BTreeMap::new();
    files.insert(
        "test.jsonl".into(),
        b"{\"problem\":\"1+2?\",\"answer\":\"3\"}\n{\"problem\":\"half of 1?\",\"answer\":\"\\\\frac{1}{2}\"}\n".to_vec(),
    );
    Repo {
        commit: DATA_COMMIT.into(),
        files,
        branches: vec![],
        token: None,
    }
}

/// `grpo` with a clean Hub environment: `endpoint`, `home` as HF_HOME (cache in `home/hub`),
/// no token and online unless `env` says otherwise.
fn grpo(endpoint: &str, home: &Path, env: &[(&str, &str)], args: &[&str]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_grpo"));
    cmd.args(args)
        .env("HF_ENDPOINT", endpoint)
        .env("HF_HOME", home)
        .env("HF_HUB_CACHE", home.join("hub"));
    for k in [
        "HF_TOKEN",
        "HUGGING_FACE_HUB_TOKEN",
        "HF_TOKEN_PATH",
        "HF_HUB_OFFLINE",
        "TRANSFORMERS_OFFLINE",
        "HUGGINGFACE_HUB_CACHE",
    ] {
        cmd.env_remove(k);
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("running grpo")
}

fn generate_args(model: &str) -> Vec<String> {
    [
        "generate",
        "--model",
        model,
        "--prompt",
        "12+7=",
        "--prompt",
        "3*4=",
        "--max-new-tokens",
        "8",
        "--temperature",
        "0",
        "--json",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

fn run_generate(endpoint: &str, home: &Path, env: &[(&str, &str)], model: &str) -> Output {
    let args = generate_args(model);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    grpo(endpoint, home, env, &args)
}

/// Completions of the fixture loaded from its folder: what every hub load must reproduce.
fn local_tokens() -> String {
    let dir = tempfile::tempdir().unwrap();
    let fixture = common::fixture("tiny-qwen2");
    let out = run_generate(DEAD, dir.path(), &[], fixture.to_str().unwrap());
    succeeds(&out);
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.contains("token_ids") || text.contains("completion"),
        "{text}"
    );
    text
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn model_cache(home: &Path, id: &str) -> PathBuf {
    home.join("hub")
        .join(format!("models--{}", id.replace('/', "--")))
}

#[test]
fn hub_model_downloads_once_into_the_shared_layout_and_matches_the_local_folder() {
    let hub = MockHub::start();
    hub.add("models", "org/tiny", model_repo());
    let home = tempfile::tempdir().unwrap();
    let expected = local_tokens();

    let first = run_generate(&hub.url, home.path(), &[], "org/tiny");
    succeeds(&first);
    assert_eq!(
        stdout(&first),
        expected,
        "hub model must give the local folder's tokens"
    );
    // Plain progress lines when stderr is not a terminal (a log file).
    let err = stderr(&first);
    assert!(
        err.contains("downloading org/tiny/model.safetensors"),
        "{err}"
    );
    assert!(
        err.contains("downloaded org/tiny/model.safetensors"),
        "{err}"
    );

    let requests = hub.requests();
    for r in &requests {
        for never in [".bin", ".gguf", ".pth", ".onnx", "README.md"] {
            assert!(!r.path.ends_with(never), "fetched {}", r.path);
        }
    }
    assert!(requests
        .iter()
        .any(|r| r.path == "/api/models/org/tiny/revision/main"));
    // The LFS weights came through the redirect to the CDN.
    let weights = model_files()["model.safetensors"].clone();
    let etag = etag_of(&weights);
    assert!(requests.iter().any(|r| r.path == format!("/cdn/{etag}")));

    // huggingface_hub's layout: refs/main → commit, snapshot links → ../../blobs/ETAG.
    let cache = model_cache(home.path(), "org/tiny");
    assert_eq!(
        std::fs::read_to_string(cache.join("refs/main")).unwrap(),
        COMMIT
    );
    let link = cache
        .join("snapshots")
        .join(COMMIT)
        .join("model.safetensors");
    assert_eq!(
        std::fs::read_link(&link).unwrap(),
        PathBuf::from(format!("../../blobs/{etag}"))
    );
    assert_eq!(std::fs::read(&link).unwrap(), weights);
    let config = model_files()["config.json"].clone();
    assert_eq!(
        std::fs::read(cache.join("blobs").join(etag_of(&config))).unwrap(),
        config
    );
    for absent in ["pytorch_model.bin", "model.gguf", "README.md"] {
        assert!(!cache.join("snapshots").join(COMMIT).join(absent).exists());
    }
    let leftovers: Vec<_> = std::fs::read_dir(cache.join("blobs"))
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().ends_with(".incomplete"))
        .collect();
    assert!(leftovers.is_empty());

    // A second run, online or offline, makes no request at all.
    let n = hub.requests().len();
    let second = run_generate(&hub.url, home.path(), &[], "org/tiny");
    succeeds(&second);
    assert_eq!(stdout(&second), expected);
    assert_eq!(
        hub.requests().len(),
        n,
        "a cached model must start without a request"
    );
    let offline = run_generate(DEAD, home.path(), &[("HF_HUB_OFFLINE", "1")], "org/tiny");
    succeeds(&offline);
    assert_eq!(stdout(&offline), expected);
    // A pinned commit that is cached also needs nothing.
    let pinned = grpo(
        DEAD,
        home.path(),
        &[],
        &[
            &generate_args("org/tiny")[..],
            &["--revision".into(), COMMIT.into()],
        ]
        .concat()
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>(),
    );
    succeeds(&pinned);
    assert_eq!(stdout(&pinned), expected);
}

#[test]
fn a_branch_revision_is_resolved_to_its_commit_and_recorded() {
    let hub = MockHub::start();
    hub.add("models", "org/tiny", model_repo());
    let home = tempfile::tempdir().unwrap();
    let out_dir = home.path().join("eval");
    let out = grpo(
        &hub.url,
        home.path(),
        &[],
        &[
            "eval",
            "--model",
            "org/tiny",
            "--revision",
            "v1",
            "--data",
            common::repo()
                .join("data/arith/test.jsonl")
                .to_str()
                .unwrap(),
            "--limit",
            "2",
            "--max-new-tokens",
            "4",
            "--out",
            out_dir.to_str().unwrap(),
        ],
    );
    succeeds(&out);
    let cache = model_cache(home.path(), "org/tiny");
    assert_eq!(
        std::fs::read_to_string(cache.join("refs/v1")).unwrap(),
        COMMIT
    );
    assert!(!cache.join("refs/main").exists());
    assert!(hub
        .requests()
        .iter()
        .any(|r| r.path == "/api/models/org/tiny/revision/v1"));
    assert_eq!(read_json(&out_dir.join("run.json"))["model_commit"], COMMIT);
    assert_eq!(
        read_json(&out_dir.join("summary.json"))["model_commit"],
        COMMIT
    );
    // An unknown revision: 404, named, and nothing written for it.
    let bad = run_generate_with(&hub.url, home.path(), &["--revision", "nope"]);
    fails_with(&bad, &["org/tiny", "HTTP 404", "revision does not exist"]);
    assert!(!cache.join("refs/nope").exists());
}

fn run_generate_with(endpoint: &str, home: &Path, extra: &[&str]) -> Output {
    let mut args = generate_args("org/tiny");
    args.extend(extra.iter().map(|s| s.to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    grpo(endpoint, home, &[], &args)
}

#[test]
fn a_cache_written_by_python_is_used_without_the_network() {
    // The layout huggingface_hub writes, built by hand: blobs by etag, relative links, a ref.
    let home = tempfile::tempdir().unwrap();
    let cache = model_cache(home.path(), "Qwen/Tiny-Py");
    let commit = "fedcba9876543210fedcba9876543210fedcba98";
    let snap = cache.join("snapshots").join(commit);
    std::fs::create_dir_all(&snap).unwrap();
    std::fs::create_dir_all(cache.join("blobs")).unwrap();
    std::fs::create_dir_all(cache.join("refs")).unwrap();
    std::fs::write(cache.join("refs/main"), commit).unwrap();
    for (name, bytes) in model_files() {
        if name.contains('/') || name.ends_with(".bin") || name.ends_with(".gguf") {
            continue;
        }
        let etag = etag_of(&bytes);
        std::fs::write(cache.join("blobs").join(&etag), &bytes).unwrap();
        std::os::unix::fs::symlink(format!("../../blobs/{etag}"), snap.join(&name)).unwrap();
    }
    // Online mode with an unreachable endpoint: still no network call needed.
    let out = run_generate(DEAD, home.path(), &[], "Qwen/Tiny-Py");
    succeeds(&out);
    assert_eq!(stdout(&out), local_tokens());
}

#[test]
fn failures_say_what_to_do_and_leave_nothing_in_the_cache() {
    let hub = MockHub::start();
    let mut private = model_repo();
    private.token = Some("hf_secret".into());
    hub.add("models", "org/private", private);
    let mut bin_only = model_repo();
    bin_only.files.remove("model.safetensors");
    hub.add("models", "org/bin-only", bin_only);
    let home = tempfile::tempdir().unwrap();
    let no_snapshots = |id: &str| {
        let snaps = model_cache(home.path(), id).join("snapshots");
        assert!(
            !snaps.exists() || std::fs::read_dir(&snaps).unwrap().next().is_none(),
            "{id}: something was cached"
        );
    };

    let out = run_generate(&hub.url, home.path(), &[], "org/missing");
    fails_with(&out, &["org/missing", "not found", "HTTP 404"]);
    no_snapshots("org/missing");

    let out = run_generate(&hub.url, home.path(), &[], "org/private");
    fails_with(
        &out,
        &[
            "org/private",
            "gated or private",
            "HTTP 401",
            "accept",
            "HF_TOKEN",
        ],
    );
    no_snapshots("org/private");
    let out = run_generate(
        &hub.url,
        home.path(),
        &[("HF_TOKEN", "hf_wrong")],
        "org/private",
    );
    fails_with(&out, &["org/private", "refused"]);
    let out = run_generate(
        &hub.url,
        home.path(),
        &[("HF_TOKEN", "hf_secret")],
        "org/private",
    );
    succeeds(&out);
    // The token file `huggingface-cli login` writes works too (fresh cache).
    let home2 = tempfile::tempdir().unwrap();
    std::fs::write(home2.path().join("token"), "hf_secret\n").unwrap();
    let out = run_generate(&hub.url, home2.path(), &[], "org/private");
    succeeds(&out);
    // The token never leaves the endpoint's host, and was sent to it.
    assert!(hub
        .requests()
        .iter()
        .any(|r| r.auth.as_deref() == Some("Bearer hf_secret")));

    let out = run_generate(&hub.url, home.path(), &[], "org/bin-only");
    fails_with(
        &out,
        &["org/bin-only", "no safetensors", "pytorch_model.bin"],
    );

    let n = hub.requests().len();
    let out = run_generate(DEAD, home.path(), &[], "org/unreached");
    fails_with(&out, &["cannot reach", DEAD, "HF_HUB_OFFLINE=1"]);
    no_snapshots("org/unreached");
    let out = run_generate(
        &hub.url,
        home.path(),
        &[("HF_HUB_OFFLINE", "1")],
        "org/nothere",
    );
    fails_with(
        &out,
        &[
            "org/nothere",
            "HF_HUB_OFFLINE=1",
            "not fully in the Hugging Face cache",
        ],
    );
    assert_eq!(hub.requests().len(), n, "offline mode made a request");

    // A path-like name that is neither a folder nor a hub id.
    let out = run_generate(&hub.url, home.path(), &[], "./no/such/dir");
    fails_with(&out, &["./no/such/dir", "no such directory"]);
}

#[test]
fn a_cut_off_download_is_never_used_and_the_next_run_resumes_it() {
    let hub = MockHub::start();
    hub.add("models", "org/tiny", model_repo());
    hub.cut_next("model.safetensors", 100_000);
    let home = tempfile::tempdir().unwrap();
    let cache = model_cache(home.path(), "org/tiny");

    let out = run_generate(&hub.url, home.path(), &[], "org/tiny");
    fails_with(&out, &["cut off", "model.safetensors", "resumes"]);
    let weights = model_files()["model.safetensors"].clone();
    let etag = etag_of(&weights);
    let part = cache.join("blobs").join(format!("{etag}.incomplete"));
    assert_eq!(std::fs::metadata(&part).unwrap().len(), 100_000);
    assert!(!cache.join("blobs").join(&etag).exists());
    assert!(!cache
        .join("snapshots")
        .join(COMMIT)
        .join("model.safetensors")
        .exists());
    assert!(
        !cache.join("refs/main").exists(),
        "ref written for an incomplete snapshot"
    );

    let out = run_generate(&hub.url, home.path(), &[], "org/tiny");
    succeeds(&out);
    assert_eq!(stdout(&out), local_tokens());
    assert!(
        hub.requests().iter().any(
            |r| r.path == format!("/cdn/{etag}") && r.range.as_deref() == Some("bytes=100000-")
        ),
        "the second run did not resume with a Range request"
    );
    assert_eq!(
        std::fs::read(cache.join("blobs").join(&etag)).unwrap(),
        weights
    );
    assert!(!part.exists());
}

#[test]
fn hub_datasets_by_config_and_split_from_parquet_and_jsonl() {
    let hub = MockHub::start();
    hub.add("datasets", "org/math", dataset_repo());
    hub.add("datasets", "org/m500", jsonl_repo());
    let home = tempfile::tempdir().unwrap();
    let out_dir = home.path().join("oracle");
    let eval = |env: &[(&str, &str)], extra: &[&str]| {
        let mut args = vec!["eval", "--oracle", "--dataset"];
        args.extend_from_slice(extra);
        grpo(&hub.url, home.path(), env, &args)
    };
    let out = eval(
        &[],
        &[
            "org/math",
            "--dataset-config",
            "main",
            "--split",
            "test",
            "--out",
            out_dir.to_str().unwrap(),
        ],
    );
    succeeds(&out);
    let summary = read_json(&out_dir.join("summary.json"));
    let b = &summary["benchmarks"]["math-test"];
    assert_eq!(b["num_problems"], TEST_ROWS.len(), "{summary}");
    // Gold answers: `#### 5` → 5, so the oracle's \boxed{5} is graded correct on every row.
    assert_eq!(b["pass@1"], 1.0, "{summary}");
    assert_eq!(summary["dataset"]["commit"], DATA_COMMIT);
    assert_eq!(
        read_json(&out_dir.join("run.json"))["dataset"]["config"],
        "main"
    );
    let cache = home.path().join("hub/datasets--org--math");
    assert_eq!(
        std::fs::read_to_string(cache.join("refs/main")).unwrap(),
        DATA_COMMIT
    );
    assert!(cache
        .join("snapshots")
        .join(DATA_COMMIT)
        .join("main/test-00000-of-00001.parquet")
        .is_file());
    // Only the split asked for was fetched.
    assert!(!hub.requests().iter().any(|r| r.path.contains("train-0000")
        || r.path.contains("other/")
        || r.path.ends_with("README.md")));

    // Cached: offline works and asks nothing.
    let n = hub.requests().len();
    let out = eval(
        &[("HF_HUB_OFFLINE", "1")],
        &["org/math", "--dataset-config", "main", "--split", "test"],
    );
    succeeds(&out);
    assert_eq!(hub.requests().len(), n);

    let out = eval(
        &[],
        &[
            "org/math",
            "--dataset-config",
            "main",
            "--split",
            "validation",
        ],
    );
    fails_with(&out, &["no split `validation`", "splits: test, train"]);
    let out = eval(&[], &["org/math", "--split", "test"]);
    fails_with(&out, &["several configs (main, other)", "--dataset-config"]);
    let out = eval(&[], &["org/math", "--dataset-config", "nope"]);
    fails_with(&out, &["no config `nope`", "configs: main, other"]);
    let out = eval(
        &[],
        &[
            "org/math",
            "--dataset-config",
            "main",
            "--question-field",
            "prompt",
        ],
    );
    fails_with(
        &out,
        &["missing field `prompt`", "fields present: question, answer"],
    );
    let out = eval(&[], &["org/none"]);
    fails_with(&out, &["org/none", "HTTP 404"]);

    // MATH-500's layout: `test.jsonl` at the top, `problem` / `answer` fields.
    let out = eval(
        &[],
        &[
            "org/m500",
            "--question-field",
            "problem",
            "--out",
            home.path().join("m500").to_str().unwrap(),
        ],
    );
    succeeds(&out);
    let summary = read_json(&home.path().join("m500/summary.json"));
    assert_eq!(summary["benchmarks"]["m500-test"]["num_problems"], 2);
    assert_eq!(summary["benchmarks"]["m500-test"]["pass@1"], 1.0);
}

#[test]
fn train_on_a_hub_model_and_data_set_records_both_commits() {
    let hub = MockHub::start();
    hub.add("models", "org/tiny", model_repo());
    hub.add("datasets", "org/math", dataset_repo());
    let home = tempfile::tempdir().unwrap();
    let out = home.path().join("run");
    let text = common::train_toml(
        &out,
        &[
            ("model.path", "\"org/tiny\""),
            ("data.dataset_name", "\"org/math\""),
            ("data.dataset_config", "\"main\""),
            ("data.validation_split", "\"test\""),
            ("train.max_steps", "1"),
            ("eval.limit", "2"),
        ],
    );
    let mut table: toml::Table = text.parse().unwrap();
    let data = table.get_mut("data").unwrap().as_table_mut().unwrap();
    data.remove("train");
    data.remove("validation");
    let config = home.path().join("c.toml");
    std::fs::write(&config, toml::to_string(&table).unwrap()).unwrap();
    let run = grpo(
        &hub.url,
        home.path(),
        &[],
        &["train", "--config", config.to_str().unwrap()],
    );
    succeeds(&run);
    let summary = read_json(&out.join("summary.json"));
    assert_eq!(summary["model_commit"], COMMIT);
    assert_eq!(summary["dataset_commit"], DATA_COMMIT);
    assert!(summary["initial_val_accuracy"].is_number(), "{summary}");

    // Both a data file and a hub data set for training: refused, naming both keys.
    data_conflict(&hub.url, home.path(), &table);
}

fn data_conflict(endpoint: &str, home: &Path, table: &toml::Table) {
    let mut t = table.clone();
    t.get_mut("data")
        .unwrap()
        .as_table_mut()
        .unwrap()
        .insert("train".into(), toml::Value::String("gsm8k_train".into()));
    let config = home.join("conflict.toml");
    std::fs::write(&config, toml::to_string(&t).unwrap()).unwrap();
    let out = grpo(
        endpoint,
        home,
        &[],
        &["config", "show", "--config", config.to_str().unwrap()],
    );
    fails_with(&out, &["data.train", "data.dataset_name", "keep one"]);
}

#[test]
fn init_model_fetches_only_the_tokenizer() {
    let hub = MockHub::start();
    hub.add("models", "org/tiny", model_repo());
    let home = tempfile::tempdir().unwrap();
    let out_dir = home.path().join("fresh");
    let out = grpo(
        &hub.url,
        home.path(),
        &[],
        &[
            "init-model",
            "--tokenizer",
            "org/tiny",
            "--out",
            out_dir.to_str().unwrap(),
        ],
    );
    succeeds(&out);
    assert!(out_dir.join("tokenizer.json").is_file());
    assert!(out_dir.join("model.safetensors").is_file());
    assert!(!hub
        .requests()
        .iter()
        .any(|r| r.path.contains("safetensors") || r.path.starts_with("/cdn/")));
}
