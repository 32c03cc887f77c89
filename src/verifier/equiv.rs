//! Mathematical equivalence of two final answers; see the module docs of [`super`] for the
//! rules and the time bound.

use super::compare::Cmp;
use super::normalize::normalize;
pub use super::options::{EquivOptions, PercentPolicy, DEFAULT_FUEL, MAX_ITEMS, MAX_VARS};
use super::parse::standalone_i;
use super::structure::parse_answer;
use super::text::text_canon;
use super::Fuel;

/// Whether `gold` and `pred` denote the same answer (symmetric; never panics; bounded work).
pub fn is_equiv(gold: &str, pred: &str, opts: &EquivOptions) -> bool {
    is_equiv_counted(gold, pred, opts).0
}

/// [`is_equiv`] plus the fuel it spent (for tests of the work bound).
pub fn is_equiv_counted(gold: &str, pred: &str, opts: &EquivOptions) -> (bool, u64) {
    let fuel = Fuel::new(opts.fuel);
    let r = equiv_with(gold, pred, opts, &fuel);
    (r, fuel.used())
}

fn equiv_with(gold: &str, pred: &str, opts: &EquivOptions, fuel: &Fuel) -> bool {
    let (g, p) = (gold.trim(), pred.trim());
    if g == p {
        return !g.is_empty();
    }
    if let Some(r) = fast_numbers(g, p) {
        return r;
    }
    if g.len() > opts.max_len || p.len() > opts.max_len {
        return false;
    }
    let (gn, pn) = (normalize(g), normalize(p));
    if gn.is_empty() || pn.is_empty() {
        return false;
    }
    if gn == pn {
        return true;
    }
    if is_texty(&gn) && is_texty(&pn) && text_canon(&gn) == text_canon(&pn) {
        return true;
    }
    fuel.imaginary.set(Some(standalone_i(&gn)));
    let ga = parse_answer(&gn, fuel, 0);
    fuel.imaginary.set(Some(standalone_i(&pn)));
    let pa = parse_answer(&pn, fuel, 0);
    fuel.imaginary.set(None);
    Cmp { opts, fuel }.top(&ga, &pa)
}

/// Plain integers / decimals compared without allocation: `Some(verdict)` when decided.
fn fast_numbers(a: &str, b: &str) -> Option<bool> {
    let x = plain_decimal(a)?;
    let y = plain_decimal(b)?;
    if x == y {
        return Some(true);
    }
    // Two integers that differ are different; decimals may still be within tolerance.
    (x.2.is_empty() && y.2.is_empty()).then_some(false)
}

/// (negative, integer digits without leading zeros, fraction digits without trailing zeros).
fn plain_decimal(s: &str) -> Option<(bool, &str, &str)> {
    let (neg, body) = match s.as_bytes().first()? {
        b'-' => (true, &s[1..]),
        b'+' => (false, &s[1..]),
        _ => (false, s),
    };
    let (int, frac) = match body.find('.') {
        Some(i) => (&body[..i], &body[i + 1..]),
        None => (body, ""),
    };
    if int.is_empty() && frac.is_empty()
        || !int.bytes().all(|c| c.is_ascii_digit())
        || !frac.bytes().all(|c| c.is_ascii_digit())
    {
        return None;
    }
    let int = int.trim_start_matches('0');
    let frac = frac.trim_end_matches('0');
    let zero = int.is_empty() && frac.is_empty();
    Some((neg && !zero, int, frac))
}

/// Pure words (letters, spaces, parentheses): compared case-insensitively as text.
fn is_texty(s: &str) -> bool {
    s.chars().any(|c| c.is_alphabetic())
        && s.chars()
            .all(|c| c.is_alphabetic() || c == ' ' || c == '(' || c == ')' || c == '\'' || c == '-')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn eq(a: &str, b: &str) -> bool {
        let o = EquivOptions::default();
        let r = is_equiv(a, b, &o);
        assert_eq!(r, is_equiv(b, a, &o), "asymmetric: {a} vs {b}");
        r
    }

    #[test]
    fn basics() {
        assert!(eq("0.5", r"\frac12"));
        assert!(eq(r"\sqrt{8}", r"2\sqrt{2}"));
        assert!(eq("(x+1)^2", "x^2+2x+1"));
        assert!(!eq("(x+1)^2", "x^2+x+1"));
        assert!(eq(r"\{1,2\}", r"\{2,1\}"));
        assert!(!eq("(1,2)", "(2,1)"));
        assert!(eq("x = 3", "3"));
        assert!(eq("10,080", "10080"));
        assert!(!eq("2", "3"));
    }

    /// Gold first, as math-verify is asymmetric in places.
    fn gp(gold: &str, pred: &str) -> bool {
        is_equiv(gold, pred, &EquivOptions::default())
    }

    #[test]
    fn huge_towers_never_equal_themselves_plus_one() {
        // Float overflow once made both sides infinite, hence "equal".
        assert!(!gp(r"10^{10^{10^{10}}}", r"10^{10^{10^{10}}}+1"));
        assert!(!gp(r"e^{e^{e^{e^e}}}", r"e^{e^{e^{e^e}}}+1"));
        assert!(gp(r"2^{100}", "1267650600228229401496703205376"));
        assert!(!gp(r"2^{100}", "1267650600228229401496703205377"));
    }

    #[test]
    fn underflow_to_zero_is_not_zero() {
        assert!(!gp(r"2^{-100000}", "0"));
        assert!(!gp(r"e^{-100000}", "0"));
        assert!(gp(r"2^{-10}", r"\frac{1}{1024}"));
    }

    #[test]
    fn log_of_zero_is_not_minus_infinity() {
        assert!(!gp(r"\log(0)", r"-\infty"));
        assert!(!gp(r"\ln 0", r"-\infty"));
        assert!(gp(r"-\infty", r"-\infty"));
    }

    #[test]
    fn out_of_range_exponent_literal_is_not_a_power_of_ten() {
        assert!(!gp("1e999999", r"10^{999999}"));
        assert!(gp("1e5", r"10^{5}"));
    }

    #[test]
    fn decimals_round_to_six_places_like_math_verify() {
        assert!(gp(r"\frac{4}{9}", "0.444444"));
        assert!(!gp(r"\frac{4}{9}", "0.44444"));
        // Against an integer only the exact value counts (sympy's `Integer.round` is exact).
        assert!(!gp("1000000", "1000000.0000004"));
        assert!(gp("12", "12.0"));
        assert!(gp("0.5", "0.5000001"));
        assert!(!gp("1000000", "1000000.5"));
        assert!(gp(r"\sqrt{2}", "1.414214"));
    }

    #[test]
    fn relations_flip_and_unwrap_like_math_verify() {
        assert!(gp(r"x \geq 5", "x >= 5"));
        assert!(gp("x > 5", "5 < x"));
        assert!(gp("-x > -1", "x < 1"));
        assert!(!gp("x > 5", "x < 5"));
        assert!(gp("11", "x = 5+5+1 = 7 = 11"));
        assert!(gp("11", r"x \approx 11"));
        assert!(gp("x > 5", r"(5, \infty)"));
        // A gold interval does not become a relation (allow_set_relation_comp is off).
        assert!(!gp(r"(5, \infty)", "x > 5"));
    }

    #[test]
    fn tuples_sets_and_matrices_like_math_verify() {
        assert!(gp("{1,3}", "(1,3)"));
        assert!(gp("(1,3)", "{1,3}"));
        assert!(gp(r"\{3,1\}", "(1,3)"));
        assert!(!gp("(1,3)", "[1,3)"));
        assert!(gp(
            r"\begin{pmatrix}1 & 2 \\ 3 & 4\end{pmatrix}",
            r"\begin{bmatrix}1 & 2 \\ 3 & 4\end{bmatrix}"
        ));
        assert!(!gp(r"\begin{pmatrix}1 \\ 2\end{pmatrix}", "(1,2)"));
    }
}
