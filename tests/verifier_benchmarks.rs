//! The verifier against the public benchmark sets in `data/benchmarks`.

use grpo::verifier::normalize::normalize;
use grpo::verifier::structure::{parse_answer, Answer};
use grpo::verifier::{extract_answer, is_equiv, last_boxed, EquivOptions, ExtractPolicy, Fuel};
use serde_json::Value;

fn rows(rel: &str) -> Vec<Value> {
    let path = format!("{}/data/benchmarks/{rel}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .enumerate()
        .map(|(i, l)| serde_json::from_str(l).unwrap_or_else(|e| panic!("{path}:{}: {e}", i + 1)))
        .collect()
}

fn field<'a>(v: &'a Value, k: &str) -> &'a str {
    v[k].as_str()
        .unwrap_or_else(|| panic!("missing string field {k} in {v}"))
}

#[test]
fn math500_solution_box_matches_answer() {
    let data = rows("math500/test.jsonl");
    assert_eq!(data.len(), 500);
    let opts = EquivOptions::default();
    let mut bad = Vec::new();
    for (i, r) in data.iter().enumerate() {
        let ans = field(r, "answer");
        let boxed = last_boxed(field(r, "solution")).unwrap_or("<none>");
        if !is_equiv(ans, boxed, &opts) || !is_equiv(boxed, ans, &opts) {
            bad.push(format!("{i}: answer {ans:?} vs boxed {boxed:?}"));
        }
    }
    assert!(
        bad.is_empty(),
        "{} mismatches:\n{}",
        bad.len(),
        bad.join("\n")
    );
}

/// Distinct answers of MATH-500 that are nevertheless the same value.
/// (Units, degree signs and dollar signs are ignored; a bare list equals the tuple in order.)
const TRULY_EQUAL: &[(&str, &str)] = &[
    ("5", "x=5"),
    ("(-2,1)", "-2,1"),
    ("-2,1", "1,-2"),
    (r"10,\!080", "10080"),
    ("120", r"120^\circ"),
    ("15", r"15\mbox{ cm}^2"),
    (r"2 \sqrt{5}", r"2\sqrt{5}"),
    ("30", r"30^\circ"),
    ("36", r"36^\circ"),
    ("36", r"\$36"),
    (r"36^\circ", r"\$36"),
    ("90", r"90^\circ"),
    (r"\frac14", r"\frac{1}{4}"),
    // math-verify's rule: a pred equation against a gold that is none is its right side.
    ("0", "5x - 7y + 11z + 4 = 0"),
];

fn allowed(a: &str, b: &str) -> bool {
    TRULY_EQUAL
        .iter()
        .any(|&(x, y)| (x, y) == (a, b) || (y, x) == (a, b))
}

#[test]
fn math500_shifted_answers_rarely_match() {
    let data = rows("math500/test.jsonl");
    let answers: Vec<&str> = data.iter().map(|r| field(r, "answer")).collect();
    let opts = EquivOptions::default();
    let n = answers.len();
    let (mut pairs, mut matched, mut distinct, mut distinct_matched) = (0, 0, 0, 0);
    for shift in [1, 2, 3, 7, 50, 123, 250] {
        for i in 0..n {
            let (a, b) = (answers[i], answers[(i + shift) % n]);
            let m = is_equiv(a, b, &opts);
            pairs += 1;
            matched += m as usize;
            if a != b {
                distinct += 1;
                distinct_matched += m as usize;
                assert!(!m || allowed(a, b), "false match: {a:?} vs {b:?}");
            }
        }
    }
    eprintln!(
        "MATH-500 shifted pairs: {matched} of {pairs} match; distinct strings: {distinct_matched} of {distinct}"
    );
    assert!((distinct_matched as f64) < 0.005 * distinct as f64);
    // Most matches are answers that repeat verbatim (`3` and `3`).
    assert!(matched - distinct_matched >= 15);
}

#[test]
fn math500_all_pairs_no_false_match() {
    let data = rows("math500/test.jsonl");
    let mut answers: Vec<&str> = data.iter().map(|r| field(r, "answer")).collect();
    answers.sort();
    answers.dedup();
    let opts = EquivOptions::default();
    let mut bad = Vec::new();
    for i in 0..answers.len() {
        for j in i + 1..answers.len() {
            let (a, b) = (answers[i], answers[j]);
            if is_equiv(a, b, &opts) && !allowed(a, b) {
                bad.push(format!("{a:?} vs {b:?}"));
            }
        }
    }
    assert!(
        bad.is_empty(),
        "{} false matches:\n{}",
        bad.len(),
        bad.join("\n")
    );
}

#[test]
fn gsm8k_hash_extraction_and_format_variants() {
    let data = rows("gsm8k/test.jsonl");
    assert_eq!(data.len(), 1319);
    let opts = EquivOptions::default();
    let policy = ExtractPolicy::gsm8k();
    let mut bad = Vec::new();
    for (i, r) in data.iter().enumerate() {
        let sol = field(r, "answer");
        let Some(gold) = extract_answer(sol, &policy) else {
            bad.push(format!("{i}: no #### answer"));
            continue;
        };
        let plain = gold.replace(',', "");
        let value: f64 = plain.parse().unwrap_or(f64::NAN);
        assert!(value.is_finite(), "{i}: gold {gold:?} is not a number");
        // Thousands separators, boxed, dollars, trailing .0, a sentence, and a full completion.
        let with_commas = commas(&plain);
        let variants = [
            plain.clone(),
            with_commas.clone(),
            format!(r"\boxed{{{with_commas}}}"),
            format!(r"\${plain}"),
            format!("{plain}.0"),
            format!("The answer is {plain}."),
            format!("Step 1 ... so she has {plain} left.\n#### {with_commas}"),
        ];
        for v in &variants {
            let pred = extract_answer(v, &policy).unwrap_or_else(|| v.clone());
            if !is_equiv(&gold, &pred, &opts) || !is_equiv(&pred, &gold, &opts) {
                bad.push(format!("{i}: gold {gold:?} vs {v:?} (extracted {pred:?})"));
            }
        }
        // A value off by one is wrong.
        let off = format!("{}", value + 1.0);
        if is_equiv(&gold, &off, &opts) {
            bad.push(format!("{i}: gold {gold:?} matched {off:?}"));
        }
    }
    assert!(
        bad.is_empty(),
        "{} failures:\n{}",
        bad.len(),
        bad.join("\n")
    );
}

fn commas(int: &str) -> String {
    let (sign, digits) = int.strip_prefix('-').map_or(("", int), |d| ("-", d));
    if digits.contains('.') {
        return int.to_string();
    }
    let mut out = String::new();
    for (k, ch) in digits.chars().enumerate() {
        if k > 0 && (digits.len() - k) % 3 == 0 {
            out.push(',');
        }
        out.push(ch);
    }
    format!("{sign}{out}")
}

#[test]
fn aime_and_amc_gold_parse() {
    let opts = EquivOptions::default();
    let aime = rows("aime24/test.jsonl");
    assert_eq!(aime.len(), 30);
    for r in &aime {
        let a = field(r, "answer");
        let n: u32 = a
            .parse()
            .unwrap_or_else(|_| panic!("AIME answer {a:?} is not an integer"));
        assert!(n <= 999);
        assert!(is_equiv(a, &n.to_string(), &opts), "{a} vs {n}");
        assert!(!is_equiv(a, &(n + 1).to_string(), &opts));
    }
    let amc = rows("amc23/test.jsonl");
    assert_eq!(amc.len(), 40);
    for r in &amc {
        let v = r["answer"]
            .as_f64()
            .unwrap_or_else(|| panic!("AMC answer not a number: {r}"));
        let gold = r["answer"].to_string(); // e.g. `27.0`
        let int = format!("{}", v.round() as i64);
        assert!(is_equiv(&gold, &int, &opts), "{gold} vs {int}");
        assert!(!is_equiv(
            &gold,
            &format!("{}", v.round() as i64 + 1),
            &opts
        ));
    }
}

#[test]
fn minerva_boxed_extracted_for_all() {
    let data = rows("minerva_math/test.jsonl");
    assert_eq!(data.len(), 272);
    let opts = EquivOptions::default();
    for (i, r) in data.iter().enumerate() {
        let b = last_boxed(field(r, "solution")).unwrap_or_else(|| panic!("{i}: no boxed answer"));
        assert!(!b.is_empty(), "{i}: empty box");
        assert!(is_equiv(b, b, &opts), "{i}: {b:?} not equal to itself");
    }
}

#[test]
fn olympiadbench_final_answers_parse() {
    let data = rows("olympiadbench/test.jsonl");
    assert_eq!(data.len(), 669);
    let opts = EquivOptions::default();
    let mut structured = 0;
    for (i, r) in data.iter().enumerate() {
        let list = r["final_answer"]
            .as_array()
            .unwrap_or_else(|| panic!("{i}: final_answer"));
        assert!(!list.is_empty());
        let joined: Vec<&str> = list.iter().filter_map(Value::as_str).collect();
        let gold = joined.join(",");
        assert!(
            is_equiv(&gold, &gold, &opts),
            "{i}: {gold:?} not equal to itself"
        );
        // The same answer without `$` delimiters and with extra spacing is still equal.
        let bare = gold.replace('$', "").replace(',', ", ");
        if is_equiv(&gold, &bare, &opts) {
            structured += 1;
        }
        if r["is_multiple_answer"].as_bool() == Some(true) && joined.len() > 1 {
            let mut rev = joined.clone();
            rev.reverse();
            assert!(
                is_equiv(&gold, &rev.join(","), &opts),
                "{i}: reversed {gold:?}"
            );
        }
    }
    eprintln!("OlympiadBench: {structured} of 669 equal after re-spacing");
    assert!(structured >= 660, "{structured}");
}

/// Whether any part of a parsed answer fell back to plain text.
fn has_text(a: &Answer) -> bool {
    match a {
        Answer::Text(_) => true,
        Answer::Expr(_) => false,
        Answer::Rel { lhs, rhs, .. } => has_text(lhs) || has_text(rhs),
        Answer::Seq { items, .. }
        | Answer::Set(items)
        | Answer::List(items)
        | Answer::Union(items) => items.iter().any(has_text),
        Answer::Matrix(m) => m.iter().flatten().any(has_text),
    }
}

fn text_fallbacks(answers: &[String]) -> Vec<&String> {
    answers
        .iter()
        .filter(|a| {
            has_text(&parse_answer(
                &normalize(a),
                &Fuel::new(EquivOptions::default().fuel),
                0,
            ))
        })
        .collect()
}

#[test]
fn gold_answers_parse_structurally() {
    // OlympiadBench: everything but a prose answer and `t(0,4]` parses to math.
    let ob: Vec<String> = rows("olympiadbench/test.jsonl")
        .iter()
        .map(|r| {
            let list = r["final_answer"].as_array().cloned().unwrap_or_default();
            list.iter()
                .filter_map(Value::as_str)
                .collect::<Vec<_>>()
                .join(",")
        })
        .collect();
    let text = text_fallbacks(&ob);
    assert!(text.len() <= 2, "{text:?}");
    // MATH-500: only the five word answers (`\text{Evelyn}`, `\text{east}`, ...) are text.
    let math: Vec<String> = rows("math500/test.jsonl")
        .iter()
        .map(|r| field(r, "answer").to_string())
        .collect();
    let text = text_fallbacks(&math);
    assert_eq!(text.len(), 5, "{text:?}");
    assert!(text.iter().all(|t| t.starts_with(r"\text{")), "{text:?}");
}

/// Spaces removed where LaTeX does not need them (`2 \sqrt{5}` → `2\sqrt{5}`, not `\cotx`).
fn squeeze(s: &str) -> String {
    let c: Vec<char> = s.chars().collect();
    let mut out = String::new();
    for (i, &ch) in c.iter().enumerate() {
        let prev_alpha = i > 0 && c[i - 1].is_ascii_alphabetic();
        let next_alpha = c.get(i + 1).is_some_and(|n| n.is_ascii_alphabetic());
        if ch == ' ' && !(prev_alpha && next_alpha) {
            continue;
        }
        out.push(ch);
    }
    out
}

#[test]
fn math500_answers_survive_rewriting_and_extraction() {
    let data = rows("math500/test.jsonl");
    let opts = EquivOptions::default();
    let policy = ExtractPolicy::math();
    let mut bad = Vec::new();
    for (i, r) in data.iter().enumerate() {
        let a = field(r, "answer");
        let variants = [
            format!("${a}$"),
            squeeze(a),
            a.replace(r"\frac", r"\dfrac"),
            a.replace(r"\frac", r"\tfrac")
                .replace("(", r"\left(")
                .replace(")", r"\right)"),
            format!("Thus the answer is $\\boxed{{{a}}}$."),
            format!("Final Answer: The final answer is ${a}$. I hope it is correct."),
            format!("<think>work</think>\nThe answer is \\({a}\\)."),
        ];
        for v in &variants {
            let pred = extract_answer(v, &policy).unwrap_or_else(|| v.clone());
            if !is_equiv(a, &pred, &opts) || !is_equiv(&pred, a, &opts) {
                bad.push(format!("{i}: {a:?} vs {v:?} (extracted {pred:?})"));
            }
        }
    }
    assert!(
        bad.is_empty(),
        "{} failures:\n{}",
        bad.len(),
        bad.join("\n")
    );
}

#[test]
fn gsm8k_solutions_as_completions() {
    let data = rows("gsm8k/test.jsonl");
    let opts = EquivOptions::default();
    let policy = ExtractPolicy::gsm8k();
    let sols: Vec<&str> = data.iter().map(|r| field(r, "answer")).collect();
    let golds: Vec<String> = sols
        .iter()
        .map(|s| extract_answer(s, &policy).unwrap_or_default())
        .collect();
    let (mut own, mut cross, mut cross_equal_gold) = (0, 0, 0);
    for i in 0..sols.len() {
        let j = (i + 1) % sols.len();
        own +=
            grpo::verifier::verify_completion(sols[i], &golds[i], &policy, &opts).correct as usize;
        if grpo::verifier::verify_completion(sols[j], &golds[i], &policy, &opts).correct {
            cross += 1;
            cross_equal_gold += (golds[i].replace(',', "") == golds[j].replace(',', "")) as usize;
        }
    }
    eprintln!("GSM8K: own solution correct {own}/1319; neighbour's solution correct {cross}");
    assert_eq!(own, 1319);
    // A neighbour's solution is only graded correct when the two golds are the same number.
    assert_eq!(cross, cross_equal_gold);
}
