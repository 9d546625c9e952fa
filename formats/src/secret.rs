//! Zeroizing containers for secret material, and [`protect_process`].
//!
//! Everything that can hold a decrypted value or a key lives in one of these types. Their
//! `Debug` never shows the content, so a stray `{:?}` in a log line or an error cannot leak it.

use std::fmt;

use zeroize::{Zeroize, Zeroizing};

/// Secret bytes, wiped on drop, never printed.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct SecretBytes(Zeroizing<Vec<u8>>);

impl SecretBytes {
    /// Wraps `bytes`; the caller's buffer is moved, not copied.
    pub fn new(bytes: Vec<u8>) -> Self {
        Self(Zeroizing::new(bytes))
    }

    /// The secret content. Callers must not log or persist it.
    pub fn expose(&self) -> &[u8] {
        &self.0
    }

    /// The content as UTF-8, if it is.
    pub fn expose_str(&self) -> Option<&str> {
        std::str::from_utf8(&self.0).ok()
    }

    /// Number of bytes held.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether no bytes are held.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl From<Vec<u8>> for SecretBytes {
    fn from(v: Vec<u8>) -> Self {
        Self::new(v)
    }
}

impl From<String> for SecretBytes {
    fn from(s: String) -> Self {
        Self::new(s.into_bytes())
    }
}

impl fmt::Debug for SecretBytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretBytes(<{} bytes redacted>)", self.0.len())
    }
}

impl Zeroize for SecretBytes {
    fn zeroize(&mut self) {
        self.0.zeroize();
    }
}

/// A 32-byte symmetric key (a SOPS data key), wiped on drop, never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct DataKey(Zeroizing<[u8; 32]>);

impl DataKey {
    /// Wraps raw key bytes.
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(Zeroizing::new(bytes))
    }

    /// A fresh random key from the operating system's generator.
    pub fn generate() -> Self {
        use rand::RngCore;
        let mut k = Zeroizing::new([0u8; 32]);
        rand::rngs::OsRng.fill_bytes(k.as_mut());
        Self(k)
    }

    /// The key bytes. Callers must not log or persist them.
    pub fn expose(&self) -> &[u8; 32] {
        &self.0
    }
}

impl fmt::Debug for DataKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("DataKey(<redacted>)")
    }
}

/// A JSON object that may hold secret values (a decrypted Secret manifest, a Secret read back
/// from the API server): every string in it is wiped when it is dropped or replaced, and its
/// `Debug` shows nothing. Map keys (field and Secret key names) are not secret and are not wiped.
#[derive(Clone, Default, PartialEq)]
pub struct SecretJson(serde_json::Value);

impl SecretJson {
    /// Wraps `value`; it is moved, not copied.
    pub fn new(value: serde_json::Value) -> Self {
        Self(value)
    }
}

impl std::ops::Deref for SecretJson {
    type Target = serde_json::Value;
    fn deref(&self) -> &serde_json::Value {
        &self.0
    }
}

impl std::ops::DerefMut for SecretJson {
    fn deref_mut(&mut self) -> &mut serde_json::Value {
        &mut self.0
    }
}

impl From<serde_json::Value> for SecretJson {
    fn from(v: serde_json::Value) -> Self {
        Self(v)
    }
}

impl serde::Serialize for SecretJson {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        self.0.serialize(s)
    }
}

impl fmt::Debug for SecretJson {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretJson(<redacted>)")
    }
}

impl Zeroize for SecretJson {
    fn zeroize(&mut self) {
        wipe_json(&mut self.0);
    }
}

impl Drop for SecretJson {
    fn drop(&mut self) {
        wipe_json(&mut self.0);
    }
}

/// Wipes every string of a JSON value in place (numbers and booleans are overwritten with
/// `null`), leaving its shape and keys; for values that held secret material and are about to
/// be dropped.
pub fn wipe_json(v: &mut serde_json::Value) {
    match v {
        serde_json::Value::String(s) => s.zeroize(),
        serde_json::Value::Array(a) => a.iter_mut().for_each(wipe_json),
        serde_json::Value::Object(m) => m.values_mut().for_each(wipe_json),
        serde_json::Value::Number(_) | serde_json::Value::Bool(_) => *v = serde_json::Value::Null,
        serde_json::Value::Null => {}
    }
}

/// Keeps this process' memory out of reach, as OpenSSH's `ssh-agent` does: no core dump
/// (`RLIMIT_CORE` 0, and not dumpable), and, because it is not dumpable, no `ptrace` attach or
/// `/proc/<pid>/mem` read by other processes of the same user. Called first thing by the agent
/// and the CLI. A no-op on other systems than Linux.
pub fn protect_process() -> std::io::Result<()> {
    #[cfg(target_os = "linux")]
    {
        use rustix::process::{DumpableBehavior, Resource, Rlimit, set_dumpable_behavior, setrlimit};
        setrlimit(
            Resource::Core,
            Rlimit {
                current: Some(0),
                maximum: Some(0),
            },
        )?;
        set_dumpable_behavior(DumpableBehavior::NotDumpable)?;
    }
    Ok(())
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    #[test]
    fn a_protected_process_is_not_dumpable_and_writes_no_core() {
        use rustix::process::{DumpableBehavior, Resource, dumpable_behavior, getrlimit};
        protect_process().unwrap();
        assert_eq!(dumpable_behavior().unwrap(), DumpableBehavior::NotDumpable);
        let core = getrlimit(Resource::Core);
        assert_eq!((core.current, core.maximum), (Some(0), Some(0)));
        // Twice is fine (the CLI and the agent call it once; tests share a process).
        protect_process().unwrap();
    }
}

#[cfg(test)]
mod json_tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn secret_json_wipes_its_strings_in_place_and_shows_nothing() {
        let mut v = SecretJson::new(serde_json::json!({
            "data": { "password": "CANARY-wipe", "n": 7 }, "list": ["CANARY-item"]
        }));
        assert_eq!(format!("{v:?}"), "SecretJson(<redacted>)");
        assert_eq!(v.pointer("/data/password").unwrap(), "CANARY-wipe");
        let keep = v.clone();
        v.zeroize();
        assert_eq!(
            *v,
            serde_json::json!({ "data": { "password": "", "n": null }, "list": [""] }),
            "the shape stays, the values go"
        );
        assert_eq!(
            keep.pointer("/list/0").unwrap(),
            "CANARY-item",
            "a clone is its own copy"
        );
    }
}
