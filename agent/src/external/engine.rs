//! The batch: resolve stores and credentials, read each distinct remote reference once, build
//! the Secrets, write them (server-side apply; nothing is written for an ExternalSecret that
//! failed, so an outage keeps the existing Secret), and report in each ExternalSecret's status.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Namespace, Secret};
use kube::api::{Api, Patch, PatchParams};
use serde_json::{Value as Json, json};
use zeroize::Zeroizing;

use super::api::{ClusterSecretStore, ExternalSecret, Provider, SecretKeySelector, SecretStore, StoreRef};
use super::plan::{self, Data, Item};
use super::values;
use super::vault::{Login, TokenCache, Vault};
use super::{Calls, Fetched, aws::Aws, esc::Esc};

/// Secrets (and statuses) written at once by one batch.
const WRITE_CONCURRENCY: usize = 16;

/// The field manager of Secrets written for ExternalSecrets.
pub const FIELD_MANAGER: &str = "lockstep-externalsecrets";

/// A provider client for one store (and, for a ClusterSecretStore without namespaced
/// credentials, one ExternalSecret namespace).
enum Backend {
    Aws(Aws),
    Vault(Vault),
    Esc(Esc),
}

impl Backend {
    async fn read_many(&self, reads: &[(String, Option<String>)], calls: &Calls) -> Vec<Fetched> {
        match self {
            Backend::Aws(a) => a.read_many(reads, calls).await,
            Backend::Vault(v) => v.read_many(reads, calls).await,
            Backend::Esc(e) => e.read_many(reads, calls).await,
        }
    }
}

/// `(kind, namespace of a SecretStore, name, namespace credentials are read in)`.
type BackendKey = (String, String, String, String);

/// The `Ready` message last written per store, by `(cluster, namespace, name)`.
type StoreMessages = HashMap<(bool, String, String), String>;

/// `dataFrom.find` results of a batch, by backend and search.
type Finds = HashMap<(BackendKey, String), Result<Vec<(String, values::Bytes)>, String>>;

/// The fetched value of a reference, its `property` picked out: `None` when the remote secret
/// does not exist.
fn selected(
    fetched: &HashMap<(BackendKey, String, Option<String>), Fetched>,
    key: &BackendKey,
    remote: &super::api::RemoteRef,
    field: &str,
) -> Result<Option<values::Bytes>, String> {
    let v = match fetched.get(&(key.clone(), remote.key.clone(), remote.version.clone())) {
        Some(Fetched::Value(v)) => v,
        Some(Fetched::NotFound) => return Ok(None),
        Some(Fetched::Failed(m)) => return Err(format!("{field}: {m}")),
        None => return Err(format!("{field}: not fetched")),
    };
    match &remote.property {
        Some(p) => values::property(v, p, &remote.key)
            .map(Some)
            .map_err(|m| format!("{field}.property: {m}")),
        None => Ok(Some(v.clone())),
    }
}

/// What happened to one ExternalSecret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The Secret is as the backend says (written, or already so).
    Synced {
        /// Whether it was written.
        written: bool,
    },
    /// `creationPolicy: None`, or `Merge` into a Secret that does not exist.
    Skipped(String),
    /// Failed; the existing Secret is untouched. The message names the field, never a value.
    Failed(String),
}

/// Stores defined in the same sync (not yet in the cluster when their ExternalSecrets are
/// materialised for the first time); looked up before the cluster.
#[derive(Debug, Default, Clone)]
pub struct LocalStores {
    /// `(namespace, name)` → SecretStore.
    pub namespaced: BTreeMap<(String, String), SecretStore>,
    /// name → ClusterSecretStore.
    pub cluster: BTreeMap<String, ClusterSecretStore>,
}

/// Reads, builds and writes ExternalSecrets' Secrets.
#[derive(Clone)]
pub struct Engine {
    client: kube::Client,
    http: reqwest::Client,
    aws_endpoint: Option<String>,
    tokens: TokenCache,
    /// The `Ready` message last written per store `(cluster, namespace, name)`.
    stores: Arc<std::sync::Mutex<StoreMessages>>,
    /// Backend calls so far.
    pub calls: Calls,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("calls", &self.calls)
            .finish_non_exhaustive()
    }
}

impl Engine {
    /// An engine. `aws_endpoint` overrides the Secrets Manager endpoint of every AWS store
    /// (ESO's `AWS_SECRETSMANAGER_ENDPOINT`).
    pub fn new(client: kube::Client, aws_endpoint: Option<String>) -> Self {
        Self {
            client,
            http: reqwest::Client::new(),
            aws_endpoint,
            tokens: TokenCache::default(),
            stores: Arc::default(),
            calls: Calls::default(),
        }
    }

    /// Materialises a batch: each ExternalSecret's outcome, in order; Secrets written and status
    /// reported.
    pub async fn run(&self, batch: &[ExternalSecret], local: &LocalStores) -> Vec<Outcome> {
        let started = lockstep_formats::sops::now_rfc3339();
        let built = self.build(batch, local).await;
        let mut outcomes = Vec::with_capacity(batch.len());
        let mut pairs = batch.iter().zip(built);
        loop {
            let chunk: Vec<_> = pairs
                .by_ref()
                .take(WRITE_CONCURRENCY)
                .map(|(es, b)| self.conclude(es, b, &started))
                .collect();
            if chunk.is_empty() {
                return outcomes;
            }
            outcomes.extend(futures::future::join_all(chunk).await);
        }
    }

    /// Writes one built Secret (or not, on failure) and reports the outcome.
    async fn conclude(&self, es: &ExternalSecret, built: Result<Json, String>, started: &str) -> Outcome {
        let outcome = match built {
            Err(m) => Outcome::Failed(m),
            Ok(secret) => self.write(es, secret).await,
        };
        self.report(es, &outcome, started).await;
        outcome
    }

    /// Fetches and builds the Secret of every ExternalSecret in the batch (no writes).
    pub async fn build(&self, batch: &[ExternalSecret], local: &LocalStores) -> Vec<Result<Json, String>> {
        let mut backends: HashMap<BackendKey, Result<Arc<Backend>, String>> = HashMap::new();
        let mut planned: Vec<Result<Vec<(BackendKey, Item<'_>)>, String>> = Vec::new();
        for es in batch {
            let ns = es.metadata.namespace.clone().unwrap_or_default();
            let items = match plan::items(es) {
                Ok(i) => i,
                Err(m) => {
                    planned.push(Err(m));
                    continue;
                }
            };
            let mut with_keys = Vec::new();
            let mut failed = None;
            for item in items {
                let (store, store_field) = match &item {
                    Item::Value {
                        store, store_field, ..
                    }
                    | Item::Extract {
                        store, store_field, ..
                    }
                    | Item::Find {
                        store, store_field, ..
                    } => (store.clone(), store_field.clone()),
                };
                match self.backend(&mut backends, &store, &ns, local).await {
                    Ok(key) => with_keys.push((key, item)),
                    Err(m) => {
                        failed = Some(format!("{store_field}: {m}"));
                        break;
                    }
                }
            }
            planned.push(match failed {
                Some(m) => Err(m),
                None => Ok(with_keys),
            });
        }
        // Distinct reads per backend.
        let mut reads: BTreeMap<BackendKey, BTreeSet<(String, Option<String>)>> = BTreeMap::new();
        for (key, item) in planned.iter().flatten().flatten() {
            if let Item::Value { remote, .. } | Item::Extract { remote, .. } = item {
                reads
                    .entry(key.clone())
                    .or_default()
                    .insert((remote.key.clone(), remote.version.clone()));
            }
        }
        let mut fetched: HashMap<(BackendKey, String, Option<String>), Fetched> = HashMap::new();
        let jobs = reads.into_iter().filter_map(|(key, set)| {
            let backend = backends.get(&key)?.as_ref().ok()?.clone();
            Some(async move {
                let list: Vec<(String, Option<String>)> = set.into_iter().collect();
                let results = backend.read_many(&list, &self.calls).await;
                (key, list, results)
            })
        });
        for (key, list, results) in futures::future::join_all(jobs).await {
            for ((k, v), r) in list.into_iter().zip(results) {
                fetched.insert((key.clone(), k, v), r);
            }
        }
        let mut finds: Finds = HashMap::new();
        let mut out = Vec::with_capacity(batch.len());
        for (es, p) in batch.iter().zip(planned) {
            let r = match p {
                Err(m) => Err(m),
                Ok(items) => self.assemble(es, items, &backends, &fetched, &mut finds).await,
            };
            out.push(r);
        }
        out
    }

    async fn assemble(
        &self,
        es: &ExternalSecret,
        items: Vec<(BackendKey, Item<'_>)>,
        backends: &HashMap<BackendKey, Result<Arc<Backend>, String>>,
        fetched: &HashMap<(BackendKey, String, Option<String>), Fetched>,
        finds: &mut Finds,
    ) -> Result<Json, String> {
        let mut data = Data::new();
        let mut missing = Vec::new();
        for (key, item) in items {
            match item {
                Item::Value {
                    field,
                    secret_key,
                    remote,
                    ..
                } => {
                    let Some(v) = selected(fetched, &key, remote, &field)? else {
                        missing.push(format!("{field}: secret {} not found", remote.key));
                        continue;
                    };
                    let v = values::decode(remote.decoding_strategy.as_deref(), v, &field)?;
                    if remote.null_byte_policy.as_deref() == Some("Fail") && v.contains(&0) {
                        return Err(format!("{field}: the value has a NUL byte (nullBytePolicy Fail)"));
                    }
                    data.insert(secret_key.to_owned(), v);
                }
                Item::Extract { field, remote, .. } => {
                    let Some(v) = selected(fetched, &key, remote, &field)? else {
                        missing.push(format!("{field}: secret {} not found", remote.key));
                        continue;
                    };
                    let entries =
                        values::object_entries(&v, &remote.key).map_err(|m| format!("{field}: {m}"))?;
                    plan::merge_from(
                        &mut data,
                        entries,
                        remote.conversion_strategy.as_deref(),
                        remote.decoding_strategy.as_deref(),
                        &field,
                    )?;
                }
                Item::Find { field, find, .. } => {
                    let id = serde_json::to_string(find).unwrap_or_default();
                    if let std::collections::hash_map::Entry::Vacant(slot) =
                        finds.entry((key.clone(), id.clone()))
                    {
                        slot.insert(match backends.get(&key) {
                            Some(Ok(b)) => self.find(b, find).await,
                            _ => Err("store unavailable".into()),
                        });
                    }
                    let entries = match finds.get(&(key, id)) {
                        Some(Ok(e)) => e.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
                        Some(Err(m)) => return Err(format!("{field}: {m}")),
                        None => Vec::new(),
                    };
                    plan::merge_from(
                        &mut data,
                        entries,
                        find.conversion_strategy.as_deref(),
                        find.decoding_strategy.as_deref(),
                        &field,
                    )?;
                }
            }
        }
        if !missing.is_empty() && (plan::deletion_policy(es) == "Retain" || data.is_empty()) {
            return Err(missing.join("; "));
        }
        plan::secret(es, &data)
    }

    async fn find(
        &self,
        backend: &Backend,
        find: &super::api::Find,
    ) -> Result<Vec<(String, values::Bytes)>, String> {
        let re = find
            .name
            .as_ref()
            .map(|n| regex::Regex::new(&n.regexp).map_err(|e| format!("name.regexp: {e}")))
            .transpose()?;
        match backend {
            Backend::Aws(a) => {
                a.find(find.path.as_deref(), re.as_ref(), &find.tags, &self.calls)
                    .await
            }
            Backend::Vault(_) => Err("find is not supported for Vault stores yet; use extract".into()),
            Backend::Esc(_) => Err("getting all secrets is not supported by Pulumi ESC".into()),
        }
    }

    /// Resolves a store for an ExternalSecret in `ns` into a backend (cached per batch).
    async fn backend(
        &self,
        cache: &mut HashMap<BackendKey, Result<Arc<Backend>, String>>,
        store: &StoreRef,
        ns: &str,
        local: &LocalStores,
    ) -> Result<BackendKey, String> {
        let cluster = store.is_cluster();
        let kind = if cluster {
            "ClusterSecretStore"
        } else {
            "SecretStore"
        };
        let key: BackendKey = (
            kind.to_owned(),
            if cluster { String::new() } else { ns.to_owned() },
            store.name.clone(),
            ns.to_owned(),
        );
        if !cache.contains_key(&key) {
            let r = self.make_backend(store, ns, local).await.map(Arc::new);
            cache.insert(key.clone(), r);
        }
        match &cache[&key] {
            Ok(_) => Ok(key),
            Err(m) => Err(m.clone()),
        }
    }

    async fn make_backend(&self, store: &StoreRef, ns: &str, local: &LocalStores) -> Result<Backend, String> {
        let (provider, creds_ns, is_cluster) = if store.is_cluster() {
            let css = match local.cluster.get(&store.name) {
                Some(s) => s.clone(),
                None => Api::<ClusterSecretStore>::all(self.client.clone())
                    .get_opt(&store.name)
                    .await
                    .map_err(|e| format!("reading ClusterSecretStore {}: {e}", store.name))?
                    .ok_or_else(|| format!("ClusterSecretStore {:?} does not exist", store.name))?,
            };
            let labels = Api::<Namespace>::all(self.client.clone())
                .get_opt(ns)
                .await
                .ok()
                .flatten()
                .and_then(|n| n.metadata.labels)
                .unwrap_or_default();
            if !plan::namespace_allowed(&css.spec.store.conditions, ns, &labels) {
                return Err(format!(
                    "using cluster store {:?} is not allowed from namespace {ns:?}: denied by spec.conditions",
                    store.name
                ));
            }
            (css.spec.store.provider, ns.to_owned(), true)
        } else {
            let ss = match local.namespaced.get(&(ns.to_owned(), store.name.clone())) {
                Some(s) => s.clone(),
                None => Api::<SecretStore>::namespaced(self.client.clone(), ns)
                    .get_opt(&store.name)
                    .await
                    .map_err(|e| format!("reading SecretStore {ns}/{}: {e}", store.name))?
                    .ok_or_else(|| {
                        format!("SecretStore {:?} does not exist in namespace {ns:?}", store.name)
                    })?,
            };
            (ss.spec.provider, ns.to_owned(), false)
        };
        let what = format!(
            "{} {:?}",
            if is_cluster {
                "ClusterSecretStore"
            } else {
                "SecretStore"
            },
            store.name
        );
        let made = self.provider(&provider, &creds_ns, is_cluster).await;
        self.report_store(is_cluster, ns, &store.name, made.as_ref().err())
            .await;
        made.map_err(|m| format!("{what} is not ready: {m}"))
    }

    /// Writes a store's `Ready` condition as ESO does (`Valid`, or `InvalidProviderConfig` with
    /// the reason), when it differs from what this engine last wrote.
    async fn report_store(&self, cluster: bool, ns: &str, name: &str, error: Option<&String>) {
        let key = (cluster, if cluster { "" } else { ns }.to_owned(), name.to_owned());
        let (status, reason, message) = match error {
            None => ("True", "Valid", "store validated".to_owned()),
            Some(m) => ("False", "InvalidProviderConfig", m.clone()),
        };
        {
            let mut last = self
                .stores
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if last.get(&key) == Some(&message) {
                return;
            }
            last.insert(key, message.clone());
        }
        let patch = Patch::Merge(json!({ "status": {
            "conditions": [{ "type": "Ready", "status": status, "reason": reason, "message": message,
                "lastTransitionTime": lockstep_formats::sops::now_rfc3339() }],
            "capabilities": "ReadOnly" } }));
        let pp = PatchParams::default();
        let written = if cluster {
            Api::<ClusterSecretStore>::all(self.client.clone())
                .patch_status(name, &pp, &patch)
                .await
                .map(drop)
        } else {
            Api::<SecretStore>::namespaced(self.client.clone(), ns)
                .patch_status(name, &pp, &patch)
                .await
                .map(drop)
        };
        if let Err(e) = written {
            tracing::debug!(store = name, namespace = ns, error = %e, "could not write store status");
        }
        if let Some(m) = error {
            tracing::warn!(store = name, namespace = ns, message = %m, "store not ready");
        }
    }

    async fn provider(&self, p: &Provider, ns: &str, cluster: bool) -> Result<Backend, String> {
        if let Some(a) = &p.aws {
            if a.service != "SecretsManager" {
                return Err(format!(
                    "spec.provider.aws.service {:?}: only SecretsManager is supported",
                    a.service
                ));
            }
            if a.role.is_some() {
                return Err("spec.provider.aws.role: assuming a role is not supported yet".into());
            }
            let keys = match a.auth.as_ref() {
                Some(auth) if auth.jwt.is_some() => {
                    return Err("spec.provider.aws.auth.jwt is not supported yet; use the agent's own IRSA role (the default chain) or secretRef".into());
                }
                Some(auth) => match &auth.secret_ref {
                    Some(r) => Some(super::aws::StaticKeys {
                        access_key_id: self
                            .secret_value(&r.access_key_id_secret_ref, ns, cluster)
                            .await?,
                        secret_access_key: self
                            .secret_value(&r.secret_access_key_secret_ref, ns, cluster)
                            .await?,
                        session_token: match &r.session_token_secret_ref {
                            Some(t) => Some(self.secret_value(t, ns, cluster).await?),
                            None => None,
                        },
                    }),
                    None => None,
                },
                None => None,
            };
            let endpoint = self
                .aws_endpoint
                .clone()
                .or_else(|| std::env::var("AWS_SECRETSMANAGER_ENDPOINT").ok());
            return Ok(Backend::Aws(
                Aws::new(&a.region, a.prefix.as_deref(), keys, endpoint.as_deref()).await,
            ));
        }
        if let Some(v) = p.vault.as_ref().or(p.open_bao.as_ref()) {
            let auth = &v.auth;
            let login = if let Some(t) = &auth.token_secret_ref {
                Login::Token(self.secret_value(t, ns, cluster).await?)
            } else if let Some(a) = &auth.app_role {
                let role_id = match (&a.role_id, &a.role_ref) {
                    (Some(r), _) => Zeroizing::new(r.clone()),
                    (None, Some(r)) => self.secret_value(r, ns, cluster).await?,
                    (None, None) => {
                        return Err("spec.provider.vault.auth.appRole: roleId or roleRef is required".into());
                    }
                };
                Login::AppRole {
                    mount: a.path.clone().unwrap_or_else(|| "approle".into()),
                    role_id,
                    secret_id: self.secret_value(&a.secret_ref, ns, cluster).await?,
                }
            } else if let Some(k) = &auth.kubernetes {
                let jwt = match (&k.service_account_ref, &k.secret_ref) {
                    (Some(sa), _) => {
                        let sa_ns = if cluster {
                            sa.namespace.clone().unwrap_or_else(|| ns.to_owned())
                        } else {
                            ns.to_owned()
                        };
                        self.service_account_token(&sa.name, &sa_ns, &sa.audiences)
                            .await?
                    }
                    (None, Some(r)) => {
                        let mut r = r.clone();
                        if r.key.is_empty() {
                            r.key = "token".into();
                        }
                        self.secret_value(&r, ns, cluster).await?
                    }
                    (None, None) => {
                        // The agent's own token, as ESO uses its pod's.
                        Zeroizing::new(
                            std::fs::read_to_string("/var/run/secrets/kubernetes.io/serviceaccount/token")
                                .map_err(|_| "spec.provider.vault.auth.kubernetes: no serviceAccountRef or secretRef, and the agent has no service-account token".to_owned())?,
                        )
                    }
                };
                Login::Kubernetes {
                    mount: k.mount_path.clone().unwrap_or_else(|| "kubernetes".into()),
                    role: k.role.clone(),
                    jwt,
                }
            } else if let Some(other) = auth.other.keys().next() {
                return Err(format!(
                    "spec.provider.vault.auth.{other} is not supported yet (supported: tokenSecretRef, appRole, kubernetes)"
                ));
            } else {
                return Err("spec.provider.vault.auth: one method is required".into());
            };
            let ca = match (&v.ca_bundle, &v.ca_provider) {
                (Some(b), _) => {
                    use base64::Engine as _;
                    Some(
                        base64::engine::general_purpose::STANDARD
                            .decode(b.trim())
                            .map_err(|_| "spec.provider.vault.caBundle is not base64".to_owned())?,
                    )
                }
                (None, Some(c)) if c.type_ == "Secret" => Some(
                    self.secret_value(
                        &SecretKeySelector {
                            name: c.name.clone(),
                            key: c.key.clone(),
                            namespace: c.namespace.clone(),
                        },
                        ns,
                        cluster,
                    )
                    .await?
                    .as_bytes()
                    .to_vec(),
                ),
                (None, Some(c)) => {
                    let c_ns = if cluster {
                        c.namespace.clone().unwrap_or_else(|| ns.to_owned())
                    } else {
                        ns.to_owned()
                    };
                    let cm =
                        Api::<k8s_openapi::api::core::v1::ConfigMap>::namespaced(self.client.clone(), &c_ns)
                            .get(&c.name)
                            .await
                            .map_err(|e| format!("caProvider ConfigMap {c_ns}/{}: {e}", c.name))?;
                    Some(
                        cm.data
                            .and_then(|d| d.get(&c.key).cloned())
                            .ok_or_else(|| {
                                format!("caProvider ConfigMap {c_ns}/{} has no key {:?}", c.name, c.key)
                            })?
                            .into_bytes(),
                    )
                }
                (None, None) => None,
            };
            return Vault::new(
                &v.server,
                v.path.as_deref(),
                v.version.as_deref(),
                v.namespace.as_deref(),
                auth.namespace.as_deref(),
                login,
                ca.as_deref(),
                self.tokens.clone(),
            )
            .map(Backend::Vault)
            .map_err(|m| format!("spec.provider.vault: {m}"));
        }
        if let Some(pu) = &p.pulumi {
            let r = pu
                .auth
                .as_ref()
                .and_then(|a| a.access_token.as_ref())
                .or(pu.access_token.as_ref())
                .ok_or("spec.provider.pulumi: auth.accessToken.secretRef is required")?;
            let token = self.secret_value(&r.secret_ref, ns, cluster).await?;
            return Ok(Backend::Esc(Esc::new(
                self.http.clone(),
                pu.api_url.as_deref(),
                &pu.organization,
                &pu.project,
                &pu.environment,
                token,
            )));
        }
        match p.other.keys().next() {
            Some(name) => Err(format!(
                "spec.provider.{name} is not supported (supported: aws, vault, openBao, pulumi)"
            )),
            None => Err("spec.provider: no provider".into()),
        }
    }

    /// A Secret key; a namespace in the selector counts only for ClusterSecretStores.
    async fn secret_value(
        &self,
        r: &SecretKeySelector,
        ns: &str,
        cluster: bool,
    ) -> Result<Zeroizing<String>, String> {
        let ns = match (&r.namespace, cluster) {
            (Some(n), true) => n.clone(),
            _ => ns.to_owned(),
        };
        let s = Api::<Secret>::namespaced(self.client.clone(), &ns)
            .get_opt(&r.name)
            .await
            .map_err(|e| format!("reading secret {ns}/{}: {e}", r.name))?
            .ok_or_else(|| format!("secret {ns}/{} does not exist", r.name))?;
        let mut data = s.data.unwrap_or_default();
        let v = data
            .remove(&r.key)
            .ok_or_else(|| format!("secret {ns}/{} has no key {:?}", r.name, r.key))?;
        data.values_mut()
            .for_each(|v| zeroize::Zeroize::zeroize(&mut v.0));
        String::from_utf8(v.0)
            .map(|s| Zeroizing::new(s.trim_end_matches(['\n', '\r']).to_owned()))
            .map_err(|e| {
                let mut b = e.into_bytes();
                zeroize::Zeroize::zeroize(&mut b);
                format!("secret {ns}/{} key {:?} is not UTF-8 text", r.name, r.key)
            })
    }

    /// A short-lived token for a ServiceAccount (TokenRequest).
    async fn service_account_token(
        &self,
        name: &str,
        ns: &str,
        audiences: &[String],
    ) -> Result<Zeroizing<String>, String> {
        let api: Api<k8s_openapi::api::core::v1::ServiceAccount> = Api::namespaced(self.client.clone(), ns);
        let req = k8s_openapi::api::authentication::v1::TokenRequest {
            spec: Some(k8s_openapi::api::authentication::v1::TokenRequestSpec {
                audiences: Some(audiences.to_vec()),
                expiration_seconds: Some(600),
                ..Default::default()
            }),
            ..Default::default()
        };
        let resp = api
            .create_token_request(name, &Default::default(), &req)
            .await
            .map_err(|e| format!("a token for service account {ns}/{name}: {e}"))?;
        resp.status
            .and_then(|s| s.token)
            .map(Zeroizing::new)
            .ok_or_else(|| format!("a token for service account {ns}/{name}: empty response"))
    }

    /// Writes one Secret as the creation policy says; nothing when unchanged.
    async fn write(&self, es: &ExternalSecret, secret: Json) -> Outcome {
        let ns = es.metadata.namespace.clone().unwrap_or_default();
        let name = plan::target_name(es);
        let api: Api<Secret> = Api::namespaced(self.client.clone(), &ns);
        let policy = plan::creation_policy(es);
        if policy == "None" {
            return Outcome::Skipped("creationPolicy None: no Secret is written".into());
        }
        let live = match api.get_opt(&name).await {
            Ok(l) => l,
            Err(e) => return Outcome::Failed(format!("reading Secret {ns}/{name}: {e}")),
        };
        if let Some(l) = &live {
            // Another ExternalSecret's Secret is not taken over.
            let foreign = l.metadata.owner_references.iter().flatten().any(|o| {
                o.kind == "ExternalSecret"
                    && Some(&o.uid) != es.metadata.uid.as_ref()
                    && o.controller == Some(true)
            });
            if foreign {
                return Outcome::Failed(format!("target Secret {name} is owned by another ExternalSecret"));
            }
        }
        let want_hash = secret.pointer(&format!(
            "/metadata/annotations/{}",
            plan::DATA_HASH_ANNOTATION.replace('/', "~1")
        ));
        if let Some(l) = &live {
            let data: BTreeMap<String, values::Bytes> = l
                .data
                .iter()
                .flatten()
                .map(|(k, v)| (k.clone(), Zeroizing::new(v.0.clone())))
                .collect();
            let same_data = want_hash.and_then(Json::as_str) == Some(values::data_hash(&data).as_str());
            let annotated = l
                .metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(plan::DATA_HASH_ANNOTATION))
                .map(String::as_str)
                == want_hash.and_then(Json::as_str);
            if same_data && annotated {
                return Outcome::Synced { written: false };
            }
            if l.immutable == Some(true) {
                return Outcome::Failed("could not update secret, target is immutable".into());
            }
        }
        let body = match (policy, live.is_some()) {
            ("Merge", false) => {
                return Outcome::Skipped("secret will not be created due to CreationPolicy=Merge".into());
            }
            ("Merge", true) | ("CreateOrMerge", true) => json!({
                "apiVersion": "v1", "kind": "Secret",
                "metadata": { "name": name, "namespace": ns,
                    "annotations": secret["metadata"]["annotations"], "labels": { plan::MANAGED_LABEL: "true" } },
                "data": secret["data"],
            }),
            _ => secret,
        };
        let manager = format!(
            "{FIELD_MANAGER}/{}",
            es.metadata.name.as_deref().unwrap_or_default()
        );
        let manager: String = manager.chars().take(128).collect();
        match api
            .patch(&name, &PatchParams::apply(&manager).force(), &Patch::Apply(&body))
            .await
        {
            Ok(_) => Outcome::Synced { written: true },
            Err(kube::Error::Api(s)) => Outcome::Failed(format!(
                "could not update secret {name}: {} ({})",
                s.message, s.code
            )),
            Err(e) => Outcome::Failed(format!("could not update secret {name}: {e}")),
        }
    }

    /// The ExternalSecret's status: `Ready` with `SecretSynced`/`SecretSyncedError`,
    /// `refreshTime` (when the successful refresh started), `syncedResourceVersion`, `binding`.
    async fn report(&self, es: &ExternalSecret, outcome: &Outcome, started: &str) {
        let ns = es.metadata.namespace.clone().unwrap_or_default();
        let Some(name) = es.metadata.name.clone() else {
            return;
        };
        let (status, reason, message) = match outcome {
            Outcome::Synced { .. } => ("True", "SecretSynced", "secret synced".to_owned()),
            Outcome::Skipped(m) if m.contains("Merge") => ("False", "SecretMissing", m.clone()),
            Outcome::Skipped(m) => ("True", "SecretSynced", m.clone()),
            Outcome::Failed(m) => ("False", "SecretSyncedError", m.clone()),
        };
        let prev = es
            .status
            .as_ref()
            .map(|s| s.conditions.clone())
            .unwrap_or_default();
        let last = prev
            .iter()
            .find(|c| c.type_ == "Ready" && c.status == status && c.reason == reason)
            .map(|c| c.last_transition_time.clone())
            .unwrap_or_else(|| started.to_owned());
        let mut st = json!({
            "conditions": [{ "type": "Ready", "status": status, "reason": reason, "message": message,
                "lastTransitionTime": last, "observedGeneration": es.metadata.generation }],
            "binding": { "name": plan::target_name(es) },
        });
        if status == "True" {
            st["refreshTime"] = started.into();
            st["syncedResourceVersion"] = plan::resource_version(es).into();
        }
        let api: Api<ExternalSecret> = Api::namespaced(self.client.clone(), &ns);
        if let Err(e) = api
            .patch_status(
                &name,
                &PatchParams::default(),
                &Patch::Merge(json!({ "status": st })),
            )
            .await
        {
            tracing::warn!(externalsecret = %format!("{ns}/{name}"), error = %e, "could not write status");
        }
        match outcome {
            Outcome::Failed(m) => {
                tracing::warn!(externalsecret = %format!("{ns}/{name}"), reason, message = %m, "externalsecret failed")
            }
            _ => tracing::debug!(externalsecret = %format!("{ns}/{name}"), reason, "externalsecret synced"),
        }
    }
}
