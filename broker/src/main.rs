//! The `sluice` binary (needs the `cli` feature): see [`sluice_broker::cli`].

fn main() -> std::process::ExitCode {
    sluice_broker::cli::main()
}
