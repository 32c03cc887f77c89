//! `C (+)= op(A) · op(B)` on row-major f32 slices, with `op` a transpose or not.
//!
//! Every training GEMM goes through `matmul`, so one place decides how matrix products run:
//! the AVX-512 kernel of `sgemm_avx512` where the CPU has it (checked at run time), else the
//! `gemm` crate (the one candle uses; AVX2/FMA or portable). Both spread a large product over
//! the rayon threads and run single-threaded inside a rayon task.

/// A row-major matrix operand: `rows × cols` with row stride `ld` (≥ cols), or its transpose.
#[derive(Debug, Clone, Copy)]
pub struct Operand<'a> {
    pub data: &'a [f32],
    /// Row stride of `data` as stored.
    pub ld: usize,
    /// Use the transpose of the stored matrix.
    pub trans: bool,
}

impl<'a> Operand<'a> {
    /// A stored row-major matrix with `ld` elements per row.
    pub fn new(data: &'a [f32], ld: usize) -> Self {
        Operand {
            data,
            ld,
            trans: false,
        }
    }

    /// The transpose of a stored row-major matrix with `ld` elements per row.
    pub fn t(data: &'a [f32], ld: usize) -> Self {
        Operand {
            data,
            ld,
            trans: true,
        }
    }

    /// (row stride, column stride) of the logical operand.
    fn strides(&self) -> (isize, isize) {
        if self.trans {
            (1, self.ld as isize)
        } else {
            (self.ld as isize, 1)
        }
    }

    /// Panics unless a logical `rows × cols` operand fits in `data`.
    fn check(&self, rows: usize, cols: usize, what: &str) {
        if rows == 0 || cols == 0 {
            return;
        }
        let (r, c) = if self.trans {
            (cols, rows)
        } else {
            (rows, cols)
        };
        assert!(self.ld >= c, "{what}: ld {} < {c} columns", self.ld);
        assert!(
            (r - 1) * self.ld + c <= self.data.len(),
            "{what}: {r}x{c} (ld {}) does not fit {} elements",
            self.ld,
            self.data.len()
        );
    }
}

/// Whether one product should use the rayon threads: not below ~1 MFLOP, where the hand-off
/// costs more than it saves, and not inside a rayon task (the caller already is parallel).
pub(crate) fn parallel(m: usize, n: usize, k: usize) -> bool {
    rayon::current_num_threads() > 1
        && rayon::current_thread_index().is_none()
        && m * n * k >= 1 << 19
}

/// `C = A·B` (`accumulate = false`) or `C += A·B`, with `A` logically `m × k`, `B` `k × n`
/// and `C` a row-major `m × n` slice with row stride `ldc`.
#[allow(clippy::too_many_arguments)]
pub fn matmul(
    c: &mut [f32],
    ldc: usize,
    a: Operand,
    b: Operand,
    m: usize,
    n: usize,
    k: usize,
    accumulate: bool,
) {
    matmul_with(c, ldc, a, b, m, n, k, accumulate, force_portable());
}

/// Checks that `c` holds an `m × n` block at row stride `ldc` and settles the empty products:
/// false (nothing left to multiply) when `m` or `n` is 0, or when `k` is 0 (`C` cleared unless
/// accumulating). Every GEMM entry point starts with it.
pub(crate) fn prepare_c(
    c: &mut [f32],
    ldc: usize,
    m: usize,
    n: usize,
    k: usize,
    accumulate: bool,
    what: &str,
) -> bool {
    if m == 0 || n == 0 {
        return false;
    }
    assert!(
        ldc >= n && (m - 1) * ldc + n <= c.len(),
        "{what}: C too small"
    );
    if k == 0 {
        if !accumulate {
            for r in 0..m {
                c[r * ldc..r * ldc + n].fill(0.0);
            }
        }
        return false;
    }
    true
}

#[allow(clippy::too_many_arguments)]
fn matmul_with(
    c: &mut [f32],
    ldc: usize,
    a: Operand,
    b: Operand,
    m: usize,
    n: usize,
    k: usize,
    accumulate: bool,
    portable: bool,
) {
    if !prepare_c(c, ldc, m, n, k, accumulate, "matmul") {
        return;
    }
    a.check(m, k, "matmul A");
    b.check(k, n, "matmul B");
    let (a_rs, a_cs) = a.strides();
    let (b_rs, b_cs) = b.strides();
    let par = parallel(m, n, k);
    #[cfg(target_arch = "x86_64")]
    if super::sgemm_avx512::available() && !portable {
        use super::sgemm_avx512::{sgemm, View};
        let view = |o: &Operand, rs: isize, cs: isize| View {
            ptr: o.data.as_ptr(),
            rs: rs as usize,
            cs: cs as usize,
        };
        // SAFETY: the CPU has AVX-512F; the checks above keep every index inside the slices,
        // and `c` is a distinct `&mut` so it overlaps neither operand.
        unsafe {
            sgemm(
                m,
                n,
                k,
                view(&a, a_rs, a_cs),
                view(&b, b_rs, b_cs),
                c.as_mut_ptr(),
                ldc,
                accumulate,
                par,
            );
        }
        return;
    }
    let parallelism = if par {
        gemm::Parallelism::Rayon(rayon::current_num_threads())
    } else {
        gemm::Parallelism::None
    };
    // SAFETY: the checks above keep every index the kernel reads or writes inside the slices.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            c.as_mut_ptr(),
            1,
            ldc as isize,
            accumulate,
            a.data.as_ptr(),
            a_cs,
            a_rs,
            b.data.as_ptr(),
            b_cs,
            b_rs,
            1.0,
            1.0,
            false,
            false,
            false,
            parallelism,
        );
    }
}

/// `GRPO_PORTABLE_GEMM=1` routes every product through the `gemm` crate (for comparisons).
fn force_portable() -> bool {
    static FORCE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *FORCE.get_or_init(|| std::env::var_os("GRPO_PORTABLE_GEMM").is_some_and(|v| v == "1"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naive(a: &[f32], b: &[f32], m: usize, n: usize, k: usize) -> Vec<f32> {
        let mut c = vec![0f32; m * n];
        for i in 0..m {
            for j in 0..n {
                c[i * n + j] = (0..k).map(|p| a[i * k + p] * b[p * n + j]).sum();
            }
        }
        c
    }

    fn transpose(x: &[f32], r: usize, c: usize) -> Vec<f32> {
        let mut t = vec![0f32; r * c];
        for i in 0..r {
            for j in 0..c {
                t[j * r + i] = x[i * c + j];
            }
        }
        t
    }

    #[test]
    fn matmul_matches_naive_for_every_transpose_and_accumulate() {
        for (m, n, k) in [
            (37, 29, 41),
            (1, 1, 1),
            (130, 540, 300),
            (9, 33, 600),
            (300, 4200, 20),
        ] {
            check_sizes(m, n, k);
        }
    }

    fn check_sizes(m: usize, n: usize, k: usize) {
        let a: Vec<f32> = (0..m * k)
            .map(|i| ((i * 7 % 13) as f32 - 6.0) / 5.0)
            .collect();
        let b: Vec<f32> = (0..k * n)
            .map(|i| ((i * 5 % 11) as f32 - 5.0) / 3.0)
            .collect();
        let want = naive(&a, &b, m, n, k);
        let at = transpose(&a, m, k);
        let bt = transpose(&b, k, n);
        for (ta, tb) in [(false, false), (true, false), (false, true), (true, true)] {
            let ao = if ta {
                Operand::t(&at, m)
            } else {
                Operand::new(&a, k)
            };
            let bo = if tb {
                Operand::t(&bt, k)
            } else {
                Operand::new(&b, n)
            };
            for portable in [false, true] {
                let mut c = vec![1f32; m * n];
                matmul_with(&mut c, n, ao, bo, m, n, k, false, portable);
                for (x, y) in c.iter().zip(&want) {
                    assert!(
                        (x - y).abs() < 1e-4 * (1.0 + y.abs()),
                        "{ta} {tb}: {x} vs {y}"
                    );
                }
                matmul_with(&mut c, n, ao, bo, m, n, k, true, portable);
                for (x, y) in c.iter().zip(&want) {
                    assert!((x - 2.0 * y).abs() < 2e-4 * (1.0 + y.abs()), "accumulate");
                }
            }
        }
    }
}
