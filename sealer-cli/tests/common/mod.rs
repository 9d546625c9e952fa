//! Fixtures for the SOPS interop tests: a scratch directory with real age keys, and runners for
//! the real `sops` and our `lockstep` binary.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub use lockstep_tests::{AgeKey, ok, peer, run};

/// A scratch directory with three age keys made by `age-keygen`.
pub struct Env {
    pub dir: tempfile::TempDir,
    pub k1: AgeKey,
    pub k2: AgeKey,
    pub k3: AgeKey,
}

impl Env {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let k1 = AgeKey::generate(dir.path(), "k1.txt");
        let k2 = AgeKey::generate(dir.path(), "k2.txt");
        let k3 = AgeKey::generate(dir.path(), "k3.txt");
        Self { dir, k1, k2, k3 }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn write(&self, name: &str, bytes: &[u8]) -> PathBuf {
        let p = self.path(name);
        if let Some(parent) = p.parent() {
            std::fs::create_dir_all(parent).unwrap();
        }
        std::fs::write(&p, bytes).unwrap();
        p
    }

    /// Runs real `sops` in the scratch directory with `SOPS_AGE_KEY_FILE=key`.
    pub fn sops(&self, key: Option<&Path>, args: &[&str]) -> Output {
        let mut c = Command::new(peer("sops"));
        c.current_dir(self.dir.path()).args(args);
        if let Some(k) = key {
            c.env("SOPS_AGE_KEY_FILE", k);
        }
        run(&mut c, self.dir.path(), None)
    }

    /// Runs our `lockstep` binary in the scratch directory with `SOPS_AGE_KEY_FILE=key`.
    pub fn lockstep(&self, key: Option<&Path>, args: &[&str]) -> Output {
        self.lockstep_with(key, args, None)
    }

    pub fn lockstep_with(&self, key: Option<&Path>, args: &[&str], stdin: Option<&[u8]>) -> Output {
        let mut c = Command::new(env!("CARGO_BIN_EXE_lockstep"));
        c.current_dir(self.dir.path()).args(args);
        if let Some(k) = key {
            c.env("SOPS_AGE_KEY_FILE", k);
        }
        run(&mut c, self.dir.path(), stdin)
    }
}

/// Re-serialises JSON compactly, keeping key order, so two outputs compare by content and order.
pub fn canonical_json(bytes: &[u8]) -> String {
    let v: serde_json::Value = serde_json::from_slice(bytes)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(bytes)));
    serde_json::to_string(&v).unwrap()
}
