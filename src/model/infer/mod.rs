//! The inference forward on the CPU in f32: the decoder run directly on the weights' host
//! buffers with a host KV cache and reused scratch, no candle op per step.
//!
//! Decoding a token for a few dozen rows is ~10 small products per layer; as candle ops each
//! allocates its output and synchronises its thread pool, which at these sizes costs more
//! than the arithmetic. Here every buffer lives in the cache's scratch (`host_kv::Workspace`), the bias and
//! residual adds are folded into the products, the new keys and values are written in place,
//! and only the positions whose logits are wanted go through the output projection.
//! The maths is the training path's (`qwen2.rs`), op for op, so greedy outputs match it and
//! transformers. A mixed-precision model (`bf16_copies`) multiplies by the bf16 weight copies
//! the trainer uses, with the same rounding of the inputs, so the sampler's log-probs equal the
//! trainer's up to f32 summation order; norms, rotary, attention and softmax stay f32.

mod gemm;
pub(crate) mod rows;

use anyhow::{bail, Context, Result};
use candle_core::{CpuStorage, Layout, Storage, Tensor};
use rayon::prelude::*;

use super::bf16_copies::Copy16;
use super::host_kv::{kv_block_len, HostLayer, KEY_TILE};
use super::kernels::bf16::{matmul_bf16, Data, Operand16};
use super::kernels::gemm_nt_bf16::gemm_nt_bf16;
use super::kv_cache::KvCache;

/// Rows above which a product goes to the general GEMM (packing pays off there).
const SKINNY_MAX_ROWS: usize = 128;

/// A linear layer's tensors.
pub(crate) struct LinearRef<'a> {
    pub weight: &'a Tensor,
    pub bias: Option<&'a Tensor>,
}

/// One decoder layer's tensors.
pub(crate) struct LayerRef<'a> {
    pub input_layernorm: &'a Tensor,
    pub post_attention_layernorm: &'a Tensor,
    pub q: LinearRef<'a>,
    pub k: LinearRef<'a>,
    pub v: LinearRef<'a>,
    pub o: LinearRef<'a>,
    pub gate: LinearRef<'a>,
    pub up: LinearRef<'a>,
    pub down: LinearRef<'a>,
}

/// What the forward needs of a model: its tensors and shape.
pub(crate) struct ModelRef<'a> {
    pub embed: &'a Tensor,
    pub norm: &'a Tensor,
    pub lm_head: &'a Tensor,
    pub layers: Vec<LayerRef<'a>>,
    pub n_heads: usize,
    pub n_kv: usize,
    pub head_dim: usize,
    pub eps: f64,
    pub inv_freq: &'a [f32],
    pub vocab_size: usize,
    /// The bf16 weight copies when the model multiplies in bf16.
    pub bf16: Option<Bf16Weights>,
}

/// A mixed-precision model's bf16 weights: per layer the stacks `[q; k; v]`, `o`,
/// `[gate; up]`, `down` (the rows of the parts in order, as the training ops stack them), and
/// the output projection.
pub(crate) struct Bf16Weights {
    pub layers: Vec<[Copy16; 4]>,
    pub head: Copy16,
}

/// A weight matrix `n × k` in f32 or bf16.
#[derive(Clone, Copy)]
enum Wt<'a> {
    F32(&'a [f32]),
    Bf16(&'a [u16]),
}

/// Which positions get logits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LogitsAt {
    /// The last position of each row: `[B, V]`.
    Last,
    /// Every position: `[B, T, V]`.
    All,
}

fn cpu_f32<'a>(storage: &'a Storage, layout: &Layout, what: &str) -> Result<&'a [f32]> {
    let Storage::Cpu(CpuStorage::F32(data)) = storage else {
        bail!("{what}: the host inference path needs f32 weights on the CPU");
    };
    let Some((a, b)) = layout.contiguous_offsets() else {
        bail!("{what}: weight is not contiguous");
    };
    Ok(&data[a..b])
}

/// Slices of one linear layer, indices into the pinned list.
#[derive(Clone, Copy)]
struct LinIdx {
    w: usize,
    b: Option<usize>,
    out: usize,
}

struct LayerIdx {
    ln1: usize,
    ln2: usize,
    lin: [LinIdx; 7],
}

/// Appends `t` to `list`; returns its index.
fn pin<'a>(list: &mut Vec<&'a Tensor>, t: &'a Tensor) -> usize {
    list.push(t);
    list.len() - 1
}

fn pin_lin<'a>(list: &mut Vec<&'a Tensor>, l: &LinearRef<'a>) -> Result<LinIdx> {
    Ok(LinIdx {
        w: pin(list, l.weight),
        b: l.bias.map(|b| pin(list, b)),
        out: l.weight.dim(0)?,
    })
}

/// Appends `input_ids [B, T]` (host, row-major, with `mask` 1 = token) to the host `cache`
/// and writes f32 logits at `at` into `logits` (resized; reusing it across steps saves a
/// fresh vocabulary-sized buffer per step).
#[allow(clippy::too_many_arguments)]
pub(crate) fn forward(
    model: &ModelRef<'_>,
    ids: &[u32],
    mask: &[u8],
    b: usize,
    t: usize,
    cache: &mut KvCache,
    at: LogitsAt,
    logits: &mut Vec<f32>,
) -> Result<()> {
    let m = b * t;
    if ids.len() != m || mask.len() != m {
        bail!(
            "host forward: {} ids / {} mask entries for [{b}, {t}]",
            ids.len(),
            mask.len()
        );
    }
    let hsz = model.embed.dim(1)?;
    let d = model.head_dim;
    let (hq, hkv) = (model.n_heads * d, model.n_kv * d);
    let n_rep = model.n_heads / model.n_kv;
    let inter = model
        .layers
        .first()
        .map(|l| l.gate.weight.dim(0))
        .transpose()?
        .unwrap_or(0);
    let vocab = model.vocab_size;
    if let Some(&bad) = ids.iter().find(|&&i| i as usize >= vocab) {
        bail!("token id {bad} is out of range for vocab_size {vocab}");
    }

    // Pin every weight's storage for the whole forward.
    let mut list: Vec<&Tensor> = Vec::new();
    let embed_i = pin(&mut list, model.embed);
    let norm_i = pin(&mut list, model.norm);
    let head_i = pin(&mut list, model.lm_head);
    let mut layer_idx = Vec::with_capacity(model.layers.len());
    for l in &model.layers {
        layer_idx.push(LayerIdx {
            ln1: pin(&mut list, l.input_layernorm),
            ln2: pin(&mut list, l.post_attention_layernorm),
            lin: [
                pin_lin(&mut list, &l.q)?,
                pin_lin(&mut list, &l.k)?,
                pin_lin(&mut list, &l.v)?,
                pin_lin(&mut list, &l.o)?,
                pin_lin(&mut list, &l.gate)?,
                pin_lin(&mut list, &l.up)?,
                pin_lin(&mut list, &l.down)?,
            ],
        });
    }
    let guards: Vec<_> = list.iter().map(|t| t.storage_and_layout()).collect();
    let slices = guards
        .iter()
        .enumerate()
        .map(|(i, (s, l))| cpu_f32(s, l, &format!("weight {i}")))
        .collect::<Result<Vec<&[f32]>>>()?;

    let offset = cache.len;
    let cap = cache.capacity();
    let (pos, next) = super::qwen2::positions_from_mask(mask, b, t, &cache.next_pos);
    for r in 0..b {
        cache.key_valid[r * cap + offset..r * cap + offset + t]
            .copy_from_slice(&mask[r * t..(r + 1) * t]);
    }
    let KvCache {
        store,
        key_valid,
        scratch: ws,
        ..
    } = cache;
    let host_layers = store
        .host_layers_mut()
        .context("host forward on a tensor-backed KV cache")?;

    // Embedding rows.
    let emb = slices[embed_i];
    ws.x.resize(m * hsz, 0.0);
    for (row, &id) in ws.x.chunks_exact_mut(hsz).zip(ids) {
        row.copy_from_slice(&emb[id as usize * hsz..(id as usize + 1) * hsz]);
    }
    // Rotary tables per row: the angle rounded to f32 before cos/sin, as transformers.
    let half = d / 2;
    ws.cos.resize(m * half, 0.0);
    ws.sin.resize(m * half, 0.0);
    for (r, &p) in pos.iter().enumerate() {
        for (i, &f) in model.inv_freq.iter().enumerate() {
            let a = f64::from(p as f32 * f);
            ws.cos[r * half + i] = a.cos() as f32;
            ws.sin[r * half + i] = a.sin() as f32;
        }
    }
    ws.h.resize(m * hsz, 0.0);
    ws.q.resize(m * hq, 0.0);
    ws.k.resize(m * hkv, 0.0);
    ws.v.resize(m * hkv, 0.0);
    ws.att.resize(m * hq, 0.0);
    ws.gate.resize(m * inter, 0.0);
    ws.up.resize(m * inter, 0.0);
    let eps = model.eps as f32;
    let scale = 1.0 / (d as f32).sqrt();

    if let Some(b16) = &model.bf16 {
        if b16.layers.len() != layer_idx.len() {
            bail!(
                "host forward: bf16 copies of {} layers for {}",
                b16.layers.len(),
                layer_idx.len()
            );
        }
    }
    for (layer, (li, kv)) in layer_idx.iter().zip(host_layers.iter_mut()).enumerate() {
        let lin = |i: usize| {
            let l = li.lin[i];
            (Wt::F32(slices[l.w]), l.b.map(|b| slices[b]), l.out)
        };
        let [mut q_l, mut k_l, mut v_l, mut o_l, mut g_l, mut u_l, mut d_l] =
            [0, 1, 2, 3, 4, 5, 6].map(lin);
        if let Some(b16) = &model.bf16 {
            let [qkv, o, gu, down] = &b16.layers[layer];
            let (q_end, k_end, g_end) = (hq * hsz, (hq + hkv) * hsz, inter * hsz);
            if qkv.len() != (hq + 2 * hkv) * hsz || gu.len() != 2 * inter * hsz {
                bail!("host forward: bf16 copies of layer {layer} do not fit its shape");
            }
            q_l.0 = Wt::Bf16(&qkv[..q_end]);
            k_l.0 = Wt::Bf16(&qkv[q_end..k_end]);
            v_l.0 = Wt::Bf16(&qkv[k_end..]);
            o_l.0 = Wt::Bf16(o);
            g_l.0 = Wt::Bf16(&gu[..g_end]);
            u_l.0 = Wt::Bf16(&gu[g_end..]);
            d_l.0 = Wt::Bf16(down);
        }
        rows::rms_norm(&ws.x, slices[li.ln1], eps, &mut ws.h);
        linear(&ws.h, m, hsz, q_l, &mut ws.q, false);
        linear(&ws.h, m, hsz, k_l, &mut ws.k, false);
        linear(&ws.h, m, hsz, v_l, &mut ws.v, false);
        for r in 0..m {
            let (c, s) = (
                &ws.cos[r * half..(r + 1) * half],
                &ws.sin[r * half..(r + 1) * half],
            );
            rows::rope(&mut ws.q[r * hq..(r + 1) * hq], c, s);
            rows::rope(&mut ws.k[r * hkv..(r + 1) * hkv], c, s);
        }
        // New keys and values go straight into their cache slots (keys in tiles).
        let block = kv_block_len(cap, d);
        for r in 0..b {
            for i in 0..t {
                let (row, p) = (r * t + i, offset + i);
                for h in 0..model.n_kv {
                    let base = (r * model.n_kv + h) * block;
                    let src = row * hkv + h * d;
                    let tile = base + p / KEY_TILE * KEY_TILE * d + p % KEY_TILE;
                    for (dd, &x) in ws.k[src..src + d].iter().enumerate() {
                        kv.k[tile + dd * KEY_TILE] = x;
                    }
                    let dst = base + p * d;
                    kv.v[dst..dst + d].copy_from_slice(&ws.v[src..src + d]);
                }
            }
        }
        let geom = AttnGeom {
            t,
            offset,
            cap,
            d,
            n_heads: model.n_heads,
            n_kv: model.n_kv,
            n_rep,
            scale,
        };
        attention(&geom, &ws.q, kv, key_valid, &mut ws.att);
        linear(&ws.att, m, hq, o_l, &mut ws.x, true);
        rows::rms_norm(&ws.x, slices[li.ln2], eps, &mut ws.h);
        linear(&ws.h, m, hsz, g_l, &mut ws.gate, false);
        linear(&ws.h, m, hsz, u_l, &mut ws.up, false);
        rows::silu_mul(&mut ws.gate, &ws.up);
        linear(&ws.gate, m, inter, d_l, &mut ws.x, true);
    }
    cache.len = offset + t;
    cache.next_pos = next;

    let rows_out = match at {
        LogitsAt::Last => {
            ws.last.resize(b * hsz, 0.0);
            for r in 0..b {
                let src = (r * t + t - 1) * hsz;
                ws.last[r * hsz..(r + 1) * hsz].copy_from_slice(&ws.x[src..src + hsz]);
            }
            b
        }
        LogitsAt::All => {
            ws.last.clear();
            ws.last.extend_from_slice(&ws.x);
            m
        }
    };
    ws.h.resize(rows_out * hsz, 0.0);
    rows::rms_norm(&ws.last, slices[norm_i], eps, &mut ws.h[..rows_out * hsz]);
    logits.resize(rows_out * vocab, 0.0);
    let head = match &model.bf16 {
        Some(b16) => Wt::Bf16(&b16.head),
        None => Wt::F32(slices[head_i]),
    };
    linear(&ws.h, rows_out, hsz, (head, None, vocab), logits, false);
    Ok(())
}

/// `y (+)= x Wᵀ + b` with `x` `m × k`.
fn linear(
    x: &[f32],
    m: usize,
    k: usize,
    (w, bias, n): (Wt, Option<&[f32]>, usize),
    y: &mut [f32],
    accumulate: bool,
) {
    let (x, y) = (&x[..m * k], &mut y[..m * n]);
    if m <= SKINNY_MAX_ROWS {
        match w {
            Wt::F32(w) => gemm::gemm_nt(x, m, k, w, n, bias, y, accumulate),
            Wt::Bf16(w) => gemm_nt_bf16(x, m, k, w, n, bias, y, accumulate),
        }
    } else {
        match w {
            Wt::F32(w) => general_gemm_nt(x, m, k, w, n, y, accumulate),
            Wt::Bf16(w) => matmul_bf16(
                y,
                n,
                Operand16::new(Data::F32(x), k),
                Operand16::t(Data::Bf16(w), k),
                m,
                n,
                k,
                accumulate,
            ),
        }
        if let Some(bias) = bias {
            for row in y.chunks_exact_mut(n) {
                for (o, &bv) in row.iter_mut().zip(bias) {
                    *o += bv;
                }
            }
        }
    }
}

/// The `gemm` crate (packed, cache-blocked) for products with many rows.
fn general_gemm_nt(x: &[f32], m: usize, k: usize, w: &[f32], n: usize, y: &mut [f32], acc: bool) {
    let threads = rayon::current_num_threads();
    let par = if threads > 1 && rayon::current_thread_index().is_none() {
        ::gemm::Parallelism::Rayon(threads)
    } else {
        ::gemm::Parallelism::None
    };
    assert!(x.len() >= m * k && w.len() >= n * k && y.len() >= m * n);
    // SAFETY: the strides describe x (m × k), wᵀ (k × n, w stored n × k) and y (m × n), all
    // inside the slices checked above.
    unsafe {
        ::gemm::gemm(
            m,
            n,
            k,
            y.as_mut_ptr(),
            1,
            n as isize,
            acc,
            x.as_ptr(),
            1,
            k as isize,
            w.as_ptr(),
            k as isize,
            1,
            1.0,
            1.0,
            false,
            false,
            false,
            par,
        );
    }
}

struct AttnGeom {
    t: usize,
    offset: usize,
    cap: usize,
    d: usize,
    n_heads: usize,
    n_kv: usize,
    n_rep: usize,
    scale: f32,
}

thread_local! {
    static SCORES: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Causal attention of every query row (`q` `[B·T, H·D]`) over the cached keys; writes `out`
/// `[B·T, H·D]`.
fn attention(g: &AttnGeom, q: &[f32], kv: &HostLayer, key_valid: &[u8], out: &mut [f32]) {
    let hq = g.n_heads * g.d;
    let group = g.n_rep * g.d;
    let row = |(r, o): (usize, &mut [f32])| {
        let (bi, i) = (r / g.t, r % g.t);
        let len = g.offset + i + 1;
        let valid = &key_valid[bi * g.cap..bi * g.cap + len];
        SCORES.with(|s| {
            let mut s = s.borrow_mut();
            if s.len() < g.n_rep * len {
                s.resize(g.n_rep * len, 0.0);
            }
            let block = kv_block_len(g.cap, g.d);
            for h in 0..g.n_kv {
                let base = (bi * g.n_kv + h) * block;
                rows::attend_group(
                    &q[r * hq + h * group..r * hq + (h + 1) * group],
                    &kv.k[base..base + block],
                    &kv.v[base..base + block],
                    g.d,
                    valid,
                    g.scale,
                    &mut s[..g.n_rep * len],
                    &mut o[h * group..(h + 1) * group],
                );
            }
        });
    };
    let m = out.len() / hq;
    let work = m * g.n_heads * (g.offset + g.t) * g.d;
    if work >= 1 << 16 && rayon::current_num_threads() > 1 {
        out.par_chunks_mut(hq).enumerate().for_each(row);
    } else {
        out.chunks_mut(hq).enumerate().for_each(row);
    }
}
