//! `lockstep`: thin entry point over the `lockstep_cli` library.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    // Plaintext and keys pass through this process: no core dump, no ptrace by its user.
    if let Err(e) = lockstep_formats::secret::protect_process() {
        eprintln!("lockstep: protecting the process' memory: {e}");
        return ExitCode::FAILURE;
    }
    lockstep_cli::main_with(lockstep_cli::Cli::parse())
}
