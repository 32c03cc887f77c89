//! CPU compute kernels on plain slices, shared by the training ops (`model::ops`) and free for
//! the inference path: a row-major sgemm and the fused row-wise maps of the training step.
//! They hold no candle types, so each is tested on its own.

pub mod bf16;
pub mod gemm;
pub mod gemv_bf16_ref;
pub mod rows;
#[cfg(target_arch = "x86_64")]
mod sgemm_avx512;
