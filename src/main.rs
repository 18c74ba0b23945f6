//! The `meridian` binary: parses the command line and runs one command.
//! All logic lives in the library (`meridian::cli` and below); this is the edge where
//! errors become messages and exit codes (0 ok, 1 failure, 2 bad input / usage).

/// mimalloc instead of glibc malloc: the hot paths (gRPC framing, Raft entries, sled
/// pages) allocate per request, and glibc's malloc/free/consolidate were ~12% of a
/// node's CPU under write load (docs/PERFORMANCE.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    meridian::alloc::reexec_node_with_options();
    meridian::cli::main()
}
