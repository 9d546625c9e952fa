//! The ExternalSecret controller, for ExternalSecrets in the cluster (those of a revision are
//! materialised by their sync, [`crate::sync::externals`], and refreshed here too).
//!
//! The refresh loop: every ExternalSecret in the cluster is refreshed when its spec, labels or
//! annotations changed, or when `refreshInterval` has passed since its last successful refresh,
//! plus a stable per-object offset of up to 10 % of the interval (so ExternalSecrets created
//! together do not stay aligned forever, ESO #4231). A failure backs off on its own schedule,
//! 5 s doubling to 5 min, jittered, whatever the refresh interval (ESO #6728: an outage must not
//! turn into a call storm). Everything due at one tick is fetched as one batch, so identical
//! references cost one read.

use std::collections::HashMap;
use std::time::Duration;

use futures::StreamExt;
use kube::runtime::{WatchStreamExt, reflector, watcher};
use time::OffsetDateTime;

use super::{Gate, Scope};
use crate::secrets::external::api::ExternalSecret;
use crate::secrets::external::engine::{Engine, LocalStores, Outcome};

/// Backoff after `failures` consecutive failures (before jitter).
pub fn backoff(failures: u32) -> Duration {
    let secs = 5u64.saturating_mul(1u64 << failures.saturating_sub(1).min(10));
    Duration::from_secs(secs.min(300))
}

/// `refreshInterval` (Go duration; default 1h; `0` = once).
pub fn interval(es: &ExternalSecret) -> Duration {
    es.spec
        .refresh_interval
        .as_deref()
        .map_or(
            Some(Duration::from_secs(3600)),
            lockstep_formats::duration::parse_or_zero,
        )
        .unwrap_or(Duration::from_secs(3600))
}

/// A stable offset in `[0, interval/10)` from the object's uid.
pub fn offset(es: &ExternalSecret) -> Duration {
    use sha2::Digest;
    let uid = es.metadata.uid.as_deref().unwrap_or_default();
    let h = sha2::Sha256::digest(uid.as_bytes());
    let frac = f64::from(u16::from_be_bytes([h[0], h[1]])) / 65536.0;
    interval(es).mul_f64(frac / 10.0)
}

/// Whether an ExternalSecret is due at `now`, from its status alone (pure).
pub fn due(es: &ExternalSecret, now: OffsetDateTime) -> bool {
    let status = es.status.clone().unwrap_or_default();
    let current = crate::secrets::external::plan::resource_version(es);
    let synced = status.synced_resource_version.as_deref();
    let refreshed = status
        .refresh_time
        .as_deref()
        .and_then(|t| OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339).ok());
    let Some(refreshed) = refreshed else { return true };
    match es.spec.refresh_policy.as_deref() {
        Some("CreatedOnce") => false,
        Some("OnChange") => synced != Some(current.as_str()),
        _ => {
            if synced != Some(current.as_str()) {
                return true;
            }
            let every = interval(es);
            if every.is_zero() {
                return false;
            }
            refreshed > now || refreshed + every + offset(es) <= now
        }
    }
}

/// Runs the loop until the task is dropped.
pub async fn run(
    engine: Engine,
    client: kube::Client,
    shutdown: tokio_util::sync::CancellationToken,
    scope: &Scope,
    ready: Option<Gate>,
) {
    let api: kube::Api<ExternalSecret> = scope.api(&client);
    let (reader, writer) = reflector::store();
    let crds: kube::Api<
        k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
    > = kube::Api::all(client);
    let mut ready = ready;
    // Without the CRD there is nothing to list, which is not a reason to be unready.
    if let Ok(None) = crds.get_opt("externalsecrets.external-secrets.io").await
        && let Some(g) = ready.take()
    {
        tracing::info!("the ExternalSecret CRD is not installed; refreshing none until it is");
        g.open();
    }
    let stream = reflector(writer, watcher(api, watcher::Config::default()))
        .default_backoff()
        .inspect(move |e| {
            if let Ok(watcher::Event::InitDone) = e
                && let Some(g) = ready.take()
            {
                g.open();
            }
        })
        .touched_objects();
    let mut stream = Box::pin(stream);
    // uid → (consecutive failures, not before).
    let mut failing: HashMap<String, (u32, OffsetDateTime)> = HashMap::new();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = shutdown.cancelled() => return,
            ev = stream.next() => {
                if ev.is_none() { return; }
                // Coalesce a burst of events into one batch.
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        let now = OffsetDateTime::now_utc();
        let batch: Vec<ExternalSecret> = reader
            .state()
            .iter()
            .filter(|es| es.metadata.deletion_timestamp.is_none())
            .filter(|es| {
                let uid = es.metadata.uid.clone().unwrap_or_default();
                match failing.get(&uid) {
                    // A changed spec is tried at once; otherwise the backoff holds.
                    Some((_, not_before)) => *not_before <= now || spec_changed(es),
                    None => due(es, now),
                }
            })
            .map(|es| (**es).clone())
            .collect();
        if batch.is_empty() {
            continue;
        }
        let outcomes = engine.run(&batch, &LocalStores::default()).await;
        for (es, o) in batch.iter().zip(outcomes) {
            let uid = es.metadata.uid.clone().unwrap_or_default();
            if let Outcome::Failed(_) = o {
                let n = failing.get(&uid).map_or(1, |(n, _)| n + 1);
                let jitter = 1.0 + rand::random::<f64>() * 0.2;
                let wait = backoff(n).mul_f64(jitter);
                failing.insert(uid, (n, OffsetDateTime::now_utc() + wait));
            } else {
                failing.remove(&uid);
            }
        }
    }
}

fn spec_changed(es: &ExternalSecret) -> bool {
    let current = crate::secrets::external::plan::resource_version(es);
    let seen = es
        .status
        .as_ref()
        .and_then(|s| {
            s.conditions
                .iter()
                .find(|c| c.type_ == crate::secrets::external::api::READY)
        })
        .and_then(|c| c.observed_generation);
    seen != es.metadata.generation
        && es
            .status
            .as_ref()
            .and_then(|s| s.synced_resource_version.as_deref())
            != Some(current.as_str())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::secrets::external::values;
    use serde_json::json;

    fn es(status: serde_json::Value, spec_extra: serde_json::Value) -> ExternalSecret {
        let mut spec = json!({ "secretStoreRef": { "name": "s" }, "data": [], "refreshInterval": "1m" });
        if let (Some(s), Some(e)) = (spec.as_object_mut(), spec_extra.as_object()) {
            s.extend(e.clone());
        }
        serde_json::from_value(json!({
            "apiVersion": "external-secrets.io/v1", "kind": "ExternalSecret",
            "metadata": { "name": "a", "namespace": "n", "uid": "u", "generation": 1 },
            "spec": spec, "status": status,
        }))
        .unwrap()
    }

    #[test]
    fn due_follows_esos_rules_with_an_offset() {
        let t0 = OffsetDateTime::parse(
            "2026-11-23T10:00:00Z",
            &time::format_description::well_known::Rfc3339,
        )
        .unwrap();
        let rv = values::resource_version(1, &Default::default(), &Default::default());
        let synced = json!({ "refreshTime": "2026-11-23T10:00:00Z", "syncedResourceVersion": rv });
        assert!(due(&es(json!({}), json!({})), t0), "never synced");
        let e = es(synced.clone(), json!({}));
        assert!(!due(&e, t0 + Duration::from_secs(30)));
        assert!(
            due(&e, t0 + Duration::from_secs(67)),
            "interval plus at most 10 %"
        );
        assert!(offset(&e) < Duration::from_secs(6));
        let stale = es(
            json!({ "refreshTime": "2026-11-23T10:00:00Z", "syncedResourceVersion": "0-x" }),
            json!({}),
        );
        assert!(due(&stale, t0), "a changed spec refreshes at once");
        assert!(!due(
            &es(synced.clone(), json!({ "refreshPolicy": "CreatedOnce" })),
            t0 + Duration::from_secs(9999)
        ));
        assert!(!due(
            &es(synced, json!({ "refreshInterval": "0s" })),
            t0 + Duration::from_secs(9999)
        ));
        assert_eq!(backoff(1), Duration::from_secs(5));
        assert_eq!(backoff(3), Duration::from_secs(20));
        assert_eq!(backoff(30), Duration::from_secs(300));
    }
}
