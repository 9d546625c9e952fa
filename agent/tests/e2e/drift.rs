//! Drift healing through the Sync controller: a `kubectl patch`, a `kubectl scale` and a
//! `kubectl delete` of synced objects are put back within seconds (not at the next poll: the
//! interval is an hour), each counted once, with `Synced` and `DriftCorrected` Events; a field
//! an ignore rule leaves to another manager (`kubectl scale`, and a real HorizontalPodAutoscaler
//! of kube-controller-manager) keeps the other manager's value with no correction counted; with
//! `selfHeal: false` an edit stays.

use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, Patch, PatchParams};
use lockstep_agent::api::{RECONCILE_ANNOTATION, Sync};
use serde_json::json;

use super::fixtures::{Controller, Repo, cp, create, eventually, metric, settle, setup, sync};

fn deployment(name: &str, replicas: i32) -> String {
    format!(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: {name}\nspec:\n  replicas: {replicas}\n  selector:\n    matchLabels: {{app: {name}}}\n  template:\n    metadata:\n      labels: {{app: {name}}}\n    spec:\n      containers:\n        - name: c\n          image: registry.k8s.io/pause:3.10\n          resources: {{requests: {{cpu: 10m}}}}\n"
    )
}

fn replicas(d: &Deployment) -> i32 {
    d.spec.as_ref().unwrap().replicas.unwrap()
}

/// A synced repository (a ConfigMap, Deployments api and web, web's replicas left to others),
/// polled hourly; returns once the first sync is done and the drift watches have listed.
async fn synced(prefix: &str, extra: serde_json::Value) -> (kube::Client, String, Controller, Repo) {
    let (client, ns) = setup(prefix).await;
    let repo = Repo::new();
    repo.write(
        "cm.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: settings\ndata:\n  mode: blue\n",
    )
    .write("api.yaml", &deployment("api", 2))
    .write("web.yaml", &deployment("web", 2));
    repo.commit("one");
    let ctl = Controller::start(&client, &ns).await;
    let mut spec = json!({
        "source": { "interval": "1h" }, "targetNamespace": ns,
        "ignore": [{ "target": { "group": "apps", "kind": "Deployment", "name": "web" }, "jsonPointers": ["/spec/replicas"] }],
    });
    if let (Some(s), Some(e)) = (spec.as_object_mut(), extra.as_object()) {
        s.extend(e.clone());
    }
    create(&client, &ns, &sync("app", &repo.url(), spec)).await;
    let syncs: Api<Sync> = Api::namespaced(client.clone(), &ns);
    eventually("the first sync", 60, async || {
        let s = syncs.get("app").await.ok()?;
        s.status.as_ref().filter(|st| st.inventory.len() == 3).map(|_| ())
    })
    .await;
    // Let the watches list before changing anything.
    settle().await;
    (client, ns, ctl, repo)
}

fn kubectl(ns: &str, args: &[&str]) {
    let mut all = vec!["-n", ns];
    all.extend_from_slice(args);
    cp().kubectl(&all);
}

fn corrections(ctl: &Controller, ns: &str, name: &str) -> f64 {
    metric(
        &ctl.metrics.encode(),
        "lockstep_drift_corrections_total",
        &[&format!("namespace=\"{ns}\""), &format!("name=\"{name}\"")],
    )
    .unwrap_or(0.0)
}

#[tokio::test]
async fn an_edit_a_scale_and_a_delete_are_put_back_within_seconds() {
    let (client, ns, ctl, _repo) = synced("drift", json!({})).await;
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), &ns);
    let deploys: Api<Deployment> = Api::namespaced(client.clone(), &ns);
    assert_eq!(replicas(&deploys.get("api").await.unwrap()), 2);
    let mut timings = Vec::new();

    let t = Instant::now();
    kubectl(
        &ns,
        &[
            "patch",
            "configmap",
            "settings",
            "-p",
            r#"{"data":{"mode":"red"}}"#,
        ],
    );
    eventually("the edit reverted", 10, async || {
        let c = cms.get("settings").await.ok()?;
        (c.data.as_ref()?.get("mode")? == "blue").then_some(())
    })
    .await;
    timings.push(("kubectl patch configmap", t.elapsed()));

    let t = Instant::now();
    kubectl(&ns, &["scale", "deployment", "api", "--replicas=5"]);
    eventually("the scale reverted", 10, async || {
        (replicas(&deploys.get("api").await.ok()?) == 2).then_some(())
    })
    .await;
    timings.push(("kubectl scale deployment", t.elapsed()));

    let t = Instant::now();
    kubectl(&ns, &["delete", "configmap", "settings", "--wait=false"]);
    eventually("the ConfigMap recreated", 10, async || {
        let c = cms.get_opt("settings").await.ok()??;
        c.metadata.deletion_timestamp.is_none().then_some(())
    })
    .await;
    timings.push(("kubectl delete configmap", t.elapsed()));
    for (what, took) in &timings {
        eprintln!("drift: {what} put back in {:.2} s", took.as_secs_f64());
        assert!(*took < Duration::from_secs(5), "{what}: {took:?}");
    }
    eventually("three corrections counted", 10, async || {
        (corrections(&ctl, &ns, "app") == 3.0).then_some(())
    })
    .await;

    // Events on the Sync: the first sync, and the corrections.
    let events: Api<k8s_openapi::api::events::v1::Event> = Api::namespaced(client.clone(), &ns);
    let reasons = eventually("the Sync's events", 10, async || {
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
}

#[tokio::test]
async fn an_ignored_field_is_left_to_others_without_a_correction() {
    let (client, ns, ctl, _repo) = synced("drift-ignore", json!({})).await;
    let deploys: Api<Deployment> = Api::namespaced(client.clone(), &ns);
    assert_eq!(
        replicas(&deploys.get("web").await.unwrap()),
        1,
        "web's replicas are left to others (the default)"
    );
    kubectl(&ns, &["scale", "deployment", "web", "--replicas=4"]);
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(replicas(&deploys.get("web").await.unwrap()), 4);
    assert_eq!(
        corrections(&ctl, &ns, "app"),
        0.0,
        "a no-op apply is not a correction"
    );
}

#[tokio::test]
async fn self_heal_false_leaves_an_edit_alone() {
    let (client, ns, _ctl, _repo) = synced("drift-off", json!({ "selfHeal": false })).await;
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), &ns);
    kubectl(
        &ns,
        &[
            "patch",
            "configmap",
            "settings",
            "-p",
            r#"{"data":{"mode":"green"}}"#,
        ],
    );
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(cms.get("settings").await.unwrap().data.unwrap()["mode"], "green");
}

#[tokio::test]
async fn a_real_hpa_keeps_the_replicas_it_owns() {
    let (client, ns) = setup("drift-hpa").await;
    let ctl = Controller::start(&client, &ns).await;
    let repo = Repo::new();
    repo.write("web.yaml", &deployment("web", 1)).write(
        "hpa.yaml",
        "apiVersion: autoscaling/v2\nkind: HorizontalPodAutoscaler\nmetadata:\n  name: web\nspec:\n  scaleTargetRef: {apiVersion: apps/v1, kind: Deployment, name: web}\n  minReplicas: 3\n  maxReplicas: 5\n  metrics:\n    - type: Resource\n      resource: {name: cpu, target: {type: Utilization, averageUtilization: 80}}\n",
    );
    repo.commit("hpa");
    create(
        &client,
        &ns,
        &sync(
            "scaled",
            &repo.url(),
            json!({ "source": { "interval": "1h" }, "targetNamespace": ns,
                    "ignore": [{ "target": { "group": "apps", "kind": "Deployment", "name": "web" }, "jsonPointers": ["/spec/replicas"] }] }),
        ),
    )
    .await;
    let deploys: Api<Deployment> = Api::namespaced(client.clone(), &ns);
    let replicas = async || {
        deploys
            .get_opt("web")
            .await
            .unwrap()
            .and_then(|d| d.spec?.replicas)
    };
    eventually("the HPA to scale web to its minimum", 60, async || {
        (replicas().await == Some(3)).then_some(())
    })
    .await;
    let hpas: Api<k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler> =
        Api::namespaced(client.clone(), &ns);
    // The HPA writes its status after it scales.
    eventually("the HPA itself to ask for 3", 30, async || {
        let st = hpas.get("web").await.ok()?.status?;
        (st.desired_replicas == 3).then_some(())
    })
    .await;
    // A few HPA syncs (every 2 s) and a resync later, still the HPA's 3, and no correction.
    Api::<Sync>::namespaced(client.clone(), &ns)
        .patch(
            "scaled",
            &PatchParams::default(),
            &Patch::Merge(json!({ "metadata": { "annotations": { RECONCILE_ANNOTATION: "again" } } })),
        )
        .await
        .unwrap();
    for _ in 0..12 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert_eq!(
            replicas().await,
            Some(3),
            "Lockstep and the HPA fight over replicas"
        );
    }
    assert_eq!(corrections(&ctl, &ns, "scaled"), 0.0, "{}", ctl.metrics.encode());
}
