//! Kustomize builds, as the Lockstep agent and CLI run them: kustomize's own engine
//! (`sigs.k8s.io/kustomize/api`) in a helper process, `lockstep-kustomize` (Go, under
//! `agent/kustomize/helper/`), fed the repository's files in ciphertext only.
//!
//! ```text
//! files ─► scan (refuse remote bases, helmCharts, plugins, paths outside the repository)
//!       ─► helper (tar on stdin, in-memory filesystem, YAML on stdout; time and size limits)
//!       ─► Built objects with their origin ─► decrypt (SOPS resources and generator sources,
//!          MAC verified, every ENC[] value checked against the original file)
//! ```
//!
//! * [`units`]: which directories are kustomize builds and which files are plain manifests
//!   (Flux's rule); [`plain`] reads the plain ones.
//! * [`scan`]: the refusals, before any process starts.
//! * [`helper`]: the build's process, its input and its limits ([`process`]: how both of
//!   Lockstep's Go helpers are run).
//! * [`decrypt`]: SOPS after the build.

pub mod decrypt;
pub mod helper;
pub mod overlay;
pub mod paths;
pub mod plain;
pub mod process;
pub mod scan;

use std::collections::BTreeMap;

use serde_json::Value as Json;

pub use decrypt::{Encrypted, decrypt};
pub use helper::Helper;
pub use paths::{Unit, kustomization_file, units, units_with};
pub use scan::{Refusal, Scan};

/// The annotation kustomize records an object's origin in.
pub const ORIGIN_ANNOTATION: &str = "config.kubernetes.io/origin";

/// Everything that can go wrong in a build; each names the kustomization (or file) and never a
/// secret value.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An entry of a kustomization that Lockstep does not build.
    #[error("{kustomization}: {field} entry `{entry}`: {reason}")]
    Refused {
        /// The kustomization file (repository-relative).
        kustomization: String,
        /// The field (`resources`, `helmCharts`, `transformers`, ...).
        field: String,
        /// The entry, as written.
        entry: String,
        /// Why.
        reason: Refusal,
    },
    /// kustomize refused the build; its own words.
    #[error("{kustomization}: kustomize: {message}")]
    Build {
        /// The kustomization file built (repository-relative).
        kustomization: String,
        /// kustomize's message.
        message: String,
    },
    /// The build ran past its time limit and was killed.
    #[error("kustomize build {dir}: took longer than the time limit of {limit:?} (--render-timeout)")]
    Timeout {
        /// The directory built.
        dir: String,
        /// The limit.
        limit: std::time::Duration,
    },
    /// The build printed more than the output limit and was stopped.
    #[error("kustomize build {dir}: its output exceeds the limit of {limit} bytes (--render-max-output)")]
    OutputTooLarge {
        /// The directory built.
        dir: String,
        /// The limit, in bytes.
        limit: usize,
    },
    /// The helper could not be started or talked to.
    #[error("kustomize build {dir}: the helper {program} could not be run: {source}")]
    Helper {
        /// The directory built.
        dir: String,
        /// The helper's path.
        program: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The helper failed without a kustomize error (a panic, a signal, a bad request).
    #[error("kustomize build {dir}: the helper failed ({status}): {message}")]
    Crashed {
        /// The directory built.
        dir: String,
        /// Its exit status.
        status: String,
        /// What it printed.
        message: String,
    },
    /// A file or the build's output could not be parsed or decrypted (names the file).
    #[error("{0}")]
    Format(#[from] lockstep_formats::Error),
    /// An object of the build is not what it must be.
    #[error("{origin}: {message}")]
    Object {
        /// Where it came from.
        origin: String,
        /// What is wrong.
        message: String,
    },
    /// The SOPS values of an object do not stand as they are in their file.
    #[error("{file}: {}{reason} (in {object}); nothing was applied", at(path))]
    Tampered {
        /// The SOPS file.
        file: String,
        /// The key path (empty: the document as a whole).
        path: String,
        /// The object it was found in (`Kind name`).
        object: String,
        /// What is wrong.
        reason: String,
    },
    /// An object built from SOPS files, but no decryption keys are configured.
    #[error(
        "{file} is SOPS-encrypted, but no decryption keys are configured (spec.decryption.sops.secretRef)"
    )]
    NoDecryption {
        /// The SOPS file.
        file: String,
    },
}

/// `` `path`: ``, or nothing for the document as a whole.
fn at(path: &str) -> String {
    if path.is_empty() {
        String::new()
    } else {
        format!("`{path}`: ")
    }
}

/// Result of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// One object of a build, as kustomize made it: SOPS values still encrypted.
#[derive(Clone, Debug)]
pub struct Built {
    /// The directory built (repository-relative; empty for the root).
    pub dir: String,
    /// The object, without the origin annotation (unless the kustomization asked for it).
    pub object: Json,
    /// Where it came from: kustomize's origin when the helper tracked it
    /// ([`Helper::origins`]), and the SOPS file of an encrypted resource always.
    pub origin: Origin,
    /// Which SOPS files its values come from, if any.
    pub encrypted: Option<Encrypted>,
}

impl Built {
    /// `Kind name`, for messages.
    pub fn describe(&self) -> String {
        let f = |p: &str| {
            self.object
                .pointer(p)
                .and_then(Json::as_str)
                .unwrap_or("?")
                .to_owned()
        };
        format!("{} {}", f("/kind"), f("/metadata/name"))
    }

    /// Where it came from and which build made it: `base/db.sops.yaml (kustomize build
    /// overlays/prod)`, or `Deployment web (kustomize build overlays/prod)` without an origin.
    pub fn origin_label(&self) -> String {
        let dir = if self.dir.is_empty() { "." } else { &self.dir };
        let what = match (&self.origin.path, &self.origin.configured_in) {
            (None, None) => self.describe(),
            _ => self.origin.describe(),
        };
        format!("{what} (kustomize build {dir})")
    }
}

/// `config.kubernetes.io/origin`, resolved against the repository.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Origin {
    /// The file the object was read from (repository-relative), for resources.
    pub path: Option<String>,
    /// The kustomization whose generator made it (repository-relative), for generated objects.
    pub configured_in: Option<String>,
    /// The generator's kind (`SecretGenerator`, `ConfigMapGenerator`).
    pub configured_by: Option<String>,
}

impl Origin {
    /// `base/deploy.yaml`, or `secretGenerator in overlays/prod/kustomization.yaml`.
    pub fn describe(&self) -> String {
        match (&self.path, &self.configured_in) {
            (Some(p), _) => p.clone(),
            (None, Some(k)) => format!(
                "{} in {k}",
                self.configured_by.as_deref().unwrap_or("a generator")
            ),
            (None, None) => "an object".into(),
        }
    }
}

/// Builds the kustomization in `dir` (repository-relative) from `files` (the whole repository,
/// ciphertext): the [`scan`], the [`helper`], then each object's origin and SOPS sources.
pub fn build(helper: &Helper, files: &BTreeMap<String, Vec<u8>>, dir: &str) -> Result<Vec<Built>> {
    let scan = Scan::of(files, dir)?;
    let out = helper.run(files, dir)?;
    parse_output(files, dir, &scan, &out, helper.origins)
}

/// The helper's YAML stream as objects: origins read (and removed unless asked for), SOPS
/// sources found.
fn parse_output(
    files: &BTreeMap<String, Vec<u8>>,
    dir: &str,
    scan: &Scan,
    out: &[u8],
    origins: bool,
) -> Result<Vec<Built>> {
    let label = format!("kustomize build {}", if dir.is_empty() { "." } else { dir });
    let text = std::str::from_utf8(out).map_err(|_| Error::Object {
        origin: label.clone(),
        message: "the output is not UTF-8".into(),
    })?;
    let limits = lockstep_formats::yaml::Limits {
        max_bytes: text.len().max(1),
        ..Default::default()
    };
    let docs =
        lockstep_formats::yaml::load_documents_with(text, limits).map_err(|e| e.in_file(label.clone()))?;
    let mut built = Vec::with_capacity(docs.len());
    for doc in &docs {
        let mut object = lockstep_formats::sops::stores::to_json(doc)?;
        if !object.is_object() {
            return Err(Error::Object {
                origin: label,
                message: "an output document is not a mapping".into(),
            });
        }
        // Origins come from the helper's tracking (removed unless the kustomization asked for
        // them), or from the kustomization's own `buildMetadata`.
        let origin = match (origins, scan.keep_origin) {
            (false, false) => Origin::default(),
            (_, keep) => take_origin(&mut object, dir, keep),
        };
        let mut b = Built {
            dir: dir.to_owned(),
            object,
            origin,
            encrypted: None,
        };
        b.encrypted = decrypt::sources(files, scan, &b)?;
        if let (Some(Encrypted::Resource(file)), None) = (&b.encrypted, &b.origin.path) {
            b.origin.path = Some(file.clone());
        }
        built.push(b);
    }
    Ok(built)
}

/// Reads the origin annotation (paths relative to `dir`) and removes it unless `keep`, as
/// kustomize's own `RemoveOriginAnnotations` does (an emptied `annotations` goes too).
fn take_origin(object: &mut Json, dir: &str, keep: bool) -> Origin {
    let Some(meta) = object.get_mut("metadata").and_then(Json::as_object_mut) else {
        return Origin::default();
    };
    let Some(annotations) = meta.get_mut("annotations").and_then(Json::as_object_mut) else {
        return Origin::default();
    };
    let text = if keep {
        annotations
            .get(ORIGIN_ANNOTATION)
            .and_then(Json::as_str)
            .map(str::to_owned)
    } else {
        annotations
            .remove(ORIGIN_ANNOTATION)
            .and_then(|v| v.as_str().map(str::to_owned))
    };
    if annotations.is_empty() {
        meta.remove("annotations");
    }
    let Some(text) = text else {
        return Origin::default();
    };
    let Ok(docs) = lockstep_formats::yaml::load_documents(&text) else {
        return Origin::default();
    };
    let Some(Ok(o)) = docs.first().map(lockstep_formats::sops::stores::to_json) else {
        return Origin::default();
    };
    let resolve = |p: &str| paths::join(dir, p);
    Origin {
        path: o.get("path").and_then(Json::as_str).and_then(resolve),
        configured_in: o.get("configuredIn").and_then(Json::as_str).and_then(resolve),
        configured_by: o
            .pointer("/configuredBy/kind")
            .and_then(Json::as_str)
            .map(str::to_owned),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn the_origin_is_resolved_against_the_repository_and_removed() {
        let mut o = serde_json::json!({
            "kind": "Secret",
            "metadata": { "name": "x", "annotations": {
                ORIGIN_ANNOTATION: "configuredIn: ../../base/kustomization.yaml\nconfiguredBy:\n  apiVersion: builtin\n  kind: SecretGenerator\n"
            } }
        });
        let origin = take_origin(&mut o, "overlays/prod", false);
        assert_eq!(origin.configured_in.as_deref(), Some("base/kustomization.yaml"));
        assert_eq!(origin.configured_by.as_deref(), Some("SecretGenerator"));
        assert_eq!(o["metadata"].get("annotations"), None, "an emptied map goes too");
        assert_eq!(origin.describe(), "SecretGenerator in base/kustomization.yaml");

        let mut kept = serde_json::json!({
            "metadata": { "annotations": { ORIGIN_ANNOTATION: "path: a.yaml\n", "x": "y" } }
        });
        let origin = take_origin(&mut kept, "", true);
        assert_eq!(origin.path.as_deref(), Some("a.yaml"));
        assert!(
            kept.pointer("/metadata/annotations/config.kubernetes.io~1origin")
                .is_some()
        );
    }
}
