//! The helper process: one per build (kustomize's global state and panics stay out of the
//! caller), started with an empty environment, fed the repository as a tar on stdin, and held
//! to a time limit and an output limit.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use wait_timeout::ChildExt;

use crate::{Error, Result};

/// The helper's file name.
pub const PROGRAM: &str = "lockstep-kustomize";
/// The environment variable naming the helper.
pub const ENV: &str = "LOCKSTEP_KUSTOMIZE_HELPER";
/// The kustomize release the helper is built from (`sigs.k8s.io/kustomize/api`).
pub const KUSTOMIZE_API_VERSION: &str = "v0.21.2";
/// The `kustomize` CLI release of the same module version (the tests' oracle).
pub const KUSTOMIZE_CLI_VERSION: &str = "v5.8.2";

/// How much of the helper's stderr is kept for the error message.
const STDERR_LIMIT: usize = 64 * 1024;

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
        if let Some(p) = explicit {
            return Some(p.to_owned());
        }
        if let Some(p) = std::env::var_os(ENV).filter(|p| !p.is_empty()) {
            return Some(PathBuf::from(p));
        }
        // The running binary: /proc/self/exe, else how it was started (no /proc in a chroot).
        let exe = std::env::current_exe().ok().or_else(|| {
            std::env::args_os()
                .next()
                .map(PathBuf::from)
                .filter(|p| p.parent().is_some())
        });
        let beside = exe
            .and_then(|e| e.parent().map(|d| d.join(PROGRAM)))
            .filter(|p| p.is_file());
        beside.or_else(|| {
            std::env::split_paths(&std::env::var_os("PATH")?)
                .map(|d| d.join(PROGRAM))
                .find(|p| p.is_file())
        })
    }

    /// Runs one build of `dir` over `files`; returns its YAML stream.
    pub fn run(&self, files: &BTreeMap<String, Vec<u8>>, dir: &str) -> Result<Vec<u8>> {
        let label = if dir.is_empty() { "." } else { dir };
        let io = |source: std::io::Error| Error::Helper {
            dir: label.to_owned(),
            program: self.program.display().to_string(),
            source,
        };
        // No environment: neither git nor an HTTP proxy can be found, should kustomize try to
        // fetch something the scan let through; the proxy below goes nowhere.
        let mut child = Command::new(&self.program)
            .arg("build")
            .arg(label)
            .args(self.origins.then_some("--origins"))
            .env_clear()
            .env("HTTPS_PROXY", "http://127.0.0.1:9")
            .env("HTTP_PROXY", "http://127.0.0.1:9")
            .current_dir("/")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(io)?;
        let (Some(stdin), Some(mut stdout), Some(mut stderr)) =
            (child.stdin.take(), child.stdout.take(), child.stderr.take())
        else {
            let _ = child.kill();
            return Err(io(std::io::Error::other("no pipes")));
        };
        let overflow = AtomicBool::new(false);
        let limit = self.max_output;
        let (status, out, err) = std::thread::scope(|s| {
            s.spawn(move || write_tar(stdin, files));
            let reader = s.spawn(|| {
                let mut out = Vec::new();
                let r = (&mut stdout).take(limit as u64 + 1).read_to_end(&mut out);
                if out.len() > limit {
                    overflow.store(true, Ordering::Relaxed);
                    out.clear();
                }
                drop(stdout);
                r.map(|_| out)
            });
            let errors = s.spawn(move || {
                let mut err = Vec::new();
                let _ = (&mut stderr).take(STDERR_LIMIT as u64).read_to_end(&mut err);
                // Drain the rest so the helper never blocks on a full pipe.
                let _ = std::io::copy(&mut stderr, &mut std::io::sink());
                err
            });
            let status = match child.wait_timeout(self.timeout) {
                Ok(Some(status)) => Ok(status),
                Ok(None) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    Err(None)
                }
                Err(e) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    Err(Some(e))
                }
            };
            let out = reader.join().unwrap_or_else(|_| Ok(Vec::new()));
            let err = errors.join().unwrap_or_default();
            (status, out, err)
        });
        let status = match status {
            Ok(s) => s,
            Err(None) => {
                return Err(Error::Timeout {
                    dir: label.to_owned(),
                    limit: self.timeout,
                });
            }
            Err(Some(e)) => return Err(io(e)),
        };
        if overflow.load(Ordering::Relaxed) {
            return Err(Error::OutputTooLarge {
                dir: label.to_owned(),
                limit: self.max_output,
            });
        }
        let message = String::from_utf8_lossy(&err).trim().to_owned();
        match status.code() {
            Some(0) => out.map_err(io),
            Some(1) => Err(Error::Build {
                kustomization: crate::paths::kustomization_file(files, dir)
                    .unwrap_or_else(|| crate::paths::child(dir, "kustomization.yaml")),
                message: clean(&message),
            }),
            _ => Err(Error::Crashed {
                dir: label.to_owned(),
                status: status.to_string(),
                message,
            }),
        }
    }
}

/// The repository as a tar (regular files, mode 0644), written to the helper's stdin; a helper
/// that stops reading (it failed) ends the stream.
fn write_tar(stdin: impl Write, files: &BTreeMap<String, Vec<u8>>) {
    let mut tar = tar::Builder::new(std::io::BufWriter::with_capacity(1 << 16, stdin));
    for (path, bytes) in files {
        let mut h = tar::Header::new_gnu();
        h.set_size(bytes.len() as u64);
        h.set_mode(0o644);
        h.set_entry_type(tar::EntryType::Regular);
        if tar.append_data(&mut h, path, bytes.as_slice()).is_err() {
            return;
        }
    }
    let _ = tar.into_inner().and_then(|mut w| w.flush());
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
