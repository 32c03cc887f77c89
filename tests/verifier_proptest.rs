//! Robustness: random LaTeX-like and random Unicode inputs never panic, and every pair stays
//! within the documented work budget (`EquivOptions::fuel`), so verification time is bounded.

use grpo::verifier::{
    extract_answer, is_equiv, is_equiv_counted, last_boxed, EquivOptions, ExtractPolicy,
};
use proptest::prelude::*;

const TOKENS: &[&str] = &[
    r"\frac",
    "{",
    "}",
    "(",
    ")",
    "[",
    "]",
    r"\sqrt",
    "^",
    "_",
    "1",
    "23",
    "0.5",
    "x",
    "y",
    "n",
    "+",
    "-",
    "*",
    "/",
    ",",
    "=",
    r"\pi",
    r"\pm",
    r"\{",
    r"\}",
    r"\left(",
    r"\right)",
    r"\begin{pmatrix}",
    "&",
    r"\\",
    r"\end{pmatrix}",
    r"\text{",
    "%",
    r"\%",
    "!",
    "e",
    "i",
    ".",
    " ",
    r"\cup",
    r"\infty",
    "|",
    r"\lfloor",
    r"\rfloor",
    r"\boxed{",
    "####",
    "$",
    "9999999999",
    "^{99999}",
    r"\binom",
    r"\log_",
    r"\sin",
    r"\cdot",
    r"\times",
    "1e400",
    "3e12",
    r"\le",
    "<",
    r"^\circ",
    "cm",
    r"\dfrac",
    r"\!",
    r"\,",
    "~",
    "é",
    "π",
    "√",
    "−",
    r"\mathrm{",
    r"\in",
    "The answer is ",
    "answer:",
    r"\sqrt[",
    "2^{2^{2^{2^{2}}}}",
    "100!",
    r"\\!",
    ",\\!",
];

fn latexish() -> impl Strategy<Value = String> {
    prop::collection::vec(prop::sample::select(TOKENS), 0..60).prop_map(|v| v.concat())
}

fn check(a: &str, b: &str) {
    let opts = EquivOptions::default();
    let (r, used) = is_equiv_counted(a, b, &opts);
    assert!(
        used <= opts.fuel,
        "{used} > {} for {a:?} vs {b:?}",
        opts.fuel
    );
    let _ = r;
    let _ = extract_answer(a, &ExtractPolicy::gsm8k());
    let _ = extract_answer(a, &ExtractPolicy::default());
    let _ = grpo::cli::verify::judge(a, b, &ExtractPolicy::default(), &opts);
    let _ = last_boxed(b);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, .. ProptestConfig::default() })]

    #[test]
    fn latexish_pairs_never_panic(a in latexish(), b in latexish()) {
        check(&a, &b);
    }

    #[test]
    fn unicode_pairs_never_panic(a in any::<String>(), b in "\\PC{0,80}") {
        check(&a, &b);
    }

    #[test]
    fn answer_equals_itself_when_it_parses(a in latexish()) {
        // Reflexive whenever non-empty: identical strings short-circuit.
        if !a.trim().is_empty() {
            prop_assert!(is_equiv(&a, &a, &EquivOptions::default()));
        }
    }
}

#[test]
fn pathological_inputs_stay_bounded() {
    let opts = EquivOptions::default();
    let deep = format!("{}1{}", "(".repeat(400), ")".repeat(400));
    let deep_frac = format!("{}1{}", r"\frac{".repeat(150), "}{2}".repeat(150));
    let long_sum = vec!["x"; 450].join("+");
    let cases = [
        (r"2^{2^{2^{2^{2^{2}}}}}", "3"),
        (r"9^{9^{9^{9}}}", r"9^{9^{9^{9}}}+1"),
        ("100000!", "5"),
        (r"\binom{100000}{50000}", "2"),
        ("1e400", "1e401"),
        (deep.as_str(), "1"),
        (deep_frac.as_str(), "0"),
        (long_sum.as_str(), "450x"),
        (&"-".repeat(900), "1"),
        (&"1,".repeat(400), &"1,".repeat(400).replace(",1", ",2")),
    ];
    for (a, b) in cases {
        let (_, used) = is_equiv_counted(a, b, &opts);
        assert!(used <= opts.fuel, "{used} for {a:.40}");
        let (_, used) = is_equiv_counted(b, a, &opts);
        assert!(used <= opts.fuel, "{used} for {b:.40}");
    }
    // A long sum of variables is still checked by value.
    assert!(is_equiv(&long_sum, "450x", &opts));
}
