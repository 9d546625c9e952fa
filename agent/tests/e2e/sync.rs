//! One sync end to end, from a real Git repository: a SOPS Secret (made by real sops) and a
//! SealedSecret (made by real kubeseal) exist before the Deployment that mounts them, and an
//! unchanged resync writes nothing; through the Sync controller, a Sync becomes Ready with its
//! revision and inventory, and a Sync in Git defines another (app of apps).

use std::process::Command;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::api::Api;
use lockstep_agent::plan::{Inventory, Stage};
use lockstep_agent::secrets::DecryptionKeys;
use lockstep_agent::source::GitCache;
use lockstep_agent::sync::{self, Config};
use lockstep_formats::sealed::{self, KeyRing, UnsealingKey};
use lockstep_formats::sops::Identities;
use lockstep_tests::{peer, run};
use serde_json::json;

use super::fixtures::{AgeKey, Controller, Repo, age_secret, create, setup, sync, wait_ready};

/// An application with every kind of secret a revision can carry: a Namespace, ConfigMaps, a
/// SOPS Secret, a SealedSecret and a Deployment mounting both Secrets.
pub struct App {
    /// The repository.
    pub repo: Repo,
    /// The keys that open its secrets.
    pub keys: DecryptionKeys,
    /// A sync of its `deploy/` directory.
    pub cfg: Config,
    /// The Git cache.
    pub cache: GitCache,
    /// The SOPS Secret's value.
    pub canary: String,
    _dir: tempfile::TempDir,
}

impl App {
    /// Writes and commits the application for namespace `ns`.
    pub fn new(ns: &str) -> Self {
        let canary = format!("CANARY-sync-{ns}");
        let dir = tempfile::tempdir().unwrap();
        let repo = Repo::new();
        let age = AgeKey::generate(dir.path(), "age.txt");
        let mut ids = Identities::new();
        ids.add_file(&age.path).unwrap();
        let (skey, scert) = sealed::generate_key_pair(2048, "e2e", 30).unwrap();
        let cert = dir.path().join("sealing.crt");
        std::fs::write(&cert, &scert).unwrap();
        let mut ring = KeyRing::new();
        ring.push(UnsealingKey::from_pem("e2e", &skey).unwrap());
        repo.write("deploy/ns.yaml", &format!("apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {ns}\n"))
            .write(
                "deploy/app/cm.yaml",
                &format!("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: settings\n  namespace: {ns}\ndata:\n  mode: blue\n"),
            )
            .write(
                "deploy/app/extra.yaml",
                &format!(
                    "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: extra\n  namespace: {ns}\n---\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: extra2\n  namespace: {ns}\n"
                ),
            )
            .write(
                "deploy/app/deployment.yaml",
                &format!(
                    "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\n  namespace: {ns}\nspec:\n  selector: {{matchLabels: {{app: web}}}}\n  template:\n    metadata: {{labels: {{app: web}}}}\n    spec:\n      containers:\n        - name: web\n          image: registry.k8s.io/pause:3.10\n          envFrom: [{{secretRef: {{name: db}}}}, {{secretRef: {{name: api}}}}]\n"
                ),
            )
            .write_sops(
                "deploy/app/db.sops.yaml",
                &format!(
                    "apiVersion: v1\nkind: Secret\nmetadata:\n  name: db\n  namespace: {ns}\nstringData:\n  password: {canary}\n"
                ),
                &age,
            );
        // A SealedSecret made by real kubeseal.
        let mut c = Command::new(peer("kubeseal"));
        c.current_dir(dir.path())
            .arg("--cert")
            .arg(&cert)
            .args(["-o", "yaml"]);
        let api_secret = format!(
            "apiVersion: v1\nkind: Secret\nmetadata:\n  name: api\n  namespace: {ns}\nstringData:\n  token: {canary}-token\n"
        );
        let sealed = lockstep_tests::ok(run(&mut c, dir.path(), Some(api_secret.as_bytes())), "kubeseal");
        repo.write(
            "deploy/app/api.sealed.yaml",
            std::str::from_utf8(&sealed).unwrap(),
        );
        repo.commit("initial");
        let cfg = Config {
            path: "deploy".into(),
            ..Config::new(repo.url(), format!("lockstep-system.{ns}"))
        };
        Self {
            repo,
            keys: DecryptionKeys {
                sops: Some(ids),
                sealed: Some(ring.into()),
            },
            cfg,
            cache: GitCache::new(dir.path().join("cache")),
            canary,
            _dir: dir,
        }
    }

    /// One sync of the repository's head after `last`.
    pub async fn sync(&self, client: &kube::Client, last: &Inventory) -> Result<sync::Outcome, sync::Error> {
        sync::sync_once(client.clone(), &self.cache, &self.cfg, &self.keys, last).await
    }
}

fn rv(o: &kube::api::ObjectMeta) -> u64 {
    o.resource_version.as_deref().unwrap().parse().unwrap()
}

#[tokio::test]
async fn secrets_exist_before_the_workloads_that_mount_them() {
    let (client, ns) = setup("sync").await;
    let app = App::new(&ns);
    let out = app.sync(&client, &Inventory::default()).await.unwrap();
    let stages: Vec<Stage> = out.report.stages.iter().map(|(s, _, _)| *s).collect();
    assert_eq!(stages, [Stage::Foundations, Stage::Secrets, Stage::Workloads]);
    assert_eq!(out.report.applied.len(), 8, "{:?}", out.report.applied);
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns);
    let db = secrets.get("db").await.unwrap();
    let api = secrets.get("api").await.unwrap();
    assert_eq!(db.data.as_ref().unwrap()["password"].0, app.canary.as_bytes());
    assert_eq!(
        api.data.as_ref().unwrap()["token"].0,
        format!("{}-token", app.canary).as_bytes()
    );
    let deploy = Api::<Deployment>::namespaced(client.clone(), &ns)
        .get("web")
        .await
        .unwrap();
    assert!(
        rv(&db.metadata) < rv(&deploy.metadata) && rv(&api.metadata) < rv(&deploy.metadata),
        "secrets exist before the Deployment"
    );
    assert!(
        !format!("{out:?}").contains(&app.canary),
        "no secret value in the outcome"
    );
    // The inventory holds hashes of the ciphertext, never of a value.
    let st = serde_json::to_string(&out.inventory).unwrap();
    assert!(!st.contains(&app.canary));
}

#[tokio::test]
async fn an_unchanged_resync_writes_nothing() {
    let (client, ns) = setup("resync").await;
    let app = App::new(&ns);
    let first = app.sync(&client, &Inventory::default()).await.unwrap();
    let again = app.sync(&client, &first.inventory).await.unwrap();
    assert!(again.report.applied.is_empty(), "{:?}", again.report.applied);
    assert_eq!(again.report.unchanged, 8);
    assert_eq!(again.inventory, first.inventory);
}

#[tokio::test]
async fn a_sync_becomes_ready_with_its_revision_and_inventory() {
    let (client, ns) = setup("ready").await;
    let dir = tempfile::tempdir().unwrap();
    let age = AgeKey::generate(dir.path(), "age.txt");
    let canary = format!("CANARY-ready-{ns}");
    let repo = Repo::new();
    repo.write(
        "app/cm.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: settings\ndata:\n  mode: blue\n",
    )
    .write_sops(
        "app/db.sops.yaml",
        &format!("apiVersion: v1\nkind: Secret\nmetadata:\n  name: db\nstringData:\n  password: {canary}\n"),
        &age,
    );
    let commit = repo.commit("one");
    age_secret(&client, &ns, &age).await;
    let _ctl = Controller::start(&client, &ns).await;
    create(
        &client,
        &ns,
        &sync(
            "app",
            &repo.url(),
            json!({ "source": { "path": "app", "interval": "1s" },
                    "decryption": { "sops": { "secretRef": { "name": "sops-age" } } }, "targetNamespace": ns }),
        ),
    )
    .await;
    let s = wait_ready(&client, &ns, "app", "True", 60).await;
    let st = s.status.clone().unwrap();
    assert_eq!(
        st.last_applied_revision.as_deref(),
        Some(format!("main@sha1:{commit}").as_str())
    );
    assert_eq!(st.inventory.len(), 2);
    assert_eq!((st.failures, st.history[0].result.as_str()), (0, "Succeeded"));
    let db = Api::<Secret>::namespaced(client.clone(), &ns)
        .get("db")
        .await
        .unwrap();
    assert_eq!(db.data.unwrap()["password"].0, canary.as_bytes());
    assert!(!serde_json::to_string(&s).unwrap().contains(&canary));
}

#[tokio::test]
async fn a_sync_in_git_defines_another_that_creates_its_namespace() {
    let (client, ns) = setup("apps").await;
    let child_ns = format!("{ns}-child");
    let repo = Repo::new();
    repo.write("child/cm.yaml", "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: from-child\n")
        .write(
            "app/child-sync.yaml",
            &format!(
                "apiVersion: lockstep.dev/v1alpha1\nkind: Sync\nmetadata:\n  name: child\nspec:\n  source:\n    url: {}\n    path: child\n    interval: 1s\n  targetNamespace: {child_ns}\n  createNamespace: true\n",
                repo.url()
            ),
        );
    repo.commit("app of apps");
    let _ctl = Controller::start(&client, &ns).await;
    create(
        &client,
        &ns,
        &sync(
            "app",
            &repo.url(),
            json!({ "source": { "path": "app", "interval": "1s" }, "targetNamespace": ns }),
        ),
    )
    .await;
    wait_ready(&client, &ns, "child", "True", 60).await;
    let cm = Api::<ConfigMap>::namespaced(client.clone(), &child_ns)
        .get("from-child")
        .await
        .unwrap();
    assert_eq!(
        cm.metadata.labels.unwrap()["lockstep.dev/sync"],
        format!("{ns}.child")
    );
    let child = wait_ready(&client, &ns, "child", "True", 10).await;
    let kinds: Vec<String> = child
        .status
        .unwrap()
        .inventory
        .iter()
        .map(|e| e.kind.clone())
        .collect();
    assert_eq!(
        kinds,
        ["ConfigMap", "Namespace"],
        "the namespace it created is its own"
    );
}
