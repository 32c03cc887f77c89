//! Answers that are words: the canonical text form and the prose test shared by `equiv` (the
//! fast text comparison) and `structure` (when an answer is text, not maths).

/// Case- and space-free form of a text answer; `(a)` and `a` are the same choice.
pub(crate) fn text_canon(s: &str) -> String {
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
pub(crate) fn has_word(s: &str) -> bool {
    let bytes = s.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i].is_ascii_alphabetic() {
            let start = i;
            while i < bytes.len() && bytes[i].is_ascii_alphabetic() {
                i += 1;
            }
            // A command name, or a subscript (`S_{MBCN}`), is no prose.
            let after_backslash = start > 0 && bytes[start - 1] == b'\\'
                || s[..start].ends_with('_')
                || s[..start].ends_with("_{");
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
