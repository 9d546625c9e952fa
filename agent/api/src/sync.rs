//! The `Sync` custom resource (`lockstep.dev/v1alpha1`): what users write (`spec`) and what the
//! agent reports (`status`). `crds/sync.yaml` is generated from these types.

use std::collections::BTreeMap;

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
    /// Namespace for namespaced objects that name none (Argo CD's `destination.namespace`);
    /// unlike `targetNamespace`, a namespace an object names is kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_namespace: Option<String>,
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
    /// Render a Helm chart, with Helm's own engine, instead of the path's files.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub helm: Option<HelmSpec>,
    /// Build the path with kustomize the way Flux's kustomize-controller does: its kustomization
    /// (or, when it has none, one listing its YAML files, as Flux generates it), with
    /// `targetNamespace` as the kustomization's `namespace` and these fields written in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kustomize: Option<KustomizeSpec>,
    /// Flux's `postBuild`: variables substituted into every object after the build and its
    /// decryption (not into a chart's objects, as in Flux).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub post_build: Option<PostBuild>,
}

/// What a Flux Kustomization adds to the kustomize build of its path.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct KustomizeSpec {
    /// Prefix of every object's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name_prefix: Option<String>,
    /// Suffix of every object's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name_suffix: Option<String>,
    /// kustomize `patches` (`{patch, target}`), appended to the kustomization's.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "open_list")]
    pub patches: Vec<serde_json::Value>,
    /// kustomize `images` (`{name, newName, newTag, digest}`), merged by name.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "open_list")]
    pub images: Vec<serde_json::Value>,
    /// Components added, relative to the path.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub components: Vec<String>,
    /// Leave out components that do not exist (default false).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ignore_missing_components: Option<bool>,
    /// Labels and annotations put on every object after the build.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub common_metadata: Option<CommonMetadata>,
    /// kustomize `commonLabels`, selectors included (Argo CD's `kustomize.commonLabels`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub common_labels: BTreeMap<String, String>,
    /// kustomize `replicas` (`{name, count}`; Argo CD's `kustomize.replicas`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "open_list")]
    pub replicas: Vec<serde_json::Value>,
}

/// Labels and annotations for every object.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq)]
pub struct CommonMetadata {
    /// Labels.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Annotations.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

/// A schema for a list of open objects.
pub(crate) fn open_list(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({ "type": "array", "items": { "type": "object", "x-kubernetes-preserve-unknown-fields": true } })
}

/// Flux's `postBuild` (kustomize.toolkit.fluxcd.io/v1), with its semantics: `${var}`,
/// `${var:=default}` and the other forms of Flux's envsubst, `$${var}` for a literal, strict
/// (a variable used without a default must be set), objects labelled or annotated
/// `kustomize.toolkit.fluxcd.io/substitute: disabled` left alone.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PostBuild {
    /// Variables by name; they override those of `substituteFrom`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub substitute: BTreeMap<String, String>,
    /// ConfigMaps and Secrets of the Sync's namespace whose keys are variables, later ones
    /// overriding earlier ones. Values from a Secret make the objects they reach secret
    /// material.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub substitute_from: Vec<SubstituteReference>,
    /// `WithVariables` (default): nothing is substituted when no variable is set; `Always`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub substitute_strategy: Option<SubstituteStrategy>,
}

/// A ConfigMap or Secret of variables.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct SubstituteReference {
    /// `ConfigMap` or `Secret`.
    pub kind: ValuesKind,
    /// Its name.
    pub name: String,
    /// Go on without it when it does not exist (default false).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub optional: Option<bool>,
}

/// When `postBuild` substitutes.
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq, Eq)]
pub enum SubstituteStrategy {
    /// Only when at least one variable is set.
    #[default]
    WithVariables,
    /// Always (defaults such as `${var:=x}` apply with no variable set).
    Always,
}

/// A schema that keeps any fields (Helm values).
pub(crate) fn open_object(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({ "type": "object", "x-kubernetes-preserve-unknown-fields": true })
}

/// A Helm chart and its values, rendered client-side as `helm template` renders it (no release
/// state; `lookup` returns nothing); the objects are applied, pruned and healed like any others.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct HelmSpec {
    /// The chart: from a Helm repository (`https://`) or an OCI registry (`oci://`). Absent: the
    /// chart directory at `spec.source.path` (its `Chart.yaml`), as Argo CD reads one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chart: Option<ChartRef>,
    /// `.Release.Name` (default: the Sync's name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub release_name: Option<String>,
    /// Values files of the Git revision, relative to `spec.source.path`, merged in order over
    /// the chart's `values.yaml`; SOPS-encrypted ones (helm-secrets' `secrets.yaml`,
    /// `*.sops.yaml`) are decrypted in memory with `spec.decryption.sops`, the MAC verified.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub values_files: Vec<String>,
    /// Values from ConfigMaps and Secrets of the Sync's namespace, merged in order after the
    /// values files (Flux's `valuesFrom`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub values_from: Vec<ValuesReference>,
    /// Inline values, merged after `valuesFrom`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "open_object")]
    pub values: Option<serde_json::Value>,
    /// `--set` overrides, applied last, in order (Argo CD's `parameters`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub set: Vec<HelmParameter>,
    /// Apply the chart's `crds/` (default true: Flux's `Create`, Argo CD's default); they are
    /// applied in the CRD stage, before everything else.
    #[serde(default, rename = "includeCRDs", skip_serializing_if = "Option::is_none")]
    pub include_crds: Option<bool>,
    /// `.Capabilities.KubeVersion` (default: Helm's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kube_version: Option<String>,
    /// Added to `.Capabilities.APIVersions` (`batch/v1/CronJob`, `monitoring.coreos.com/v1`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub api_versions: Vec<String>,
    /// Leave out the chart's `helm.sh/hook: test` objects.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub skip_tests: Option<bool>,
    /// Kustomize steps run over the rendered objects, in order (Flux's `postRenderers`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub post_renderers: Vec<PostRenderer>,
    /// Credentials for the repositories a chart's dependencies come from (`Chart.yaml`
    /// `dependencies[].repository`, matched by URL, as `helm repo add` gives them to `helm
    /// dependency build`); dependencies of other repositories are fetched anonymously.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub repositories: Vec<RepositoryCredentials>,
}

/// A chart repository's credentials, for dependencies.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RepositoryCredentials {
    /// The repository's URL, as dependencies name it (`https://…` or `oci://…`).
    pub url: String,
    /// A Secret with `username`/`password` or `bearerToken` and `ca.crt` (a
    /// `kubernetes.io/dockerconfigjson` Secret for OCI).
    pub secret_ref: LocalRef,
}

/// A chart from a repository.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ChartRef {
    /// `https://charts.example.com` (a Helm repository with an `index.yaml`) or
    /// `oci://registry.example.com/charts` (the chart is `<repository>/<name>`).
    pub repository: String,
    /// The chart's name.
    pub name: String,
    /// A version or a range (`1.2.3`, `>=1.2 <2`, `~1.4`); the highest stable version when
    /// absent. For OCI, matched against the tags.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// OCI only: the manifest digest (`sha256:…`) the chart must have; it wins over `version`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
    /// A Secret with credentials: `username`/`password` or `bearerToken`, and `ca.crt` (Flux's
    /// `HelmRepository` keys); for OCI, a `kubernetes.io/dockerconfigjson` Secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_ref: Option<LocalRef>,
    /// A Secret with `ca.crt`, the repository's private CA (Flux's `certSecretRef`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cert_secret_ref: Option<LocalRef>,
}

/// Values from a ConfigMap or Secret (Flux's `valuesFrom`).
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ValuesReference {
    /// `ConfigMap` or `Secret`.
    pub kind: ValuesKind,
    /// Its name, in the Sync's namespace.
    pub name: String,
    /// The key holding the values (default `values.yaml`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub values_key: Option<String>,
    /// Set the key's content, as one string, at this path (`a.b[0].c`) instead of merging it as
    /// YAML.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_path: Option<String>,
    /// Go on without it when it (or its key) does not exist.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub optional: Option<bool>,
}

/// What `valuesFrom` reads.
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq, Eq)]
pub enum ValuesKind {
    /// A ConfigMap.
    #[default]
    ConfigMap,
    /// A Secret (its values count as secret material).
    Secret,
}

/// One `--set` override.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct HelmParameter {
    /// The path (`image.tag`, `ingress.hosts[0]`).
    pub name: String,
    /// The value, typed as `--set` types it (`true`, `3`) unless `forceString`.
    pub value: String,
    /// Keep it a string (`--set-string`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub force_string: Option<bool>,
}

/// A post-render step.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq)]
pub struct PostRenderer {
    /// Kustomize over the rendered objects: `patches` (strategic merge or JSON 6902, with
    /// `target`) and `images`, as in a kustomization.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "open_object")]
    pub kustomize: Option<serde_json::Value>,
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
    /// Read a plain directory's subdirectories too (default true; Argo CD's
    /// `directory.recurse` is false unless set).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recurse: Option<bool>,
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
    /// A Helm Sync: the chart last applied (`name version`, with the archive's digest).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_applied_chart: Option<String>,
    /// A Helm Sync: the digest of what the last successful sync rendered besides the commit
    /// (the chart, the `valuesFrom` objects' versions); a poll that finds it and the commit
    /// unchanged renders nothing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_applied_inputs: Option<String>,
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
