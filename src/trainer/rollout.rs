//! From prompts to a scored, padded batch: prompt encoding, the step's prompt order, and the
//! tensors the loss is computed on.

use anyhow::{Context, Result};
use candle_core::{Device, Tensor};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use crate::sampler::mix_seed;

/// The dataset indices of step `step`'s prompts: epochs of a seeded permutation, consumed
/// `batch_size` at a time. Pure in (seed, step), so a resumed run draws the same prompts.
pub fn step_prompt_indices(
    n_examples: usize,
    batch_size: usize,
    seed: u64,
    step: usize,
    shuffle: bool,
) -> Vec<usize> {
    let mut out = Vec::with_capacity(batch_size);
    let mut cached: Option<(usize, Vec<usize>)> = None;
    for j in 0..batch_size {
        let k = step * batch_size + j;
        let (epoch, pos) = (k / n_examples, k % n_examples);
        if cached.as_ref().is_none_or(|(e, _)| *e != epoch) {
            let mut perm: Vec<usize> = (0..n_examples).collect();
            if shuffle {
                let mut rng = ChaCha8Rng::seed_from_u64(mix_seed(seed, epoch as u64));
                perm.shuffle(&mut rng);
            }
            cached = Some((epoch, perm));
        }
        out.push(cached.as_ref().map(|(_, p)| p[pos]).unwrap_or(pos));
    }
    out
}

/// One micro-batch laid out for a training forward pass: left-padded prompts followed by
/// right-padded completions.
pub struct PackedBatch {
    /// [R, Lp + Lc] token ids.
    pub input_ids: Tensor,
    /// [R, Lp + Lc] 1 for real tokens.
    pub attention_mask: Tensor,
    /// [R, Lc] completion tokens (pad where masked), the targets of the log-probs.
    pub targets: Tensor,
    /// Longest prompt: logits at positions `prompt_len - 1 ..` predict the completion.
    pub prompt_len: usize,
    pub completion_len: usize,
}

pub fn pack(
    prompts: &[&[u32]],
    completions: &[&[u32]],
    pad_id: u32,
    device: &Device,
) -> Result<PackedBatch> {
    let rows = prompts.len();
    let lp = prompts.iter().map(|p| p.len()).max().unwrap_or(0).max(1);
    let lc = completions
        .iter()
        .map(|c| c.len())
        .max()
        .unwrap_or(0)
        .max(1);
    let width = lp + lc;
    let mut ids = vec![pad_id; rows * width];
    let mut mask = vec![0u32; rows * width];
    let mut targets = vec![pad_id; rows * lc];
    for r in 0..rows {
        let (p, c) = (prompts[r], completions[r]);
        let start = r * width + lp - p.len();
        ids[start..start + p.len()].copy_from_slice(p);
        mask[start..start + p.len()].fill(1);
        let cstart = r * width + lp;
        ids[cstart..cstart + c.len()].copy_from_slice(c);
        mask[cstart..cstart + c.len()].fill(1);
        targets[r * lc..r * lc + c.len()].copy_from_slice(c);
    }
    Ok(PackedBatch {
        input_ids: Tensor::from_vec(ids, (rows, width), device).context("packing ids")?,
        attention_mask: Tensor::from_vec(mask, (rows, width), device)?,
        targets: Tensor::from_vec(targets, (rows, lc), device)?,
        prompt_len: lp,
        completion_len: lc,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prompt_order_is_a_permutation_per_epoch_and_pure() {
        let n = 10;
        let mut seen = Vec::new();
        for step in 0..5 {
            seen.extend(step_prompt_indices(n, 2, 7, step, true));
        }
        let mut sorted = seen.clone();
        sorted.sort();
        assert_eq!(sorted, (0..10).collect::<Vec<_>>());
        assert_ne!(seen, (0..10).collect::<Vec<_>>(), "shuffled");
        assert_eq!(step_prompt_indices(n, 2, 7, 3, true), seen[6..8].to_vec());
        assert_ne!(
            step_prompt_indices(n, 4, 7, 0, true),
            step_prompt_indices(n, 4, 8, 0, true)
        );
        assert_eq!(step_prompt_indices(n, 3, 7, 3, false), vec![9, 0, 1]);
    }

    #[test]
    fn pack_pads_prompts_left_and_completions_right() {
        let p1: &[u32] = &[5, 6];
        let p2: &[u32] = &[7];
        let c1: &[u32] = &[8];
        let c2: &[u32] = &[9, 10, 11];
        let b = pack(&[p1, p2], &[c1, c2], 0, &Device::Cpu).unwrap();
        assert_eq!(b.prompt_len, 2);
        assert_eq!(b.completion_len, 3);
        assert_eq!(
            b.input_ids.to_vec2::<u32>().unwrap(),
            vec![vec![5, 6, 8, 0, 0], vec![0, 7, 9, 10, 11]]
        );
        assert_eq!(
            b.attention_mask.to_vec2::<u32>().unwrap(),
            vec![vec![1, 1, 1, 0, 0], vec![0, 1, 1, 1, 1]]
        );
        assert_eq!(
            b.targets.to_vec2::<u32>().unwrap(),
            vec![vec![8, 0, 0], vec![9, 10, 11]]
        );
    }
}
