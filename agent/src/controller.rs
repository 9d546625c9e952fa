//! The Sync controller: one reconcile runs one sync and writes kstatus conditions, revisions,
//! inventory and history; failures requeue with backoff and never prune.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::watcher;
use kube::{Client, ResourceExt};
use tracing::{Instrument, info, info_span, warn};

use crate::api::{Condition, HistoryEntry, InventoryEntry, Sync, SyncStatus};
use crate::plan::{Inventory, ObjectId};
use crate::render::Keys;
use crate::sealing::KeyStore;
use crate::source::GitCache;
use crate::sync::{self, Config};

/// Errors of one reconcile.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The Sync asks for something not supported.
    #[error("{0}")]
    Unsupported(String),
    /// Reading keys failed.
    #[error("decryption keys: {0}")]
    Keys(String),
    /// The sync failed.
    #[error(transparent)]
    Sync(#[from] sync::Error),
    /// Writing status failed.
    #[error("status: {0}")]
    Status(String),
}

/// Shared state of the controller.
pub struct Context {
    /// The client.
    pub client: Client,
    /// Git caches.
    pub cache: GitCache,
    /// Namespace of the agent (sealing keys live there).
    pub namespace: String,
}

const DEFAULT_INTERVAL: Duration = Duration::from_secs(300);
const HISTORY: usize = 5;

/// Runs the controller until the stream ends (shutdown signal).
pub async fn run(ctx: Arc<Context>) {
    let syncs: Api<Sync> = Api::all(ctx.client.clone());
    Controller::new(syncs, watcher::Config::default())
        .shutdown_on_signal()
        .run(reconcile, error_policy, ctx)
        .for_each(|r| async move {
            match r {
                Ok((obj, _)) => tracing::debug!(sync = %obj, "reconciled"),
                Err(e) => warn!(error = %e, "reconcile failed"),
            }
        })
        .await;
}

fn error_policy(_s: Arc<Sync>, _e: &Error, _ctx: Arc<Context>) -> Action {
    Action::requeue(Duration::from_secs(30))
}

/// Go-style durations: `30s`, `5m`, `1h`, `1h30m`.
pub fn parse_duration(s: &str) -> Option<Duration> {
    let mut total = 0u64;
    let mut num = String::new();
    for c in s.chars() {
        if c.is_ascii_digit() {
            num.push(c);
            continue;
        }
        let n: u64 = num.parse().ok()?;
        num.clear();
        total += n * match c {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            _ => return None,
        };
    }
    if !num.is_empty() {
        return None;
    }
    (total > 0).then(|| Duration::from_secs(total))
}

async fn reconcile(s: Arc<Sync>, ctx: Arc<Context>) -> Result<Action, Error> {
    let ns = s.namespace().unwrap_or_default();
    let name = s.name_any();
    let span =
        info_span!("reconcile", sync.namespace = %ns, sync.name = %name, revision = tracing::field::Empty);
    async move {
        let interval = s
            .spec
            .source
            .interval
            .as_deref()
            .and_then(parse_duration)
            .unwrap_or(DEFAULT_INTERVAL);
        if s.spec.suspend == Some(true) {
            return Ok(Action::requeue(interval));
        }
        let status = s.status.clone().unwrap_or_default();
        let result = run_sync(&s, &ctx, &ns, &status).await;
        let api: Api<Sync> = Api::namespaced(ctx.client.clone(), &ns);
        let new = next_status(&s, status, &result);
        let patch = serde_json::json!({ "status": new });
        api.patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .map_err(|e| Error::Status(e.to_string()))?;
        match result {
            Ok(out) => {
                tracing::Span::current().record("revision", out.commit.as_str());
                info!(
                    applied = out.report.applied.len(),
                    unchanged = out.report.unchanged,
                    pruned = out.pruned.len(),
                    seconds = out.duration.as_secs_f64(),
                    "sync succeeded"
                );
                Ok(Action::requeue(interval))
            }
            Err(e) => {
                warn!(error = %e, "sync failed");
                Err(e)
            }
        }
    }
    .instrument(span)
    .await
}

async fn run_sync(s: &Sync, ctx: &Context, ns: &str, status: &SyncStatus) -> Result<sync::Outcome, Error> {
    use crate::source::Reference;
    let reference = match &s.spec.source.reference {
        None => Reference::Branch("main".into()),
        Some(r) => match (&r.branch, &r.tag, &r.semver, &r.commit) {
            (Some(b), None, None, None) => Reference::Branch(b.clone()),
            (None, Some(t), None, None) => Reference::Tag(t.clone()),
            (None, None, Some(v), None) => Reference::Semver(v.clone()),
            (None, None, None, Some(c)) => Reference::Commit(c.clone()),
            (None, None, None, None) => Reference::Branch("main".into()),
            _ => {
                return Err(Error::Unsupported(
                    "spec.source.ref: set exactly one of branch, tag, semver, commit".into(),
                ));
            }
        },
    };
    if s.spec.source.secret_ref.is_some() {
        return Err(Error::Unsupported(
            "spec.source.secretRef: credentials are not supported yet".into(),
        ));
    }
    let mut keys = Keys::default();
    if let Some(sops) = s.spec.decryption.as_ref().and_then(|d| d.sops.as_ref()) {
        let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), ns);
        let secret = secrets
            .get(&sops.secret_ref.name)
            .await
            .map_err(|e| Error::Keys(format!("secret {ns}/{}: {e}", sops.secret_ref.name)))?;
        let data = secret.data.unwrap_or_default();
        let entries: Vec<(&str, &[u8])> = data.iter().map(|(k, v)| (k.as_str(), v.0.as_slice())).collect();
        let ids = crate::keys::identities_from_secret(&format!("{ns}/{}", sops.secret_ref.name), entries)
            .map_err(|e| Error::Keys(e.to_string()))?;
        keys.sops = Some(ids);
    }
    if s.spec.decryption.as_ref().and_then(|d| d.sealed_secrets) != Some(false) {
        let loaded = KeyStore::new(ctx.client.clone(), &ctx.namespace)
            .load()
            .await
            .map_err(|e| Error::Keys(e.to_string()))?;
        if !loaded.ring.is_empty() {
            keys.sealed = Some(loaded.ring);
        }
    }
    let last = Inventory {
        entries: status
            .inventory
            .iter()
            .map(|e| {
                let id = ObjectId {
                    api_version: e.api_version.clone(),
                    kind: e.kind.clone(),
                    namespace: e.namespace.clone(),
                    name: e.name.clone(),
                };
                (id.key(), (id, e.hash.clone()))
            })
            .collect(),
    };
    let cfg = Config {
        url: s.spec.source.url.clone(),
        reference,
        path: s.spec.source.path.clone().unwrap_or_default(),
        owner: format!("{ns}.{}", s.name_any()),
        target_namespace: s.spec.target_namespace.clone(),
        create_namespace: s.spec.create_namespace == Some(true),
        prune: s.spec.prune != Some(false),
        prune_budget: f64::from(s.spec.prune_budget_percent.unwrap_or(50)) / 100.0,
        allow_mass_deletion: s.spec.allow_mass_deletion == Some(true),
    };
    let timeout = s
        .spec
        .timeout
        .as_deref()
        .and_then(parse_duration)
        .unwrap_or(Duration::from_secs(300));
    tokio::time::timeout(
        timeout,
        sync::sync_once(ctx.client.clone(), &ctx.cache, &cfg, &keys, &last),
    )
    .await
    .map_err(|_| Error::Unsupported(format!("the sync did not finish within {} s", timeout.as_secs())))?
    .map_err(Error::from)
}

fn now() -> String {
    lockstep_formats::sops::now_rfc3339()
}

/// The reason of a failure, for conditions and history (bounded set).
fn reason(e: &Error) -> &'static str {
    match e {
        Error::Unsupported(_) => "Unsupported",
        Error::Keys(_) => "DecryptionKeysFailed",
        Error::Sync(sync::Error::Source(_) | sync::Error::Task(_)) => "SourceFailed",
        Error::Sync(sync::Error::Render(_)) => "RenderFailed",
        Error::Sync(sync::Error::Apply(_)) => "ApplyFailed",
        Error::Sync(sync::Error::Budget(_)) => "PruneBudgetExceeded",
        Error::Status(_) => "StatusFailed",
    }
}

fn condition(
    prev: &[Condition],
    type_: &str,
    status: &str,
    reason: &str,
    message: &str,
    generation: Option<i64>,
) -> Condition {
    let same = prev
        .iter()
        .find(|c| c.type_ == type_)
        .filter(|c| c.status == status);
    Condition {
        type_: type_.into(),
        status: status.into(),
        reason: reason.into(),
        message: message.into(),
        last_transition_time: same.map_or_else(now, |c| c.last_transition_time.clone()),
        observed_generation: generation,
    }
}

/// The status after a sync (pure but for the clock).
fn next_status(s: &Sync, prev: SyncStatus, result: &Result<sync::Outcome, Error>) -> SyncStatus {
    let generation = s.metadata.generation;
    let mut st = prev.clone();
    st.observed_generation = generation;
    match result {
        Ok(out) => {
            let rev = format!("{}@sha1:{}", out.reference, out.commit);
            st.last_applied_revision = Some(rev.clone());
            st.last_attempted_revision = Some(rev.clone());
            st.inventory = out
                .inventory
                .entries
                .values()
                .map(|(id, h)| InventoryEntry {
                    api_version: id.api_version.clone(),
                    kind: id.kind.clone(),
                    namespace: id.namespace.clone(),
                    name: id.name.clone(),
                    hash: h.clone(),
                })
                .collect();
            let msg = format!("Applied revision {rev}");
            st.conditions = vec![
                condition(&prev.conditions, "Ready", "True", "Succeeded", &msg, generation),
                condition(
                    &prev.conditions,
                    "Reconciling",
                    "False",
                    "Succeeded",
                    "",
                    generation,
                ),
                condition(&prev.conditions, "Stalled", "False", "Succeeded", "", generation),
            ];
            st.history.insert(
                0,
                HistoryEntry {
                    revision: rev,
                    time: now(),
                    result: "Succeeded".into(),
                    applied: out.report.applied.len(),
                    pruned: out.pruned.len(),
                },
            );
        }
        Err(e) => {
            let r = reason(e);
            let msg = e.to_string();
            // Errors that a retry cannot fix stall the Sync until Git or the spec changes.
            let stalled = matches!(r, "RenderFailed" | "Unsupported" | "PruneBudgetExceeded");
            st.conditions = vec![
                condition(&prev.conditions, "Ready", "False", r, &msg, generation),
                condition(
                    &prev.conditions,
                    "Reconciling",
                    if stalled { "False" } else { "True" },
                    r,
                    "",
                    generation,
                ),
                condition(
                    &prev.conditions,
                    "Stalled",
                    if stalled { "True" } else { "False" },
                    r,
                    &msg,
                    generation,
                ),
            ];
            st.history.insert(
                0,
                HistoryEntry {
                    revision: st.last_attempted_revision.clone().unwrap_or_default(),
                    time: now(),
                    result: r.into(),
                    applied: 0,
                    pruned: 0,
                },
            );
        }
    }
    st.history.truncate(HISTORY);
    st
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_durations() {
        assert_eq!(parse_duration("5m"), Some(Duration::from_secs(300)));
        assert_eq!(parse_duration("1h30m"), Some(Duration::from_secs(5400)));
        assert_eq!(parse_duration("10s"), Some(Duration::from_secs(10)));
        assert_eq!(parse_duration("5"), None);
        assert_eq!(parse_duration("5d"), None);
    }
}
