//! `[lora]`: LoRA adapters instead of full fine-tuning, keys named as PEFT's `LoraConfig`
//! (the adapters themselves: `model::lora`).

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

/// The linear layers of a Qwen2 / Llama decoder block, as PEFT names them.
pub const LINEAR_MODULES: [&str; 7] = [
    "q_proj",
    "k_proj",
    "v_proj",
    "o_proj",
    "gate_proj",
    "up_proj",
    "down_proj",
];

/// `target_modules`: module names (PEFT matches a name or a `.name` suffix), `"all-linear"`,
/// or any other string, which PEFT reads as a regular expression matched against the whole
/// module path (`model.layers.0.self_attn.q_proj`).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum TargetModules {
    List(Vec<String>),
    Pattern(String),
}

impl<'de> Deserialize<'de> for TargetModules {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = TargetModules;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str(
                    "a list of module names such as [\"q_proj\", \"v_proj\"], or \"all-linear\"",
                )
            }
            fn visit_str<E: serde::de::Error>(
                self,
                s: &str,
            ) -> std::result::Result<Self::Value, E> {
                Ok(TargetModules::Pattern(s.to_string()))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut a: A,
            ) -> std::result::Result<Self::Value, A::Error> {
                let mut v = Vec::new();
                while let Some(x) = a.next_element::<String>()? {
                    v.push(x);
                }
                Ok(TargetModules::List(v))
            }
        }
        d.deserialize_any(V)
    }
}

/// `[lora]`: named as PEFT's `LoraConfig`. Off while `r = 0`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LoraConfig {
    /// Rank; 0 = no adapter (full fine-tuning).
    pub r: usize,
    pub lora_alpha: f64,
    /// Dropout on the adapter's input, in the training forward only.
    pub lora_dropout: f64,
    pub target_modules: TargetModules,
    /// Scale by `lora_alpha / √r` instead of `lora_alpha / r` (Kalajdzievski, 2023).
    pub use_rslora: bool,
}

impl Default for LoraConfig {
    /// PEFT's defaults (its Qwen2 / Llama default targets are `q_proj`, `v_proj`), with `r = 0`.
    fn default() -> Self {
        Self {
            r: 0,
            lora_alpha: 8.0,
            lora_dropout: 0.0,
            target_modules: TargetModules::List(vec!["q_proj".into(), "v_proj".into()]),
            use_rslora: false,
        }
    }
}

impl LoraConfig {
    pub fn enabled(&self) -> bool {
        self.r > 0
    }

    /// The factor `s` on `B A`.
    pub fn scaling(&self) -> f64 {
        if self.use_rslora {
            self.lora_alpha / (self.r as f64).sqrt()
        } else {
            self.lora_alpha / self.r as f64
        }
    }

    /// Checks the keys against each other; `what` prefixes errors (`lora` or a file name).
    /// With LoRA off (`r = 0`) the other keys are unused, but a bad value is still an error
    /// rather than silently accepted.
    pub fn validate(&self, what: &str) -> Result<()> {
        if !(self.lora_alpha.is_finite() && self.lora_alpha > 0.0) {
            bail!(
                "{what}.lora_alpha: expected a positive number, got {}",
                self.lora_alpha
            );
        }
        if !(0.0..1.0).contains(&self.lora_dropout) {
            bail!(
                "{what}.lora_dropout: expected a value in [0, 1), got {}",
                self.lora_dropout
            );
        }
        match &self.target_modules {
            TargetModules::List(names) => {
                if names.is_empty() {
                    bail!(
                        "{what}.target_modules: empty list (name some of {} or use \"all-linear\")",
                        LINEAR_MODULES.join(", ")
                    );
                }
                for n in names {
                    let last = n.rsplit('.').next().unwrap_or(n);
                    if !LINEAR_MODULES.contains(&last) {
                        bail!(
                            "{what}.target_modules: `{n}` is not a linear layer of a Qwen2/Llama block (expected {} or \"all-linear\")",
                            LINEAR_MODULES.join(", ")
                        );
                    }
                }
            }
            TargetModules::Pattern(p) if p == "all-linear" => {}
            TargetModules::Pattern(p) => {
                regex::Regex::new(&format!("^(?:{p})$")).with_context(|| {
                    format!("{what}.target_modules: `{p}` is neither \"all-linear\" nor a valid regular expression")
                })?;
            }
        }
        Ok(())
    }

    /// Whether the module at `path` (e.g. `model.layers.3.mlp.up_proj`) gets an adapter.
    pub fn targets(&self, path: &str) -> bool {
        let last = path.rsplit('.').next().unwrap_or(path);
        match &self.target_modules {
            TargetModules::List(names) => names
                .iter()
                .any(|n| path == n || path.ends_with(&format!(".{n}"))),
            TargetModules::Pattern(p) if p == "all-linear" => LINEAR_MODULES.contains(&last),
            TargetModules::Pattern(p) => regex::Regex::new(&format!("^(?:{p})$"))
                .map(|re| re.is_match(path))
                .unwrap_or(false),
        }
    }
}
