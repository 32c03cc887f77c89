//! The training forward with each group's prompt computed once.
//!
//! GRPO's G completions of a prompt are adjacent rows with the same prompt tokens. Here the
//! rows' distinct tokens are laid out flat (`[1, N, ·]`): each group's prompt once, then each
//! row's completion. Every per-token op (embedding, norms, projections, MLP) runs on those N
//! tokens only. Attention alone needs the rows' sequences: the q/k/v projections are gathered
//! into `[R, L, ·]` (prompt of the row's group, then its own completion), attended causally,
//! and the outputs scattered back to the flat tokens. The gather's backward sums the
//! gradients of a prompt's keys and values over the G rows that read them; a prompt token's
//! output is taken from the first row of its group only, so the other rows' copies of the
//! prompt queries get no gradient. Loss and gradients are those of the padded, unshared
//! forward up to float rounding.
//!
//! A row's last completion token is never an input: its hidden state would only predict the
//! token after the completion.

use super::{causal_bias, FusedRope, RmsNorm, Transformer};
use anyhow::{bail, Result};
use candle_core::{Device, Tensor};
use std::collections::HashMap;
use std::sync::Arc;

/// Where each flat token sits in the rows' sequences, for attention.
pub(super) struct RowGather {
    /// `[R·L]` flat index of each row slot (0 for padding).
    gather: Tensor,
    /// `[N]` row slot (`r·L + t`) whose attention output each flat token takes.
    scatter: Tensor,
    rows: usize,
    len: usize,
}

impl RowGather {
    /// `[1, N, C]` flat → `[R, L, C]` rows.
    pub(super) fn to_rows(&self, t: &Tensor) -> Result<Tensor> {
        let c = t.dim(2)?;
        let flat = t.squeeze(0)?.contiguous()?;
        Ok(flat
            .index_select(&self.gather, 0)?
            .reshape((self.rows, self.len, c))?)
    }

    /// `[R, L, C]` rows → `[1, N, C]` flat.
    pub(super) fn back(&self, t: &Tensor) -> Result<Tensor> {
        let c = t.dim(2)?;
        let rows = t.contiguous()?.reshape((self.rows * self.len, c))?;
        Ok(rows.index_select(&self.scatter, 0)?.unsqueeze(0)?)
    }
}

/// A micro-batch of (prompt, completion) rows laid out for the shared forward.
pub(crate) struct SharedBatch {
    /// `[N]` the distinct input tokens.
    ids: Vec<u32>,
    rows: usize,
    /// Longest row sequence (group prompt + completion without its last token).
    len: usize,
    gather: Vec<u32>,
    scatter: Vec<u32>,
    /// `[R·L]` position of each row slot and whether it is a token.
    row_pos: Vec<u32>,
    row_valid: Vec<u8>,
    /// `[R]` first slot whose attention output is read: 0 in a group's first row, the prompt
    /// length in the others (their copies of the prompt queries are skipped).
    query_start: Vec<u32>,
    /// `[R·Lc]` flat index of the hidden state that predicts each completion token (0 for
    /// padding).
    pub(crate) head: Vec<u32>,
    /// `[R·Lc]` completion tokens, right-padded with `pad`.
    pub(crate) targets: Vec<u32>,
    /// `Lc`: the longest completion (at least 1, as `trainer::rollout::pack`).
    pub(crate) completion_len: usize,
}

impl SharedBatch {
    /// Lays out (prompt, completion) rows; adjacent rows with equal prompts share them, and with
    /// `tree` also every completion prefix they have in common (the group's prefix tree).
    pub(crate) fn new(
        prompts: &[&[u32]],
        completions: &[&[u32]],
        pad: u32,
        tree: bool,
    ) -> Result<Self> {
        let r = prompts.len();
        if r == 0 || completions.len() != r {
            bail!(
                "shared forward: {r} prompts for {} completions",
                completions.len()
            );
        }
        if prompts.iter().any(|p| p.is_empty()) {
            bail!("shared forward: a prompt is empty (it would share nothing)");
        }
        let lc = completions
            .iter()
            .map(|c| c.len())
            .max()
            .unwrap_or(0)
            .max(1);
        let len = (0..r)
            .map(|i| prompts[i].len() + completions[i].len().saturating_sub(1))
            .max()
            .unwrap_or(1);
        let mut sb = SharedBatch {
            ids: Vec::new(),
            rows: r,
            len,
            gather: vec![0; r * len],
            scatter: Vec::new(),
            row_pos: vec![0; r * len],
            row_valid: vec![0; r * len],
            query_start: vec![0; r],
            head: vec![0; r * lc],
            targets: vec![pad; r * lc],
            completion_len: lc,
        };
        let mut first = 0;
        while first < r {
            let p = prompts[first];
            let end = (first..r).find(|&i| prompts[i] != p).unwrap_or(r);
            let base = sb.ids.len();
            sb.ids.extend_from_slice(p);
            sb.scatter
                .extend((0..p.len()).map(|t| (first * len + t) as u32));
            // Tree: the flat index of each completion prefix `c[..=k]` already laid out.
            let mut nodes: HashMap<&[u32], u32> = HashMap::new();
            for (row, &c) in completions.iter().enumerate().take(end).skip(first) {
                let own = c.len().saturating_sub(1);
                let slot = row * len;
                // Flat index of each input token `c[k]`; once a row leaves the prefixes laid
                // out before it, every later prefix of it is new too.
                let mut path = Vec::with_capacity(own);
                let mut shared = 0;
                for k in 0..own {
                    if let Some(&i) = nodes.get(&c[..=k]).filter(|_| shared == k) {
                        path.push(i);
                        shared = k + 1;
                        continue;
                    }
                    let i = sb.ids.len() as u32;
                    sb.ids.push(c[k]);
                    sb.scatter.push((slot + p.len() + k) as u32);
                    if tree {
                        nodes.insert(&c[..=k], i);
                    }
                    path.push(i);
                }
                if row > first {
                    sb.query_start[row] = (p.len() + shared) as u32;
                }
                for t in 0..p.len() + own {
                    sb.gather[slot + t] = if t < p.len() {
                        (base + t) as u32
                    } else {
                        path[t - p.len()]
                    };
                    sb.row_pos[slot + t] = t as u32;
                    sb.row_valid[slot + t] = 1;
                }
                for (k, &tok) in c.iter().enumerate() {
                    sb.head[row * lc + k] = if k == 0 {
                        (base + p.len() - 1) as u32
                    } else {
                        path[k - 1]
                    };
                    sb.targets[row * lc + k] = tok;
                }
            }
            first = end;
        }
        Ok(sb)
    }

    /// Tokens the forward runs through the decoder (N).
    pub(crate) fn tokens(&self) -> usize {
        self.ids.len()
    }

    pub(crate) fn rows(&self) -> usize {
        self.rows
    }
}

impl Transformer {
    /// Differentiable hidden states `[N, H]` of the flat tokens of `sb`, after the final norm.
    pub(crate) fn forward_shared(&self, sb: &SharedBatch, dev: &Device) -> Result<Tensor> {
        let n = sb.ids.len();
        let ids = Tensor::from_slice(&sb.ids, (1, n), dev)?;
        self.check_ids(&ids)?;
        let (r, l) = (sb.rows, sb.len);
        let gather = RowGather {
            gather: Tensor::from_slice(&sb.gather, r * l, dev)?,
            scatter: Tensor::from_slice(&sb.scatter, n, dev)?,
            rows: r,
            len: l,
        };
        let dtype = self.embed_tokens.dtype();
        let mut x = self.embed(&ids)?;
        let x = if self.fused_train(dev) {
            let (cos, sin) = self.rotary.half_vecs(&sb.row_pos);
            let rope = FusedRope {
                cos: Arc::new(cos),
                sin: Arc::new(sin),
                key_valid: Arc::new(sb.row_valid.clone()),
                query_start: Some(Arc::new(sb.query_start.clone())),
            };
            let mixed = self.mixed();
            for layer in &self.layers {
                x = layer.forward_fused(&x, &rope, Some(&gather), &mixed)?;
            }
            x.apply_op2(
                &self.norm,
                RmsNorm {
                    eps: self.eps as f32,
                },
            )?
        } else {
            let (cos, sin) = self.rotary.full_tables(&sb.row_pos, r, l, dtype, dev)?;
            let bias = causal_bias(&sb.row_valid, r, l, dev)?;
            let fused = self.fused && dev.is_cpu();
            for layer in &self.layers {
                x = layer.forward_train(&x, &cos, &sin, &bias, fused, Some(&gather))?;
            }
            super::rms_norm_train(&x, &self.norm, self.eps)?
        };
        Ok(x.squeeze(0)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_shares_each_groups_prompt_and_drops_last_completion_tokens() {
        let (p1, p2) = ([5u32, 6, 7], [8u32, 9]);
        let (c1, c2, c3) = ([10u32, 11], [12u32], [13u32, 14, 15]);
        let sb = SharedBatch::new(&[&p1, &p1, &p2], &[&c1, &c2, &c3], 0, false).unwrap();
        // p1, c1[..1], c2[..0], p2, c3[..2]
        assert_eq!(sb.ids, vec![5, 6, 7, 10, 8, 9, 13, 14]);
        assert_eq!((sb.rows, sb.len, sb.completion_len), (3, 4, 3));
        assert_eq!(sb.gather, vec![0, 1, 2, 3, 0, 1, 2, 0, 4, 5, 6, 7]);
        assert_eq!(sb.row_valid, vec![1, 1, 1, 1, 1, 1, 1, 0, 1, 1, 1, 1]);
        assert_eq!(sb.query_start, vec![0, 3, 0]);
        // Prompt outputs come from the group's first row.
        assert_eq!(sb.scatter, vec![0, 1, 2, 3, 8, 9, 10, 11]);
        // c1[0] from p1's last token, c1[1] from c1[0]; c3 from p2's last, 13, 14.
        assert_eq!(sb.head, vec![2, 3, 0, 2, 0, 0, 5, 6, 7]);
        assert_eq!(sb.targets, vec![10, 11, 0, 12, 0, 0, 13, 14, 15]);
        assert_eq!(sb.tokens(), 8);
    }

    #[test]
    fn tree_layout_runs_each_completion_prefix_once() {
        let p = [5u32, 6];
        let c: [&[u32]; 4] = [
            &[10, 11, 12, 2],
            &[10, 11, 13],
            &[10, 14, 2],
            &[10, 11, 12, 2],
        ];
        let ps: [&[u32]; 4] = [&p; 4];
        let sb = SharedBatch::new(&ps, &c, 0, true).unwrap();
        // Nodes: prompt 5 6; row 0: 10 11 12; row 1 reuses 10 11; row 2 reuses 10, adds 14;
        // row 3 reuses 10 11 12.
        assert_eq!(sb.ids, vec![5, 6, 10, 11, 12, 14]);
        assert_eq!((sb.rows, sb.len), (4, 5));
        assert_eq!(
            sb.gather,
            vec![0, 1, 2, 3, 4, 0, 1, 2, 3, 0, 0, 1, 2, 5, 0, 0, 1, 2, 3, 4]
        );
        assert_eq!(sb.scatter, vec![0, 1, 2, 3, 4, 13]);
        // Row 1 shares 2 completion nodes, row 2 one, row 3 all three.
        assert_eq!(sb.query_start, vec![0, 4, 3, 5]);
        assert_eq!(
            sb.head,
            vec![1, 2, 3, 4, 1, 2, 3, 0, 1, 2, 5, 0, 1, 2, 3, 4]
        );
        // Without the tree, only the prompt is shared.
        let flat = SharedBatch::new(&ps, &c, 0, false).unwrap();
        assert_eq!(flat.tokens(), 2 + 3 + 2 + 2 + 3);
        assert_eq!(flat.query_start, vec![0, 2, 2, 2]);
    }

    #[test]
    fn an_empty_prompt_is_refused() {
        let err = SharedBatch::new(&[&[]], &[&[1]], 0, false).err().unwrap();
        assert!(err.to_string().contains("prompt is empty"), "{err}");
    }
}
