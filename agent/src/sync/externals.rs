//! ExternalSecrets within a sync: the ExternalSecrets and stores a revision declares, their
//! materialisation after the secrets stage and before any workload, and the rule for failures:
//! a failed ExternalSecret is reported on itself and the sync goes on, unless a workload of
//! this revision mounts its Secret and that Secret does not exist yet; then the workloads stage
//! is not applied (and nothing is pruned).

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use serde_json::Value as Json;

use crate::errors::kube_message;
use crate::plan;
use crate::render::Manifest;
use crate::secrets::external::api::{ClusterSecretStore, ExternalSecret, GROUP, SecretStore};
use crate::secrets::external::engine::{LocalStores, Outcome};
use crate::secrets::external::{Engine, plan as es_plan};

/// Why the workloads of a revision were not applied: ExternalSecrets they need failed, or
/// could not be read back.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Blocked {
    /// A workload of the revision mounts the Secret of a failed ExternalSecret, and that Secret
    /// does not exist.
    #[error("{}; workloads not applied", .0.join("; "))]
    Failed(Vec<String>),
    /// An ExternalSecret just applied could not be read back.
    #[error("reading ExternalSecret {namespace}/{name}: {}", kube_message(.source))]
    Read {
        /// Its namespace.
        namespace: String,
        /// Its name.
        name: String,
        /// The cause.
        #[source]
        source: Box<kube::Error>,
    },
}

/// What a revision declares.
#[derive(Debug, Default)]
pub struct Externals {
    /// `(namespace, name)` of each ExternalSecret.
    external_secrets: Vec<(String, String)>,
    /// Stores from the revision (before the cluster is asked).
    local: LocalStores,
    /// `(namespace, Secret)` → the workloads that mount it.
    mounts: BTreeMap<(String, String), Vec<String>>,
}

impl Externals {
    /// Collects them from rendered manifests (namespaces resolved as the applier does).
    pub fn of(manifests: &[Manifest], target_namespace: Option<&str>) -> Self {
        let mut out = Self::default();
        let ns_of = |o: &Json| {
            target_namespace
                .map(str::to_owned)
                .or_else(|| {
                    o.pointer("/metadata/namespace")
                        .and_then(Json::as_str)
                        .map(str::to_owned)
                })
                .unwrap_or_else(|| "default".into())
        };
        for m in manifests {
            let o: &Json = &m.object;
            let kind = m.field("/kind");
            let name = o
                .pointer("/metadata/name")
                .and_then(Json::as_str)
                .unwrap_or_default()
                .to_owned();
            match (plan::group_of(m.field("/apiVersion")), kind) {
                (GROUP, "ExternalSecret") => out.external_secrets.push((ns_of(o), name)),
                (GROUP, "SecretStore") => {
                    if let Ok(mut s) = serde_json::from_value::<SecretStore>(o.clone()) {
                        s.metadata.namespace = Some(ns_of(o));
                        out.local.namespaced.insert((ns_of(o), name), s);
                    }
                }
                (GROUP, "ClusterSecretStore") => {
                    if let Ok(s) = serde_json::from_value::<ClusterSecretStore>(o.clone()) {
                        out.local.cluster.insert(name, s);
                    }
                }
                _ => {
                    if plan::stage(m.field("/apiVersion"), kind) == plan::Stage::Workloads {
                        for secret in plan::secret_refs(o) {
                            out.mounts
                                .entry((ns_of(o), secret))
                                .or_default()
                                .push(format!("{kind} {name}"));
                        }
                    }
                }
            }
        }
        out
    }

    /// Whether the revision declares no ExternalSecret.
    pub fn is_empty(&self) -> bool {
        self.external_secrets.is_empty()
    }

    /// Materialises every ExternalSecret of the revision (now applied) in one batch. Fails
    /// only when a workload of the revision mounts a Secret that a failed ExternalSecret should
    /// have made and that does not exist.
    pub async fn materialize(&self, client: &kube::Client, engine: &Engine) -> Result<(), Blocked> {
        let mut batch = Vec::new();
        for (ns, name) in &self.external_secrets {
            let api: Api<ExternalSecret> = Api::namespaced(client.clone(), ns);
            match api.get(name).await {
                Ok(es) => batch.push(es),
                Err(source) => {
                    return Err(Blocked::Read {
                        namespace: ns.clone(),
                        name: name.clone(),
                        source: Box::new(source),
                    });
                }
            }
        }
        let outcomes = engine.run(&batch, &self.local).await;
        let mut blocking = BTreeSet::new();
        for (es, outcome) in batch.iter().zip(outcomes) {
            let Outcome::Failed(message) = outcome else {
                continue;
            };
            let ns = es.metadata.namespace.clone().unwrap_or_default();
            let target = es_plan::target_name(es);
            let Some(users) = self.mounts.get(&(ns.clone(), target.clone())) else {
                continue;
            };
            let exists = Api::<Secret>::namespaced(client.clone(), &ns)
                .get_metadata_opt(&target)
                .await
                .ok()
                .flatten()
                .is_some();
            if !exists {
                blocking.insert(format!(
                    "ExternalSecret {ns}/{} failed ({message}); {} mount(s) its Secret {target}, which does not exist",
                    es.metadata.name.as_deref().unwrap_or_default(),
                    users.join(", ")
                ));
            }
        }
        if blocking.is_empty() {
            Ok(())
        } else {
            Err(Blocked::Failed(blocking.into_iter().collect()))
        }
    }
}
