fn main() {
    // Before any key is read: a core file or a ptrace attach would expose the identity.
    if let Err(e) = drydock::crypto::disable_core_dumps() {
        eprintln!("drydock: error: cannot disable core dumps: {e}");
        std::process::exit(drydock::error::exit::FAILURE);
    }
    limit_malloc_arenas();
    std::process::exit(drydock::cli::main());
}

/// glibc gives each thread that allocates its own arena (up to 8 per core), and the
/// multi-MiB chunk, blob and pack buffers freed in one arena are not reused by threads
/// allocating in another: peak RSS grows with the number of busy threads. Two arenas keep
/// backup and restore memory near what is live (1 GiB backup: 165 -> 128 MiB, restore:
/// 456 -> 187 MiB) at the same CPU time. A fixed mmap threshold, tried first, halved RSS
/// again but cost 3x the CPU in page faults (docs/BENCHMARKS.md). MALLOC_ARENA_MAX in the
/// environment still wins.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn limit_malloc_arenas() {
    if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
        // SAFETY: called before any other thread exists; mallopt only sets a parameter.
        unsafe {
            libc::mallopt(libc::M_ARENA_MAX, 2);
        }
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn limit_malloc_arenas() {}
