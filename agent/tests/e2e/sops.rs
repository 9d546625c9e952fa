//! SOPS files in a sync: a tampered one stalls the Sync with a condition naming the file (the
//! last good inventory kept, the failure counted, no value anywhere); one without decryption
//! configured names the field to set; one encrypted only for PGP (real GnuPG, real sops) says
//! what it is encrypted for instead of asking for an age key.

use kube::api::Api;
use lockstep_agent::api::Sync;
use lockstep_agent::plan::Inventory;
use lockstep_agent::secrets::DecryptionKeys;
use lockstep_agent::source::GitCache;
use lockstep_agent::sync::{self, Config};
use lockstep_tests::PgpKey;
use serde_json::json;

use super::fixtures::{
    AgeKey, Controller, Repo, age_secret, condition, create, logs, ready, setup, sync, wait_for, wait_ready,
};

#[tokio::test]
async fn a_tampered_sops_file_stalls_the_sync_naming_the_file() {
    let (client, ns) = setup("sops-tamper").await;
    let dir = tempfile::tempdir().unwrap();
    let age = AgeKey::generate(dir.path(), "age.txt");
    let canary = format!("CANARY-tamper-{ns}");
    let repo = Repo::new();
    repo.write(
        "cm.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: settings\n",
    )
    .write_sops(
        "db.sops.yaml",
        &format!("apiVersion: v1\nkind: Secret\nmetadata:\n  name: db\nstringData:\n  password: {canary}\n"),
        &age,
    );
    repo.commit("one");
    age_secret(&client, &ns, &age).await;
    let ctl = Controller::start(&client, &ns).await;
    create(
        &client,
        &ns,
        &sync(
            "app",
            &repo.url(),
            json!({ "source": { "interval": "1s" }, "targetNamespace": ns,
                    "decryption": { "sops": { "secretRef": { "name": "sops-age" } } } }),
        ),
    )
    .await;
    wait_ready(&client, &ns, "app", "True", 60).await;
    let enc = repo.read("db.sops.yaml");
    repo.write("db.sops.yaml", &enc.replace("name: db", "name: db-renamed"));
    repo.commit("tamper");
    let s = wait_ready(&client, &ns, "app", "False", 60).await;
    let (_, reason, message) = ready(&s).unwrap();
    assert_eq!(reason, "RenderFailed");
    assert!(
        message.contains("db.sops.yaml") && message.contains("MAC mismatch"),
        "{message}"
    );
    assert_eq!(condition(&s, "Stalled").unwrap().status, "True");
    let st = s.status.as_ref().unwrap();
    assert_eq!(st.inventory.len(), 2, "the inventory of the last good sync stays");
    assert!(st.failures >= 1);
    assert!(
        !serde_json::to_string(&s).unwrap().contains(&canary),
        "no secret value in the Sync"
    );
    let scraped = ctl.metrics.encode();
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
    assert!(!logs().text().contains(&canary), "a secret value reached the log");
}

#[tokio::test]
async fn a_sops_file_without_decryption_configured_names_the_field() {
    let (client, ns) = setup("sops-none").await;
    let dir = tempfile::tempdir().unwrap();
    let age = AgeKey::generate(dir.path(), "age.txt");
    let repo = Repo::new();
    repo.write_sops(
        "db.sops.yaml",
        "apiVersion: v1\nkind: Secret\nmetadata:\n  name: db\nstringData:\n  password: x\n",
        &age,
    );
    repo.commit("one");
    let cfg = Config {
        target_namespace: Some(ns.clone()),
        ..Config::new(repo.url(), format!("{ns}.none"))
    };
    let cache = GitCache::new(dir.path().join("cache"));
    let err = sync::sync_once(
        client,
        &cache,
        &cfg,
        &DecryptionKeys::default(),
        &Inventory::default(),
    )
    .await
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("db.sops.yaml is SOPS-encrypted") && err.contains("spec.decryption.sops.secretRef"),
        "{err}"
    );
}

#[tokio::test]
async fn a_file_encrypted_only_for_pgp_says_so_instead_of_asking_for_an_age_key() {
    let (client, ns) = setup("sops-pgp").await;
    let dir = tempfile::tempdir().unwrap();
    let pgp = PgpKey::generate(dir.path());
    let age = AgeKey::generate(dir.path(), "age.txt");
    let repo = Repo::new();
    repo.write(
        "db.sops.yaml",
        "apiVersion: v1\nkind: Secret\nmetadata:\n  name: db\nstringData:\n  password: CANARY-pgp\n",
    );
    pgp.sops_encrypt(&repo.path().join("db.sops.yaml"), dir.path());
    assert!(
        repo.read("db.sops.yaml").contains(&pgp.fingerprint),
        "sops wrote the key's fingerprint"
    );
    repo.commit("pgp");
    age_secret(&client, &ns, &age).await;
    let _ctl = Controller::start(&client, &ns).await;
    create(
        &client,
        &ns,
        &sync(
            "pgp",
            &repo.url(),
            json!({ "targetNamespace": ns, "decryption": { "sops": { "secretRef": { "name": "sops-age" } } } }),
        ),
    )
    .await;
    let s: Sync = wait_for(&client, &ns, "pgp", 60, |s| {
        ready(s).is_some_and(|r| r.0 == "False")
    })
    .await;
    let (_, reason, message) = ready(&s).unwrap();
    assert_eq!(reason, "RenderFailed");
    assert!(
        message.contains(&format!(
            "db.sops.yaml: encrypted for PGP key {} only; Lockstep decrypts age keys",
            pgp.fingerprint
        )),
        "{message}"
    );
    assert!(!message.contains("SOPS_AGE_KEY_FILE"), "{message}");
    let secrets: Api<k8s_openapi::api::core::v1::Secret> = Api::namespaced(client, &ns);
    assert!(secrets.get_opt("db").await.unwrap().is_none());
}
