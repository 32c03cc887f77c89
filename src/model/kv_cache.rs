//! Preallocated key/value cache for batched incremental decoding.
//!
//! Keys and values live in one `[B, n_kv_heads, capacity, head_dim]` buffer per layer and new
//! positions are written in place, so a decode step costs O(new tokens), not a copy of the
//! whole cache. On the CPU in f32 the buffers are plain host memory that the host inference
//! forward (`model::infer`) reads and writes directly, with its scratch kept here between
//! steps; elsewhere they are tensors written with `slice_set`. Each row keeps its own
//! key-valid mask (left padding, or rows that were padded while others advanced) and its own
//! next rotary position.

use super::config::ModelConfig;
use super::host_kv::{kv_block_len, HostLayer, Workspace, KEY_TILE};
use anyhow::{bail, Context, Result};
use candle_core::{DType, Device, Tensor};

/// Where the keys and values live.
#[derive(Debug)]
pub(crate) enum KvStore {
    /// Per layer `(k, v)` tensors.
    Tensors(Vec<(Tensor, Tensor)>),
    /// Per layer host buffers (CPU, f32).
    Host(Vec<HostLayer>),
}

impl KvStore {
    pub(crate) fn num_layers(&self) -> usize {
        match self {
            KvStore::Tensors(l) => l.len(),
            KvStore::Host(l) => l.len(),
        }
    }

    pub(crate) fn tensor_layers_mut(&mut self) -> Option<&mut Vec<(Tensor, Tensor)>> {
        match self {
            KvStore::Tensors(l) => Some(l),
            KvStore::Host(_) => None,
        }
    }

    pub(crate) fn host_layers_mut(&mut self) -> Option<&mut Vec<HostLayer>> {
        match self {
            KvStore::Host(l) => Some(l),
            KvStore::Tensors(_) => None,
        }
    }
}

/// Key/value cache shared by all layers of one batch of sequences.
pub struct KvCache {
    pub(crate) store: KvStore,
    /// `[B * capacity]`: 1 where the key at that slot is a real token.
    pub(crate) key_valid: Vec<u8>,
    /// Rotary position the next real token of each row gets.
    pub(crate) next_pos: Vec<u32>,
    pub(crate) len: usize,
    batch: usize,
    capacity: usize,
    n_kv: usize,
    head_dim: usize,
    pub(crate) dtype: DType,
    pub(crate) device: Device,
    /// Scratch of the host forward, reused across steps.
    pub(crate) scratch: Workspace,
}

impl KvCache {
    /// An empty cache able to hold `capacity` positions for `batch` rows: host buffers on
    /// the CPU in f32 (the fast path), tensors otherwise.
    pub fn new(
        config: &ModelConfig,
        batch: usize,
        capacity: usize,
        dtype: DType,
        device: &Device,
    ) -> Result<KvCache> {
        if device.is_cpu() && dtype == DType::F32 {
            let n = batch * config.num_key_value_heads * kv_block_len(capacity, config.head_dim);
            let layers = (0..config.num_hidden_layers)
                .map(|_| HostLayer {
                    k: vec![0.0; n],
                    v: vec![0.0; n],
                })
                .collect();
            return Ok(Self::with_store(
                config,
                KvStore::Host(layers),
                batch,
                capacity,
                dtype,
                device,
            ));
        }
        Self::new_tensors(config, batch, capacity, dtype, device)
    }

    /// A cache held in tensors on any device (the path of non-CPU devices; on the CPU it makes
    /// the model run its candle-op inference path, for tests that compare the two).
    #[doc(hidden)]
    pub fn new_tensors(
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
        Ok(Self::with_store(
            config,
            KvStore::Tensors(layers),
            batch,
            capacity,
            dtype,
            device,
        ))
    }

    fn with_store(
        config: &ModelConfig,
        store: KvStore,
        batch: usize,
        capacity: usize,
        dtype: DType,
        device: &Device,
    ) -> KvCache {
        KvCache {
            store,
            key_valid: vec![0; batch * capacity],
            next_pos: vec![0; batch],
            len: 0,
            batch,
            capacity,
            n_kv: config.num_key_value_heads,
            head_dim: config.head_dim,
            dtype,
            device: device.clone(),
            scratch: Workspace::default(),
        }
    }

    /// True when the keys and values are host buffers read by the host forward.
    pub fn is_host(&self) -> bool {
        matches!(self.store, KvStore::Host(_))
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
        let store = match &self.store {
            KvStore::Tensors(layers) => {
                let idx: Vec<u32> = rows.iter().map(|&r| r as u32).collect();
                let idx = Tensor::from_vec(idx, rows.len(), &self.device)?;
                KvStore::Tensors(
                    layers
                        .iter()
                        .map(|(k, v)| -> Result<(Tensor, Tensor)> {
                            Ok((k.index_select(&idx, 0)?, v.index_select(&idx, 0)?))
                        })
                        .collect::<Result<Vec<_>>>()?,
                )
            }
            KvStore::Host(layers) => {
                // Only the written prefix of each (row, head) block is copied (whole key
                // tiles); the rest stays zero until it is written.
                let (d, len) = (self.head_dim, self.len);
                let block = kv_block_len(self.capacity, d);
                let row_len = self.n_kv * block;
                let copy = |src: &[f32], used: usize| {
                    let mut dst = vec![0f32; rows.len() * row_len];
                    for (i, &r) in rows.iter().enumerate() {
                        for h in 0..self.n_kv {
                            let (s0, d0) = (r * row_len + h * block, i * row_len + h * block);
                            dst[d0..d0 + used].copy_from_slice(&src[s0..s0 + used]);
                        }
                    }
                    dst
                };
                let k_used = len.div_ceil(KEY_TILE) * KEY_TILE * d;
                KvStore::Host(
                    layers
                        .iter()
                        .map(|l| HostLayer {
                            k: copy(&l.k, k_used),
                            v: copy(&l.v, len * d),
                        })
                        .collect(),
                )
            }
        };
        let cap = self.capacity;
        let mut key_valid = Vec::with_capacity(rows.len() * cap);
        for &r in rows {
            key_valid.extend_from_slice(&self.key_valid[r * cap..(r + 1) * cap]);
        }
        Ok(KvCache {
            store,
            key_valid,
            next_pos: rows.iter().map(|&r| self.next_pos[r]).collect(),
            len: self.len,
            batch: rows.len(),
            capacity: cap,
            n_kv: self.n_kv,
            head_dim: self.head_dim,
            dtype: self.dtype,
            device: self.device.clone(),
            scratch: Workspace::default(),
        })
    }
}
