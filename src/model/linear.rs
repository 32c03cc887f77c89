//! The decoder's linear projection with its optional LoRA term. Its own file so that the LoRA
//! ops (`lora_op`) can take projections without importing the decoder (`qwen2`), which
//! imports them.

use anyhow::Result;
use candle_core::Tensor;

use super::lora::{self, LoraLayer};

/// `y = x W^T (+ b)` for `x` of shape `[B, T, in]`.
#[derive(Debug, Clone)]
pub(crate) struct Linear {
    pub weight: Tensor,
    pub bias: Option<Tensor>,
    /// A LoRA adapter whose term is added to the output (`model::lora`).
    pub lora: Option<LoraLayer>,
}

impl Linear {
    pub(crate) fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (b, t, i) = x.dims3()?;
        let out = self.weight.dim(0)?;
        let x = x.reshape((b * t, i))?;
        let y = lora::matmul_t(&x, &self.weight)?;
        let y = match &self.bias {
            Some(bias) => y.broadcast_add(bias)?,
            None => y,
        };
        let y = lora::apply(self.lora.as_ref(), &x, y)?;
        Ok(y.reshape((b, t, out))?)
    }
}
