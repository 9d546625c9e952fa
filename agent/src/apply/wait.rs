//! Waits and health reads: CRDs established before the next step, a step's objects healthy
//! (kstatus, [`super::health`]) before the next wave, and the live health of a whole inventory
//! for the `Healthy` condition.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DynamicObject};
use kube::discovery::{ApiResource, Scope};

use super::health::{self, Health, Status};
use super::{Error, Interrupt, dynamic_api, kube_err};
use crate::api::OWNER_LABEL;
use crate::plan::{Inventory, ObjectId, Stage};

/// How often a health wait looks again.
const HEALTH_POLL: Duration = Duration::from_millis(500);
/// Bound on waiting for CRDs to be established.
const CRD_WAIT: Duration = Duration::from_secs(60);
/// Above this many objects of one kind, their health is read with one LIST (by the Sync's
/// label) instead of a GET each.
const LIST_ABOVE: usize = 4;

/// Waits until every CRD named is established (at most a minute each).
pub async fn crds_established(client: &kube::Client, names: &[String]) -> Result<(), Error> {
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    for n in names {
        let cond = kube::runtime::wait::conditions::is_crd_established();
        tokio::time::timeout(
            CRD_WAIT,
            kube::runtime::wait::await_condition(api.clone(), n, cond),
        )
        .await
        .map_err(|_| Error::CrdNotEstablished {
            name: n.clone(),
            after: CRD_WAIT,
        })?
        .map_err(|source| Error::CrdWait {
            name: n.clone(),
            source,
        })?;
    }
    Ok(())
}

/// Polls `objects` until all are `Current`; fails at once when one has `Failed`, at the
/// timeout, or when `interrupt` fires (a new revision must not wait behind an old one's
/// rollout), naming each object that is not `Current`.
pub async fn healthy(
    client: &kube::Client,
    owner: &str,
    (stage, wave): (Stage, i64),
    objects: &[(ApiResource, Scope, ObjectId)],
    timeout: Duration,
    mut interrupt: Option<Interrupt>,
) -> Result<(), Error> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let all = health_of(client, owner, objects).await?;
        let pending: Vec<_> = all.iter().filter(|(_, h)| h.status != Status::Current).collect();
        if pending.is_empty() {
            return Ok(());
        }
        let failed = pending.iter().any(|(_, h)| h.status == Status::Failed);
        if failed || tokio::time::Instant::now() >= deadline {
            return Err(Error::Unhealthy {
                stage,
                wave,
                objects: health::describe(pending.iter().map(|(id, h)| (id, h))),
            });
        }
        if let Some(reason) = pause(&mut interrupt).await {
            return Err(Error::Canceled { stage, wave, reason });
        }
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

/// The live health of `objects` ([`health::of`]), reading each kind once: a GET per object for
/// a few, else one LIST of the kind's objects labelled for `owner`. A missing object is
/// `NotFound`.
pub async fn health_of(
    client: &kube::Client,
    owner: &str,
    objects: &[(ApiResource, Scope, ObjectId)],
) -> Result<Vec<(ObjectId, Health)>, Error> {
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
                let live = dynamic_api(client, ar, scope, &id.namespace)
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
) -> Result<Vec<(ObjectId, Health)>, Error> {
    let mut kinds: BTreeMap<String, Option<(ApiResource, Scope)>> = BTreeMap::new();
    let mut objects = Vec::new();
    let mut gone = Vec::new();
    for (id, _) in inventory.entries.values() {
        let k = format!("{}/{}", id.api_version, id.kind);
        if !kinds.contains_key(&k) {
            let resolved = match kube::discovery::pinned_kind(client, &id.gvk()).await {
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
            Health {
                status: Status::NotFound,
                message: "its kind is no longer served".into(),
            },
        )
    }));
    Ok(out)
}

/// Polls the whole inventory until every object is `Current` (before the PostSync hooks); fails
/// at once when one has `Failed`, at the timeout, or when `interrupt` fires.
pub async fn inventory_healthy(
    client: &kube::Client,
    owner: &str,
    inventory: &Inventory,
    timeout: Duration,
    mut interrupt: Option<Interrupt>,
) -> Result<(), Error> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let all = inventory_health(client, owner, inventory).await?;
        let pending: Vec<_> = all.iter().filter(|(_, h)| h.status != Status::Current).collect();
        if pending.is_empty() {
            return Ok(());
        }
        let failed = pending.iter().any(|(_, h)| h.status == Status::Failed);
        if failed || tokio::time::Instant::now() >= deadline {
            return Err(Error::NotHealthyForPostSync {
                objects: health::describe(pending.iter().map(|(id, h)| (id, h))),
            });
        }
        if let Some(reason) = pause(&mut interrupt).await {
            return Err(Error::PostSyncCanceled { reason });
        }
    }
}

/// Waits one health poll; the reason instead when `interrupt` fires first.
async fn pause(interrupt: &mut Option<Interrupt>) -> Option<String> {
    // No interrupt, or its sender gone: only the poll's sleep ends the wait.
    let cut = async {
        match interrupt.as_mut() {
            Some(rx) => {
                let reason = rx
                    .wait_for(Option::is_some)
                    .await
                    .map(|r| r.clone().unwrap_or_default())
                    .ok();
                match reason {
                    Some(r) => Some(r),
                    None => std::future::pending().await,
                }
            }
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        () = tokio::time::sleep(HEALTH_POLL) => None,
        reason = cut => reason,
    }
}
