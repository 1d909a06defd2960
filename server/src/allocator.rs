//! The server's memory allocator: jemalloc, set by each binary with [`crate::use_jemalloc!`].
//!
//! A CNN training step allocates and frees buffers of up to a gigabyte (im2col patches, their
//! gradients, candle's intermediate tensors). glibc's malloc maps each such buffer fresh from
//! the kernel and unmaps it on free, so every step paid for faulting in and zeroing gigabytes
//! of pages: a third of the step in `perf`. jemalloc configured as below keeps freed pages
//! for reuse (large buffers are cached like small ones, and nothing is handed back on a
//! timer: with a 2-minute decay a step still took 1.5x as long as with none). `thp:always`
//! because jemalloc otherwise zeroes a recycled large buffer asked for zeroed (candle's
//! `zeros`, every gradient accumulator) by handing its pages back to the kernel
//! (`MADV_DONTNEED`) and faulting them in again: 16,000 page faults per GAML step (66 MB), none
//! with `thp:always`, where it uses `memset` (and huge pages; the kernel's `madvise` mode
//! grants them to jemalloc's memory only). Memory is handed
//! back to the system explicitly with [`release_unused`] when a job ends and after a ranking
//! gallery is built, so an idle server does not keep a finished training's peak.

pub use tikv_jemallocator::Jemalloc;

/// jemalloc's options (its `malloc_conf` string, NUL-terminated).
pub const CONF: &[u8] = b"oversize_threshold:68719476736,dirty_decay_ms:-1,muzzy_decay_ms:-1,thp:always\0";

/// Makes jemalloc, with [`CONF`], the allocator of the binary this is called in.
#[macro_export]
macro_rules! use_jemalloc {
    () => {
        #[global_allocator]
        static ALLOCATOR: $crate::allocator::Jemalloc = $crate::allocator::Jemalloc;

        /// Read by jemalloc when it starts.
        #[allow(non_upper_case_globals)]
        #[export_name = "_rjem_malloc_conf"]
        pub static _rjem_malloc_conf: &[u8] = $crate::allocator::CONF;
    };
}

/// Hands the pages jemalloc keeps for reuse back to the system (every arena). Harmless when
/// the binary uses another allocator: jemalloc's arenas are then empty.
pub fn release_unused() {
    // `arena.<MALLCTL_ARENAS_ALL>.purge`, MALLCTL_ARENAS_ALL being 4096.
    let name = c"arena.4096.purge";
    // SAFETY: a mallctl that takes and returns nothing, called with a NUL-terminated name and
    // null old/new pointers, as jemalloc's manual specifies for `arena.<i>.purge`.
    let rc = unsafe {
        tikv_jemalloc_sys::mallctl(name.as_ptr(), std::ptr::null_mut(), std::ptr::null_mut(), std::ptr::null_mut(), 0)
    };
    if rc != 0 {
        tracing::debug!(rc, "jemalloc purge refused");
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn purging_is_accepted() {
        let big = vec![1u8; 64 << 20];
        drop(big);
        super::release_unused();
        // jemalloc answers the purge itself (0) when it is linked; nothing to crash on.
        let rc = unsafe {
            tikv_jemalloc_sys::mallctl(
                c"arena.4096.purge".as_ptr(),
                std::ptr::null_mut(),
                std::ptr::null_mut(),
                std::ptr::null_mut(),
                0,
            )
        };
        assert_eq!(rc, 0, "jemalloc accepts arena.<all>.purge");
    }
}
