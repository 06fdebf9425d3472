//! Allocator settings for training processes.
//!
//! glibc hands every freed block above 128 KiB straight back to the kernel (and trims the heap
//! top above 128 KiB), so each training step's multi-megabyte tensors come back as fresh pages
//! that fault in again, page by page. Measured on the 2-core benchmark machine
//! (`scripts/bench-trainer.sh`, U = 128, 1 thread) that was a third of a training step.

/// Keeps freed memory in the process for reuse: every block comes from the heap (glibc caps
/// the mmap threshold at 32 MiB, and at U = 256 a step's gate buffers are larger), and the
/// heap is not trimmed below 1 GiB. The resident size then stays at a step's peak instead of
/// dropping between steps. Call it once, early, in a process that trains; it changes nothing
/// off glibc.
pub fn keep_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes glibc's tuning parameters; it is safe to call at any time.
    unsafe {
        libc::mallopt(libc::M_MMAP_MAX, 0);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 1 << 30);
    }
}
