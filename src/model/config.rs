//! Architecture hyper-parameters read from a Hugging Face `config.json`.
//!
//! Both the transformers-4 layout (top-level `rope_theta`, `torch_dtype`) and the
//! transformers-5 layout (`rope_parameters.rope_theta`, `dtype`) are accepted. The raw JSON is
//! kept so that saving writes back the same keys a checkpoint came with.

use anyhow::{anyhow, bail, Context, Result};
use serde_json::{Map, Value};
use std::path::Path;

/// Model families this crate implements (both share one decoder implementation).
pub const SUPPORTED_MODEL_TYPES: &[&str] = &["qwen2", "llama"];

/// Which architecture family a checkpoint belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModelFamily {
    Qwen2,
    Llama,
}

/// How rotary frequencies are rescaled for long contexts.
#[derive(Debug, Clone, PartialEq)]
pub enum RopeScaling {
    /// Plain RoPE.
    Default,
    /// Positions divided by `factor` (HF `rope_type: "linear"`).
    Linear { factor: f64 },
    /// Llama-3 frequency-dependent scaling (Llama 3.1 / 3.2 checkpoints).
    Llama3 {
        factor: f64,
        low_freq_factor: f64,
        high_freq_factor: f64,
        original_max_position_embeddings: f64,
    },
}

/// Hyper-parameters of a Qwen2 / Llama decoder.
#[derive(Debug, Clone)]
pub struct ModelConfig {
    pub family: ModelFamily,
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub num_key_value_heads: usize,
    pub head_dim: usize,
    pub rms_norm_eps: f64,
    pub rope_theta: f64,
    pub rope_scaling: RopeScaling,
    pub tie_word_embeddings: bool,
    /// q/k/v projections carry a bias (always true for Qwen2).
    pub attention_bias: bool,
    /// gate/up/down projections (and, for Llama, `o_proj`) carry a bias.
    pub mlp_bias: bool,
    pub max_position_embeddings: usize,
    pub bos_token_id: Option<u32>,
    pub eos_token_ids: Vec<u32>,
    /// On-disk dtype name (`torch_dtype` or `dtype`), e.g. "bfloat16".
    pub torch_dtype: Option<String>,
    pub initializer_range: f64,
    /// The JSON the config was parsed from; `to_json` writes the typed fields back into it.
    pub raw: Value,
}

fn get_usize(obj: &Map<String, Value>, key: &str, src: &str) -> Result<Option<usize>> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v
            .as_u64()
            .map(|x| Some(x as usize))
            .ok_or_else(|| anyhow!("{src}: key `{key}` must be a non-negative integer, got {v}")),
    }
}

fn req_usize(obj: &Map<String, Value>, key: &str, src: &str) -> Result<usize> {
    get_usize(obj, key, src)?.ok_or_else(|| anyhow!("{src}: missing required key `{key}`"))
}

fn get_f64(obj: &Map<String, Value>, key: &str, src: &str) -> Result<Option<f64>> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v
            .as_f64()
            .map(Some)
            .ok_or_else(|| anyhow!("{src}: key `{key}` must be a number, got {v}")),
    }
}

fn get_bool(obj: &Map<String, Value>, key: &str, src: &str) -> Result<Option<bool>> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v
            .as_bool()
            .map(Some)
            .ok_or_else(|| anyhow!("{src}: key `{key}` must be true or false, got {v}")),
    }
}

/// Token ids given as an int, a list of ints, or null.
fn get_ids(obj: &Map<String, Value>, key: &str, src: &str) -> Result<Vec<u32>> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(vec![]),
        Some(Value::Array(a)) => a
            .iter()
            .map(|v| {
                v.as_u64()
                    .map(|x| x as u32)
                    .ok_or_else(|| anyhow!("{src}: `{key}` must hold integers, got {v}"))
            })
            .collect(),
        Some(v) => v
            .as_u64()
            .map(|x| vec![x as u32])
            .ok_or_else(|| anyhow!("{src}: `{key}` must be an integer or a list, got {v}")),
    }
}

fn parse_rope_scaling(obj: &Map<String, Value>, src: &str, max_pos: usize) -> Result<RopeScaling> {
    let scaling = match obj.get("rope_scaling") {
        Some(Value::Object(m)) => Some(m),
        None | Some(Value::Null) => None,
        Some(v) => bail!("{src}: `rope_scaling` must be an object or null, got {v}"),
    };
    let params = match obj.get("rope_parameters") {
        Some(Value::Object(m)) => Some(m),
        _ => None,
    };
    let Some(m) = scaling.or(params) else {
        return Ok(RopeScaling::Default);
    };
    let ty = m
        .get("rope_type")
        .or_else(|| m.get("type"))
        .and_then(|v| v.as_str())
        .unwrap_or("default");
    let factor = || -> Result<f64> {
        get_f64(m, "factor", src)?
            .ok_or_else(|| anyhow!("{src}: rope type `{ty}` needs a `factor`"))
    };
    match ty {
        "default" => Ok(RopeScaling::Default),
        "linear" => Ok(RopeScaling::Linear { factor: factor()? }),
        "llama3" => Ok(RopeScaling::Llama3 {
            factor: factor()?,
            low_freq_factor: get_f64(m, "low_freq_factor", src)?.unwrap_or(1.0),
            high_freq_factor: get_f64(m, "high_freq_factor", src)?.unwrap_or(4.0),
            original_max_position_embeddings: get_f64(m, "original_max_position_embeddings", src)?
                .unwrap_or(max_pos as f64),
        }),
        other => {
            bail!("{src}: unsupported rope type `{other}` (supported: default, linear, llama3)")
        }
    }
}

impl ModelConfig {
    /// Reads and validates `config.json`.
    pub fn from_file(path: &Path) -> Result<ModelConfig> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading model config {}", path.display()))?;
        let raw: Value = serde_json::from_str(&text)
            .with_context(|| format!("parsing model config {} as JSON", path.display()))?;
        Self::from_json(raw, &path.display().to_string())
    }

    /// Parses a config JSON value; `source` names it in error messages.
    pub fn from_json(raw: Value, source: &str) -> Result<ModelConfig> {
        let src = source;
        let obj = raw
            .as_object()
            .ok_or_else(|| anyhow!("{src}: model config must be a JSON object"))?;
        let model_type = obj
            .get("model_type")
            .and_then(|v| v.as_str())
            .ok_or_else(|| anyhow!("{src}: missing string key `model_type`"))?;
        let family = match model_type {
            "qwen2" => ModelFamily::Qwen2,
            "llama" => ModelFamily::Llama,
            other => bail!(
                "{src}: unsupported model_type `{other}` (supported: {})",
                SUPPORTED_MODEL_TYPES.join(", ")
            ),
        };
        if let Some(act) = obj.get("hidden_act").and_then(|v| v.as_str()) {
            if act != "silu" {
                bail!("{src}: unsupported hidden_act `{act}` (only silu is implemented)");
            }
        }
        let hidden_size = req_usize(obj, "hidden_size", src)?;
        let num_attention_heads = req_usize(obj, "num_attention_heads", src)?;
        if num_attention_heads == 0 {
            bail!("{src}: num_attention_heads must be positive");
        }
        let num_key_value_heads =
            get_usize(obj, "num_key_value_heads", src)?.unwrap_or(num_attention_heads);
        if num_key_value_heads == 0 || num_attention_heads % num_key_value_heads != 0 {
            bail!(
                "{src}: num_attention_heads ({num_attention_heads}) must be a multiple of \
                 num_key_value_heads ({num_key_value_heads})"
            );
        }
        let head_dim =
            get_usize(obj, "head_dim", src)?.unwrap_or(hidden_size / num_attention_heads);
        if head_dim == 0 || head_dim % 2 != 0 {
            bail!("{src}: head_dim must be a positive even number, got {head_dim}");
        }
        let max_position_embeddings =
            get_usize(obj, "max_position_embeddings", src)?.unwrap_or(4096);
        let rope_theta = match get_f64(obj, "rope_theta", src)? {
            Some(t) => t,
            None => match obj.get("rope_parameters") {
                Some(Value::Object(m)) => get_f64(m, "rope_theta", src)?.unwrap_or(10000.0),
                _ => 10000.0,
            },
        };
        let rope_scaling = parse_rope_scaling(obj, src, max_position_embeddings)?;
        let attention_bias = match family {
            ModelFamily::Qwen2 => true,
            ModelFamily::Llama => get_bool(obj, "attention_bias", src)?.unwrap_or(false),
        };
        let mlp_bias = match family {
            ModelFamily::Qwen2 => false,
            ModelFamily::Llama => get_bool(obj, "mlp_bias", src)?.unwrap_or(false),
        };
        let torch_dtype = obj
            .get("torch_dtype")
            .or_else(|| obj.get("dtype"))
            .and_then(|v| v.as_str())
            .map(str::to_string);
        let bos = get_ids(obj, "bos_token_id", src)?;
        Ok(ModelConfig {
            family,
            vocab_size: req_usize(obj, "vocab_size", src)?,
            hidden_size,
            intermediate_size: req_usize(obj, "intermediate_size", src)?,
            num_hidden_layers: req_usize(obj, "num_hidden_layers", src)?,
            num_attention_heads,
            num_key_value_heads,
            head_dim,
            rms_norm_eps: get_f64(obj, "rms_norm_eps", src)?.unwrap_or(1e-6),
            rope_theta,
            rope_scaling,
            tie_word_embeddings: get_bool(obj, "tie_word_embeddings", src)?.unwrap_or(false),
            attention_bias,
            mlp_bias,
            max_position_embeddings,
            bos_token_id: bos.first().copied(),
            eos_token_ids: get_ids(obj, "eos_token_id", src)?,
            torch_dtype,
            initializer_range: get_f64(obj, "initializer_range", src)?.unwrap_or(0.02),
            raw,
        })
    }

    /// The `model_type` string of this family.
    pub fn model_type(&self) -> &'static str {
        match self.family {
            ModelFamily::Qwen2 => "qwen2",
            ModelFamily::Llama => "llama",
        }
    }

    /// The raw JSON with the typed fields written back, so edits to the struct are saved while
    /// every other key (and the rope layout) stays as loaded.
    pub fn to_json(&self) -> Value {
        let mut raw = self.raw.clone();
        if !raw.is_object() {
            raw = Value::Object(Map::new());
        }
        let Some(obj) = raw.as_object_mut() else {
            return raw;
        };
        obj.insert("model_type".into(), self.model_type().into());
        obj.insert("vocab_size".into(), self.vocab_size.into());
        obj.insert("hidden_size".into(), self.hidden_size.into());
        obj.insert("intermediate_size".into(), self.intermediate_size.into());
        obj.insert("num_hidden_layers".into(), self.num_hidden_layers.into());
        obj.insert(
            "num_attention_heads".into(),
            self.num_attention_heads.into(),
        );
        obj.insert(
            "num_key_value_heads".into(),
            self.num_key_value_heads.into(),
        );
        if obj.contains_key("head_dim")
            || self.head_dim != self.hidden_size / self.num_attention_heads
        {
            obj.insert("head_dim".into(), self.head_dim.into());
        }
        obj.insert("rms_norm_eps".into(), self.rms_norm_eps.into());
        let theta_in_params = !obj.contains_key("rope_theta")
            && obj
                .get("rope_parameters")
                .and_then(|p| p.get("rope_theta"))
                .is_some();
        if theta_in_params {
            if let Some(Value::Object(p)) = obj.get_mut("rope_parameters") {
                p.insert("rope_theta".into(), self.rope_theta.into());
            }
        } else {
            obj.insert("rope_theta".into(), self.rope_theta.into());
        }
        obj.insert(
            "tie_word_embeddings".into(),
            self.tie_word_embeddings.into(),
        );
        if self.family == ModelFamily::Llama {
            obj.insert("attention_bias".into(), self.attention_bias.into());
            obj.insert("mlp_bias".into(), self.mlp_bias.into());
        }
        obj.insert(
            "max_position_embeddings".into(),
            self.max_position_embeddings.into(),
        );
        if let Some(d) = &self.torch_dtype {
            let key = if obj.contains_key("torch_dtype") || !obj.contains_key("dtype") {
                "torch_dtype"
            } else {
                "dtype"
            };
            obj.insert(key.into(), d.clone().into());
        }
        raw
    }

    /// Rotary inverse frequencies (length `head_dim / 2`), rounded to f32 as transformers does.
    pub fn rope_inv_freq(&self) -> Vec<f32> {
        let d = self.head_dim;
        let base: Vec<f64> = (0..d / 2)
            .map(|i| 1.0 / self.rope_theta.powf((2 * i) as f64 / d as f64))
            .collect();
        let scaled: Vec<f64> = match &self.rope_scaling {
            RopeScaling::Default => base,
            RopeScaling::Linear { factor } => base.iter().map(|f| f / factor).collect(),
            RopeScaling::Llama3 {
                factor,
                low_freq_factor,
                high_freq_factor,
                original_max_position_embeddings: old_ctx,
            } => {
                let low_wavelen = old_ctx / low_freq_factor;
                let high_wavelen = old_ctx / high_freq_factor;
                base.iter()
                    .map(|&f| {
                        let wavelen = 2.0 * std::f64::consts::PI / f;
                        if wavelen < high_wavelen {
                            f
                        } else if wavelen > low_wavelen {
                            f / factor
                        } else {
                            let smooth = (old_ctx / wavelen - low_freq_factor)
                                / (high_freq_factor - low_freq_factor);
                            (1.0 - smooth) * f / factor + smooth * f
                        }
                    })
                    .collect()
            }
        };
        scaled.into_iter().map(|f| f as f32).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn base() -> Value {
        json!({"model_type": "llama", "vocab_size": 10, "hidden_size": 8, "intermediate_size": 16,
               "num_hidden_layers": 1, "num_attention_heads": 2, "rope_theta": 500000.0})
    }

    #[test]
    fn defaults_and_layouts() {
        let c = ModelConfig::from_json(base(), "t").unwrap();
        assert_eq!(c.num_key_value_heads, 2);
        assert_eq!(c.head_dim, 4);
        assert!(!c.attention_bias);
        assert_eq!(c.rope_theta, 500000.0);
        let mut v = base();
        v["model_type"] = "qwen2".into();
        v.as_object_mut().unwrap().remove("rope_theta");
        v["rope_parameters"] = json!({"rope_theta": 1e6, "rope_type": "default"});
        let c = ModelConfig::from_json(v.clone(), "t").unwrap();
        assert_eq!(c.rope_theta, 1e6);
        assert!(c.attention_bias);
        // Loaded keys keep their values and layout; defaults are written out explicitly.
        let out = c.to_json();
        for (k, val) in v.as_object().unwrap() {
            assert_eq!(&out[k], val, "{k}");
        }
        assert!(out.get("rope_theta").is_none());
        assert_eq!(out["num_key_value_heads"], 2);
    }

    #[test]
    fn unsupported_type_lists_supported() {
        let mut v = base();
        v["model_type"] = "gpt2".into();
        let e = ModelConfig::from_json(v, "/x/config.json")
            .unwrap_err()
            .to_string();
        assert!(e.contains("gpt2") && e.contains("qwen2, llama") && e.contains("/x/config.json"));
        let mut v = base();
        v["rope_scaling"] = json!({"rope_type": "yarn", "factor": 4.0});
        let e = ModelConfig::from_json(v, "t").unwrap_err().to_string();
        assert!(e.contains("yarn"), "{e}");
    }

    #[test]
    fn llama3_scaling_matches_transformers() {
        // Llama-3.2-1B: factor 32, low 1, high 4, original context 8192, theta 5e5, head_dim 64.
        let mut v = base();
        v["hidden_size"] = 128.into();
        v["rope_scaling"] = json!({"rope_type": "llama3", "factor": 32.0, "low_freq_factor": 1.0,
                                  "high_freq_factor": 4.0, "original_max_position_embeddings": 8192});
        let c = ModelConfig::from_json(v, "t").unwrap();
        let f = c.rope_inv_freq();
        assert_eq!(f.len(), 32);
        // High frequencies are untouched, the lowest ones divided by the factor.
        assert_eq!(f[0], 1.0);
        let plain = 1.0 / 500000f64.powf(62.0 / 64.0);
        assert!(((f[31] as f64) - plain / 32.0).abs() < 1e-12);
        // A medium frequency lies strictly between the two.
        let i = (0..32)
            .find(|&i| {
                let p = 1.0 / 500000f64.powf((2 * i) as f64 / 64.0);
                let w = 2.0 * std::f64::consts::PI / p;
                w > 2048.0 && w < 8192.0
            })
            .unwrap();
        let p = 1.0 / 500000f64.powf((2 * i) as f64 / 64.0);
        assert!((f[i] as f64) < p && (f[i] as f64) > p / 32.0);
    }
}
