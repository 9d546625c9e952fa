//! Helpers shared by the agent's test binaries (each includes this module).

// Each test binary uses only some of them.
#![allow(dead_code)]

/// Runs `lockstep ARGS` in-process (the CLI library), off the async runtime: what the binary
/// would do, with its error message on failure.
pub async fn lockstep(args: Vec<String>) -> Result<(), String> {
    tokio::task::spawn_blocking(move || {
        use clap::Parser;
        let cli = lockstep_cli::Cli::try_parse_from(std::iter::once("lockstep".to_owned()).chain(args))
            .map_err(|e| e.to_string())?;
        lockstep_cli::run(cli).map_err(|e| e.to_string())
    })
    .await
    .map_err(|e| format!("the lockstep task failed: {e}"))?
}

/// Owned arguments from string slices.
pub fn args(a: &[&str]) -> Vec<String> {
    a.iter().map(|s| (*s).to_owned()).collect()
}
