//! Render: a revision's files → documents, still in ciphertext. Plain objects come out as
//! [`Manifest`]s; SOPS-encrypted files come out as [`Document::Sops`], left for the secrets step
//! to decrypt from the revision's bytes ([`crate::secrets::decrypt`]), so that a renderer never
//! sees plaintext.
//!
//! The [`Renderer`] trait is the seam for other renderers (kustomize and Helm next);
//! [`Directory`] reads plain YAML/JSON directories, recursively, several documents per file.

mod directory;

use std::collections::BTreeMap;

use lockstep_formats::secret::SecretJson;
use lockstep_formats::sops::Format;
use serde_json::Value as Json;

pub use directory::Directory;

/// A desired object and where it came from.
#[derive(Clone)]
pub struct Manifest {
    /// File (relative to the Sync's path) and document index, for messages.
    pub origin: String,
    /// The object; its strings are wiped when it is dropped (it may hold decrypted values).
    pub object: SecretJson,
    /// Whether it holds decrypted secret material (never logged, never put in status).
    pub secret: bool,
    /// For secret material: a digest of the *encrypted* source (the SOPS file, the
    /// SealedSecret), which stands in for the values when change is detected, so that the
    /// inventory in status never holds a hash of plaintext.
    pub source_digest: Option<String>,
}

impl Manifest {
    /// A manifest of an object that holds no secret material.
    pub fn plain(origin: impl Into<String>, object: Json) -> Self {
        Self {
            origin: origin.into(),
            object: SecretJson::new(object),
            secret: false,
            source_digest: None,
        }
    }

    /// A manifest of decrypted secret material from the encrypted source `digest`.
    pub fn secret(origin: impl Into<String>, object: SecretJson, digest: String) -> Self {
        Self {
            origin: origin.into(),
            object,
            secret: true,
            source_digest: Some(digest),
        }
    }

    /// A string field of the object (`/kind`, `/metadata/name`), empty when absent.
    pub fn field(&self, pointer: &str) -> &str {
        self.object
            .pointer(pointer)
            .and_then(Json::as_str)
            .unwrap_or_default()
    }
}

impl std::fmt::Debug for Manifest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Manifest")
            .field("origin", &self.origin)
            .field("secret", &self.secret)
            .finish_non_exhaustive()
    }
}

/// One rendered document.
#[derive(Debug)]
pub enum Document {
    /// An object, as rendered.
    Object(Manifest),
    /// A SOPS-encrypted file of the revision, in ciphertext: the secrets step decrypts it (its
    /// MAC verified) into its objects.
    Sops {
        /// The file, relative to the Sync's path.
        file: String,
        /// Its format.
        format: Format,
    },
}

/// Errors of rendering; each names the file and document.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A file could not be parsed.
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
}

/// Turns a revision's files into documents, without decrypting anything.
pub trait Renderer {
    /// Renders `files` (path relative to the Sync's path → bytes).
    fn render(&self, files: &BTreeMap<String, Vec<u8>>) -> Result<Vec<Document>, Error>;
}

/// Checks that a document is a Kubernetes object: `apiVersion`, `kind` and `metadata.name`.
pub fn check_object(origin: &str, o: &Json) -> Result<(), Error> {
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

/// The origin of document `index` (0-based) of a file with `count` documents.
pub fn origin(file: &str, index: usize, count: usize) -> String {
    if count > 1 {
        format!("{file} (document {})", index + 1)
    } else {
        file.to_owned()
    }
}
