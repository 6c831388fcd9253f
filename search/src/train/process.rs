//! Process-wide tuning for a training process (allocator, Candle's thread pool).

/// Makes glibc's allocator keep freed memory for reuse instead of returning every large block
/// to the system. A training step allocates and frees hundreds of activation-sized tensors;
/// by default each is a fresh `mmap` whose pages are faulted in and zeroed again, which costs
/// about a fifth of a CPU step. Call once at the start of a training process. Elsewhere it
/// does nothing.
pub fn keep_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator parameters; it is safe to call at any time.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 1 << 30);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 1 << 30);
        libc::mallopt(libc::M_TOP_PAD, 256 << 20);
    }
}

/// Makes Candle's element-wise CPU operations run on the calling thread. Candle runs large
/// element-wise operations on a pool that serves one caller at a time, so the replicas of a
/// step ([`TrainConfig::replicas`]) would queue for it; with this they run side by side on
/// their own cores (convolutions still use every core). It takes effect only before Candle's
/// first element-wise operation in the process, and does nothing if `CANDLE_NUM_THREADS` is
/// set.
///
/// # Safety
/// It sets an environment variable: call it before the process has other threads.
pub unsafe fn candle_ops_on_caller_thread() {
    if std::env::var_os("CANDLE_NUM_THREADS").is_none() {
        // SAFETY: the caller guarantees that no other thread reads the environment.
        unsafe { std::env::set_var("CANDLE_NUM_THREADS", "1") };
    }
}
