//! Prompt building: an [`Example`] becomes chat messages; rendering them with the model's chat
//! template (and tokenising) is the model's job.

use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};

use super::dataset::Example;
use crate::model::{ChatMessage, Tokenizer};

/// The instruction Qwen2.5-Math was trained with; the verifiers read the `\boxed{}` it asks for.
pub const BOXED_INSTRUCTION: &str =
    "Please reason step by step, and put your final answer within \\boxed{}.";

/// The placeholder a user template must contain.
pub const QUESTION_PLACEHOLDER: &str = "{question}";

/// Names accepted by [`PromptTemplate::by_name`].
pub const TEMPLATE_NAMES: &[&str] = &["qwen_math", "qwen_boxed", "plain"];

/// One chat turn (`role` is `system`, `user` or `assistant`): the model's own type, so prompts
/// go straight into `Tokenizer::apply_chat_template`.
pub use crate::model::ChatMessage as Message;

/// A system prompt (optional) and a user message with a `{question}` placeholder.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PromptTemplate {
    pub system: Option<String>,
    pub user: String,
}

impl Default for PromptTemplate {
    fn default() -> Self {
        PromptTemplate::qwen_math()
    }
}

impl PromptTemplate {
    /// Checks that `user` has the `{question}` placeholder.
    pub fn new(system: Option<String>, user: impl Into<String>) -> Result<PromptTemplate> {
        let t = PromptTemplate {
            system,
            user: user.into(),
        };
        t.validate()?;
        Ok(t)
    }

    /// Qwen2.5-Math's evaluation prompt: the boxed instruction as the system message.
    pub fn qwen_math() -> PromptTemplate {
        PromptTemplate {
            system: Some(BOXED_INSTRUCTION.to_string()),
            user: QUESTION_PLACEHOLDER.to_string(),
        }
    }

    /// The same instruction appended to the question, for models without a system turn.
    pub fn qwen_boxed() -> PromptTemplate {
        PromptTemplate {
            system: None,
            user: format!("{QUESTION_PLACEHOLDER}\n{BOXED_INSTRUCTION}"),
        }
    }

    /// The question alone: shortest prompts, for the tiny model trained on the `arith` task.
    pub fn plain() -> PromptTemplate {
        PromptTemplate {
            system: None,
            user: QUESTION_PLACEHOLDER.to_string(),
        }
    }

    /// A built-in template by name; the error lists the valid names.
    pub fn by_name(name: &str) -> Result<PromptTemplate> {
        Ok(match name {
            "qwen_math" => Self::qwen_math(),
            "qwen_boxed" => Self::qwen_boxed(),
            "plain" => Self::plain(),
            other => bail!(
                "unknown prompt template `{other}`: expected one of {}",
                TEMPLATE_NAMES.join(", ")
            ),
        })
    }

    pub fn validate(&self) -> Result<()> {
        if !self.user.contains(QUESTION_PLACEHOLDER) {
            bail!(
                "prompt template user message `{}` lacks the {QUESTION_PLACEHOLDER} placeholder",
                self.user
            );
        }
        Ok(())
    }

    /// The user message for `question`.
    pub fn user_message(&self, question: &str) -> String {
        self.user.replace(QUESTION_PLACEHOLDER, question)
    }

    /// System (if any) and user turns for `question`.
    pub fn messages_for(&self, question: &str) -> Vec<Message> {
        let mut out = Vec::with_capacity(2);
        if let Some(system) = &self.system {
            out.push(Message::new("system", system.clone()));
        }
        out.push(Message::new("user", self.user_message(question)));
        out
    }

    /// The prompt turns for an example.
    pub fn messages(&self, example: &Example) -> Vec<Message> {
        self.messages_for(&example.question)
    }

    /// The prompt turns plus the reference solution as the assistant turn, for supervised
    /// warm-starts; `None` when the example has no solution.
    pub fn sft_messages(&self, example: &Example) -> Option<Vec<Message>> {
        let solution = example.solution.as_ref()?;
        let mut out = self.messages(example);
        out.push(Message::new("assistant", solution.clone()));
        Some(out)
    }
}

/// A prompt over the token limit of [`PromptFormat::encode_bounded`].
#[derive(Debug, thiserror::Error)]
#[error("the prompt is longer than {limit} tokens ({chars} characters rendered)")]
pub struct PromptTooLong {
    pub limit: usize,
    pub chars: usize,
}

/// How prompts are rendered: system message, user template with `{question}`, chat template.
#[derive(Debug, Clone)]
pub struct PromptFormat {
    pub system: Option<String>,
    pub user_template: String,
    pub use_chat_template: bool,
    /// Keep at most this many trailing prompt tokens; 0 = no limit.
    pub max_prompt_length: usize,
}

impl PromptFormat {
    /// Which template renders the prompts, for the log: the checkpoint's chat template (and
    /// its file), or plain text, saying why when a chat template was asked for but is missing.
    pub fn describe(&self, tokenizer: &Tokenizer) -> String {
        match (self.use_chat_template, tokenizer.chat_template_source()) {
            (true, Some(src)) => format!("the chat template of {}", src.display()),
            (true, None) => "plain text (`system\\n\\nuser`): data.use_chat_template = true \
                 but the tokenizer has no chat template (no `chat_template` in \
                 tokenizer_config.json, no chat_template.jinja)"
                .to_string(),
            (false, _) => "plain text (`system\\n\\nuser`, data.use_chat_template = false)".into(),
        }
    }

    pub fn render(&self, tokenizer: &Tokenizer, question: &str) -> Result<String> {
        let user = self.user_template.replace("{question}", question);
        if self.use_chat_template && tokenizer.has_chat_template() {
            let mut messages = Vec::new();
            if let Some(system) = &self.system {
                messages.push(ChatMessage::new("system", system.clone()));
            }
            messages.push(ChatMessage::new("user", user));
            tokenizer.apply_chat_template(&messages, true)
        } else {
            Ok(match &self.system {
                Some(system) => format!("{system}\n\n{user}"),
                None => user,
            })
        }
    }

    /// Token ids of the rendered prompt. A chat template already spells its special tokens, so
    /// the tokenizer adds none then; raw text gets them (e.g. Llama's BOS).
    pub fn encode(&self, tokenizer: &Tokenizer, question: &str) -> Result<Vec<u32>> {
        self.encode_bounded(tokenizer, question, usize::MAX)
    }

    /// [`PromptFormat::encode`] for a model that takes at most `limit` prompt tokens. Prompts
    /// over `max_prompt_length` keep their last `max_prompt_length` tokens (TRL's left
    /// truncation); a prompt still over `limit` is an error, found without tokenizing more
    /// than about `limit` tokens' worth of text however long the prompt is.
    pub fn encode_bounded(
        &self,
        tokenizer: &Tokenizer,
        question: &str,
        limit: usize,
    ) -> Result<Vec<u32>> {
        let text = self.render(tokenizer, question)?;
        let chat = self.use_chat_template && tokenizer.has_chat_template();
        let cap = match self.max_prompt_length {
            0 => limit,
            m => m.min(limit.saturating_add(1)),
        };
        let (ids, over) = if cap == usize::MAX {
            (tokenizer.encode(&text, !chat)?, false)
        } else {
            tokenizer.encode_tail(&text, !chat, cap)?
        };
        if ids.len() > limit || (over && self.max_prompt_length == 0) {
            return Err(PromptTooLong {
                limit,
                chars: text.chars().count(),
            }
            .into());
        }
        Ok(ids)
    }

    /// Encodes every example's prompt for a model with `context` positions that will generate
    /// up to `new_tokens` after it (`new_tokens_key` names the config key that sets that), in
    /// parallel, before anything large is allocated. The error names `source` (e.g.
    /// ``data.train = `x.jsonl` ``), the row's line and the keys that bound it.
    pub fn encode_all(
        &self,
        tokenizer: &Tokenizer,
        examples: &[Example],
        source: &str,
        context: usize,
        new_tokens: usize,
        new_tokens_key: &str,
    ) -> Result<Vec<Vec<u32>>> {
        use rayon::prelude::*;
        let limit = context
            .checked_sub(new_tokens)
            .filter(|&l| l > 0)
            .ok_or_else(|| {
                anyhow::anyhow!(
                    "{new_tokens_key} = {new_tokens} leaves no room for a prompt in the model's \
                 max_position_embeddings ({context})"
                )
            })?;
        if self.max_prompt_length > limit {
            bail!(
                "data.max_prompt_length = {} plus {new_tokens_key} = {new_tokens} exceeds the \
                 model's max_position_embeddings ({context}); lower one of them",
                self.max_prompt_length
            );
        }
        examples
            .par_iter()
            .map(|ex| {
                self.encode_bounded(tokenizer, &ex.question, limit)
                    .map_err(|e| {
                        if !e.is::<PromptTooLong>() {
                            return anyhow::anyhow!("{source}: line {}: {e:#}", ex.line);
                        }
                        anyhow::anyhow!(
                            "{source}: line {}: {e:#}; the model's max_position_embeddings \
                             ({context}) minus {new_tokens_key} ({new_tokens}) leaves {limit} \
                             tokens for a prompt: set data.max_prompt_length to keep only the end \
                             of long prompts, or shorten the row",
                            ex.line
                        )
                    })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ex() -> Example {
        Example {
            id: "x".into(),
            question: "Tom has 3 pens. He buys 4 more. How many pens does Tom have now?".into(),
            answer: "7".into(),
            solution: Some("3+4=7. \\boxed{7}".into()),
            subject: None,
            level: Some("1".into()),
            line: 0,
        }
    }

    #[test]
    fn qwen_math_puts_instruction_in_system_turn() {
        let m = PromptTemplate::qwen_math().messages(&ex());
        assert_eq!(m.len(), 2);
        assert_eq!(m[0], Message::new("system", BOXED_INSTRUCTION));
        assert_eq!(m[1].role, "user");
        assert_eq!(m[1].content, ex().question);
        assert!(BOXED_INSTRUCTION.ends_with("within \\boxed{}."));
    }

    #[test]
    fn boxed_and_plain_templates() {
        let m = PromptTemplate::qwen_boxed().messages(&ex());
        assert_eq!(m.len(), 1);
        assert_eq!(
            m[0].content,
            format!("{}\n{BOXED_INSTRUCTION}", ex().question)
        );
        let m = PromptTemplate::by_name("plain")
            .unwrap()
            .sft_messages(&ex())
            .unwrap();
        assert_eq!(m.len(), 2);
        assert_eq!(m[1], Message::new("assistant", "3+4=7. \\boxed{7}"));
    }

    #[test]
    fn bad_templates_are_errors() {
        let err = PromptTemplate::new(None, "Solve: {q}")
            .unwrap_err()
            .to_string();
        assert!(err.contains("{question}"), "{err}");
        let err = PromptTemplate::by_name("qwen").unwrap_err().to_string();
        assert!(err.contains("qwen_math, qwen_boxed, plain"), "{err}");
        let t: PromptTemplate = toml::from_str("system = \"S\"\nuser = \"Q: {question}\"").unwrap();
        assert_eq!(t.user_message("1+1"), "Q: 1+1");
        assert!(toml::from_str::<PromptTemplate>("user = \"{question}\"\nextra = 1").is_err());
    }
}
