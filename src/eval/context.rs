//! Fitting generation into the model's context window.
//!
//! A completion can only be as long as the context left after its prompt: past
//! `max_position_embeddings` the positions were never trained (and a KV cache sized by them
//! overflows). `grpo eval`'s default of 2048 new tokens is for real checkpoints; on a small model
//! it is capped, with a note, instead of producing garbage.

use anyhow::{bail, Result};

use super::{EvalSet, EvalSettings};
use crate::model::Tokenizer;

/// The most new tokens that fit after a prompt of `longest_prompt` tokens in a `context`-token
/// window: `min(requested, context − longest_prompt)`. An error when no token fits.
pub fn context_cap(requested: usize, longest_prompt: usize, context: usize) -> Result<usize> {
    if longest_prompt >= context {
        bail!(
            "a prompt of {longest_prompt} tokens leaves no room in the model's {context}-token \
             context (keep fewer prompt tokens with --max-prompt-length)"
        );
    }
    Ok(requested.min(context - longest_prompt))
}

/// `settings` with `max_new_tokens` capped so that every evaluated prompt of `set` plus its
/// completion fits `context` tokens, a note saying so when the cap applied, and the longest
/// prompt's tokens.
pub fn fit_to_context(
    settings: &EvalSettings,
    set: &EvalSet,
    tokenizer: &Tokenizer,
    context: usize,
) -> Result<(EvalSettings, Option<String>, usize)> {
    let num = set.num_problems(settings.limit);
    let mut longest = 0;
    for ex in &set.examples[..num] {
        // Bounded: a prompt as long as the context is already an error (no room to generate).
        let len = match settings
            .prompt
            .encode_bounded(tokenizer, &set.question(ex), context)
        {
            Ok(ids) => ids.len(),
            Err(e) if e.is::<crate::data::prompt::PromptTooLong>() => bail!(
                "{}: problem {} (line {}): {e}, the model's whole {context}-token context, \
                 leaving no room to generate (keep fewer prompt tokens with \
                 --max-prompt-length, or shorten it)",
                set.name,
                ex.id,
                ex.line
            ),
            Err(e) => return Err(e),
        };
        longest = longest.max(len);
    }
    let cap = context_cap(settings.max_new_tokens, longest, context)
        .map_err(|e| anyhow::anyhow!("{}: {e}", set.name))?;
    let mut fitted = settings.clone();
    if cap == settings.max_new_tokens {
        return Ok((fitted, None, longest));
    }
    fitted.max_new_tokens = cap;
    let note = format!(
        "{}: max_new_tokens {} capped at {cap}: the longest of {num} prompts has {longest} tokens \
         and the model's context is {context}",
        set.name, settings.max_new_tokens
    );
    Ok((fitted, Some(note), longest))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cap_leaves_room_for_the_longest_prompt() {
        // tiny-math: 512-token context, 2048 requested.
        assert_eq!(context_cap(2048, 40, 512).unwrap(), 472);
        assert_eq!(context_cap(100, 40, 512).unwrap(), 100);
        assert_eq!(context_cap(472, 40, 512).unwrap(), 472);
        assert_eq!(context_cap(2048, 511, 512).unwrap(), 1);
        let err = context_cap(2048, 512, 512).unwrap_err().to_string();
        assert!(err.contains("512-token context"), "{err}");
        assert!(err.contains("--max-prompt-length"), "{err}");
    }
}
