fn main() {
    keep_large_buffers_out_of_the_heap();
    std::process::exit(drydock::cli::main());
}

/// glibc raises its mmap threshold every time a large block is freed; after that the
/// multi-MiB chunk, blob and pack buffers are carved from per-thread arenas that keep the
/// memory. A fixed threshold sends them back to the kernel when freed: peak RSS of a 1 GiB
/// registry backup fell from 233 MiB to 64 MiB, of its restore from 247 to 101 MiB
/// (docs/BENCHMARKS.md). MALLOC_MMAP_THRESHOLD_ in the environment still wins.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn keep_large_buffers_out_of_the_heap() {
    if std::env::var_os("MALLOC_MMAP_THRESHOLD_").is_none() {
        // SAFETY: called before any other thread exists; mallopt only sets a parameter.
        unsafe {
            libc::mallopt(libc::M_MMAP_THRESHOLD, 1 << 20);
        }
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn keep_large_buffers_out_of_the_heap() {}
