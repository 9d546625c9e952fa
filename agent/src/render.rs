//! Render and decrypt: files of a revision → Kubernetes objects, SOPS files decrypted in memory
//! (MAC verified), SealedSecrets unsealed with the agent's keys.
//!
//! The [`Renderer`] trait is the seam for other renderers (kustomize next); [`Directory`] reads
//! plain YAML/JSON directories, recursively, several documents per file.

use std::collections::BTreeMap;

use lockstep_formats::sealed::{self, KeyRing};
use lockstep_formats::sops::{self, DecryptOptions, Format, Identities, stores::to_json};
use lockstep_formats::tree::{MapItem, Value};
use lockstep_formats::yaml;
use serde_json::Value as Json;

/// A desired object and where it came from.
#[derive(Clone)]
pub struct Manifest {
    /// File (relative to the Sync's path) and document index, for messages.
    pub origin: String,
    /// The object.
    pub object: Json,
    /// Whether it holds decrypted secret material (never logged, never put in status).
    pub secret: bool,
    /// For secret material: a digest of the *encrypted* source (the SOPS file, the
    /// SealedSecret), which stands in for the values when change is detected, so that the
    /// inventory in status never holds a hash of plaintext.
    pub source_digest: Option<String>,
}

impl std::fmt::Debug for Manifest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Manifest")
            .field("origin", &self.origin)
            .field("secret", &self.secret)
            .finish_non_exhaustive()
    }
}

/// Errors of rendering and decryption; each names the file and document.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A file could not be parsed or decrypted.
    #[error("{0}")]
    Format(#[from] lockstep_formats::Error),
    /// A document is not a Kubernetes object.
    #[error("{origin}: {message}")]
    Object {
        /// File and document.
        origin: String,
        /// What is wrong.
        message: String,
    },
    /// A SOPS file was found but no decryption keys are configured.
    #[error(
        "{file} is SOPS-encrypted, but the Sync configures no decryption (spec.decryption.sops.secretRef)"
    )]
    NoDecryption {
        /// The file.
        file: String,
    },
}

/// Turns a revision's files into objects.
pub trait Renderer {
    /// Renders `files` (path → bytes).
    fn render(&self, files: &BTreeMap<String, Vec<u8>>, keys: &Keys) -> Result<Vec<Manifest>, Error>;
}

/// The keys a render may use.
#[derive(Default)]
pub struct Keys {
    /// age identities for SOPS files (`None`: decryption not configured).
    pub sops: Option<Identities>,
    /// Sealing keys for SealedSecrets (`None`: SealedSecrets are applied as they are).
    pub sealed: Option<std::sync::Arc<KeyRing>>,
}

/// Plain YAML/JSON directories.
#[derive(Clone, Copy, Debug, Default)]
pub struct Directory;

impl Renderer for Directory {
    fn render(&self, files: &BTreeMap<String, Vec<u8>>, keys: &Keys) -> Result<Vec<Manifest>, Error> {
        let mut out = Vec::new();
        for (file, bytes) in files {
            let base = file.rsplit('/').next().unwrap_or(file);
            let format = match base.rsplit_once('.').map(|(_, e)| e) {
                Some("yaml" | "yml") => Format::Yaml,
                Some("json") => Format::Json,
                _ => continue,
            };
            // Dotfiles (`.sops.yaml`, CI configuration) are not manifests.
            if base.starts_with('.') {
                continue;
            }
            let text = std::str::from_utf8(bytes).map_err(|_| Error::Object {
                origin: file.clone(),
                message: "not UTF-8 text".into(),
            })?;
            let docs = yaml::load_documents(text).map_err(|e| e.in_file(file.clone()))?;
            let encrypted = docs
                .iter()
                .any(|d| matches!(d, Value::Map(items) if sops::is_encrypted_document(items)));
            let (docs, secret, digest) = if encrypted {
                let ids = keys
                    .sops
                    .as_ref()
                    .ok_or_else(|| Error::NoDecryption { file: file.clone() })?;
                let d = sops::decrypt(file, bytes, format, ids, DecryptOptions::default())?;
                let docs: Vec<Value> = d.documents().iter().cloned().map(Value::Map).collect();
                (docs, true, Some(crate::plan::digest(bytes)))
            } else {
                (docs, false, None)
            };
            for (i, doc) in docs.iter().enumerate() {
                let origin = if docs.len() > 1 {
                    format!("{file} (document {})", i + 1)
                } else {
                    file.clone()
                };
                let object = match doc {
                    Value::Map(items) if items.iter().any(|i| matches!(i, MapItem::Entry(..))) => {
                        to_json(doc)?
                    }
                    Value::Map(_) | Value::Null => continue,
                    _ => {
                        return Err(Error::Object {
                            origin,
                            message: "not a mapping".into(),
                        });
                    }
                };
                check_object(&origin, &object)?;
                out.push(Manifest {
                    origin,
                    object,
                    secret,
                    source_digest: digest.clone(),
                });
            }
        }
        unseal_all(&mut out, keys)?;
        Ok(out)
    }
}

fn check_object(origin: &str, o: &Json) -> Result<(), Error> {
    for (field, ptr) in [
        ("apiVersion", "/apiVersion"),
        ("kind", "/kind"),
        ("metadata.name", "/metadata/name"),
    ] {
        if o.pointer(ptr).and_then(Json::as_str).is_none_or(|s| s.is_empty()) {
            return Err(Error::Object {
                origin: origin.into(),
                message: format!("{field} is missing"),
            });
        }
    }
    Ok(())
}

/// Adds, beside each SealedSecret, the Secret it unseals to (when sealing keys are configured).
fn unseal_all(manifests: &mut Vec<Manifest>, keys: &Keys) -> Result<(), Error> {
    let Some(ring) = keys.sealed.as_ref() else {
        return Ok(());
    };
    let mut produced = Vec::new();
    for m in manifests.iter() {
        if m.object.get("kind").and_then(Json::as_str) == Some("SealedSecret")
            && m.object.get("apiVersion").and_then(Json::as_str) == Some(sealed::object::API_VERSION)
        {
            let s = sealed::unseal(&m.object, ring).map_err(|e| e.in_file(m.origin.clone()))?;
            produced.push(Manifest {
                origin: format!("{} (unsealed)", m.origin),
                object: s.to_secret_json(),
                secret: true,
                source_digest: Some(crate::plan::hash(&m.object)),
            });
        }
    }
    manifests.extend(produced);
    Ok(())
}
