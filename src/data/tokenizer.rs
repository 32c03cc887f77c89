//! Trains the byte-level BPE tokenizer of the tiny built-in model and writes it in Hugging Face
//! layout (`tokenizer.json`, `tokenizer_config.json`, `generation_config.json`).
//!
//! It mirrors Qwen2's tokenizer: the same split regex (every digit its own piece, which makes
//! arithmetic learnable by a tiny model), byte-level encoding, and the ChatML special tokens
//! `<|endoftext|>` (pad, id 0), `<|im_start|>` (1) and `<|im_end|>` (2, eos).

use std::collections::HashSet;
use std::fs;
use std::path::Path;

use anyhow::{anyhow, ensure, Context, Result};
use serde_json::json;
use tokenizers::decoders::DecoderWrapper;
use tokenizers::models::bpe::{BpeTrainerBuilder, BPE};
use tokenizers::normalizers::NormalizerWrapper;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::pre_tokenizers::PreTokenizerWrapper;
use tokenizers::processors::PostProcessorWrapper;
use tokenizers::{AddedToken, SplitDelimiterBehavior, Tokenizer, TokenizerBuilder, TokenizerImpl};

use super::prompt::{Message, PromptTemplate};

/// Special tokens in id order: pad, chat turn start, chat turn end (= eos).
pub const SPECIAL_TOKENS: [&str; 3] = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"];
pub const PAD_ID: u32 = 0;
pub const EOS_ID: u32 = 2;

/// Qwen2's pre-tokenizer regex: single digits, words with one leading non-letter, punctuation runs.
pub const QWEN2_SPLIT_REGEX: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// The ChatML template of Qwen2 checkpoints (as in `tests/fixtures/tiny-qwen2`).
pub const CHAT_TEMPLATE: &str = "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";

/// Renders messages the way [`CHAT_TEMPLATE`] does, so the trainer sees the text the model will.
pub fn render_chatml(messages: &[Message]) -> String {
    messages
        .iter()
        .map(|m| format!("<|im_start|>{}\n{}<|im_end|>\n", m.role, m.content))
        .collect()
}

type BpeTokenizer = TokenizerImpl<
    BPE,
    NormalizerWrapper,
    PreTokenizerWrapper,
    PostProcessorWrapper,
    DecoderWrapper,
>;

/// An untrained tokenizer with Qwen2's pre-tokenizer and decoder and the special tokens.
fn empty_tokenizer() -> Result<BpeTokenizer> {
    let split = Split::new(
        SplitPattern::Regex(QWEN2_SPLIT_REGEX.to_string()),
        SplitDelimiterBehavior::Isolated,
        false,
    )
    .map_err(|e| anyhow!("building the split regex: {e}"))?;
    let byte_level = ByteLevel::new(false, false, false);
    let pre = Sequence::new(vec![
        PreTokenizerWrapper::Split(split),
        PreTokenizerWrapper::ByteLevel(byte_level),
    ]);
    let mut tok: BpeTokenizer = TokenizerBuilder::new()
        .with_model(BPE::default())
        .with_normalizer(None)
        .with_pre_tokenizer(Some(PreTokenizerWrapper::Sequence(pre)))
        .with_post_processor(Some(PostProcessorWrapper::ByteLevel(byte_level)))
        .with_decoder(Some(DecoderWrapper::ByteLevel(byte_level)))
        .build()
        .map_err(|e| anyhow!("building the tokenizer: {e}"))?;
    // Registered before training so the trainer sees them as atoms, not text to merge.
    tok.add_special_tokens(special_tokens())
        .map_err(|e| anyhow!("adding special tokens: {e}"))?;
    Ok(tok)
}

fn special_tokens() -> Vec<AddedToken> {
    SPECIAL_TOKENS
        .iter()
        .map(|t| AddedToken::from(t.to_string(), true))
        .collect()
}

/// Trains a BPE of `vocab_size` tokens (specials and the 256 byte symbols included) on `texts`.
pub fn train_tokenizer<I, S>(texts: I, vocab_size: usize) -> Result<Tokenizer>
where
    I: Iterator<Item = S> + Send,
    S: AsRef<str> + Send,
{
    let base = SPECIAL_TOKENS.len() + 256;
    ensure!(
        vocab_size > base,
        "vocab size {vocab_size} leaves no room for merges: it must exceed {base} (3 special + 256 byte tokens)"
    );
    let alphabet: HashSet<char> = ByteLevel::alphabet().into_iter().collect();
    let mut trainer = BpeTrainerBuilder::new()
        .show_progress(false)
        .vocab_size(vocab_size)
        .min_frequency(2)
        .special_tokens(special_tokens())
        .initial_alphabet(alphabet)
        .build();
    let mut tok = empty_tokenizer()?;
    tok.train(&mut trainer, texts)
        .map_err(|e| anyhow!("training the tokenizer: {e}"))?;
    let tok = Tokenizer::from(tok);
    for (id, t) in SPECIAL_TOKENS.iter().enumerate() {
        ensure!(
            tok.token_to_id(t) == Some(id as u32),
            "special token {t} did not get id {id}"
        );
    }
    Ok(tok)
}

/// The text a tokenizer for the built-in task is trained on: every question and solution as the
/// model sees them, inside ChatML turns with the `qwen_math` and `plain` prompts (alternating).
///
/// The text is cut at the special tokens: the trainer would otherwise count `<|im_start|>` as a
/// word and spend merges on it, although encoding always splits it off first.
pub fn training_texts(rows: &[(String, String)]) -> Vec<String> {
    let templates = [PromptTemplate::qwen_math(), PromptTemplate::plain()];
    let mut out = Vec::with_capacity(rows.len() * 4);
    for (i, (question, solution)) in rows.iter().enumerate() {
        let mut msgs = templates[i % templates.len()].messages_for(question);
        msgs.push(Message::new("assistant", solution.clone()));
        let mut text = render_chatml(&msgs);
        for special in SPECIAL_TOKENS {
            text = text.replace(special, "\0");
        }
        out.extend(
            text.split("\0")
                .filter(|piece| !piece.is_empty())
                .map(str::to_string),
        );
    }
    out
}

/// Writes `tokenizer.json`, `tokenizer_config.json` and `generation_config.json` into `dir`.
pub fn save_hf(tok: &Tokenizer, dir: &Path, model_max_length: usize) -> Result<()> {
    fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let path = dir.join("tokenizer.json");
    tok.save(&path, true)
        .map_err(|e| anyhow!("writing {}: {e}", path.display()))?;
    let mut added = serde_json::Map::new();
    for (id, t) in SPECIAL_TOKENS.iter().enumerate() {
        added.insert(
            id.to_string(),
            json!({"content": t, "special": true, "lstrip": false, "rstrip": false,
                   "normalized": false, "single_word": false}),
        );
    }
    let config = json!({
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": null,
        "eos_token": SPECIAL_TOKENS[EOS_ID as usize],
        "pad_token": SPECIAL_TOKENS[PAD_ID as usize],
        "chat_template": CHAT_TEMPLATE,
        "model_max_length": model_max_length,
        "added_tokens_decoder": added,
    });
    let generation = json!({
        "bos_token_id": null,
        "eos_token_id": EOS_ID,
        "pad_token_id": PAD_ID,
    });
    for (name, value) in [
        ("tokenizer_config.json", config),
        ("generation_config.json", generation),
    ] {
        let path = dir.join(name);
        let text = serde_json::to_string_pretty(&value)? + "\n";
        fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

/// Mean token count of `texts` (no special tokens added).
pub fn mean_tokens<'a>(tok: &Tokenizer, texts: impl Iterator<Item = &'a str>) -> Result<f64> {
    let (mut n, mut total) = (0usize, 0usize);
    for t in texts {
        let enc = tok
            .encode(t, false)
            .map_err(|e| anyhow!("encoding `{t}`: {e}"))?;
        total += enc.len();
        n += 1;
    }
    Ok(if n == 0 { 0.0 } else { total as f64 / n as f64 })
}
