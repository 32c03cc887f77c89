//! The inference path of [`Transformer`]: appending tokens to a KV cache, through the candle
//! ops (tensor cache) or the host forward of `model::infer` (host cache).

use super::{mask_to_host, positions_from_mask, Transformer};
use super::{rms_norm_fast, Linear, MASK_VALUE};
use crate::model::bf16_copies::{layer_key, Stack, HEAD_KEY};
use crate::model::infer::{self, Bf16Weights, LayerRef, LinearRef, LogitsAt, ModelRef};
use crate::model::kernels::bf16::Precision;
use crate::model::kv_cache::KvCache;
use anyhow::{bail, Context, Result};
use candle_core::{DType, Tensor};

impl Transformer {
    /// Appends `input_ids [B, T]` to `cache`; returns final hidden states `[B, T, H]`.
    pub(crate) fn forward_cached(
        &self,
        input_ids: &Tensor,
        mask: Option<&Tensor>,
        cache: &mut KvCache,
    ) -> Result<Tensor> {
        let (b, t) = input_ids
            .dims2()
            .context("input_ids must have shape [batch, seq_len]")?;
        if b != cache.batch_size() {
            bail!(
                "input batch size {b} does not match the KV cache batch size {}",
                cache.batch_size()
            );
        }
        if cache.store.num_layers() != self.layers.len() {
            bail!(
                "KV cache has {} layers but the model has {}",
                cache.store.num_layers(),
                self.layers.len()
            );
        }
        if self.precision != Precision::F32 {
            bail!("bf16 inference runs on a host KV cache (f32 CPU), not a tensor cache");
        }
        let offset = cache.len;
        let cap = cache.capacity();
        if offset + t > cap {
            bail!(
                "KV cache overflow: {offset} cached + {t} new positions exceed its capacity {cap}"
            );
        }
        self.check_ids(input_ids)?;
        let dev = input_ids.device();
        let dtype = self.embed_tokens.dtype();
        let m = mask_to_host(mask, b, t)?;
        let (pos, next) = positions_from_mask(&m, b, t, &cache.next_pos);
        let (cos, sin) = self.rotary.half_tables(&pos, b, t, dtype, dev)?;
        for r in 0..b {
            for j in 0..t {
                cache.key_valid[r * cap + offset + j] = m[r * t + j];
            }
        }
        let l = offset + t;
        let mut bias = vec![MASK_VALUE; b * t * l];
        for r in 0..b {
            let valid = &cache.key_valid[r * cap..r * cap + l];
            for i in 0..t {
                let row = &mut bias[(r * t + i) * l..(r * t + i + 1) * l];
                for j in 0..=offset + i {
                    if valid[j] != 0 {
                        row[j] = 0.0;
                    }
                }
            }
        }
        let bias = Tensor::from_vec(bias, (b, 1, t, l), dev)?;
        let mut x = self.embed(input_ids)?;
        let kv_layers = cache
            .store
            .tensor_layers_mut()
            .context("the candle-op inference path needs a tensor-backed KV cache")?;
        for (layer, kv) in self.layers.iter().zip(kv_layers.iter_mut()) {
            x = layer.forward_cached(&x, &cos, &sin, &bias, kv, offset)?;
        }
        cache.len = l;
        cache.next_pos = next;
        rms_norm_fast(&x, &self.norm, self.eps)
    }

    /// The bf16 weight copies the host forward multiplies by (the training ops' copies), or
    /// None in f32.
    pub(crate) fn bf16_weights(&self) -> Result<Option<Bf16Weights>> {
        if self.precision == Precision::F32 {
            return Ok(None);
        }
        if self.has_adapters() {
            bail!("the host inference path runs adapters merged (Policy::for_sampling)");
        }
        let c = &self.copies;
        let mut layers = Vec::with_capacity(self.layers.len());
        for (l, layer) in self.layers.iter().enumerate() {
            let (a, m) = (&layer.self_attn, &layer.mlp);
            layers.push([
                c.get(
                    layer_key(l, Stack::Qkv),
                    &[&a.q_proj.weight, &a.k_proj.weight, &a.v_proj.weight],
                )?,
                c.get(layer_key(l, Stack::O), &[&a.o_proj.weight])?,
                c.get(
                    layer_key(l, Stack::GateUp),
                    &[&m.gate_proj.weight, &m.up_proj.weight],
                )?,
                c.get(layer_key(l, Stack::Down), &[&m.down_proj.weight])?,
            ]);
        }
        Ok(Some(Bf16Weights {
            layers,
            head: c.get(HEAD_KEY, &[&self.lm_head])?,
        }))
    }

    /// The tensors and shape the host inference forward reads.
    fn model_ref(&self) -> Result<ModelRef<'_>> {
        fn lin(l: &Linear) -> LinearRef<'_> {
            LinearRef {
                weight: &l.weight,
                bias: l.bias.as_ref(),
            }
        }
        let first = &self.layers[0].self_attn;
        Ok(ModelRef {
            embed: &self.embed_tokens,
            norm: &self.norm,
            lm_head: &self.lm_head,
            layers: self
                .layers
                .iter()
                .map(|l| LayerRef {
                    input_layernorm: &l.input_layernorm,
                    post_attention_layernorm: &l.post_attention_layernorm,
                    q: lin(&l.self_attn.q_proj),
                    k: lin(&l.self_attn.k_proj),
                    v: lin(&l.self_attn.v_proj),
                    o: lin(&l.self_attn.o_proj),
                    gate: lin(&l.mlp.gate_proj),
                    up: lin(&l.mlp.up_proj),
                    down: lin(&l.mlp.down_proj),
                })
                .collect(),
            n_heads: first.n_heads,
            n_kv: first.n_kv,
            head_dim: first.head_dim,
            eps: self.eps,
            inv_freq: &self.rotary.inv_freq,
            vocab_size: self.vocab_size,
            bf16: self.bf16_weights()?,
        })
    }

    /// Checks that `[b, t]` new positions fit `cache`.
    fn check_cache(&self, b: usize, t: usize, cache: &KvCache) -> Result<()> {
        if b != cache.batch_size() {
            bail!(
                "input batch size {b} does not match the KV cache batch size {}",
                cache.batch_size()
            );
        }
        if cache.store.num_layers() != self.layers.len() {
            bail!(
                "KV cache has {} layers but the model has {}",
                cache.store.num_layers(),
                self.layers.len()
            );
        }
        if b == 0 || t == 0 {
            bail!("input_ids is empty (shape [{b}, {t}])");
        }
        let (offset, cap) = (cache.len, cache.capacity());
        if offset + t > cap {
            bail!(
                "KV cache overflow: {offset} cached + {t} new positions exceed its capacity {cap}"
            );
        }
        Ok(())
    }

    /// Appends host token ids `[b, t]` (row-major; `mask` 1 = token, None = all) to `cache`
    /// and writes f32 logits at `at` into `logits`: `[b, V]` or `[b, t, V]` row-major. A host
    /// cache runs the host forward; a tensor cache the candle ops.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn forward_cached_host(
        &self,
        ids: &[u32],
        mask: Option<&[u8]>,
        b: usize,
        t: usize,
        cache: &mut KvCache,
        at: LogitsAt,
        logits: &mut Vec<f32>,
    ) -> Result<()> {
        self.check_cache(b, t, cache)?;
        if ids.len() != b * t || mask.is_some_and(|m| m.len() != b * t) {
            bail!("forward_cached_host: ids/mask do not have shape [{b}, {t}]");
        }
        if cache.is_host() {
            let ones;
            let mask = match mask {
                Some(m) => m,
                None => {
                    ones = vec![1u8; b * t];
                    &ones
                }
            };
            return infer::forward(&self.model_ref()?, ids, mask, b, t, cache, at, logits);
        }
        let dev = cache.device.clone();
        let x = Tensor::from_slice(ids, (b, t), &dev)?;
        let m = mask
            .map(|m| -> Result<Tensor> {
                let m: Vec<u32> = m.iter().map(|&v| u32::from(v != 0)).collect();
                Ok(Tensor::from_vec(m, (b, t), &dev)?)
            })
            .transpose()?;
        let out = self.forward_cached_logits(&x, m.as_ref(), cache, at)?;
        *logits = out.flatten_all()?.to_vec1::<f32>()?;
        Ok(())
    }

    /// [`Self::forward_cached_host`] on tensors: logits `[B, V]` or `[B, T, V]` (f32).
    pub(crate) fn forward_cached_logits(
        &self,
        input_ids: &Tensor,
        mask: Option<&Tensor>,
        cache: &mut KvCache,
        at: LogitsAt,
    ) -> Result<Tensor> {
        let (b, t) = input_ids
            .dims2()
            .context("input_ids must have shape [batch, seq_len]")?;
        if cache.is_host() {
            self.check_cache(b, t, cache)?;
            let ids = input_ids
                .to_dtype(DType::U32)?
                .flatten_all()?
                .to_vec1::<u32>()?;
            let m = mask_to_host(mask, b, t)?;
            let mut logits = Vec::new();
            infer::forward(&self.model_ref()?, &ids, &m, b, t, cache, at, &mut logits)?;
            let dev = input_ids.device();
            return Ok(match at {
                LogitsAt::Last => Tensor::from_vec(logits, (b, self.vocab_size), dev)?,
                LogitsAt::All => Tensor::from_vec(logits, (b, t, self.vocab_size), dev)?,
            });
        }
        let h = self.forward_cached(input_ids, mask, cache)?;
        match at {
            LogitsAt::Last => Ok(self.lm_head(&h.narrow(1, t - 1, 1)?)?.squeeze(1)?),
            LogitsAt::All => self.lm_head(&h),
        }
    }
}
