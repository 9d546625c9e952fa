//! A kustomize overlay tree synced by the controller, built by kustomize's engine in the helper:
//! a base with a SOPS Secret (real sops), a secretGenerator over a SOPS dotenv file and a
//! SealedSecret (real kubeseal), under an overlay with a name prefix and labels. Secrets are
//! applied before the workload; an unchanged poll and drift healing start no build; a tampered
//! original, a patched `ENC[]` and a remote base each stall the Sync naming the file, nothing
//! pruned; the canaries are in no log, status, event or file.

use std::path::Path;
use std::process::Command;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, ListParams, Patch, PatchParams};
use lockstep_agent::api::Sync;
use lockstep_formats::sealed::{self, KeyRing, UnsealingKey};
use lockstep_tests::{eventually, peer, run};
use serde_json::json;

use super::fixtures::{
    AgeKey, Controller, ControllerOptions, Repo, age_secret, condition, create, logs, ready, setup, sync,
    wait_for, wait_ready,
};

const OVERLAY: &str = "resources:\n- ../../base\nnamePrefix: prod-\nlabels:\n- pairs:\n    env: prod\n";

struct Tree {
    repo: Repo,
    canary: String,
    /// The sealing key (PEM) the SealedSecret is sealed for.
    sealing_key: String,
    _dir: tempfile::TempDir,
}

impl Tree {
    /// The agent's sealing keys: the one the SealedSecret is sealed for.
    fn sealing(&self) -> lockstep_agent::secrets::sealing::SealingKeys {
        let mut ring = KeyRing::new();
        ring.push(UnsealingKey::from_pem("e2e", &self.sealing_key).unwrap());
        lockstep_agent::secrets::sealing::SealingKeys {
            ring: std::sync::Arc::new(ring),
            newest: None,
        }
    }
}

impl Tree {
    fn new(ns: &str, age: &AgeKey) -> Self {
        let canary = format!("CANARY-kustomize-{ns}");
        let dir = tempfile::tempdir().unwrap();
        let repo = Repo::new();
        repo.write(
            "base/kustomization.yaml",
            &format!(
                "namespace: {ns}\nresources:\n- deploy.yaml\n- db.sops.yaml\n- api.sealed.yaml\nsecretGenerator:\n- name: app-env\n  envs:\n  - app.env\n"
            ),
        )
        .write(
            "base/deploy.yaml",
            "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\nspec:\n  selector: {matchLabels: {app: web}}\n  template:\n    metadata: {labels: {app: web}}\n    spec:\n      containers:\n        - name: web\n          image: registry.k8s.io/pause:3.10\n          envFrom: [{secretRef: {name: db}}, {secretRef: {name: app-env}}, {secretRef: {name: prod-api}}]\n",
        )
        .write_sops(
            "base/db.sops.yaml",
            &format!("apiVersion: v1\nkind: Secret\nmetadata:\n  name: db\nstringData:\n  password: {canary}-db\n"),
            age,
        )
        .write("base/app.env", &format!("API_TOKEN={canary}-env\nMODE=strict\n"))
        .write("overlays/prod/kustomization.yaml", OVERLAY);
        lockstep_tests::sops_encrypt_all(&[&repo.path().join("base/app.env")], &age.recipient, repo.path());
        // A SealedSecret made by real kubeseal, namespace-wide (the overlay renames it; kustomize
        // knows no SealedSecret name references, so the Deployment names the final name).
        let (skey, scert) = sealed::generate_key_pair(2048, "e2e", 30).unwrap();
        let cert = dir.path().join("sealing.crt");
        std::fs::write(&cert, &scert).unwrap();
        let mut c = Command::new(peer("kubeseal"));
        c.arg("--cert")
            .arg(&cert)
            .args(["--scope", "namespace-wide", "-o", "yaml"]);
        let plain = format!(
            "apiVersion: v1\nkind: Secret\nmetadata:\n  name: api\n  namespace: {ns}\nstringData:\n  token: {canary}-sealed\n"
        );
        let sealed_yaml = lockstep_tests::ok(run(&mut c, dir.path(), Some(plain.as_bytes())), "kubeseal");
        repo.write("base/api.sealed.yaml", std::str::from_utf8(&sealed_yaml).unwrap());
        repo.commit("overlay tree");
        Self {
            repo,
            canary,
            sealing_key: skey.to_string(),
            _dir: dir,
        }
    }
}

fn rv(o: &kube::api::ObjectMeta) -> u64 {
    o.resource_version.as_deref().unwrap().parse().unwrap()
}

/// Every file under `dir` that holds `needle` (unreadable ones skipped).
fn files_holding(dir: &Path, needle: &[u8], out: &mut Vec<String>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        match e.file_type() {
            Ok(t) if t.is_dir() => files_holding(&p, needle, out),
            Ok(t) if t.is_file() => {
                if let Ok(bytes) = std::fs::read(&p)
                    && bytes.windows(needle.len()).any(|w| w == needle)
                {
                    out.push(p.display().to_string());
                }
            }
            _ => {}
        }
    }
}

#[tokio::test]
async fn an_overlay_tree_syncs_secrets_first_and_refusals_stall_naming_the_file() {
    let (client, ns) = setup("kustomize").await;
    let keydir = tempfile::tempdir().unwrap();
    let age = AgeKey::generate(keydir.path(), "age.txt");
    let t = Tree::new(&ns, &age);
    age_secret(&client, &ns, &age).await;
    let ctl = Controller::start_with(
        &client,
        &ns,
        ControllerOptions {
            sealing: Some(t.sealing()),
            ..Default::default()
        },
    )
    .await;
    create(
        &client,
        &ns,
        &sync(
            "prod",
            &t.repo.url(),
            json!({ "source": { "path": "overlays/prod", "interval": "1s" }, "targetNamespace": ns,
                    "decryption": { "sops": { "secretRef": { "name": "sops-age" } } } }),
        ),
    )
    .await;
    let s = wait_ready(&client, &ns, "prod", "True", 90).await;

    // Decrypted after the build, as kustomize named and labelled them; before the workload.
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns);
    let db = secrets.get("prod-db").await.unwrap();
    assert_eq!(
        db.data.as_ref().unwrap()["password"].0,
        format!("{}-db", t.canary).as_bytes()
    );
    assert_eq!(db.metadata.labels.as_ref().unwrap()["env"], "prod");
    assert!(
        db.metadata
            .annotations
            .as_ref()
            .is_none_or(|a| !a.contains_key("config.kubernetes.io/origin")),
        "build annotations are removed"
    );
    let generated = secrets
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .find(|s| s.metadata.name.as_deref().unwrap().starts_with("prod-app-env-"))
        .expect("the generated Secret");
    let data = generated.data.as_ref().unwrap();
    assert_eq!(
        data.keys().collect::<Vec<_>>(),
        ["API_TOKEN", "MODE"],
        "sops_* keys dropped"
    );
    assert_eq!(data["API_TOKEN"].0, format!("{}-env", t.canary).as_bytes());
    let api = secrets.get("prod-api").await.unwrap();
    assert_eq!(
        api.data.as_ref().unwrap()["token"].0,
        format!("{}-sealed", t.canary).as_bytes()
    );
    let web = Api::<Deployment>::namespaced(client.clone(), &ns)
        .get("prod-web")
        .await
        .unwrap();
    let env_from = &web
        .spec
        .as_ref()
        .unwrap()
        .template
        .spec
        .as_ref()
        .unwrap()
        .containers[0]
        .env_from;
    let names: Vec<String> = env_from
        .iter()
        .flatten()
        .map(|e| e.secret_ref.as_ref().unwrap().name.clone())
        .collect();
    assert_eq!(
        names,
        [
            "prod-db".to_owned(),
            generated.metadata.name.clone().unwrap(),
            "prod-api".into()
        ]
    );
    for secret in [&db.metadata, &generated.metadata, &api.metadata] {
        assert!(
            rv(secret) < rv(&web.metadata),
            "a Secret was written after the workload"
        );
    }
    assert_eq!(ctl.render.builds(), 1);
    let inventory = s.status.as_ref().unwrap().inventory.len();

    // Unchanged polls start no build; neither does healing drift on the same commit.
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    assert_eq!(ctl.render.builds(), 1, "an unchanged poll started a build");
    Api::<Deployment>::namespaced(client.clone(), &ns)
        .patch(
            "prod-web",
            &PatchParams::default(),
            &Patch::Merge(json!({ "metadata": { "labels": { "env": "drifted" } } })),
        )
        .await
        .unwrap();
    eventually("the drift healed", 60, async || {
        let d = Api::<Deployment>::namespaced(client.clone(), &ns)
            .get("prod-web")
            .await
            .ok()?;
        (d.metadata.labels.as_ref()?.get("env")? == "prod").then_some(())
    })
    .await;
    assert_eq!(ctl.render.builds(), 1, "healing drift rebuilt the same commit");
    assert!(
        ctl.metrics.encode().contains("lockstep_render_builds_total 1\n"),
        "{}",
        ctl.metrics.encode()
    );

    // Each refusal stalls the Sync naming the file; nothing is pruned.
    let good_db = t.repo.read("base/db.sops.yaml");
    let cases = [
        (
            "tamper",
            "base/db.sops.yaml",
            good_db.replace("name: db", "name: dbx"),
            "base/db.sops.yaml: MAC mismatch",
        ),
        (
            "patch",
            "overlays/prod/kustomization.yaml",
            format!(
                "{OVERLAY}patches:\n- target:\n    kind: Secret\n    name: db\n  patch: |-\n    - op: replace\n      path: /stringData/password\n      value: hunter2\n"
            ),
            "base/db.sops.yaml: `stringData.password`: an encrypted value was changed or removed by a patch (in Secret prod-db)",
        ),
        (
            "remote",
            "overlays/prod/kustomization.yaml",
            OVERLAY.replace(
                "- ../../base\n",
                "- ../../base\n- https://github.com/kubernetes-sigs/kustomize//examples/helloWorld?ref=v1.0.6\n",
            ),
            "overlays/prod/kustomization.yaml: resources entry `https://github.com/kubernetes-sigs/kustomize//examples/helloWorld?ref=v1.0.6`: remote bases",
        ),
    ];
    for (what, file, text, expected) in cases {
        t.repo.write(file, &text);
        let commit = t.repo.commit(what);
        let s = wait_for(&client, &ns, "prod", 90, |s: &Sync| {
            ready(s).is_some_and(|(st, _, m)| st == "False" && m.contains(expected))
                && s.status
                    .as_ref()
                    .and_then(|st| st.last_attempted_revision.as_deref())
                    .is_some_and(|r| r.ends_with(&commit))
        })
        .await;
        let (_, reason, message) = ready(&s).unwrap();
        assert_eq!(reason, "RenderFailed", "{what}: {message}");
        assert_eq!(condition(&s, "Stalled").unwrap().status, "True", "{what}");
        assert_eq!(
            s.status.as_ref().unwrap().inventory.len(),
            inventory,
            "{what}: the inventory stays"
        );
        assert!(
            secrets.get_opt("prod-db").await.unwrap().is_some(),
            "{what}: pruned"
        );
        assert!(
            Api::<Deployment>::namespaced(client.clone(), &ns)
                .get_opt("prod-web")
                .await
                .unwrap()
                .is_some(),
            "{what}: pruned"
        );
        assert!(!message.contains(&t.canary), "{what}: {message}");
        // Back to the good tree.
        t.repo
            .write("base/db.sops.yaml", &good_db)
            .write("overlays/prod/kustomization.yaml", OVERLAY);
        t.repo.commit("restore");
        wait_ready(&client, &ns, "prod", "True", 90).await;
    }

    // `lockstep diff` (the agent's /v1/diff) renders the overlay as the sync does: a change to
    // the overlay, the Sync suspended, shows the Deployment reconfigured and no value.
    Api::<Sync>::namespaced(client.clone(), &ns)
        .patch(
            "prod",
            &PatchParams::default(),
            &Patch::Merge(json!({ "spec": { "suspend": true } })),
        )
        .await
        .unwrap();
    // A reconcile already under way finishes on the commit it fetched.
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    t.repo.write(
        "overlays/prod/kustomization.yaml",
        &OVERLAY.replace("env: prod", "env: canary"),
    );
    t.repo.commit("relabel");
    let mut differ = lockstep_agent::reconciler::Differ::new(
        client.clone(),
        lockstep_agent::source::GitCache::new(keydir.path().join("diff-cache")),
        lockstep_agent::secrets::sealing::fixed(t.sealing()),
    );
    differ.render.kustomize = Some(lockstep_kustomize::Helper::new(
        super::fixtures::kustomize_helper(),
    ));
    let report = differ.diff(&ns, "prod").await.unwrap();
    let web = report
        .changes
        .iter()
        .find(|c| c.object.contains("prod-web"))
        .unwrap_or_else(|| panic!("no change to prod-web: {report:?}"));
    assert_eq!(web.action, "configured");
    assert!(
        web.diff
            .lines()
            .any(|l| l.starts_with('+') && l.contains("env: canary")),
        "{}",
        web.diff
    );
    assert!(
        !serde_json::to_string(&report).unwrap().contains(&t.canary),
        "a value in the diff"
    );

    // The canaries: in no status, event, log or file.
    let s = Api::<Sync>::namespaced(client.clone(), &ns)
        .get("prod")
        .await
        .unwrap();
    assert!(!serde_json::to_string(&s).unwrap().contains(&t.canary));
    let events: Api<k8s_openapi::api::events::v1::Event> = Api::namespaced(client.clone(), &ns);
    let events = serde_json::to_string(&events.list(&ListParams::default()).await.unwrap().items).unwrap();
    assert!(!events.contains(&t.canary), "a secret value reached an event");
    assert!(
        !logs().text().contains(&t.canary),
        "a secret value reached the log"
    );
    let mut found = Vec::new();
    files_holding(&std::env::temp_dir(), t.canary.as_bytes(), &mut found);
    assert!(found.is_empty(), "a secret value reached a file: {found:?}");
}
