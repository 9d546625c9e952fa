//! age identities and recipients, wrapping of the data key, and Shamir key groups.

use std::io::{Read, Write};
use std::path::Path;
use std::str::FromStr;

use age::armor::{ArmoredReader, ArmoredWriter, Format};
use zeroize::Zeroizing;

use super::metadata::{AgeEntry, KeyGroup, Metadata};
use crate::error::{Error, Result};
use crate::secret::DataKey;

/// A set of age X25519 identities, with a note for every key that was present but could not be
/// used (so that "no identity matched" can say why).
#[derive(Default)]
pub struct Identities {
    keys: Vec<age::x25519::Identity>,
    skipped: Vec<String>,
}

impl std::fmt::Debug for Identities {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Identities({} keys, {} skipped)",
            self.keys.len(),
            self.skipped.len()
        )
    }
}

impl Identities {
    /// An empty set.
    pub fn new() -> Self {
        Self::default()
    }

    /// Parses identity text line by line. Blank and `#` lines are skipped; post-quantum, plugin,
    /// SSH and passphrase-protected keys are noted as unsupported instead of failing the whole
    /// text; anything else that is not an identity is an error naming `source` and the line.
    /// Returns how many identities were added.
    pub fn add_text(&mut self, source: &str, text: &str) -> Result<usize> {
        let before = self.keys.len();
        let mut in_armor = false;
        for (n, raw) in text.lines().enumerate() {
            let line = raw.trim();
            let lineno = n + 1;
            if in_armor {
                in_armor = !line.starts_with("-----END");
                continue;
            }
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            for token in line.split_whitespace() {
                let unsupported = |what: &str| format!("{source} line {lineno}: unsupported key type {what}");
                if token.starts_with("AGE-SECRET-KEY-PQ-1") {
                    self.skipped.push(unsupported(
                        "AGE-SECRET-KEY-PQ-1 (post-quantum ML-KEM-768+X25519)",
                    ));
                } else if token.starts_with("AGE-PLUGIN-") {
                    self.skipped
                        .push(unsupported("AGE-PLUGIN-... (age plugin identities)"));
                } else if token.starts_with("AGE-SECRET-KEY-1") {
                    let id = age::x25519::Identity::from_str(token).map_err(|_| Error::Identity {
                        source_name: source.into(),
                        line: lineno,
                        reason: "invalid AGE-SECRET-KEY-1 identity (bad checksum or length)".into(),
                    })?;
                    self.keys.push(id);
                } else if token == "-----BEGIN" && line.contains("AGE ENCRYPTED FILE") {
                    self.skipped
                        .push(unsupported("passphrase-protected identity file"));
                    in_armor = true;
                    break;
                } else if token == "-----BEGIN" {
                    self.skipped
                        .push(unsupported("SSH or PEM private key (use an age X25519 identity)"));
                    in_armor = true;
                    break;
                } else {
                    return Err(Error::Identity {
                        source_name: source.into(),
                        line: lineno,
                        reason: "not an age identity (expected AGE-SECRET-KEY-1...)".into(),
                    });
                }
            }
        }
        Ok(self.keys.len() - before)
    }

    /// Reads identities from a file.
    pub fn add_file(&mut self, path: &Path) -> Result<usize> {
        let text = Zeroizing::new(std::fs::read_to_string(path).map_err(|source| Error::Io {
            path: path.into(),
            source,
        })?);
        self.add_text(&path.display().to_string(), &text)
    }

    /// Reads the identities of a Kubernetes Secret's data: every entry whose name ends with
    /// `.agekey` (Flux's convention); other entries are ignored.
    pub fn add_agekey_entries<'a>(
        &mut self,
        secret: &str,
        entries: impl IntoIterator<Item = (&'a str, &'a [u8])>,
    ) -> Result<usize> {
        let mut n = 0;
        for (name, data) in entries {
            if !name.ends_with(".agekey") {
                continue;
            }
            let source = format!("secret {secret} key {name}");
            let text = std::str::from_utf8(data).map_err(|_| Error::Identity {
                source_name: source.clone(),
                line: 0,
                reason: "not UTF-8 text".into(),
            })?;
            n += self.add_text(&source, text)?;
        }
        Ok(n)
    }

    /// The identities sops would find: `SOPS_AGE_KEY`, `SOPS_AGE_KEY_FILE`, and
    /// `$XDG_CONFIG_HOME/sops/age/keys.txt` (or `~/.config/sops/age/keys.txt`).
    pub fn from_sops_env() -> Result<Self> {
        let mut ids = Self::new();
        if let Ok(text) = std::env::var("SOPS_AGE_KEY") {
            let text = Zeroizing::new(text);
            ids.add_text("SOPS_AGE_KEY", &text)?;
        }
        if let Some(path) = std::env::var_os("SOPS_AGE_KEY_FILE") {
            ids.add_file(Path::new(&path))?;
        }
        let default = std::env::var_os("XDG_CONFIG_HOME")
            .map(std::path::PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".config")))
            .map(|d| d.join("sops/age/keys.txt"));
        if let Some(p) = default.filter(|p| p.is_file()) {
            ids.add_file(&p)?;
        }
        Ok(ids)
    }

    /// Number of usable identities.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether there is no usable identity.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Notes about keys that were present but unusable.
    pub fn skipped(&self) -> &[String] {
        &self.skipped
    }

    /// The public recipients (`age1...`) of the usable identities.
    pub fn recipients(&self) -> Vec<String> {
        self.keys.iter().map(|k| k.to_public().to_string()).collect()
    }

    /// Unwraps one armoured age file, if any identity opens it.
    fn open(&self, enc: &str) -> Option<Zeroizing<Vec<u8>>> {
        let reader = ArmoredReader::new(enc.trim_start().as_bytes());
        let dec = age::Decryptor::new_buffered(reader).ok()?;
        let mut r = dec
            .decrypt(self.keys.iter().map(|k| k as &dyn age::Identity))
            .ok()?;
        let mut out = Zeroizing::new(Vec::with_capacity(33));
        r.read_to_end(&mut out).ok()?;
        Some(out)
    }
}

/// Generates a new X25519 identity: (secret `AGE-SECRET-KEY-1...`, recipient `age1...`).
pub fn generate_identity() -> (Zeroizing<String>, String) {
    use age::secrecy::ExposeSecret;
    let id = age::x25519::Identity::generate();
    let public = id.to_public().to_string();
    (Zeroizing::new(id.to_string().expose_secret().to_owned()), public)
}

/// Checks and normalises a recipient string.
pub fn parse_recipient(r: &str) -> Result<age::x25519::Recipient> {
    let r = r.trim();
    if r.starts_with("age1pq1") {
        return Err(Error::Recipient {
            recipient: r.into(),
            reason: "unsupported key type: post-quantum (ML-KEM-768+X25519) recipients".into(),
        });
    }
    if r.starts_with("ssh-") {
        return Err(Error::Recipient {
            recipient: r.into(),
            reason: "unsupported key type: SSH recipients".into(),
        });
    }
    age::x25519::Recipient::from_str(r).map_err(|e| Error::Recipient {
        recipient: r.into(),
        reason: e.to_string(),
    })
}

/// Wraps `secret` for one recipient as an armoured age file (one file per recipient, as sops).
pub fn wrap(recipient: &str, secret: &[u8]) -> Result<AgeEntry> {
    let rcpt = parse_recipient(recipient)?;
    let enc = age::Encryptor::with_recipients(std::iter::once(&rcpt as &dyn age::Recipient))
        .map_err(|e| Error::Age(e.to_string()))?;
    let mut buf = Vec::new();
    let io = |e: std::io::Error| Error::Age(e.to_string());
    let armored = ArmoredWriter::wrap_output(&mut buf, Format::AsciiArmor).map_err(io)?;
    let mut w = enc.wrap_output(armored).map_err(io)?;
    w.write_all(secret).map_err(io)?;
    w.finish().and_then(|a| a.finish()).map_err(io)?;
    let text = String::from_utf8(buf).map_err(|_| Error::Age("armour is not UTF-8".into()))?;
    let mut text = text.replace("\r\n", "\n");
    if !text.ends_with('\n') {
        text.push('\n');
    }
    Ok(AgeEntry {
        recipient: rcpt.to_string(),
        enc: text,
    })
}

/// Builds key groups for `groups` (recipient lists) around `key`, splitting it with Shamir when
/// there is more than one group.
pub fn build_groups(
    groups: &[Vec<String>],
    threshold: Option<usize>,
    key: &DataKey,
) -> Result<Vec<KeyGroup>> {
    if groups.is_empty() || groups.iter().all(Vec::is_empty) {
        return Err(Error::NoRecipients);
    }
    let parts: Vec<Zeroizing<Vec<u8>>> = if groups.len() == 1 {
        vec![Zeroizing::new(key.expose().to_vec())]
    } else {
        let t = threshold.filter(|t| *t > 0).unwrap_or(groups.len());
        shamir::split(key.expose(), groups.len(), t)?
    };
    groups
        .iter()
        .zip(parts)
        .map(|(rs, part)| {
            Ok(KeyGroup {
                age: rs.iter().map(|r| wrap(r, &part)).collect::<Result<_>>()?,
                other: Vec::new(),
            })
        })
        .collect()
}

/// Recovers the data key with the given identities.
pub fn unwrap_data_key(meta: &Metadata, ids: &Identities) -> Result<DataKey> {
    let mut parts = Vec::new();
    for group in &meta.key_groups {
        if let Some(part) = group.age.iter().find_map(|e| ids.open(&e.enc)) {
            parts.push(part);
        }
    }
    let no_match = || {
        let mut skipped = ids.skipped.clone();
        let others: Vec<String> = meta
            .key_groups
            .iter()
            .flat_map(KeyGroup::describe_others)
            .collect();
        if !others.is_empty() {
            skipped.push(format!(
                "the file's other master keys ({}) are not supported: Lockstep decrypts age keys",
                others.join(", ")
            ));
        }
        Error::NoIdentityMatched {
            tried: ids.len(),
            stanzas: meta.age_entry_count(),
            skipped,
        }
    };
    if parts.is_empty() {
        return Err(no_match());
    }
    let key: Zeroizing<Vec<u8>> = if meta.key_groups.len() == 1 {
        parts.swap_remove(0)
    } else {
        let need = meta.threshold();
        if parts.len() < need {
            return Err(Error::NotEnoughShares {
                got: parts.len(),
                need,
            });
        }
        shamir::combine(&parts)?
    };
    let arr: [u8; 32] = key.as_slice().try_into().map_err(|_| Error::Metadata {
        field: "age".into(),
        message: "the unwrapped data key is not 32 bytes".into(),
    })?;
    Ok(DataKey::from_bytes(arr))
}

/// Shamir secret sharing over GF(2^8) as in HashiCorp Vault's `shamir` package, which sops
/// forked: shares are `[y_0 .. y_n-1, x]`.
pub mod shamir {
    use rand::RngCore;
    use zeroize::Zeroizing;

    use crate::error::{Error, Result};

    fn mul(a: u8, b: u8) -> u8 {
        let mut r: u8 = 0;
        for i in (0..8).rev() {
            let bit = (b >> i) & 1;
            r = (0u8.wrapping_sub(bit) & a) ^ (0u8.wrapping_sub(r >> 7) & 0x1b) ^ r.wrapping_add(r);
        }
        r
    }

    fn inv(a: u8) -> u8 {
        // a^254 = a^-1 in GF(2^8).
        let mut result = 1u8;
        let mut base = a;
        let mut e = 254u8;
        while e > 0 {
            if e & 1 == 1 {
                result = mul(result, base);
            }
            base = mul(base, base);
            e >>= 1;
        }
        result
    }

    /// Splits `secret` into `parts` shares, any `threshold` of which rebuild it.
    pub fn split(secret: &[u8], parts: usize, threshold: usize) -> Result<Vec<Zeroizing<Vec<u8>>>> {
        if !(2..=255).contains(&threshold) || parts < threshold || parts > 255 {
            return Err(Error::Metadata {
                field: "shamir_threshold".into(),
                message: format!("must be between 2 and the number of key groups ({parts})"),
            });
        }
        let mut shares: Vec<Zeroizing<Vec<u8>>> = (0..parts)
            .map(|_| Zeroizing::new(Vec::with_capacity(secret.len() + 1)))
            .collect();
        let mut coeffs = Zeroizing::new(vec![0u8; threshold]);
        for &byte in secret {
            coeffs[0] = byte;
            rand::rngs::OsRng.fill_bytes(&mut coeffs[1..]);
            for (i, share) in shares.iter_mut().enumerate() {
                let x = (i + 1) as u8;
                let mut y = coeffs[threshold - 1];
                for c in coeffs[..threshold - 1].iter().rev() {
                    y = mul(y, x) ^ c;
                }
                share.push(y);
            }
        }
        for (i, share) in shares.iter_mut().enumerate() {
            share.push((i + 1) as u8);
        }
        Ok(shares)
    }

    /// Rebuilds the secret from shares by Lagrange interpolation at zero.
    pub fn combine(shares: &[Zeroizing<Vec<u8>>]) -> Result<Zeroizing<Vec<u8>>> {
        let bad = |m: &str| Error::Metadata {
            field: "key_groups".into(),
            message: m.into(),
        };
        if shares.len() < 2 {
            return Err(bad("at least two key group shares are needed"));
        }
        let len = shares[0].len();
        if len < 2 || shares.iter().any(|s| s.len() != len) {
            return Err(bad("key group shares have different lengths"));
        }
        let xs: Vec<u8> = shares.iter().map(|s| s[len - 1]).collect();
        for (i, x) in xs.iter().enumerate() {
            if xs[..i].contains(x) {
                return Err(bad("two key group shares have the same index"));
            }
        }
        let mut out = Zeroizing::new(Vec::with_capacity(len - 1));
        for idx in 0..len - 1 {
            let mut acc = 0u8;
            for (i, si) in shares.iter().enumerate() {
                let mut basis = 1u8;
                for (j, xj) in xs.iter().enumerate() {
                    if i != j {
                        basis = mul(basis, mul(*xj, inv(xs[i] ^ xj)));
                    }
                }
                acc ^= mul(si[idx], basis);
            }
            out.push(acc);
        }
        Ok(out)
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn any_threshold_subset_recovers() {
            let secret: Vec<u8> = (0..32).collect();
            let shares = split(&secret, 4, 3).unwrap();
            for skip in 0..4 {
                let subset: Vec<_> = shares
                    .iter()
                    .enumerate()
                    .filter(|(i, _)| *i != skip)
                    .map(|(_, s)| s.clone())
                    .collect();
                assert_eq!(&combine(&subset).unwrap()[..], &secret[..]);
            }
            let two: Vec<_> = shares[..2].to_vec();
            assert_ne!(&combine(&two).unwrap()[..], &secret[..]);
        }

        #[test]
        fn field_inverse() {
            for a in 1..=255u8 {
                assert_eq!(mul(a, inv(a)), 1);
            }
        }
    }
}
