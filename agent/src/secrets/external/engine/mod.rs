//! The batch: resolve stores and credentials, read each distinct remote reference once, build
//! the Secrets, write them (server-side apply; nothing is written for an ExternalSecret that
//! failed, so an outage keeps the existing Secret), and report in each ExternalSecret's status.

mod stores;
mod write;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use lockstep_formats::secret::SecretJson;

use super::api::{ClusterSecretStore, ExternalSecret, SecretStore};
use super::plan::{self, Data, Item};
use super::values;
use super::vault::{TokenCache, Vault};
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
    async fn conclude(
        &self,
        es: &ExternalSecret,
        built: Result<SecretJson, String>,
        started: &str,
    ) -> Outcome {
        let outcome = match built {
            Err(m) => Outcome::Failed(m),
            Ok(secret) => self.write(es, secret).await,
        };
        self.report(es, &outcome, started).await;
        outcome
    }

    /// Fetches and builds the Secret of every ExternalSecret in the batch (no writes).
    pub async fn build(
        &self,
        batch: &[ExternalSecret],
        local: &LocalStores,
    ) -> Vec<Result<SecretJson, String>> {
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
    ) -> Result<SecretJson, String> {
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
}
