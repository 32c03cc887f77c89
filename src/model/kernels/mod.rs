//! CPU compute kernels on plain slices, shared by the training ops (`model::ops`) and free for
//! the inference path: a row-major sgemm, its bf16 tiers (`bf16`: AMX, AVX512-BF16) and the
//! bf16 decode product (`gemm_nt_bf16`), and the fused row-wise maps of the training step.
//! They hold no candle types, so each is tested on its own.

pub mod bf16;
pub mod gemm;
pub mod gemm_nt_bf16;
pub(crate) mod nt_tiles;
pub mod rows;
#[cfg(target_arch = "x86_64")]
mod sgemm_avx512;
pub(crate) mod tasks;
#[cfg(target_arch = "x86_64")]
pub(crate) mod transpose;
