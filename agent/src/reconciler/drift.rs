//! Drift: the objects of every Sync's inventory are watched (metadata only, one watch per kind
//! in use, selected by the `lockstep.dev/sync` label), and a change by anyone else, or a
//! deletion, triggers that Sync's reconcile at once with the drifted objects forced through
//! server-side apply. Not by polling, and not by caching the cluster: an event is drift when the
//! newest write recorded in `managedFields` (status writes aside) is not Lockstep's, a rule that
//! needs no copy of the desired state.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex, PoisonError};

use futures::StreamExt;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ManagedFieldsEntry, ObjectMeta};
use kube::api::{Api, DynamicObject, PartialObjectMeta};
use kube::runtime::WatchStreamExt as _;
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use tokio::sync::mpsc;

use crate::api::{FIELD_MANAGER, OWNER_LABEL, Sync};
use crate::plan::{Inventory, ObjectId};

/// Whether a live object's last write was someone else's (pure): the newest `managedFields`
/// entry, status-subresource writes excluded, belongs to another manager. A tie with
/// Lockstep's own entry counts as drift (the forced apply is then a no-op), and so does an
/// untimed entry of another manager.
pub fn changed_by_others(meta: &ObjectMeta) -> bool {
    let entries: Vec<_> = meta
        .managed_fields
        .iter()
        .flatten()
        .filter(|e| e.subresource.as_deref() != Some("status"))
        .collect();
    // An entry without a time (the API server writes none for a `scale` update) may be the
    // newest: it ranks above every timed one.
    let rank = |e: &&ManagedFieldsEntry| (e.time.is_none(), e.time.clone());
    let Some(newest) = entries.iter().map(rank).max() else {
        return false;
    };
    entries
        .iter()
        .filter(|e| rank(e) == newest)
        .any(|e| e.manager.as_deref() != Some(FIELD_MANAGER))
}

/// What the tracker knows of one Sync.
#[derive(Default)]
struct Tracked {
    keys: BTreeSet<String>,
    self_heal: bool,
    /// Drifted keys since the last reconcile → the resourceVersion seen (`None`: deleted).
    drifted: BTreeMap<String, Option<String>>,
}

#[derive(Default)]
struct State {
    /// By owner label value (`namespace.name`).
    syncs: HashMap<String, Tracked>,
    /// Kinds watched, by `apiVersion/kind`.
    watching: BTreeSet<String>,
}

/// Watches inventories for drift; cheap to clone.
#[derive(Clone)]
pub struct Tracker {
    client: kube::Client,
    state: Arc<Mutex<State>>,
    /// Kinds whose watch has finished its first list.
    listed: Arc<tokio::sync::watch::Sender<BTreeSet<String>>>,
    trigger: mpsc::UnboundedSender<ObjectRef<Sync>>,
    metrics: Option<super::metrics::Metrics>,
}

impl std::fmt::Debug for Tracker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tracker").finish_non_exhaustive()
    }
}

impl Tracker {
    /// A tracker, and the stream of Syncs to reconcile because of drift.
    pub fn new(
        client: kube::Client,
        metrics: Option<super::metrics::Metrics>,
    ) -> (
        Self,
        impl futures::Stream<Item = ObjectRef<Sync>> + Send + 'static,
    ) {
        let (trigger, rx) = mpsc::unbounded_channel();
        let t = Self {
            client,
            state: Arc::default(),
            listed: Arc::new(tokio::sync::watch::channel(BTreeSet::new()).0),
            trigger,
            metrics,
        };
        (t, tokio_stream_of(rx))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Records a Sync's inventory after a successful sync, and starts watching kinds not yet
    /// watched.
    pub async fn track(&self, owner: &str, inventory: &Inventory, self_heal: bool) {
        let mut kinds = BTreeMap::new();
        {
            let mut st = self.lock();
            let t = st.syncs.entry(owner.to_owned()).or_default();
            t.keys = inventory.entries.keys().cloned().collect();
            t.self_heal = self_heal;
            for (id, _) in inventory.entries.values() {
                let k = format!("{}/{}", id.api_version, id.kind);
                if !st.watching.contains(&k) {
                    kinds.insert(k, id.gvk());
                }
            }
            let total: usize = st.syncs.values().map(|t| t.keys.len()).sum();
            if let Some(m) = &self.metrics {
                m.watched.set(i64::try_from(total).unwrap_or(i64::MAX));
            }
        }
        for (k, gvk) in kinds {
            match kube::discovery::pinned_kind(&self.client, &gvk).await {
                Ok((ar, _)) => {
                    if self.lock().watching.insert(k) {
                        tokio::spawn(self.clone().watch(ar));
                    }
                }
                Err(e) => tracing::warn!(kind = %k, error = %e, "cannot watch for drift"),
            }
        }
    }

    /// Waits until every watch started so far has finished its first list.
    pub async fn wait_listed(&self) {
        let watching = self.lock().watching.clone();
        let mut rx = self.listed.subscribe();
        let _ = rx.wait_for(|listed| watching.is_subset(listed)).await;
    }

    /// Forgets a deleted Sync.
    pub fn forget(&self, owner: &str) {
        self.lock().syncs.remove(owner);
    }

    /// The drifted objects of a Sync since the last call (key → resourceVersion seen, `None` if
    /// deleted), only those still in its inventory.
    pub fn take(&self, owner: &str) -> BTreeMap<String, Option<String>> {
        let mut st = self.lock();
        match st.syncs.get_mut(owner) {
            Some(t) => {
                let d = std::mem::take(&mut t.drifted);
                d.into_iter().filter(|(k, _)| t.keys.contains(k)).collect()
            }
            None => BTreeMap::new(),
        }
    }

    /// Puts back drift that a failed sync did not correct, so the retry forces it again.
    pub fn give_back(&self, owner: &str, drifted: BTreeMap<String, Option<String>>) {
        if let Some(t) = self.lock().syncs.get_mut(owner) {
            for (k, v) in drifted {
                t.drifted.entry(k).or_insert(v);
            }
        }
    }

    async fn watch(self, ar: kube::discovery::ApiResource) {
        let api: Api<PartialObjectMeta<DynamicObject>> = Api::all_with(self.client.clone(), &ar);
        let cfg = watcher::Config::default().labels(OWNER_LABEL);
        let mut events = std::pin::pin!(watcher::watcher(api, cfg).default_backoff());
        tracing::debug!(kind = %ar.kind, "watching for drift");
        while let Some(e) = events.next().await {
            let (meta, deleted) = match e {
                // A (re)list finds what changed while nothing watched: an agent restart.
                Ok(watcher::Event::Apply(o) | watcher::Event::InitApply(o)) => (o.metadata, false),
                Ok(watcher::Event::Delete(o)) => (o.metadata, true),
                Ok(watcher::Event::InitDone) => {
                    let kind = format!("{}/{}", ar.api_version, ar.kind);
                    self.listed.send_modify(|l| {
                        l.insert(kind);
                    });
                    continue;
                }
                Ok(watcher::Event::Init) => continue,
                Err(e) => {
                    tracing::debug!(kind = %ar.kind, error = %e, "drift watch");
                    continue;
                }
            };
            let Some(owner) = meta.labels.as_ref().and_then(|l| l.get(OWNER_LABEL)).cloned() else {
                continue;
            };
            let key = ObjectId {
                api_version: ar.api_version.clone(),
                kind: ar.kind.clone(),
                namespace: meta.namespace.clone().unwrap_or_default(),
                name: meta.name.clone().unwrap_or_default(),
            }
            .key();
            tracing::trace!(object = %key, deleted, managed = ?meta.managed_fields.iter().flatten().map(|e| (e.manager.clone(), e.time.clone(), e.subresource.clone())).collect::<Vec<_>>(), "drift watch event");
            let trigger = {
                let mut st = self.lock();
                let Some(t) = st.syncs.get_mut(&owner) else {
                    continue;
                };
                if !t.self_heal || !t.keys.contains(&key) || !(deleted || changed_by_others(&meta)) {
                    continue;
                }
                let first = t.drifted.is_empty();
                t.drifted.insert(
                    key.clone(),
                    (!deleted).then(|| meta.resource_version.clone().unwrap_or_default()),
                );
                first
            };
            tracing::info!(sync = %owner, object = %key, deleted, "drift detected");
            if trigger && let Some((ns, name)) = owner.split_once('.') {
                let _ = self.trigger.send(ObjectRef::new(name).within(ns));
            }
        }
    }
}

/// An unbounded receiver as a stream.
fn tokio_stream_of<T: Send + 'static>(
    mut rx: mpsc::UnboundedReceiver<T>,
) -> impl futures::Stream<Item = T> + Send + 'static {
    futures::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    fn entry(manager: &str, secs: i64, subresource: Option<&str>) -> ManagedFieldsEntry {
        ManagedFieldsEntry {
            manager: Some(manager.into()),
            time: Some(Time(
                k8s_openapi::jiff::Timestamp::from_second(1_700_000_000 + secs).unwrap(),
            )),
            subresource: subresource.map(Into::into),
            ..Default::default()
        }
    }

    fn meta(entries: Vec<ManagedFieldsEntry>) -> ObjectMeta {
        ObjectMeta {
            managed_fields: Some(entries),
            ..Default::default()
        }
    }

    #[test]
    fn the_newest_writer_decides() {
        assert!(!changed_by_others(&meta(vec![entry("lockstep", 0, None)])));
        assert!(changed_by_others(&meta(vec![
            entry("lockstep", 0, None),
            entry("kubectl-edit", 5, None)
        ])));
        // Status writes are not drift; `kubectl scale` (the scale subresource) is.
        assert!(!changed_by_others(&meta(vec![
            entry("lockstep", 0, None),
            entry("kube-controller-manager", 9, Some("status"))
        ])));
        assert!(changed_by_others(&meta(vec![
            entry("lockstep", 0, None),
            entry("kubectl", 3, Some("scale"))
        ])));
        assert!(!changed_by_others(&meta(vec![
            entry("kubectl-edit", 0, None),
            entry("lockstep", 5, None)
        ])));
        assert!(changed_by_others(&meta(vec![
            entry("lockstep", 5, None),
            entry("kubectl-edit", 5, None)
        ])));
        assert!(!changed_by_others(&ObjectMeta::default()));
        let mut untimed = entry("kubectl", 0, Some("scale"));
        untimed.time = None;
        assert!(changed_by_others(&meta(vec![
            entry("lockstep", 9, None),
            untimed
        ])));
    }
}
