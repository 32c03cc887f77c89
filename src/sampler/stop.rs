//! When a completion ends, and its text as it grows.
//!
//! A completion ends at an EOS id (unless `ignore_eos`), at the first occurrence of a stop
//! string, or at `max_new_tokens`. Stop strings may span token boundaries, so they are matched on
//! the decoded text, which grows incrementally. The tokens that produced the stop string stay in
//! `token_ids` (the trainer scores what was sampled), but the stop string and anything after it
//! are excluded from `text`, as in vLLM and the OpenAI API.

use std::fmt;

use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};

/// Why a completion ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FinishReason {
    /// An EOS token was sampled (it is the last of `token_ids`).
    Eos,
    /// A stop string appeared in the decoded text.
    Stop,
    /// `max_new_tokens` were generated.
    Length,
}

impl FinishReason {
    pub fn as_str(self) -> &'static str {
        match self {
            FinishReason::Eos => "eos",
            FinishReason::Stop => "stop",
            FinishReason::Length => "length",
        }
    }
}

impl fmt::Display for FinishReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Rejects empty stop strings, which would end every completion before its first token.
pub fn validate_stops(stops: &[String]) -> Result<()> {
    if let Some(i) = stops.iter().position(|s| s.is_empty()) {
        bail!("stop[{i}]: stop strings must be non-empty");
    }
    Ok(())
}

/// Detokenises a growing token list a few tokens at a time (the prefix/read-offset scheme of
/// TGI and vLLM). Decoding a short window with some left context keeps tokenizers that strip a
/// leading space or merge bytes (byte-level BPE splits UTF-8 characters across tokens) correct,
/// at O(window) cost per token instead of re-decoding the whole completion.
#[derive(Debug, Clone, Default)]
pub struct IncrementalDecoder {
    prefix_offset: usize,
    read_offset: usize,
}

impl IncrementalDecoder {
    /// Text added by the tokens after the last call; empty while the tail is an incomplete
    /// UTF-8 character (decoded as U+FFFD).
    pub fn next(
        &mut self,
        ids: &[u32],
        decode: impl Fn(&[u32]) -> Result<String>,
    ) -> Result<String> {
        self.advance(ids, decode, false)
    }

    /// Like [`next`](Self::next) but also releases an incomplete tail (at the end of a row).
    pub fn flush(
        &mut self,
        ids: &[u32],
        decode: impl Fn(&[u32]) -> Result<String>,
    ) -> Result<String> {
        self.advance(ids, decode, true)
    }

    fn advance(
        &mut self,
        ids: &[u32],
        decode: impl Fn(&[u32]) -> Result<String>,
        force: bool,
    ) -> Result<String> {
        if ids.len() <= self.read_offset {
            return Ok(String::new());
        }
        let prefix = if self.read_offset > self.prefix_offset {
            decode(&ids[self.prefix_offset..self.read_offset])?
        } else {
            String::new()
        };
        let full = decode(&ids[self.prefix_offset..])?;
        if !force && (full.len() <= prefix.len() || full.ends_with('\u{FFFD}')) {
            return Ok(String::new());
        }
        let delta = match full.strip_prefix(prefix.as_str()) {
            Some(rest) => rest.to_string(),
            // The context decoded differently once more tokens followed: emit the new part by
            // length, the best available guess.
            None => full.get(prefix.len()..).unwrap_or_default().to_string(),
        };
        self.prefix_offset = self.read_offset;
        self.read_offset = ids.len();
        Ok(delta)
    }
}

/// The decoded text of one completion, matched against the stop strings as it grows.
#[derive(Debug, Clone)]
pub struct StopMatcher {
    stops: Vec<String>,
    max_stop_len: usize,
    text: String,
    emitted: usize,
    stopped: bool,
}

impl StopMatcher {
    pub fn new(stops: &[String]) -> Self {
        Self {
            stops: stops.to_vec(),
            max_stop_len: stops.iter().map(String::len).max().unwrap_or(0),
            text: String::new(),
            emitted: 0,
            stopped: false,
        }
    }

    /// Appends decoded text; returns true once a stop string has appeared, after which the text
    /// ends just before the stop string and further pushes are ignored.
    pub fn push(&mut self, delta: &str) -> bool {
        if self.stopped || delta.is_empty() {
            return self.stopped;
        }
        let old_len = self.text.len();
        self.text.push_str(delta);
        if self.stops.is_empty() {
            return false;
        }
        // A new match must overlap the new text, so it starts at most max_len - 1 bytes earlier.
        let mut from = old_len.saturating_sub(self.max_stop_len.saturating_sub(1));
        while !self.text.is_char_boundary(from) {
            from -= 1;
        }
        if let Some(pos) = earliest_stop(&self.text[from..], &self.stops) {
            self.text.truncate(from + pos);
            self.emitted = self.emitted.min(self.text.len());
            self.stopped = true;
        }
        self.stopped
    }

    pub fn stopped(&self) -> bool {
        self.stopped
    }

    /// The text so far (without any stop string).
    pub fn text(&self) -> &str {
        &self.text
    }

    /// New text that is safe to stream: everything not yet released except a tail that could
    /// still grow into a stop string. Pass `finished` to release the tail too.
    pub fn take_ready(&mut self, finished: bool) -> &str {
        let end = if finished || self.stopped {
            self.text.len()
        } else {
            self.text.len() - self.held_back()
        };
        let start = self.emitted.min(end);
        self.emitted = end.max(self.emitted);
        &self.text[start..end]
    }

    /// Length of the longest suffix of the text that is a proper prefix of a stop string.
    fn held_back(&self) -> usize {
        let pending = &self.text[self.emitted.min(self.text.len())..];
        let mut held = 0;
        for stop in &self.stops {
            for l in (held + 1..stop.len().min(pending.len() + 1)).rev() {
                if stop.is_char_boundary(l) && pending.ends_with(&stop[..l]) {
                    held = l;
                    break;
                }
            }
        }
        held
    }
}

/// Byte offset of the earliest occurrence of any stop string in `text`.
pub fn earliest_stop(text: &str, stops: &[String]) -> Option<usize> {
    stops.iter().filter_map(|s| text.find(s.as_str())).min()
}

/// `text` cut before its first stop string (unchanged when none occurs).
pub fn cut_at_stop<'a>(text: &'a str, stops: &[String]) -> &'a str {
    match earliest_stop(text, stops) {
        Some(pos) => &text[..pos],
        None => text,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stops(s: &[&str]) -> Vec<String> {
        s.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn stop_spanning_pushes_is_found_and_excluded() {
        let mut m = StopMatcher::new(&stops(&["\n\n", "Question:"]));
        assert!(!m.push("The answer is 4"));
        assert!(!m.push(".\nQues"));
        assert!(m.push("tion: next"));
        assert_eq!(m.text(), "The answer is 4.\n");
        // later pushes change nothing
        assert!(m.push("more"));
        assert_eq!(m.text(), "The answer is 4.\n");
    }

    #[test]
    fn earliest_of_several_stops_wins() {
        let mut m = StopMatcher::new(&stops(&["bc", "ab"]));
        assert!(m.push("xabc"));
        assert_eq!(m.text(), "x");
        assert_eq!(cut_at_stop("xabcab", &stops(&["bc", "ab"])), "x");
        assert_eq!(cut_at_stop("none here", &stops(&["bc"])), "none here");
    }

    #[test]
    fn streaming_holds_back_possible_stop_prefix() {
        let mut m = StopMatcher::new(&stops(&["</answer>"]));
        m.push("42</ans");
        assert_eq!(m.take_ready(false), "42");
        m.push("wer>tail");
        assert!(m.stopped());
        assert_eq!(m.take_ready(false), "");
        assert_eq!(m.text(), "42");

        let mut m = StopMatcher::new(&stops(&["</answer>"]));
        m.push("a</");
        assert_eq!(m.take_ready(false), "a");
        m.push("b");
        assert_eq!(m.take_ready(false), "</b");
        m.push("</");
        assert_eq!(m.take_ready(true), "</");
    }

    #[test]
    fn multibyte_text_near_stop_boundary() {
        let mut m = StopMatcher::new(&stops(&["é!"]));
        assert!(!m.push("café"));
        assert_eq!(m.take_ready(false), "caf");
        assert!(m.push("!"));
        assert_eq!(m.text(), "caf");
    }

    #[test]
    fn incremental_decoder_waits_for_complete_characters() {
        // Toy byte tokenizer: token = one byte.
        let decode = |ids: &[u32]| -> Result<String> {
            let bytes: Vec<u8> = ids.iter().map(|&i| i as u8).collect();
            Ok(String::from_utf8_lossy(&bytes).into_owned())
        };
        let bytes = "hé!"
            .as_bytes()
            .iter()
            .map(|&b| u32::from(b))
            .collect::<Vec<_>>();
        let mut d = IncrementalDecoder::default();
        let mut out = Vec::new();
        for n in 1..=bytes.len() {
            out.push(d.next(&bytes[..n], decode).unwrap());
        }
        assert_eq!(out, ["h", "", "é", "!"]);
        let mut d = IncrementalDecoder::default();
        assert_eq!(d.next(&bytes[..1], decode).unwrap(), "h");
        assert_eq!(d.flush(&bytes[..2], decode).unwrap(), "\u{FFFD}");
    }

    #[test]
    fn empty_stop_rejected() {
        assert!(validate_stops(&stops(&["a", ""])).is_err());
        assert!(validate_stops(&stops(&["a"])).is_ok());
    }
}
