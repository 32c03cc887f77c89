//! `grpo verify` from the command line: one pair, and a JSONL file with a damaged line.

use std::io::Write;
use std::process::Command;

use serde_json::Value;

fn grpo(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_grpo"))
        .args(args)
        .output()
        .expect("run grpo")
}

#[test]
fn verify_one_pair_uses_math_verify_rules() {
    for (gold, pred, want) in [
        (r"$\frac{4}{9}$", "So the answer is $0.444444$.", "true"),
        ("1000.99", "it costs 1000,99 €", "true"),
        ("1000", "it costs 1 000 €", "true"),
        (r"$x > 5$", "$5 < x$", "true"),
        ("34", "Final Answer: The largest $n$ is 34.", "true"),
        (r"$10^{10^{10^{10}}}$", r"$10^{10^{10^{10}}}+1$", "false"),
        ("$2^{-100000}$", "$0$", "false"),
    ] {
        let out = grpo(&["verify", "--gold", gold, "--pred", pred]);
        assert!(out.status.success(), "{gold} vs {pred}");
        assert_eq!(
            String::from_utf8_lossy(&out.stdout).trim(),
            want,
            "{gold} vs {pred}"
        );
    }
}

#[test]
fn verify_input_with_invalid_utf8_line_judges_the_rest() {
    let mut f = tempfile::NamedTempFile::new().expect("temp file");
    f.write_all(b"{\"gold\": \"1\", \"pred\": \"1\"}\n")
        .unwrap();
    f.write_all(b"{\"gold\": \"2\", \"pred\": \"\xff2\"}\n")
        .unwrap();
    f.write_all(b"{\"gold\": \"3\", \"pred\": \"the answer is 4\"}\n")
        .unwrap();
    let path = f.path().to_str().unwrap().to_string();
    let out = grpo(&["verify", "--input", &path]);
    // Exit status 2: a line was malformed; every other line is still judged, in order.
    assert_eq!(out.status.code(), Some(2));
    let lines: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON verdict"))
        .collect();
    assert_eq!(lines.len(), 3);
    assert_eq!(lines[0]["correct"], true);
    assert_eq!(lines[1]["line"], 2);
    assert!(lines[1]["error"].as_str().unwrap().contains("UTF-8"));
    assert_eq!(lines[2]["correct"], false);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&format!("{path}:2")), "{err}");
}
