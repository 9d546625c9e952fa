//! Health, waits and dependencies through the Sync controller on the real control plane:
//!
//! * the `Healthy` condition follows a rollout after the sync (Unknown while a custom resource
//!   is in progress, True once its operator reports it ready), with no wait configured;
//! * a health wait (`wait: true`, a 10-minute timeout) never holds a newer revision back: a
//!   reconcile request (what a webhook sets) cuts it short at once, and a new commit found by
//!   the interval's poll cuts it short too; nothing of the old revision's later waves is
//!   applied, and the history records `HealthCheckCanceled`;
//! * `dependsOn`: a Sync waits (`DependencyNotReady`, naming why) until its dependency is
//!   Ready and Healthy, and is applied as soon as it is; a cycle stalls both;
//! * a Deployment whose `spec.replicas` a real HorizontalPodAutoscaler owns (kube-controller-
//!   manager's HPA controller scales it to `minReplicas`) keeps the HPA's value, with an ignore
//!   rule, and no correction is counted.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, DynamicObject, GroupVersionKind, Patch, PatchParams, PostParams};
use kube::discovery::ApiResource;
use lockstep_agent::api::{Condition, Sync};
use lockstep_agent::controller::{self, Context, RECONCILE_ANNOTATION};
use lockstep_agent::source::GitCache;
use lockstep_tests::controlplane::ControlPlane;
use lockstep_tests::{eventually, git};
use serde_json::json;

const GADGET_CRD: &str = r#"apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: gadgets.health.lockstep.dev
spec:
  group: health.lockstep.dev
  scope: Namespaced
  names: {kind: Gadget, plural: gadgets, singular: gadget, listKind: GadgetList}
  versions:
    - name: v1
      served: true
      storage: true
      subresources: {status: {}}
      schema:
        openAPIV3Schema: {type: object, x-kubernetes-preserve-unknown-fields: true}
"#;

fn gadget(name: &str, wave: i64) -> String {
    format!(
        "apiVersion: health.lockstep.dev/v1\nkind: Gadget\nmetadata:\n  name: {name}\n  annotations:\n    lockstep.dev/sync-wave: \"{wave}\"\nspec:\n  size: 1\n"
    )
}

fn config_map(name: &str, wave: i64) -> String {
    format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {name}\n  annotations:\n    lockstep.dev/sync-wave: \"{wave}\"\ndata:\n  a: b\n"
    )
}

/// A repository in a temporary directory; `write` then `commit`.
struct Repo(tempfile::TempDir);

impl Repo {
    fn new() -> Self {
        let r = Self(tempfile::tempdir().unwrap());
        git(r.path(), &["init", "-q"]);
        r
    }
    fn path(&self) -> &Path {
        self.0.path()
    }
    fn url(&self) -> String {
        format!("file://{}", self.path().display())
    }
    fn write(&self, file: &str, text: &str) {
        std::fs::write(self.path().join(file), text).unwrap();
    }
    fn remove(&self, file: &str) {
        std::fs::remove_file(self.path().join(file)).unwrap();
    }
    fn commit(&self, msg: &str) -> String {
        git(self.path(), &["add", "-A"]);
        git(self.path(), &["commit", "-qm", msg]);
        git(self.path(), &["rev-parse", "HEAD"])
    }
}

/// Creates a Gadget as its operator would have (generation 1 observed, `Ready: False`), so
/// that the sync's change (`spec.size: 1`) is a rollout in progress until the test says.
async fn precreate(api: &Api<DynamicObject>, name: &str) {
    let g: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "health.lockstep.dev/v1", "kind": "Gadget",
        "metadata": { "name": name }, "spec": { "size": 0 } }))
    .unwrap();
    api.create(&PostParams::default(), &g).await.unwrap();
    report(api, name, 1, "False").await;
}

/// Writes a Gadget's status as its operator: `Ready` for `generation`.
async fn report(api: &Api<DynamicObject>, name: &str, generation: i64, ready: &str) {
    let status = json!({ "status": { "observedGeneration": generation,
        "conditions": [{ "type": "Ready", "status": ready, "reason": "R", "message": format!("ready: {ready}") }] } });
    api.patch_status(name, &PatchParams::default(), &Patch::Merge(&status))
        .await
        .unwrap();
}

fn condition(s: &Sync, type_: &str) -> Option<Condition> {
    s.status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == type_)
        .cloned()
}

fn sync(name: &str, url: &str, ns: &str, extra: serde_json::Value) -> Sync {
    let mut spec = json!({ "source": { "url": url, "interval": "1h" }, "targetNamespace": ns });
    if let (Some(spec), Some(extra)) = (spec.as_object_mut(), extra.as_object()) {
        for (k, v) in extra {
            if k == "interval" {
                spec["source"]["interval"] = v.clone();
            } else {
                spec.insert(k.clone(), v.clone());
            }
        }
    }
    serde_json::from_value(json!({
        "apiVersion": "lockstep.dev/v1alpha1", "kind": "Sync", "metadata": { "name": name }, "spec": spec
    }))
    .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn health_conditions_cancelled_waits_dependencies_and_hpa_owned_replicas() {
    let cp = ControlPlane::shared();
    let client = cp.client().await.unwrap();
    let ns = cp.namespace("health").await.unwrap();
    let _ = tracing_subscriber::fmt()
        .with_env_filter("lockstep_agent=info")
        .with_test_writer()
        .try_init();
    let crds = Path::new(env!("CARGO_MANIFEST_DIR")).join("../crds/sync.yaml");
    lockstep_tests::controlplane::apply_crds(&client, &crds).await;
    let crd_file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(crd_file.path(), GADGET_CRD).unwrap();
    lockstep_tests::controlplane::apply_crds(&client, crd_file.path()).await;

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
    let handle = tokio::spawn(controller::run(Arc::new(ctx), drifted));
    let syncs: Api<Sync> = Api::namespaced(client.clone(), &ns);
    let gadgets: Api<DynamicObject> = Api::namespaced_with(
        client.clone(),
        &ns,
        &ApiResource::from_gvk(&GroupVersionKind::gvk("health.lockstep.dev", "v1", "Gadget")),
    );
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), &ns);
    let cm_exists = async |name: &str| cms.get_opt(name).await.unwrap().is_some();
    let get = async |name: &str| syncs.get(name).await.unwrap();

    // 1. Healthy follows a rollout after the sync, without a wait.
    let repo = Repo::new();
    repo.write("g.yaml", &gadget("rolling", 0));
    repo.commit("one");
    precreate(&gadgets, "rolling").await;
    syncs
        .create(
            &PostParams::default(),
            &sync("rollout", &repo.url(), &ns, json!({})),
        )
        .await
        .unwrap();
    let healthy = eventually(30, "Healthy Unknown while the Gadget rolls out", || async {
        let s = get("rollout").await;
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
    eventually(15, "Healthy True once the operator reports ready", || async {
        let c = condition(&get("rollout").await, "Healthy")?;
        (c.status == "True").then_some(())
    })
    .await;
    eprintln!(
        "Healthy followed the rollout {:.2} s after it finished",
        t.elapsed().as_secs_f64()
    );

    // 2. A wait cut short by a reconcile request (as a webhook sets it).
    let repo = Repo::new();
    repo.write("g.yaml", &gadget("stuck", 0));
    repo.write("later.yaml", &config_map("later", 1));
    repo.commit("one");
    precreate(&gadgets, "stuck").await;
    syncs
        .create(
            &PostParams::default(),
            &sync(
                "waiting",
                &repo.url(),
                &ns,
                json!({ "wait": true, "timeout": "10m" }),
            ),
        )
        .await
        .unwrap();
    eventually(30, "the wait to begin", || async {
        let g = gadgets.get_opt("stuck").await.unwrap()?;
        (g.metadata.generation == Some(2)).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(!cm_exists("later").await, "wave 1 waits for wave 0");
    repo.remove("g.yaml");
    repo.write("fixed.yaml", &config_map("fixed", 0));
    let fixed = repo.commit("two");
    let t = Instant::now();
    syncs
        .patch(
            "waiting",
            &PatchParams::default(),
            &Patch::Merge(json!({ "metadata": { "annotations": { RECONCILE_ANNOTATION: "now" } } })),
        )
        .await
        .unwrap();
    eventually(20, "the new revision applied", || async {
        let s = get("waiting").await;
        let rev = s.status?.last_applied_revision?;
        rev.ends_with(&fixed).then_some(())
    })
    .await;
    let cut = t.elapsed();
    eprintln!(
        "a reconcile request cut the wait short: new revision applied {:.2} s later",
        cut.as_secs_f64()
    );
    assert!(cut < Duration::from_secs(5), "{cut:?}");
    assert!(cm_exists("fixed").await && cm_exists("later").await);
    let history: Vec<String> = get("waiting")
        .await
        .status
        .unwrap()
        .history
        .iter()
        .map(|h| h.result.clone())
        .collect();
    assert_eq!(history[..2], ["Succeeded", "HealthCheckCanceled"], "{history:?}");

    // 3. A wait cut short by a new commit the interval's poll finds (no request at all).
    let repo = Repo::new();
    repo.write("g.yaml", &gadget("polled", 0));
    repo.write("later.yaml", &config_map("polled-later", 1));
    repo.commit("one");
    precreate(&gadgets, "polled").await;
    syncs
        .create(
            &PostParams::default(),
            &sync(
                "polling",
                &repo.url(),
                &ns,
                json!({ "wait": true, "timeout": "10m", "interval": "2s" }),
            ),
        )
        .await
        .unwrap();
    eventually(30, "the poll wait to begin", || async {
        let g = gadgets.get_opt("polled").await.unwrap()?;
        (g.metadata.generation == Some(2)).then_some(())
    })
    .await;
    repo.remove("g.yaml");
    let second = repo.commit("two");
    let t = Instant::now();
    eventually(20, "the polled revision applied", || async {
        let rev = get("polling").await.status?.last_applied_revision?;
        rev.ends_with(&second).then_some(())
    })
    .await;
    eprintln!(
        "a polled commit cut the wait short: applied {:.2} s after the push (interval 2 s)",
        t.elapsed().as_secs_f64()
    );
    assert!(t.elapsed() < Duration::from_secs(8));

    // 4. dependsOn: app waits for infra to be Ready and Healthy.
    let infra = Repo::new();
    infra.write("g.yaml", &gadget("platform", 0));
    infra.commit("infra");
    let app = Repo::new();
    app.write("cm.yaml", &config_map("app", 0));
    app.commit("app");
    precreate(&gadgets, "platform").await;
    syncs
        .create(
            &PostParams::default(),
            &sync(
                "app",
                &app.url(),
                &ns,
                json!({ "dependsOn": [{ "name": "infra" }] }),
            ),
        )
        .await
        .unwrap();
    let waiting = eventually(20, "app waiting for infra", || async {
        let c = condition(&get("app").await, "Ready")?;
        (c.reason == "DependencyNotReady").then_some(c)
    })
    .await;
    assert_eq!(waiting.message, format!("dependency {ns}/infra does not exist"));
    syncs
        .create(
            &PostParams::default(),
            &sync("infra", &infra.url(), &ns, json!({})),
        )
        .await
        .unwrap();
    let waiting = eventually(20, "app waiting for infra's health", || async {
        let c = condition(&get("app").await, "Ready")?;
        c.message.contains("is not healthy").then_some(c)
    })
    .await;
    assert!(waiting.message.contains("Gadget"), "{}", waiting.message);
    assert!(
        !cm_exists("app").await,
        "nothing of app is applied before infra is healthy"
    );
    report(&gadgets, "platform", 2, "True").await;
    let healthy_at = eventually(20, "infra healthy", || async {
        let c = condition(&get("infra").await, "Healthy")?;
        (c.status == "True").then(Instant::now)
    })
    .await;
    eventually(10, "app applied", || async {
        cm_exists("app").await.then_some(())
    })
    .await;
    let after = healthy_at.elapsed();
    eprintln!(
        "dependsOn: app applied {:.2} s after infra became healthy",
        after.as_secs_f64()
    );
    assert!(after < Duration::from_secs(3), "{after:?}");
    eventually(10, "app Ready", || async {
        (condition(&get("app").await, "Ready")?.status == "True").then_some(())
    })
    .await;

    // A cycle stalls: infra now depends on app.
    syncs
        .patch(
            "infra",
            &PatchParams::default(),
            &Patch::Merge(json!({ "spec": { "dependsOn": [{ "name": "app" }] } })),
        )
        .await
        .unwrap();
    let stalled = eventually(20, "the cycle stalls infra", || async {
        let c = condition(&get("infra").await, "Stalled")?;
        (c.status == "True").then_some(c)
    })
    .await;
    assert_eq!(
        stalled.message,
        format!("spec.dependsOn: the dependencies form a cycle: {ns}/infra → {ns}/app → {ns}/infra")
    );

    // 5. A real HPA owns web's replicas; Lockstep leaves them alone (ignore rule), quietly.
    let scaled = Repo::new();
    scaled.write(
        "web.yaml",
        "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\nspec:\n  replicas: 1\n  selector:\n    matchLabels: {app: web}\n  template:\n    metadata:\n      labels: {app: web}\n    spec:\n      containers:\n        - name: c\n          image: registry.k8s.io/pause:3.10\n          resources: {requests: {cpu: 10m}}\n",
    );
    scaled.write(
        "hpa.yaml",
        "apiVersion: autoscaling/v2\nkind: HorizontalPodAutoscaler\nmetadata:\n  name: web\nspec:\n  scaleTargetRef: {apiVersion: apps/v1, kind: Deployment, name: web}\n  minReplicas: 3\n  maxReplicas: 5\n  metrics:\n    - type: Resource\n      resource: {name: cpu, target: {type: Utilization, averageUtilization: 80}}\n",
    );
    scaled.commit("hpa");
    syncs
        .create(
            &PostParams::default(),
            &sync(
                "scaled",
                &scaled.url(),
                &ns,
                json!({ "ignore": [{ "target": { "group": "apps", "kind": "Deployment", "name": "web" }, "jsonPointers": ["/spec/replicas"] }] }),
            ),
        )
        .await
        .unwrap();
    let deploys: Api<Deployment> = Api::namespaced(client.clone(), &ns);
    let replicas = async || {
        deploys
            .get_opt("web")
            .await
            .unwrap()
            .and_then(|d| d.spec?.replicas)
    };
    eventually(60, "the HPA to scale web to its minimum", || async {
        (replicas().await == Some(3)).then_some(())
    })
    .await;
    let managers: Vec<String> = deploys
        .get("web")
        .await
        .unwrap()
        .metadata
        .managed_fields
        .unwrap_or_default()
        .into_iter()
        .map(|m| {
            format!(
                "{}/{}",
                m.manager.unwrap_or_default(),
                m.subresource.unwrap_or_default()
            )
        })
        .collect();
    let hpas: Api<k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler> =
        Api::namespaced(client.clone(), &ns);
    let desired = hpas.get("web").await.unwrap().status.unwrap().desired_replicas;
    assert_eq!(desired, 3, "the HPA itself asked for 3");
    eprintln!("the HPA scaled web to 3 (managers: {managers:?})");
    // A few HPA syncs (every 2 s) and a resync later, still the HPA's 3, and no correction.
    syncs
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
    let text = metrics.encode();
    let corrected = text
        .lines()
        .find(|l| l.starts_with("lockstep_drift_corrections_total{") && l.contains("name=\"scaled\""))
        .and_then(|l| l.rsplit(' ').next())
        .map_or(0.0, |v| v.parse::<f64>().unwrap());
    assert_eq!(corrected, 0.0, "{text}");
    handle.abort();
}
