//! A per-thread heap budget for work whose memory nothing else bounds.
//!
//! A chat template comes with the checkpoint, and minijinja's fuel counts instructions, not
//! bytes: `{% set ns.s = ns.s ~ ns.s %}` in a 40-step loop asks for a terabyte in about 200
//! instructions, long before anything reaches the output cap. Inside [`with_budget`], the
//! global allocator ([`BudgetAlloc`], registered in `lib.rs`) counts the calling thread's net
//! allocations; past the budget it prints the caller's message and exits with status 2, the
//! status of every other `grpo` error. It cannot return an error instead: an allocator that
//! fails makes Rust abort, and an allocator must not unwind.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::io::Write;

/// The system allocator, plus the accounting of [`with_budget`] (a thread-local test when no
/// budget is active).
pub struct BudgetAlloc;

thread_local! {
    /// Bytes the current budget allows; 0 = no budget on this thread.
    static LIMIT: Cell<usize> = const { Cell::new(0) };
    /// Net bytes allocated since the budget began (frees of older memory make it negative).
    static USED: Cell<isize> = const { Cell::new(0) };
    /// The message printed when the budget runs out (borrowed from [`with_budget`]'s caller,
    /// which outlives the budget).
    static MESSAGE: Cell<(*const u8, usize)> = const { Cell::new((std::ptr::null(), 0)) };
}

/// Makes glibc's malloc keep freed memory for reuse instead of handing it back to the kernel.
///
/// A training step allocates and frees buffers of megabytes hundreds of times. By default glibc
/// serves each large one from a fresh `mmap` (and trims the heap top after a free), so every
/// one comes back as zero pages the kernel must fault in and clear: `clear_page_erms` was
/// 16-24% of a step's samples under `perf`. With every block served from the heap (no `mmap`,
/// whose threshold glibc caps at 32 MB, below a 0.5B model's weight gradients) and no
/// trimming, the same steps ran 1.3-1.5x faster at the same peak RSS. Other libcs keep their
/// own policy.
pub fn keep_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator parameters; called before other threads start.
    unsafe {
        libc::mallopt(libc::M_MMAP_MAX, 0);
        // -1 turns trimming off (mallopt(3)); i32::MAX still trimmed a free top over 2 GB,
        // which a 0.5B step frees every step, so its pages came back as faults.
        libc::mallopt(libc::M_TRIM_THRESHOLD, -1);
    }
}

/// Runs `f` with at most `limit` bytes of net heap growth on this thread; past that, the
/// process prints `grpo: {message}` and exits with status 2. Budgets do not nest: an inner
/// call replaces the outer budget for its duration.
pub fn with_budget<T>(limit: usize, message: &str, f: impl FnOnce() -> T) -> T {
    struct Restore(usize, isize, (*const u8, usize));
    impl Drop for Restore {
        fn drop(&mut self) {
            LIMIT.with(|l| l.set(self.0));
            USED.with(|u| u.set(self.1));
            MESSAGE.with(|m| m.set(self.2));
        }
    }
    let _restore = Restore(
        LIMIT.with(Cell::get),
        USED.with(Cell::get),
        MESSAGE.with(Cell::get),
    );
    MESSAGE.with(|m| m.set((message.as_ptr(), message.len())));
    USED.with(|u| u.set(0));
    LIMIT.with(|l| l.set(limit.max(1)));
    f()
}

/// Adds `delta` bytes to the active budget, if any; ends the process when it is exceeded.
fn charge(delta: isize) {
    let _ = LIMIT.try_with(|limit| {
        let l = limit.get();
        if l == 0 {
            return;
        }
        let used = USED.with(|u| {
            let now = u.get().saturating_add(delta);
            u.set(now);
            now
        });
        if used > l as isize {
            // Off first: what follows may allocate, and must not come back here.
            limit.set(0);
            let (ptr, len) = MESSAGE.with(Cell::get);
            // SAFETY: `with_budget` stored a `&str` that outlives the budget.
            let msg = unsafe { std::slice::from_raw_parts(ptr, len) };
            let mut err = std::io::stderr().lock();
            let _ = err.write_all(b"grpo: ");
            let _ = err.write_all(msg);
            let _ = err.write_all(b"\n");
            drop(err);
            std::process::exit(2);
        }
    });
}

// SAFETY: every call goes to `System` unchanged; the accounting only reads and writes
// thread-locals that need no allocation (const-initialised `Cell`s without destructors).
unsafe impl GlobalAlloc for BudgetAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        charge(layout.size() as isize);
        System.alloc(layout)
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        charge(layout.size() as isize);
        System.alloc_zeroed(layout)
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        charge(-(layout.size() as isize));
        System.dealloc(ptr, layout)
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        charge(new_size as isize - layout.size() as isize);
        System.realloc(ptr, layout, new_size)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_budget_counts_net_growth_and_ends_with_its_scope() {
        // Well under the budget: allocating and freeing repeatedly never adds up.
        let n = with_budget(1 << 20, "unused", || {
            let mut total = 0;
            for _ in 0..100 {
                let v = vec![0u8; 512 << 10];
                total += v.len();
            }
            total
        });
        assert_eq!(n, 100 * (512 << 10));
        assert_eq!(LIMIT.with(Cell::get), 0);
        // Outside a budget, large allocations are the system's business.
        let big = vec![1u8; 8 << 20];
        assert_eq!(big.len(), 8 << 20);
    }
}
