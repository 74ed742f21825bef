//! `sluice bench ...`: hands its arguments to the `sluice-bench` program
//! (the benches crate builds it), replacing this process.

use std::ffi::OsString;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;

use super::common::CliError;

/// Replaces this process with `sluice-bench` (beside this executable, as
/// cargo builds them, or on `PATH`); returns only if that fails, with the
/// reason.
pub fn exec(args: &[OsString]) -> CliError {
    let beside = std::env::current_exe().ok().and_then(|exe| Some(exe.parent()?.join("sluice-bench")));
    let program = beside.filter(|p| p.is_file()).unwrap_or_else(|| PathBuf::from("sluice-bench"));
    let err = std::process::Command::new(&program).args(args).exec();
    CliError::Usage(format!(
        "cannot run {}: {err} (build it with `cargo build --release -p sluice-benches`)",
        program.display()
    ))
}
