//! Drift healing on the real control plane, through the Sync controller: a `kubectl patch`, a
//! `kubectl scale` and a `kubectl delete` of synced objects are put back within seconds (not at
//! the next poll: the interval is an hour), each counted once in the metrics; a Deployment whose
//! `spec.replicas` an ignore rule leaves to another manager (an HPA, here `kubectl scale`) keeps
//! the scaled value with no correction counted; with `selfHeal: false` an edit stays. The Sync
//! gets `Synced` and `DriftCorrected` Events.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, Patch, PatchParams, PostParams};
use lockstep_agent::api::Sync;
use lockstep_agent::controller::{self, Context};
use lockstep_agent::source::GitCache;
use lockstep_tests::controlplane::ControlPlane;
use lockstep_tests::{eventually, git};
use serde_json::json;

fn deployment(name: &str, replicas: i32) -> String {
    format!(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: {name}\nspec:\n  replicas: {replicas}\n  selector:\n    matchLabels: {{app: {name}}}\n  template:\n    metadata:\n      labels: {{app: {name}}}\n    spec:\n      containers:\n        - name: c\n          image: nginx\n"
    )
}

fn replicas(d: &Deployment) -> i32 {
    d.spec.as_ref().unwrap().replicas.unwrap()
}

#[tokio::test]
async fn drift_is_healed_within_seconds_and_ignored_fields_are_left_alone() {
    let cp = ControlPlane::shared();
    let client = cp.client().await.unwrap();
    let ns = cp.namespace("drift").await.unwrap();
    let _ = tracing_subscriber::fmt()
        .with_env_filter("lockstep_agent=info")
        .with_test_writer()
        .try_init();
    lockstep_tests::controlplane::apply_crds(
        &client,
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("../crds/sync.yaml"),
    )
    .await;

    let repo = tempfile::tempdir().unwrap();
    let r = repo.path();
    git(r, &["init", "-q"]);
    std::fs::write(
        r.join("cm.yaml"),
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: settings\ndata:\n  mode: blue\n",
    )
    .unwrap();
    std::fs::write(r.join("api.yaml"), deployment("api", 2)).unwrap();
    std::fs::write(r.join("web.yaml"), deployment("web", 2)).unwrap();
    git(r, &["add", "-A"]);
    git(r, &["commit", "-qm", "one"]);

    let (ctx, drifted) = Context::new(
        client.clone(),
        GitCache::new(tempfile::tempdir().unwrap().keep()),
        ns.clone(),
        lockstep_agent::sealing::fixed(lockstep_agent::sealing::Keys {
            ring: Default::default(),
            newest: None,
        }),
        None,
    );
    let metrics = ctx.metrics.clone();
    let ctx = Arc::new(ctx);
    let handle = tokio::spawn(controller::run(ctx, drifted));
    let syncs: Api<Sync> = Api::namespaced(client.clone(), &ns);
    let sync: Sync = serde_json::from_value(json!({
        "apiVersion": "lockstep.dev/v1alpha1", "kind": "Sync",
        "metadata": { "name": "app" },
        "spec": {
            "source": { "url": format!("file://{}", r.display()), "interval": "1h" },
            "targetNamespace": ns,
            "ignore": [{ "target": { "group": "apps", "kind": "Deployment", "name": "web" }, "jsonPointers": ["/spec/replicas"] }],
        }
    }))
    .unwrap();
    syncs.create(&PostParams::default(), &sync).await.unwrap();
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), &ns);
    let deploys: Api<Deployment> = Api::namespaced(client.clone(), &ns);
    eventually(60, "the first sync", || async {
        let s = syncs.get("app").await.ok()?;
        s.status.as_ref().filter(|st| st.inventory.len() == 3).map(|_| ())
    })
    .await;
    assert_eq!(replicas(&deploys.get("api").await.unwrap()), 2);
    assert_eq!(
        replicas(&deploys.get("web").await.unwrap()),
        1,
        "web's replicas are left to others (the default)"
    );
    // Let the watches list before changing anything.
    tokio::time::sleep(Duration::from_secs(1)).await;

    let kubectl = |args: &[&str]| {
        let mut all = vec!["-n", ns.as_str()];
        all.extend_from_slice(args);
        cp.kubectl(&all);
    };
    let mut timings = Vec::new();

    // kubectl patch (an edit): reverted.
    let t = Instant::now();
    kubectl(&[
        "patch",
        "configmap",
        "settings",
        "-p",
        r#"{"data":{"mode":"red"}}"#,
    ]);
    eventually(10, "the edit reverted", || async {
        let c = cms.get("settings").await.ok()?;
        (c.data.as_ref()?.get("mode")? == "blue").then_some(())
    })
    .await;
    timings.push(("kubectl patch configmap", t.elapsed()));

    // kubectl scale (the scale subresource): reverted to Git's 2.
    let t = Instant::now();
    kubectl(&["scale", "deployment", "api", "--replicas=5"]);
    eventually(10, "the scale reverted", || async {
        let d = deploys.get("api").await.ok()?;
        (replicas(&d) == 2).then_some(())
    })
    .await;
    timings.push(("kubectl scale deployment", t.elapsed()));

    // kubectl delete: recreated.
    let t = Instant::now();
    kubectl(&["delete", "configmap", "settings", "--wait=false"]);
    eventually(10, "the ConfigMap recreated", || async {
        let c = cms.get_opt("settings").await.ok()??;
        c.metadata.deletion_timestamp.is_none().then_some(())
    })
    .await;
    timings.push(("kubectl delete configmap", t.elapsed()));
    for (what, took) in &timings {
        eprintln!("drift: {what} put back in {:.2} s", took.as_secs_f64());
        assert!(*took < Duration::from_secs(5), "{what}: {took:?}");
    }

    // Events on the Sync: the first sync, and the corrections.
    let events: Api<k8s_openapi::api::events::v1::Event> = Api::namespaced(client.clone(), &ns);
    let reasons = eventually(10, "the Sync's events", || async {
        let list = events.list(&Default::default()).await.ok()?;
        let reasons: Vec<String> = list
            .items
            .iter()
            .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some("app"))
            .filter_map(|e| e.reason.clone())
            .collect();
        reasons.iter().any(|r| r == "DriftCorrected").then_some(reasons)
    })
    .await;
    assert!(reasons.iter().any(|r| r == "Synced"), "{reasons:?}");

    // An ignored field: kubectl scale (as an HPA would) stays, and no correction is counted.
    let counted = |text: &str| {
        text.lines()
            .find(|l| {
                l.starts_with("lockstep_drift_corrections_total{")
                    && l.contains(&format!("namespace=\"{ns}\""))
            })
            .and_then(|l| l.rsplit(' ').next())
            .map(|n| n.parse::<u64>().unwrap())
            .unwrap_or(0)
    };
    let before = counted(&metrics.encode());
    assert_eq!(before, 3, "{}", metrics.encode());
    kubectl(&["scale", "deployment", "web", "--replicas=4"]);
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(replicas(&deploys.get("web").await.unwrap()), 4);
    assert_eq!(
        counted(&metrics.encode()),
        before,
        "a no-op apply is not a correction"
    );

    // selfHeal: false: an edit stays.
    syncs
        .patch(
            "app",
            &PatchParams::default(),
            &Patch::Merge(json!({ "spec": { "selfHeal": false } })),
        )
        .await
        .unwrap();
    eventually(30, "the spec change observed", || async {
        let s = syncs.get("app").await.ok()?;
        (s.status?.observed_generation == s.metadata.generation).then_some(())
    })
    .await;
    kubectl(&[
        "patch",
        "configmap",
        "settings",
        "-p",
        r#"{"data":{"mode":"green"}}"#,
    ]);
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(cms.get("settings").await.unwrap().data.unwrap()["mode"], "green");
    handle.abort();
}
