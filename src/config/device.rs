//! Device and dtype names, shared by `model.device` / `model.dtype` and every subcommand's
//! `--device` / `--dtype`, so that one spelling works everywhere.

use anyhow::{anyhow, bail, Result};
use serde::{Deserialize, Serialize};

/// Compute dtype of `model.dtype`, `--dtype` and checkpoints' `torch_dtype`: one set of names
/// everywhere (`f32`/`fp32`/`float32`, `bf16`/`bfloat16`, `f16`/`fp16`/`float16`/`half`).
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum DType {
    #[serde(alias = "fp32", alias = "float32")]
    F32,
    #[serde(alias = "bfloat16")]
    Bf16,
    #[serde(alias = "fp16", alias = "float16", alias = "half")]
    F16,
}

impl DType {
    pub const NAMES: &'static str =
        "f32, bf16 or f16 (also fp32/float32, bfloat16, fp16/float16/half)";

    pub fn to_candle(self) -> candle_core::DType {
        match self {
            DType::F32 => candle_core::DType::F32,
            DType::Bf16 => candle_core::DType::BF16,
            DType::F16 => candle_core::DType::F16,
        }
    }
}

impl std::str::FromStr for DType {
    type Err = anyhow::Error;

    fn from_str(s: &str) -> Result<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "f32" | "fp32" | "float32" => Ok(DType::F32),
            "bf16" | "bfloat16" => Ok(DType::Bf16),
            "f16" | "fp16" | "float16" | "half" => Ok(DType::F16),
            _ => bail!("expected {}, got `{s}`", DType::NAMES),
        }
    }
}

/// A device name: `cpu`, `cuda` or `cuda:N` (checked when the config is read; opened by
/// [`Device::open`] when a run starts).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum Device {
    Cpu,
    Cuda(usize),
}

impl std::str::FromStr for Device {
    type Err = anyhow::Error;

    fn from_str(s: &str) -> Result<Self> {
        match s.trim() {
            "cpu" => Ok(Device::Cpu),
            "cuda" => Ok(Device::Cuda(0)),
            other => match other.strip_prefix("cuda:") {
                Some(n) => n
                    .parse()
                    .map(Device::Cuda)
                    .map_err(|_| anyhow!("bad cuda ordinal in `{other}`: expected cuda:N")),
                None => bail!("expected `cpu`, `cuda` or `cuda:N`, got `{other}`"),
            },
        }
    }
}

impl Device {
    /// The candle device; a CUDA device needs a build with the `cuda` feature and a visible GPU.
    pub fn open(self) -> Result<candle_core::Device> {
        match self {
            Device::Cpu => Ok(candle_core::Device::Cpu),
            Device::Cuda(n) => candle_core::Device::new_cuda(n).map_err(|e| {
                anyhow!("cuda:{n}: this build has no CUDA support or no GPU is visible ({e})")
            }),
        }
    }
}

/// Parses and opens a device name (`model.device`, `--device`).
pub fn parse_device(spec: &str) -> Result<candle_core::Device> {
    spec.parse::<Device>()?.open()
}

impl TryFrom<String> for Device {
    type Error = anyhow::Error;

    fn try_from(s: String) -> Result<Self> {
        s.parse()
    }
}

impl From<Device> for String {
    fn from(d: Device) -> String {
        d.to_string()
    }
}

impl std::fmt::Display for Device {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Device::Cpu => f.write_str("cpu"),
            Device::Cuda(n) => write!(f, "cuda:{n}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_parse_the_same_everywhere() {
        for (name, d) in [
            ("f32", DType::F32),
            ("float32", DType::F32),
            ("bf16", DType::Bf16),
            ("fp16", DType::F16),
            ("half", DType::F16),
        ] {
            assert_eq!(name.parse::<DType>().unwrap(), d);
            let v: DType = serde_json::from_str(&format!("\"{name}\"")).unwrap();
            assert_eq!(v, d);
        }
        assert!("f8".parse::<DType>().is_err());
        assert_eq!("cpu".parse::<Device>().unwrap(), Device::Cpu);
        assert_eq!("cuda".parse::<Device>().unwrap(), Device::Cuda(0));
        assert_eq!("cuda:3".parse::<Device>().unwrap(), Device::Cuda(3));
        let e = "cuda:x".parse::<Device>().unwrap_err().to_string();
        assert!(e.contains("cuda:N"), "{e}");
        let e = "tpu".parse::<Device>().unwrap_err().to_string();
        assert!(e.contains("`cpu`, `cuda` or `cuda:N`"), "{e}");
        assert_eq!(serde_json::to_string(&Device::Cpu).unwrap(), "\"cpu\"");
    }
}
