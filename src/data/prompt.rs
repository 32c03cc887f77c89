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
        let text = self.render(tokenizer, question)?;
        let chat = self.use_chat_template && tokenizer.has_chat_template();
        let mut ids = tokenizer.encode(&text, !chat)?;
        if self.max_prompt_length > 0 && ids.len() > self.max_prompt_length {
            ids.drain(..ids.len() - self.max_prompt_length);
        }
        Ok(ids)
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
