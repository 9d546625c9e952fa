//! Render: a revision's files → documents, still in ciphertext. Plain objects come out as
//! [`Manifest`]s; SOPS-encrypted files come out as [`Document::Sops`] and objects that a
//! kustomize build made from SOPS files as [`Document::Kustomized`], left for the secrets step
//! to decrypt from the revision's bytes ([`crate::secrets::decrypt`]), so that a renderer never
//! sees plaintext.
//!
//! What is built follows Flux's rule ([`lockstep_kustomize::units`]): a kustomization at the
//! Sync's path is one kustomize build; otherwise plain YAML/JSON files are read, recursively,
//! several documents per file, and every subdirectory holding a kustomization is built as one.
//! [`Render`] does it, and keeps each Sync's last render, so that healing drift on the same
//! commit starts no build. The [`Renderer`] trait is the seam for Helm next.

mod directory;
pub mod helm;
mod kustomize;

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use lockstep_formats::secret::SecretJson;
use lockstep_formats::sops::Format;
use lockstep_kustomize::overlay::Overlay;
use lockstep_kustomize::{Helper, Unit};
use serde_json::Value as Json;

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
#[derive(Clone, Debug)]
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
    /// An object of a kustomize build whose values come from SOPS files, in ciphertext: the
    /// secrets step decrypts it ([`lockstep_kustomize::decrypt`]).
    Kustomized(Box<lockstep_kustomize::Built>),
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
    /// A kustomize build failed or was refused (names the kustomization and the entry).
    #[error(transparent)]
    Kustomize(#[from] lockstep_kustomize::Error),
    /// A kustomization, but no kustomize helper is installed.
    #[error(
        "{kustomization}: a kustomization, but the kustomize helper ({}) was not found (--kustomize-helper)",
        lockstep_kustomize::helper::PROGRAM
    )]
    NoHelper {
        /// The kustomization file.
        kustomization: String,
    },
    /// A chart could not be rendered (Helm's message names the template and line).
    #[error(transparent)]
    Helm(#[from] lockstep_helm::Error),
    /// A chart, but no Helm helper is installed.
    #[error(
        "chart {chart}: the Helm helper ({}) was not found (--helm-helper)",
        lockstep_helm::PROGRAM
    )]
    NoHelmHelper {
        /// The chart.
        chart: String,
    },
    /// A chart's values could not be read.
    #[error("{field}: {message}")]
    Values {
        /// The field that names them.
        field: String,
        /// What is wrong (names the file).
        message: String,
    },
    /// The rendering task failed.
    #[error("the render task failed: {0}")]
    Task(String),
}

/// Turns a revision's files into documents, without decrypting anything.
pub trait Renderer {
    /// Renders the Sync's `path` of `files` (the whole repository: repository-relative path →
    /// bytes).
    fn render(&self, files: &BTreeMap<String, Vec<u8>>, path: &str) -> Result<Vec<Document>, Error>;
}

/// How the agent and `lockstep build` render: plain files and kustomize builds (with the
/// helper, when one is installed), each Sync's last render kept.
#[derive(Clone, Debug)]
pub struct Render {
    /// The kustomize helper (`None`: a kustomization is an error).
    pub kustomize: Option<Helper>,
    /// The Helm helper (`None`: a chart is an error).
    pub helm: Option<lockstep_helm::Helper>,
    last: Arc<Mutex<HashMap<String, LastRender>>>,
    builds: Arc<AtomicU64>,
}

impl Default for Render {
    /// The helpers found where [`Helper::locate`] and [`lockstep_helm::Helper::locate`] look,
    /// with the default limits.
    fn default() -> Self {
        let mut r = Self::new(Helper::locate(None).map(Helper::new));
        r.helm = lockstep_helm::Helper::locate(None).map(lockstep_helm::Helper::new);
        r
    }
}

/// A Sync's last render: its key (commit, path, helper) and its documents.
type LastRender = (String, Arc<Vec<Document>>);

/// Syncs whose last render is kept, at most.
const KEPT_RENDERS: usize = 4096;

impl Render {
    /// Renders with `kustomize`.
    pub fn new(kustomize: Option<Helper>) -> Self {
        Self {
            kustomize,
            helm: None,
            last: Arc::default(),
            builds: Arc::default(),
        }
    }

    /// How many kustomize builds this renderer (and its clones) started.
    pub fn builds(&self) -> u64 {
        self.builds.load(Ordering::Relaxed)
    }

    /// The count behind [`Render::builds`], for the metrics.
    pub fn builds_counter(&self) -> Arc<AtomicU64> {
        self.builds.clone()
    }

    /// The documents of `owner`'s revision `commit` at `path`: its last render when that was of
    /// the same commit, path and helper, else a new one (kept as its last).
    pub fn cached(
        &self,
        owner: &str,
        commit: &str,
        files: &BTreeMap<String, Vec<u8>>,
        path: &str,
        overlay: Option<&Overlay>,
        recurse: bool,
    ) -> Result<Arc<Vec<Document>>, Error> {
        let key = format!(
            "{commit}\0{path}\0{recurse}\0{:?}\0{}\0{}",
            self.kustomize
                .as_ref()
                .map(|h| (&h.program, h.timeout, h.max_output)),
            lockstep_kustomize::helper::KUSTOMIZE_API_VERSION,
            overlay
                .map(|o| serde_json::to_string(o).unwrap_or_default())
                .unwrap_or_default()
        );
        if let Some((k, docs)) = self
            .last
            .lock()
            .map_err(|_| Error::Task("poisoned".into()))?
            .get(owner)
            && *k == key
        {
            return Ok(docs.clone());
        }
        let docs = Arc::new(match overlay {
            Some(o) => self.render_as_flux(files, path, o)?,
            None => self.render_dir(files, path, recurse)?,
        });
        let mut last = self.last.lock().map_err(|_| Error::Task("poisoned".into()))?;
        if last.len() >= KEPT_RENDERS && !last.contains_key(owner) {
            last.clear();
        }
        last.insert(owner.to_owned(), (key, docs.clone()));
        Ok(docs)
    }
}

impl Render {
    /// The path built as Flux's kustomize-controller builds it: always with kustomize, its
    /// kustomization (or one generated from its YAML files) with `overlay` written in
    /// ([`lockstep_kustomize::overlay`]).
    pub fn render_as_flux(
        &self,
        files: &BTreeMap<String, Vec<u8>>,
        path: &str,
        overlay: &Overlay,
    ) -> Result<Vec<Document>, Error> {
        let (file, text) = lockstep_kustomize::overlay::kustomization(files, path, overlay)?;
        // The revision as kustomize-controller leaves it before the build: its kustomization
        // (generated or amended) in place.
        let mut files = files.clone();
        files.insert(file, text);
        self.builds.fetch_add(1, Ordering::Relaxed);
        let mut out = Vec::new();
        kustomize::build(self.kustomize.as_ref(), &files, path, &mut out)?;
        Ok(out)
    }
}

impl Renderer for Render {
    fn render(&self, files: &BTreeMap<String, Vec<u8>>, path: &str) -> Result<Vec<Document>, Error> {
        self.render_dir(files, path, true)
    }
}

impl Render {
    /// [`Renderer::render`], subdirectories of a plain directory read only when `recurse`.
    pub fn render_dir(
        &self,
        files: &BTreeMap<String, Vec<u8>>,
        path: &str,
        recurse: bool,
    ) -> Result<Vec<Document>, Error> {
        let mut out = Vec::new();
        for unit in lockstep_kustomize::units_with(files, path, recurse) {
            match unit {
                Unit::File(f) => {
                    if let Some(bytes) = files.get(&f) {
                        directory::file(&f, bytes, &mut out)?;
                    }
                }
                Unit::Kustomization { dir } => {
                    self.builds.fetch_add(1, Ordering::Relaxed);
                    let (started, before) = (std::time::Instant::now(), out.len());
                    kustomize::build(self.kustomize.as_ref(), files, &dir, &mut out)?;
                    tracing::debug!(
                        dir = %dir,
                        objects = out.len() - before,
                        ms = started.elapsed().as_millis() as u64,
                        "kustomize build"
                    );
                }
            }
        }
        Ok(out)
    }
}

/// A short digest (16 bytes, hex) of `parts`, each ended by a NUL: what a render read besides
/// the revision (a chart's archive, the versions of the objects a Sync reads), never a value.
pub fn inputs_digest<'a>(parts: impl IntoIterator<Item = &'a str>) -> String {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    for p in parts {
        h.update(p.as_bytes());
        h.update([0]);
    }
    hex::encode(&h.finalize()[..16])
}

/// Checks that a document is a Kubernetes object: `apiVersion`, `kind` and `metadata.name`.
pub fn check_object(origin: &str, o: &Json) -> Result<(), Error> {
    Ok(lockstep_kustomize::plain::check_object(origin, o)?)
}

pub use lockstep_kustomize::plain::origin;

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn repo(files: &[(&str, &str)]) -> BTreeMap<String, Vec<u8>> {
        files
            .iter()
            .map(|(n, t)| ((*n).to_owned(), t.as_bytes().to_vec()))
            .collect()
    }

    const CM: &str = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: c\n";

    #[test]
    fn plain_files_under_the_path_only_with_repository_paths_as_origins() {
        let files = repo(&[
            ("prod/a.yaml", CM),
            ("prod/.sops.yaml", "x: y\n"),
            ("other/b.yaml", CM),
        ]);
        let docs = Render::new(None).render(&files, "prod").unwrap();
        let [Document::Object(m)] = docs.as_slice() else {
            panic!("{docs:?}")
        };
        assert_eq!(m.origin, "prod/a.yaml");
    }

    #[test]
    fn a_kustomization_without_the_helper_is_named() {
        let files = repo(&[
            ("clusters/prod/ns.yaml", CM),
            ("clusters/prod/apps/kustomization.yaml", "resources: []\n"),
        ]);
        let e = Render::new(None)
            .render(&files, "clusters/prod")
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("clusters/prod/apps/kustomization.yaml: a kustomization, but the kustomize helper"),
            "{e}"
        );
    }

    #[test]
    fn the_last_render_of_a_sync_is_reused_for_the_same_commit_only() {
        let files = repo(&[("a.yaml", CM)]);
        let r = Render::new(None);
        let first = r.cached("ns.app", "c1", &files, "", None, true).unwrap();
        assert!(Arc::ptr_eq(
            &first,
            &r.clone().cached("ns.app", "c1", &files, "", None, true).unwrap()
        ));
        assert!(!Arc::ptr_eq(
            &first,
            &r.cached("ns.app", "c2", &files, "", None, true).unwrap()
        ));
        assert!(!Arc::ptr_eq(
            &first,
            &r.cached("ns.other", "c1", &files, "", None, true).unwrap()
        ));
    }
}
