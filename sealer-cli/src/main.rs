//! `lockstep`: thin entry point over the `lockstep_cli` library.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    lockstep_cli::main_with(lockstep_cli::Cli::parse())
}
