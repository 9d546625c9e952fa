//! A helper process as Lockstep runs both of its Go helpers (`lockstep-kustomize`,
//! `lockstep-helm`): one process per request, an empty environment, the request on stdin, a
//! time limit and an output limit; what it prints is held in memory that is wiped when dropped
//! (a chart's rendered Secrets are plaintext).

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{ChildStdin, Command, Stdio};
use std::time::Duration;

use wait_timeout::ChildExt;
use zeroize::{Zeroize, Zeroizing};

/// How much of a helper's stderr is kept for the error message.
const STDERR_LIMIT: usize = 64 * 1024;

/// A helper's limits.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// The longest it may run.
    pub timeout: Duration,
    /// The most it may print on stdout, in bytes.
    pub max_output: usize,
}

/// A helper that ran to its end.
#[derive(Debug)]
pub struct Finished {
    /// Its exit code (`None`: killed by a signal).
    pub code: Option<i32>,
    /// Its exit status, for messages.
    pub status: String,
    /// What it printed on stdout.
    pub stdout: Zeroizing<Vec<u8>>,
    /// What it printed on stderr (the first 64 KiB, trimmed).
    pub stderr: String,
}

/// Why a helper did not run to its end.
#[derive(Debug)]
pub enum Failure {
    /// It could not be started or talked to.
    Io(std::io::Error),
    /// It ran past [`Limits::timeout`] and was killed.
    Timeout,
    /// It printed more than [`Limits::max_output`] and was stopped.
    TooLarge,
}

/// Where a helper is: `explicit`, else the environment variable `env`, else `program` beside
/// the running binary (as the image installs it), else on `PATH`.
pub fn locate(explicit: Option<&Path>, env: &str, program: &str) -> Option<PathBuf> {
    if let Some(p) = explicit {
        return Some(p.to_owned());
    }
    if let Some(p) = std::env::var_os(env).filter(|p| !p.is_empty()) {
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
        .and_then(|e| e.parent().map(|d| d.join(program)))
        .filter(|p| p.is_file());
    beside.or_else(|| {
        std::env::split_paths(&std::env::var_os("PATH")?)
            .map(|d| d.join(program))
            .find(|p| p.is_file())
    })
}

/// Runs `program args`, with `feed` writing its stdin (from a thread of its own, so that a
/// large request and a large answer cannot block each other).
pub fn run(
    program: &Path,
    args: &[&str],
    limits: Limits,
    feed: impl FnOnce(ChildStdin) + Send,
) -> Result<Finished, Failure> {
    // No environment: neither git nor an HTTP proxy can be found, should the engine try to
    // fetch something the caller let through; the proxy below goes nowhere.
    let mut child = Command::new(program)
        .args(args)
        .env_clear()
        .env("HTTPS_PROXY", "http://127.0.0.1:9")
        .env("HTTP_PROXY", "http://127.0.0.1:9")
        .current_dir("/")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(Failure::Io)?;
    let (Some(stdin), Some(mut stdout), Some(mut stderr)) =
        (child.stdin.take(), child.stdout.take(), child.stderr.take())
    else {
        let _ = child.kill();
        let _ = child.wait();
        return Err(Failure::Io(std::io::Error::other("no pipes")));
    };
    let (status, out, err) = std::thread::scope(|s| {
        s.spawn(move || feed(stdin));
        let reader = s.spawn(move || read_limited(&mut stdout, limits.max_output));
        let errors = s.spawn(move || {
            let mut err = Vec::new();
            let _ = (&mut stderr).take(STDERR_LIMIT as u64).read_to_end(&mut err);
            // Drain the rest so the helper never blocks on a full pipe.
            let _ = std::io::copy(&mut stderr, &mut std::io::sink());
            err
        });
        let status = match child.wait_timeout(limits.timeout) {
            Ok(Some(status)) => Ok(status),
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                Err(Failure::Timeout)
            }
            Err(e) => {
                let _ = child.kill();
                let _ = child.wait();
                Err(Failure::Io(e))
            }
        };
        let out = reader
            .join()
            .unwrap_or_else(|_| Err(std::io::Error::other("the output reader panicked")));
        let err = errors.join().unwrap_or_default();
        (status, out, err)
    });
    let status = status?;
    let stdout = match out.map_err(Failure::Io)? {
        Some(stdout) => stdout,
        None => return Err(Failure::TooLarge),
    };
    Ok(Finished {
        code: status.code(),
        status: status.to_string(),
        stdout,
        stderr: String::from_utf8_lossy(&err).trim().to_owned(),
    })
}

/// Reads `r` to its end into wiped-on-drop memory, growing it without leaving copies behind;
/// `None` past `limit` bytes (the rest is drained, so the writer never blocks).
fn read_limited(r: &mut impl Read, limit: usize) -> std::io::Result<Option<Zeroizing<Vec<u8>>>> {
    let mut out = Zeroizing::new(Vec::with_capacity(64 * 1024));
    let mut chunk = Zeroizing::new([0u8; 64 * 1024]);
    loop {
        let n = match r.read(&mut chunk[..]) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if out.len() + n > limit {
            out.zeroize();
            let _ = std::io::copy(r, &mut std::io::sink());
            return Ok(None);
        }
        if out.len() + n > out.capacity() {
            // Grow by moving into a larger buffer; the old one is wiped as it is dropped.
            let mut larger = Zeroizing::new(Vec::with_capacity((out.capacity() * 2).max(out.len() + n)));
            larger.extend_from_slice(&out);
            out = larger;
        }
        out.extend_from_slice(&chunk[..n]);
    }
    Ok(Some(out))
}

/// `entries` as a tar (regular files, mode 0644) written to `w`; a helper that stops reading
/// (it failed) ends the stream, and its error is what the caller reports.
pub fn write_tar<'a>(w: impl Write, entries: impl IntoIterator<Item = (&'a str, &'a [u8])>) {
    let mut tar = tar::Builder::new(w);
    for (path, bytes) in entries {
        let mut h = tar::Header::new_gnu();
        h.set_size(bytes.len() as u64);
        h.set_mode(0o644);
        h.set_entry_type(tar::EntryType::Regular);
        if tar.append_data(&mut h, path, bytes).is_err() {
            return;
        }
    }
    let _ = tar.into_inner().and_then(|mut w| w.flush());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_is_read_whole_within_the_limit_and_refused_past_it() {
        let data: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        let got = read_limited(&mut data.as_slice(), data.len()).unwrap().unwrap();
        assert_eq!(&got[..], &data[..]);
        assert!(
            read_limited(&mut data.as_slice(), data.len() - 1)
                .unwrap()
                .is_none()
        );
    }
}
