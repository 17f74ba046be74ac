//! The `llmhub` binary: everything lives in the library; this only hands over to the CLI.

/// Every request allocates many small JSON values; mimalloc served the proxy benchmark
/// 7-9% more requests per second than the system allocator (bench/README.md). It is
/// built without transparent huge pages (`no_thp`): with them, its arenas are faulted
/// in 2 MiB at a time, 11 MB of an idle gateway's 37 MB (bench/rss.sh).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    llmhub::cli::main()
}
