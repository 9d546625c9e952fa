//! The helper process: one per build (kustomize's global state and panics stay out of the
//! caller), started with an empty environment, fed the repository as a tar on stdin, and held
//! to a time limit and an output limit.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::process::{self, Failure, Limits, write_tar};
use crate::{Error, Result};

/// The helper's file name.
pub const PROGRAM: &str = "lockstep-kustomize";
/// The environment variable naming the helper.
pub const ENV: &str = "LOCKSTEP_KUSTOMIZE_HELPER";
/// The kustomize release the helper is built from (`sigs.k8s.io/kustomize/api`).
pub const KUSTOMIZE_API_VERSION: &str = "v0.21.2";
/// The `kustomize` CLI release of the same module version (the tests' oracle).
pub const KUSTOMIZE_CLI_VERSION: &str = "v5.8.2";

/// The kustomize helper and its limits.
#[derive(Clone, Debug)]
pub struct Helper {
    /// The `lockstep-kustomize` binary.
    pub program: PathBuf,
    /// The longest a build may take.
    pub timeout: Duration,
    /// The most a build may print, in bytes.
    pub max_output: usize,
    /// Ask kustomize for every object's origin (its file), for messages and `lockstep build`'s
    /// sources; it slows the build by about a third, and decryption does not need it.
    pub origins: bool,
}

impl Helper {
    /// Default limits: 60 s (Argo CD's exec timeout is 90 s) and 64 MiB.
    pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);
    /// See [`Helper::DEFAULT_TIMEOUT`].
    pub const DEFAULT_MAX_OUTPUT: usize = 64 * 1024 * 1024;

    /// The helper at `program`, with the default limits.
    pub fn new(program: impl Into<PathBuf>) -> Self {
        Self {
            program: program.into(),
            timeout: Self::DEFAULT_TIMEOUT,
            max_output: Self::DEFAULT_MAX_OUTPUT,
            origins: false,
        }
    }

    /// Where the helper is: `explicit`, else `$LOCKSTEP_KUSTOMIZE_HELPER`, else beside the
    /// running binary (as the image installs it), else on `PATH`.
    pub fn locate(explicit: Option<&Path>) -> Option<PathBuf> {
        process::locate(explicit, ENV, PROGRAM)
    }

    /// Runs one build of `dir` over `files`; returns its YAML stream.
    pub fn run(&self, files: &BTreeMap<String, Vec<u8>>, dir: &str) -> Result<Vec<u8>> {
        let label = if dir.is_empty() { "." } else { dir };
        let io = |source: std::io::Error| Error::Helper {
            dir: label.to_owned(),
            program: self.program.display().to_string(),
            source,
        };
        let mut args = vec!["build", label];
        if self.origins {
            args.push("--origins");
        }
        let limits = Limits {
            timeout: self.timeout,
            max_output: self.max_output,
        };
        // Ciphertext only: a buffered writer is fine here.
        let feed = |stdin| {
            write_tar(
                std::io::BufWriter::with_capacity(1 << 16, stdin),
                files.iter().map(|(p, b)| (p.as_str(), b.as_slice())),
            );
        };
        let mut done = match process::run(&self.program, &args, limits, feed) {
            Ok(done) => done,
            Err(Failure::Io(e)) => return Err(io(e)),
            Err(Failure::Timeout) => {
                return Err(Error::Timeout {
                    dir: label.to_owned(),
                    limit: self.timeout,
                });
            }
            Err(Failure::TooLarge) => {
                return Err(Error::OutputTooLarge {
                    dir: label.to_owned(),
                    limit: self.max_output,
                });
            }
        };
        match done.code {
            // Moved out, not copied: it is ciphertext only, and may be tens of MiB.
            Some(0) => Ok(std::mem::take(&mut *done.stdout)),
            Some(1) => Err(Error::Build {
                kustomization: crate::paths::kustomization_file(files, dir)
                    .unwrap_or_else(|| crate::paths::child(dir, "kustomization.yaml")),
                message: clean(&done.stderr),
            }),
            _ => Err(Error::Crashed {
                dir: label.to_owned(),
                status: done.status,
                message: done.stderr,
            }),
        }
    }
}

/// kustomize's message without the in-memory filesystem's leading `/` on paths (they are
/// repository-relative to the user).
fn clean(message: &str) -> String {
    message.replace(" '/", " '").replace(" /", " ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_show_repository_paths() {
        assert_eq!(
            clean(
                "accumulating resources from 'missing.yaml': open /overlays/prod/missing.yaml: file does not exist"
            ),
            "accumulating resources from 'missing.yaml': open overlays/prod/missing.yaml: file does not exist"
        );
    }
}
