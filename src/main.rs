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

/// mimalloc returns freed pages to the system only after a delay, and only when the
/// thread that freed them next collects; a gateway at rest after a few large requests
/// kept 60–90 MB it no longer used (bench/rss.sh). Each serving thread now asks it to
/// collect once a second. A purge delay of 0 would return them too, but costs streams a
/// quarter of their rate: their 64 KiB frames would be purged and faulted in each time.
fn return_freed_memory_at_once() {
    llmhub::http::set_housekeeping(collect);
}

#[allow(unsafe_code)]
fn collect() {
    // SAFETY: mi_collect takes no pointers and may be called from any thread at any time;
    // it frees the calling thread's empty pages and purges those freed before.
    unsafe { libmimalloc_sys::mi_collect(true) }
}
