//! The Sync controller on the real control plane: a Sync object from `crds/sync.yaml` is
//! reconciled to Ready with its revision and inventory in status; a Sync in Git defines another
//! (app of apps) that creates its namespace; a bad SOPS commit stalls it with a condition that
//! names the file, and no secret value reaches status or logs. The same repository over SSH from
//! the real sshd, with a passphrase-protected key from a Secret.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, PostParams};
use lockstep_agent::api::Sync;
use lockstep_agent::controller::{self, Context};
use lockstep_agent::source::GitCache;
use lockstep_tests::AgeKey;
use lockstep_tests::controlplane::ControlPlane;
use lockstep_tests::git;
use serde_json::json;

const CANARY: &str = "CANARY-controller-value";

async fn wait_status(api: &Api<Sync>, name: &str, secs: u64, pred: impl Fn(&Sync) -> bool) -> Sync {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    loop {
        let s = api.get_opt(name).await.unwrap();
        if let Some(s) = s.as_ref().filter(|s| pred(s)) {
            return s.clone();
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out; status: {:?}",
            s.and_then(|s| s.status)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn ready(s: &Sync) -> Option<(String, String, String)> {
    s.status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == "Ready")
        .map(|c| (c.status.clone(), c.reason.clone(), c.message.clone()))
}

#[tokio::test]
async fn a_sync_object_is_reconciled_and_a_bad_commit_stalls_it() {
    let logs = lockstep_tests::LogCapture::install();
    let cp = ControlPlane::shared();
    let client = cp.client().await.unwrap();
    let ns = cp.namespace("ctrl").await.unwrap();

    // The CRD, as committed.
    lockstep_tests::controlplane::apply_crds(
        &client,
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("../crds/sync.yaml"),
    )
    .await;

    // A repo with a ConfigMap and a SOPS Secret (real sops), and the age key in a Secret.
    let repo = tempfile::tempdir().unwrap();
    let r = repo.path();
    git(r, &["init", "-q"]);
    let age = AgeKey::generate(r.parent().unwrap(), &format!("age-{ns}.txt"));
    std::fs::create_dir_all(r.join("app")).unwrap();
    std::fs::write(
        r.join("app/cm.yaml"),
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: settings\ndata:\n  mode: blue\n",
    )
    .unwrap();
    std::fs::write(
        r.join("app/db.sops.yaml"),
        format!("apiVersion: v1\nkind: Secret\nmetadata:\n  name: db\nstringData:\n  password: {CANARY}\n"),
    )
    .unwrap();
    lockstep_tests::sops_encrypt(&[&r.join("app/db.sops.yaml")], &age.recipient, r);
    git(r, &["add", "-A"]);
    git(r, &["commit", "-qm", "one"]);
    let key_secret: Secret = serde_json::from_value(json!({
        "metadata": { "name": "sops-age" },
        "stringData": { "team.agekey": std::fs::read_to_string(&age.path).unwrap() }
    }))
    .unwrap();
    Api::<Secret>::namespaced(client.clone(), &ns)
        .create(&PostParams::default(), &key_secret)
        .await
        .unwrap();

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
            "source": { "url": format!("file://{}", r.display()), "path": "app", "interval": "1s" },
            "decryption": { "sops": { "secretRef": { "name": "sops-age" } } },
            "targetNamespace": ns,
        }
    }))
    .unwrap();
    syncs.create(&PostParams::default(), &sync).await.unwrap();
    let s = wait_status(&syncs, "app", 60, |s| ready(s).is_some_and(|r| r.0 == "True")).await;
    let st = s.status.clone().unwrap();
    assert!(
        st.last_applied_revision
            .as_deref()
            .unwrap()
            .starts_with("main@sha1:"),
        "{st:?}"
    );
    assert_eq!(st.inventory.len(), 2);
    let db = Api::<Secret>::namespaced(client.clone(), &ns)
        .get("db")
        .await
        .unwrap();
    assert_eq!(db.data.unwrap()["password"].0, CANARY.as_bytes());

    // App of apps: a Sync in Git defines another Sync, which creates its own namespace.
    let child_ns = format!("{ns}-child");
    std::fs::create_dir_all(r.join("child")).unwrap();
    std::fs::write(
        r.join("child/cm.yaml"),
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: from-child\n",
    )
    .unwrap();
    std::fs::write(
        r.join("app/child-sync.yaml"),
        format!(
            "apiVersion: lockstep.dev/v1alpha1\nkind: Sync\nmetadata:\n  name: child\nspec:\n  source:\n    url: file://{}\n    path: child\n    interval: 1s\n  targetNamespace: {child_ns}\n  createNamespace: true\n",
            r.display()
        ),
    )
    .unwrap();
    git(r, &["add", "-A"]);
    git(r, &["commit", "-qm", "child"]);
    wait_status(&syncs, "child", 60, |s| ready(s).is_some_and(|r| r.0 == "True")).await;
    let cm = Api::<k8s_openapi::api::core::v1::ConfigMap>::namespaced(client.clone(), &child_ns)
        .get("from-child")
        .await
        .unwrap();
    assert_eq!(
        cm.metadata.labels.unwrap()["lockstep.dev/sync"],
        format!("{ns}.child")
    );
    let s = wait_status(&syncs, "app", 30, |s| {
        s.status.as_ref().is_some_and(|st| st.inventory.len() == 3)
    })
    .await;
    assert_eq!(ready(&s).unwrap().0, "True", "{:?}", ready(&s));

    // A tampered SOPS file: Ready False, Stalled True, the file named, nothing leaked.
    let enc = std::fs::read_to_string(r.join("app/db.sops.yaml")).unwrap();
    std::fs::write(
        r.join("app/db.sops.yaml"),
        enc.replace("name: db", "name: db-renamed"),
    )
    .unwrap();
    git(r, &["commit", "-qam", "tamper"]);
    let s = wait_status(&syncs, "app", 60, |s| ready(s).is_some_and(|r| r.0 == "False")).await;
    let (_, reason, message) = ready(&s).unwrap();
    assert_eq!(reason, "RenderFailed");
    assert!(
        message.contains("app/db.sops.yaml") || message.contains("db.sops.yaml"),
        "{message}"
    );
    let stalled = s
        .status
        .as_ref()
        .unwrap()
        .conditions
        .iter()
        .find(|c| c.type_ == "Stalled")
        .unwrap();
    assert_eq!(stalled.status, "True");
    let whole = serde_json::to_string(&s).unwrap();
    assert!(!whole.contains(CANARY), "no secret value in the Sync object");
    let scraped = metrics.encode();
    assert!(
        scraped.contains("lockstep_decryption_failures_total{format=\"sops\"}"),
        "{scraped}"
    );
    assert!(
        scraped.contains(&format!(
            "lockstep_sync_ready{{namespace=\"{ns}\",name=\"app\"}} 0"
        )),
        "{scraped}"
    );
    assert_eq!(
        s.status.as_ref().unwrap().inventory.len(),
        3,
        "the inventory of the last good sync stays"
    );

    // The same repository over SSH (the real sshd): the key from the Secret's `identity`, the
    // server checked against `known_hosts`.
    let sshd = lockstep_tests::services::git_ssh().unwrap();
    let secrets = Api::<Secret>::namespaced(client.clone(), &ns);
    for (name, data) in [
        (
            "git-ssh",
            json!({ "identity": sshd.protected_identity, "password": sshd.passphrase, "known_hosts": sshd.known_hosts }),
        ),
        ("git-ssh-no-hosts", json!({ "identity": sshd.identity })),
    ] {
        let secret: Secret =
            serde_json::from_value(json!({ "metadata": { "name": name }, "stringData": data })).unwrap();
        secrets.create(&PostParams::default(), &secret).await.unwrap();
    }
    for (name, secret) in [("over-ssh", "git-ssh"), ("no-hosts", "git-ssh-no-hosts")] {
        let sync: Sync = serde_json::from_value(json!({
            "apiVersion": "lockstep.dev/v1alpha1", "kind": "Sync",
            "metadata": { "name": name },
            "spec": {
                "source": {
                    "url": format!("{}{}", sshd.url, r.display()), "path": "child", "interval": "1s",
                    "secretRef": { "name": secret },
                },
                "targetNamespace": ns,
            }
        }))
        .unwrap();
        syncs.create(&PostParams::default(), &sync).await.unwrap();
    }
    let s = wait_status(&syncs, "over-ssh", 60, |s| {
        ready(s).is_some_and(|r| r.0 == "True")
    })
    .await;
    assert_eq!(s.status.unwrap().inventory.len(), 1);
    let s = wait_status(&syncs, "no-hosts", 60, |s| {
        ready(s).is_some_and(|r| r.0 == "False")
    })
    .await;
    let (_, reason, message) = ready(&s).unwrap();
    assert_eq!(reason, "Unsupported", "{message}");
    assert!(
        message.contains("known_hosts") && message.contains("git-ssh-no-hosts"),
        "{message}"
    );
    handle.abort();

    let logs = logs.text();
    for secret in [CANARY, sshd.passphrase.as_str()]
        .into_iter()
        .chain(sshd.identity.lines().skip(1).take(2))
        .chain(sshd.protected_identity.lines().skip(1).take(2))
    {
        assert!(!logs.contains(secret), "a secret reached the log");
    }
}
