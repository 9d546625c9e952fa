//! External Secrets Operator's resources (`external-secrets.io`), read as ESO reads them:
//! `ExternalSecret`, `SecretStore` and `ClusterSecretStore`, `v1` and `v1beta1` (a subset of
//! `v1`; both are served, `v1` stored). Defaults are applied in code, not in the CRD, as ESO
//! does since v2.9, so that GitOps diffs stay quiet. Provider blocks this agent does not
//! implement (gcpsm, azurekv, ...) are kept by the schema and reported on the ExternalSecret.

use std::collections::BTreeMap;

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::api::Condition;

/// The API group.
pub const GROUP: &str = "external-secrets.io";

/// The condition ExternalSecrets and stores report, as ESO names it.
pub const READY: &str = "Ready";
/// ExternalSecret `Ready` reason: the Secret is as the provider says.
pub const SECRET_SYNCED: &str = "SecretSynced";
/// ExternalSecret `Ready` reason: fetching, building or writing the Secret failed.
pub const SECRET_SYNCED_ERROR: &str = "SecretSyncedError";
/// ExternalSecret `Ready` reason: `creationPolicy: Merge` and no Secret to merge into.
pub const SECRET_MISSING: &str = "SecretMissing";
/// Store `Ready` reason: the store's configuration and credentials are usable.
pub const STORE_VALID: &str = "Valid";
/// Store `Ready` reason: they are not.
pub const STORE_INVALID: &str = "InvalidProviderConfig";

/// A schema that keeps any fields (for blocks validated in code).
fn open_object(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({ "type": "object", "x-kubernetes-preserve-unknown-fields": true })
}

/// `spec` of an ExternalSecret.
#[derive(CustomResource, Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq)]
#[kube(
    group = "external-secrets.io",
    version = "v1",
    kind = "ExternalSecret",
    namespaced,
    status = "ExternalSecretStatus",
    shortname = "es",
    printcolumn = r#"{"name":"Store","type":"string","jsonPath":".spec.secretStoreRef.name"}"#,
    printcolumn = r#"{"name":"Refresh Interval","type":"string","jsonPath":".spec.refreshInterval"}"#,
    printcolumn = r#"{"name":"Status","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].reason"}"#,
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct ExternalSecretSpec {
    /// The store for every item without its own `sourceRef`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_store_ref: Option<StoreRef>,
    /// How often to refetch, as a Go duration (default `1h`; `0` fetches once).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refresh_interval: Option<String>,
    /// `Periodic` (default), `OnChange` or `CreatedOnce`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refresh_policy: Option<String>,
    /// The Secret to write.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<Target>,
    /// One remote value per Secret key.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub data: Vec<DataItem>,
    /// Many keys at once (processed before `data`, which overrides them).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub data_from: Vec<DataFrom>,
}

/// A reference to a SecretStore or ClusterSecretStore.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[serde(rename_all = "camelCase")]
pub struct StoreRef {
    /// Store name.
    pub name: String,
    /// `SecretStore` (default) or `ClusterSecretStore`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
}

impl StoreRef {
    /// Whether this names a ClusterSecretStore.
    pub fn is_cluster(&self) -> bool {
        self.kind.as_deref() == Some("ClusterSecretStore")
    }
}

/// The target Secret.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Target {
    /// Secret name (default: the ExternalSecret's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// `Owner` (default), `Orphan`, `Merge`, `None` or `CreateOrMerge`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub creation_policy: Option<String>,
    /// `Retain` (default), `Delete` or `Merge`: what happens when the remote secret is gone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deletion_policy: Option<String>,
    /// Make the Secret immutable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub immutable: Option<bool>,
    /// How to build the Secret from the fetched values.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template: Option<Template>,
}

/// `target.template`.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Template {
    /// Secret type.
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub type_: Option<String>,
    /// `v2` (the only engine).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub engine_version: Option<String>,
    /// `Replace` (default) or `Merge` (fetched keys kept beside templated ones).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub merge_policy: Option<String>,
    /// Labels and annotations of the Secret (values are templates).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<TemplateMetadata>,
    /// Key → Go template.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub data: BTreeMap<String, String>,
    /// Templates from ConfigMaps, Secrets or literals (not supported yet: refused clearly).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "open_array")]
    pub template_from: Vec<serde_json::Value>,
}

fn open_array(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "array",
        "items": { "type": "object", "x-kubernetes-preserve-unknown-fields": true }
    })
}

/// `target.template.metadata`.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct TemplateMetadata {
    /// Labels.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Annotations.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

/// One `data[]` item.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct DataItem {
    /// The key in the Secret.
    pub secret_key: String,
    /// What to read.
    pub remote_ref: RemoteRef,
    /// Another store for this item.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_ref: Option<SourceRef>,
}

/// A remote secret and the part of it to use.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RemoteRef {
    /// The provider's key (AWS secret name or ARN, Vault path, ESC property path).
    pub key: String,
    /// A property inside a JSON value (gjson path for AWS and Vault).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub property: Option<String>,
    /// A version: AWS stage or `uuid/<VersionId>`, Vault KV v2 version number.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// `None` (default), `Base64`, `Base64URL` or `Auto`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decoding_strategy: Option<String>,
    /// `Default` or `Unicode`: how `dataFrom` keys are made valid.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conversion_strategy: Option<String>,
    /// `None` (default) or `Fetch` (tags / custom metadata; not supported yet).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata_policy: Option<String>,
    /// `Ignore` (default) or `Fail` on NUL bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub null_byte_policy: Option<String>,
}

/// `sourceRef` of an item.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct SourceRef {
    /// A store for this item.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub store_ref: Option<StoreRef>,
    /// Generators are not supported (refused clearly).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "open_object")]
    pub generator_ref: Option<serde_json::Value>,
}

/// One `dataFrom[]` item: exactly one of `extract` and `find`.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct DataFrom {
    /// A JSON object whose keys become Secret keys.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extract: Option<RemoteRef>,
    /// Every secret matching a name pattern or tags.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub find: Option<Find>,
    /// Key rewrites (not supported yet: refused clearly).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "open_array")]
    pub rewrite: Vec<serde_json::Value>,
    /// Another store for this item.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_ref: Option<SourceRef>,
}

/// `dataFrom[].find`.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Find {
    /// A name prefix.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// A name pattern.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<FindName>,
    /// Tags that must all match.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tags: BTreeMap<String, String>,
    /// `Default` or `Unicode`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conversion_strategy: Option<String>,
    /// `None` (default), `Base64`, `Base64URL` or `Auto`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decoding_strategy: Option<String>,
}

/// `find.name`.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq)]
pub struct FindName {
    /// A regular expression (RE2 syntax, unanchored).
    pub regexp: String,
}

/// ExternalSecret status, as ESO writes it.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ExternalSecretStatus {
    /// When the last successful refresh started (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refresh_time: Option<String>,
    /// `<generation>-<hash of labels and annotations>` last synced.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub synced_resource_version: Option<String>,
    /// `Ready` with reason `SecretSynced` or `SecretSyncedError`.
    #[serde(default)]
    pub conditions: Vec<Condition>,
    /// The target Secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub binding: Option<Binding>,
}

/// `status.binding`.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq)]
pub struct Binding {
    /// The Secret's name.
    pub name: String,
}

/// `spec` of a SecretStore.
#[derive(CustomResource, Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq)]
#[kube(
    group = "external-secrets.io",
    version = "v1",
    kind = "SecretStore",
    namespaced,
    status = "StoreStatus",
    shortname = "ss"
)]
#[serde(rename_all = "camelCase")]
pub struct SecretStoreSpec {
    /// Controller class.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub controller: Option<String>,
    /// Exactly one provider block.
    #[schemars(schema_with = "open_object")]
    pub provider: Provider,
    /// Retry settings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "open_object")]
    pub retry_settings: Option<serde_json::Value>,
    /// Store re-validation interval (seconds or a duration).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "int_or_string")]
    pub refresh_interval: Option<serde_json::Value>,
    /// ClusterSecretStore only: the namespaces allowed to use it (any condition may match;
    /// none: all).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<ClusterStoreCondition>,
}

/// `spec` of a ClusterSecretStore (the same as a SecretStore's).
#[derive(CustomResource, Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq)]
#[kube(
    group = "external-secrets.io",
    version = "v1",
    kind = "ClusterSecretStore",
    status = "StoreStatus",
    shortname = "css"
)]
pub struct ClusterSecretStoreSpec {
    /// The same fields as a SecretStore's; `conditions` apply here only.
    #[serde(flatten)]
    pub store: SecretStoreSpec,
}

fn int_or_string(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({ "x-kubernetes-int-or-string": true })
}

/// One namespace condition of a ClusterSecretStore.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ClusterStoreCondition {
    /// A label selector on Namespaces.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "open_object")]
    pub namespace_selector: Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector>,
    /// Namespace names.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub namespaces: Vec<String>,
    /// Regular expressions on namespace names (unanchored, as ESO matches them).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub namespace_regexes: Vec<String>,
}

/// Store status.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq)]
pub struct StoreStatus {
    /// `Ready`.
    #[serde(default)]
    pub conditions: Vec<Condition>,
    /// `ReadOnly`, `WriteOnly` or `ReadWrite`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capabilities: Option<String>,
}

/// The provider block (one of). Unknown providers are kept in `other`.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Provider {
    /// AWS Secrets Manager.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aws: Option<AwsProvider>,
    /// HashiCorp Vault.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vault: Option<VaultProvider>,
    /// OpenBao (wire-compatible with Vault's KV).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub open_bao: Option<VaultProvider>,
    /// Pulumi ESC.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pulumi: Option<PulumiProvider>,
    /// Any other provider (not supported by Lockstep).
    #[serde(flatten)]
    pub other: BTreeMap<String, serde_json::Value>,
}

/// A key of a Secret; `namespace` is honoured only in ClusterSecretStores.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[serde(rename_all = "camelCase")]
pub struct SecretKeySelector {
    /// Secret name.
    pub name: String,
    /// Key in the Secret.
    #[serde(default)]
    pub key: String,
    /// Namespace (ClusterSecretStore only; default: the ExternalSecret's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
}

/// A ServiceAccount; `namespace` is honoured only in ClusterSecretStores.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ServiceAccountSelector {
    /// Name.
    pub name: String,
    /// Namespace (ClusterSecretStore only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// Token audiences.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub audiences: Vec<String>,
}

/// `provider.aws`.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct AwsProvider {
    /// `SecretsManager` (the only service supported).
    pub service: String,
    /// Region.
    pub region: String,
    /// A role to assume (not supported yet: refused clearly).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    /// Prepended to every key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
    /// Credentials (none: the default chain, IRSA/web identity included).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth: Option<AwsAuth>,
}

/// `provider.aws.auth`.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct AwsAuth {
    /// Static keys from a Secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_ref: Option<AwsSecretRef>,
    /// Web identity from a ServiceAccount (not supported yet: refused clearly).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "open_object")]
    pub jwt: Option<serde_json::Value>,
}

/// Static AWS keys.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct AwsSecretRef {
    /// Access key id.
    #[serde(rename = "accessKeyIDSecretRef")]
    pub access_key_id_secret_ref: SecretKeySelector,
    /// Secret access key.
    pub secret_access_key_secret_ref: SecretKeySelector,
    /// Session token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_token_secret_ref: Option<SecretKeySelector>,
}

/// `provider.vault` and `provider.openBao`.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct VaultProvider {
    /// Server URL.
    pub server: String,
    /// KV mount (default: the first segment of each key).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// `v2` (default) or `v1`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// Vault Enterprise / OpenBao namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// CA certificates (base64 of PEM).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_bundle: Option<String>,
    /// CA certificates from a Secret or ConfigMap.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_provider: Option<CaProvider>,
    /// How to log in.
    #[serde(default)]
    pub auth: VaultAuth,
}

/// `caProvider`.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct CaProvider {
    /// `Secret` or `ConfigMap`.
    #[serde(rename = "type")]
    pub type_: String,
    /// Name.
    pub name: String,
    /// Key.
    pub key: String,
    /// Namespace (ClusterSecretStore only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
}

/// `provider.vault.auth`: exactly one method.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct VaultAuth {
    /// Namespace for logins (default: the provider's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// A token from a Secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_secret_ref: Option<SecretKeySelector>,
    /// AppRole.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app_role: Option<AppRole>,
    /// Kubernetes service-account login.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kubernetes: Option<VaultKubernetes>,
    /// Other methods (jwt, ldap, userPass, cert, iam, gcp: not supported yet).
    #[serde(flatten)]
    pub other: BTreeMap<String, serde_json::Value>,
}

/// AppRole login.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct AppRole {
    /// Mount path (default `approle`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// The role id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role_id: Option<String>,
    /// The role id from a Secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role_ref: Option<SecretKeySelector>,
    /// The secret id.
    pub secret_ref: SecretKeySelector,
}

/// Kubernetes login.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct VaultKubernetes {
    /// Mount path (default `kubernetes`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mount_path: Option<String>,
    /// Vault role.
    pub role: String,
    /// The ServiceAccount whose token (TokenRequest) logs in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_account_ref: Option<ServiceAccountSelector>,
    /// A Secret holding a token (legacy).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_ref: Option<SecretKeySelector>,
}

/// `provider.pulumi`.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PulumiProvider {
    /// API base (default `https://api.pulumi.com/api/esc`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_url: Option<String>,
    /// Organization.
    pub organization: String,
    /// Project.
    #[serde(default)]
    pub project: String,
    /// Environment.
    pub environment: String,
    /// The access token (the older, root-level form).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_token: Option<TokenRef>,
    /// `auth.accessToken` (the newer form).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth: Option<PulumiAuth>,
}

/// `{secretRef: {...}}`.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct TokenRef {
    /// The Secret key holding the token.
    pub secret_ref: SecretKeySelector,
}

/// `provider.pulumi.auth`.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PulumiAuth {
    /// An access token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_token: Option<TokenRef>,
}

/// The three CRDs as YAML documents, both versions served (`v1` stored), as `crds/external-secrets.io.yaml` holds them.
pub fn crds_yaml() -> Result<String, lockstep_formats::Error> {
    use kube::CustomResourceExt;
    let emit = |e: serde_json::Error| lockstep_formats::Error::Emit {
        format: "YAML",
        message: e.to_string(),
    };
    let mut docs = Vec::new();
    for crd in [
        ExternalSecret::crd(),
        SecretStore::crd(),
        ClusterSecretStore::crd(),
    ] {
        let mut json = serde_json::to_value(crd).map_err(emit)?;
        crate::api::crd::kubernetes_formats(&mut json);
        // v1beta1: the same schema (it is a subset of v1), served, not stored; no conversion
        // webhook is needed for a subset.
        if let Some(versions) = json.pointer_mut("/spec/versions").and_then(|v| v.as_array_mut())
            && let Some(v1) = versions.first().cloned()
        {
            let mut beta = v1;
            beta["name"] = "v1beta1".into();
            beta["storage"] = false.into();
            versions.push(beta);
        }
        docs.push(lockstep_formats::sops::stores::from_json(json));
    }
    Ok(format!(
        "# Generated by `lockstep-agent crdgen --external-secrets` from agent/src/secrets/external/api.rs. Do not edit.\n{}",
        lockstep_formats::yaml::emit_documents(&docs)?
    ))
}
