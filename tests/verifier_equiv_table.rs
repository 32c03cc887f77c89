//! Hand-written (gold, pred, expected) cases for `is_equiv`, each checked in both directions.

use grpo::verifier::{is_equiv, EquivOptions, PercentPolicy};

const T: bool = true;
const F: bool = false;

#[rustfmt::skip]
const CASES: &[(&str, &str, bool)] = &[
    // --- integers, decimals, separators, scientific notation
    ("3", "3", T),
    ("3", "03", T),
    ("025", "25", T),
    ("-7", "-7", T),
    ("-7", "7", F),
    ("0", "-0", T),
    ("0", "0.0", T),
    ("12", "12.0", T),
    ("12", "12.00", T),
    ("12", "12.01", F),
    ("1.5", "1.50", T),
    (".5", "0.5", T),
    (".0000672", "0.0000672", T),
    (".0000672", "0.0000673", T), // both round to 0.000067 (math-verify)
    ("1234", "1,234", T),
    ("1234567", "1,234,567", T),
    ("10080", r"10,\!080", T),
    ("11111111100", r"11,\! 111,\! 111,\! 100", T),
    ("1234", "1,235", F),
    ("3000", "3e3", T),
    ("0.00012", "1.2e-4", T),
    ("4e33", r"4 \times 10^{33}", T),
    ("3.3e12", "3.3 \\cdot 10^{12}", T),
    ("3e8", "3e9", F),
    ("+5", "5", T),
    ("1000000", "1000001", F),
    // --- fractions and mixed numbers
    ("0.5", r"\frac{1}{2}", T),
    ("0.5", r"\frac12", T),
    ("0.5", r"\dfrac{1}{2}", T),
    ("0.5", r"\tfrac{1}{2}", T),
    ("0.5", "1/2", T),
    (r"\frac 34", "0.75", T),
    (r"\frac9{19}", r"\frac{9}{19}", T),
    (r"\frac{270}7", r"\frac{270}{7}", T),
    (r"\frac{6}{4}", r"\frac{3}{2}", T),
    (r"\frac{3}{2}", "1.5", T),
    (r"-\frac{3}{8}", r"\frac{-3}{8}", T),
    (r"-\frac{3}{8}", r"\frac{3}{-8}", T),
    (r"-\frac{3}{8}", r"\frac{3}{8}", F),
    (r"1\frac{4}{5}", r"\frac{9}{5}", T),
    (r"137 \frac{1}{2}", "137.5", T),
    (r"1\frac{4}{5}", r"\frac{4}{5}", F),
    (r"\frac{1}{3}", "0.3333333", T),
    (r"\frac{1}{3}", "0.333", F),
    (r"\frac{1}{3}", "0.33", F),
    (r"\frac{2}{3}", "0.6666667", T),
    (r"\frac{1}{3}", r"\frac{1}{4}", F),
    (r"\frac{10}{11}", r"\frac{11}{10}", F),
    (r"\frac{1997}{2}", "998.5", T),
    // --- percentages
    (r"50\%", "50", T),
    (r"50\%", "0.5", T),
    (r"50\%", "50%", T),
    (r"50\%", r"\frac{1}{2}", T),
    (r"50\%", "5", F),
    (r"8 \%", "8", T),
    (r"12.5\%", "0.125", T),
    // --- LaTeX noise
    (r"\left( 3, \frac{\pi}{2} \right)", r"(3,\frac{\pi}{2})", T),
    (r"2\!\sqrt{5}", r"2\sqrt5", T),
    (r"2\,\sqrt{5}", r"2 \sqrt{5}", T),
    (r"2\;x", "2x", T),
    ("2~x", "2x", T),
    (r"\text{5}", "5", T),
    (r"\mathrm{5}", "5", T),
    (r"\textbf{5}", "5", T),
    (r"\mbox{5}", "5", T),
    (r"90^\circ", "90", T),
    (r"90^{\circ}", "90", T),
    ("90°", "90", T),
    (r"90^\circ", "91", F),
    (r"5 \text{ cm}", "5", T),
    (r"5\text{ cm}", "5 cm", T),
    ("5 cm", "5", T),
    (r"15\mbox{ cm}^2", "15", T),
    (r"864 \mbox{ inches}^2", "864", T),
    (r"5.4 \text{ cents}", "5.4", T),
    (r"\frac{270}7\text{ degrees}", r"\frac{270}{7}", T),
    ("12 dollars", "12", T),
    ("18 cookies", "18", T),
    ("60 km/h", "60", T),
    (r"60 \text{ km/h}", "60", T),
    (r"9.8 \mathrm{m/s^2}", "9.8", T),
    ("2 pi", "2", F),
    ("2 pi", r"2\pi", T),
    ("18 cookies", "19", F),
    ("1,234 people", "1234", T),
    ("5.", "5", T),
    ("x + 1.", "x+1", T),
    (r"\$18.90", "18.9", T),
    (r"\$32,\!348", "32348", T),
    ("$5$", "5", T),
    (r"\(5\)", "5", T),
    (r"\[5\]", "5", T),
    (r"\displaystyle\frac{1}{2}", "0.5", T),
    ("−3", "-3", T),
    ("2k", "2", F),
    // --- tuples, points, intervals
    ("(1,2)", "(1, 2)", T),
    ("(1,2)", "(2,1)", F),
    ("(1,2)", "(1,2,3)", F),
    (r"\left( \frac{3}{2}, -13 \right)", "(1.5, -13)", T),
    ("(6,31,-1)", "(6, 31, -1)", T),
    ("(1,-16,-4,43)", "(1,-16,-4,-43)", F),
    ("(-\\infty, 3]", "(-\\infty,3]", T),
    ("(-\\infty, 3]", "(-\\infty,3)", F),
    ("(-\\infty, 3]", "[-\\infty,3]", F),
    ("[2,5)", "[2, 5)", T),
    ("[2,5)", "(2,5]", F),
    (r"(-\infty, 2) \cup (3, \infty)", r"(3,\infty)\cup(-\infty,2)", T),
    (r"(-\infty, 2) \cup (3, \infty)", r"(-\infty,2]\cup(3,\infty)", F),
    (r"\left(\frac{3}{5},\frac{8}{3}\right]", "(0.6, 8/3]", T),
    (r"\left[ \frac{\pi^2}{8}, \frac{5 \pi^2}{4} \right]", r"[\pi^2/8, 5\pi^2/4]", T),
    (r"x \in [-2,7]", "[-2,7]", T),
    (r"(-\sqrt{3}, \sqrt{3})", r"(-3^{1/2}, 3^{1/2})", T),
    (r"\langle 1, 2 \rangle", "(1,2)", T),
    // --- sets and lists
    (r"\{1,2\}", r"\{2,1\}", T),
    (r"\{1,2\}", r"\{1,3\}", F),
    (r"\{1,2\}", r"\{1,2,3\}", F),
    ("1, 2", "2, 1", T),
    ("3, 5, 7", "7,5,3", T),
    ("-2,1", "1,-2", T),
    ("1,2,2", "1,1,2", T), // sets: both are {1, 2} (math-verify)
    (r"1, 2, \text{and } 3", "3, 2, 1", T),
    ("1 and 2", "2, 1", T),
    ("1 and 2", "1, 3", F),
    (r"\{1\pm\sqrt{5},-2\}", r"-2, 1+\sqrt5, 1-\sqrt5", T),
    (r"1 \pm \sqrt{19}", r"1+\sqrt{19}, 1-\sqrt{19}", T),
    (r"3 \pm 2 \sqrt{2}", r"3-2\sqrt2, 3+2\sqrt2", T),
    (r"1 \pm \sqrt{19}", r"1+\sqrt{19}", F),
    (r"\{5\}", "5", T),
    ("(1,-16,-4,43)", "1,-16,-4,43", T),
    // --- matrices
    (r"\begin{pmatrix} -1 & 0 \\ 0 & -1 \end{pmatrix}", r"\begin{bmatrix}-1&0\\0&-1\end{bmatrix}", T),
    (r"\begin{pmatrix} -1 & 0 \\ 0 & -1 \end{pmatrix}", r"\begin{pmatrix} -1 & 0 \\ 0 & 1 \end{pmatrix}", F),
    (r"\begin{pmatrix} 1 & 2 \\ 3 & 4 \end{pmatrix}", r"\begin{pmatrix} 1 & 3 \\ 2 & 4 \end{pmatrix}", F),
    (r"\begin{pmatrix} -1/3 \\ 2/3 \\ 5/3 \end{pmatrix}", r"\begin{pmatrix} -\frac13 \\ \frac23 \\ \frac53 \end{pmatrix}", T),
    (r"\begin{pmatrix} 1/5 \\ -18/5 \end{pmatrix}", "(0.2, -3.6)", F), // a matrix is no tuple (math-verify)
    (r"\begin{pmatrix} 1/5 \\ -18/5 \end{pmatrix}", "(-3.6, 0.2)", F),
    // --- equations and relations
    ("x = 3", "3", T),
    ("x=5", "5", T),
    ("x = 3", "4", F),
    ("y = 2x+1", "2x+1", T),
    ("y = 2x + 3", "y=3+2x", T),
    ("y = 2x + 3", "2x - y + 3 = 0", T),
    ("y = 2x + 3", "y = 2x - 3", F),
    ("y = -2x", "y=-2x", T),
    ("5x - 7y + 11z + 4 = 0", "-5x + 7y - 11z - 4 = 0", T),
    ("5x - 7y + 11z + 4 = 0", "10x - 14y + 22z + 8 = 0", T),
    ("5x - 7y + 11z + 4 = 0", "5x - 7y + 11z - 4 = 0", F),
    ("f(x) = x+1", "x+1", T),
    (r"p(x)=\frac{(x-1)(x-2)}{6}", r"\frac{x^2-3x+2}{6}", T),
    (r"k \geqslant 2", r"k \ge 2", T),
    (r"k \ge 2", r"2 \le k", T),
    (r"k \ge 2", r"k > 2", F),
    ("x < 3", "3 > x", T),
    ("x = 1, x = 2", "1, 2", T),
    ("x > 3", r"[3, \infty)", F),
    (r"-2 \le x < 7", "[-2,7]", F),
    ("(x, y) = (3, 4)", "(3,4)", T),
    ("x = 3, y = 4", "(3,4)", T),
    // --- radicals, pi, expressions
    (r"\sqrt{8}", r"2\sqrt{2}", T),
    (r"\sqrt{8}", r"3\sqrt{2}", F),
    (r"\sqrt{12}", r"2\sqrt3", T),
    (r"\frac{\sqrt{3}}{2}", r"\sqrt3/2", T),
    (r"\frac{\sqrt{3}}{3}", r"\frac{1}{\sqrt{3}}", T),
    (r"\frac{\sqrt{3}}{2}", r"\frac{\sqrt{2}}{2}", F),
    (r"\pi/2", r"\frac{\pi}{2}", T),
    (r"\frac{\pi}{2}", "1.5707963", T),
    (r"\frac{\pi}{2}", "1.57", F),
    (r"2\pi", r"2 \cdot \pi", T),
    (r"12\pi", r"12 \times \pi", T),
    (r"3\sqrt{2}", r"\sqrt{18}", T),
    (r"\sqrt{2}", "1.414", F),
    (r"11\sqrt2", r"\sqrt{242}", T),
    (r"2^{10}", "1024", T),
    ("2^10", "1024", F),
    (r"2^{1009}", r"2 \cdot 2^{1008}", T),
    (r"\sqrt[3]{27}", "3", T),
    (r"\sqrt[3]{-8}", "-2", T),
    (r"\binom{5}{2}", "10", T),
    ("5!", "120", T),
    (r"|{-3}|", "3", T),
    (r"\lfloor 2.5 \rfloor", "2", T),
    (r"\lceil 2.5 \rceil", "3", T),
    ("(x+1)^2", "x^2+2x+1", T),
    ("|x|", "x", F),
    (r"\sqrt{x^2}", "|x|", T),
    (r"\lfloor x \rfloor", "x", F),
    (r"\sqrt[3]{x}", "x^{1/3}", T),
    (r"x^{2/3}", r"\sqrt[3]{x^2}", T),
    (r"\sqrt[3]{-2}", r"-\sqrt[3]{2}", T),
    ("(x+1)^2", "x^2+2x+2", F),
    ("(a+5)(b+2)", "ab+2a+5b+10", T),
    ("(a+5)(b+2)", "(a+2)(b+5)", F),
    ("x^3+3x-6", "-6+3x+x^3", T),
    (r"\frac{11+9a}{20}", r"\frac{9a}{20}+\frac{11}{20}", T),
    ("8n^2 + 4n + 1", "4n(2n+1)+1", T),
    ("p - q", "-(q-p)", T),
    ("p - q", "q - p", F),
    ("2k+2", "2(k+1)", T),
    ("2k", "2n", F),
    (r"\cot x", r"\frac{\cos x}{\sin x}", T),
    (r"\cot x", r"\tan x", F),
    (r"\sin^2 x + \cos^2 x", "1", T),
    (r"\log_{10} 2", r"\frac{\ln 2}{\ln 10}", T),
    (r"\ln(e^3)", "3", T),
    ("e^{i\\pi}", "-1", T),
    (r"2^{n}-n-1", r"2^n - (n+1)", T),
    (r"\frac{d !}{2 k(d-k) !}", r"\frac{d!}{2k \cdot (d-k)!}", T),
    (r"-2 + 7i", "7i - 2", T),
    (r"-2 + 7i", "-2 - 7i", F),
    ("1 - 12i", "1-12i", T),
    (r"\frac{e^{2 i t}}{(2+2 i)}", r"\frac{(1-i) e^{2it}}{4}", T),
    ("3R^2", "3 R^{2}", T),
    (r"10+2 \sqrt{2}", r"2(5+\sqrt{2})", T),
    (r"\frac{5 \pi}{4} \sqrt{17}", r"\frac{5\sqrt{17}\pi}{4}", T),
    (r"\frac{1}{2 n+2}", r"\frac{1}{2(n+1)}", T),
    // --- text answers and choices
    (r"\text{(B)}", "B", T),
    (r"\text{(B)}", "(B)", T),
    (r"\text{(B)}", r"\text{B}", T),
    (r"\text{(B)}", "C", F),
    ("(C)", "c", T),
    (r"\text{Monday}", "monday", T),
    ("Monday", "Tuesday", F),
    (r"\text{east}", "East", T),
    (r"\text{east}", "seat", F),
    (r"\text{Evelyn}", "Evelyn", T),
    (r"\text{ellipse}", "parabola", F),
    (r"\text{even}", "even", T),
    // --- other bases and odd forms
    ("204_5", "204_{5}", T),
    ("204_5", "54", F),
    ("2516_8", "2516_8", T),
    (r"\emptyset", r"\varnothing", T),
    (r"\emptyset", r"\{\}", T),
    (r"\emptyset", r"\{0\}", F),
    (r"\infty", "infinity", T),
    (r"-\infty", "-infinity", T),
    (r"\infty", r"-\infty", F),
    ("", "", F),
    ("5", "", F),
];

/// math-verify is asymmetric here: a gold relation becomes a set against a pred set, but a gold
/// set is never compared with a pred relation (`allow_set_relation_comp` is off).
#[rustfmt::skip]
const GOLD_FIRST: &[(&str, &str)] = &[
    ("x > 3", r"(3, \infty)"),
    (r"x \le 5", r"(-\infty, 5]"),
    (r"-2 \le x \le 7", "[-2,7]"),
    (r"7 \ge x \ge -2", "[-2,7]"),
    (r"-2 \le x \le 7", r"x \in [-2, 7]"),
    ("x = 3, y = 4", "(4,3)"),
];

#[test]
fn gold_relation_equals_pred_set_but_not_the_reverse() {
    let opts = EquivOptions::default();
    for &(gold, pred) in GOLD_FIRST {
        assert!(is_equiv(gold, pred, &opts), "{gold:?} vs {pred:?}");
        assert!(!is_equiv(pred, gold, &opts), "{pred:?} vs {gold:?}");
    }
}

#[test]
fn table_both_directions() {
    let opts = EquivOptions::default();
    assert!(CASES.len() >= 150, "{} cases", CASES.len());
    let mut bad = Vec::new();
    for &(gold, pred, want) in CASES {
        let fwd = is_equiv(gold, pred, &opts);
        let back = is_equiv(pred, gold, &opts);
        if fwd != want || back != want {
            bad.push(format!(
                "{gold:?} vs {pred:?}: want {want}, got {fwd}/{back}"
            ));
        }
    }
    assert!(
        bad.is_empty(),
        "{} of {} cases wrong:\n{}",
        bad.len(),
        CASES.len(),
        bad.join("\n")
    );
}

#[test]
fn percent_policies() {
    let frac = EquivOptions {
        percent: PercentPolicy::AsFraction,
        ..Default::default()
    };
    assert!(is_equiv(r"50\%", "0.5", &frac));
    assert!(!is_equiv(r"50\%", "50", &frac));
    let num = EquivOptions {
        percent: PercentPolicy::AsNumber,
        ..Default::default()
    };
    assert!(is_equiv(r"50\%", "50", &num));
    assert!(!is_equiv(r"50\%", "0.5", &num));
}

#[test]
fn ordered_lists_option() {
    let ordered = EquivOptions {
        unordered_lists: false,
        ..Default::default()
    };
    assert!(!is_equiv("1, 2", "2, 1", &ordered));
    assert!(is_equiv("1, 2", "1, 2", &ordered));
    // Sets stay order-free.
    assert!(is_equiv(r"\{1,2\}", r"\{2,1\}", &ordered));
}

#[test]
fn float_rounding_option() {
    let three = EquivOptions {
        float_rounding: 3,
        ..Default::default()
    };
    assert!(is_equiv(r"\frac{1}{3}", "0.333", &three));
    assert!(!is_equiv(r"\frac{1}{3}", "0.333", &EquivOptions::default()));
    // Exact answers stay exact whatever the rounding.
    assert!(!is_equiv("100", "101", &three));
}
