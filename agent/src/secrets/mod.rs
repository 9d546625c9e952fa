//! Secrets: the keys a sync decrypts with, and the decryption step itself. SOPS files that the
//! renderer left in ciphertext are decrypted here from the revision's bytes, their MAC verified;
//! SealedSecrets are unsealed beside themselves into the Secrets they stand for. Every
//! decrypted object is a [`Manifest`] whose values are wiped when it is dropped.
//!
//! * [`sops`]: age identities from a Sync's decryption Secret.
//! * [`sealing`]: the agent's sealing keys, stored as sealed-secrets stores them, and renewed.
//! * [`external`]: ExternalSecrets, materialised from AWS Secrets Manager, Vault/OpenBao and
//!   Pulumi ESC.

pub mod external;
pub mod sealing;
pub mod sops;

use std::collections::BTreeMap;

use lockstep_formats::sealed::{self, KeyRing};
use lockstep_formats::secret::SecretJson;
use lockstep_formats::sops::{DecryptOptions, Identities, stores::branch_to_json};

use crate::render::{self, Document, Manifest, check_object, origin};

/// A Secret that holds values (read from the API server, or about to be written), its `data`
/// and `stringData` wiped when it is dropped.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct WipedSecret(pub k8s_openapi::api::core::v1::Secret);

impl WipedSecret {
    /// Replaces the values with `data`, wiping the ones it had.
    pub fn set_data(&mut self, data: Option<BTreeMap<String, k8s_openapi::ByteString>>) {
        if let Some(mut old) = std::mem::replace(&mut self.0.data, data) {
            old.values_mut().for_each(|v| zeroize::Zeroize::zeroize(&mut v.0));
        }
    }
}

impl std::ops::Deref for WipedSecret {
    type Target = k8s_openapi::api::core::v1::Secret;
    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl std::ops::DerefMut for WipedSecret {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.0
    }
}

impl Drop for WipedSecret {
    fn drop(&mut self) {
        self.set_data(None);
        if let Some(mut s) = self.0.string_data.take() {
            s.values_mut().for_each(zeroize::Zeroize::zeroize);
        }
    }
}

/// The keys a sync may decrypt with.
#[derive(Default)]
pub struct DecryptionKeys {
    /// age identities for SOPS files (`None`: decryption not configured).
    pub sops: Option<Identities>,
    /// Sealing keys for SealedSecrets (`None`: SealedSecrets are applied as they are).
    pub sealed: Option<std::sync::Arc<KeyRing>>,
}

/// Errors of decryption; each names the file and document, never a value.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A SOPS file or a SealedSecret could not be decrypted.
    #[error("{0}")]
    Format(#[from] lockstep_formats::Error),
    /// A decrypted document is not a Kubernetes object.
    #[error(transparent)]
    Object(#[from] render::Error),
    /// A SOPS file was found but no decryption keys are configured.
    #[error(
        "{file} is SOPS-encrypted, but the Sync configures no decryption (spec.decryption.sops.secretRef)"
    )]
    NoDecryption {
        /// The file.
        file: String,
    },
    /// An object of a kustomize build could not be decrypted, or its SOPS values do not stand
    /// as in their file (names the file and the key path).
    #[error(transparent)]
    Kustomize(#[from] lockstep_kustomize::Error),
    /// The renderer named a file the revision does not have.
    #[error("{file}: not in the revision")]
    Missing {
        /// The file.
        file: String,
    },
}

impl Error {
    /// The format whose decryption failed, for the decryption-failure metric.
    pub fn decryption_failure(&self) -> Option<&'static str> {
        match self {
            Error::Format(f) => f.decryption_failure(),
            Error::NoDecryption { .. } => Some("sops"),
            Error::Kustomize(lockstep_kustomize::Error::Format(f)) => f.decryption_failure().or(Some("sops")),
            Error::Kustomize(_) => Some("sops"),
            _ => None,
        }
    }
}

/// The decryption step: every rendered document as a manifest, SOPS files decrypted (MAC
/// verified) from `files`, the revision's bytes, and, when sealing keys are given, the Secret of
/// each SealedSecret added after the documents.
pub fn decrypt(
    files: &BTreeMap<String, Vec<u8>>,
    documents: Vec<Document>,
    keys: &DecryptionKeys,
) -> Result<Vec<Manifest>, Error> {
    let mut out = Vec::with_capacity(documents.len());
    for d in documents {
        match d {
            Document::Object(m) => out.push(m),
            Document::Kustomized(b) => {
                let object = lockstep_kustomize::decrypt(files, &b, keys.sops.as_ref())?;
                out.push(Manifest::secret(
                    b.origin_label(),
                    object,
                    crate::plan::hash(&b.object),
                ));
            }
            Document::Sops { file, format } => {
                let bytes = files
                    .get(&file)
                    .ok_or_else(|| Error::Missing { file: file.clone() })?;
                let ids = keys
                    .sops
                    .as_ref()
                    .ok_or_else(|| Error::NoDecryption { file: file.clone() })?;
                let decrypted =
                    lockstep_formats::sops::decrypt(&file, bytes, format, ids, DecryptOptions::default())?;
                let digest = crate::plan::digest(bytes);
                let docs = decrypted.documents();
                for (i, doc) in docs.iter().enumerate() {
                    if !doc
                        .iter()
                        .any(|i| matches!(i, lockstep_formats::tree::MapItem::Entry(..)))
                    {
                        continue;
                    }
                    let origin = origin(&file, i, docs.len());
                    let object = SecretJson::new(branch_to_json(doc)?);
                    check_object(&origin, &object)?;
                    out.push(Manifest::secret(origin, object, digest.clone()));
                }
            }
        }
    }
    unseal_all(&mut out, keys)?;
    Ok(out)
}

/// Adds, after the manifests, the Secret each SealedSecret unseals to (when sealing keys are
/// configured); its inventory hash stands on the SealedSecret's ciphertext.
fn unseal_all(manifests: &mut Vec<Manifest>, keys: &DecryptionKeys) -> Result<(), Error> {
    let Some(ring) = keys.sealed.as_ref() else {
        return Ok(());
    };
    let mut produced = Vec::new();
    for m in manifests.iter() {
        if m.field("/kind") == "SealedSecret" && m.field("/apiVersion") == sealed::object::API_VERSION {
            let s = sealed::unseal(&m.object, ring).map_err(|e| e.in_file(m.origin.clone()))?;
            produced.push(Manifest::secret(
                format!("{} (unsealed)", m.origin),
                SecretJson::new(s.to_secret_json()),
                crate::plan::hash(&m.object),
            ));
        }
    }
    manifests.extend(produced);
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use lockstep_formats::sops::{EncryptOptions, Format};
    use zeroize::Zeroize;

    const CANARY: &str = "CANARY-decrypted-value";

    fn encrypted() -> (BTreeMap<String, Vec<u8>>, Identities) {
        let (secret, recipient) = lockstep_formats::sops::keys::generate_identity();
        let plain = format!(
            "apiVersion: v1\nkind: Secret\nmetadata:\n  name: db\nstringData:\n  password: {CANARY}\n"
        );
        let opts = EncryptOptions {
            key_groups: vec![vec![recipient]],
            shamir_threshold: None,
            rule: None,
            mac_only_encrypted: false,
        };
        let text =
            lockstep_formats::sops::encrypt("db.sops.yaml", plain.as_bytes(), Format::Yaml, &opts).unwrap();
        let mut ids = Identities::new();
        ids.add_text("test", &secret).unwrap();
        (
            BTreeMap::from([("db.sops.yaml".to_owned(), text.into_bytes())]),
            ids,
        )
    }

    #[test]
    fn a_decrypted_manifest_is_secret_material_that_wipes_itself() {
        let (files, ids) = encrypted();
        let docs = vec![Document::Sops {
            file: "db.sops.yaml".into(),
            format: Format::Yaml,
        }];
        let keys = DecryptionKeys {
            sops: Some(ids),
            sealed: None,
        };
        let mut out = decrypt(&files, docs, &keys).unwrap();
        let [m] = out.as_mut_slice() else { panic!() };
        assert!(m.secret);
        assert_eq!(
            m.source_digest.as_deref(),
            Some(crate::plan::digest(&files["db.sops.yaml"]).as_str())
        );
        assert_eq!(m.field("/stringData/password"), CANARY);
        assert!(!format!("{m:?}").contains(CANARY), "Debug shows no value");
        // What its drop does: the value is overwritten in place.
        m.object.zeroize();
        assert_eq!(m.field("/stringData/password"), "");
    }

    #[test]
    fn a_sops_file_without_keys_names_the_field_to_set() {
        let (files, _) = encrypted();
        let docs = vec![Document::Sops {
            file: "db.sops.yaml".into(),
            format: Format::Yaml,
        }];
        let e = decrypt(&files, docs, &DecryptionKeys::default()).unwrap_err();
        assert_eq!(e.decryption_failure(), Some("sops"));
        assert!(e.to_string().contains("spec.decryption.sops.secretRef"), "{e}");
    }
}
