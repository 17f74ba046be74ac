//! The `llmhub` binary: everything lives in the library; this only hands over to the CLI.

/// Every request allocates many small JSON values; mimalloc served the proxy benchmark
/// 7-9% more requests per second than the system allocator (bench/README.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    llmhub::cli::main()
}
