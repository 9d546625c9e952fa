//! Sync waves and health waits on the real control plane: `lockstep.dev/sync-wave` and Argo CD's
//! `argocd.argoproj.io/sync-wave` order objects within a stage; with `wait`, a wave's objects must
//! be healthy (kstatus) before the next wave is applied; a `Failed` object fails the sync at once
//! and later waves are not applied; a wave annotation that is not an integer stops the sync
//! before anything is applied, naming the file and annotation.

use std::time::Duration;

use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, DynamicObject, GroupVersionKind, Patch, PatchParams};
use kube::discovery::ApiResource;
use lockstep_agent::plan::{Inventory, Stage};
use lockstep_agent::secrets::DecryptionKeys as Keys;
use lockstep_agent::source::GitCache;
use lockstep_agent::sync::{self, Config};
use serde_json::json;

use super::fixtures::{Repo, setup, test_crd};

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

/// A Sync of a repository with the Widget CRD, waiting for health (30 s a wave), and the
/// Widget CRD established in the cluster as an operator installed it.
struct Waves {
    repo: Repo,
    cfg: Config,
    cache: GitCache,
    widgets: Api<DynamicObject>,
    cms: Api<ConfigMap>,
    client: kube::Client,
    _dir: tempfile::TempDir,
}

impl Waves {
    async fn new(prefix: &str) -> Self {
        let (client, ns) = setup(prefix).await;
        let dir = tempfile::tempdir().unwrap();
        let repo = Repo::new();
        repo.write("crd.yaml", &test_crd("waves.lockstep.dev", "Widget"));
        let cfg = Config {
            target_namespace: Some(ns.clone()),
            wait: Some(Duration::from_secs(30)),
            ..Config::new(repo.url(), format!("{ns}.waves"))
        };
        let widgets = Api::namespaced_with(
            client.clone(),
            &ns,
            &ApiResource::from_gvk(&GroupVersionKind::gvk("waves.lockstep.dev", "v1", "Widget")),
        );
        let cms = Api::namespaced(client.clone(), &ns);
        Self {
            repo,
            cfg,
            cache: GitCache::new(dir.path().join("cache")),
            widgets,
            cms,
            client,
            _dir: dir,
        }
    }

    fn spawn(&self, last: &Inventory) -> tokio::task::JoinHandle<Result<sync::Outcome, sync::Error>> {
        let (client, cache, cfg, last) = (
            self.client.clone(),
            self.cache.clone(),
            self.cfg.clone(),
            last.clone(),
        );
        tokio::spawn(async move { sync::sync_once(client, &cache, &cfg, &Keys::default(), &last).await })
    }

    async fn exists(&self, cm: &str) -> bool {
        self.cms.get_opt(cm).await.unwrap().is_some()
    }
}

fn ok() -> serde_json::Value {
    json!([{ "type": "Ready", "status": "True", "message": "ok" }])
}

#[tokio::test]
async fn waves_apply_in_order_each_waiting_for_the_last_to_be_healthy() {
    let w = Waves::new("waves").await;
    w.repo
        .write("db.yaml", &widget("db", "-1"))
        .write(
            "first.yaml",
            &config_map("first", "argocd.argoproj.io/sync-wave", "-5"),
        )
        .write("after.yaml", &config_map("after", "lockstep.dev/sync-wave", "1"));
    w.repo.commit("waves");
    precreate(&w.widgets, "db", ok()).await;
    // The sync waits at wave -1 until the Widget is Ready; wave 1 is not applied before.
    let sync = w.spawn(&Inventory::default());
    for _ in 0..200 {
        if w.widgets.get("db").await.unwrap().metadata.generation == Some(2) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(!sync.is_finished(), "the sync ended early");
    assert!(w.exists("first").await, "wave -5 before wave -1");
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(!w.exists("after").await, "wave 1 waits for wave -1 to be healthy");
    assert!(!sync.is_finished());
    set_status(&w.widgets, "db", 2, ok()).await;
    let out = tokio::time::timeout(Duration::from_secs(20), sync)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(w.exists("after").await);
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
}

#[tokio::test]
async fn a_failed_object_fails_the_sync_at_once_and_later_waves_wait() {
    let w = Waves::new("waves-failed").await;
    w.repo
        .write("broken.yaml", &widget("broken", "0"))
        .write("later.yaml", &config_map("later", "lockstep.dev/sync-wave", "2"));
    w.repo.commit("broken");
    precreate(&w.widgets, "broken", ok()).await;
    let sync = w.spawn(&Inventory::default());
    set_status(
        &w.widgets,
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
    assert!(!w.exists("later").await);
}

#[tokio::test]
async fn a_wave_that_is_not_an_integer_applies_nothing() {
    let w = Waves::new("waves-bad").await;
    w.repo
        .write("broken.yaml", &widget("broken", "soon"))
        .write("new.yaml", &config_map("new", "lockstep.dev/sync-wave", "-9"));
    w.repo.commit("bad wave");
    let err = sync::sync_once(
        w.client.clone(),
        &w.cache,
        &w.cfg,
        &Keys::default(),
        &Inventory::default(),
    )
    .await
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("broken.yaml") && err.contains("lockstep.dev/sync-wave") && err.contains("soon"),
        "{err}"
    );
    assert!(!w.exists("new").await);
}
