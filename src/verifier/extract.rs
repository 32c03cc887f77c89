//! Final-answer extraction from a model completion (or a reference solution).
//!
//! The default policy is math-verify's extraction ([`super::mv_extract`]). The other named
//! policies are stricter, for RL rewards and benchmarks; their order of preference, each step
//! enabled by [`ExtractPolicy`]:
//! 1. the last `\boxed{...}` / `\fbox{...}` with balanced braces (escaped `\{`, `\}` do not count),
//!    or `\boxed X` (up to the next space or `$`);
//! 2. the text after the last `####` (GSM8K), up to the end of its line;
//! 3. the last answer phrase: "Final Answer: The final answer is X. I hope it is correct.",
//!    "the answer is X", "answer: X" (case-insensitive), cut at the end of the line or sentence,
//!    with a `$...$`, `\(...\)` or `\[...\]` around X removed;
//! 4. optionally the last number in the text (GSM8K-style fallback).
//!
//! The extracted string is trimmed; LaTeX clean-up is left to [`super::equiv`].

/// Which extraction steps to try, in the fixed order above.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExtractPolicy {
    /// Last `\boxed{}` / `\fbox{}`.
    pub boxed: bool,
    /// Text after the last `####`.
    pub hash: bool,
    /// "The final answer is X" / "the answer is X" / "answer: X".
    pub answer_phrases: bool,
    /// The last number anywhere in the text (lenient; off for MATH-style grading).
    pub last_number: bool,
    /// math-verify's extraction instead of the steps above ([`super::mv_extract`]): boxed,
    /// answer phrases, any math environment, then the last number or expression.
    pub math_verify: bool,
}

impl Default for ExtractPolicy {
    /// math-verify's extraction (what `grpo verify` and `rewards.extract = "default"` use).
    fn default() -> Self {
        Self {
            boxed: true,
            hash: true,
            answer_phrases: true,
            last_number: true,
            math_verify: true,
        }
    }
}

impl ExtractPolicy {
    /// Boxed, `####` and answer phrases, but no guessing from the last number or the last math
    /// environment: safer for RL on tasks that ask for `\boxed{}` (the shipped configs use it).
    pub fn lenient() -> Self {
        Self {
            boxed: true,
            hash: true,
            answer_phrases: true,
            last_number: false,
            math_verify: false,
        }
    }
    /// MATH / MATH-500 / Minerva / OlympiadBench: boxed first, then answer phrases.
    pub fn math() -> Self {
        Self {
            boxed: true,
            hash: false,
            answer_phrases: true,
            last_number: false,
            math_verify: false,
        }
    }
    /// GSM8K: boxed, `####`, answer phrases, then the last number in the text.
    pub fn gsm8k() -> Self {
        Self {
            boxed: true,
            hash: true,
            answer_phrases: true,
            last_number: true,
            math_verify: false,
        }
    }
    /// Only a `\boxed{}` counts (strict format).
    pub fn boxed_only() -> Self {
        Self {
            boxed: true,
            hash: false,
            answer_phrases: false,
            last_number: false,
            math_verify: false,
        }
    }
    /// Policy by benchmark or preset name (`math`, `math500`, `minerva`, `olympiadbench`,
    /// `aime`, `amc`, `gsm8k`, `boxed`/`strict`, `lenient`, `default`/`math_verify`).
    pub fn by_name(name: &str) -> Option<Self> {
        Some(match name.to_ascii_lowercase().as_str() {
            "math" | "math500" | "minerva" | "minerva_math" | "olympiadbench" | "aime"
            | "aime24" | "amc" | "amc23" => Self::math(),
            "gsm8k" => Self::gsm8k(),
            "boxed" | "boxed_only" | "strict" => Self::boxed_only(),
            "lenient" => Self::lenient(),
            "default" | "math_verify" | "math-verify" => Self::default(),
            _ => return None,
        })
    }
}

/// Content of the last balanced `\boxed{...}` or `\fbox{...}` (or `\boxed X`), trimmed.
///
/// An unclosed last box (a truncated completion) yields `None` rather than an earlier box, so
/// an intermediate boxed value is never graded as the final answer.
pub fn last_boxed(text: &str) -> Option<&str> {
    let start = [r"\boxed", r"\fbox"]
        .iter()
        .filter_map(|pat| text.rfind(pat).map(|i| (i, i + pat.len())))
        .max_by_key(|&(i, _)| i)?
        .1;
    box_content(text, start)
}

/// Content of the box whose command name ends at byte `start`.
fn box_content(text: &str, start: usize) -> Option<&str> {
    let rest = &text[start..];
    let trimmed = rest.trim_start();
    let offset = start + (rest.len() - trimmed.len());
    if let Some(inner) = trimmed.strip_prefix('{') {
        let end = balanced_end(inner)?;
        return Some(text[offset + 1..offset + 1 + end].trim());
    }
    // `\boxed 5`: a space is required, `\boxedx` is another command.
    if trimmed.len() == rest.len() {
        return None;
    }
    let end = trimmed
        .find(|c: char| c.is_whitespace() || c == '$')
        .unwrap_or(trimmed.len());
    let ans = trimmed[..end].trim_end_matches(['.', ',']);
    (!ans.is_empty()).then_some(ans)
}

/// Every well-formed `\boxed{}` / `\fbox{}` content, in order (the `format` reward counts them).
pub fn all_boxed(text: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut from = 0;
    while let Some((i, len)) = [r"\boxed", r"\fbox"]
        .iter()
        .filter_map(|pat| text[from..].find(pat).map(|i| (from + i, pat.len())))
        .min_by_key(|&(i, _)| i)
    {
        if let Some(c) = box_content(text, i + len) {
            out.push(c);
        }
        from = i + len;
    }
    out
}

/// Byte index of the `}` closing an already-opened group, skipping `\{` and `\}`.
fn balanced_end(s: &str) -> Option<usize> {
    let mut depth = 0usize;
    let bytes = s.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'\\' => i += 1,
            b'{' => depth += 1,
            b'}' => {
                if depth == 0 {
                    return Some(i);
                }
                depth -= 1;
            }
            _ => {}
        }
        i += 1;
    }
    None
}

/// Text after the last `####`, up to the end of its line.
pub fn after_hashes(text: &str) -> Option<&str> {
    let i = text.rfind("####")?;
    let rest = text[i + 4..].trim_start_matches('#');
    let line = rest.lines().map(str::trim).find(|l| !l.is_empty())?;
    Some(line.trim_end_matches('.'))
}

/// The answer after the last "final answer is" / "answer is" / "answer:" phrase.
pub fn answer_phrase(text: &str) -> Option<String> {
    let lower = text.to_ascii_lowercase();
    // ASCII lower-casing keeps byte offsets aligned with `text`.
    let mut best: Option<usize> = None;
    for pat in ["final answer is", "answer is", "answer:"] {
        if let Some(i) = lower.rfind(pat) {
            let end = i + pat.len();
            if best.is_none_or(|b| end > b) {
                best = Some(end);
            }
        }
    }
    let rest = &text[best?..];
    let rest = rest.trim_start_matches([':', ' ', '\t', '*']).trim_start();
    let rest = rest.strip_prefix("**").unwrap_or(rest).trim_start();
    let ans = cut_answer(rest)?;
    let ans = ans.trim().trim_end_matches(['.', ',', ';', '*']).trim();
    (!ans.is_empty()).then(|| ans.to_string())
}

/// The math span at the start of `s` if there is one, else the rest of the line/sentence.
fn cut_answer(s: &str) -> Option<&str> {
    if let Some(b) = last_boxed_prefix(s) {
        return Some(b);
    }
    for (open, close) in [("$$", "$$"), ("$", "$"), (r"\(", r"\)"), (r"\[", r"\]")] {
        if let Some(inner) = s.strip_prefix(open) {
            // An unclosed `$` is a currency sign (`The answer is $18.`): cut by line below.
            if let Some(end) = find_unescaped(inner, close) {
                return Some(&inner[..end]);
            }
            break;
        }
    }
    let line = s.lines().next().unwrap_or("");
    let line = match line.to_ascii_lowercase().find("i hope it is correct") {
        Some(i) => &line[..i],
        None => line,
    };
    // A sentence ends at a period followed by space or end of line (not a decimal point).
    let b = line.as_bytes();
    let mut end = line.len();
    for (i, &c) in b.iter().enumerate() {
        if c == b'.' && b.get(i + 1).is_none_or(|n| n.is_ascii_whitespace()) {
            end = i;
            break;
        }
    }
    Some(&line[..end])
}

/// First `pat` in `s` not preceded by a backslash (`\$` is a dollar sign, not a delimiter).
fn find_unescaped(s: &str, pat: &str) -> Option<usize> {
    let mut from = 0;
    while let Some(i) = s[from..].find(pat) {
        let at = from + i;
        if pat.starts_with('\\') || at == 0 || s.as_bytes()[at - 1] != b'\\' {
            return Some(at);
        }
        from = at + pat.len();
    }
    None
}

/// A `\boxed{}` right at the start of the answer phrase.
fn last_boxed_prefix(s: &str) -> Option<&str> {
    let t = s.trim_start_matches('$');
    if t.starts_with(r"\boxed") || t.starts_with(r"\fbox") {
        last_boxed(s)
    } else {
        None
    }
}

/// The last number (integer, decimal, thousands separators, sign) in the text.
pub fn last_number(text: &str) -> Option<String> {
    let b = text.as_bytes();
    let mut i = b.len();
    while i > 0 {
        i -= 1;
        if b[i].is_ascii_digit() {
            let end = i + 1;
            let mut start = i;
            while start > 0 {
                let c = b[start - 1];
                let sep_ok =
                    (c == b',' || c == b'.') && start >= 2 && b[start - 2].is_ascii_digit();
                if c.is_ascii_digit() || sep_ok {
                    start -= 1;
                } else {
                    break;
                }
            }
            if start > 0 && b[start - 1] == b'-' {
                start -= 1;
            }
            return Some(text[start..end].to_string());
        }
    }
    None
}

/// The final answer of `text` under `policy`, or `None` when no step finds one.
pub fn extract_answer(text: &str, policy: &ExtractPolicy) -> Option<String> {
    if policy.math_verify {
        return super::mv_extract::extract(text).map(|e| e.answer);
    }
    if policy.boxed {
        if let Some(b) = last_boxed(text) {
            return Some(b.to_string());
        }
    }
    if policy.hash {
        if let Some(h) = after_hashes(text) {
            return Some(h.to_string());
        }
    }
    if policy.answer_phrases {
        if let Some(a) = answer_phrase(text) {
            return Some(a);
        }
    }
    if policy.last_number {
        return last_number(text);
    }
    None
}

/// Whether the text contains any answer marker ([`extract_answer`] with the lenient policy
/// would find something without guessing a number).
pub fn has_answer_marker(text: &str) -> bool {
    extract_answer(text, &ExtractPolicy::lenient()).is_some()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boxed_variants() {
        assert_eq!(
            last_boxed(r"so \boxed{\frac{1}{2}} and \boxed{3}"),
            Some("3")
        );
        assert_eq!(last_boxed(r"\boxed{\{1,2\}}"), Some(r"\{1,2\}"));
        assert_eq!(last_boxed(r"\boxed{a{b}c}."), Some("a{b}c"));
        assert_eq!(last_boxed(r"$\boxed 5$."), Some("5"));
        assert_eq!(last_boxed(r"\fbox{7}"), Some("7"));
        assert_eq!(last_boxed(r"\boxed{3} then \boxed{4"), None);
        assert_eq!(last_boxed("no box"), None);
    }

    #[test]
    fn phrases_and_hash() {
        let p = ExtractPolicy::lenient();
        assert_eq!(
            extract_answer("blah\n#### 1,234\n", &p).as_deref(),
            Some("1,234")
        );
        assert_eq!(
            extract_answer(
                "Final Answer: The final answer is $\\frac{1}{2}$. I hope it is correct.",
                &p
            )
            .as_deref(),
            Some("\\frac{1}{2}")
        );
        assert_eq!(
            extract_answer("So the answer is 3.5.", &p).as_deref(),
            Some("3.5")
        );
        assert_eq!(extract_answer("Answer: (B)", &p).as_deref(), Some("(B)"));
        assert_eq!(
            extract_answer("The answer is \\(x+1\\) indeed", &p).as_deref(),
            Some("x+1")
        );
        assert_eq!(extract_answer("I got 12 then 13.", &p), None);
        assert_eq!(
            extract_answer("The answer is $18.", &p).as_deref(),
            Some("$18")
        );
        assert_eq!(
            extract_answer("The answer is: **18**", &p).as_deref(),
            Some("18")
        );
        assert_eq!(
            extract_answer("So the answer is $\\$18$.", &p).as_deref(),
            Some("\\$18")
        );
        assert_eq!(
            extract_answer("I got 12 then -1,300.", &ExtractPolicy::gsm8k()).as_deref(),
            Some("-1,300")
        );
    }
}
