//! Sync waves and health waits on the real control plane: `lockstep.dev/sync-wave` and Argo CD's
//! `argocd.argoproj.io/sync-wave` order objects within a stage; with `wait`, a wave's objects must
//! be healthy (kstatus) before the next wave is applied; a `Failed` object fails the sync at once
//! and later waves are not applied; a wave annotation that is not an integer stops the sync
//! before anything is applied, naming the file and annotation.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, DynamicObject, GroupVersionKind, Patch, PatchParams};
use kube::discovery::ApiResource;
use lockstep_agent::plan::{Inventory, Stage};
use lockstep_agent::render::Keys;
use lockstep_agent::source::GitCache;
use lockstep_agent::sync::{self, Config};
use lockstep_tests::controlplane::ControlPlane;
use lockstep_tests::git;
use serde_json::json;

const WIDGET_CRD: &str = r#"apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: widgets.waves.lockstep.dev
spec:
  group: waves.lockstep.dev
  scope: Namespaced
  names: {kind: Widget, plural: widgets, singular: widget, listKind: WidgetList}
  versions:
    - name: v1
      served: true
      storage: true
      subresources: {status: {}}
      schema:
        openAPIV3Schema: {type: object, x-kubernetes-preserve-unknown-fields: true}
"#;

fn widget(name: &str, wave: &str) -> String {
    format!(
        "apiVersion: waves.lockstep.dev/v1\nkind: Widget\nmetadata:\n  name: {name}\n  annotations:\n    lockstep.dev/sync-wave: \"{wave}\"\nspec:\n  size: 1\n"
    )
}

fn config_map(name: &str, annotation: &str, wave: &str) -> String {
    format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {name}\n  annotations:\n    {annotation}: \"{wave}\"\ndata:\n  a: b\n"
    )
}

/// Sets a Widget's status, observing its generation, once the generation is at least `min`.
async fn set_status(api: &Api<DynamicObject>, name: &str, min: i64, conditions: serde_json::Value) {
    for _ in 0..200 {
        if let Some(w) = api.get_opt(name).await.unwrap()
            && let Some(generation) = w.metadata.generation.filter(|g| *g >= min)
        {
            api.patch_status(
                name,
                &PatchParams::default(),
                &Patch::Merge(
                    json!({ "status": { "observedGeneration": generation, "conditions": conditions } }),
                ),
            )
            .await
            .unwrap();
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("widget {name} never reached generation {min}");
}

/// Creates a Widget as its operator would have before the sync (`spec.size: 0`, generation 1,
/// status observed), so that the sync's change is a rollout the wait must see through.
async fn precreate(api: &Api<DynamicObject>, name: &str, conditions: serde_json::Value) {
    let w: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "waves.lockstep.dev/v1", "kind": "Widget",
        "metadata": { "name": name }, "spec": { "size": 0 } }))
    .unwrap();
    api.create(&Default::default(), &w).await.unwrap();
    set_status(api, name, 1, conditions).await;
}

#[tokio::test]
async fn waves_apply_in_order_and_wait_for_health() {
    let cp = ControlPlane::shared();
    let client = cp.client().await.unwrap();
    let ns = cp.namespace("waves").await.unwrap();
    let repo = tempfile::tempdir().unwrap();
    let r = repo.path();
    git(r, &["init", "-q"]);
    let write = |p: &str, text: &str| std::fs::write(r.join(p), text).unwrap();
    write("crd.yaml", WIDGET_CRD);
    write("db.yaml", &widget("db", "-1"));
    write(
        "first.yaml",
        &config_map("first", "argocd.argoproj.io/sync-wave", "-5"),
    );
    write("after.yaml", &config_map("after", "lockstep.dev/sync-wave", "1"));
    git(r, &["add", "-A"]);
    git(r, &["commit", "-qm", "waves"]);

    let cfg = Config {
        target_namespace: Some(ns.clone()),
        wait: Some(Duration::from_secs(30)),
        ..Config::new(format!("file://{}", r.display()), format!("{ns}.waves"))
    };
    let cache = GitCache::new(tempfile::tempdir().unwrap().keep());
    let widgets: Api<DynamicObject> = Api::namespaced_with(
        client.clone(),
        &ns,
        &ApiResource::from_gvk(&GroupVersionKind::gvk("waves.lockstep.dev", "v1", "Widget")),
    );
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), &ns);
    // The CRD (also in the repository) and the Widgets exist before, as an operator made them.
    std::fs::write(r.join("crd.yaml"), WIDGET_CRD).unwrap();
    cp.kubectl(&[
        "apply",
        "--server-side",
        "-f",
        r.join("crd.yaml").to_str().unwrap(),
    ]);
    cp.kubectl(&[
        "wait",
        "--for=condition=Established",
        "crd/widgets.waves.lockstep.dev",
    ]);
    let ready = json!([{ "type": "Ready", "status": "True", "message": "ok" }]);
    precreate(&widgets, "db", ready.clone()).await;
    precreate(
        &widgets,
        "broken",
        json!([{ "type": "Ready", "status": "True", "message": "ok" }]),
    )
    .await;

    // The sync waits at wave -1 until the Widget is Ready; wave 1 is not applied before.
    let sync = tokio::spawn({
        let (client, cache, cfg) = (client.clone(), cache.clone(), cfg.clone());
        async move { sync::sync_once(client, &cache, &cfg, &Keys::default(), &Inventory::default()).await }
    });
    for _ in 0..200 {
        let w = widgets.get("db").await.unwrap();
        if w.metadata.generation == Some(2) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    if sync.is_finished() {
        panic!(
            "the sync ended early: {:?}",
            sync.await.unwrap().map(|o| o.report.stages)
        );
    }
    assert!(
        cms.get_opt("first").await.unwrap().is_some(),
        "wave -5 before wave -1: {:?} {:?}",
        cms.list(&Default::default())
            .await
            .unwrap()
            .items
            .iter()
            .map(|c| c.metadata.name.clone())
            .collect::<Vec<_>>(),
        widgets.get("db").await.unwrap().metadata
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        cms.get_opt("after").await.unwrap().is_none(),
        "wave 1 waits for wave -1 to be healthy"
    );
    assert!(!sync.is_finished());
    set_status(&widgets, "db", 2, ready).await;
    let out = tokio::time::timeout(Duration::from_secs(20), sync)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(cms.get_opt("after").await.unwrap().is_some());
    let steps: Vec<(Stage, i64)> = out.report.stages.iter().map(|(s, w, _)| (*s, *w)).collect();
    assert_eq!(
        steps,
        [
            (Stage::Foundations, 0),
            (Stage::Workloads, -5),
            (Stage::Workloads, -1),
            (Stage::Workloads, 1)
        ]
    );

    // A Failed object fails the sync at once, naming it; the later wave is not applied.
    write("broken.yaml", &widget("broken", "0"));
    write("later.yaml", &config_map("later", "lockstep.dev/sync-wave", "2"));
    git(r, &["add", "-A"]);
    git(r, &["commit", "-qm", "broken"]);
    let inventory = out.inventory;
    let sync = tokio::spawn({
        let (client, cache, cfg, inventory) = (client.clone(), cache.clone(), cfg.clone(), inventory.clone());
        async move { sync::sync_once(client, &cache, &cfg, &Keys::default(), &inventory).await }
    });
    set_status(
        &widgets,
        "broken",
        2,
        json!([{ "type": "Stalled", "status": "True", "message": "size 1 is not allowed" }]),
    )
    .await;
    let started = std::time::Instant::now();
    let err = tokio::time::timeout(Duration::from_secs(20), sync)
        .await
        .unwrap()
        .unwrap()
        .unwrap_err()
        .to_string();
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "fail fast, not at the timeout"
    );
    assert!(
        err.contains("Widget")
            && err.contains("broken")
            && err.contains("Failed")
            && err.contains("size 1 is not allowed"),
        "{err}"
    );
    assert!(cms.get_opt("later").await.unwrap().is_none());

    // A wave that is not an integer: nothing applied, the file and annotation named.
    write("broken.yaml", &widget("broken", "soon"));
    write("new.yaml", &config_map("new", "lockstep.dev/sync-wave", "-9"));
    git(r, &["add", "-A"]);
    git(r, &["commit", "-qm", "bad wave"]);
    let err = sync::sync_once(client.clone(), &cache, &cfg, &Keys::default(), &inventory)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("broken.yaml") && err.contains("lockstep.dev/sync-wave") && err.contains("soon"),
        "{err}"
    );
    assert!(cms.get_opt("new").await.unwrap().is_none());
}
