//! `grpo verify`: the answer verifier behind the accuracy reward, on one pair or a JSONL file.

use std::fs::File;
use std::io::{BufWriter, Read, Write};
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use rayon::prelude::*;
use serde_json::{json, Value};

use crate::verifier::extract::has_answer_marker;
use crate::verifier::{
    extract_answer, gold_answer, is_equiv, EquivOptions, ExtractPolicy, PercentPolicy, Verdict,
};

/// The `-h` long text for `grpo verify` (also used by `main.rs` on the subcommand).
pub const LONG_ABOUT: &str = "\
Check whether predicted answers are mathematically equivalent to gold answers.

A pred may be a whole completion. With the default policy the answer is extracted as
math-verify does (\\boxed{}, \"Final Answer: ...\", \"answer: ...\", the last $...$, \\(...\\),
\\[...\\] or $$...$$, then the last number or expression); --policy lenient|math|gsm8k|boxed
are stricter (a pred without an answer marker is then the answer itself). A gold with a
marker or a plain number is reduced the same way; any other gold is one LaTeX answer.

Examples:
  grpo verify --gold '\\frac{1}{2}' --pred '0.5'            # prints true
  grpo verify --gold '(-\\infty, 3]' --pred '(-\\infty,3)'    # prints false
  grpo verify --input pairs.jsonl --output verdicts.jsonl

Input lines are JSON objects {\"gold\": ..., \"pred\": ...} (numbers are accepted too). Each
output line is {\"correct\": bool, \"gold_parsed\": ..., \"pred_parsed\": ...}, in input order;
a malformed line yields {\"line\": N, \"error\": \"...\"} and a message on stderr, and the rest are
still judged (invalid UTF-8 on one line makes only that line malformed). Exit status: 0 when
every line was judged, 2 if any line was malformed.";

/// Check answers for mathematical equivalence (the verifier behind the accuracy reward).
#[derive(Debug, Clone, clap::Args)]
#[command(long_about = LONG_ABOUT)]
pub struct VerifyArgs {
    /// Gold answer for a single check (with --pred); prints `true` or `false`.
    #[arg(long, requires = "pred", conflicts_with = "input")]
    pub gold: Option<String>,
    /// Predicted answer or whole completion for a single check (with --gold).
    #[arg(long, requires = "gold", conflicts_with = "input")]
    pub pred: Option<String>,
    /// JSONL file of {"gold": ..., "pred": ...} objects (`-` reads stdin).
    #[arg(long, short = 'i', value_name = "FILE")]
    pub input: Option<PathBuf>,
    /// Where to write verdicts for --input (default: stdout).
    #[arg(long, short = 'o', value_name = "FILE", requires = "input")]
    pub output: Option<PathBuf>,
    /// Extraction policy for completions: default (math-verify's), lenient, math, gsm8k, boxed.
    #[arg(long, default_value = "default")]
    pub policy: String,
    /// How `50\%` compares with `50` and `0.5`: lenient (both), fraction (0.5), number (50).
    #[arg(long, default_value = "lenient")]
    pub percent: String,
    /// Decimal places a decimal answer and a number are rounded to before comparing
    /// (math-verify's `float_rounding`).
    #[arg(long, default_value_t = 6)]
    pub float_rounding: u32,
    /// Treat bare comma lists (`1, 2`) as ordered tuples instead of sets.
    #[arg(long)]
    pub ordered_lists: bool,
}

fn options(args: &VerifyArgs) -> Result<(ExtractPolicy, EquivOptions)> {
    let policy = ExtractPolicy::by_name(&args.policy).with_context(|| {
        format!(
            "--policy {}: expected one of default, lenient, math, gsm8k, boxed",
            args.policy
        )
    })?;
    let percent = match args.percent.as_str() {
        "lenient" => PercentPolicy::Lenient,
        "fraction" => PercentPolicy::AsFraction,
        "number" => PercentPolicy::AsNumber,
        other => bail!("--percent {other}: expected lenient, fraction or number"),
    };
    if args.float_rounding > 30 {
        bail!(
            "--float-rounding {}: expected 0 to 30 decimal places",
            args.float_rounding
        );
    }
    let opts = EquivOptions {
        float_rounding: args.float_rounding,
        percent,
        unordered_lists: !args.ordered_lists,
        ..EquivOptions::default()
    };
    Ok((policy, opts))
}

/// The answer in a pred. math-verify's policy extracts from any text; the stricter policies
/// extract when the pred carries an answer marker and take the pred itself otherwise.
pub fn pred_answer(pred: &str, policy: &ExtractPolicy) -> Option<String> {
    if policy.math_verify {
        return extract_answer(pred, policy);
    }
    if has_answer_marker(pred) {
        if let Some(a) = extract_answer(pred, policy) {
            return Some(a);
        }
    }
    let p = pred.trim();
    (!p.is_empty()).then(|| p.to_string())
}

/// Judge one JSONL line; `Err` describes why the line is malformed.
pub fn judge_line(
    line: &str,
    policy: &ExtractPolicy,
    opts: &EquivOptions,
) -> Result<Value, String> {
    let v: Value = serde_json::from_str(line).map_err(|e| format!("invalid JSON: {e}"))?;
    let obj = v
        .as_object()
        .ok_or("expected a JSON object with keys gold and pred")?;
    let text = |key: &str| -> Result<String, String> {
        match obj.get(key) {
            Some(Value::String(s)) => Ok(s.clone()),
            Some(Value::Number(n)) => Ok(n.to_string()),
            Some(other) => Err(format!(
                "key `{key}`: expected a string or number, got {other}"
            )),
            None => Err(format!("missing key `{key}`")),
        }
    };
    let (gold, pred) = (text("gold")?, text("pred")?);
    let v = judge(&gold, &pred, policy, opts);
    Ok(json!({"correct": v.correct, "gold_parsed": v.gold_parsed, "pred_parsed": v.pred_parsed}))
}

/// One verdict: the gold and the pred reduced to answers, then compared.
pub fn judge(gold: &str, pred: &str, policy: &ExtractPolicy, opts: &EquivOptions) -> Verdict {
    let gold_parsed = gold_answer(gold);
    // A pred that is the gold itself counts even when nothing is extractable (`LRRL`).
    let pred_parsed = pred_answer(pred, policy).or_else(|| {
        let p = pred.trim();
        (!p.is_empty() && p == gold.trim()).then(|| p.to_string())
    });
    let correct = match (&gold_parsed, &pred_parsed) {
        (Some(g), Some(p)) => is_equiv(g, p, opts),
        _ => false,
    };
    Verdict {
        correct,
        pred_parsed,
        gold_parsed,
    }
}

pub fn run(args: &VerifyArgs) -> Result<()> {
    let (policy, opts) = options(args)?;
    if let (Some(gold), Some(pred)) = (&args.gold, &args.pred) {
        println!("{}", judge(gold, pred, &policy, &opts).correct);
        return Ok(());
    }
    let Some(input) = &args.input else {
        bail!("expected --gold and --pred, or --input FILE (see grpo verify -h)");
    };
    let mut bytes = Vec::new();
    if input.as_os_str() == "-" {
        std::io::stdin()
            .read_to_end(&mut bytes)
            .context("reading stdin")?;
    } else {
        File::open(input)
            .and_then(|mut f| f.read_to_end(&mut bytes))
            .with_context(|| format!("reading {}", input.display()))?;
    }
    let start = Instant::now();
    // Lines are split as bytes so that invalid UTF-8 spoils only its own line.
    let lines: Vec<(usize, &[u8])> = bytes
        .split(|&b| b == b'\n')
        .enumerate()
        .map(|(i, l)| (i + 1, l.strip_suffix(b"\r").unwrap_or(l)))
        .filter(|(_, l)| !l.trim_ascii().is_empty())
        .collect();
    let results: Vec<(usize, Result<Value, String>)> = lines
        .par_iter()
        .map(|&(n, l)| {
            let r = match std::str::from_utf8(l) {
                Ok(l) => judge_line(l, &policy, &opts),
                Err(e) => Err(format!(
                    "invalid UTF-8 at byte {} of the line",
                    e.valid_up_to() + 1
                )),
            };
            (n, r)
        })
        .collect();
    let secs = start.elapsed().as_secs_f64();

    let mut out: Box<dyn Write> = match &args.output {
        Some(p) => Box::new(BufWriter::new(
            File::create(p).with_context(|| format!("creating {}", p.display()))?,
        )),
        None => Box::new(BufWriter::new(std::io::stdout().lock())),
    };
    let (mut correct, mut malformed) = (0usize, 0usize);
    for (n, r) in &results {
        let v = match r {
            Ok(v) => {
                correct += usize::from(v["correct"] == Value::Bool(true));
                v.clone()
            }
            Err(e) => {
                malformed += 1;
                eprintln!("{}:{n}: {e}", input.display());
                json!({"line": n, "error": e})
            }
        };
        writeln!(out, "{v}").context("writing verdicts")?;
    }
    out.flush().context("writing verdicts")?;
    let judged = results.len() - malformed;
    eprintln!(
        "verified {judged} pairs: {correct} correct ({:.1}%), {malformed} malformed, {:.0} pairs/s",
        100.0 * correct as f64 / judged.max(1) as f64,
        results.len() as f64 / secs.max(1e-9)
    );
    if malformed > 0 {
        bail!("{malformed} malformed line(s) in {}", input.display());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn judge_lines() {
        let (p, o) = (ExtractPolicy::default(), EquivOptions::default());
        let v =
            judge_line(r#"{"gold": "1234", "pred": "so \\boxed{1,234}"}"#, &p, &o).expect("valid");
        assert_eq!(v["correct"], true);
        assert_eq!(v["pred_parsed"], "1,234");
        let v = judge_line(r#"{"gold": 27.0, "pred": "27"}"#, &p, &o).expect("valid");
        assert_eq!(v["correct"], true);
        let v = judge_line(r#"{"gold": "x", "pred": "y"}"#, &p, &o).expect("valid");
        assert_eq!(v["correct"], false);
        assert!(judge_line(r#"{"gold": "1"}"#, &p, &o)
            .unwrap_err()
            .contains("pred"));
        assert!(judge_line("not json", &p, &o)
            .unwrap_err()
            .contains("invalid JSON"));
    }
}
