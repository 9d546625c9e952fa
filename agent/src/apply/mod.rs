//! Apply: server-side apply of one step (a wave of a stage, [`crate::plan::steps()`]) with field
//! manager `lockstep`, conflicts forced and bounded concurrency; the objects the plan finds
//! unchanged are not written. CRDs a step applies are waited for before the next step, and with
//! `wait` every object of the step must be healthy ([`wait`], [`health`]) first. `prune`
//! deletes what left Git.

pub mod health;
pub mod hooks;
mod prune;
pub mod wait;

use std::collections::BTreeMap;
use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use kube::api::{Api, DynamicObject, Patch, PatchParams};
use kube::discovery::{ApiCapabilities, ApiResource, Discovery, Scope};
use lockstep_formats::secret::{SecretJson, wipe_json};
use serde_json::Value as Json;

use crate::api::{FIELD_MANAGER, OWNER_LABEL};
use crate::errors::kube_message;
use crate::plan::{self, Inventory, ObjectId, Stage, Step};
use crate::render::Manifest;

/// Writes in flight at once within a step.
const CONCURRENCY: usize = 8;

/// Errors of apply and prune; each names the object.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An object outside the namespace its Sync is confined to (`--tenant-isolation`).
    #[error("{origin}: {object}: {reason}")]
    OutOfScope {
        /// File and document.
        origin: String,
        /// Kind and name.
        object: String,
        /// Why, and what is allowed.
        reason: String,
    },
    /// The cluster does not serve an object's kind.
    #[error("{origin}: the cluster serves no {api_version} {kind} (is its CRD in an earlier stage?)")]
    UnknownKind {
        /// File and document.
        origin: String,
        /// apiVersion.
        api_version: String,
        /// Kind.
        kind: String,
    },
    /// An object without the fields that identify it.
    #[error("{origin}: the object has no apiVersion, kind or metadata.name")]
    NoId {
        /// File and document.
        origin: String,
    },
    /// The plan refused a manifest.
    #[error(transparent)]
    Plan(#[from] plan::Error),
    /// A wave's objects did not become healthy (later waves were not applied).
    #[error("wave {wave} of the {stage:?} stage is not healthy: {objects}")]
    Unhealthy {
        /// The stage.
        stage: Stage,
        /// The wave.
        wave: i64,
        /// Each object not `Current`, with its status and why.
        objects: String,
    },
    /// The applied objects did not all become healthy, so the PostSync hooks did not run.
    #[error("the objects did not become healthy, so the PostSync hooks did not run: {objects}")]
    NotHealthyForPostSync {
        /// Each object not `Current`, with its status and why.
        objects: String,
    },
    /// The health wait before the PostSync hooks was cut short (a new revision, a changed spec,
    /// a shutdown); the hooks did not run.
    #[error("waiting for the objects to be healthy before the PostSync hooks was canceled: {reason}")]
    PostSyncCanceled {
        /// Why.
        reason: String,
    },
    /// A hook failed, or did not finish in time (nothing after it was applied).
    #[error("{hook} ({origin}): {message}")]
    Hook {
        /// Its phase, kind and name.
        hook: String,
        /// File and document.
        origin: String,
        /// What happened.
        message: String,
    },
    /// A health wait was cut short (a new revision, a changed spec, a shutdown); later waves
    /// were not applied and nothing was pruned.
    #[error("waiting for wave {wave} of the {stage:?} stage was canceled: {reason}")]
    Canceled {
        /// The stage.
        stage: Stage,
        /// The wave.
        wave: i64,
        /// Why.
        reason: String,
    },
    /// A CustomResourceDefinition applied by this sync was not established in time.
    #[error("CustomResourceDefinition {name}: not established within {} s", .after.as_secs())]
    CrdNotEstablished {
        /// Its name.
        name: String,
        /// How long it was waited for.
        after: Duration,
    },
    /// Waiting for a CustomResourceDefinition failed.
    #[error("CustomResourceDefinition {name}: {source}")]
    CrdWait {
        /// Its name.
        name: String,
        /// The cause.
        #[source]
        source: kube::runtime::wait::Error,
    },
    /// The API server refused or failed a request.
    #[error("{what}: {}", kube_message(.source))]
    Kube {
        /// Object or action.
        what: String,
        /// The client's error (never an object's content).
        #[source]
        source: Box<kube::Error>,
    },
}

/// The `map_err` of a request about `what`.
pub(crate) fn kube_err(what: impl Into<String>) -> impl FnOnce(kube::Error) -> Error {
    let what = what.into();
    move |source| Error::Kube {
        what,
        source: Box::new(source),
    }
}

/// What one apply did.
#[derive(Debug, Default)]
pub struct Report {
    /// Objects written.
    pub applied: Vec<ObjectId>,
    /// Objects skipped because their desired state did not change.
    pub unchanged: usize,
    /// The steps (stage, wave) applied, in order, with the objects written in each (for tests
    /// and events).
    pub stages: Vec<(Stage, i64, Vec<ObjectId>)>,
    /// The resourceVersion each written object has after the write, by key.
    pub versions: BTreeMap<String, String>,
    /// The hooks that ran and succeeded, in order (`PreSync hook Job migrate-x7k2p succeeded`).
    pub hooks: Vec<String>,
}

/// Cuts a health wait short: holds `Some(reason)` once a new revision, a changed spec or a
/// shutdown makes the wait pointless.
pub type Interrupt = tokio::sync::watch::Receiver<Option<String>>;

/// The API of one kind, in `namespace` when it is namespaced.
pub(crate) fn dynamic_api(
    client: &kube::Client,
    ar: &ApiResource,
    scope: &Scope,
    namespace: &str,
) -> Api<DynamicObject> {
    match scope {
        Scope::Namespaced => Api::namespaced_with(client.clone(), namespace, ar),
        Scope::Cluster => Api::all_with(client.clone(), ar),
    }
}

/// A live object as JSON that is wiped when dropped, its content moved, not copied (it may be a
/// Secret).
fn into_json(mut d: DynamicObject) -> SecretJson {
    let content = std::mem::replace(&mut d.data, Json::Object(serde_json::Map::new()));
    let mut out = SecretJson::new(serde_json::to_value(&d).unwrap_or_default());
    if let (Some(o), Json::Object(fields)) = (out.as_object_mut(), content) {
        o.extend(fields);
    }
    out
}

/// An object ready to apply: its kind's API, its id and the completed object.
struct Prepared {
    ar: ApiResource,
    scope: Scope,
    object: SecretJson,
    origin: String,
}

/// Applies objects for one Sync.
pub struct Applier {
    client: kube::Client,
    discovery: Discovery,
    owner: String,
    target_namespace: Option<String>,
    /// Wait for each step's objects to be healthy, up to this long per step.
    pub wait: Option<Duration>,
    /// Fields not applied ([`crate::api::IgnoreRule`]).
    pub ignore: Vec<crate::api::IgnoreRule>,
    /// Keys of objects to apply even when their desired state did not change (drift).
    pub force: std::collections::BTreeSet<String>,
    /// Cuts health waits short when it holds a reason.
    pub interrupt: Option<Interrupt>,
    /// The only namespace objects may go to (a tenant's Sync under `--tenant-isolation`):
    /// cluster-scoped objects and other namespaces are refused, and namespaced objects without
    /// a namespace go there instead of `default`.
    pub tenant: Option<String>,
    /// Where namespaced objects that declare none go, instead of `default` (a chart's release
    /// namespace).
    pub default_namespace: Option<String>,
}

impl Applier {
    /// An applier labelling objects with `owner` (the Sync's `namespace.name`).
    pub async fn new(
        client: kube::Client,
        owner: &str,
        target_namespace: Option<String>,
    ) -> Result<Self, Error> {
        let discovery = Discovery::new(client.clone())
            .run()
            .await
            .map_err(kube_err("discovering the API"))?;
        Ok(Self {
            client,
            discovery,
            owner: owner.to_owned(),
            target_namespace,
            wait: None,
            ignore: Vec::new(),
            force: Default::default(),
            interrupt: None,
            tenant: None,
            default_namespace: None,
        })
    }

    fn resolve(&self, m: &Manifest) -> Result<(ApiResource, ApiCapabilities), Error> {
        let id = ObjectId {
            api_version: m.field("/apiVersion").to_owned(),
            kind: m.field("/kind").to_owned(),
            namespace: String::new(),
            name: String::new(),
        };
        self.discovery
            .resolve_gvk(&id.gvk())
            .ok_or_else(|| Error::UnknownKind {
                origin: m.origin.clone(),
                api_version: id.api_version,
                kind: id.kind,
            })
    }

    /// The namespace `m` goes to (empty for a cluster-scoped or unknown kind).
    pub fn namespace_of(&self, m: &Manifest) -> String {
        self.complete(m)
            .ok()
            .and_then(|p| {
                p.object
                    .pointer("/metadata/namespace")
                    .and_then(Json::as_str)
                    .map(str::to_owned)
            })
            .unwrap_or_default()
    }

    /// Completes an object for applying: namespace per scope (within [`Applier::tenant`]), the
    /// owner label, the ignored fields removed.
    fn complete(&self, m: &Manifest) -> Result<Prepared, Error> {
        let (ar, caps) = self.resolve(m)?;
        let out_of_scope = |reason: String| Error::OutOfScope {
            origin: m.origin.clone(),
            object: format!("{} {}", m.field("/kind"), m.field("/metadata/name")),
            reason,
        };
        let mut o = m.object.clone();
        if let Some(meta) = o.get_mut("metadata").and_then(Json::as_object_mut) {
            match caps.scope {
                Scope::Namespaced => {
                    let declared = meta.get("namespace").and_then(Json::as_str).map(str::to_owned);
                    if let (Some(tenant), None, Some(declared)) =
                        (&self.tenant, &self.target_namespace, &declared)
                        && declared != tenant
                    {
                        return Err(out_of_scope(format!(
                            "metadata.namespace {declared:?}: this Sync may only apply into its own namespace {tenant:?} (tenant isolation)"
                        )));
                    }
                    let ns = self
                        .target_namespace
                        .clone()
                        .or(declared)
                        .or_else(|| self.tenant.clone())
                        .or_else(|| self.default_namespace.clone())
                        .unwrap_or_else(|| "default".into());
                    meta.insert("namespace".into(), ns.into());
                }
                Scope::Cluster => {
                    if let Some(tenant) = &self.tenant {
                        return Err(out_of_scope(format!(
                            "cluster-scoped objects are applied only by Syncs in the agent's namespace; this one is in {tenant:?} (tenant isolation)"
                        )));
                    }
                    meta.remove("namespace");
                }
            }
            let labels = meta.entry("labels").or_insert_with(|| serde_json::json!({}));
            if let Some(l) = labels.as_object_mut() {
                l.insert(OWNER_LABEL.into(), self.owner.clone().into());
            }
        }
        for rule in &self.ignore {
            rule.strip(&mut o);
        }
        Ok(Prepared {
            ar,
            scope: caps.scope,
            object: o,
            origin: m.origin.clone(),
        })
    }

    /// The id of a completed object.
    fn id_of(p: &Prepared) -> Result<ObjectId, Error> {
        ObjectId::of(&p.object).ok_or_else(|| Error::NoId {
            origin: p.origin.clone(),
        })
    }

    /// Checks, before anything is applied, that every object whose kind the cluster serves stays
    /// within [`Applier::tenant`] (kinds a CRD of this revision defines are checked when
    /// applied, after that CRD).
    pub fn check_scope(&self, manifests: &[Manifest]) -> Result<(), Error> {
        if self.tenant.is_none() {
            return Ok(());
        }
        for m in manifests {
            match self.complete(m) {
                Ok(_) | Err(Error::UnknownKind { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// What applying `m` would do, by a server-side apply dry run (nothing is written): its id,
    /// the live object if there is one, and the object as the apply would leave it. An object
    /// whose namespace does not exist yet (this revision creates it) comes back as prepared.
    pub async fn dry_run(&self, m: &Manifest) -> Result<(ObjectId, Option<SecretJson>, SecretJson), Error> {
        let p = self.complete(m)?;
        let id = Self::id_of(&p)?;
        let api = dynamic_api(&self.client, &p.ar, &p.scope, &id.namespace);
        let json = into_json;
        let live = api
            .get_opt(&id.name)
            .await
            .map_err(kube_err(format!("reading {id}")))?
            .map(json);
        let params = PatchParams::apply(FIELD_MANAGER).force().dry_run();
        match api.patch(&id.name, &params, &Patch::Apply(&*p.object)).await {
            Ok(after) => Ok((id, live, json(after))),
            Err(kube::Error::Api(s)) if s.code == 404 && live.is_none() => Ok((id, None, p.object)),
            Err(e) => Err(kube_err(format!("dry-run of {id} ({})", m.origin))(e)),
        }
    }

    /// Applies one step: completes its objects, writes those the plan finds new, changed or
    /// forced ([`plan::plan_step`]), adds all of them to `inventory` and what it did to
    /// `report`; then waits for the CRDs it applied to be established, and with
    /// [`Applier::wait`] for every object of the step to be healthy.
    pub async fn apply_step(
        &mut self,
        step: &Step<'_>,
        last: &Inventory,
        inventory: &mut Inventory,
        report: &mut Report,
    ) -> Result<(), Error> {
        let mut objects = Vec::with_capacity(step.manifests.len());
        let mut waited = Vec::new();
        for m in step.manifests.iter().copied() {
            let p = self.complete(m)?;
            let id = Self::id_of(&p)?;
            let hash = plan::desired_hash(&m.origin, &p.object, m.secret, m.source_digest.as_deref())?;
            if self.wait.is_some() {
                waited.push((p.ar.clone(), p.scope.clone(), id.clone()));
            }
            objects.push((id, hash, p));
        }
        let planned = plan::plan_step(objects, last, &self.force);
        report.unchanged += planned.unchanged;
        for (id, hash) in planned.inventory {
            inventory.entries.insert(id.key(), (id, hash));
        }
        let written = self.write(planned.write).await?;
        let mut applied = Vec::with_capacity(written.len());
        for (id, rv) in written {
            report.versions.insert(id.key(), rv);
            applied.push(id);
        }
        let crds: Vec<String> = applied
            .iter()
            .filter(|id| id.kind == "CustomResourceDefinition")
            .map(|id| id.name.clone())
            .collect();
        report.applied.extend(applied.iter().cloned());
        report.stages.push((step.stage, step.wave, applied));
        if !crds.is_empty() {
            wait::crds_established(&self.client, &crds).await?;
            self.discovery = Discovery::new(self.client.clone())
                .run()
                .await
                .map_err(kube_err("re-discovering the API"))?;
        }
        if let Some(timeout) = self.wait {
            wait::healthy(
                &self.client,
                &self.owner,
                (step.stage, step.wave),
                &waited,
                timeout,
                self.interrupt.clone(),
            )
            .await?;
        }
        Ok(())
    }

    /// Server-side applies `objects`, [`CONCURRENCY`] at a time; returns each one's
    /// resourceVersion after the write. The object the API server sends back (a Secret's values
    /// among it) is wiped at once.
    async fn write(&self, objects: Vec<(ObjectId, Prepared)>) -> Result<Vec<(ObjectId, String)>, Error> {
        let client = self.client.clone();
        futures::stream::iter(objects.into_iter().map(|(id, p)| {
            let client = client.clone();
            async move {
                let api = dynamic_api(&client, &p.ar, &p.scope, &id.namespace);
                let mut live = api
                    .patch(
                        &id.name,
                        &PatchParams::apply(FIELD_MANAGER).force(),
                        &Patch::Apply(&*p.object),
                    )
                    .await
                    .map_err(kube_err(format!("applying {id} ({})", p.origin)))?;
                wipe_json(&mut live.data);
                Ok::<_, Error>((id, live.metadata.resource_version.unwrap_or_default()))
            }
        }))
        .buffer_unordered(CONCURRENCY)
        .try_collect()
        .await
    }
}
