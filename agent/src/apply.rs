//! Apply and prune: server-side apply stage by stage, and within a stage wave by wave
//! (`lockstep.dev/sync-wave`, or Argo CD's `argocd.argoproj.io/sync-wave`; default 0, negative
//! first), with field manager `lockstep`, conflicts forced and bounded concurrency; CRDs are
//! waited for between steps, and with `wait` each wave's objects must be healthy
//! ([`crate::health`]) before the next is applied; unchanged objects are not written. Pruning
//! deletes only what still carries this Sync's label and is
//! not annotated `lockstep.dev/prune: disabled`.

use std::collections::BTreeMap;
use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DeleteParams, DynamicObject, GroupVersionKind, Patch, PatchParams};
use kube::discovery::{ApiCapabilities, ApiResource, Discovery, Scope};
use serde_json::Value as Json;

use crate::plan::{self, Inventory, OWNER_LABEL, ObjectId, PRUNE_ANNOTATION, Stage};
use crate::render::Manifest;

/// The field manager of every write.
pub const FIELD_MANAGER: &str = "lockstep";
/// Writes in flight at once within a stage.
const CONCURRENCY: usize = 8;
/// How often a health wait looks again.
const HEALTH_POLL: Duration = Duration::from_millis(500);
/// Bound on waiting for CRDs to be established.
const CRD_WAIT: Duration = Duration::from_secs(60);

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
    /// ExternalSecrets failed that workloads of this sync mount (nothing later was applied).
    #[error("{0}")]
    External(String),
    /// The API server refused or failed a request.
    #[error("{what}: {message}")]
    Kube {
        /// Object or action.
        what: String,
        /// The server's message (never an object's content).
        message: String,
    },
}

fn kube_err(what: impl Into<String>) -> impl FnOnce(kube::Error) -> Error {
    let what = what.into();
    move |e| Error::Kube {
        what,
        message: match e {
            kube::Error::Api(s) => format!("{} ({})", s.message, s.code),
            other => other.to_string(),
        },
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
}

/// The annotations that set a wave, ours first.
pub const WAVE_ANNOTATIONS: [&str; 2] = ["lockstep.dev/sync-wave", "argocd.argoproj.io/sync-wave"];

/// The wave of a manifest (default 0), or an error naming the file and annotation.
pub fn wave(m: &Manifest) -> Result<i64, Error> {
    for annotation in WAVE_ANNOTATIONS {
        if let Some(v) = m
            .object
            .pointer("/metadata/annotations")
            .and_then(|a| a.get(annotation))
        {
            let text = v.as_str().map(str::trim).unwrap_or_default();
            return text.parse().map_err(|_| Error::Wave {
                origin: m.origin.clone(),
                annotation,
                value: v.as_str().map_or_else(|| v.to_string(), str::to_owned),
            });
        }
    }
    Ok(0)
}

/// Manifests grouped by (stage, wave), in apply order.
pub fn steps(manifests: &[Manifest]) -> Result<BTreeMap<(Stage, i64), Vec<&Manifest>>, Error> {
    let mut by_step: BTreeMap<(Stage, i64), Vec<&Manifest>> = BTreeMap::new();
    for m in manifests {
        let av = m
            .object
            .get("apiVersion")
            .and_then(Json::as_str)
            .unwrap_or_default();
        let kind = m.object.get("kind").and_then(Json::as_str).unwrap_or_default();
        by_step
            .entry((plan::stage(av, kind), wave(m)?))
            .or_default()
            .push(m);
    }
    Ok(by_step)
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
}

/// Cuts a health wait short: holds `Some(reason)` once a new revision, a changed spec or a
/// shutdown makes the wait pointless.
pub type Interrupt = tokio::sync::watch::Receiver<Option<String>>;

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
        })
    }

    fn resolve(&self, o: &Json, origin: &str) -> Result<(ApiResource, ApiCapabilities), Error> {
        let api_version = o.get("apiVersion").and_then(Json::as_str).unwrap_or_default();
        let kind = o.get("kind").and_then(Json::as_str).unwrap_or_default();
        let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version));
        self.discovery
            .resolve_gvk(&GroupVersionKind::gvk(group, version, kind))
            .ok_or_else(|| Error::UnknownKind {
                origin: origin.to_owned(),
                api_version: api_version.to_owned(),
                kind: kind.to_owned(),
            })
    }

    /// Completes an object for applying: namespace per scope (within [`Applier::tenant`]), the
    /// owner label.
    fn prepare(&self, m: &Manifest) -> Result<(ApiResource, ApiCapabilities, Json), Error> {
        let (ar, caps) = self.resolve(&m.object, &m.origin)?;
        let mut o = m.object.clone();
        let out_of_scope = |reason: String| {
            let s = |p: &str| m.object.pointer(p).and_then(Json::as_str).unwrap_or_default();
            Error::OutOfScope {
                origin: m.origin.clone(),
                object: format!("{} {}", s("/kind"), s("/metadata/name")),
                reason,
            }
        };
        let meta = o.get_mut("metadata").and_then(Json::as_object_mut);
        if let Some(meta) = meta {
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
        Ok((ar, caps, o))
    }

    /// Checks, before anything is applied, that every object whose kind the cluster serves stays
    /// within [`Applier::tenant`] (kinds a CRD of this revision defines are checked when
    /// applied, after that CRD).
    pub fn check_scope(&self, manifests: &[Manifest]) -> Result<(), Error> {
        if self.tenant.is_none() {
            return Ok(());
        }
        for m in manifests {
            match self.prepare(m) {
                Ok(_) | Err(Error::UnknownKind { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// What applying `m` would do, by a server-side apply dry run (nothing is written): its id,
    /// the live object if there is one, and the object as the apply would leave it. An object
    /// whose namespace does not exist yet (this revision creates it) comes back as prepared.
    pub async fn dry_run(&self, m: &Manifest) -> Result<(ObjectId, Option<Json>, Json), Error> {
        let (ar, caps, o) = self.prepare(m)?;
        let id = ObjectId::of(&o).ok_or_else(|| Error::Kube {
            what: m.origin.clone(),
            message: "no id".into(),
        })?;
        let api: Api<DynamicObject> = match caps.scope {
            Scope::Namespaced => Api::namespaced_with(self.client.clone(), &id.namespace, &ar),
            Scope::Cluster => Api::all_with(self.client.clone(), &ar),
        };
        let json = |d: DynamicObject| serde_json::to_value(d).unwrap_or_default();
        let live = api
            .get_opt(&id.name)
            .await
            .map_err(kube_err(format!("reading {id}")))?
            .map(json);
        let params = PatchParams::apply(FIELD_MANAGER).force().dry_run();
        match api.patch(&id.name, &params, &Patch::Apply(&o)).await {
            Ok(after) => Ok((id, live, json(after))),
            Err(kube::Error::Api(s)) if s.code == 404 && live.is_none() => Ok((id, None, o)),
            Err(e) => Err(kube_err(format!("dry-run of {id} ({})", m.origin))(e)),
        }
    }

    /// Applies every manifest, stage by stage; returns the new inventory. Stops at the first
    /// stage with a failure (later stages are not applied).
    pub async fn apply(
        &mut self,
        manifests: &[Manifest],
        last: &Inventory,
    ) -> Result<(Inventory, Report), Error> {
        let mut inventory = Inventory::default();
        let mut report = Report::default();
        for ((stage, wave), items) in steps(manifests)? {
            self.apply_step(stage, wave, &items, last, &mut inventory, &mut report)
                .await?;
        }
        Ok((inventory, report))
    }

    /// Applies one step's manifests, adding them to `inventory` and `report`; waits for CRDs
    /// it applied to be established, and with [`Applier::wait`] for every object of the step to
    /// be healthy.
    pub async fn apply_step(
        &mut self,
        stage: Stage,
        wave: i64,
        items: &[&Manifest],
        last: &Inventory,
        inventory: &mut Inventory,
        report: &mut Report,
    ) -> Result<(), Error> {
        let mut work = Vec::new();
        let mut waited = Vec::new();
        for m in items.iter().copied() {
            let (ar, caps, o) = self.prepare(m)?;
            let id = ObjectId::of(&o).ok_or_else(|| Error::Kube {
                what: m.origin.clone(),
                message: "no id".into(),
            })?;
            if self.wait.is_some() {
                waited.push((ar.clone(), caps.scope.clone(), id.clone()));
            }
            let h = match &m.source_digest {
                Some(d) => plan::secret_hash(&o, d),
                None if m.secret => {
                    return Err(Error::Kube {
                        what: m.origin.clone(),
                        message: "secret material without a source digest".into(),
                    });
                }
                None => plan::hash(&o),
            };
            let unchanged = !self.force.contains(&id.key())
                && last.entries.get(&id.key()).is_some_and(|(_, old)| *old == h);
            inventory.entries.insert(id.key(), (id.clone(), h));
            if unchanged {
                report.unchanged += 1;
            } else {
                work.push((ar, caps, o, id, m.origin.clone()));
            }
        }
        let client = self.client.clone();
        let written: Vec<(ObjectId, String)> =
            futures::stream::iter(work.into_iter().map(|(ar, caps, o, id, origin)| {
                let client = client.clone();
                async move {
                    let api: Api<DynamicObject> = match caps.scope {
                        Scope::Namespaced => Api::namespaced_with(client, &id.namespace, &ar),
                        Scope::Cluster => Api::all_with(client, &ar),
                    };
                    let live = api
                        .patch(
                            &id.name,
                            &PatchParams::apply(FIELD_MANAGER).force(),
                            &Patch::Apply(&o),
                        )
                        .await
                        .map_err(kube_err(format!("applying {id} ({origin})")))?;
                    Ok::<_, Error>((id, live.metadata.resource_version.unwrap_or_default()))
                }
            }))
            .buffer_unordered(CONCURRENCY)
            .try_collect()
            .await?;
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
        report.stages.push((stage, wave, applied));
        if !crds.is_empty() {
            self.wait_for_crds(&crds).await?;
        }
        if let Some(timeout) = self.wait {
            self.wait_healthy(stage, wave, &waited, timeout).await?;
        }
        Ok(())
    }

    /// Polls the objects until all are `Current`; fails at once when one has `Failed`, at the
    /// timeout, or when [`Applier::interrupt`] fires (a new revision must not wait behind an old
    /// one's rollout), naming each object that is not `Current`.
    async fn wait_healthy(
        &self,
        stage: Stage,
        wave: i64,
        objects: &[(ApiResource, Scope, ObjectId)],
        timeout: Duration,
    ) -> Result<(), Error> {
        use crate::health::Status;
        let deadline = tokio::time::Instant::now() + timeout;
        let mut interrupt = self.interrupt.clone();
        loop {
            let all = health_of(&self.client, &self.owner, objects).await?;
            let pending: Vec<_> = all.iter().filter(|(_, h)| h.status != Status::Current).collect();
            if pending.is_empty() {
                return Ok(());
            }
            let failed = pending.iter().any(|(_, h)| h.status == Status::Failed);
            if failed || tokio::time::Instant::now() >= deadline {
                return Err(Error::Unhealthy {
                    stage,
                    wave,
                    objects: crate::health::describe(pending.iter().map(|(id, h)| (id, h))),
                });
            }
            let cut = async {
                match interrupt.as_mut() {
                    Some(rx) => rx
                        .wait_for(Option::is_some)
                        .await
                        .map(|r| r.clone().unwrap_or_default())
                        .ok(),
                    None => None,
                }
            };
            tokio::select! {
                () = tokio::time::sleep(HEALTH_POLL) => {}
                Some(reason) = cut => {
                    return Err(Error::Canceled { stage, wave, reason });
                }
            }
        }
    }

    async fn wait_for_crds(&mut self, names: &[String]) -> Result<(), Error> {
        let api: Api<CustomResourceDefinition> = Api::all(self.client.clone());
        for n in names {
            let cond = kube::runtime::wait::conditions::is_crd_established();
            tokio::time::timeout(
                CRD_WAIT,
                kube::runtime::wait::await_condition(api.clone(), n, cond),
            )
            .await
            .map_err(|_| Error::Kube {
                what: format!("CustomResourceDefinition {n}"),
                message: format!("not established within {} s", CRD_WAIT.as_secs()),
            })?
            .map_err(|e| Error::Kube {
                what: format!("CustomResourceDefinition {n}"),
                message: e.to_string(),
            })?;
        }
        self.discovery = Discovery::new(self.client.clone())
            .run()
            .await
            .map_err(kube_err("re-discovering the API"))?;
        Ok(())
    }

    /// Deletes the objects that left Git, when they still carry this Sync's label and are not
    /// annotated `lockstep.dev/prune: disabled`. Returns what was deleted.
    pub async fn prune(&self, ids: &[ObjectId]) -> Result<Vec<ObjectId>, Error> {
        let mut deleted = Vec::new();
        for id in ids {
            let (group, version) = id.api_version.rsplit_once('/').unwrap_or(("", &id.api_version));
            let Some((ar, caps)) = self
                .discovery
                .resolve_gvk(&GroupVersionKind::gvk(group, version, &id.kind))
            else {
                continue; // its kind is gone, and so is the object
            };
            let api: Api<DynamicObject> = match caps.scope {
                Scope::Namespaced => Api::namespaced_with(self.client.clone(), &id.namespace, &ar),
                Scope::Cluster => Api::all_with(self.client.clone(), &ar),
            };
            let Some(current) = api
                .get_opt(&id.name)
                .await
                .map_err(kube_err(format!("reading {id}")))?
            else {
                continue;
            };
            let ours = current.metadata.labels.as_ref().and_then(|l| l.get(OWNER_LABEL)) == Some(&self.owner);
            let kept = current
                .metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(PRUNE_ANNOTATION))
                .map(String::as_str)
                == Some("disabled");
            if ours && !kept {
                api.delete(&id.name, &DeleteParams::background())
                    .await
                    .map_err(kube_err(format!("pruning {id}")))?;
                deleted.push(id.clone());
            }
        }
        Ok(deleted)
    }
}

/// Whether kstatus counts an object `Current` whatever its state, so it is never read back:
/// Secrets (whose data Lockstep never reads back), ConfigMaps, CronJobs.
fn always_current(id: &ObjectId) -> bool {
    matches!(
        (id.api_version.as_str(), id.kind.as_str()),
        ("v1", "Secret" | "ConfigMap") | ("batch/v1", "CronJob")
    )
}

/// Above this many objects of one kind, their health is read with one LIST (by the Sync's
/// label) instead of a GET each.
const LIST_ABOVE: usize = 4;

/// The live health of `objects` ([`crate::health::of`]), reading each kind once: a GET per
/// object for a few, else one LIST of the kind's objects labelled for `owner`. A missing
/// object is `NotFound`.
pub async fn health_of(
    client: &kube::Client,
    owner: &str,
    objects: &[(ApiResource, Scope, ObjectId)],
) -> Result<Vec<(ObjectId, crate::health::Health)>, Error> {
    use crate::health::{self, Health, Status};
    let mut by_kind: BTreeMap<String, Vec<&(ApiResource, Scope, ObjectId)>> = BTreeMap::new();
    for o in objects.iter().filter(|(_, _, id)| !always_current(id)) {
        by_kind
            .entry(format!("{}/{}", o.0.api_version, o.0.kind))
            .or_default()
            .push(o);
    }
    let mut out: Vec<(ObjectId, Health)> = objects
        .iter()
        .filter(|(_, _, id)| always_current(id))
        .map(|(_, _, id)| {
            (
                id.clone(),
                Health {
                    status: Status::Current,
                    message: "resource is current".into(),
                },
            )
        })
        .collect();
    let missing = || Health {
        status: Status::NotFound,
        message: "not found".into(),
    };
    let health = |o: &DynamicObject| health::of(&serde_json::to_value(o).unwrap_or_default());
    for group in by_kind.values() {
        let Some((ar, _, _)) = group.first() else {
            continue;
        };
        if group.len() <= LIST_ABOVE {
            for (ar, scope, id) in group.iter().copied() {
                let api: Api<DynamicObject> = match scope {
                    Scope::Namespaced => Api::namespaced_with(client.clone(), &id.namespace, ar),
                    Scope::Cluster => Api::all_with(client.clone(), ar),
                };
                let live = api
                    .get_opt(&id.name)
                    .await
                    .map_err(kube_err(format!("reading {id}")))?;
                out.push((id.clone(), live.as_ref().map_or_else(missing, health)));
            }
        } else {
            let api: Api<DynamicObject> = Api::all_with(client.clone(), ar);
            let lp = kube::api::ListParams::default().labels(&format!("{OWNER_LABEL}={owner}"));
            let live: BTreeMap<(String, String), DynamicObject> = api
                .list(&lp)
                .await
                .map_err(kube_err(format!("listing {} {}", ar.api_version, ar.kind)))?
                .items
                .into_iter()
                .map(|o| {
                    let k = (
                        o.metadata.namespace.clone().unwrap_or_default(),
                        o.metadata.name.clone().unwrap_or_default(),
                    );
                    (k, o)
                })
                .collect();
            for (_, _, id) in group.iter().copied() {
                let h = live
                    .get(&(id.namespace.clone(), id.name.clone()))
                    .map_or_else(missing, health);
                out.push((id.clone(), h));
            }
        }
    }
    Ok(out)
}

/// The live health of a whole inventory ([`health_of`]), each kind resolved by one discovery
/// request; a kind the cluster no longer serves makes its objects `NotFound`.
pub async fn inventory_health(
    client: &kube::Client,
    owner: &str,
    inventory: &Inventory,
) -> Result<Vec<(ObjectId, crate::health::Health)>, Error> {
    let mut kinds: BTreeMap<String, Option<(ApiResource, Scope)>> = BTreeMap::new();
    let mut objects = Vec::new();
    let mut gone = Vec::new();
    for (id, _) in inventory.entries.values() {
        let k = format!("{}/{}", id.api_version, id.kind);
        if !kinds.contains_key(&k) {
            let (group, version) = id.api_version.rsplit_once('/').unwrap_or(("", &id.api_version));
            let gvk = GroupVersionKind::gvk(group, version, &id.kind);
            let resolved = match kube::discovery::pinned_kind(client, &gvk).await {
                Ok((ar, caps)) => Some((ar, caps.scope)),
                Err(kube::Error::Api(s)) if s.code == 404 => None,
                Err(e) => return Err(kube_err(format!("discovering {k}"))(e)),
            };
            kinds.insert(k.clone(), resolved);
        }
        match kinds.get(&k).and_then(Option::as_ref) {
            Some((ar, scope)) => objects.push((ar.clone(), scope.clone(), id.clone())),
            None => gone.push(id.clone()),
        }
    }
    let mut out = health_of(client, owner, &objects).await?;
    out.extend(gone.into_iter().map(|id| {
        (
            id,
            crate::health::Health {
                status: crate::health::Status::NotFound,
                message: "its kind is no longer served".into(),
            },
        )
    }));
    Ok(out)
}
