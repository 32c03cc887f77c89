//! Qwen2 / Llama decoder (one implementation: the families differ only in which projections
//! carry a bias and in config defaults).
//!
//! Two forward paths share the weights:
//! - training (`Transformer::forward_train`): on f32 CPU without adapters, fused ops with
//!   their own backward (`attention_op`, `layer_ops`, `linear_op`); otherwise every op is a
//!   basic candle op with a backward rule (candle's fused `softmax_last_dim`, `rms_norm` and
//!   `rope` have none and would silently drop gradients, so they are composed by hand here).
//!   `Transformer::forward_shared` (`shared.rs`) is the same with each group's prompt run once.
//! - inference (`Transformer::forward_cached`, `cached.rs`): fused ops plus a KV cache.
//!
//! Attention handles grouped-query attention without materialising repeated keys: the
//! `n_rep` query heads that share a key/value head are stacked along the sequence axis, so one
//! batched matmul per key/value head serves them all.

mod cached;
mod shared;

use shared::RowGather;
pub(crate) use shared::SharedBatch;

use super::attention_op::CausalAttention;
use super::bf16_copies::{layer_key, merged_key, Stack, WeightCopies, WeightPrec, HEAD_KEY};
use super::config::ModelConfig;
use super::kernels::bf16::Precision;
use super::layer_ops::{RmsNorm, SwiGlu, SwiGluDown};
pub(crate) use super::linear::Linear;
use super::linear_op::LinearOp;
use super::lora;
use super::lora_op;
use super::mlp_op::SwiGluMlp;
use super::ops::{softmax_train, MaskedSoftmax};
pub(crate) use super::params::parameter_specs;
use anyhow::{bail, Context, Result};
use candle_core::{DType, Device, Tensor, D};
use std::sync::{Arc, Mutex};

/// Additive mask value for disallowed keys. Finite so that a fully masked (padding) query row
/// gives a uniform distribution instead of NaNs that would leak through `0 * NaN`.
const MASK_VALUE: f32 = -1e30;

/// `x W^T (+ b)` for several projections of the same input at once: one GEMM over the
/// stacked weights (q/k/v, or gate/up). Returns `[B, T, Σ out]`.
fn linear_stacked(x: &Tensor, parts: &[&Linear], wp: WeightPrec) -> Result<Tensor> {
    if parts.iter().any(|l| l.lora.is_some()) {
        return lora_op::linear_lora(x, parts, wp);
    }
    let w = Tensor::cat(&parts.iter().map(|l| &l.weight).collect::<Vec<_>>(), 0)?;
    let biases: Vec<&Tensor> = parts.iter().filter_map(|l| l.bias.as_ref()).collect();
    let bias = if biases.is_empty() {
        None
    } else if biases.len() == parts.len() {
        Some(Tensor::cat(&biases, 0)?)
    } else {
        bail!("stacked projections must all have a bias or none")
    };
    linear_fused(x, &w, bias.as_ref(), wp)
}

/// `x W^T (+ b)` through `LinearOp` (f32 CPU) for `x [B, T, in]` → `[B, T, out]`.
fn linear_fused(x: &Tensor, w: &Tensor, b: Option<&Tensor>, wp: WeightPrec) -> Result<Tensor> {
    let x = x.contiguous()?;
    let w = w.contiguous()?;
    let op = LinearOp { w: wp };
    Ok(match b {
        Some(b) => x.apply_op3(&w, &b.contiguous()?, op)?,
        None => x.apply_op2(&w, op)?,
    })
}

/// Differentiable RMSNorm computed in f32 (as transformers does), result cast back.
fn rms_norm_train(x: &Tensor, weight: &Tensor, eps: f64) -> Result<Tensor> {
    let dtype = x.dtype();
    let xf = x.to_dtype(DType::F32)?;
    let inv = (xf.sqr()?.mean_keepdim(D::Minus1)? + eps)?
        .sqrt()?
        .recip()?;
    Ok(xf
        .broadcast_mul(&inv)?
        .to_dtype(dtype)?
        .broadcast_mul(weight)?)
}

/// Fused RMSNorm for inference (no backward).
fn rms_norm_fast(x: &Tensor, weight: &Tensor, eps: f64) -> Result<Tensor> {
    if x.dtype() == DType::F32 {
        Ok(candle_nn::ops::rms_norm(
            &x.contiguous()?,
            weight,
            eps as f32,
        )?)
    } else {
        rms_norm_train(x, weight, eps)
    }
}

fn rotate_half(x: &Tensor) -> Result<Tensor> {
    let d = x.dim(D::Minus1)?;
    let x1 = x.narrow(D::Minus1, 0, d / 2)?;
    let x2 = x.narrow(D::Minus1, d / 2, d / 2)?;
    Ok(Tensor::cat(&[&x2.neg()?, &x1], D::Minus1)?)
}

/// Rotary position embedding tables.
#[derive(Debug, Clone)]
pub(crate) struct RotaryEmbedding {
    inv_freq: Vec<f32>,
}

impl RotaryEmbedding {
    fn new(cfg: &ModelConfig) -> Self {
        RotaryEmbedding {
            inv_freq: cfg.rope_inv_freq(),
        }
    }

    /// `(cos, sin)` rows of `head_dim/2` for each of `positions`. The angle is rounded to
    /// f32 before cos/sin, as transformers does.
    fn half_vecs(&self, positions: &[u32]) -> (Vec<f32>, Vec<f32>) {
        let h = self.inv_freq.len();
        let mut cos = Vec::with_capacity(positions.len() * h);
        let mut sin = Vec::with_capacity(positions.len() * h);
        for &p in positions {
            for &f in &self.inv_freq {
                let a = (p as f32 * f) as f64;
                cos.push(a.cos() as f32);
                sin.push(a.sin() as f32);
            }
        }
        (cos, sin)
    }

    /// `(cos, sin)` of shape `[B, T, head_dim/2]` for `positions` (row-major `[B, T]`).
    fn half_tables(
        &self,
        positions: &[u32],
        b: usize,
        t: usize,
        dtype: DType,
        dev: &Device,
    ) -> Result<(Tensor, Tensor)> {
        let h = self.inv_freq.len();
        let (cos, sin) = self.half_vecs(positions);
        let cos = Tensor::from_vec(cos, (b, t, h), dev)?.to_dtype(dtype)?;
        let sin = Tensor::from_vec(sin, (b, t, h), dev)?.to_dtype(dtype)?;
        Ok((cos, sin))
    }

    /// Full-width `(cos, sin)` of shape `[B, 1, T, head_dim]` for the differentiable path.
    fn full_tables(
        &self,
        positions: &[u32],
        b: usize,
        t: usize,
        dtype: DType,
        dev: &Device,
    ) -> Result<(Tensor, Tensor)> {
        let (c, s) = self.half_tables(positions, b, t, dtype, dev)?;
        let c = Tensor::cat(&[&c, &c], D::Minus1)?.unsqueeze(1)?;
        let s = Tensor::cat(&[&s, &s], D::Minus1)?.unsqueeze(1)?;
        Ok((c, s))
    }
}

/// SwiGLU feed-forward block.
#[derive(Debug, Clone)]
pub(crate) struct Mlp {
    gate_proj: Linear,
    up_proj: Linear,
    down_proj: Linear,
}

impl Mlp {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let g = self.gate_proj.forward(x)?.silu()?;
        let u = self.up_proj.forward(x)?;
        self.down_proj.forward(&(g * u)?)
    }
}

#[derive(Debug, Clone)]
pub(crate) struct Attention {
    q_proj: Linear,
    k_proj: Linear,
    v_proj: Linear,
    o_proj: Linear,
    n_heads: usize,
    n_kv: usize,
    head_dim: usize,
}

impl Attention {
    /// Projects to `q [B, H, T, D]` and `k, v [B, KV, T, D]`, before rotary embedding. With
    /// `rows`, `x` holds flat shared tokens `[1, N, H]` and the projections are gathered into
    /// the rows' sequences (`[R, L, ..]`).
    fn qkv(&self, x: &Tensor, rows: Option<&RowGather>) -> Result<(Tensor, Tensor, Tensor)> {
        let split = |y: Tensor, heads: usize| -> Result<Tensor> {
            let y = match rows {
                Some(g) => g.to_rows(&y)?,
                None => y,
            };
            let (b, t, _) = y.dims3()?;
            Ok(y.reshape((b, t, heads, self.head_dim))?.transpose(1, 2)?)
        };
        let q = split(self.q_proj.forward(x)?, self.n_heads)?;
        let k = split(self.k_proj.forward(x)?, self.n_kv)?;
        let v = split(self.v_proj.forward(x)?, self.n_kv)?;
        Ok((q, k, v))
    }

    /// Scaled-dot-product attention of `q [B,H,T,D]` against `k, v [B,KV,L,D]` with additive
    /// `bias [B,1,T,L]` (f32); returns `[B, T, H*D]`.
    fn attend(
        &self,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        bias: &Tensor,
        differentiable: bool,
        fused: bool,
    ) -> Result<Tensor> {
        let (b, _, t, d) = q.dims4()?;
        let l = k.dim(2)?;
        let n_rep = self.n_heads / self.n_kv;
        let scale = 1.0 / (d as f64).sqrt();
        // Heads h = kv * n_rep + r share key head kv (transformers' repeat_kv order).
        let q = (q.contiguous()? * scale)?.reshape((b, self.n_kv, n_rep * t, d))?;
        let scores = q.matmul(&k.t()?)?.reshape((b, self.n_heads, t, l))?;
        let scores = scores.to_dtype(DType::F32)?;
        let probs = match (differentiable, fused) {
            (true, true) => scores.apply_op2(bias, MaskedSoftmax)?,
            (true, false) => softmax_train(&scores.broadcast_add(bias)?)?,
            (false, true) => scores.apply_op2_no_bwd(bias, &MaskedSoftmax)?,
            (false, false) => candle_nn::ops::softmax_last_dim(&scores.broadcast_add(bias)?)?,
        };
        let probs = probs
            .to_dtype(v.dtype())?
            .reshape((b, self.n_kv, n_rep * t, l))?;
        let out = probs.matmul(v)?.reshape((b, self.n_heads, t, d))?;
        Ok(out
            .transpose(1, 2)?
            .reshape((b, t, self.n_heads * self.head_dim))?)
    }

    fn forward_train(
        &self,
        x: &Tensor,
        cos: &Tensor,
        sin: &Tensor,
        bias: &Tensor,
        fused: bool,
        rows: Option<&RowGather>,
    ) -> Result<Tensor> {
        let (q, k, v) = self.qkv(x, rows)?;
        let q = (q.broadcast_mul(cos)? + rotate_half(&q)?.broadcast_mul(sin)?)?;
        let k = (k.broadcast_mul(cos)? + rotate_half(&k)?.broadcast_mul(sin)?)?;
        let v = v.contiguous()?;
        let y = self.attend(&q, &k, &v, bias, true, fused)?;
        let y = match rows {
            Some(g) => g.back(&y)?,
            None => y,
        };
        self.o_proj.forward(&y)
    }

    fn forward_cached(
        &self,
        x: &Tensor,
        cos: &Tensor,
        sin: &Tensor,
        bias: &Tensor,
        cache: &mut (Tensor, Tensor),
        offset: usize,
    ) -> Result<Tensor> {
        let (q, k, v) = self.qkv(x, None)?;
        let q = candle_nn::rotary_emb::rope(&q.contiguous()?, cos, sin)?;
        let k = candle_nn::rotary_emb::rope(&k.contiguous()?, cos, sin)?;
        let t = k.dim(2)?;
        let (kc, vc) = cache;
        let k = k.to_dtype(kc.dtype())?;
        let v = v.to_dtype(vc.dtype())?.contiguous()?;
        kc.slice_set(&k, 2, offset)?;
        vc.slice_set(&v, 2, offset)?;
        let l = offset + t;
        let k_all = kc.narrow(2, 0, l)?.to_dtype(q.dtype())?;
        let v_all = vc.narrow(2, 0, l)?.to_dtype(q.dtype())?;
        let fused = q.device().is_cpu();
        let y = self.attend(&q, &k_all, &v_all, bias, false, fused)?;
        self.o_proj.forward(&y)
    }
}

#[derive(Debug, Clone)]
pub(crate) struct DecoderLayer {
    /// Position in the stack (keys its bf16 weight copies).
    index: usize,
    self_attn: Attention,
    mlp: Mlp,
    input_layernorm: Tensor,
    post_attention_layernorm: Tensor,
    eps: f64,
}

impl DecoderLayer {
    fn forward_train(
        &self,
        x: &Tensor,
        cos: &Tensor,
        sin: &Tensor,
        bias: &Tensor,
        fused: bool,
        rows: Option<&RowGather>,
    ) -> Result<Tensor> {
        let h = rms_norm_train(x, &self.input_layernorm, self.eps)?;
        let x = (x + self
            .self_attn
            .forward_train(&h, cos, sin, bias, fused, rows)?)?;
        let h = rms_norm_train(&x, &self.post_attention_layernorm, self.eps)?;
        Ok((&x + self.mlp.forward(&h)?)?)
    }

    /// The training forward through the fused CPU ops (f32): RMSNorm, one q/k/v GEMM,
    /// rotary + causal attention, one gate/up GEMM, SwiGLU. With `rows`, `x` holds flat shared
    /// tokens `[1, N, H]` and only attention runs on the rows' sequences (`rope` is theirs).
    /// The projections' GEMMs run at `mixed`'s precision; attention's QKᵀ and PV stay f32.
    fn forward_fused(
        &self,
        x: &Tensor,
        rope: &FusedRope,
        rows: Option<&RowGather>,
        mixed: &Mixed,
    ) -> Result<Tensor> {
        let norm = RmsNorm {
            eps: self.eps as f32,
        };
        let at = &self.self_attn;
        let (m, l) = (mixed, self.index);
        let h = x.apply_op2(&self.input_layernorm, norm)?;
        let qkv_parts = [&at.q_proj, &at.k_proj, &at.v_proj];
        let qkv = linear_stacked(&h, &qkv_parts, m.weight(l, Stack::Qkv, &qkv_parts)?)?;
        let qkv = match rows {
            Some(g) => g.to_rows(&qkv)?,
            None => qkv,
        };
        let a = qkv.apply_op1(CausalAttention {
            n_heads: at.n_heads,
            n_kv: at.n_kv,
            head_dim: at.head_dim,
            cos: rope.cos.clone(),
            sin: rope.sin.clone(),
            key_valid: rope.key_valid.clone(),
            query_start: rope.query_start.clone(),
            lse: Arc::new(Mutex::new(Vec::new())),
        })?;
        let a = match rows {
            Some(g) => g.back(&a)?,
            None => a,
        };
        let o = &at.o_proj;
        let x = (x + linear_stacked(&a, &[o], m.weight(l, Stack::O, &[o])?)?)?;
        let h = x.apply_op2(&self.post_attention_layernorm, norm)?;
        let gu_parts = [&self.mlp.gate_proj, &self.mlp.up_proj];
        let d = &self.mlp.down_proj;
        let wgu = m.weight(l, Stack::GateUp, &gu_parts)?;
        let wd = m.weight(l, Stack::Down, &[d])?;
        let plain = |p: &Linear| p.bias.is_none() && p.lora.is_none();
        let y = if gu_parts.iter().all(|p| plain(p)) && plain(d) {
            // The whole MLP in one op: the gate/up product is not a graph node.
            let w = Tensor::cat(&[&gu_parts[0].weight, &gu_parts[1].weight], 0)?;
            let op = SwiGluMlp {
                gate_up: wgu,
                down: wd,
                saved: Default::default(),
            };
            h.contiguous()?.apply_op3(&w, &d.weight.contiguous()?, op)?
        } else {
            let gu = linear_stacked(&h, &gu_parts, wgu)?;
            match &d.bias {
                // SwiGLU and the down projection in one op: the activation is not kept.
                None if d.lora.is_none() => {
                    gu.apply_op2(&d.weight.contiguous()?, SwiGluDown { w: wd })?
                }
                _ => linear_stacked(&gu.apply_op1(SwiGlu)?, &[d], wd)?,
            }
        };
        Ok((&x + y)?)
    }

    fn forward_cached(
        &self,
        x: &Tensor,
        cos: &Tensor,
        sin: &Tensor,
        bias: &Tensor,
        cache: &mut (Tensor, Tensor),
        offset: usize,
    ) -> Result<Tensor> {
        let h = rms_norm_fast(x, &self.input_layernorm, self.eps)?;
        let a = self
            .self_attn
            .forward_cached(&h, cos, sin, bias, cache, offset)?;
        let x = (x + a)?;
        let h = rms_norm_fast(&x, &self.post_attention_layernorm, self.eps)?;
        Ok((&x + self.mlp.forward(&h)?)?)
    }
}

/// Host-side rotary tables and key mask of one training batch, shared by the layers' fused
/// attention ops.
struct FusedRope {
    cos: Arc<Vec<f32>>,
    sin: Arc<Vec<f32>>,
    key_valid: Arc<Vec<u8>>,
    /// `[B]` first query whose output is used (`CausalAttention::query_start`).
    query_start: Option<Arc<Vec<u32>>>,
}

/// The precision of the fused ops' weight products and where their bf16 weights come from.
pub(crate) struct Mixed<'a> {
    pub prec: Precision,
    pub copies: &'a WeightCopies,
}

impl Mixed<'_> {
    /// The weight operand of layer `layer`'s stack `s` (`parts` stacked by rows): its bf16
    /// copy at bf16 precision, with the LoRA adapters merged in when `parts` has any
    /// (`lora_op`: the sampler's merged weights).
    fn weight(&self, layer: usize, s: Stack, parts: &[&Linear]) -> Result<WeightPrec> {
        let copy = match self.prec {
            Precision::F32 => None,
            _ if parts.iter().any(|p| p.lora.is_some()) => Some(
                self.copies
                    .get_or_build(merged_key(layer, s), || lora_op::merged_copy(parts))?,
            ),
            _ => {
                let ws: Vec<&Tensor> = parts.iter().map(|p| &p.weight).collect();
                Some(self.copies.get(layer_key(layer, s), &ws)?)
            }
        };
        Ok(WeightPrec {
            prec: self.prec,
            copy,
        })
    }

    /// The output projection's operand.
    pub(crate) fn head(&self, w: &Tensor) -> Result<WeightPrec> {
        Ok(WeightPrec {
            prec: self.prec,
            copy: match self.prec {
                Precision::F32 => None,
                Precision::Bf16 => Some(self.copies.get(HEAD_KEY, &[w])?),
            },
        })
    }
}

/// The decoder stack with its embedding, final norm and output head.
#[derive(Debug, Clone)]
pub(crate) struct Transformer {
    embed_tokens: Tensor,
    layers: Vec<DecoderLayer>,
    norm: Tensor,
    /// `[V, H]`; the embedding matrix itself when tied.
    lm_head: Tensor,
    rotary: RotaryEmbedding,
    eps: f64,
    vocab_size: usize,
    /// Use the fused CPU ops of `ops` (with hand-written backward) in the training path.
    pub(crate) fused: bool,
    /// The precision of the weight products of the fused training ops and the host sampler
    /// (`model.dtype = "bf16"` on the CPU: bf16 inputs, f32 accumulation, f32 weights).
    pub(crate) precision: Precision,
    /// Their bf16 weight copies (shared by views of the same weights; cleared when the
    /// weights change).
    pub(crate) copies: Arc<WeightCopies>,
}

/// Additive attention bias `[B, 1, T, T]`: query `i` of row `r` sees keys `j <= i` with
/// `mask[r·T + j] != 0`.
fn causal_bias(mask: &[u8], b: usize, t: usize, dev: &Device) -> Result<Tensor> {
    let mut bias = vec![MASK_VALUE; b * t * t];
    for r in 0..b {
        for i in 0..t {
            for j in 0..=i {
                if mask[r * t + j] != 0 {
                    bias[(r * t + i) * t + j] = 0.0;
                }
            }
        }
    }
    Ok(Tensor::from_vec(bias, (b, 1, t, t), dev)?)
}

/// Per-row positions `cumsum(mask) - 1` clamped at 0, continuing from `start` (the number of
/// real tokens already seen by each row). Returns the positions and the updated counters.
pub(crate) fn positions_from_mask(
    mask: &[u8],
    b: usize,
    t: usize,
    start: &[u32],
) -> (Vec<u32>, Vec<u32>) {
    let mut pos = Vec::with_capacity(b * t);
    let mut next = start.to_vec();
    for r in 0..b {
        let mut c = start[r];
        for j in 0..t {
            if mask[r * t + j] != 0 {
                pos.push(c);
                c += 1;
            } else {
                pos.push(c.saturating_sub(1));
            }
        }
        next[r] = c;
    }
    (pos, next)
}

/// Reads an attention mask `[B, T]` (any numeric dtype, nonzero = token) into host bytes.
pub(crate) fn mask_to_host(mask: Option<&Tensor>, b: usize, t: usize) -> Result<Vec<u8>> {
    match mask {
        None => Ok(vec![1; b * t]),
        Some(m) => {
            let dims = m.dims();
            if dims != [b, t] {
                bail!("attention_mask has shape {dims:?}, expected [{b}, {t}] like input_ids");
            }
            let v = m.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
            Ok(v.into_iter().map(|x| (x != 0.0) as u8).collect())
        }
    }
}

impl Transformer {
    /// Builds the model from named parameter tensors (the `Var`s of a `VarMap`).
    pub(crate) fn new(cfg: &ModelConfig, get: &dyn Fn(&str) -> Result<Tensor>) -> Result<Self> {
        let lin = |p: &str, bias: bool| -> Result<Linear> {
            Ok(Linear {
                weight: get(&format!("{p}.weight"))?,
                bias: if bias {
                    Some(get(&format!("{p}.bias"))?)
                } else {
                    None
                },
                lora: None,
            })
        };
        let o_bias = cfg.family == super::config::ModelFamily::Llama && cfg.attention_bias;
        let mut layers = Vec::with_capacity(cfg.num_hidden_layers);
        for l in 0..cfg.num_hidden_layers {
            let p = format!("model.layers.{l}");
            layers.push(DecoderLayer {
                index: l,
                self_attn: Attention {
                    q_proj: lin(&format!("{p}.self_attn.q_proj"), cfg.attention_bias)?,
                    k_proj: lin(&format!("{p}.self_attn.k_proj"), cfg.attention_bias)?,
                    v_proj: lin(&format!("{p}.self_attn.v_proj"), cfg.attention_bias)?,
                    o_proj: lin(&format!("{p}.self_attn.o_proj"), o_bias)?,
                    n_heads: cfg.num_attention_heads,
                    n_kv: cfg.num_key_value_heads,
                    head_dim: cfg.head_dim,
                },
                mlp: Mlp {
                    gate_proj: lin(&format!("{p}.mlp.gate_proj"), cfg.mlp_bias)?,
                    up_proj: lin(&format!("{p}.mlp.up_proj"), cfg.mlp_bias)?,
                    down_proj: lin(&format!("{p}.mlp.down_proj"), cfg.mlp_bias)?,
                },
                input_layernorm: get(&format!("{p}.input_layernorm.weight"))?,
                post_attention_layernorm: get(&format!("{p}.post_attention_layernorm.weight"))?,
                eps: cfg.rms_norm_eps,
            });
        }
        let embed_tokens = get("model.embed_tokens.weight")?;
        let lm_head = if cfg.tie_word_embeddings {
            embed_tokens.clone()
        } else {
            get("lm_head.weight")?
        };
        Ok(Transformer {
            embed_tokens,
            layers,
            norm: get("model.norm.weight")?,
            lm_head,
            rotary: RotaryEmbedding::new(cfg),
            eps: cfg.rms_norm_eps,
            vocab_size: cfg.vocab_size,
            fused: true,
            precision: Precision::F32,
            copies: Arc::default(),
        })
    }

    /// Every linear projection with its module path (`model.layers.0.self_attn.q_proj`), for
    /// attaching LoRA adapters.
    pub(crate) fn linears_mut(&mut self) -> Vec<(String, &mut Linear)> {
        let mut v = Vec::with_capacity(7 * self.layers.len());
        for (l, layer) in self.layers.iter_mut().enumerate() {
            let (a, m) = (&mut layer.self_attn, &mut layer.mlp);
            for (name, lin) in [
                ("self_attn.q_proj", &mut a.q_proj),
                ("self_attn.k_proj", &mut a.k_proj),
                ("self_attn.v_proj", &mut a.v_proj),
                ("self_attn.o_proj", &mut a.o_proj),
                ("mlp.gate_proj", &mut m.gate_proj),
                ("mlp.up_proj", &mut m.up_proj),
                ("mlp.down_proj", &mut m.down_proj),
            ] {
                v.push((format!("model.layers.{l}.{name}"), lin));
            }
        }
        v
    }

    /// Whether every adapter can run in the fused training path (`lora_op`: no dropout, one
    /// rank per stacked group); otherwise an adapted model trains through the composed path.
    fn adapters_fusable(&self) -> bool {
        !self.has_adapters()
            || self.layers.iter().all(|layer| {
                let (a, m) = (&layer.self_attn, &layer.mlp);
                lora_op::fusable(&[&a.q_proj, &a.k_proj, &a.v_proj])
                    && lora_op::fusable(&[&a.o_proj])
                    && lora_op::fusable(&[&m.gate_proj, &m.up_proj])
                    && lora_op::fusable(&[&m.down_proj])
            })
    }

    /// Whether any projection carries a LoRA adapter.
    pub(crate) fn has_adapters(&self) -> bool {
        self.layers.iter().any(|layer| {
            let (a, m) = (&layer.self_attn, &layer.mlp);
            [
                &a.q_proj,
                &a.k_proj,
                &a.v_proj,
                &a.o_proj,
                &m.gate_proj,
                &m.up_proj,
                &m.down_proj,
            ]
            .iter()
            .any(|lin| lin.lora.is_some())
        })
    }

    /// Whether training runs the fused CPU ops (f32, no adapters) rather than composed ones.
    fn fused_train(&self, dev: &Device) -> bool {
        self.fused
            && dev.is_cpu()
            && self.embed_tokens.dtype() == DType::F32
            && self.adapters_fusable()
    }

    fn embed(&self, input_ids: &Tensor) -> Result<Tensor> {
        let (b, t) = input_ids
            .dims2()
            .context("input_ids must have shape [batch, seq_len]")?;
        if b == 0 || t == 0 {
            bail!("input_ids is empty (shape [{b}, {t}])");
        }
        let ids = input_ids.to_dtype(DType::U32)?.flatten_all()?;
        let h = self.embed_tokens.dim(1)?;
        Ok(self
            .embed_tokens
            .index_select(&ids, 0)?
            .reshape((b, t, h))?)
    }

    /// Checks token ids are in range: out-of-range ids would otherwise be a silent garbage
    /// gather on some backends.
    fn check_ids(&self, input_ids: &Tensor) -> Result<()> {
        let ids = input_ids
            .to_dtype(DType::U32)?
            .flatten_all()?
            .to_vec1::<u32>()?;
        if let Some(&bad) = ids.iter().find(|&&i| i as usize >= self.vocab_size) {
            bail!(
                "token id {bad} is out of range for vocab_size {}",
                self.vocab_size
            );
        }
        Ok(())
    }

    /// Differentiable hidden states `[B, T, H]` after the final norm.
    pub(crate) fn forward_train(
        &self,
        input_ids: &Tensor,
        mask: Option<&Tensor>,
    ) -> Result<Tensor> {
        let (b, t) = input_ids
            .dims2()
            .context("input_ids must have shape [batch, seq_len]")?;
        self.check_ids(input_ids)?;
        let dev = input_ids.device();
        let dtype = self.embed_tokens.dtype();
        let m = mask_to_host(mask, b, t)?;
        let (pos, _) = positions_from_mask(&m, b, t, &vec![0; b]);
        if self.fused_train(dev) {
            let (cos, sin) = self.rotary.half_vecs(&pos);
            let rope = FusedRope {
                cos: Arc::new(cos),
                sin: Arc::new(sin),
                key_valid: Arc::new(m),
                query_start: None,
            };
            let mut x = self.embed(input_ids)?;
            let mixed = self.mixed();
            for layer in &self.layers {
                x = layer.forward_fused(&x, &rope, None, &mixed)?;
            }
            return Ok(x.apply_op2(
                &self.norm,
                RmsNorm {
                    eps: self.eps as f32,
                },
            )?);
        }
        let (cos, sin) = self.rotary.full_tables(&pos, b, t, dtype, dev)?;
        let bias = causal_bias(&m, b, t, dev)?;
        let fused = self.fused && dev.is_cpu();
        let mut x = self.embed(input_ids)?;
        for layer in &self.layers {
            x = layer.forward_train(&x, &cos, &sin, &bias, fused, None)?;
        }
        rms_norm_train(&x, &self.norm, self.eps)
    }

    /// The precision and weight copies of the fused ops.
    pub(crate) fn mixed(&self) -> Mixed<'_> {
        Mixed {
            prec: self.precision,
            copies: &self.copies,
        }
    }

    /// The output projection `[V, H]` (the embedding matrix when tied).
    pub(crate) fn lm_head_weight(&self) -> &Tensor {
        &self.lm_head
    }

    /// Logits `[B, T, V]` in f32 for hidden states `[B, T, H]`.
    pub(crate) fn lm_head(&self, hidden: &Tensor) -> Result<Tensor> {
        let (b, t, h) = hidden.dims3()?;
        let logits = lora::matmul_t(&hidden.reshape((b * t, h))?, &self.lm_head)?.reshape((
            b,
            t,
            self.vocab_size,
        ))?;
        Ok(logits.to_dtype(DType::F32)?)
    }
}
