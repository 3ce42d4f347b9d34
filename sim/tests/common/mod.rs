//! What every test of the `faultline` binary shares: running it as a user would.

use std::process::{Command, Output};

/// Runs the built `faultline` binary from the simulator's folder, as the README's commands do.
pub fn faultline(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_faultline"))
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("the binary runs")
}
