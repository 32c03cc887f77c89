//! Preallocated key/value cache for batched incremental decoding.
//!
//! Keys and values live in one `[B, n_kv_heads, capacity, head_dim]` tensor per layer and new
//! positions are written in place with `slice_set`, so a decode step costs O(new tokens), not
//! a copy of the whole cache. Each row keeps its own key-valid mask (left padding, or rows that
//! were padded while others advanced) and its own next rotary position.

use super::config::ModelConfig;
use anyhow::{bail, Context, Result};
use candle_core::{DType, Device, Tensor};

/// Key/value cache shared by all layers of one batch of sequences.
pub struct KvCache {
    /// Per layer `(k, v)`, each `[B, n_kv_heads, capacity, head_dim]`, contiguous.
    pub(crate) layers: Vec<(Tensor, Tensor)>,
    /// `[B * capacity]`: 1 where the key at that slot is a real token.
    pub(crate) key_valid: Vec<u8>,
    /// Rotary position the next real token of each row gets.
    pub(crate) next_pos: Vec<u32>,
    pub(crate) len: usize,
    batch: usize,
    capacity: usize,
    pub(crate) dtype: DType,
    pub(crate) device: Device,
}

impl KvCache {
    /// An empty cache able to hold `capacity` positions for `batch` rows.
    pub fn new(
        config: &ModelConfig,
        batch: usize,
        capacity: usize,
        dtype: DType,
        device: &Device,
    ) -> Result<KvCache> {
        let shape = (batch, config.num_key_value_heads, capacity, config.head_dim);
        let layers = (0..config.num_hidden_layers)
            .map(|_| -> Result<(Tensor, Tensor)> {
                Ok((
                    Tensor::zeros(shape, dtype, device)?,
                    Tensor::zeros(shape, dtype, device)?,
                ))
            })
            .collect::<Result<Vec<_>>>()
            .with_context(|| format!("allocating a KV cache of shape {shape:?}"))?;
        Ok(KvCache {
            layers,
            key_valid: vec![0; batch * capacity],
            next_pos: vec![0; batch],
            len: 0,
            batch,
            capacity,
            dtype,
            device: device.clone(),
        })
    }

    /// Number of positions written so far (the same for every row).
    pub fn len(&self) -> usize {
        self.len
    }

    /// True before the first write.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn batch_size(&self) -> usize {
        self.batch
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Rotary position the next real token of `row` will get (= real tokens seen so far).
    pub fn next_position(&self, row: usize) -> Option<u32> {
        self.next_pos.get(row).copied()
    }

    /// Each row repeated `n` times consecutively (row r -> rows r*n .. r*n+n): share one
    /// prompt prefill across its G samples.
    pub fn repeat_rows(&self, n: usize) -> Result<KvCache> {
        let rows: Vec<usize> = (0..self.batch)
            .flat_map(|r| std::iter::repeat_n(r, n))
            .collect();
        self.select_rows(&rows)
    }

    /// Keep only these rows, in this order (compaction of finished rows).
    pub fn select_rows(&self, rows: &[usize]) -> Result<KvCache> {
        if let Some(&bad) = rows.iter().find(|&&r| r >= self.batch) {
            bail!(
                "KvCache::select_rows: row {bad} out of range (batch size {})",
                self.batch
            );
        }
        let idx: Vec<u32> = rows.iter().map(|&r| r as u32).collect();
        let idx = Tensor::from_vec(idx, rows.len(), &self.device)?;
        let layers = self
            .layers
            .iter()
            .map(|(k, v)| -> Result<(Tensor, Tensor)> {
                Ok((k.index_select(&idx, 0)?, v.index_select(&idx, 0)?))
            })
            .collect::<Result<Vec<_>>>()?;
        let cap = self.capacity;
        let mut key_valid = Vec::with_capacity(rows.len() * cap);
        for &r in rows {
            key_valid.extend_from_slice(&self.key_valid[r * cap..(r + 1) * cap]);
        }
        Ok(KvCache {
            layers,
            key_valid,
            next_pos: rows.iter().map(|&r| self.next_pos[r]).collect(),
            len: self.len,
            batch: rows.len(),
            capacity: cap,
            dtype: self.dtype,
            device: self.device.clone(),
        })
    }
}
