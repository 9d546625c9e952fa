//! SSH sources. gix speaks SSH through OpenSSH's `ssh` program, so the Sync's private key is
//! loaded from memory into a short-lived `ssh-agent` of this fetch alone (`ssh-add -` reads it
//! from a pipe: it is never written to disk), and `ssh` is pointed at that agent and at the
//! Secret's `known_hosts`, with strict host-key checking and no user or system configuration.
//! Passphrase-protected OpenSSH keys are decrypted in memory first (the `password` entry, as
//! Flux takes it).

use std::io::Write;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use zeroize::Zeroizing;

/// Why an SSH key could not be made ready for a fetch; never shows the key.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The Secret has no `known_hosts` entry.
    #[error("the secret has no known_hosts entry; host keys are always verified")]
    NoKnownHosts,
    /// A file of the session could not be written.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory.
        path: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// OpenSSH's tools could not be started.
    #[error(
        "cannot start {tool} (OpenSSH's ssh, ssh-agent and ssh-add must be on PATH for ssh sources): {source}"
    )]
    Tool {
        /// The program.
        tool: &'static str,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// `ssh-agent` did not come up.
    #[error("ssh-agent {0}")]
    Agent(String),
    /// The key is protected and no passphrase was given.
    #[error("the identity is passphrase-protected; add a `password` entry to the secret")]
    NeedsPassphrase,
    /// `ssh-add` refused the key.
    #[error("the identity could not be loaded: {0}")]
    Refused(String),
    /// A protected key is not in OpenSSH's format, or its passphrase is wrong.
    #[error("identity: {0}")]
    Key(String),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |source| Error::Io {
        path: path.display().to_string(),
        source,
    }
}

/// A running agent holding one key, with the `ssh` command line that uses it. The agent is
/// killed and its directory removed on drop.
pub struct Session {
    dir: tempfile::TempDir,
    agent: Child,
    command: String,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session").field("dir", &self.dir.path()).finish()
    }
}

/// Single-quotes a path for the shell gix runs `core.sshCommand` through.
fn quote(p: &Path) -> String {
    format!("'{}'", p.display().to_string().replace('\'', r"'\''"))
}

impl Session {
    /// Starts an agent under `parent` (a private directory is made there), loads `identity`
    /// (decrypted with `passphrase` when given) and writes `known_hosts` beside it.
    pub fn start(
        parent: &Path,
        identity: &[u8],
        passphrase: Option<&str>,
        known_hosts: &str,
    ) -> Result<Self, Error> {
        if known_hosts.trim().is_empty() {
            return Err(Error::NoKnownHosts);
        }
        let key: Zeroizing<Vec<u8>> = match passphrase {
            None => Zeroizing::new(identity.to_vec()),
            Some(pass) => decrypt(identity, pass)?,
        };
        std::fs::create_dir_all(parent).map_err(io(parent))?;
        let dir = tempfile::Builder::new()
            .prefix("ssh-")
            .tempdir_in(parent)
            .map_err(io(parent))?;
        let sock = dir.path().join("agent.sock");
        let known = dir.path().join("known_hosts");
        let log = dir.path().join("ssh.log");
        std::fs::write(&known, known_hosts).map_err(io(&known))?;
        let agent = Command::new("ssh-agent")
            .arg("-D")
            .arg("-a")
            .arg(&sock)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|source| Error::Tool {
                tool: "ssh-agent",
                source,
            })?;
        let mut session = Self {
            command: format!(
                "ssh -F /dev/null -o IdentityAgent={} -o IdentityFile=none -o UserKnownHostsFile={} \
                 -o GlobalKnownHostsFile=/dev/null -o StrictHostKeyChecking=yes -o UpdateHostKeys=no \
                 -o BatchMode=yes -o ConnectTimeout=30 -E {}",
                quote(&sock),
                quote(&known),
                quote(&log)
            ),
            dir,
            agent,
        };
        session.wait_for(&sock)?;
        add(&sock, &key)?;
        Ok(session)
    }

    /// What `ssh` reported (e.g. `Host key verification failed.`), for the error of a failed
    /// fetch: gix sees only a closed connection.
    pub fn diagnostics(&self) -> Option<String> {
        let text = std::fs::read_to_string(self.dir.path().join("ssh.log")).ok()?;
        let lines: Vec<&str> = text.lines().map(str::trim).filter(|l| !l.is_empty()).collect();
        (!lines.is_empty()).then(|| lines[lines.len().saturating_sub(3)..].join("; "))
    }

    /// The command line for `core.sshCommand`.
    pub fn ssh_command(&self) -> &str {
        &self.command
    }

    /// Waits until the agent accepts connections: its socket file exists as soon as it is
    /// bound, a moment before it listens.
    fn wait_for(&mut self, sock: &Path) -> Result<(), Error> {
        let start = Instant::now();
        while std::os::unix::net::UnixStream::connect(sock).is_err() {
            if let Ok(Some(status)) = self.agent.try_wait() {
                return Err(Error::Agent(format!("exited with {status}")));
            }
            if start.elapsed() > Duration::from_secs(10) {
                return Err(Error::Agent("did not open its socket within 10 s".into()));
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        Ok(())
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        let _ = self.agent.kill();
        let _ = self.agent.wait();
    }
}

/// `ssh-add -` with the key on a pipe.
fn add(sock: &Path, key: &[u8]) -> Result<(), Error> {
    let mut child = Command::new("ssh-add")
        .args(["-q", "-"])
        .env("SSH_AUTH_SOCK", sock)
        .env_remove("SSH_ASKPASS")
        .env_remove("DISPLAY")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|source| Error::Tool {
            tool: "ssh-add",
            source,
        })?;
    if let Some(mut stdin) = child.stdin.take() {
        // A short write is reported by ssh-add itself.
        let _ = stdin.write_all(key);
        if !key.ends_with(b"\n") {
            let _ = stdin.write_all(b"\n");
        }
    }
    let out = child.wait_with_output().map_err(|source| Error::Tool {
        tool: "ssh-add",
        source,
    })?;
    if out.status.success() {
        return Ok(());
    }
    let msg = String::from_utf8_lossy(&out.stderr);
    let msg = msg.trim().replace("(stdin)", "identity");
    if msg.contains("passphrase") || msg.contains("incorrect") {
        Err(Error::NeedsPassphrase)
    } else {
        Err(Error::Refused(msg))
    }
}

/// Decrypts a passphrase-protected OpenSSH private key in memory.
fn decrypt(identity: &[u8], passphrase: &str) -> Result<Zeroizing<Vec<u8>>, Error> {
    let key = ssh_key::PrivateKey::from_openssh(identity).map_err(|e| {
        Error::Key(format!(
            "with a password, the key must be in OpenSSH format (`-----BEGIN OPENSSH PRIVATE KEY-----`): {e}"
        ))
    })?;
    let key = if key.is_encrypted() {
        key.decrypt(passphrase)
            .map_err(|_| Error::Key("the password does not decrypt the key".into()))?
    } else {
        key
    };
    let pem = key
        .to_openssh(ssh_key::LineEnding::LF)
        .map_err(|e| Error::Key(e.to_string()))?;
    Ok(Zeroizing::new(pem.as_bytes().to_vec()))
}
