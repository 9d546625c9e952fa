//! Health through the Sync controller: the `Healthy` condition follows a rollout after the sync
//! (Unknown while a custom resource is in progress, True once its operator reports it ready)
//! with no wait configured; a health wait (`wait: true`, a 10-minute timeout) never holds a
//! newer revision back: a reconcile request (what a webhook sets) cuts it short at once, and a
//! new commit found by the interval's poll cuts it short too, with nothing of the old
//! revision's later waves applied; a sync that does not finish within `spec.timeout` is
//! retried with backoff, not stalled.

use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, DynamicObject, GroupVersionKind, Patch, PatchParams, PostParams};
use kube::discovery::ApiResource;
use lockstep_agent::api::{RECONCILE_ANNOTATION, Sync};
use serde_json::json;

use super::fixtures::{Controller, Repo, condition, create, eventually, setup, sync, test_crd};

/// The Gadgets of `ns` (their CRD established once).
pub fn gadgets(client: &kube::Client, ns: &str) -> Api<DynamicObject> {
    test_crd("health.lockstep.dev", "Gadget");
    Api::namespaced_with(
        client.clone(),
        ns,
        &ApiResource::from_gvk(&GroupVersionKind::gvk("health.lockstep.dev", "v1", "Gadget")),
    )
}

/// A Gadget in wave `wave`, whose sync is a rollout (`spec.size: 1`).
pub fn gadget(name: &str, wave: i64) -> String {
    format!(
        "apiVersion: health.lockstep.dev/v1\nkind: Gadget\nmetadata:\n  name: {name}\n  annotations:\n    lockstep.dev/sync-wave: \"{wave}\"\nspec:\n  size: 1\n"
    )
}

/// A ConfigMap in wave `wave`.
pub fn config_map(name: &str, wave: i64) -> String {
    format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {name}\n  annotations:\n    lockstep.dev/sync-wave: \"{wave}\"\ndata:\n  a: b\n"
    )
}

/// Creates a Gadget as its operator would have (generation 1 observed, `Ready: False`), so
/// that the sync's change (`spec.size: 1`) is a rollout in progress until the test says.
pub async fn precreate(api: &Api<DynamicObject>, name: &str) {
    let g: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "health.lockstep.dev/v1", "kind": "Gadget",
        "metadata": { "name": name }, "spec": { "size": 0 } }))
    .unwrap();
    api.create(&PostParams::default(), &g).await.unwrap();
    report(api, name, 1, "False").await;
}

/// Writes a Gadget's status as its operator: `Ready` for `generation`.
pub async fn report(api: &Api<DynamicObject>, name: &str, generation: i64, ready: &str) {
    let status = json!({ "status": { "observedGeneration": generation,
        "conditions": [{ "type": "Ready", "status": ready, "reason": "R", "message": format!("ready: {ready}") }] } });
    api.patch_status(name, &PatchParams::default(), &Patch::Merge(&status))
        .await
        .unwrap();
}

/// A Sync of `url` into `ns`, polling hourly unless `extra` says otherwise.
pub fn sync_into(name: &str, url: &str, ns: &str, extra: serde_json::Value) -> Sync {
    let mut spec = json!({ "source": { "interval": "1h" }, "targetNamespace": ns });
    if let (Some(spec), Some(extra)) = (spec.as_object_mut(), extra.as_object()) {
        for (k, v) in extra {
            if k == "interval" {
                spec["source"]["interval"] = v.clone();
            } else {
                spec.insert(k.clone(), v.clone());
            }
        }
    }
    sync(name, url, spec)
}

/// The Sync `ns/name`.
pub async fn get(client: &kube::Client, ns: &str, name: &str) -> Sync {
    Api::<Sync>::namespaced(client.clone(), ns)
        .get(name)
        .await
        .unwrap()
}

#[tokio::test]
async fn healthy_follows_a_rollout_without_a_wait() {
    let (client, ns) = setup("health").await;
    let gadgets = gadgets(&client, &ns);
    let _ctl = Controller::start(&client, &ns).await;
    let repo = Repo::new();
    repo.write("g.yaml", &gadget("rolling", 0));
    repo.commit("one");
    precreate(&gadgets, "rolling").await;
    create(&client, &ns, &sync_into("rollout", &repo.url(), &ns, json!({}))).await;
    let healthy = eventually("Healthy Unknown while the Gadget rolls out", 30, async || {
        let s = get(&client, &ns, "rollout").await;
        let ready = condition(&s, "Ready")?;
        (ready.status == "True").then(|| condition(&s, "Healthy"))?
    })
    .await;
    assert_eq!(
        (healthy.status.as_str(), healthy.reason.as_str()),
        ("Unknown", "Progressing")
    );
    assert!(
        healthy
            .message
            .contains(&format!("Gadget {ns}/rolling InProgress")),
        "{}",
        healthy.message
    );
    report(&gadgets, "rolling", 2, "True").await;
    let t = Instant::now();
    eventually("Healthy True once the operator reports ready", 15, async || {
        let c = condition(&get(&client, &ns, "rollout").await, "Healthy")?;
        (c.status == "True").then_some(())
    })
    .await;
    eprintln!(
        "Healthy followed the rollout {:.2} s after it finished",
        t.elapsed().as_secs_f64()
    );
}

#[tokio::test]
async fn a_reconcile_request_cuts_a_health_wait_short() {
    let (client, ns) = setup("health-cut").await;
    let gadgets = gadgets(&client, &ns);
    let _ctl = Controller::start(&client, &ns).await;
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), &ns);
    let repo = Repo::new();
    repo.write("g.yaml", &gadget("stuck", 0))
        .write("later.yaml", &config_map("later", 1));
    repo.commit("one");
    precreate(&gadgets, "stuck").await;
    create(
        &client,
        &ns,
        &sync_into(
            "waiting",
            &repo.url(),
            &ns,
            json!({ "wait": true, "timeout": "10m" }),
        ),
    )
    .await;
    eventually("the wait to begin", 30, async || {
        let g = gadgets.get_opt("stuck").await.unwrap()?;
        (g.metadata.generation == Some(2)).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(
        cms.get_opt("later").await.unwrap().is_none(),
        "wave 1 waits for wave 0"
    );
    repo.remove("g.yaml");
    repo.write("fixed.yaml", &config_map("fixed", 0));
    let fixed = repo.commit("two");
    let t = Instant::now();
    Api::<Sync>::namespaced(client.clone(), &ns)
        .patch(
            "waiting",
            &PatchParams::default(),
            &Patch::Merge(json!({ "metadata": { "annotations": { RECONCILE_ANNOTATION: "now" } } })),
        )
        .await
        .unwrap();
    eventually("the new revision applied", 20, async || {
        let rev = get(&client, &ns, "waiting").await.status?.last_applied_revision?;
        rev.ends_with(&fixed).then_some(())
    })
    .await;
    let cut = t.elapsed();
    eprintln!(
        "a reconcile request cut the wait short: new revision applied {:.2} s later",
        cut.as_secs_f64()
    );
    assert!(cut < Duration::from_secs(5), "{cut:?}");
    assert!(cms.get_opt("fixed").await.unwrap().is_some() && cms.get_opt("later").await.unwrap().is_some());
    let history: Vec<String> = get(&client, &ns, "waiting")
        .await
        .status
        .unwrap()
        .history
        .iter()
        .map(|h| h.result.clone())
        .collect();
    assert_eq!(history[..2], ["Succeeded", "HealthCheckCanceled"], "{history:?}");
}

#[tokio::test]
async fn a_polled_commit_cuts_a_health_wait_short() {
    let (client, ns) = setup("health-poll").await;
    let gadgets = gadgets(&client, &ns);
    let _ctl = Controller::start(&client, &ns).await;
    let repo = Repo::new();
    repo.write("g.yaml", &gadget("polled", 0))
        .write("later.yaml", &config_map("polled-later", 1));
    repo.commit("one");
    precreate(&gadgets, "polled").await;
    create(
        &client,
        &ns,
        &sync_into(
            "polling",
            &repo.url(),
            &ns,
            json!({ "wait": true, "timeout": "10m", "interval": "2s" }),
        ),
    )
    .await;
    eventually("the poll wait to begin", 30, async || {
        let g = gadgets.get_opt("polled").await.unwrap()?;
        (g.metadata.generation == Some(2)).then_some(())
    })
    .await;
    repo.remove("g.yaml");
    let second = repo.commit("two");
    let t = Instant::now();
    eventually("the polled revision applied", 20, async || {
        let rev = get(&client, &ns, "polling").await.status?.last_applied_revision?;
        rev.ends_with(&second).then_some(())
    })
    .await;
    eprintln!(
        "a polled commit cut the wait short: applied {:.2} s after the push (interval 2 s)",
        t.elapsed().as_secs_f64()
    );
    assert!(t.elapsed() < Duration::from_secs(8));
}

#[tokio::test]
async fn a_sync_that_times_out_is_retried_with_backoff_not_stalled() {
    let (client, ns) = setup("health-timeout").await;
    let gadgets = gadgets(&client, &ns);
    let _ctl = Controller::start(&client, &ns).await;
    let repo = Repo::new();
    repo.write("g.yaml", &gadget("slow", 0));
    repo.commit("one");
    precreate(&gadgets, "slow").await;
    create(
        &client,
        &ns,
        &sync_into(
            "slow",
            &repo.url(),
            &ns,
            json!({ "wait": true, "timeout": "5s", "retry": { "duration": "1s", "factor": 1 } }),
        ),
    )
    .await;
    // Two attempts in a row time out: each a failure, retried, never stalled.
    let s = eventually("two timed-out attempts", 60, async || {
        let s = get(&client, &ns, "slow").await;
        (s.status.as_ref()?.failures >= 2).then_some(s)
    })
    .await;
    let ready = condition(&s, "Ready").unwrap();
    assert_eq!(
        (ready.status.as_str(), ready.reason.as_str()),
        ("False", "TimedOut")
    );
    assert_eq!(ready.message, "the sync did not finish within 5 s");
    let stalled = condition(&s, "Stalled").unwrap();
    assert_eq!(stalled.status, "False", "a timeout is transient");
    assert_eq!(condition(&s, "Reconciling").unwrap().status, "True");
    assert_eq!(s.status.as_ref().unwrap().history[0].result, "TimedOut");
    // Once the rollout can finish in time, the retry succeeds, and the count starts over.
    report(&gadgets, "slow", 2, "True").await;
    eventually("the retry to succeed", 30, async || {
        let s = get(&client, &ns, "slow").await;
        let st = s.status.as_ref()?;
        (condition(&s, "Ready")?.status == "True" && st.failures == 0).then_some(())
    })
    .await;
}
