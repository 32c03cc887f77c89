//! LaTeX answer clean-up: presentation noise removed before parsing.
//!
//! [`normalize`] removes spacing commands, `\left`/`\right`, text and font wrappers, degree
//! signs, dollar signs, units after a number and trailing periods; the result is what
//! [`super::parse::parse_expr`] and the structural comparer see.

/// Font / text wrappers whose argument is kept (or dropped when it is a unit after a number).
const WRAPPERS: &[&str] = &[
    "text",
    "textbf",
    "textit",
    "textrm",
    "textnormal",
    "textsf",
    "texttt",
    "mathrm",
    "mathbf",
    "mathit",
    "mathsf",
    "mathtt",
    "mbox",
    "hbox",
    "boldsymbol",
    "bm",
    "mathbb",
    "mathcal",
];

/// Unit words removed after a number (`5 cm`, `3 \text{ cents}`); single letters only when the
/// rest is a plain number.
const UNITS: &[&str] = &[
    "cm",
    "mm",
    "km",
    "m",
    "meter",
    "meters",
    "metre",
    "metres",
    "centimeter",
    "centimeters",
    "kilometer",
    "kilometers",
    "millimeter",
    "millimeters",
    "in",
    "inch",
    "inches",
    "ft",
    "feet",
    "foot",
    "yd",
    "yard",
    "yards",
    "mile",
    "miles",
    "mi",
    "g",
    "kg",
    "mg",
    "gram",
    "grams",
    "kilogram",
    "kilograms",
    "lb",
    "lbs",
    "pound",
    "pounds",
    "oz",
    "ounce",
    "ounces",
    "s",
    "sec",
    "secs",
    "second",
    "seconds",
    "min",
    "mins",
    "minute",
    "minutes",
    "h",
    "hr",
    "hrs",
    "hour",
    "hours",
    "day",
    "days",
    "week",
    "weeks",
    "month",
    "months",
    "year",
    "years",
    "degree",
    "degrees",
    "deg",
    "cent",
    "cents",
    "dollar",
    "dollars",
    "unit",
    "units",
    "sq",
    "square",
    "cubic",
    "mph",
    "kph",
    "l",
    "ml",
    "liter",
    "liters",
    "litre",
    "litres",
    "gallon",
    "gallons",
    "cup",
    "cups",
    "point",
    "points",
    "people",
    "persons",
    "students",
    "times",
    "ways",
    "eggs",
    "apples",
    "items",
    "pages",
    "hours.",
    "radians",
    "rad",
    "kj",
    "j",
    "ev",
    "mol",
    "mole",
    "moles",
    "pm",
    "nm",
    "am",
    "k",
];

/// Words after a number that are maths, not units.
const NOT_UNITS: &[&str] = &[
    "pi", "e", "i", "sqrt", "sin", "cos", "tan", "cot", "sec", "csc", "log", "ln", "exp", "inf",
    "infinity", "or", "and", "to", "x",
];

fn is_unit_word(w: &str) -> bool {
    let w = w.trim_matches(|c: char| c == '.' || c == '~' || c.is_whitespace());
    let lw = w.to_ascii_lowercase();
    UNITS.contains(&lw.as_str())
}

/// Index just past the `}` matching the `{` at `open` (byte index), respecting `\{`/`\}`.
fn group_end(s: &str, open: usize) -> Option<usize> {
    let bytes = s.as_bytes();
    let mut depth = 0usize;
    let mut i = open;
    while i < bytes.len() {
        match bytes[i] {
            b'\\' => i += 1,
            b'{' => depth += 1,
            b'}' => {
                depth = depth.checked_sub(1)?;
                if depth == 0 {
                    return Some(i + 1);
                }
            }
            _ => {}
        }
        i += 1;
    }
    None
}

fn ends_numberish(s: &str) -> bool {
    let t = s.trim_end();
    t.ends_with(|c: char| c.is_ascii_digit() || c == '}' || c == ')' || c == '.' || c == '%')
}

fn is_plain_number(s: &str) -> bool {
    let t = s.trim().trim_start_matches(['-', '+']);
    !t.is_empty()
        && t.chars()
            .all(|c| c.is_ascii_digit() || c == '.' || c == ',')
        && t.chars().any(|c| c.is_ascii_digit())
}

/// Replace a command only where it is not the prefix of a longer command name.
fn replace_cmd(s: &str, cmd: &str, with: &str) -> String {
    if !s.contains(cmd) {
        return s.to_string();
    }
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find(cmd) {
        let after = &rest[i + cmd.len()..];
        out.push_str(&rest[..i]);
        if after.starts_with(|c: char| c.is_ascii_alphabetic()) {
            out.push_str(cmd);
        } else {
            out.push_str(with);
        }
        rest = after;
    }
    out.push_str(rest);
    out
}

fn strip_math_delims(mut s: &str) -> &str {
    loop {
        let t = s.trim();
        let inner = [("$$", "$$"), ("$", "$"), (r"\(", r"\)"), (r"\[", r"\]")]
            .iter()
            .find_map(|(o, c)| {
                (t.len() >= o.len() + c.len() && t.starts_with(o) && t.ends_with(c))
                    .then(|| &t[o.len()..t.len() - c.len()])
            });
        match inner {
            Some(i) if i.len() < t.len() => s = i,
            _ => return t,
        }
    }
}

/// Remove presentation noise from a LaTeX answer; the result is what [`parse_expr`] and the
/// structural comparer see.
pub fn normalize(input: &str) -> String {
    let mut s = strip_math_delims(input).to_string();
    // Unicode forms of common symbols.
    for (from, to) in [
        ('\u{2212}', "-"),
        ('\u{2013}', "-"),
        ('\u{00d7}', r"\times "),
        ('\u{00b7}', r"\cdot "),
        ('\u{22c5}', r"\cdot "),
        ('\u{03c0}', r"\pi "),
        ('\u{221e}', r"\infty "),
        ('\u{221a}', r"\sqrt"),
        ('\u{00b0}', ""),
        ('\u{2264}', r"\le "),
        ('\u{2265}', r"\ge "),
        ('\u{2260}', r"\ne "),
        ('\u{222a}', r"\cup "),
        ('\u{00b1}', r"\pm "),
        ('\u{00a0}', " "),
    ] {
        if s.contains(from) {
            s = s.replace(from, to);
        }
    }
    // `\\frac` (a doubled backslash from an escaped string) is `\frac`, outside matrices.
    if s.contains(r"\\") && !s.contains("matrix") && !s.contains("array") {
        s = undouble_commands(&s);
    }
    // Protect row breaks `\\` from the one-symbol spacing commands below.
    let s_protected = s.replace(r"\\", "\u{1}");
    s = s_protected;
    // `14{,}916`: a comma in braces (so that TeX prints no space after it).
    if s.contains("{,}") {
        s = s.replace("{,}", ",");
    }
    // Thousands separators written `10,\!080`.
    while let Some(i) = s.find(r",\!") {
        let rest = s[i + 3..].trim_start().to_string();
        s.truncate(i + 1);
        s.push_str(&rest);
    }
    for (from, to) in [
        (r"\!", ""),
        (r"\,", " "),
        (r"\;", " "),
        (r"\:", " "),
        (r"\ ", " "),
        ("~", " "),
        (r"\%", "%"),
        (r"\$", ""),
        ("$", ""),
        (r"^{\circ}", ""),
        (r"^\circ", ""),
        (r"{}^{\circ}", ""),
        (r"\lbrace", r"\{"),
        (r"\rbrace", r"\}"),
        (r"\langle", "("),
        (r"\rangle", ")"),
        (r"\lvert", "|"),
        (r"\rvert", "|"),
        (r"\vert", "|"),
        (r"\lt", "<"),
        (r"\gt", ">"),
        ("\n", " "),
    ] {
        if s.contains(from) {
            s = s.replace(from, to);
        }
    }
    for (cmd, to) in [
        (r"\dfrac", r"\frac"),
        (r"\tfrac", r"\frac"),
        (r"\cfrac", r"\frac"),
        (r"\dbinom", r"\binom"),
        (r"\tbinom", r"\binom"),
        (r"\left", ""),
        (r"\right", ""),
        (r"\bigl", ""),
        (r"\bigr", ""),
        (r"\Bigl", ""),
        (r"\Bigr", ""),
        (r"\big", ""),
        (r"\Big", ""),
        (r"\displaystyle", ""),
        (r"\circ", ""),
        (r"\degree", ""),
        (r"\qquad", " "),
        (r"\quad", " "),
        (r"\leqslant", r"\le"),
        (r"\geqslant", r"\ge"),
        (r"\leq", r"\le"),
        (r"\geq", r"\ge"),
        (r"\neq", r"\ne"),
        (r"\to", r"\rightarrow"),
        (r"\operatorname", ""),
        (r"\emptyset", r"\{\}"),
        (r"\varnothing", r"\{\}"),
    ] {
        s = replace_cmd(&s, cmd, to);
    }
    s = s.replace('\u{1}', r" \\ ");
    s = unwrap_text(&s);
    // `1, 2, and 3` / `1 and 2`: a list.
    if s.contains("and") || s.contains("or") {
        s = and_or_to_commas(&s);
    }
    for word in ["infinity", "Infinity", "inf"] {
        if s.trim() == word || s.trim() == format!("-{word}") {
            s = s.replace(word, r"\infty");
        }
    }
    s = strip_units(&s);
    let mut s = s.split_whitespace().collect::<Vec<_>>().join(" ");
    while s.ends_with(['.', ',', ';']) && !is_plain_number(&s[..s.len() - 1]) || s.ends_with(" .") {
        s.pop();
        s.truncate(s.trim_end().len());
    }
    if s.ends_with('.') && is_plain_number(&s) && !s[..s.len() - 1].contains('.') {
        s.pop();
    }
    // `x \in [-2, 7]`: the set is the answer (a name on the left only: `2x \in S` is no
    // assignment, as in math-verify).
    if let Some(i) = find_cmd(&s, r"\in") {
        let lhs = s[..i].trim();
        let name = lhs.len() == 1 && lhs.bytes().all(|c| c.is_ascii_alphabetic())
            || lhs.starts_with('\\') && lhs[1..].bytes().all(|c| c.is_ascii_alphabetic());
        if name || lhs.is_empty() {
            s = s[i + 3..].trim().to_string();
        }
    }
    s
}

/// `and` / `or` (with an optional comma before) that is not part of a word becomes a comma,
/// as latex2sympy2_extended does: `1 and 2`, `(11,7)or(7,11)`, `6 \text{ and } 8`.
fn and_or_to_commas(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = String::with_capacity(s.len());
    let mut i = 0;
    while i < b.len() {
        let word = [&b"and"[..], &b"or"[..]]
            .into_iter()
            .find(|w| b[i..].starts_with(w));
        if let Some(w) = word {
            let before_ok = i == 0 || !(b[i - 1].is_ascii_alphabetic() || b[i - 1] == b'\\');
            let after_ok = b.get(i + w.len()).is_none_or(|c| !c.is_ascii_alphabetic());
            if before_ok && after_ok {
                let t = out.trim_end().len();
                out.truncate(t);
                if out.ends_with(',') {
                    out.pop();
                }
                out.push_str(", ");
                i += w.len();
                continue;
            }
        }
        let ch = s[i..].chars().next().unwrap_or(' ');
        out.push(ch);
        i += ch.len_utf8();
    }
    out
}

/// `\\` followed by a letter becomes `\` (latex2sympy2_extended's `command_slash_fix`).
fn undouble_commands(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = String::with_capacity(s.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && b.get(i + 1) == Some(&b'\\')
            && b.get(i + 2).is_some_and(u8::is_ascii_alphabetic)
        {
            i += 1;
            continue;
        }
        let ch = s[i..].chars().next().unwrap_or(' ');
        out.push(ch);
        i += ch.len_utf8();
    }
    out
}

/// Byte offset of `cmd` not followed by a letter.
fn find_cmd(s: &str, cmd: &str) -> Option<usize> {
    let mut from = 0;
    while let Some(i) = s[from..].find(cmd) {
        let at = from + i;
        if !s[at + cmd.len()..].starts_with(|c: char| c.is_ascii_alphabetic()) {
            return Some(at);
        }
        from = at + cmd.len();
    }
    None
}

/// Unwrap `\text{..}`-like groups; drop them when they hold a unit after a number.
fn unwrap_text(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut i = 0;
    let bytes = s.as_bytes();
    while i < s.len() {
        if bytes[i] == b'\\' {
            let name_end = s[i + 1..]
                .find(|c: char| !c.is_ascii_alphabetic())
                .map_or(s.len(), |j| i + 1 + j);
            let name = &s[i + 1..name_end];
            if WRAPPERS.contains(&name) {
                let open = s[name_end..]
                    .find(|c: char| !c.is_whitespace())
                    .map(|j| name_end + j)
                    .filter(|&j| bytes[j] == b'{');
                if let Some(end) = open.and_then(|o| group_end(s, o)) {
                    let o = open.unwrap_or(name_end);
                    let inner = &s[o + 1..end - 1];
                    let words_only = inner
                        .trim()
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || " ./^-".contains(c));
                    let has_letters = inner.chars().any(|c| c.is_ascii_alphabetic());
                    let conj = matches!(inner.trim(), "and" | "or");
                    if words_only
                        && has_letters
                        && !conj
                        && !out.trim().is_empty()
                        && ends_numberish(&out)
                    {
                        // A unit: drop it and a following `^2` / `^{3}`.
                        let mut j = end;
                        let rest = &s[j..];
                        for pow in ["^2", "^3", "^{2}", "^{3}", "^{-1}", "^{-2}"] {
                            if rest.trim_start().starts_with(pow) {
                                j += rest.len() - rest.trim_start().len() + pow.len();
                                break;
                            }
                        }
                        out.push(' ');
                        i = j;
                        continue;
                    }
                    out.push_str(&unwrap_text(inner));
                    i = end;
                    continue;
                }
            }
            // A command name, or a backslash and the one (possibly multi-byte) symbol after it.
            let next_len = s[i + 1..].chars().next().map_or(0, char::len_utf8);
            let end = if name_end > i + 1 {
                name_end
            } else {
                i + 1 + next_len
            };
            out.push_str(&s[i..end]);
            i = end;
            continue;
        }
        let ch = s[i..].chars().next().unwrap_or(' ');
        out.push(ch);
        i += ch.len_utf8();
    }
    out
}

/// Drop trailing unit words after a number (`5 cm`, `3 cm^2`, `12 dollars`).
fn strip_units(s: &str) -> String {
    let mut t = s.trim_end().to_string();
    // Whatever word follows a plain number is a unit or a noun (`18 cookies`, `60 km/h`),
    // except the names of constants and functions (`2 pi`).
    if let Some((num, word)) = t.trim_end_matches('.').rsplit_once(' ') {
        let unit_like = word.len() >= 2
            && word.chars().any(|c| c.is_ascii_alphabetic())
            && word
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "/^.-".contains(c))
            && !word.starts_with(|c: char| c.is_ascii_digit())
            && !NOT_UNITS.iter().any(|w| word.eq_ignore_ascii_case(w));
        if unit_like && is_plain_number(num) {
            return num.trim().to_string();
        }
    }
    for _ in 0..3 {
        let trimmed = t.trim_end_matches(['.', ' ']);
        let core = trimmed
            .strip_suffix("^2")
            .or_else(|| trimmed.strip_suffix("^3"))
            .or_else(|| trimmed.strip_suffix("^{2}"))
            .or_else(|| trimmed.strip_suffix("^{3}"))
            .unwrap_or(trimmed);
        let word_start = core
            .char_indices()
            .rev()
            .find(|(_, c)| !c.is_ascii_alphabetic())
            .map_or(0, |(i, c)| i + c.len_utf8());
        let word = &core[word_start..];
        let before = &core[..word_start];
        let rest = before.trim_end();
        if word.is_empty() || before.ends_with('\\') || !is_unit_word(word) {
            break;
        }
        let single =
            word.len() == 1 || word.eq_ignore_ascii_case("in") || word.eq_ignore_ascii_case("am");
        let ok = if single {
            is_plain_number(rest)
        } else {
            !rest.is_empty() && ends_numberish(rest)
        };
        // A bare letter glued to a number (`2k`, `5m`) is a variable, not a unit.
        if !ok || (single && !before.ends_with(' ')) {
            break;
        }
        t = rest.to_string();
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalize_noise() {
        assert_eq!(
            normalize(r"\left( 3, \frac{\pi}{2} \right)"),
            r"( 3, \frac{\pi}{2} )"
        );
        assert_eq!(normalize(r"10,\!080"), "10,080");
        assert_eq!(normalize(r"\$32,\!348"), "32,348");
        assert_eq!(normalize(r"5.4 \text{ cents}"), "5.4");
        assert_eq!(normalize(r"15\mbox{ cm}^2"), "15");
        assert_eq!(normalize(r"\text{(B)}"), "(B)");
        assert_eq!(normalize(r"120^\circ"), "120");
        assert_eq!(normalize("5 cm."), "5");
        assert_eq!(normalize(r"x \in [-2,7]"), "[-2,7]");
        assert_eq!(normalize(r"\frac{270}7\text{ degrees}"), r"\frac{270}7");
        assert_eq!(normalize("2k"), "2k");
    }
}
