//! The `sluice` command line, built inside the tests crate so end-to-end
//! tests can start the real broker as a subprocess and `kill -9` it (see
//! tests/Cargo.toml for why a copy).

fn main() -> std::process::ExitCode {
    sluice_broker::cli::main()
}
