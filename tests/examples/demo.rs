//! `cargo xtask demo`: runs [`lockstep_tests::demo`] (see there) and prints as it goes.
//!
//! `demo --agent PATH [--keep]`: the `lockstep-agent` binary to run (xtask builds it first);
//! `--keep` leaves everything running until Ctrl-C.

use std::path::PathBuf;
use std::process::ExitCode;

#[tokio::main]
async fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let mut agent = None;
    let mut keep = false;
    while let Some(a) = args.next() {
        match a.as_str() {
            "--agent" => agent = args.next().map(PathBuf::from),
            "--keep" => keep = true,
            other => {
                eprintln!("demo: unknown argument {other:?} (usage: demo --agent PATH [--keep])");
                return ExitCode::from(2);
            }
        }
    }
    let Some(agent) = agent else {
        eprintln!("demo: --agent PATH is required (cargo xtask demo passes it)");
        return ExitCode::from(2);
    };
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let opts = lockstep_tests::demo::Options { root, agent, keep };
    match lockstep_tests::demo::run(&opts, &mut std::io::stdout()).await {
        Ok(_) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("demo failed: {e}");
            ExitCode::FAILURE
        }
    }
}
