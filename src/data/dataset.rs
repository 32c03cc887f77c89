//! JSONL loaders: one row per line, turned into [`Example`]s with a resolved gold answer.

use std::fs;
use std::path::Path;

use anyhow::{bail, Context, Result};
use serde_json::{Map, Value};

use super::benchmarks::{BenchmarkSpec, GoldSource};

/// One problem with its gold answer, the unit every sampler, trainer and evaluator consumes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Example {
    pub id: String,
    pub question: String,
    /// Gold final answer, already pulled out of its source (`#### N`, `\boxed{}`, list, …).
    pub answer: String,
    /// Reference worked solution, when the file has one (used for supervised warm-starts).
    pub solution: Option<String>,
    pub subject: Option<String>,
    pub level: Option<String>,
    /// 1-based line of the row in its JSONL file, for errors about it; 0 when the example was
    /// not read from a file.
    pub line: usize,
}

/// One parsed row with its 1-based line number, for error messages.
pub(crate) type Row = (usize, Map<String, Value>);

/// Reads a JSONL file; blank lines are skipped, anything else must be a JSON object.
pub(crate) fn read_rows(path: &Path) -> Result<Vec<Row>> {
    let bytes = fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let mut rows = Vec::new();
    for (i, line) in bytes.split(|&b| b == b'\n').enumerate() {
        let lineno = i + 1;
        let line = std::str::from_utf8(line).map_err(|e| {
            anyhow::anyhow!(
                "{}:{lineno}: not valid UTF-8 (bad byte at column {}); JSONL files must be UTF-8",
                path.display(),
                e.valid_up_to() + 1
            )
        })?;
        let line = line.strip_suffix('\r').unwrap_or(line);
        if line.trim().is_empty() {
            continue;
        }
        let value: Value = serde_json::from_str(line)
            .with_context(|| format!("{}:{lineno}: invalid JSON", path.display()))?;
        match value {
            Value::Object(map) => rows.push((lineno, map)),
            other => bail!(
                "{}:{lineno}: expected a JSON object, found {}",
                path.display(),
                kind(&other)
            ),
        }
    }
    Ok(rows)
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// A scalar as text: strings as they are, integral numbers without a fraction (`27.0` → `27`).
fn scalar_text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(match (n.as_i64(), n.as_f64()) {
            (Some(i), _) => i.to_string(),
            (None, Some(f)) if f.fract() == 0.0 && f.abs() < 1e15 => format!("{}", f as i64),
            _ => n.to_string(),
        }),
        _ => None,
    }
}

/// Error context for one row: `file:line`.
struct At<'a> {
    path: &'a Path,
    line: usize,
    row: &'a Map<String, Value>,
}

impl At<'_> {
    fn field(&self, name: &str) -> Result<&Value> {
        self.row.get(name).with_context(|| {
            let present: Vec<&str> = self.row.keys().map(String::as_str).collect();
            format!(
                "{}:{}: missing field `{name}` (fields present: {})",
                self.path.display(),
                self.line,
                present.join(", ")
            )
        })
    }

    /// A required scalar field as non-empty text.
    fn text(&self, name: &str) -> Result<String> {
        let v = self.field(name)?;
        let s = scalar_text(v).with_context(|| {
            format!(
                "{}:{}: field `{name}`: expected a string or number, found {}",
                self.path.display(),
                self.line,
                kind(v)
            )
        })?;
        if s.trim().is_empty() {
            bail!(
                "{}:{}: field `{name}` is empty",
                self.path.display(),
                self.line
            );
        }
        Ok(s)
    }

    /// An optional field as text; a list is joined by blank lines (OlympiadBench solutions).
    fn optional(&self, name: Option<&str>) -> Option<String> {
        match self.row.get(name?)? {
            Value::Array(items) => {
                let parts: Vec<String> = items.iter().filter_map(scalar_text).collect();
                (!parts.is_empty()).then(|| parts.join("\n\n"))
            }
            v => scalar_text(v),
        }
    }

    fn err(&self, msg: String) -> anyhow::Error {
        anyhow::anyhow!("{}:{}: {msg}", self.path.display(), self.line)
    }
}

/// Removes unescaped `$` math delimiters: `$69$,$84$` → `69,84`.
fn strip_dollars(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut prev = '\0';
    for ch in s.chars() {
        if ch != '$' || prev == '\\' {
            out.push(ch);
        }
        prev = ch;
    }
    out.trim().to_string()
}

/// Pulls the gold answer out of a row according to `gold`.
fn resolve_gold(at: &At<'_>, gold: &GoldSource) -> Result<String> {
    let answer = match gold {
        GoldSource::Field(name) => at.text(name)?,
        GoldSource::AfterHashes(name) => {
            let text = at.text(name)?;
            let ans = crate::verifier::extract::after_hashes(&text)
                .ok_or_else(|| at.err(format!("field `{name}` has no `#### <answer>` line")))?;
            // GSM8K writes thousands with commas (`1,000`).
            ans.replace(',', "").trim().to_string()
        }
        GoldSource::FinalAnswerOf(name) => {
            let text = at.text(name)?;
            if let Some(ans) = crate::verifier::extract::after_hashes(&text) {
                ans.replace(',', "").trim().to_string()
            } else if let Some(ans) = crate::verifier::extract::last_boxed(&text) {
                ans.to_string()
            } else {
                text
            }
        }
        GoldSource::LastBoxedIn(name) => {
            let text = at.text(name)?;
            crate::verifier::extract::last_boxed(&text)
                .ok_or_else(|| at.err(format!("field `{name}` has no \\boxed{{}} answer")))?
                .to_string()
        }
        GoldSource::ListField {
            field: name,
            multiple,
        } => {
            let v = at.field(name)?;
            let items = v.as_array().ok_or_else(|| {
                at.err(format!(
                    "field `{name}`: expected a list, found {}",
                    kind(v)
                ))
            })?;
            let parts: Vec<String> = items
                .iter()
                .filter_map(scalar_text)
                .map(|s| strip_dollars(&s))
                .filter(|s| !s.is_empty())
                .collect();
            let several = match multiple {
                Some(flag) => {
                    let v = at.field(flag)?;
                    v.as_bool().ok_or_else(|| {
                        at.err(format!(
                            "field `{flag}`: expected true or false, found {}",
                            kind(v)
                        ))
                    })?
                }
                None => false,
            } || parts.len() > 1;
            // Several answers form one set, written in math mode so that `1,3` is not read as
            // the decimal 1.3 (math-verify reads a bare `1,3` so too).
            if several {
                format!("${}$", parts.join(","))
            } else {
                parts.join(",")
            }
        }
    };
    if answer.trim().is_empty() {
        return Err(at.err(format!("empty gold answer ({gold:?})")));
    }
    Ok(answer)
}

pub(crate) fn example_from_row(
    path: &Path,
    (line, row): &Row,
    spec: &BenchmarkSpec,
    index: usize,
) -> Result<Example> {
    let at = At {
        path,
        line: *line,
        row,
    };
    let question = at.text(&spec.question_field)?;
    let answer = resolve_gold(&at, &spec.gold)?;
    // Numeric ids (`60`) are only unique within a benchmark, so they get its name as prefix.
    let id = match spec.id_field.as_deref().and_then(|f| row.get(f)) {
        Some(Value::Number(n)) => format!("{}-{n}", spec.name),
        Some(Value::String(s)) if !s.is_empty() => s.clone(),
        _ => format!("{}-{index}", spec.name),
    };
    Ok(Example {
        id,
        question,
        answer,
        solution: at.optional(spec.solution_field.as_deref()),
        subject: at.optional(spec.subject_field.as_deref()),
        level: at.optional(spec.level_field.as_deref()),
        line: *line,
    })
}

/// Loads a training / validation set as `data.train` / `data.validation` name it: a shipped
/// benchmark or task split by name, else a JSONL file with the given question / answer fields.
pub fn load_examples(spec: &str, question_field: &str, answer_field: &str) -> Result<Vec<Example>> {
    let examples = if let Ok(b) = super::benchmarks::benchmark(spec) {
        load_benchmark(&b)?
    } else {
        let path = Path::new(spec);
        if !path.exists() {
            bail!("data: `{spec}` is neither a shipped benchmark name nor an existing JSONL file");
        }
        load_jsonl(path, question_field, answer_field)?
    };
    if examples.is_empty() {
        bail!("data: `{spec}` holds no examples");
    }
    Ok(examples)
}

/// Loads every row of a benchmark described by `spec`.
pub fn load_benchmark(spec: &BenchmarkSpec) -> Result<Vec<Example>> {
    let path = spec.path();
    if !path.is_file() {
        bail!(
            "benchmark `{}`: {} does not exist (set GRPO_DATA_DIR to the folder holding the data files)",
            spec.name,
            path.display()
        );
    }
    let rows = read_rows(&path)?;
    let examples = rows
        .iter()
        .enumerate()
        .map(|(i, row)| example_from_row(&path, row, spec, i))
        .collect::<Result<Vec<_>>>()
        .with_context(|| format!("loading benchmark `{}`", spec.name))?;
    if examples.is_empty() {
        bail!("{}: no rows", path.display());
    }
    Ok(examples)
}

/// Loads any JSONL file whose rows carry the question and gold answer in plain fields.
///
/// `id`, `solution`, `subject` and `level` are picked up when present, so the built-in task's
/// files load with `load_jsonl(path, "question", "answer")`.
pub fn load_jsonl(path: &Path, question_field: &str, answer_field: &str) -> Result<Vec<Example>> {
    let stem = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "row".to_string());
    let spec = BenchmarkSpec::custom(&stem, path, question_field, answer_field);
    let rows = read_rows(path)?;
    rows.iter()
        .enumerate()
        .map(|(i, row)| example_from_row(path, row, &spec, i))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn file(text: &str) -> tempfile::NamedTempFile {
        let mut f = tempfile::Builder::new()
            .suffix(".jsonl")
            .tempfile()
            .unwrap();
        f.write_all(text.as_bytes()).unwrap();
        f
    }

    #[test]
    fn loads_plain_rows_with_optional_fields() {
        let f = file(concat!(
            r#"{"question":"1+1?","answer":"2","solution":"1+1=2. \\boxed{2}","level":1,"id":"a"}"#,
            "\n\n",
            r#"{"question":"2+2?","answer":4}"#,
            "\n"
        ));
        let ex = load_jsonl(f.path(), "question", "answer").unwrap();
        assert_eq!(ex.len(), 2);
        assert_eq!(ex[0].id, "a");
        assert_eq!(ex[0].level.as_deref(), Some("1"));
        assert_eq!(ex[0].solution.as_deref(), Some("1+1=2. \\boxed{2}"));
        assert_eq!(ex[1].answer, "4");
        assert!(ex[1].id.ends_with("-1"), "{}", ex[1].id);
        assert_eq!(ex[1].solution, None);
    }

    #[test]
    fn missing_field_names_file_line_and_field() {
        let f =
            file("{\"question\":\"q\",\"answer\":\"1\"}\n{\"question\":\"q2\",\"gold\":\"2\"}\n");
        let err = format!(
            "{:#}",
            load_jsonl(f.path(), "question", "answer").unwrap_err()
        );
        let expected = format!("{}:2: missing field `answer`", f.path().display());
        assert!(err.contains(&expected), "{err}");
        assert!(err.contains("fields present: question, gold"), "{err}");
    }

    #[test]
    fn bad_json_names_file_and_line() {
        let f = file("{\"question\":\"q\",\"answer\":\"1\"}\n\n{\"question\": oops}\n");
        let err = format!(
            "{:#}",
            load_jsonl(f.path(), "question", "answer").unwrap_err()
        );
        let expected = format!("{}:3: invalid JSON", f.path().display());
        assert!(err.contains(&expected), "{err}");
        let f = file("[1,2]\n");
        let err = format!(
            "{:#}",
            load_jsonl(f.path(), "question", "answer").unwrap_err()
        );
        assert!(
            err.contains(":1: expected a JSON object, found an array"),
            "{err}"
        );
    }

    #[test]
    fn wrong_type_and_empty_values_are_errors() {
        let f = file("{\"question\":[\"q\"],\"answer\":\"1\"}\n");
        let err = format!(
            "{:#}",
            load_jsonl(f.path(), "question", "answer").unwrap_err()
        );
        assert!(
            err.contains(":1: field `question`: expected a string or number, found an array"),
            "{err}"
        );
        let f = file("{\"question\":\"q\",\"answer\":\"  \"}\n");
        let err = format!(
            "{:#}",
            load_jsonl(f.path(), "question", "answer").unwrap_err()
        );
        assert!(err.contains(":1: field `answer` is empty"), "{err}");
    }

    #[test]
    fn non_utf8_data_file_names_its_line_without_the_data_dir_hint() {
        let mut bytes = b"{\"question\":\"q\",\"answer\":\"1\"}\n".to_vec();
        bytes.extend_from_slice(b"{\"question\":\"caf\xe9\",\"answer\":\"2\"}\n");
        let mut f = tempfile::Builder::new()
            .suffix(".jsonl")
            .tempfile()
            .unwrap();
        f.write_all(&bytes).unwrap();
        let err = format!(
            "{:#}",
            load_jsonl(f.path(), "question", "answer").unwrap_err()
        );
        let expected = format!(
            "{}:2: not valid UTF-8 (bad byte at column 17)",
            f.path().display()
        );
        assert!(err.contains(&expected), "{err}");
        assert!(!err.contains("GRPO_DATA_DIR"), "{err}");
        // CRLF files load, and rows remember their line.
        let f = file(
            "{\"question\":\"q\",\"answer\":\"1\"}\r\n\r\n{\"question\":\"r\",\"answer\":2}\r\n",
        );
        let ex = load_jsonl(f.path(), "question", "answer").unwrap();
        assert_eq!((ex[0].line, ex[1].line), (1, 3));
    }

    #[test]
    fn missing_file_is_named() {
        let err = format!(
            "{:#}",
            load_jsonl(Path::new("/nonexistent/x.jsonl"), "q", "a").unwrap_err()
        );
        assert!(err.contains("/nonexistent/x.jsonl"), "{err}");
    }

    #[test]
    fn gold_sources_resolve() {
        let row: Map<String, Value> = serde_json::from_str(
            r#"{"a":"so 1,000 total\n#### 1,000","s":"x \\boxed{\\frac{1}{2}} y","l":["$69$,$84$"],"n":27.0,"m":true,"one":["$1,000$"],"no":false,"two":["$2$","3"]}"#,
        )
        .unwrap();
        let at = At {
            path: Path::new("f.jsonl"),
            line: 9,
            row: &row,
        };
        let g = |src| resolve_gold(&at, &src).unwrap();
        assert_eq!(g(GoldSource::AfterHashes("a".into())), "1000");
        assert_eq!(g(GoldSource::LastBoxedIn("s".into())), "\\frac{1}{2}");
        let list = |field: &str, multiple: Option<&str>| GoldSource::ListField {
            field: field.into(),
            multiple: multiple.map(Into::into),
        };
        // Several answers: one math-mode set, never the decimal 69.84.
        assert_eq!(g(list("l", Some("m"))), "$69,84$");
        assert_eq!(g(list("two", None)), "$2,3$");
        // One answer as written (here a thousands comma).
        assert_eq!(g(list("one", Some("no"))), "1,000");
        assert_eq!(g(list("one", None)), "1,000");
        let err = resolve_gold(&at, &list("l", Some("n"))).unwrap_err();
        assert!(
            err.to_string()
                .contains("field `n`: expected true or false"),
            "{err}"
        );
        assert_eq!(g(GoldSource::Field("n".into())), "27");
        let err = resolve_gold(&at, &GoldSource::AfterHashes("s".into())).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("f.jsonl:9: field `s` has no `####"),
            "{err}"
        );
    }
}
