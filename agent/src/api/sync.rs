//! The `Sync` custom resource (`lockstep.dev/v1alpha1`): what users write (`spec`) and what the
//! agent reports (`status`). `crds/sync.yaml` is generated from these types.

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

impl Sync {
    /// `namespace.name`: the owner label of the objects this Sync applies, and the key of its
    /// drift watches.
    pub fn owner(&self) -> String {
        use kube::ResourceExt as _;
        format!("{}.{}", self.namespace().unwrap_or_default(), self.name_any())
    }
}

/// What to pull and how to apply it.
#[derive(CustomResource, Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq)]
#[kube(
    group = "lockstep.dev",
    version = "v1alpha1",
    kind = "Sync",
    namespaced,
    status = "SyncStatus",
    shortname = "lsync",
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Healthy","type":"string","jsonPath":".status.conditions[?(@.type==\"Healthy\")].status"}"#,
    printcolumn = r#"{"name":"Revision","type":"string","jsonPath":".status.lastAppliedRevision"}"#,
    printcolumn = r#"{"name":"Message","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].message"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct SyncSpec {
    /// Where the manifests come from.
    pub source: Source,
    /// Keys for SOPS files and SealedSecrets.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decryption: Option<Decryption>,
    /// Namespace for every namespaced object (overrides theirs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_namespace: Option<String>,
    /// Delete objects that left Git (default true).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prune: Option<bool>,
    /// Largest share of the inventory, in percent, one sync may delete (default 50).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(max = 100))]
    pub prune_budget_percent: Option<u8>,
    /// Allow one sync to prune beyond the budget.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allow_mass_deletion: Option<bool>,
    /// Create `targetNamespace` if missing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub create_namespace: Option<bool>,
    /// Stop reconciling.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub suspend: Option<bool>,
    /// Bound on one sync, as a Go duration (`5m`, default `5m`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<String>,
    /// Wait for each wave's objects to be healthy (kstatus) before applying the next; a
    /// `Failed` object fails the sync at once (default false).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wait: Option<bool>,
    /// Put back, within seconds, objects changed or deleted in the cluster (default true).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub self_heal: Option<bool>,
    /// Backoff after failed syncs (default: 5s, doubling, at most 5m; jittered ±10 %).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry: Option<Retry>,
    /// Fields left to other managers (an HPA's `spec.replicas`): removed from what is applied,
    /// so Lockstep neither owns nor reverts them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ignore: Vec<IgnoreRule>,
    /// Syncs that must be `Ready` and `Healthy` (for their current generation) before this one
    /// is applied; re-checked as soon as one of them changes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub depends_on: Vec<DependencyRef>,
}

/// Another Sync this one waits for.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq, Eq, PartialOrd, Ord)]
pub struct DependencyRef {
    /// Its name.
    pub name: String,
    /// Its namespace (default: this Sync's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
}

/// Retry backoff after a failed sync: `duration × factor^(failures − 1)`, at most `maxDuration`.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Retry {
    /// The first delay, as a Go duration (default `5s`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration: Option<String>,
    /// The growth factor (default 2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub factor: Option<u32>,
    /// The longest delay, as a Go duration (default `5m`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_duration: Option<String>,
}

/// Fields Lockstep does not apply, in the objects a target selects.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct IgnoreRule {
    /// RFC 6901 JSON pointers (`/spec/replicas`).
    pub json_pointers: Vec<String>,
    /// Which objects (all when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<IgnoreTarget>,
}

/// Objects an ignore rule applies to: every field given must match exactly.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq)]
pub struct IgnoreTarget {
    /// API group (`apps`; empty for the core group).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// Kind.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// Name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
}

impl IgnoreRule {
    /// Removes the rule's fields from `o` when the rule targets it (pure).
    pub fn strip(&self, o: &mut serde_json::Value) {
        if let Some(t) = &self.target {
            let s = |p: &str| {
                o.pointer(p)
                    .and_then(serde_json::Value::as_str)
                    .unwrap_or_default()
            };
            let group = s("/apiVersion").rsplit_once('/').map_or("", |(g, _)| g);
            let matches = t.group.as_deref().is_none_or(|g| g == group)
                && t.kind.as_deref().is_none_or(|k| k == s("/kind"))
                && t.name.as_deref().is_none_or(|n| n == s("/metadata/name"))
                && t.namespace
                    .as_deref()
                    .is_none_or(|n| n == s("/metadata/namespace"));
            if !matches {
                return;
            }
        }
        for p in &self.json_pointers {
            let Some((parent, last)) = p.rsplit_once('/') else {
                continue;
            };
            let last = last.replace("~1", "/").replace("~0", "~");
            match o.pointer_mut(parent) {
                Some(serde_json::Value::Object(m)) => {
                    m.remove(&last);
                }
                Some(serde_json::Value::Array(a)) => {
                    if let Ok(i) = last.parse::<usize>()
                        && i < a.len()
                    {
                        a.remove(i);
                    }
                }
                _ => {}
            }
        }
    }
}

/// A Git source.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Source {
    /// Repository URL: `https://`, `ssh://` or `file://`.
    pub url: String,
    /// What to check out (default: branch `main`).
    #[serde(default, rename = "ref", skip_serializing_if = "Option::is_none")]
    pub reference: Option<GitRef>,
    /// Directory inside the repository (default: its root).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// Secret with credentials: `username`/`password` or `bearerToken` (https), `identity` and
    /// `known_hosts`, optionally the key's `password` (ssh); `ca.crt` for a private CA.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_ref: Option<LocalRef>,
    /// How often to check for new commits, as a Go duration (default `5m`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval: Option<String>,
}

/// A Git reference: exactly one of these.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct GitRef {
    /// A branch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub branch: Option<String>,
    /// A tag.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tag: Option<String>,
    /// A semver range over tags, as Flux reads `ref.semver` (`>=1.2 <2`, `1.2.x`, `~1.4`, `||`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub semver: Option<String>,
    /// A commit id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub commit: Option<String>,
}

/// A Secret in the Sync's namespace.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq)]
pub struct LocalRef {
    /// Its name.
    pub name: String,
}

/// Decryption settings.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Decryption {
    /// SOPS: a Secret whose `*.agekey` entries hold age identities.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sops: Option<SopsDecryption>,
    /// Unseal SealedSecrets with the agent's sealing keys (default true).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sealed_secrets: Option<bool>,
}

/// SOPS keys.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct SopsDecryption {
    /// The Secret with `*.agekey` entries.
    pub secret_ref: LocalRef,
}

/// Observed state, kstatus-compatible.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct SyncStatus {
    /// `metadata.generation` last reconciled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// The value of the `lockstep.dev/reconcile-requested-at` annotation last handled.
    #[serde(default)]
    pub last_handled_reconcile_at: Option<String>,
    /// `Ready`, `Reconciling`, `Stalled`, and `Healthy` (the kstatus health of the inventory
    /// after the last sync: `True`, `False` when an object failed, `Unknown` while one is in
    /// progress).
    #[serde(default)]
    pub conditions: Vec<Condition>,
    /// `branch@sha1:<commit>` last applied completely.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_applied_revision: Option<String>,
    /// `branch@sha1:<commit>` last tried.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_attempted_revision: Option<String>,
    /// What the last successful sync applied.
    #[serde(default)]
    pub inventory: Vec<InventoryEntry>,
    /// The last few syncs, newest first.
    #[serde(default)]
    pub history: Vec<HistoryEntry>,
    /// Failed syncs in a row (0 after a success): what the retry backoff grows with. Always
    /// written, 0 included: status is merge-patched, and a field left out would keep its old
    /// count.
    #[serde(default)]
    pub failures: u32,
}

/// A condition (the `metav1.Condition` shape).
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    /// Its type (a Sync has `Ready`, `Reconciling`, `Stalled` and `Healthy`).
    #[serde(rename = "type")]
    pub type_: String,
    /// `True`, `False` or `Unknown`.
    pub status: String,
    /// CamelCase reason.
    pub reason: String,
    /// Human message (never a secret value).
    pub message: String,
    /// When the status last changed (RFC 3339).
    pub last_transition_time: String,
    /// Generation observed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

/// One applied object.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct InventoryEntry {
    /// apiVersion.
    pub api_version: String,
    /// Kind.
    pub kind: String,
    /// Namespace (empty for cluster-scoped).
    #[serde(default)]
    pub namespace: String,
    /// Name.
    pub name: String,
    /// Hash of the desired object (never the object).
    pub hash: String,
}

/// One past sync.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct HistoryEntry {
    /// Revision.
    pub revision: String,
    /// When (RFC 3339).
    pub time: String,
    /// `Succeeded` or the failure reason.
    pub result: String,
    /// Objects written and pruned.
    pub applied: usize,
    /// Objects pruned.
    pub pruned: usize,
}
