//! math-verify's answer extraction (`math_verify.parse` with its default
//! `[LatexExtractionConfig(), ExprExtractionConfig()]`), ported regex for regex.
//!
//! Patterns carry a priority; lower priorities are tried first:
//! - 0: "final answer is X. I hope";
//! - 50: "final answer ... is X", and `\boxed{}` (inside a math environment or bare);
//! - 100: "answer: ... X"; 200: "answer ... X";
//! - 300: any math environment (`$..$`, `$$..$$`, `\(..\)`, `\[..\]`, ` [..] `, a bare
//!   `\frac{a}{b}`), any plain expression with an operator, any number.
//!
//! Within one priority, the match that ends last is tried first (ties: the one starting
//! first); the first match that yields an answer wins. Up to six math environments joined by
//! "and", "or" or commas form one answer (a set). Numbers accept thousands separators (`1,000`,
//! `1 000`), a decimal comma (`1,22`), a currency sign before and a percent after.
//!
//! Only the last [`MAX_SCAN`] bytes (8 KiB) of a text are searched, which bounds the time on huge
//! inputs; completions that long are not graded as math-verify would (it scans everything).

use std::sync::OnceLock;

use fancy_regex::{Captures, Regex, RegexBuilder};

/// Bytes of a text (its tail) that extraction searches.
pub const MAX_SCAN: usize = 8 * 1024;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Kind {
    Latex,
    Expr,
}

struct Pattern {
    re: Regex,
    priority: u32,
    kind: Kind,
    /// A lower-case word the text must contain for the pattern to be tried (a cheap filter).
    needs: Option<&'static str>,
}

fn env_pattern(prefix: &str, boxed: bool) -> String {
    let percent = format!(r"(?P<{prefix}percent>(?:\\?%|[Pp]ercent|[Pp]ercentage|[Pp]ct))");
    let dd = r"(?:[^$]|\$(?!\$))";
    let db = r"(?:[^\\]|\\(?!\]))";
    let id = r"(?:\\[$]|[^\n$])";
    let ip = r"(?:[^\\\n]|\\(?!\)))";
    let ib = r"[^\n\]\[]";
    let c = |x: &str| {
        if boxed {
            format!(r"{x}*?\\boxed\{{{x}+?\}}{x}*?")
        } else {
            format!("{x}+?")
        }
    };
    let mut pats = vec![
        format!(
            r"(?<!\\)\$\$(?P<{prefix}latexDisplayDollar>{})(?<!\\)\$\$",
            c(dd)
        ),
        format!(
            r"(?<!\\)\\\[(?P<{prefix}latexDisplayBracket>{})(?<!\\)\\\]",
            c(db)
        ),
        format!(
            r"(?<![\\\d])\$(?P<{prefix}latexInlineDollar>{})(?<!\\)\$",
            c(id)
        ),
        format!(
            r"(?<!\\)\\\((?P<{prefix}latexInlineParenthesis>{})(?<!\\)\\\)",
            c(ip)
        ),
        format!(r"\s\[(?P<{prefix}latexInlineBracket>{})\]\s", c(ib)),
    ];
    if !boxed {
        let n = r"-?\d+(?:[.,]\d+)?";
        pats.push(format!(
            r"(?P<{prefix}latexFraction>-?\\frac\{{{n}\}}\{{{n}\}})"
        ));
    }
    format!(r"(?:(?:{})\s*{percent}?)", pats.join("|"))
}

fn latex_patterns() -> Vec<(String, u32, Option<&'static str>)> {
    let next: String = (1..=5)
        .map(|i| {
            format!(
                r"(?:\s*(?:,?and|,?or|,)\s*{})?",
                env_pattern(&format!("next{i}_"), false)
            )
        })
        .collect();
    let l = format!("(?:{}{next})", env_pattern("first_", false));
    let next_b: String = (1..=5)
        .map(|i| {
            format!(
                r"\s*(?:\s*(?:,?and|,?or|,)\s*{})?",
                env_pattern(&format!("next{i}_"), true)
            )
        })
        .collect();
    let lb = format!("{}{next_b}", env_pattern("first_", true));
    vec![
        (
            format!(r"(?i:final answer is):?\s*{l}\.?\s?I hope"),
            0,
            Some("final answer"),
        ),
        (
            format!(r"(?i:final answer.{{0,100}}?)\s+is:?\s*{l}"),
            50,
            Some("final answer"),
        ),
        (format!(r"(?i:answer):.{{0,50}}?{l}"), 100, Some("answer")),
        (format!(r"(?i:answer).{{0,50}}?{l}"), 200, Some("answer")),
        (l, 300, None),
        (lb, 50, Some("boxed")),
        (
            r"(?P<first_latexBoxed>\\boxed\{.+\})".to_string(),
            50,
            Some("boxed"),
        ),
    ]
}

fn expr_patterns() -> Vec<(String, u32, Option<&'static str>)> {
    let number = r"(?<!\d)(?:(?P<integer1>-?[1-9]\d{0,2}(?:[ ,]\d{3})+)(?P<decimal1>\.\d+)?|(?P<integer2>-?\d+)(?P<decimal2>[.,]\d+)|(?P<decimal3>\.\d+)|(?P<integer3>-?\d+))(?P<percent>\s*(?:%|[Pp]ercent|\s*[Pp]ercentage|\s*[Pp]ct))?";
    let ops = r"+\-*×/^()÷";
    let all = format!(r"[\d\.\s{ops}]");
    let expr = format!(r"(?P<expr>-?\(?-?\d{all}*[{ops}]{all}+\)?)");
    let currency = "$€£¥₹₽₪₩₫฿₡₢₣₤₥₦₧₨₭₮₯₰₱₲₳₴₵₶₷₸₺₻₼₾₿";
    let prefix = r"(?:^|\s|=)(?:\*\*)?";
    let suffix = r"(?:\*\*)?(?:\.|,|:|\s|\)|\$|$)";
    let expr_a = format!("(?:{prefix}{expr}{suffix})");
    let num_a = format!("(?:{prefix}[{currency}]?{number})");
    let e_or_n = format!("(?:{expr_a}|{num_a})");
    vec![
        (
            format!(r"(?i:final answer is):?\s*{e_or_n}\.?\s?I hope"),
            0,
            Some("final answer"),
        ),
        (
            format!(r"(?i:final answer.{{0,100}}?)\s+is:?{e_or_n}"),
            50,
            Some("final answer"),
        ),
        (
            format!(r"(?i:answer):(?:.{{0,100}}=\s*|.{{0,50}}?){e_or_n}(?!\s*=)"),
            100,
            Some("answer"),
        ),
        (
            format!(r"(?i:answer)(?:.{{0,100}}=\s*|.{{0,50}}?){e_or_n}(?!\s*=)"),
            200,
            Some("answer"),
        ),
        (expr_a, 300, None),
        (num_a, 300, None),
    ]
}

fn patterns() -> &'static [Pattern] {
    static P: OnceLock<Vec<Pattern>> = OnceLock::new();
    P.get_or_init(|| {
        let mut out = Vec::new();
        let build = |src: &str, dotall: bool| {
            let src = if dotall {
                format!("(?s){src}")
            } else {
                src.to_string()
            };
            RegexBuilder::new(&src)
                .backtrack_limit(200_000)
                .build()
                .unwrap_or_else(|e| panic!("math-verify pattern does not compile: {e}"))
        };
        for (src, priority, needs) in latex_patterns() {
            out.push(Pattern {
                re: build(&src, true),
                priority,
                kind: Kind::Latex,
                needs,
            });
        }
        for (src, priority, needs) in expr_patterns() {
            out.push(Pattern {
                re: build(&src, false),
                priority,
                kind: Kind::Expr,
                needs,
            });
        }
        // Stable: latex patterns stay before expr patterns of the same priority.
        out.sort_by_key(|p| p.priority);
        out
    })
}

/// One extracted answer, in the syntax [`super::equiv`] reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Extracted {
    /// The answer text (several environments are joined with `, ` into a list).
    pub answer: String,
    /// Whether it came from a number/expression match rather than LaTeX.
    pub plain: bool,
}

/// math-verify's extraction of the answer in `text`; `None` when nothing is found.
pub fn extract(text: &str) -> Option<Extracted> {
    let text = tail(text, MAX_SCAN);
    let lower = text.to_ascii_lowercase();
    let pats = patterns();
    let mut i = 0;
    while i < pats.len() {
        let prio = pats[i].priority;
        let mut j = i;
        let mut found: Vec<(usize, usize, usize, Captures)> = Vec::new();
        while j < pats.len() && pats[j].priority == prio {
            let p = &pats[j];
            let from = match p.needs {
                None => Some(0),
                Some(w) => phrase_window(&lower, w),
            };
            if let Some(from) = from {
                for c in p.re.captures_iter(&text[from..]) {
                    let Ok(c) = c else { break };
                    let m = c.get(0).map_or((0, 0), |m| (m.start(), m.end()));
                    found.push((from + m.1, from + m.0, j, c));
                }
            }
            j += 1;
        }
        // Rightmost end first, then leftmost start; stable for equal keys.
        found.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
        for (_, _, k, c) in &found {
            let got = match pats[*k].kind {
                Kind::Latex => from_latex(c),
                Kind::Expr => from_expr(c),
            };
            if got.is_some() {
                return got;
            }
        }
        i = j;
    }
    None
}

/// Where a phrase pattern (which starts with `word`) is searched from: the whole text, or, in a
/// text with more than 16 occurrences of the word, from its 16th-last occurrence (a bound on
/// adversarial inputs such as "Final Answer: " repeated; a match starting earlier would have to
/// end after every later one). `None` when the word does not occur.
fn phrase_window(lower: &str, word: &str) -> Option<usize> {
    let mut hits = lower.rmatch_indices(word).map(|(i, _)| i);
    let first = hits.next()?;
    Some(hits.nth(14).unwrap_or(0).min(first))
}

/// The last `max` bytes of `s`, cut at a character boundary.
fn tail(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut start = s.len() - max;
    while !s.is_char_boundary(start) {
        start += 1;
    }
    // Do not start inside a word or number (the cut end of `123456` is not the number 456).
    let b = s.as_bytes();
    while start < b.len()
        && b[start - 1].is_ascii_alphanumeric()
        && b[start].is_ascii_alphanumeric()
    {
        start += 1;
    }
    &s[start..]
}

fn from_expr(c: &Captures) -> Option<Extracted> {
    let get = |prefix: &str| {
        (1..=3)
            .filter_map(|i| c.name(&format!("{prefix}{i}")))
            .map(|m| m.as_str())
            .find(|s| !s.is_empty())
            .unwrap_or("")
    };
    let (integer, decimal) = (get("integer"), get("decimal"));
    if !integer.is_empty() || !decimal.is_empty() {
        let neg = integer.starts_with('-');
        let digits: String = integer.chars().filter(|c| c.is_ascii_digit()).collect();
        let digits = digits.trim_start_matches('0');
        let int = if digits.is_empty() { "0" } else { digits };
        let dec = decimal.replace(',', ".");
        let mut s = format!("{}{int}{dec}", if neg { "-" } else { "" });
        if c.name("percent").is_some_and(|m| !m.as_str().is_empty()) {
            s.push_str("\\%");
        }
        return Some(Extracted {
            answer: s,
            plain: true,
        });
    }
    let e = c.name("expr")?.as_str().replace('\n', " ");
    let e = e.replace('×', r"\times ").replace('÷', r"\div ");
    // math-verify keeps an expression only when sympy parses it (balanced parentheses).
    let mut depth = 0i32;
    for ch in e.chars() {
        match ch {
            '(' => depth += 1,
            ')' => {
                depth -= 1;
                if depth < 0 {
                    return None;
                }
            }
            _ => {}
        }
    }
    if depth != 0 || e.trim_end().ends_with(['+', '-', '*', '/', '^']) {
        return None;
    }
    // `7/5.` is 7/5.0 to sympy: a float, so write the number as a decimal.
    let mut out = String::with_capacity(e.len() + 2);
    let chars: Vec<char> = e.trim().chars().collect();
    for (k, &ch) in chars.iter().enumerate() {
        out.push(ch);
        let prev_digit = k > 0 && chars[k - 1].is_ascii_digit();
        let next_digit = chars.get(k + 1).is_some_and(char::is_ascii_digit);
        if ch == '.' && prev_digit && !next_digit {
            out.push('0');
        }
    }
    Some(Extracted {
        answer: out,
        plain: true,
    })
}

const ENV_NAMES: [&str; 7] = [
    "latexDisplayDollar",
    "latexDisplayBracket",
    "latexInlineDollar",
    "latexInlineParenthesis",
    "latexInlineBracket",
    "latexFraction",
    "latexBoxed",
];

fn from_latex(c: &Captures) -> Option<Extracted> {
    let mut parts: Vec<String> = Vec::new();
    for prefix in ["first_", "next1_", "next2_", "next3_", "next4_", "next5_"] {
        let Some((name, body)) = ENV_NAMES
            .iter()
            .find_map(|n| c.name(&format!("{prefix}{n}")).map(|m| (*n, m.as_str())))
        else {
            continue;
        };
        let mode = if name == "latexBoxed" {
            BoxMode::Last
        } else {
            BoxMode::All
        };
        let mut s = strip_units(&boxed_content(body, mode));
        if c.name(&format!("{prefix}percent"))
            .is_some_and(|m| !m.as_str().is_empty())
        {
            s.push_str("\\%");
        }
        parts.push(s);
    }
    let parts: Vec<String> = parts.into_iter().filter(|p| parses(p)).collect();
    match parts.len() {
        0 => None,
        1 => Some(Extracted {
            answer: parts.into_iter().next()?,
            plain: false,
        }),
        _ => Some(Extracted {
            answer: format!(r"\{{{}\}}", parts.join(", ")),
            plain: false,
        }),
    }
}

/// latex2sympy2_extended's unit clean-up (`NormalizationConfig(units=True)`): a trailing
/// `\text{..}`/`\mbox{..}` (with `^2`), then up to two trailing unit words from its list
/// after a digit, `}` or space (`5 cm`, `7 \ge t` loses its `t`), unless nothing would be left.
fn strip_units(s: &str) -> String {
    type Res = (regex::Regex, regex::Regex, regex::Regex, regex::Regex);
    static RE: OnceLock<Res> = OnceLock::new();
    let (wrap, sup, units, and_text) = RE.get_or_init(|| {
        let list = [
            "integerpoint",
            "feet",
            "sue",
            "digit",
            "pound",
            "meal",
            "edge",
            "student",
            "children ticket",
            "multiple",
            "east",
            "degree",
            "mph",
            "kmph",
            "ft",
            "m square",
            " m east",
            "sq m",
            "deg",
            "mile",
            "q .",
            "monkey",
            "prime",
            "ratio",
            "profit of rs",
            "rd",
            "o",
            "gm",
            "p . m",
            "lb",
            "tile",
            "per",
            "dm",
            "lt",
            "gain",
            "ab",
            "way",
            "west",
            "a .",
            "b .",
            "c .",
            "d .",
            "e .",
            "f .",
            "g .",
            "h .",
            "t",
            "h",
            "no change",
            "men",
            "soldier",
            "pie",
            "bc",
            "excess",
            "st",
            "inches",
            "noon",
            "cent",
            "by",
            "gal",
            "kmh",
            "c",
            "acre",
            "rise",
            "a . m",
            "th",
            "π r 2",
            "sq",
            "mark",
            "l",
            "toy",
            "coin",
            "sq . m",
            "gallon",
            "° f",
            "profit",
            "minw",
            "yr",
            "women",
            "am",
            "pm",
            "hr",
            "cu cm",
            "square",
            "v â € ™",
            "are",
            "rupee",
            "rounds",
            "cubic",
            "cc",
            "mtr",
            "s",
            "ohm",
            "number",
            "kmph",
            "day",
            "hour",
            "minute",
            "min",
            "second",
            "man",
            "woman",
            "sec",
            "cube",
            "mt",
            "sq inch",
            "mp",
            "∏ cm ³",
            "hectare",
            "more",
            "sec",
            "unit",
            "cu . m",
            "cm 2",
            "rs .",
            "rs",
            "kg",
            "g",
            "month",
            "km",
            "m",
            "cm",
            "mm",
            "apple",
            "liter",
            "loss",
            "yard",
            "pure",
            "year",
            "increase",
            "decrease",
            "d",
            "less",
            "Surface",
            "litre",
            "pi sq m",
            "s .",
            "metre",
            "meter",
            "inch",
        ];
        // Not escaped, as in latex2sympy2_extended (`q .` matches `q` and any character).
        let alts: Vec<String> = list.iter().map(|u| u.to_string()).collect();
        let build = |p: &str| regex::Regex::new(p).expect("unit pattern compiles");
        (
            build(r"\\math(?:rm|it|bf)|\\text(?:normal|bf|it|rm)"),
            build(r"\\(?:text|mbox)\{.*?\}(?:\^\d|\{\^\d\})?$"),
            build(&format!(
                r"(\d|\}}|\s)\s*(?:{})(?:s|es)?\s*$",
                alts.join("|")
            )),
            build(r",?\s*\\text\{\s*(?:and|or)\s*\}"),
        )
    });
    // `\text{ and }` is a comma before units are looked at (basic_latex comes first).
    let mut t = wrap
        .replace_all(s, r"\text")
        .replace(r"\$", "")
        .replace('$', "");
    if t.contains(r"\text") {
        t = and_text.replace_all(&t, ",").to_string();
    }
    let cut = sup.replace(&t, "").trim().to_string();
    if !cut.is_empty() {
        t = cut;
    }
    for _ in 0..2 {
        let cut = units.replace(&t, "$1").to_string();
        if cut.is_empty() || cut == t {
            break;
        }
        t = cut;
    }
    t
}

/// A cheap stand-in for "latex2sympy parses it": something left after clean-up, brackets
/// balanced, and no dangling operator.
fn parses(s: &str) -> bool {
    let t = super::normalize::normalize(s);
    if t.is_empty() {
        return false;
    }
    let mut depth = 0i32;
    for ch in t.chars() {
        match ch {
            '(' | '[' | '{' => depth += 1,
            ')' | ']' | '}' => depth -= 1,
            _ => {}
        }
    }
    depth == 0 && !t.ends_with(['+', '-', '*', '/', '^', '=', '<', '>', '\\'])
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum BoxMode {
    All,
    Last,
}

/// math-verify's `extract_boxed_content`: the boxes of `text` from the right, joined by `,`
/// (`Last`: only the last box and those just before it, separated by a few characters or by
/// "and"/"or"/","/";"); the text itself when it holds no box.
fn boxed_content(text: &str, mode: BoxMode) -> String {
    let mut results: Vec<String> = Vec::new();
    let mut current = text.len();
    let mut max_pos = text.len();
    let mut last_start: Option<usize> = None;
    let b = text.as_bytes();
    loop {
        let bi = text[..current].rfind(r"\boxed");
        let fi = text[..current].rfind(r"\fbox");
        let (start, cmd_end) = match (bi, fi) {
            (None, None) => break,
            (Some(x), Some(y)) if y > x => (y, y + 5),
            (Some(x), _) => (x, x + 6),
            (None, Some(y)) => (y, y + 5),
        };
        let mut k = cmd_end;
        while k < max_pos && b[k].is_ascii_whitespace() {
            k += 1;
        }
        if k >= max_pos {
            break;
        }
        if b[k] == b'{' {
            let mut depth = 1;
            let mut i = k;
            let mut close = None;
            while i + 1 < max_pos {
                i += 1;
                match b[i] {
                    b'{' => depth += 1,
                    b'}' => {
                        depth -= 1;
                        if depth == 0 {
                            close = Some(i);
                            break;
                        }
                    }
                    _ => {}
                }
            }
            let Some(end) = close else {
                if results.is_empty() {
                    results.push(text[k..].to_string());
                }
                break;
            };
            let content = text[k + 1..end].trim().to_string();
            if mode == BoxMode::Last {
                if let Some(ls) = last_start {
                    let between = &text[(end + 1).min(ls)..ls];
                    let prev = results.last().map_or("", String::as_str);
                    let sep = between.contains(',')
                        || between.contains(';')
                        || has_word(between, "and")
                        || has_word(between, "or");
                    let ok = between.chars().count() < 10
                        || (content != prev && between.chars().count() < 70 && sep);
                    if !ok {
                        break;
                    }
                }
            }
            if results.last() != Some(&content) {
                results.push(content);
            }
            last_start = Some(start);
            max_pos = start;
        } else {
            if results.is_empty() {
                results.push(text[k..].to_string());
            }
            break;
        }
        current = start;
    }
    if results.is_empty() {
        return text.to_string();
    }
    results.reverse();
    results.join(",")
}

fn has_word(s: &str, w: &str) -> bool {
    s.match_indices(w).any(|(i, _)| {
        let before = s[..i].chars().next_back();
        let after = s[i + w.len()..].chars().next();
        !before.is_some_and(char::is_alphanumeric) && !after.is_some_and(char::is_alphanumeric)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ex(s: &str) -> Option<String> {
        extract(s).map(|e| e.answer)
    }

    #[test]
    fn numbers_in_text() {
        assert_eq!(ex("So she has 5 eggs left.").as_deref(), Some("5"));
        assert_eq!(ex("Soucis : 2,74 $ a..").as_deref(), Some("2.74"));
        assert_eq!(ex("1 000").as_deref(), Some("1000"));
        assert_eq!(ex("which is 1,000.99m²").as_deref(), Some("1000.99"));
        assert_eq!(ex("$1,000.99").as_deref(), Some("1000.99"));
        assert_eq!(ex(".4").as_deref(), Some("0.4"));
        assert_eq!(ex("AZYUK2A"), None);
        assert_eq!(
            ex("Final Answer: The largest $n$ is 34.").as_deref(),
            Some("34")
        );
    }

    #[test]
    fn latex_environments() {
        assert_eq!(
            ex(r"we get $\frac{1}{2}$.").as_deref(),
            Some(r"\frac{1}{2}")
        );
        assert_eq!(ex("so\n\\[\nx^2\n\\]").as_deref(), Some("x^2"));
        assert_eq!(ex(r"\boxed{1}\boxed{2}").as_deref(), Some("1,2"));
        assert_eq!(
            ex(r"roots $\boxed{1}$ and $\boxed{2}$.").as_deref(),
            Some(r"\{1, 2\}")
        );
        assert_eq!(
            ex(r"first \boxed{3} then \boxed{4}").as_deref(),
            Some("3,4")
        );
        assert_eq!(
            ex(r"first \boxed{3}. After a long detour we find instead \boxed{4}").as_deref(),
            Some("4")
        );
    }

    #[test]
    fn huge_input_is_scanned_in_its_tail() {
        let s = format!("{}\\boxed{{7}}", "{".repeat(5_000_000));
        assert_eq!(ex(&s).as_deref(), Some("7"));
    }
}
