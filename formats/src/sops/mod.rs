//! A SOPS engine compatible with the files real `sops` reads and writes (age key groups only).
//!
//! ```text
//! decrypt: bytes ─► store::load_encrypted ─► Metadata ─► keys::unwrap_data_key
//!                ─► walk::decrypt_tree (values + MAC) ─► MAC check ─► Decrypted
//! encrypt: bytes ─► store::load_plain ─► new data key ─► keys::build_groups
//!                ─► walk::encrypt_tree (values + MAC) ─► MAC sealed under lastmodified ─► store::emit_encrypted
//! ```
//!
//! Every public function takes the file's display name and puts it in its errors.

pub mod cipher;
pub mod config;
pub mod keys;
pub mod metadata;
pub mod rules;
pub mod stores;
pub mod walk;

use zeroize::Zeroizing;

pub use config::{Config, CreationRule};
pub use keys::Identities;
pub use metadata::Metadata;
pub use rules::Rule;
pub use stores::Format;

use crate::error::{Error, Result};
use crate::secret::{DataKey, SecretBytes};
use crate::tree::{Branch, MapItem, Value};
use walk::IvStash;

/// Options for [`decrypt`].
#[derive(Clone, Copy, Debug, Default)]
pub struct DecryptOptions {
    /// Skip the MAC check. For recovering data from a damaged file only.
    pub ignore_mac: bool,
}

/// What to encrypt for, and how.
#[derive(Clone, Debug, Default)]
pub struct EncryptOptions {
    /// Recipients per key group; more than one group splits the data key with Shamir.
    pub key_groups: Vec<Vec<String>>,
    /// Groups needed to decrypt (default: all).
    pub shamir_threshold: Option<usize>,
    /// The encryption rule (default: `unencrypted_suffix: _unencrypted`).
    pub rule: Option<Rule>,
    /// Only encrypted values enter the MAC.
    pub mac_only_encrypted: bool,
}

impl EncryptOptions {
    /// Options from a `.sops.yaml` creation rule.
    pub fn from_creation_rule(r: &CreationRule) -> Self {
        Self {
            key_groups: r.key_groups.clone(),
            shamir_threshold: r.shamir_threshold,
            rule: r.rule.clone(),
            mac_only_encrypted: r.mac_only_encrypted,
        }
    }
}

/// A decrypted file. The plaintext tree is wiped when this is dropped.
pub struct Decrypted {
    docs: Zeroizing<Vec<Branch>>,
    metadata: Metadata,
    format: Format,
    stash: IvStash,
    mac_verified: bool,
}

impl std::fmt::Debug for Decrypted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Decrypted")
            .field("documents", &self.docs.len())
            .field("format", &self.format)
            .field("mac_verified", &self.mac_verified)
            .finish_non_exhaustive()
    }
}

impl Decrypted {
    /// The plaintext documents (each a mapping). Do not log them.
    pub fn documents(&self) -> &[Branch] {
        &self.docs
    }

    /// The file's metadata.
    pub fn metadata(&self) -> &Metadata {
        &self.metadata
    }

    /// Whether the MAC was checked (false only with `ignore_mac`).
    pub fn mac_verified(&self) -> bool {
        self.mac_verified
    }

    /// The plaintext written in `format` (the input format when `None`).
    pub fn to_bytes(&self, format: Option<Format>) -> Result<SecretBytes> {
        stores::emit_plain(format.unwrap_or(self.format), &self.docs).map(SecretBytes::new)
    }
}

impl zeroize::Zeroize for Decrypted {
    fn zeroize(&mut self) {
        self.docs.iter_mut().for_each(zeroize::Zeroize::zeroize);
    }
}

/// A file with no age key at all cannot be opened here, whatever identities are at hand: say
/// what it is encrypted for instead of asking for an age identity.
fn refuse_without_age(metadata: &Metadata) -> Result<()> {
    if metadata.age_entry_count() > 0 {
        return Ok(());
    }
    let keys: Vec<String> = metadata
        .key_groups
        .iter()
        .flat_map(metadata::KeyGroup::describe_others)
        .collect();
    if keys.is_empty() {
        return Ok(());
    }
    Err(Error::NotForAge { keys })
}

/// Decrypts a SOPS file and verifies its MAC (unless told not to).
pub fn decrypt(
    name: &str,
    bytes: &[u8],
    format: Format,
    ids: &Identities,
    opts: DecryptOptions,
) -> Result<Decrypted> {
    decrypt_inner(bytes, format, ids, opts)
        .map(|(d, _)| d)
        .map_err(|e| e.in_file(name))
}

fn decrypt_inner(
    bytes: &[u8],
    format: Format,
    ids: &Identities,
    opts: DecryptOptions,
) -> Result<(Decrypted, DataKey)> {
    let (docs, meta_value) = stores::load_encrypted(format, bytes)?;
    let mut docs = Zeroizing::new(docs);
    let metadata = Metadata::from_value(&meta_value)?;
    refuse_without_age(&metadata)?;
    if ids.is_empty() {
        return Err(Error::NoIdentities {
            skipped: ids.skipped().to_vec(),
        });
    }
    let key = keys::unwrap_data_key(&metadata, ids)?;
    let mut stash = IvStash::default();
    let mac = walk::decrypt_tree(
        &mut docs,
        &key,
        &metadata.effective_rule(),
        metadata.mac_only_encrypted,
        Some(&mut stash),
    )?;
    if !opts.ignore_mac {
        verify_mac(&metadata, &key, &mac)?;
    }
    Ok((
        Decrypted {
            docs,
            metadata,
            format,
            stash,
            mac_verified: !opts.ignore_mac,
        },
        key,
    ))
}

fn verify_mac(metadata: &Metadata, key: &DataKey, computed: &str) -> Result<()> {
    if metadata.mac.is_empty() {
        return Err(Error::MacMismatch);
    }
    let (stored, _) = cipher::decrypt(&metadata.mac, key, metadata.lastmodified.as_bytes())
        .map_err(|_| Error::MacUndecryptable)?;
    if stored.as_slice() != computed.as_bytes() {
        return Err(Error::MacMismatch);
    }
    Ok(())
}

/// Encrypts a plaintext file.
pub fn encrypt(name: &str, bytes: &[u8], format: Format, opts: &EncryptOptions) -> Result<String> {
    encrypt_inner(bytes, format, opts).map_err(|e| e.in_file(name))
}

fn encrypt_inner(bytes: &[u8], format: Format, opts: &EncryptOptions) -> Result<String> {
    let docs = Zeroizing::new(stores::load_plain(format, bytes)?);
    for d in docs.iter() {
        let has_meta = d.iter().any(|i| match i {
            MapItem::Entry(k, _) => k == "sops" || (format == Format::Dotenv && k.starts_with("sops_")),
            MapItem::Comment(_) => false,
        });
        if has_meta {
            return Err(Error::AlreadyEncrypted);
        }
    }
    let key = DataKey::generate();
    let key_groups = keys::build_groups(&opts.key_groups, opts.shamir_threshold, &key)?;
    let (rule, mac_only) = if format == Format::Binary {
        // sops ignores rules for binary files: the one `data` value is always encrypted.
        (None, false)
    } else {
        (opts.rule.clone(), opts.mac_only_encrypted)
    };
    if rule.as_ref().is_some_and(Rule::uses_comments) && format != Format::Yaml && format != Format::Dotenv {
        return Err(Error::Emit {
            format: format.name(),
            message: "comment rules need a format with comments (YAML or dotenv)".into(),
        });
    }
    let shamir_threshold = (key_groups.len() > 1).then(|| opts.shamir_threshold.unwrap_or(key_groups.len()));
    let mut metadata = Metadata {
        key_groups,
        shamir_threshold,
        rule,
        mac_only_encrypted: mac_only,
        lastmodified: String::new(),
        mac: String::new(),
        version: metadata::FORMAT_VERSION.into(),
    };
    seal(docs, format, &mut metadata, &key, None)
}

/// Encrypts `docs` under `key`, stamps `lastmodified` and the MAC into `metadata`, and writes
/// the file.
fn seal(
    mut docs: Zeroizing<Vec<Branch>>,
    format: Format,
    metadata: &mut Metadata,
    key: &DataKey,
    stash: Option<&IvStash>,
) -> Result<String> {
    let mac = walk::encrypt_tree(
        &mut docs,
        key,
        &metadata.effective_rule(),
        metadata.mac_only_encrypted,
        stash,
    )?;
    metadata.lastmodified = now_rfc3339();
    metadata.mac = cipher::encrypt(
        mac.as_bytes(),
        cipher::ValueType::Str,
        key,
        metadata.lastmodified.as_bytes(),
        &cipher::random_iv(),
    )
    .map_err(|_| Error::Age("could not seal the MAC".into()))?;
    stores::emit_encrypted(format, &docs, &metadata.to_value())
}

/// The current UTC time as sops writes `lastmodified`: RFC 3339, whole seconds, `Z`.
pub fn now_rfc3339() -> String {
    let now = time::OffsetDateTime::now_utc();
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
        now.year(),
        u8::from(now.month()),
        now.day(),
        now.hour(),
        now.minute(),
        now.second()
    )
}

/// The current UTC time as RFC 3339 with nanoseconds (`2026-01-02T03:04:05.123456789Z`): a
/// value that differs between two calls, for request annotations.
pub fn now_rfc3339_nanos() -> String {
    let now = time::OffsetDateTime::now_utc();
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:09}Z",
        now.year(),
        u8::from(now.month()),
        now.day(),
        now.hour(),
        now.minute(),
        now.second(),
        now.nanosecond()
    )
}

/// Re-wraps the data key for new key groups, leaving values, MAC and `lastmodified` untouched
/// (`sops updatekeys`). Returns `None` when the file already has exactly these recipients.
pub fn update_keys(
    name: &str,
    bytes: &[u8],
    format: Format,
    ids: &Identities,
    groups: &[Vec<String>],
    shamir_threshold: Option<usize>,
) -> Result<Option<String>> {
    (|| {
        let (docs, meta_value) = stores::load_encrypted(format, bytes)?;
        let mut metadata = Metadata::from_value(&meta_value)?;
        let current: Vec<Vec<String>> = metadata
            .key_groups
            .iter()
            .map(|g| g.age.iter().map(|a| a.recipient.clone()).collect())
            .collect();
        let normalized: Vec<Vec<String>> = groups
            .iter()
            .map(|g| {
                g.iter()
                    .map(|r| keys::parse_recipient(r).map(|p| p.to_string()))
                    .collect::<Result<_>>()
            })
            .collect::<Result<_>>()?;
        let want_threshold =
            (groups.len() > 1).then(|| shamir_threshold.unwrap_or(groups.len()).min(groups.len()));
        let have_threshold = (metadata.key_groups.len() > 1).then(|| metadata.threshold());
        let others = metadata.key_groups.iter().any(|g| g.other_count() > 0);
        if same_groups(&current, &normalized) && want_threshold == have_threshold && !others {
            return Ok(None);
        }
        refuse_without_age(&metadata)?;
        if ids.is_empty() {
            return Err(Error::NoIdentities {
                skipped: ids.skipped().to_vec(),
            });
        }
        let key = keys::unwrap_data_key(&metadata, ids)?;
        metadata.key_groups = keys::build_groups(&normalized, want_threshold, &key)?;
        metadata.shamir_threshold = want_threshold;
        stores::emit_encrypted(format, &docs, &metadata.to_value()).map(Some)
    })()
    .map_err(|e: Error| e.in_file(name))
}

fn same_groups(a: &[Vec<String>], b: &[Vec<String>]) -> bool {
    let norm = |g: &[Vec<String>]| -> Vec<Vec<String>> {
        g.iter()
            .map(|x| {
                let mut x = x.clone();
                x.sort();
                x
            })
            .collect()
    };
    norm(a) == norm(b)
}

/// Options for [`rotate`].
#[derive(Clone, Debug, Default)]
pub struct RotateOptions {
    /// Recipients to add to the first key group.
    pub add_age: Vec<String>,
    /// Recipients to remove from every group.
    pub rm_age: Vec<String>,
}

/// Generates a new data key, re-encrypts every value with it, and re-wraps it for the file's
/// recipients (`sops rotate`). Unchanged values keep their IVs.
pub fn rotate(
    name: &str,
    bytes: &[u8],
    format: Format,
    ids: &Identities,
    opts: &RotateOptions,
) -> Result<String> {
    (|| {
        let (decrypted, _old) = decrypt_inner(bytes, format, ids, DecryptOptions::default())?;
        let mut metadata = decrypted.metadata.clone();
        let others: Vec<String> = metadata
            .key_groups
            .iter()
            .flat_map(metadata::KeyGroup::describe_others)
            .collect();
        if !others.is_empty() {
            return Err(Error::Metadata {
                field: "key_groups".into(),
                message: format!(
                    "the file also has {}, which Lockstep cannot re-wrap (it handles age keys)",
                    others.join(" and ")
                ),
            });
        }
        let rm: Vec<String> = opts.rm_age.iter().map(|r| r.trim().to_owned()).collect();
        let mut groups: Vec<Vec<String>> = metadata
            .key_groups
            .iter()
            .map(|g| {
                g.age
                    .iter()
                    .map(|a| a.recipient.clone())
                    .filter(|r| !rm.contains(r))
                    .collect()
            })
            .collect();
        if let Some(first) = groups.first_mut() {
            for r in &opts.add_age {
                let r = keys::parse_recipient(r)?.to_string();
                if !first.contains(&r) {
                    first.push(r);
                }
            }
        }
        let key = DataKey::generate();
        metadata.key_groups = keys::build_groups(&groups, metadata.shamir_threshold, &key)?;
        let docs = Zeroizing::new(decrypted.docs.to_vec());
        seal(docs, format, &mut metadata, &key, Some(&decrypted.stash))
    })()
    .map_err(|e: Error| e.in_file(name))
}

/// Whether a loaded document carries SOPS metadata (a top-level `sops` mapping with a `mac`).
pub fn is_encrypted_document(doc: &Branch) -> bool {
    matches!(crate::tree::get(doc, "sops"), Some(v @ Value::Map(_)) if v.get("mac").is_some())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// A file encrypted for an age key whose `age` master keys are replaced by `others`.
    fn only_for(others: Vec<(&str, Value)>) -> String {
        let (_, recipient) = keys::generate_identity();
        let opts = EncryptOptions {
            key_groups: vec![vec![recipient]],
            shamir_threshold: None,
            rule: None,
            mac_only_encrypted: false,
        };
        let text = encrypt("f.yaml", b"password: CANARY-other-keys\n", Format::Yaml, &opts).unwrap();
        let mut docs = crate::yaml::load_documents(&text).unwrap();
        let Value::Map(items) = &mut docs[0] else { panic!() };
        let Some(MapItem::Entry(_, Value::Map(sops))) = items
            .iter_mut()
            .find(|i| matches!(i, MapItem::Entry(k, _) if k == "sops"))
        else {
            panic!()
        };
        sops.retain(|i| !matches!(i, MapItem::Entry(k, _) if k == "age"));
        for (k, v) in others {
            sops.push(MapItem::Entry(k.into(), v));
        }
        crate::yaml::emit_documents(&docs).unwrap()
    }

    fn entry(fields: &[(&str, &str)]) -> Value {
        Value::Seq(vec![Value::Map(
            fields
                .iter()
                .map(|(k, v)| MapItem::Entry((*k).into(), Value::Str((*v).into())))
                .collect(),
        )])
    }

    #[test]
    fn a_file_without_age_keys_says_what_it_is_encrypted_for() {
        let text = only_for(vec![
            (
                "kms",
                entry(&[("arn", "arn:aws:kms:eu-west-1:111122223333:key/k1")]),
            ),
            (
                "hc_vault",
                entry(&[
                    ("vault_address", "https://vault.example.com:8200/"),
                    ("engine_path", "sops"),
                    ("key_name", "apps"),
                ]),
            ),
        ]);
        let (id, _) = keys::generate_identity();
        let mut ids = Identities::new();
        ids.add_text("test", &id).unwrap();
        for ids in [Identities::new(), ids] {
            let e = decrypt(
                "f.yaml",
                text.as_bytes(),
                Format::Yaml,
                &ids,
                DecryptOptions::default(),
            )
            .unwrap_err()
            .to_string();
            assert_eq!(
                e,
                "f.yaml: encrypted for AWS KMS key arn:aws:kms:eu-west-1:111122223333:key/k1 and Vault transit key \
                 https://vault.example.com:8200/v1/sops/keys/apps only; Lockstep decrypts age keys"
            );
        }
    }
}
