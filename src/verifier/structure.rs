//! The structure of a normalised answer: relations, tuples and intervals, sets, lists,
//! unions, matrices, expressions, or text ([`parse_answer`]).

use super::options::MAX_ITEMS;
use super::parse::{parse_expr, Expr};
use super::text::{has_word, text_canon};
use super::Fuel;

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

// ---------------------------------------------------------------------------------------------
// Structure
// ---------------------------------------------------------------------------------------------

/// Byte ranges split at a top-level separator (outside all brackets).
/// Whether the `{` at the start of `s` closes at its very end.
fn whole_braces(s: &str) -> bool {
    let mut depth = 0i32;
    for (i, c) in s.bytes().enumerate() {
        match c {
            b'{' => depth += 1,
            b'}' => {
                depth -= 1;
                if depth == 0 && i + 1 != s.len() {
                    return false;
                }
            }
            _ => {}
        }
    }
    depth == 0
}

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
    // `\left[\begin{array}..\end{array}\right]` (brackets around the environment).
    let s = match (s.as_bytes().first(), s.as_bytes().last()) {
        (Some(b'[' | b'('), Some(b']' | b')')) if s[1..].trim_start().starts_with(r"\begin{") => {
            s[1..s.len() - 1].trim()
        }
        _ => s,
    };
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

/// The cells of a matrix answer as expressions, if they all are.
fn cells(a: Answer) -> Option<Vec<Vec<Expr>>> {
    let Answer::Matrix(rows) = a else {
        return None;
    };
    rows.into_iter()
        .map(|r| {
            r.into_iter()
                .map(|c| match c {
                    Answer::Expr(e) => Some(e),
                    _ => None,
                })
                .collect()
        })
        .collect()
}

/// A sum of matrices (`A + B`) or a product of two (`A B`, `A \cdot B`), evaluated cell by
/// cell, as sympy does with matrix expressions.
fn matrix_arithmetic(s: &str, fuel: &Fuel, depth: usize) -> Option<Answer> {
    let terms = split_top(s, "+");
    let bx = Box::new;
    let wrap = |m: Vec<Vec<Expr>>| {
        Answer::Matrix(
            m.into_iter()
                .map(|r| r.into_iter().map(Answer::Expr).collect())
                .collect(),
        )
    };
    if terms.len() > 1 {
        let ms: Vec<Vec<Vec<Expr>>> = terms
            .iter()
            .map(|t| parse_matrix(t.trim(), fuel, depth).and_then(cells))
            .collect::<Option<_>>()?;
        let (r, c) = (ms[0].len(), ms[0].first()?.len());
        if ms
            .iter()
            .any(|m| m.len() != r || m.iter().any(|row| row.len() != c))
        {
            return None;
        }
        let sum = (0..r)
            .map(|i| {
                (0..c)
                    .map(|j| {
                        ms[1..].iter().fold(ms[0][i][j].clone(), |acc, m| {
                            Expr::Add(bx(acc), bx(m[i][j].clone()))
                        })
                    })
                    .collect()
            })
            .collect();
        return Some(wrap(sum));
    }
    // `A B` / `A \cdot B`: split after the first `\end{..}`.
    let end = s.find(r"\end{")?;
    let close = end + s[end..].find('}')? + 1;
    let (left, right) = (s[..close].trim(), s[close..].trim());
    let right = right
        .strip_prefix(r"\cdot")
        .or_else(|| right.strip_prefix(r"\times"))
        .unwrap_or(right)
        .trim();
    let a = parse_matrix(left, fuel, depth).and_then(cells)?;
    let b = parse_matrix(right, fuel, depth).and_then(cells)?;
    let n = b.len();
    if a.iter().any(|row| row.len() != n) || n == 0 || a.len() * n * b[0].len() > MAX_ITEMS * 8 {
        return None;
    }
    let prod = a
        .iter()
        .map(|row| {
            (0..b[0].len())
                .map(|j| {
                    (1..n).fold(
                        Expr::Mul(bx(row[0].clone()), bx(b[0][j].clone())),
                        |acc, k| {
                            Expr::Add(
                                bx(acc),
                                bx(Expr::Mul(bx(row[k].clone()), bx(b[k][j].clone()))),
                            )
                        },
                    )
                })
                .collect()
        })
        .collect();
    Some(wrap(prod))
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
    if s.matches(r"\begin{").count() > 1 {
        if let Some(m) = matrix_arithmetic(s, fuel, depth) {
            return m;
        }
    }
    if is_thousands(s) {
        let plain: String = s.chars().filter(|&c| c != ',').collect();
        if let Some(e) = parse_expr(&plain, fuel) {
            return Answer::Expr(e);
        }
    }
    // `p=5,q=2;p=7,q=2`: semicolons separate the elements, commas the parts of one element.
    let parts = split_top(s, ";");
    if parts.len() > 1 && parts.iter().any(|p| split_top(p, ",").len() > 1) {
        let v = parts
            .iter()
            .map(|p| p.trim())
            .filter(|p| !p.is_empty())
            .take(MAX_ITEMS + 1)
            .map(|p| {
                let inner = split_top(p, ",");
                if inner.len() > 1 {
                    Answer::Seq {
                        open: b'(',
                        close: b')',
                        items: items(&inner, fuel, depth),
                    }
                } else {
                    parse_answer(p, fuel, depth + 1)
                }
            })
            .collect();
        return Answer::List(v);
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
    // `x \approx 11` is 11 when the left side is a name; `22/7 \approx 3.14` is 22/7.
    let parts = split_top(s, r"\approx");
    if parts.len() > 1 {
        let lhs = parse_answer(parts[0], fuel, depth + 1);
        return if is_name(&lhs) {
            parse_answer(parts[parts.len() - 1], fuel, depth + 1)
        } else {
            lhs
        };
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
    // `{1,3}` in LaTeX is a set too (the braces of a group do not print).
    if let Some(inner) = s.strip_prefix('{').and_then(|x| x.strip_suffix('}')) {
        let parts = split_top(inner, ",");
        if parts.len() > 1 && whole_braces(s) {
            return Answer::Set(items(&parts, fuel, depth));
        }
    }
    if let Some((open, inner, close)) = whole_group(s) {
        let mut parts = split_top(inner, ",");
        if parts.len() == 1 && open == b'(' {
            // `(0;-2;6)`: a tuple written with semicolons.
            parts = split_top(inner, ";");
        }
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

/// A left-hand side that names the answer (`x`, `y`, `f(x)`, `(x, y)`), so `x = 3` can equal `3`.
pub(crate) fn is_name(a: &Answer) -> bool {
    fn expr_name(e: &Expr) -> bool {
        // sympy's `is_expr_of_only_symbols`: `x`, `AB`, `A/B` (`A:B`), `|AB|`, `f(x)`.
        match e {
            Expr::Var(_) => true,
            Expr::Mul(a, b) | Expr::Div(a, b) => expr_name(a) && expr_name(b),
            Expr::Func(super::parse::Fun::Abs, a) => expr_name(a),
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
