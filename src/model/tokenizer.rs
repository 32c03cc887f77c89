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

/// Bytes at the start of a tail window whose tokens [`Tokenizer::encode_tail`] drops.
const TAIL_MARGIN: usize = 256;

/// Most bytes a rendered chat template may produce: far beyond any real prompt, small enough
/// that a runaway template fails in well under a second instead of exhausting memory.
pub const MAX_RENDERED_TEMPLATE_BYTES: usize = 16 << 20;

/// Net heap one rendering may grow by: the output cap, a few copies of it, and room to spare.
pub const TEMPLATE_HEAP_BYTES: usize = 256 << 20;

/// Template instructions one rendering may execute (minijinja fuel); a chat template for a few
/// messages needs a few thousand.
const TEMPLATE_FUEL: u64 = 5_000_000;

/// A Hugging Face tokenizer with its special tokens and chat template.
pub struct Tokenizer {
    inner: tokenizers::Tokenizer,
    chat_template: Option<String>,
    /// The file the chat template was read from.
    chat_template_source: Option<std::path::PathBuf>,
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
        let mut template_source = cfg_path.clone();
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
            template_source = jinja.clone();
            chat_template = Some(
                std::fs::read_to_string(&jinja)
                    .with_context(|| format!("reading {}", jinja.display()))?,
            );
        }
        if chat_template.is_none() {
            template_source = dir.join("chat_template.json");
            if let Some(v) = read_json(&template_source)? {
                chat_template = v
                    .get("chat_template")
                    .and_then(|t| t.as_str())
                    .map(str::to_string);
            }
        }
        let gen = read_json(&dir.join("generation_config.json"))?.unwrap_or(Value::Null);
        if cfg.is_null() {
            tracing::warn!(
                "{} has no tokenizer_config.json: no special-token names (EOS comes from \
                 generation_config.json only){}",
                dir.display(),
                if chat_template.is_none() {
                    " and no chat template: prompts are plain text, not the model's chat format"
                } else {
                    ""
                }
            );
        }
        Ok(Tokenizer {
            inner,
            chat_template_source: chat_template.as_ref().map(|_| template_source),
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

    /// The last at most `max_tokens` token ids of `text`, and whether `text` had more.
    ///
    /// Tokenizing a huge text costs time and memory out of proportion to the few tokens a
    /// prompt may keep (a 10 MB line took minutes), so only a tail window of the text is
    /// tokenized, doubled until it yields enough tokens. Tokens starting in the window's first
    /// [`TAIL_MARGIN`] bytes are dropped because the cut may split a word differently; the rest
    /// equal the tail of the full tokenization for ordinary text. Texts shorter than the window
    /// are tokenized whole, exactly as [`Tokenizer::encode`] does.
    pub fn encode_tail(
        &self,
        text: &str,
        add_special_tokens: bool,
        max_tokens: usize,
    ) -> Result<(Vec<u32>, bool)> {
        let mut window = max_tokens.saturating_mul(8).saturating_add(2 * TAIL_MARGIN);
        loop {
            if window >= text.len() {
                let mut ids = self.encode(text, add_special_tokens)?;
                let over = ids.len() > max_tokens;
                if over {
                    ids.drain(..ids.len() - max_tokens);
                }
                return Ok((ids, over));
            }
            let mut start = text.len() - window;
            while !text.is_char_boundary(start) {
                start += 1;
            }
            let enc = self
                .inner
                .encode(&text[start..], add_special_tokens)
                .map_err(|e| anyhow!("tokenizing {:?}: {e}", truncate(&text[start..])))?;
            let first = enc
                .get_offsets()
                .iter()
                .position(|&(from, _)| from >= TAIL_MARGIN)
                .unwrap_or(enc.len());
            let ids = &enc.get_ids()[first..];
            if ids.len() >= max_tokens {
                return Ok((ids[ids.len() - max_tokens..].to_vec(), true));
            }
            window = window.saturating_mul(2);
        }
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

    /// The file the chat template came from (`tokenizer_config.json`, `chat_template.jinja` or
    /// `chat_template.json`), when there is one.
    pub fn chat_template_source(&self) -> Option<&Path> {
        self.chat_template_source.as_deref()
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
        let name = match &self.chat_template_source {
            Some(src) => format!("the chat template of {}", src.display()),
            None => "the chat template".to_string(),
        };
        render_named(
            template,
            &name,
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
    render_named(
        template,
        "the chat template",
        messages,
        add_generation_prompt,
        bos_token,
        eos_token,
    )
}

/// [`render_chat_template`], with `name` (which template, from which file) in its errors.
/// Output, instructions and heap are all bounded: [`MAX_RENDERED_TEMPLATE_BYTES`],
/// [`TEMPLATE_FUEL`] and [`TEMPLATE_HEAP_BYTES`].
fn render_named(
    template: &str,
    name: &str,
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
    env.set_fuel(Some(TEMPLATE_FUEL));
    env.add_template("chat", template)
        .map_err(|e| anyhow!("parsing {name}: {e}"))?;
    let tmpl = env
        .get_template("chat")
        .map_err(|e| anyhow!("loading {name}: {e}"))?;
    let ctx = minijinja::context! {
        messages => messages,
        add_generation_prompt => add_generation_prompt,
        bos_token => bos_token.unwrap_or(""),
        eos_token => eos_token.unwrap_or(""),
    };
    let mut out = CappedWriter {
        buf: Vec::new(),
        cap: MAX_RENDERED_TEMPLATE_BYTES,
        overflowed: false,
    };
    // Values built inside the template (a string doubled in a loop) never reach the output
    // cap: the heap budget stops them, ending the process with this message.
    let heap_message = format!(
        "rendering {name}: it builds more than {} MiB in memory (a string doubled in a loop?); \
         the template is broken or hostile: fix it, or set data.use_chat_template = false",
        TEMPLATE_HEAP_BYTES >> 20
    );
    let rendered = crate::heap_budget::with_budget(TEMPLATE_HEAP_BYTES, &heap_message, || {
        tmpl.render_captured_to(ctx, &mut out).map(|_| ())
    });
    match rendered {
        Ok(()) => {}
        Err(_) if out.overflowed => bail!(
            "rendering {name}: its output exceeds {} MiB; the template or a message is far too \
             long for a prompt",
            MAX_RENDERED_TEMPLATE_BYTES >> 20
        ),
        Err(e) if matches!(e.kind(), minijinja::ErrorKind::OutOfFuel) => bail!(
            "rendering {name}: stopped after {TEMPLATE_FUEL} template instructions (a runaway \
             loop?)"
        ),
        Err(e) => bail!("rendering {name}: {e:#}"),
    }
    String::from_utf8(out.buf).map_err(|e| anyhow!("rendering {name}: {e}"))
}

/// Collects rendered output and fails the write that would pass `cap` bytes.
struct CappedWriter {
    buf: Vec<u8>,
    cap: usize,
    overflowed: bool,
}

impl std::io::Write for CappedWriter {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        if self.buf.len() + data.len() > self.cap {
            self.overflowed = true;
            return Err(std::io::Error::other("rendered template too large"));
        }
        self.buf.extend_from_slice(data);
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
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
    fn runaway_chat_template_is_stopped_by_output_and_fuel_limits() {
        let msgs = [ChatMessage::new("user", "hi")];
        let t0 = std::time::Instant::now();
        // One expression producing 20 MB: over the output cap.
        let err = render_chat_template("{{ 'x' * 20000000 }}", &msgs, true, None, None)
            .unwrap_err()
            .to_string();
        assert!(err.contains("exceeds 16 MiB"), "{err}");
        // 10^10 loop iterations that print little: out of fuel.
        let looping =
            "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}";
        let err = render_chat_template(looping, &msgs, true, None, None)
            .unwrap_err()
            .to_string();
        assert!(err.contains("template instructions"), "{err}");
        // 10^8 characters through many small writes.
        let wide = "{% for i in range(100000) %}{{ 'y' * 1000 }}{% endfor %}";
        let err = render_chat_template(wide, &msgs, true, None, None)
            .unwrap_err()
            .to_string();
        assert!(err.contains("exceeds"), "{err}");
        assert!(t0.elapsed().as_secs() < 20, "{:?}", t0.elapsed());
    }

    #[test]
    fn tokenize_with_a_cap_keeps_the_exact_tail() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("models/tiny-math");
        let tok = Tokenizer::load(&dir).unwrap();
        let text: String = (0..3000).map(|i| format!("{i} + {} = ? ", i * 7)).collect();
        let full = tok.encode(&text, false).unwrap();
        assert!(full.len() > 2000, "{}", full.len());
        for cap in [1, 50, 300, full.len() - 1] {
            let (ids, over) = tok.encode_tail(&text, false, cap).unwrap();
            assert!(over);
            assert_eq!(ids, full[full.len() - cap..], "cap {cap}");
        }
        let (ids, over) = tok.encode_tail(&text, false, full.len()).unwrap();
        assert!(!over);
        assert_eq!(ids, full);
        // A 10 MB line without spaces is cut in milliseconds, not tokenized whole.
        let huge = "7".repeat(10_000_000);
        let t0 = std::time::Instant::now();
        let (ids, over) = tok.encode_tail(&huge, false, 100).unwrap();
        assert!(over && ids.len() == 100);
        assert!(t0.elapsed().as_secs_f64() < 5.0, "{:?}", t0.elapsed());
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
