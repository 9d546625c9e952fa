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
    ) -> Result<Self, String> {
        if known_hosts.trim().is_empty() {
            return Err("the secret has no known_hosts entry; host keys are always verified".into());
        }
        let key: Zeroizing<Vec<u8>> = match passphrase {
            None => Zeroizing::new(identity.to_vec()),
            Some(pass) => decrypt(identity, pass)?,
        };
        std::fs::create_dir_all(parent).map_err(|e| format!("{}: {e}", parent.display()))?;
        let dir = tempfile::Builder::new()
            .prefix("ssh-")
            .tempdir_in(parent)
            .map_err(|e| format!("{}: {e}", parent.display()))?;
        let sock = dir.path().join("agent.sock");
        let known = dir.path().join("known_hosts");
        let log = dir.path().join("ssh.log");
        std::fs::write(&known, known_hosts).map_err(|e| format!("{}: {e}", known.display()))?;
        let agent = Command::new("ssh-agent")
            .arg("-D")
            .arg("-a")
            .arg(&sock)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot start ssh-agent (OpenSSH's ssh, ssh-agent and ssh-add must be on PATH for ssh sources): {e}"))?;
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
    fn wait_for(&mut self, sock: &Path) -> Result<(), String> {
        let start = Instant::now();
        while std::os::unix::net::UnixStream::connect(sock).is_err() {
            if let Ok(Some(status)) = self.agent.try_wait() {
                return Err(format!("ssh-agent exited with {status}"));
            }
            if start.elapsed() > Duration::from_secs(10) {
                return Err("ssh-agent did not open its socket within 10 s".into());
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
fn add(sock: &Path, key: &[u8]) -> Result<(), String> {
    let mut child = Command::new("ssh-add")
        .args(["-q", "-"])
        .env("SSH_AUTH_SOCK", sock)
        .env_remove("SSH_ASKPASS")
        .env_remove("DISPLAY")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run ssh-add: {e}"))?;
    if let Some(mut stdin) = child.stdin.take() {
        // A short write is reported by ssh-add itself.
        let _ = stdin.write_all(key);
        if !key.ends_with(b"\n") {
            let _ = stdin.write_all(b"\n");
        }
    }
    let out = child.wait_with_output().map_err(|e| format!("ssh-add: {e}"))?;
    if out.status.success() {
        return Ok(());
    }
    let msg = String::from_utf8_lossy(&out.stderr);
    let msg = msg.trim().replace("(stdin)", "identity");
    if msg.contains("passphrase") || msg.contains("incorrect") {
        Err("the identity is passphrase-protected; add a `password` entry to the secret".into())
    } else {
        Err(format!("the identity could not be loaded: {msg}"))
    }
}

/// Decrypts a passphrase-protected OpenSSH private key in memory.
fn decrypt(identity: &[u8], passphrase: &str) -> Result<Zeroizing<Vec<u8>>, String> {
    let key = ssh_key::PrivateKey::from_openssh(identity).map_err(|e| {
        format!("identity: with a password, the key must be in OpenSSH format (`-----BEGIN OPENSSH PRIVATE KEY-----`): {e}")
    })?;
    let key = if key.is_encrypted() {
        key.decrypt(passphrase)
            .map_err(|_| "identity: the password does not decrypt the key".to_owned())?
    } else {
        key
    };
    let pem = key
        .to_openssh(ssh_key::LineEnding::LF)
        .map_err(|e| format!("identity: {e}"))?;
    Ok(Zeroizing::new(pem.as_bytes().to_vec()))
}
