//! Non-finite weights (NaN, ±inf) are refused when a checkpoint is read: one such value makes
//! every logit it reaches NaN, and sampling, rewards and the loss then run on garbage without
//! an error. The test is on the raw bits (exponent all ones) of each stored dtype, done by the
//! thread that decodes the tensor, block by block while the block is in cache. Denormals and
//! huge finite values are valid floats and pass.

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};

use candle_core::DType;

/// Set by `model.allow_non_finite = true` / `--allow-non-finite`: load such weights anyway.
static ALLOW_NON_FINITE: AtomicBool = AtomicBool::new(false);

/// Turns the check off (or back on) for every load of this process.
pub fn set_allow_non_finite(allow: bool) {
    ALLOW_NON_FINITE.store(allow, Ordering::Relaxed);
}

/// Whether non-finite weights are accepted (the opt-out).
pub fn allow_non_finite() -> bool {
    ALLOW_NON_FINITE.load(Ordering::Relaxed)
}

/// What a non-finite element is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NonFinite {
    Nan,
    PosInf,
    NegInf,
}

impl fmt::Display for NonFinite {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            NonFinite::Nan => "NaN",
            NonFinite::PosInf => "+inf",
            NonFinite::NegInf => "-inf",
        })
    }
}

/// Elements tested per block: one branch per block keeps the inner loop branch-free (so it
/// vectorises), and a block of f32 (64 KiB) stays in L2 between decode and test.
pub(crate) const BLOCK: usize = 16 * 1024;

/// Exponent mask and element size of a float dtype stored little-endian, `None` otherwise.
fn layout(dtype: DType) -> Option<(u64, u64, usize)> {
    // (exponent mask, mantissa mask, bytes)
    match dtype {
        DType::F16 => Some((0x7c00, 0x03ff, 2)),
        DType::BF16 => Some((0x7f80, 0x007f, 2)),
        DType::F32 => Some((0x7f80_0000, 0x007f_ffff, 4)),
        DType::F64 => Some((0x7ff0_0000_0000_0000, 0x000f_ffff_ffff_ffff, 8)),
        _ => None,
    }
}

fn bits_at(bytes: &[u8], i: usize, size: usize) -> u64 {
    let b = &bytes[i * size..(i + 1) * size];
    match size {
        2 => u64::from(u16::from_le_bytes([b[0], b[1]])),
        4 => u64::from(u32::from_le_bytes([b[0], b[1], b[2], b[3]])),
        _ => u64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]),
    }
}

/// The first NaN or infinite element of `bytes` (little-endian `dtype`), as (index, kind).
/// Non-float dtypes have none.
pub(crate) fn first_non_finite(bytes: &[u8], dtype: DType) -> Option<(usize, NonFinite)> {
    let (exp, mant, size) = layout(dtype)?;
    let n = bytes.len() / size;
    let sign = 1u64 << (size * 8 - 1);
    let any_in = |lo: usize, hi: usize| -> bool {
        let chunk = &bytes[lo * size..hi * size];
        match size {
            2 => chunk.chunks_exact(2).fold(false, |acc, b| {
                acc | (u16::from_le_bytes([b[0], b[1]]) as u64 & exp == exp)
            }),
            4 => chunk.chunks_exact(4).fold(false, |acc, b| {
                acc | (u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as u64 & exp == exp)
            }),
            _ => chunk.chunks_exact(8).fold(false, |acc, b| {
                acc | (u64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]) & exp
                    == exp)
            }),
        }
    };
    let mut lo = 0;
    while lo < n {
        let hi = (lo + BLOCK).min(n);
        if any_in(lo, hi) {
            for i in lo..hi {
                let v = bits_at(bytes, i, size);
                if v & exp == exp {
                    let kind = if v & mant != 0 {
                        NonFinite::Nan
                    } else if v & sign != 0 {
                        NonFinite::NegInf
                    } else {
                        NonFinite::PosInf
                    };
                    return Some((i, kind));
                }
            }
        }
        lo = hi;
    }
    None
}

/// The first NaN or infinite value of decoded f32 data.
pub(crate) fn first_non_finite_f32(data: &[f32]) -> Option<(usize, NonFinite)> {
    let any = data.iter().fold(false, |acc, v| {
        acc | (v.to_bits() & 0x7f80_0000 == 0x7f80_0000)
    });
    if !any {
        return None;
    }
    let i = data.iter().position(|v| !v.is_finite())?;
    let v = data[i];
    let kind = if v.is_nan() {
        NonFinite::Nan
    } else if v > 0.0 {
        NonFinite::PosInf
    } else {
        NonFinite::NegInf
    };
    Some((i, kind))
}

/// The error for a non-finite element `index` of tensor `name` (`shape`) in `file`.
pub(crate) fn error(
    file: &std::path::Path,
    name: &str,
    shape: &[usize],
    index: usize,
    kind: NonFinite,
) -> anyhow::Error {
    anyhow::anyhow!(
        "{}: tensor `{name}` (shape {shape:?}) holds a non-finite value ({kind}) at flat index \
         {index}: the checkpoint is damaged (or was saved after training diverged). Set \
         `model.allow_non_finite = true` in the config (or pass --allow-non-finite) to load it \
         anyway",
        file.display()
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use half::{bf16, f16};

    fn f32_bytes(v: &[f32]) -> Vec<u8> {
        v.iter().flat_map(|x| x.to_le_bytes()).collect()
    }

    #[test]
    fn finds_the_first_non_finite_element_of_every_float_dtype() {
        let n = 3 * BLOCK + 5;
        for at in [0, 1, BLOCK - 1, BLOCK, n - 1] {
            for (bad, kind) in [
                (f32::NAN, NonFinite::Nan),
                (f32::INFINITY, NonFinite::PosInf),
                (f32::NEG_INFINITY, NonFinite::NegInf),
            ] {
                let mut v: Vec<f32> = (0..n).map(|i| (i as f32 - 7.0) * 1e-3).collect();
                v[at] = bad;
                if at + 3 < n {
                    v[at + 3] = f32::NAN;
                }
                assert_eq!(
                    first_non_finite(&f32_bytes(&v), DType::F32),
                    Some((at, kind))
                );
                assert_eq!(first_non_finite_f32(&v), Some((at, kind)));
                let b: Vec<u8> = v
                    .iter()
                    .flat_map(|x| bf16::from_f32(*x).to_le_bytes())
                    .collect();
                assert_eq!(first_non_finite(&b, DType::BF16), Some((at, kind)));
                let h: Vec<u8> = v
                    .iter()
                    .flat_map(|x| f16::from_f32(*x).to_le_bytes())
                    .collect();
                assert_eq!(first_non_finite(&h, DType::F16), Some((at, kind)));
                let d: Vec<u8> = v.iter().flat_map(|x| f64::from(*x).to_le_bytes()).collect();
                assert_eq!(first_non_finite(&d, DType::F64), Some((at, kind)));
            }
        }
    }

    #[test]
    fn denormals_huge_values_zeros_and_integers_pass() {
        let v = [
            f32::MIN_POSITIVE / 4.0,
            -f32::MIN_POSITIVE / 1024.0,
            f32::MAX,
            f32::MIN,
            0.0,
            -0.0,
            1.0,
        ];
        assert_eq!(first_non_finite(&f32_bytes(&v), DType::F32), None);
        assert_eq!(first_non_finite_f32(&v), None);
        let h: Vec<u8> = [
            f16::MAX,
            f16::MIN,
            f16::from_bits(1),
            f16::from_bits(0x8001),
        ]
        .iter()
        .flat_map(|x| x.to_le_bytes())
        .collect();
        assert_eq!(first_non_finite(&h, DType::F16), None);
        let b: Vec<u8> = [bf16::MAX, bf16::MIN, bf16::from_bits(1)]
            .iter()
            .flat_map(|x| x.to_le_bytes())
            .collect();
        assert_eq!(first_non_finite(&b, DType::BF16), None);
        let d: Vec<u8> = [f64::MAX, f64::MIN_POSITIVE / 8.0]
            .iter()
            .flat_map(|x| x.to_le_bytes())
            .collect();
        assert_eq!(first_non_finite(&d, DType::F64), None);
        // An I32 of all ones is not a float: the dtype check, not this one, refuses it.
        assert_eq!(first_non_finite(&[0xff; 8], DType::I64), None);
    }
}
