//! Plan (pure, no I/O): the identity and inventory hash of every desired object, the step
//! (stage, wave) that applies it and whether it changed since the last sync ([`mod@steps`]),
//! what leaves Git and may be pruned within the budget ([`prune`]), and which objects are hooks
//! ([`hooks`]).

pub mod hooks;
pub mod prune;
pub mod steps;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value as Json;
use sha2::{Digest, Sha256};

pub use prune::{BudgetExceeded, check_budget, prune_set};
pub use steps::{Stage, Step, StepPlan, plan_step, stage, steps, wave};

/// Errors of planning; each names the file and document.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A sync-wave annotation is not an integer.
    #[error("{origin}: metadata.annotations[{annotation}]: {value:?} is not an integer")]
    Wave {
        /// File and document.
        origin: String,
        /// The annotation.
        annotation: &'static str,
        /// Its value.
        value: String,
    },
    /// A hook annotation has a value Lockstep (and Argo CD or Helm) does not know.
    #[error("{origin}: metadata.annotations[{annotation}]: {value:?} is not one of {expected}")]
    Hook {
        /// File and document.
        origin: String,
        /// The annotation.
        annotation: &'static str,
        /// Its value.
        value: String,
        /// The values it may have.
        expected: String,
    },
    /// An object with `generateName` and no name that is not a hook: it cannot be applied.
    #[error(
        "{origin}: metadata.name is missing (metadata.generateName is for hooks, which are created rather than applied: annotate it with argocd.argoproj.io/hook or helm.sh/hook)"
    )]
    GeneratedName {
        /// File and document.
        origin: String,
    },
    /// Secret material came without the digest of its encrypted source.
    #[error("{origin}: secret material without a source digest")]
    NoSourceDigest {
        /// File and document.
        origin: String,
    },
}

/// The API group of an `apiVersion` (`apps/v1` → `apps`; `v1` → the core group, empty).
pub fn group_of(api_version: &str) -> &str {
    api_version.rsplit_once('/').map_or("", |(g, _)| g)
}

/// Identity of an object across syncs: `group/kind/namespace/name` (version-independent).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ObjectId {
    /// `apiVersion` as applied.
    pub api_version: String,
    /// Kind.
    pub kind: String,
    /// Namespace (empty for cluster-scoped objects).
    pub namespace: String,
    /// Name.
    pub name: String,
}

impl ObjectId {
    /// The id of a (namespace-resolved) object.
    pub fn of(o: &Json) -> Option<Self> {
        let s = |p: &str| o.pointer(p).and_then(Json::as_str).map(str::to_owned);
        Some(Self {
            api_version: s("/apiVersion")?,
            kind: s("/kind")?,
            namespace: s("/metadata/namespace").unwrap_or_default(),
            name: s("/metadata/name")?,
        })
    }

    /// The API group.
    pub fn group(&self) -> &str {
        group_of(&self.api_version)
    }

    /// `(group, version, kind)`.
    pub fn gvk(&self) -> kube::api::GroupVersionKind {
        let version = self.api_version.rsplit('/').next().unwrap_or(&self.api_version);
        kube::api::GroupVersionKind::gvk(self.group(), version, &self.kind)
    }

    /// The version-independent key.
    pub fn key(&self) -> String {
        format!("{}/{}/{}/{}", self.group(), self.kind, self.namespace, self.name)
    }
}

impl std::fmt::Display for ObjectId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.namespace.is_empty() {
            write!(f, "{} {}", self.kind, self.name)
        } else {
            write!(f, "{} {}/{}", self.kind, self.namespace, self.name)
        }
    }
}

/// What was applied last time: object key → (id, hash of the desired object).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Inventory {
    /// Entries by [`ObjectId::key`].
    pub entries: BTreeMap<String, (ObjectId, String)>,
}

/// A stable hash of a desired object (keys sorted), to skip unchanged objects. The canonical
/// form is streamed into the hash, never held in a buffer, so hashing a Secret copies none of
/// its values.
pub fn hash(o: &Json) -> String {
    /// Feeds what is written into the hash.
    struct Sink(Sha256);
    impl std::io::Write for Sink {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.update(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    fn canon(v: &Json, out: &mut Sink) {
        match v {
            Json::Object(m) => {
                out.0.update(b"{");
                let mut keys: Vec<&String> = m.keys().collect();
                keys.sort();
                for k in keys {
                    out.0.update(k.as_bytes());
                    out.0.update(b":");
                    canon(&m[k], out);
                    out.0.update(b",");
                }
                out.0.update(b"}");
            }
            Json::Array(a) => {
                out.0.update(b"[");
                for x in a {
                    canon(x, out);
                    out.0.update(b",");
                }
                out.0.update(b"]");
            }
            // JSON text, escaped as serde_json writes it, straight into the hash.
            scalar => {
                let _ = serde_json::to_writer(&mut *out, scalar);
            }
        }
    }
    let mut sink = Sink(Sha256::new());
    canon(o, &mut sink);
    hex::encode(&sink.0.finalize()[..16])
}

/// A digest of bytes (for encrypted sources).
pub fn digest(bytes: &[u8]) -> String {
    hex::encode(&Sha256::digest(bytes)[..16])
}

/// The inventory hash of a Secret made from an encrypted source: its metadata and type as
/// they are, its values replaced by the digest of the ciphertext they came from. Status is
/// readable by more people than Secrets are; a hash of plaintext there would let them test
/// guesses of a low-entropy value offline.
pub fn secret_hash(o: &Json, source_digest: &str) -> String {
    // Only the fields that are not values are copied: no unwiped copy of a value is made. (A
    // chart's object that is not a Secret but holds a secret value keeps only these too.)
    let mut masked = serde_json::Map::new();
    if let Some(m) = o.as_object() {
        for (k, v) in m {
            if matches!(
                k.as_str(),
                "apiVersion" | "kind" | "metadata" | "type" | "immutable"
            ) {
                masked.insert(k.clone(), v.clone());
            }
        }
    }
    masked.insert("lockstep.dev/source".into(), source_digest.into());
    hash(&Json::Object(masked))
}

/// The hash that stands for a desired object in the inventory: [`secret_hash`] for secret
/// material (which must come with its source's digest), [`hash`] otherwise.
pub fn desired_hash(
    origin: &str,
    object: &Json,
    secret: bool,
    source_digest: Option<&str>,
) -> Result<String, Error> {
    match source_digest {
        Some(d) => Ok(secret_hash(object, d)),
        None if secret => Err(Error::NoSourceDigest {
            origin: origin.to_owned(),
        }),
        None => Ok(hash(object)),
    }
}

/// The names of the Secrets an object mounts or references (pod volumes, projected sources,
/// `envFrom`, `env[].valueFrom.secretKeyRef`, `imagePullSecrets`), wherever its pod template is.
pub fn secret_refs(o: &Json) -> std::collections::BTreeSet<String> {
    fn walk(v: &Json, out: &mut std::collections::BTreeSet<String>) {
        match v {
            Json::Object(m) => {
                for (k, v) in m {
                    let name = |x: &Json| x.get("name").and_then(Json::as_str).map(str::to_owned);
                    match k.as_str() {
                        "secret" => out.extend(
                            v.get("secretName")
                                .or_else(|| v.get("name"))
                                .and_then(Json::as_str)
                                .map(str::to_owned),
                        ),
                        "secretRef" | "secretKeyRef" => out.extend(name(v)),
                        "imagePullSecrets" => {
                            out.extend(v.as_array().into_iter().flatten().filter_map(name));
                        }
                        _ => {}
                    }
                    walk(v, out);
                }
            }
            Json::Array(a) => a.iter().for_each(|v| walk(v, out)),
            _ => {}
        }
    }
    let mut out = std::collections::BTreeSet::new();
    if let Some(spec) = o.get("spec") {
        walk(spec, &mut out);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn secret_hashes_depend_on_ciphertext_not_values() {
        let a = json!({"kind": "Secret", "metadata": {"name": "x"}, "data": {"k": "c2VjcmV0"}});
        let b = json!({"kind": "Secret", "metadata": {"name": "x"}, "data": {"k": "b3RoZXI="}});
        assert_eq!(secret_hash(&a, "d1"), secret_hash(&b, "d1"));
        assert_ne!(secret_hash(&a, "d1"), secret_hash(&a, "d2"));
        assert_ne!(secret_hash(&a, "d1"), hash(&a));
        let renamed = json!({"kind": "Secret", "metadata": {"name": "y"}, "data": {"k": "c2VjcmV0"}});
        assert_ne!(secret_hash(&a, "d1"), secret_hash(&renamed, "d1"));
        assert_eq!(
            desired_hash("f", &a, true, Some("d1")).unwrap(),
            secret_hash(&a, "d1")
        );
        assert_eq!(desired_hash("f", &a, false, None).unwrap(), hash(&a));
        let e = desired_hash("db.yaml", &a, true, None).unwrap_err().to_string();
        assert_eq!(e, "db.yaml: secret material without a source digest");
    }

    #[test]
    fn hashes_ignore_key_order_and_tell_strings_from_numbers() {
        assert_eq!(
            hash(&json!({"a": 1, "b": [1, {"c": 2, "d": 3}]})),
            hash(&json!({"b": [1, {"d": 3, "c": 2}], "a": 1}))
        );
        assert_ne!(hash(&json!({"a": 1})), hash(&json!({"a": 2})));
        assert_ne!(hash(&json!({"a": 1})), hash(&json!({"a": "1"})));
        // The canonical form of every earlier release, so that inventories in existing
        // clusters keep matching (no object is re-applied after an upgrade).
        assert_eq!(
            hash(&json!({"a": 1, "b": [1, {"c": 2, "d": 3}]})),
            "2879e4be2d16b51dcce5d21e39e59781"
        );
        assert_eq!(
            hash(&json!({"kind": "Secret", "s": "a\"b\n\u{e9}"})),
            "22cb2a6fc6014bd14b812bcbbcebf688"
        );
    }

    #[test]
    fn ids_are_version_independent() {
        let id = |v: &str| ObjectId {
            api_version: v.into(),
            kind: "Deployment".into(),
            namespace: "x".into(),
            name: "web".into(),
        };
        assert_eq!(id("apps/v1").key(), id("apps/v2").key());
        assert_eq!(id("apps/v1").key(), "apps/Deployment/x/web");
        let gvk = id("apps/v1").gvk();
        assert_eq!((gvk.group.as_str(), gvk.version.as_str()), ("apps", "v1"));
        let core = ObjectId {
            api_version: "v1".into(),
            ..id("v1")
        };
        assert_eq!((core.group(), core.gvk().version.as_str()), ("", "v1"));
    }
}
