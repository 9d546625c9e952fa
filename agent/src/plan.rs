//! Plan (pure, no I/O): the stage of every object, which objects changed since the last sync,
//! what leaves Git and may be pruned, and the prune budget.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value as Json;
use sha2::{Digest, Sha256};

/// The label Lockstep puts on every object it applies: the owning Sync.
pub const OWNER_LABEL: &str = "lockstep.dev/sync";
/// `lockstep.dev/prune: disabled` keeps an object when it leaves Git.
pub const PRUNE_ANNOTATION: &str = "lockstep.dev/prune";

/// Apply stages, in order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Stage {
    /// CRDs, Namespaces, cluster-scoped classes, and Roles and ClusterRoles (the API server
    /// reads a role to check a binding of it for escalation, so a binding applied before its
    /// role fails).
    Foundations,
    /// Secrets, SealedSecrets, ExternalSecrets and their stores: before anything mounts them.
    Secrets,
    /// Everything else.
    Workloads,
}

/// The stage of an object, by API group and kind.
pub fn stage(api_version: &str, kind: &str) -> Stage {
    let group = api_version.rsplit_once('/').map_or("", |(g, _)| g);
    match (group, kind) {
        ("apiextensions.k8s.io", "CustomResourceDefinition") | ("", "Namespace") => Stage::Foundations,
        (_, "StorageClass" | "PriorityClass" | "IngressClass" | "RuntimeClass" | "GatewayClass") => {
            Stage::Foundations
        }
        ("rbac.authorization.k8s.io", "Role" | "ClusterRole") => Stage::Foundations,
        ("", "Secret") | ("bitnami.com", "SealedSecret") => Stage::Secrets,
        (
            "external-secrets.io",
            "ExternalSecret" | "SecretStore" | "ClusterSecretStore" | "ClusterExternalSecret",
        ) => Stage::Secrets,
        _ => Stage::Workloads,
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

    /// The version-independent key.
    pub fn key(&self) -> String {
        let group = self.api_version.rsplit_once('/').map_or("", |(g, _)| g);
        format!("{group}/{}/{}/{}", self.kind, self.namespace, self.name)
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

/// A stable hash of a desired object (keys sorted), to skip unchanged objects.
pub fn hash(o: &Json) -> String {
    fn canon(v: &Json, out: &mut Vec<u8>) {
        match v {
            Json::Object(m) => {
                out.push(b'{');
                let mut keys: Vec<&String> = m.keys().collect();
                keys.sort();
                for k in keys {
                    out.extend_from_slice(k.as_bytes());
                    out.push(b':');
                    canon(&m[k], out);
                    out.push(b',');
                }
                out.push(b'}');
            }
            Json::Array(a) => {
                out.push(b'[');
                for x in a {
                    canon(x, out);
                    out.push(b',');
                }
                out.push(b']');
            }
            other => out.extend_from_slice(other.to_string().as_bytes()),
        }
    }
    let mut buf = zeroize::Zeroizing::new(Vec::new());
    canon(o, &mut buf);
    hex::encode(&Sha256::digest(&*buf)[..16])
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
    let mut masked = o.clone();
    if let Some(m) = masked.as_object_mut() {
        m.remove("data");
        m.remove("stringData");
        m.insert("lockstep.dev/source".into(), source_digest.into());
    }
    hash(&masked)
}

/// What leaves Git: entries of `last` that the desired set no longer has.
pub fn prune_set(last: &Inventory, desired: &Inventory) -> Vec<ObjectId> {
    last.entries
        .iter()
        .filter(|(k, _)| !desired.entries.contains_key(*k))
        .map(|(_, (id, _))| id.clone())
        .collect()
}

/// The prune budget was exceeded.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "refusing to prune {count} of {inventory} objects ({percent}%, budget {budget}%): set spec.prune.allowMassDeletion \
     to confirm"
)]
pub struct BudgetExceeded {
    /// Objects that would be deleted.
    pub count: usize,
    /// Size of the last inventory.
    pub inventory: usize,
    /// Their share, in percent.
    pub percent: usize,
    /// The budget, in percent.
    pub budget: usize,
}

/// Refuses to delete more than `budget` (a share of the last inventory) in one sync, unless
/// `allow` is set.
pub fn check_budget(count: usize, inventory: usize, budget: f64, allow: bool) -> Result<(), BudgetExceeded> {
    if allow || count == 0 || inventory == 0 {
        return Ok(());
    }
    let share = count as f64 / inventory as f64;
    if share > budget {
        return Err(BudgetExceeded {
            count,
            inventory,
            percent: (share * 100.0).round() as usize,
            budget: (budget * 100.0).round() as usize,
        });
    }
    Ok(())
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
    }

    #[test]
    fn stages_put_secrets_before_workloads() {
        assert_eq!(
            stage("apiextensions.k8s.io/v1", "CustomResourceDefinition"),
            Stage::Foundations
        );
        assert_eq!(stage("v1", "Namespace"), Stage::Foundations);
        assert_eq!(stage("rbac.authorization.k8s.io/v1", "Role"), Stage::Foundations);
        assert_eq!(
            stage("rbac.authorization.k8s.io/v1", "ClusterRole"),
            Stage::Foundations
        );
        assert_eq!(
            stage("rbac.authorization.k8s.io/v1", "RoleBinding"),
            Stage::Workloads
        );
        assert_eq!(stage("v1", "Secret"), Stage::Secrets);
        assert_eq!(stage("bitnami.com/v1alpha1", "SealedSecret"), Stage::Secrets);
        assert_eq!(stage("external-secrets.io/v1", "ExternalSecret"), Stage::Secrets);
        assert_eq!(stage("apps/v1", "Deployment"), Stage::Workloads);
        assert_eq!(
            stage("example.com/v1", "Secret"),
            Stage::Workloads,
            "a CRD kind named Secret is not a Secret"
        );
        assert!(Stage::Foundations < Stage::Secrets && Stage::Secrets < Stage::Workloads);
    }

    #[test]
    fn hashes_ignore_key_order_and_prune_set_is_the_difference() {
        assert_eq!(
            hash(&json!({"a": 1, "b": [1, {"c": 2, "d": 3}]})),
            hash(&json!({"b": [1, {"d": 3, "c": 2}], "a": 1}))
        );
        assert_ne!(hash(&json!({"a": 1})), hash(&json!({"a": 2})));
        let id = |n: &str| ObjectId {
            api_version: "v1".into(),
            kind: "ConfigMap".into(),
            namespace: "x".into(),
            name: n.into(),
        };
        let inv = |names: &[&str]| Inventory {
            entries: names
                .iter()
                .map(|n| (id(n).key(), (id(n), String::new())))
                .collect(),
        };
        assert_eq!(
            prune_set(&inv(&["a", "b", "c"]), &inv(&["b"])),
            vec![id("a"), id("c")]
        );
        // apps/v1 → apps/v2 is the same object.
        let mut v2 = id("a");
        v2.api_version = "v2".into();
        assert_eq!(v2.key(), id("a").key());
    }

    #[test]
    fn the_prune_budget() {
        assert!(check_budget(5, 10, 0.5, false).is_ok());
        let e = check_budget(6, 10, 0.5, false).unwrap_err();
        assert_eq!((e.percent, e.budget), (60, 50));
        assert!(e.to_string().contains("refusing to prune 6 of 10 objects"));
        assert!(check_budget(10, 10, 0.5, true).is_ok());
        assert!(check_budget(0, 0, 0.5, false).is_ok());
    }
}
