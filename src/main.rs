//! The `meridian` binary: parses the command line and runs one command.
//! All logic lives in the library (`meridian::cli` and below); this is the edge where
//! errors become messages and exit codes (0 ok, 1 failure, 2 bad input / usage).

fn main() -> std::process::ExitCode {
    meridian::cli::main()
}
