//! Mathematical equivalence of two final answers; see the module docs of [`super`] for the
//! rules and the time bound.

use num_rational::BigRational;
use num_traits::{FromPrimitive, Signed};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::eval::{eval, exact, free_vars, has_decimal, has_piecewise, C64};
use super::latex::{normalize, parse_expr, Expr};
use super::Fuel;

/// How `50\%` relates to an answer written without a percent sign.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PercentPolicy {
    /// `50\%` equals both `50` and `0.5` (the gold's `%` is often dropped or applied).
    #[default]
    Lenient,
    /// `50\%` equals `0.5` only.
    AsFraction,
    /// `50\%` equals `50` only (the sign is decoration).
    AsNumber,
}

/// Tunables of [`is_equiv`]. The defaults match MATH-style grading.
#[derive(Debug, Clone, PartialEq)]
pub struct EquivOptions {
    /// Relative tolerance when either side contains a decimal literal (`0.3333333` vs `1/3`).
    /// Exact answers (integers, fractions, radicals) are compared exactly or to 1e-9.
    pub rel_tol: f64,
    pub percent: PercentPolicy,
    /// Whether a bare comma list `1, 2` is a set (order-free). Tuples `(1, 2)` are always
    /// ordered; `\{1, 2\}` is always a set.
    pub unordered_lists: bool,
    /// Answers longer than this (bytes, after trimming) only match by exact string equality.
    pub max_len: usize,
    /// Work budget per pair (parser steps + evaluation nodes + comparisons); when it runs out
    /// the pair is judged not equivalent.
    pub fuel: u64,
    /// Random points per free-variable identity test (at least 3 must be defined).
    pub points: usize,
}

impl Default for EquivOptions {
    fn default() -> Self {
        Self {
            rel_tol: 1e-6,
            percent: PercentPolicy::Lenient,
            unordered_lists: true,
            max_len: 1000,
            fuel: DEFAULT_FUEL,
            points: 6,
        }
    }
}

/// Default work budget per pair; see the module docs for what a unit is.
pub const DEFAULT_FUEL: u64 = 400_000;
/// Largest list / set / matrix (elements) compared structurally.
pub const MAX_ITEMS: usize = 64;
/// Largest number of free variables in an identity test.
pub const MAX_VARS: usize = 8;

/// An answer's structure.
#[derive(Debug, Clone, PartialEq)]
pub enum Answer {
    Expr(Expr),
    /// `lhs op rhs` with `>`/`>=` already flipped to `<`/`<=`.
    Rel {
        lhs: Box<Answer>,
        op: RelOp,
        rhs: Box<Answer>,
    },
    /// Tuple, point or interval: brackets and order matter.
    Seq {
        open: u8,
        close: u8,
        items: Vec<Answer>,
    },
    /// `\{...\}` or a `\pm` expansion: order-free.
    Set(Vec<Answer>),
    /// A bare comma list.
    List(Vec<Answer>),
    /// Intervals joined by `\cup` (order-free).
    Union(Vec<Answer>),
    Matrix(Vec<Vec<Answer>>),
    /// Compared as lower-cased text without spaces.
    Text(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RelOp {
    Eq,
    Ne,
    Lt,
    Le,
}

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
    let ga = parse_answer(&gn, fuel, 0);
    let pa = parse_answer(&pn, fuel, 0);
    let cmp = Cmp { opts, fuel };
    cmp.answers(&ga, &pa)
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

fn text_canon(s: &str) -> String {
    let t: String = s
        .chars()
        .filter(|c| !c.is_whitespace())
        .flat_map(char::to_lowercase)
        .collect();
    match t.strip_prefix('(').and_then(|x| x.strip_suffix(')')) {
        Some(inner) if inner.chars().count() <= 2 => inner.to_string(),
        _ => t,
    }
}

/// A run of 3+ letters that is not a command or a function name marks prose (`Monday`,
/// `even`): such answers compare as text, never as a product of variables.
fn has_word(s: &str) -> bool {
    let bytes = s.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i].is_ascii_alphabetic() {
            let start = i;
            while i < bytes.len() && bytes[i].is_ascii_alphabetic() {
                i += 1;
            }
            let after_backslash = start > 0 && bytes[start - 1] == b'\\';
            let word = &s[start..i];
            const OK: &[&str] = &[
                "sqrt", "sin", "cos", "tan", "cot", "sec", "csc", "arcsin", "arccos", "arctan",
                "sinh", "cosh", "tanh", "log", "ln", "exp", "pi",
            ];
            if !after_backslash && word.len() >= 3 && !OK.contains(&word) {
                return true;
            }
        } else {
            i += 1;
        }
    }
    false
}

// ---------------------------------------------------------------------------------------------
// Structure
// ---------------------------------------------------------------------------------------------

/// Byte ranges split at a top-level separator (outside all brackets).
fn split_top<'a>(s: &'a str, sep: &str) -> Vec<&'a str> {
    let bytes = s.as_bytes();
    let mut depth: i32 = 0;
    let mut out = Vec::new();
    let mut last = 0;
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'(' | b'[' | b'{' => depth += 1,
            b')' | b']' | b'}' => depth -= 1,
            b'\\' if s[i..].starts_with(r"\begin") => depth += 1,
            b'\\' if s[i..].starts_with(r"\end") => depth -= 1,
            _ => {}
        }
        if depth == 0 && s.is_char_boundary(i) && s[i..].starts_with(sep) {
            let after_ok = !sep.starts_with('\\')
                || !s[i + sep.len()..].starts_with(|c: char| c.is_ascii_alphabetic());
            if after_ok {
                out.push(&s[last..i]);
                i += sep.len();
                last = i;
                continue;
            }
        }
        i += 1;
    }
    out.push(&s[last..]);
    out
}

/// `(open, inner, close)` when the whole string is one bracketed group.
fn whole_group(s: &str) -> Option<(u8, &str, u8)> {
    let bytes = s.as_bytes();
    let (open, close) = (*bytes.first()?, *bytes.last()?);
    if !matches!(open, b'(' | b'[') || !matches!(close, b')' | b']') || s.len() < 2 {
        return None;
    }
    let mut depth = 0i32;
    for (i, &c) in bytes.iter().enumerate() {
        match c {
            b'(' | b'[' | b'{' => depth += 1,
            b')' | b']' | b'}' => {
                depth -= 1;
                if depth == 0 && i + 1 != bytes.len() {
                    return None;
                }
            }
            _ => {}
        }
    }
    (depth == 0).then(|| (open, &s[1..s.len() - 1], close))
}

fn is_thousands(s: &str) -> bool {
    let t = s.trim_start_matches(['-', '+']);
    let (int, frac) = t.split_once('.').unwrap_or((t, "0"));
    let groups: Vec<&str> = int.split(',').collect();
    groups.len() > 1
        && (1..=3).contains(&groups[0].len())
        && groups
            .iter()
            .all(|g| !g.is_empty() && g.bytes().all(|c| c.is_ascii_digit()))
        && groups[1..].iter().all(|g| g.len() == 3)
        && !frac.is_empty()
        && frac.bytes().all(|c| c.is_ascii_digit())
}

fn split_relation(s: &str) -> Option<(&str, RelOp, &str, bool)> {
    // (lhs, op, rhs, flipped)
    let bytes = s.as_bytes();
    let mut depth = 0i32;
    for i in 0..bytes.len() {
        match bytes[i] {
            b'(' | b'[' | b'{' => depth += 1,
            b')' | b']' | b'}' => depth -= 1,
            _ => {}
        }
        if depth != 0 || !s.is_char_boundary(i) {
            continue;
        }
        let rest = &s[i..];
        let cmd = |name: &str| {
            rest.starts_with(name)
                && !rest[name.len()..].starts_with(|c: char| c.is_ascii_alphabetic())
        };
        let (op, len, flip) = if rest.starts_with("<=") {
            (RelOp::Le, 2, false)
        } else if rest.starts_with(">=") {
            (RelOp::Le, 2, true)
        } else if rest.starts_with("!=") {
            (RelOp::Ne, 2, false)
        } else if rest.starts_with('=') {
            (RelOp::Eq, 1, false)
        } else if rest.starts_with('<') {
            (RelOp::Lt, 1, false)
        } else if rest.starts_with('>') {
            (RelOp::Lt, 1, true)
        } else if cmd(r"\le") {
            (RelOp::Le, 3, false)
        } else if cmd(r"\ge") {
            (RelOp::Le, 3, true)
        } else if cmd(r"\ne") {
            (RelOp::Ne, 3, false)
        } else {
            continue;
        };
        return Some((&s[..i], op, &s[i + len..], flip));
    }
    None
}

fn parse_matrix(s: &str, fuel: &Fuel, depth: usize) -> Option<Answer> {
    let rest = s.strip_prefix(r"\begin{")?;
    let close = rest.find('}')?;
    let env = &rest[..close];
    if !matches!(
        env,
        "pmatrix" | "bmatrix" | "matrix" | "vmatrix" | "Bmatrix" | "smallmatrix" | "array"
    ) {
        return None;
    }
    let mut body = &rest[close + 1..];
    let end = format!(r"\end{{{env}}}");
    body = body.trim_end().strip_suffix(end.as_str())?;
    if env == "array" {
        let b = body.trim_start();
        if b.starts_with('{') {
            body = &b[b.find('}')? + 1..];
        }
    }
    let mut rows = Vec::new();
    for row in split_top(body, r"\\") {
        if row.trim().is_empty() {
            continue;
        }
        let cells: Vec<Answer> = split_top(row, "&")
            .iter()
            .map(|c| parse_answer(c.trim(), fuel, depth + 1))
            .collect();
        rows.push(cells);
    }
    let n = rows.first()?.len();
    (rows.iter().all(|r| r.len() == n) && rows.len() * n <= MAX_ITEMS * MAX_ITEMS)
        .then_some(Answer::Matrix(rows))
}

fn items(parts: &[&str], fuel: &Fuel, depth: usize) -> Vec<Answer> {
    parts
        .iter()
        .map(|p| p.trim())
        .filter(|p| !p.is_empty())
        .take(MAX_ITEMS + 1)
        .flat_map(|p| {
            let a = parse_answer(p, fuel, depth + 1);
            // `1 \pm \sqrt5` inside a list contributes both of its values.
            match a {
                Answer::Set(v) if !p.starts_with(r"\{") => v,
                other => vec![other],
            }
        })
        .collect()
}

/// Structure of a normalised answer string.
pub fn parse_answer(s: &str, fuel: &Fuel, depth: usize) -> Answer {
    let s = s.trim();
    if depth > 6 || !fuel.tick(1 + s.len() as u64 / 8) {
        return Answer::Text(text_canon(s));
    }
    if let Some(m) = parse_matrix(s, fuel, depth) {
        return m;
    }
    if is_thousands(s) {
        let plain: String = s.chars().filter(|&c| c != ',').collect();
        if let Some(e) = parse_expr(&plain, fuel) {
            return Answer::Expr(e);
        }
    }
    let parts = split_top(s, ",");
    if parts.len() > 1 {
        let v = items(&parts, fuel, depth);
        return if v.len() == 1 {
            v.into_iter().next().unwrap_or(Answer::Text(String::new()))
        } else {
            Answer::List(v)
        };
    }
    let parts = split_top(s, ";");
    if parts.len() > 1 {
        return Answer::List(items(&parts, fuel, depth));
    }
    if let Some((l, op, r, flip)) = split_relation(s) {
        let (l, r) = if flip { (r, l) } else { (l, r) };
        let lhs = parse_answer(l, fuel, depth + 1);
        let rhs = parse_answer(r, fuel, depth + 1);
        return Answer::Rel {
            lhs: Box::new(lhs),
            op,
            rhs: Box::new(rhs),
        };
    }
    let parts = split_top(s, r"\cup");
    if parts.len() > 1 {
        return Answer::Union(items(&parts, fuel, depth));
    }
    if let Some(inner) = s.strip_prefix(r"\{").and_then(|x| x.strip_suffix(r"\}")) {
        let parts = split_top(inner, ",");
        return Answer::Set(items(&parts, fuel, depth));
    }
    if let Some((open, inner, close)) = whole_group(s) {
        let parts = split_top(inner, ",");
        if parts.len() > 1 {
            return Answer::Seq {
                open,
                close,
                items: items(&parts, fuel, depth),
            };
        }
        if open != b'(' || close != b')' {
            // `[3]` or `(2]` with one element: an interval-like object, not a number.
            let inner_ans = parse_answer(inner, fuel, depth + 1);
            return Answer::Seq {
                open,
                close,
                items: vec![inner_ans],
            };
        }
    }
    if has_word(s) {
        return Answer::Text(text_canon(s));
    }
    match parse_expr(s, fuel) {
        Some(e) if contains_pm(&e) => {
            let mut out = Vec::new();
            expand_pm(&e, &mut out, 0);
            Answer::Set(out.into_iter().map(Answer::Expr).collect())
        }
        Some(e) => Answer::Expr(e),
        None => Answer::Text(text_canon(s)),
    }
}

fn contains_pm(e: &Expr) -> bool {
    match e {
        Expr::Pm(..) => true,
        Expr::Neg(a) | Expr::Func(_, a) | Expr::Percent(a) => contains_pm(a),
        Expr::Add(a, c) | Expr::Sub(a, c) | Expr::Mul(a, c) | Expr::Div(a, c) | Expr::Pow(a, c) => {
            contains_pm(a) || contains_pm(c)
        }
        _ => false,
    }
}

/// All sign choices of the first two `\pm` (more stay unexpanded and fail to evaluate).
fn expand_pm(e: &Expr, out: &mut Vec<Expr>, n: usize) {
    if n >= 2 || !contains_pm(e) {
        out.push(e.clone());
        return;
    }
    for plus in [true, false] {
        let r = replace_first_pm(e, plus).0;
        expand_pm(&r, out, n + 1);
    }
}

fn replace_first_pm(e: &Expr, plus: bool) -> (Expr, bool) {
    let bx = Box::new;
    match e {
        Expr::Pm(a, c) => {
            let r = if plus {
                Expr::Add(a.clone(), c.clone())
            } else {
                Expr::Sub(a.clone(), c.clone())
            };
            (r, true)
        }
        Expr::Neg(a) => {
            let (x, d) = replace_first_pm(a, plus);
            (Expr::Neg(bx(x)), d)
        }
        Expr::Func(f, a) => {
            let (x, d) = replace_first_pm(a, plus);
            (Expr::Func(*f, bx(x)), d)
        }
        Expr::Percent(a) => {
            let (x, d) = replace_first_pm(a, plus);
            (Expr::Percent(bx(x)), d)
        }
        Expr::Add(a, c) | Expr::Sub(a, c) | Expr::Mul(a, c) | Expr::Div(a, c) | Expr::Pow(a, c) => {
            let (x, d) = replace_first_pm(a, plus);
            let (y, d2) = if d {
                ((**c).clone(), true)
            } else {
                replace_first_pm(c, plus)
            };
            let (x, y) = (bx(x), bx(y));
            let r = match e {
                Expr::Add(..) => Expr::Add(x, y),
                Expr::Sub(..) => Expr::Sub(x, y),
                Expr::Mul(..) => Expr::Mul(x, y),
                Expr::Div(..) => Expr::Div(x, y),
                _ => Expr::Pow(x, y),
            };
            (r, d2)
        }
        _ => (e.clone(), false),
    }
}

// ---------------------------------------------------------------------------------------------
// Comparison
// ---------------------------------------------------------------------------------------------

struct Cmp<'a> {
    opts: &'a EquivOptions,
    fuel: &'a Fuel,
}

/// A left-hand side that names the answer (`x`, `y`, `f(x)`, `(x, y)`), so `x = 3` can equal `3`.
fn is_name(a: &Answer) -> bool {
    fn expr_name(e: &Expr) -> bool {
        match e {
            Expr::Var(_) => true,
            Expr::Mul(a, b) => expr_name(a) && expr_name(b),
            _ => false,
        }
    }
    match a {
        Answer::Expr(e) => expr_name(e),
        Answer::Seq {
            open: b'(',
            close: b')',
            items,
        } => items.iter().all(is_name),
        _ => false,
    }
}

/// The interval an inequality in one variable describes, if it is one.
fn as_interval(a: &Answer) -> Option<Answer> {
    use super::latex::Const;
    let Answer::Rel { lhs, op, rhs } = a else {
        return None;
    };
    let inf = || Answer::Expr(Expr::Const(Const::Inf));
    let neg_inf = || Answer::Expr(Expr::Neg(Box::new(Expr::Const(Const::Inf))));
    let end = |op: RelOp, open: bool| match (op, open) {
        (RelOp::Lt, true) => Some(b'('),
        (RelOp::Le, true) => Some(b'['),
        (RelOp::Lt, false) => Some(b')'),
        (RelOp::Le, false) => Some(b']'),
        _ => None,
    };
    let value = |x: &Answer| matches!(x, Answer::Expr(_)) && !is_name(x);
    let seq = |open, close, lo: Answer, hi: Answer| Answer::Seq {
        open,
        close,
        items: vec![lo, hi],
    };
    match (&**lhs, &**rhs) {
        // a op1 x op2 b, parsed as either (a op1 (x op2 b)) or ((a op1 x) op2 b).
        (
            lo,
            Answer::Rel {
                lhs: x,
                op: op2,
                rhs: hi,
            },
        ) if is_name(x) && value(lo) && value(hi) => Some(seq(
            end(*op, true)?,
            end(*op2, false)?,
            lo.clone(),
            (**hi).clone(),
        )),
        (
            Answer::Rel {
                lhs: lo,
                op: op1,
                rhs: x,
            },
            hi,
        ) if is_name(x) && value(lo) && value(hi) => Some(seq(
            end(*op1, true)?,
            end(*op, false)?,
            (**lo).clone(),
            hi.clone(),
        )),
        (x, hi) if is_name(x) && value(hi) => {
            Some(seq(b'(', end(*op, false)?, neg_inf(), hi.clone()))
        }
        (lo, x) if is_name(x) && value(lo) => Some(seq(end(*op, true)?, b')', lo.clone(), inf())),
        _ => None,
    }
}

impl Cmp<'_> {
    fn answers(&self, a: &Answer, b: &Answer) -> bool {
        if !self.fuel.tick(1) {
            return false;
        }
        use Answer as A;
        match (a, b) {
            (A::Expr(x), A::Expr(y)) => self.expr_pair(x, y),
            (A::Text(x), A::Text(y)) => x == y,
            (
                A::Seq {
                    open: o1,
                    close: c1,
                    items: i1,
                },
                A::Seq {
                    open: o2,
                    close: c2,
                    items: i2,
                },
            ) => o1 == o2 && c1 == c2 && self.ordered(i1, i2),
            (A::Set(x) | A::List(x), A::Set(y)) | (A::Set(x), A::List(y)) => self.unordered(x, y),
            (A::List(x), A::List(y)) => {
                if self.opts.unordered_lists {
                    self.unordered(x, y)
                } else {
                    self.ordered(x, y)
                }
            }
            (A::Union(x), A::Union(y)) => self.unordered(x, y),
            (A::Matrix(x), A::Matrix(y)) => {
                x.len() == y.len() && x.iter().zip(y).all(|(r, s)| self.ordered(r, s))
            }
            (
                A::Matrix(m),
                A::Seq {
                    open: b'(',
                    close: b')',
                    items,
                },
            )
            | (
                A::Seq {
                    open: b'(',
                    close: b')',
                    items,
                },
                A::Matrix(m),
            ) => {
                let flat: Vec<Answer> = if m.len() == 1 {
                    m[0].clone()
                } else if m.iter().all(|r| r.len() == 1) {
                    m.iter().map(|r| r[0].clone()).collect()
                } else {
                    return false;
                };
                self.ordered(&flat, items)
            }
            (
                A::List(x),
                A::Seq {
                    open: b'(',
                    close: b')',
                    items,
                },
            )
            | (
                A::Seq {
                    open: b'(',
                    close: b')',
                    items,
                },
                A::List(x),
            ) => self.ordered(x, items),
            (A::Set(x), other) | (other, A::Set(x)) if x.len() == 1 => self.answers(&x[0], other),
            (
                A::Rel {
                    lhs: l1,
                    op: o1,
                    rhs: r1,
                },
                A::Rel {
                    lhs: l2,
                    op: o2,
                    rhs: r2,
                },
            ) => {
                self.relations((l1, *o1, r1), (l2, *o2, r2))
                    || match (as_interval(a), as_interval(b)) {
                        (Some(x), Some(y)) => self.answers(&x, &y),
                        _ => false,
                    }
            }
            (
                A::Rel {
                    lhs,
                    op: RelOp::Eq,
                    rhs,
                },
                other,
            )
            | (
                other,
                A::Rel {
                    lhs,
                    op: RelOp::Eq,
                    rhs,
                },
            ) if is_name(lhs) => self.answers(rhs, other),
            // `x > 3` is the interval `(3, \infty)`; `-2 \le x \le 7` is `[-2, 7]`.
            (A::Rel { .. }, A::Seq { .. } | A::Union(_)) => {
                as_interval(a).is_some_and(|i| self.answers(&i, b))
            }
            (A::Seq { .. } | A::Union(_), A::Rel { .. }) => {
                as_interval(b).is_some_and(|i| self.answers(a, &i))
            }
            _ => false,
        }
    }

    fn relations(&self, a: (&Answer, RelOp, &Answer), b: (&Answer, RelOp, &Answer)) -> bool {
        let ((l1, o1, r1), (l2, o2, r2)) = (a, b);
        if o1 != o2 {
            return false;
        }
        if self.answers(l1, l2) && self.answers(r1, r2) {
            return true;
        }
        if matches!(o1, RelOp::Eq | RelOp::Ne) && self.answers(l1, r2) && self.answers(r1, l2) {
            return true;
        }
        // General equations: lhs - rhs proportional (`y = 2x + 3` vs `2x - y + 3 = 0`).
        if o1 == RelOp::Eq {
            if let (Answer::Expr(a1), Answer::Expr(b1), Answer::Expr(a2), Answer::Expr(b2)) =
                (l1, r1, l2, r2)
            {
                let d1 = Expr::Sub(Box::new(a1.clone()), Box::new(b1.clone()));
                let d2 = Expr::Sub(Box::new(a2.clone()), Box::new(b2.clone()));
                return self.proportional(&d1, &d2);
            }
        }
        false
    }

    fn ordered(&self, x: &[Answer], y: &[Answer]) -> bool {
        x.len() == y.len()
            && x.len() <= MAX_ITEMS
            && x.iter().zip(y).all(|(a, b)| self.answers(a, b))
    }

    /// A perfect matching under equivalence (Kuhn's augmenting paths), so the result does not
    /// depend on the order of either side.
    fn unordered(&self, x: &[Answer], y: &[Answer]) -> bool {
        let n = x.len();
        if n != y.len() || n > MAX_ITEMS {
            return false;
        }
        let mut memo: Vec<Option<bool>> = vec![None; n * n];
        let mut matched: Vec<Option<usize>> = vec![None; n];
        for i in 0..n {
            let mut seen = vec![false; n];
            if !self.augment(i, x, y, &mut memo, &mut matched, &mut seen) {
                return false;
            }
        }
        true
    }

    fn augment(
        &self,
        i: usize,
        x: &[Answer],
        y: &[Answer],
        memo: &mut [Option<bool>],
        matched: &mut [Option<usize>],
        seen: &mut [bool],
    ) -> bool {
        let n = y.len();
        for j in 0..n {
            if seen[j] {
                continue;
            }
            let ok = match memo[i * n + j] {
                Some(v) => v,
                None => {
                    let v = self.answers(&x[i], &y[j]);
                    memo[i * n + j] = Some(v);
                    v
                }
            };
            if !ok {
                continue;
            }
            seen[j] = true;
            let free = match matched[j] {
                None => true,
                Some(k) => self.augment(k, x, y, memo, matched, seen),
            };
            if free {
                matched[j] = Some(i);
                return true;
            }
        }
        false
    }

    fn expr_pair(&self, a: &Expr, b: &Expr) -> bool {
        let hundred = || Expr::Num(BigRational::from_integer(100.into()));
        let frac = |x: &Expr| Expr::Div(Box::new(x.clone()), Box::new(hundred()));
        match (a, b) {
            (Expr::Percent(x), Expr::Percent(y)) => self.values(x, y),
            (Expr::Percent(x), other) | (other, Expr::Percent(x)) => match self.opts.percent {
                PercentPolicy::Lenient => self.values(&frac(x), other) || self.values(x, other),
                PercentPolicy::AsFraction => self.values(&frac(x), other),
                PercentPolicy::AsNumber => self.values(x, other),
            },
            _ => self.values(a, b),
        }
    }

    /// Numeric equality: exact rationals, then complex floats, then random-point identity.
    fn values(&self, a: &Expr, b: &Expr) -> bool {
        if a == b {
            return true;
        }
        let inexact = has_decimal(a) || has_decimal(b);
        let fuel = self.fuel;
        if let (Some(x), Some(y)) = (exact(a, fuel), exact(b, fuel)) {
            if x == y {
                return true;
            }
            if !inexact {
                return false;
            }
            let tol = BigRational::from_f64(self.opts.rel_tol).unwrap_or_default();
            let scale = if x.abs() > y.abs() { x.abs() } else { y.abs() };
            return (x - y).abs() <= tol * scale;
        }
        let mut vars = Vec::new();
        free_vars(a, &mut vars);
        free_vars(b, &mut vars);
        vars.sort();
        let tol = if inexact { self.opts.rel_tol } else { 1e-9 };
        if vars.is_empty() {
            return match (eval(a, &[], fuel), eval(b, &[], fuel)) {
                (Some(x), Some(y)) => close(x, y, tol, 1e-12),
                _ => false,
            };
        }
        if vars.len() > MAX_VARS {
            return false;
        }
        let mut valid = 0;
        let signed = has_piecewise(a) || has_piecewise(b);
        for env in self.points(&vars, signed) {
            match (eval(a, &env, fuel), eval(b, &env, fuel)) {
                (Some(x), Some(y)) if x.is_finite() && y.is_finite() => {
                    if !close(x, y, tol.max(1e-8), 1e-10) {
                        return false;
                    }
                    valid += 1;
                }
                _ => {}
            }
            if fuel.exhausted() {
                return false;
            }
        }
        valid >= 3.min(self.opts.points)
    }

    /// `d1 = c * d2` for one nonzero constant `c` at all sample points.
    fn proportional(&self, d1: &Expr, d2: &Expr) -> bool {
        let mut vars = Vec::new();
        free_vars(d1, &mut vars);
        free_vars(d2, &mut vars);
        vars.sort();
        if vars.is_empty() || vars.len() > MAX_VARS {
            return false;
        }
        let mut ratio: Option<C64> = None;
        let mut valid = 0;
        for env in self.points(&vars, false) {
            let (Some(x), Some(y)) = (eval(d1, &env, self.fuel), eval(d2, &env, self.fuel)) else {
                continue;
            };
            if !x.is_finite() || !y.is_finite() || y.abs() < 1e-9 || x.abs() < 1e-9 {
                continue;
            }
            let r = C64::new(
                (x.re * y.re + x.im * y.im) / (y.abs() * y.abs()),
                (x.im * y.re - x.re * y.im) / (y.abs() * y.abs()),
            );
            match ratio {
                None => ratio = Some(r),
                Some(r0) if !close(r0, r, 1e-8, 1e-12) => return false,
                _ => {}
            }
            valid += 1;
        }
        valid >= 3
    }

    /// Deterministic sample points in [0.5, 2.5] (same for both sides: variables are sorted);
    /// `signed` also draws negative values (for `|x|`, floor and ceil).
    fn points(&self, vars: &[String], signed: bool) -> Vec<Vec<(String, C64)>> {
        let mut rng = ChaCha8Rng::seed_from_u64(0x6772_706f);
        (0..self.opts.points.max(3))
            .map(|_| {
                vars.iter()
                    .map(|v| {
                        let x: f64 = rng.random_range(0.5..2.5);
                        let neg = signed && rng.random_bool(0.5);
                        (v.clone(), C64::real(if neg { -x } else { x }))
                    })
                    .collect()
            })
            .collect()
    }
}

fn close(x: C64, y: C64, rel: f64, abs: f64) -> bool {
    if !x.is_finite() || !y.is_finite() {
        // ±∞ equals itself (interval ends); NaN equals nothing.
        return x.re == y.re && x.im == y.im && !x.re.is_nan();
    }
    let d = C64::new(x.re - y.re, x.im - y.im).abs();
    d <= rel * x.abs().max(y.abs()) || d <= abs
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
}
