//! The host (CPU, f32) KV cache's memory layout and the inference forward's scratch: what
//! `kv_cache` allocates and owns and `infer` reads and writes. Both import this file, and
//! neither imports the other's internals.

/// Keys per tile of the key cache.
pub(crate) const KEY_TILE: usize = 16;

/// Scratch buffers of one forward, kept in the KV cache between decode steps.
#[derive(Debug, Default, Clone)]
pub(crate) struct Workspace {
    pub x: Vec<f32>,
    pub h: Vec<f32>,
    pub q: Vec<f32>,
    pub k: Vec<f32>,
    pub v: Vec<f32>,
    pub att: Vec<f32>,
    pub gate: Vec<f32>,
    pub up: Vec<f32>,
    pub cos: Vec<f32>,
    pub sin: Vec<f32>,
    pub last: Vec<f32>,
}

/// Host key/value buffers of one layer: per (row, key/value head) a block of
/// [`kv_block_len`] floats, keys in tiles of 16 positions (`[capacity / 16, head_dim, 16]`, for
/// the attention kernel), values `[capacity, head_dim]`.
#[derive(Debug, Clone)]
pub(crate) struct HostLayer {
    pub k: Vec<f32>,
    pub v: Vec<f32>,
}

/// Floats per (row, key/value head) in a host cache layer: the capacity rounded up to whole
/// key tiles.
pub(crate) fn kv_block_len(capacity: usize, head_dim: usize) -> usize {
    capacity.div_ceil(KEY_TILE) * KEY_TILE * head_dim
}
