//! One sync end to end on the real control plane, from a real Git repository over file://:
//! a SOPS Secret (made by real sops) and a SealedSecret (made by real kubeseal) exist before the
//! Deployment that mounts them; an unchanged resync writes nothing; a removed object is pruned;
//! a tampered SOPS file stops the sync with nothing pruned; the prune budget holds.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;
use std::process::Command;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::api::Api;
use lockstep_agent::plan::{Inventory, Stage};
use lockstep_agent::render::Keys;
use lockstep_agent::source::GitCache;
use lockstep_agent::sync::{self, Config};
use lockstep_formats::sealed::{self, KeyRing, UnsealingKey};
use lockstep_formats::sops::Identities;
use lockstep_tests::controlplane::ControlPlane;
use lockstep_tests::git;
use lockstep_tests::{AgeKey, peer, run};

const CANARY: &str = "CANARY-e2e-sync-value";

fn commit(dir: &Path, msg: &str) {
    git(dir, &["add", "-A"]);
    git(dir, &["commit", "-qm", msg]);
}

const SEALED_CRD: &str = r#"apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: sealedsecrets.bitnami.com
spec:
  group: bitnami.com
  scope: Namespaced
  names: {kind: SealedSecret, plural: sealedsecrets, singular: sealedsecret, listKind: SealedSecretList}
  versions:
    - name: v1alpha1
      served: true
      storage: true
      subresources: {status: {}}
      schema:
        openAPIV3Schema: {type: object, x-kubernetes-preserve-unknown-fields: true}
"#;

fn rv(o: &kube::api::ObjectMeta) -> u64 {
    o.resource_version.as_deref().unwrap().parse().unwrap()
}

#[tokio::test]
async fn secrets_first_prune_safely_and_stop_on_bad_sops() {
    let cp = ControlPlane::shared();
    let client = cp.client().await.unwrap();
    let ns = format!("e2e-{:06x}", rand_u32() & 0xffffff);
    let repo = tempfile::tempdir().unwrap();
    let r = repo.path();
    let w = |p: &str, text: &str| {
        let path = r.join(p);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    };
    git(r, &["init", "-q"]);

    // Keys: an age key (age-keygen) and a sealing key pair.
    let age = AgeKey::generate(r.parent().unwrap(), &format!("age-{ns}.txt"));
    let mut ids = Identities::new();
    ids.add_file(&age.path).unwrap();
    let (skey, scert) = sealed::generate_key_pair(2048, "e2e", 30).unwrap();
    std::fs::write(r.parent().unwrap().join(format!("{ns}.crt")), &scert).unwrap();
    let mut ring = KeyRing::new();
    ring.push(UnsealingKey::from_pem("e2e", &skey).unwrap());
    let keys = Keys {
        sops: Some(ids),
        sealed: Some(ring.into()),
    };

    w("deploy/crds/sealedsecrets.yaml", SEALED_CRD);
    w(
        "deploy/ns.yaml",
        &format!("apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {ns}\n"),
    );
    w(
        "deploy/app/cm.yaml",
        &format!(
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: settings\n  namespace: {ns}\ndata:\n  mode: blue\n"
        ),
    );
    w(
        "deploy/app/extra.yaml",
        &format!(
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: extra\n  namespace: {ns}\n---\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: extra2\n  namespace: {ns}\n"
        ),
    );
    w(
        "deploy/app/deployment.yaml",
        &format!(
            "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\n  namespace: {ns}\nspec:\n  selector: {{matchLabels: {{app: web}}}}\n  template:\n    metadata: {{labels: {{app: web}}}}\n    spec:\n      containers:\n        - name: web\n          image: registry.k8s.io/pause:3.10\n          envFrom: [{{secretRef: {{name: db}}}}, {{secretRef: {{name: api}}}}]\n"
        ),
    );
    // A SOPS Secret made by real sops.
    let plain = format!(
        "apiVersion: v1\nkind: Secret\nmetadata:\n  name: db\n  namespace: {ns}\nstringData:\n  password: {CANARY}\n"
    );
    w("deploy/app/db.sops.yaml", &plain);
    lockstep_tests::sops_encrypt(&[&r.join("deploy/app/db.sops.yaml")], &age.recipient, r);
    // A SealedSecret made by real kubeseal.
    let mut c = Command::new(peer("kubeseal"));
    c.current_dir(r)
        .args(["--cert"])
        .arg(r.parent().unwrap().join(format!("{ns}.crt")))
        .args(["-o", "yaml"]);
    let api_secret = format!(
        "apiVersion: v1\nkind: Secret\nmetadata:\n  name: api\n  namespace: {ns}\nstringData:\n  token: {CANARY}-token\n"
    );
    let out = run(&mut c, r, Some(api_secret.as_bytes()));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    w(
        "deploy/app/api.sealed.yaml",
        std::str::from_utf8(&out.stdout).unwrap(),
    );
    commit(r, "initial");

    let cache = GitCache::new(tempfile::tempdir().unwrap().keep());
    let cfg = Config {
        path: "deploy".into(),
        ..Config::new(format!("file://{}", r.display()), format!("lockstep-system.{ns}"))
    };

    // 1. Everything applied, secrets before the workload that mounts them.
    let out = sync::sync_once(client.clone(), &cache, &cfg, &keys, &Inventory::default())
        .await
        .unwrap();
    let stages: Vec<Stage> = out.report.stages.iter().map(|(s, _, _)| *s).collect();
    assert_eq!(stages, [Stage::Foundations, Stage::Secrets, Stage::Workloads]);
    assert_eq!(out.report.applied.len(), 9, "{:?}", out.report.applied);
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns);
    let db = secrets.get("db").await.unwrap();
    let api = secrets.get("api").await.unwrap();
    assert_eq!(db.data.as_ref().unwrap()["password"].0, CANARY.as_bytes());
    assert_eq!(
        api.data.as_ref().unwrap()["token"].0,
        format!("{CANARY}-token").as_bytes()
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
        !format!("{out:?}").contains(CANARY),
        "no secret value in the outcome"
    );

    // 2. A resync of the same commit writes nothing.
    let again = sync::sync_once(client.clone(), &cache, &cfg, &keys, &out.inventory)
        .await
        .unwrap();
    assert!(again.report.applied.is_empty(), "{:?}", again.report.applied);
    assert_eq!(again.report.unchanged, 9);

    // 3. A removed object is pruned.
    std::fs::remove_file(r.join("deploy/app/cm.yaml")).unwrap();
    commit(r, "drop settings");
    let pruned = sync::sync_once(client.clone(), &cache, &cfg, &keys, &again.inventory)
        .await
        .unwrap();
    assert_eq!(
        pruned.pruned.iter().map(|i| i.name.as_str()).collect::<Vec<_>>(),
        ["settings"]
    );
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), &ns);
    assert!(cms.get_opt("settings").await.unwrap().is_none());

    // 4. A tampered SOPS file stops the sync: nothing applied from that commit, nothing pruned.
    let enc = std::fs::read_to_string(r.join("deploy/app/db.sops.yaml")).unwrap();
    std::fs::write(
        r.join("deploy/app/db.sops.yaml"),
        enc.replace("name: db", "name: db\n    labels: {tampered: \"true\"}"),
    )
    .unwrap();
    std::fs::remove_file(r.join("deploy/app/extra.yaml")).unwrap();
    commit(r, "tamper");
    let err = sync::sync_once(client.clone(), &cache, &cfg, &keys, &pruned.inventory)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("app/db.sops.yaml") && err.contains("MAC mismatch"),
        "{err}"
    );
    assert!(!err.contains(CANARY));
    assert!(
        cms.get_opt("extra").await.unwrap().is_some(),
        "nothing may be pruned after a failed decryption"
    );

    // 5. Repaired, the removal of half the inventory exceeds the budget: refused, nothing deleted.
    std::fs::write(r.join("deploy/app/db.sops.yaml"), &enc).unwrap();
    for f in ["deploy/app/deployment.yaml", "deploy/app/api.sealed.yaml"] {
        std::fs::remove_file(r.join(f)).unwrap();
    }
    commit(r, "remove most");
    let err = sync::sync_once(client.clone(), &cache, &cfg, &keys, &pruned.inventory)
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("refusing to prune 5 of 8 objects"), "{err}");
    assert!(cms.get_opt("extra").await.unwrap().is_some());
    let mut allow = cfg.clone();
    allow.allow_mass_deletion = true;
    let done = sync::sync_once(client.clone(), &cache, &allow, &keys, &pruned.inventory)
        .await
        .unwrap();
    assert_eq!(done.pruned.len(), 5, "{:?}", done.pruned);
    assert!(cms.get_opt("extra").await.unwrap().is_none());
}

fn rand_u32() -> u32 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos()
}
