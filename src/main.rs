//! The `llmhub` binary: everything lives in the library; this only chooses the allocator
//! and hands over to the CLI.

/// Every request allocates many small JSON values; mimalloc served the proxy benchmark
/// 7-9% more requests per second than the system allocator (bench/README.md). It is
/// built without transparent huge pages (`no_thp`): with them, its arenas are faulted
/// in 2 MiB at a time, 11 MB of an idle gateway's 37 MB (bench/rss.sh).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    return_freed_memory_at_once();
    llmhub::cli::main()
}

/// mimalloc keeps freed pages for a second and returns them only when the thread that
/// freed them allocates again, so a gateway at rest after a few large requests kept
/// 60–80 MB it no longer used (bench/rss.sh). A purge delay of 0 returns them as they
/// are freed; the proxy benchmark shows no cost. `MIMALLOC_PURGE_DELAY` in the
/// environment still decides when set.
#[allow(unsafe_code)]
fn return_freed_memory_at_once() {
    // mimalloc v3's `mi_option_purge_delay`, which the binding does not name.
    const PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
        // SAFETY: mi_option_set stores an integer in mimalloc's option table, which it
        // reads on each purge decision; called before any thread but this one exists.
        unsafe { libmimalloc_sys::mi_option_set(PURGE_DELAY, 0) }
    }
}
