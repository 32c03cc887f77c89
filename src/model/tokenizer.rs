//! Tokenizer plus the checkpoint's own chat template.
//!
//! The template is the Jinja `chat_template` of `tokenizer_config.json` (or the
//! `chat_template.jinja` file newer transformers write), rendered with minijinja under the
//! conventions transformers uses: `trim_blocks`, `lstrip_blocks`, the `messages`,
//! `add_generation_prompt`, `bos_token`, `eos_token` variables, `raise_exception`, and
//! Python string methods (`.strip()`, `.startswith()`, ...) via minijinja-contrib's pycompat.

use anyhow::{anyhow, bail, Context, Result};
use serde::Serialize;
use serde_json::Value;
use std::collections::BTreeSet;
use std::path::Path;

/// One chat turn.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct ChatMessage {
    pub role: String,
    pub content: String,
}

impl ChatMessage {
    pub fn new(role: impl Into<String>, content: impl Into<String>) -> Self {
        ChatMessage {
            role: role.into(),
            content: content.into(),
        }
    }
}

/// A Hugging Face tokenizer with its special tokens and chat template.
pub struct Tokenizer {
    inner: tokenizers::Tokenizer,
    chat_template: Option<String>,
    bos_token: Option<String>,
    eos_token: Option<String>,
    pad_token: Option<String>,
    /// `eos_token_id` of generation_config.json (int or list).
    generation_eos: Vec<u32>,
    generation_pad: Option<u32>,
}

/// A special token given as a string or as an AddedToken object `{"content": ...}`.
fn token_str(v: Option<&Value>) -> Option<String> {
    match v? {
        Value::String(s) => Some(s.clone()),
        Value::Object(m) => m.get("content")?.as_str().map(str::to_string),
        _ => None,
    }
}

fn ids(v: Option<&Value>) -> Vec<u32> {
    match v {
        Some(Value::Array(a)) => a
            .iter()
            .filter_map(|x| x.as_u64())
            .map(|x| x as u32)
            .collect(),
        Some(v) => v.as_u64().map(|x| vec![x as u32]).unwrap_or_default(),
        None => vec![],
    }
}

fn read_json(path: &Path) -> Result<Option<Value>> {
    if !path.is_file() {
        return Ok(None);
    }
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let v = serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
    Ok(Some(v))
}

impl Tokenizer {
    /// Loads `tokenizer.json` and, when present, `tokenizer_config.json`,
    /// `chat_template.jinja` and `generation_config.json` from `dir`.
    pub fn load(dir: &Path) -> Result<Tokenizer> {
        let tok_path = dir.join("tokenizer.json");
        if !tok_path.is_file() {
            bail!("{} has no tokenizer.json", dir.display());
        }
        let inner = tokenizers::Tokenizer::from_file(&tok_path)
            .map_err(|e| anyhow!("loading {}: {e}", tok_path.display()))?;
        let cfg_path = dir.join("tokenizer_config.json");
        let cfg = read_json(&cfg_path)?.unwrap_or(Value::Null);
        let mut chat_template = match cfg.get("chat_template") {
            Some(Value::String(s)) => Some(s.clone()),
            // A list of named templates: use the default one.
            Some(Value::Array(list)) => list
                .iter()
                .find(|t| t.get("name").and_then(|n| n.as_str()) == Some("default"))
                .or_else(|| list.first())
                .and_then(|t| t.get("template"))
                .and_then(|t| t.as_str())
                .map(str::to_string),
            _ => None,
        };
        let jinja = dir.join("chat_template.jinja");
        if chat_template.is_none() && jinja.is_file() {
            chat_template = Some(
                std::fs::read_to_string(&jinja)
                    .with_context(|| format!("reading {}", jinja.display()))?,
            );
        }
        if chat_template.is_none() {
            if let Some(v) = read_json(&dir.join("chat_template.json"))? {
                chat_template = v
                    .get("chat_template")
                    .and_then(|t| t.as_str())
                    .map(str::to_string);
            }
        }
        let gen = read_json(&dir.join("generation_config.json"))?.unwrap_or(Value::Null);
        Ok(Tokenizer {
            inner,
            chat_template,
            bos_token: token_str(cfg.get("bos_token")),
            eos_token: token_str(cfg.get("eos_token")),
            pad_token: token_str(cfg.get("pad_token")),
            generation_eos: ids(gen.get("eos_token_id")),
            generation_pad: ids(gen.get("pad_token_id")).first().copied(),
        })
    }

    /// The wrapped `tokenizers` tokenizer.
    pub fn inner(&self) -> &tokenizers::Tokenizer {
        &self.inner
    }

    pub fn encode(&self, text: &str, add_special_tokens: bool) -> Result<Vec<u32>> {
        let enc = self
            .inner
            .encode(text, add_special_tokens)
            .map_err(|e| anyhow!("tokenizing {:?}: {e}", truncate(text)))?;
        Ok(enc.get_ids().to_vec())
    }

    pub fn decode(&self, ids: &[u32], skip_special_tokens: bool) -> Result<String> {
        self.inner
            .decode(ids, skip_special_tokens)
            .map_err(|e| anyhow!("decoding {} token ids: {e}", ids.len()))
    }

    pub fn token_to_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }

    /// Union of tokenizer_config's `eos_token` and generation_config's `eos_token_id`, sorted.
    pub fn eos_token_ids(&self) -> Vec<u32> {
        let mut set: BTreeSet<u32> = self.generation_eos.iter().copied().collect();
        if let Some(id) = self.eos_token.as_deref().and_then(|t| self.token_to_id(t)) {
            set.insert(id);
        }
        set.into_iter().collect()
    }

    /// The pad token id, falling back to generation_config's, then the first EOS id, then 0.
    pub fn pad_token_id(&self) -> u32 {
        self.pad_token
            .as_deref()
            .and_then(|t| self.token_to_id(t))
            .or(self.generation_pad)
            .or_else(|| self.eos_token_ids().first().copied())
            .unwrap_or(0)
    }

    pub fn bos_token(&self) -> Option<&str> {
        self.bos_token.as_deref()
    }

    pub fn eos_token(&self) -> Option<&str> {
        self.eos_token.as_deref()
    }

    /// Vocabulary size including added tokens.
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    pub fn has_chat_template(&self) -> bool {
        self.chat_template.is_some()
    }

    /// Renders the checkpoint's chat template; without one, the messages' contents joined by
    /// newlines (for a single user turn: just its content).
    pub fn apply_chat_template(
        &self,
        messages: &[ChatMessage],
        add_generation_prompt: bool,
    ) -> Result<String> {
        let Some(template) = &self.chat_template else {
            return Ok(messages
                .iter()
                .map(|m| m.content.as_str())
                .collect::<Vec<_>>()
                .join("\n"));
        };
        render_chat_template(
            template,
            messages,
            add_generation_prompt,
            self.bos_token.as_deref(),
            self.eos_token.as_deref(),
        )
    }
}

/// Civil date `(year, month 1-12, day 1-31)` of a Unix time (Howard Hinnant's algorithm).
fn civil_from_unix(secs: u64) -> (i64, u32, u32) {
    let z = (secs / 86_400) as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// The subset of Python's `strftime` that chat templates use for "today's date" lines
/// (`%d %b %Y`, `%B`, `%m`, `%y`, `%%`), in UTC; other directives are kept verbatim.
fn strftime_utc(fmt: &str, secs: u64) -> String {
    const MONTHS: [&str; 12] = [
        "January",
        "February",
        "March",
        "April",
        "May",
        "June",
        "July",
        "August",
        "September",
        "October",
        "November",
        "December",
    ];
    let (y, m, d) = civil_from_unix(secs);
    let month = MONTHS[(m - 1) as usize];
    let mut out = String::new();
    let mut chars = fmt.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('d') => out.push_str(&format!("{d:02}")),
            Some('m') => out.push_str(&format!("{m:02}")),
            Some('Y') => out.push_str(&y.to_string()),
            Some('y') => out.push_str(&format!("{:02}", y.rem_euclid(100))),
            Some('b') => out.push_str(&month[..3]),
            Some('B') => out.push_str(month),
            Some('%') => out.push('%'),
            Some(other) => {
                out.push('%');
                out.push(other);
            }
            None => out.push('%'),
        }
    }
    out
}

fn truncate(s: &str) -> String {
    s.chars().take(40).collect()
}

/// Renders an HF chat template with transformers' Jinja environment settings.
pub fn render_chat_template(
    template: &str,
    messages: &[ChatMessage],
    add_generation_prompt: bool,
    bos_token: Option<&str>,
    eos_token: Option<&str>,
) -> Result<String> {
    let mut env = minijinja::Environment::new();
    env.set_trim_blocks(true);
    env.set_lstrip_blocks(true);
    env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
    env.add_function(
        "raise_exception",
        |msg: String| -> std::result::Result<String, minijinja::Error> {
            Err(minijinja::Error::new(
                minijinja::ErrorKind::InvalidOperation,
                msg,
            ))
        },
    );
    env.add_function("strftime_now", |fmt: String| -> String {
        let secs = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        strftime_utc(&fmt, secs)
    });
    env.add_template("chat", template)
        .map_err(|e| anyhow!("parsing the chat template: {e}"))?;
    let tmpl = env
        .get_template("chat")
        .map_err(|e| anyhow!("loading the chat template: {e}"))?;
    let ctx = minijinja::context! {
        messages => messages,
        add_generation_prompt => add_generation_prompt,
        bos_token => bos_token.unwrap_or(""),
        eos_token => eos_token.unwrap_or(""),
    };
    tmpl.render(ctx)
        .map_err(|e| anyhow!("rendering the chat template: {e:#}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pycompat_and_raise_exception() {
        let t = "{% for m in messages %}{{ m['content'].strip().upper() }}{% if not m.role.startswith('u') %}{{ raise_exception('bad role') }}{% endif %}{% endfor %}";
        let ok = render_chat_template(t, &[ChatMessage::new("user", "  hi ")], false, None, None)
            .unwrap();
        assert_eq!(ok, "HI");
        let err = render_chat_template(t, &[ChatMessage::new("bot", "x")], false, None, None)
            .unwrap_err();
        assert!(format!("{err:#}").contains("bad role"), "{err:#}");
    }

    #[test]
    fn strftime_subset() {
        // 2024-07-26 12:00:00 UTC; 2000-02-29 (leap day); 1970-01-01.
        assert_eq!(strftime_utc("%d %b %Y", 1_721_995_200), "26 Jul 2024");
        assert_eq!(
            strftime_utc("%B %d, %y (%m) %%", 951_782_400),
            "February 29, 00 (02) %"
        );
        assert_eq!(strftime_utc("%d-%m-%Y %H", 0), "01-01-1970 %H");
    }

    #[test]
    fn qwen2_5_style_template() {
        // The system-prompt default and role dispatch of Qwen2.5-Instruct's template.
        let t = "{%- if messages[0]['role'] == 'system' %}\n    {{- '<|im_start|>system\\n' + messages[0]['content'] + '<|im_end|>\\n' }}\n{%- else %}\n    {{- '<|im_start|>system\\nYou are Qwen.<|im_end|>\\n' }}\n{%- endif %}\n{%- for message in messages %}\n    {%- if (message.role == \"user\") or (message.role == \"system\" and not loop.first) or (message.role == \"assistant\" and not message.tool_calls) %}\n        {{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>' + '\\n' }}\n    {%- endif %}\n{%- endfor %}\n{%- if add_generation_prompt %}\n    {{- '<|im_start|>assistant\\n' }}\n{%- endif %}\n";
        let s =
            render_chat_template(t, &[ChatMessage::new("user", "1+1?")], true, None, None).unwrap();
        assert_eq!(
            s,
            "<|im_start|>system\nYou are Qwen.<|im_end|>\n<|im_start|>user\n1+1?<|im_end|>\n<|im_start|>assistant\n"
        );
    }

    #[test]
    fn trim_blocks_like_transformers() {
        let t = "{% for m in messages %}\n  {{ m.content }}\n{% endfor %}\n{% if add_generation_prompt %}\nGO{% endif %}";
        let s = render_chat_template(
            t,
            &[ChatMessage::new("user", "a"), ChatMessage::new("user", "b")],
            true,
            None,
            None,
        )
        .unwrap();
        assert_eq!(s, "  a\n  b\nGO");
    }
}
