//! SealedSecrets and sealing keys: the key store renews, keeps old keys and never uses a
//! compromised one; and the `lockstep-agent` binary, reached the way users reach it: real
//! `kubeseal` (and `lockstep seal`) fetch its certificate through the API server's service
//! proxy, `--validate` against it and `--re-encrypt` with a key it renewed; a SealedSecret
//! applied outside Git is unsealed into a Secret it owns (deleting it deletes the Secret), and a
//! foreign Secret is refused with a condition; no secret value reaches its log.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, DeleteParams, DynamicObject, PostParams};
use lockstep_agent::reconciler::sealed_secrets;
use lockstep_agent::secrets::sealing::{DEFAULT_RENEW_PERIOD, KeyStore};
use lockstep_formats::sealed::{self, KeyRing, SealOptions, SealingCert, UnsealingKey};
use lockstep_tests::services::{self, http};
use lockstep_tests::{ok, peer, run};
use serde_json::json;

use super::fixtures::{Agent, cp, eventually, lockstep, setup};

fn time_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

#[tokio::test]
async fn sealing_keys_renew_keep_old_ones_and_never_use_a_compromised_one() {
    let (client, ns) = setup("keys").await;
    let store = KeyStore::new(client, &ns);
    let now = 2_000_000_000;
    assert!(store.load().await.unwrap().newest.is_none());
    let first = store
        .renew_if_due(now, DEFAULT_RENEW_PERIOD, None)
        .await
        .unwrap()
        .expect("no key yet: renew");
    // Fresh key: nothing due.
    assert!(
        store
            .renew_if_due(time_now(), DEFAULT_RENEW_PERIOD, None)
            .await
            .unwrap()
            .is_none()
    );
    let (_, cert1) = store.load().await.unwrap().newest.clone().unwrap();
    let secret =
        json!({"kind": "Secret", "metadata": {"name": "db", "namespace": "prod"}, "stringData": {"p": "v"}});
    let old = sealed::seal_secret(&secret, &cert1, &SealOptions::default()).unwrap();
    // On demand (e.g. after the cut-off): a second key; the newest seals, both decrypt.
    let second = store
        .renew_if_due(time_now(), DEFAULT_RENEW_PERIOD, Some(time_now() + 60))
        .await
        .unwrap()
        .unwrap();
    assert_ne!(first, second);
    let keys = store.load().await.unwrap();
    assert_eq!(keys.ring.len(), 2);
    assert_eq!(keys.newest.as_ref().unwrap().0, second);
    assert!(
        sealed::unseal(&old, &keys.ring).is_ok(),
        "old keys stay for decryption"
    );
    // Compromised: gone from the ring; what only it could open no longer opens.
    store.mark_compromised(&first).await.unwrap();
    let keys = store.load().await.unwrap();
    assert_eq!(keys.ring.len(), 1);
    let err = sealed::unseal(&old, &keys.ring).unwrap_err().to_string();
    assert!(err.contains("no key could decrypt SealedSecret prod/db"), "{err}");
}

/// The agent binary in a namespace of its own, exposed as Service `lockstep-agent` (as the
/// install exposes it), with kubeseal's controller flags pointing at it.
struct Sealer {
    client: kube::Client,
    ns: String,
    agent: Agent,
    home: tempfile::TempDir,
    kubeconfig: String,
}

impl Sealer {
    async fn start(prefix: &str) -> Self {
        let (client, ns) = setup(prefix).await;
        let home = tempfile::tempdir().unwrap();
        let agent = Agent::start(cp().kubeconfig(), &ns, "agent", home.path(), &[]).await;
        services::expose(
            cp(),
            &ns,
            "lockstep-agent",
            "http",
            services::host_ip().unwrap(),
            agent.port,
        )
        .await
        .unwrap();
        Self {
            client,
            ns,
            agent,
            home,
            kubeconfig: cp().kubeconfig().to_str().unwrap().to_owned(),
        }
    }

    fn h(&self) -> &Path {
        self.home.path()
    }

    /// kubeseal's and `lockstep seal`'s flags to reach the agent.
    fn ctl(&self) -> Vec<String> {
        [
            "--controller-namespace",
            &self.ns,
            "--controller-name",
            "lockstep-agent",
            "--kubeconfig",
            &self.kubeconfig,
        ]
        .map(String::from)
        .to_vec()
    }

    fn kubeseal(&self, args: &[&str], stdin: Option<&[u8]>) -> std::process::Output {
        let mut c = Command::new(peer("kubeseal"));
        c.args(self.ctl()).args(args);
        run(&mut c, self.h(), stdin)
    }

    async fn seal(&self, args: &[&str]) -> Result<(), String> {
        let mut all = vec!["seal".to_owned()];
        all.extend(self.ctl());
        all.extend(args.iter().map(|s| (*s).to_owned()));
        let all: Vec<&str> = all.iter().map(String::as_str).collect();
        lockstep(&all).await
    }

    /// A Secret sealed by real kubeseal with the agent's certificate, applied by kubectl, and
    /// its file.
    fn apply_sealed(&self, name: &str, value: &str) -> (Vec<u8>, PathBuf) {
        let plain = format!(
            "apiVersion: v1\nkind: Secret\nmetadata:\n  name: {name}\n  namespace: {}\n  labels:\n    app: {name}\nstringData:\n  password: {value}\n",
            self.ns
        );
        let sealed = ok(self.kubeseal(&["-o", "json"], Some(plain.as_bytes())), "kubeseal");
        let file = self.h().join(format!("{name}.sealed.json"));
        std::fs::write(&file, &sealed).unwrap();
        let mut c = Command::new(peer("kubectl"));
        c.args(["--kubeconfig", &self.kubeconfig, "apply", "-f"])
            .arg(&file);
        ok(run(&mut c, self.h(), None), "kubectl apply SealedSecret");
        (sealed, file)
    }

    fn sealed_secrets(&self) -> Api<DynamicObject> {
        Api::namespaced_with(self.client.clone(), &self.ns, &sealed_secrets::api_resource())
    }

    fn secrets(&self) -> Api<Secret> {
        Api::namespaced(self.client.clone(), &self.ns)
    }

    fn assert_log_clean(&self, secrets: &[&str]) {
        let log = self.agent.log_text();
        assert!(log.contains("SealedSecret controller started"), "{log}");
        for s in secrets {
            assert!(!log.contains(s), "a secret value reached the agent's log");
        }
    }
}

fn synced(o: &DynamicObject) -> Option<(String, String)> {
    let c = o.data.pointer("/status/conditions/0")?;
    Some((
        c.get("status")?.as_str()?.to_owned(),
        c.get("message")?.as_str().unwrap_or("").to_owned(),
    ))
}

#[tokio::test(flavor = "multi_thread")]
async fn kubeseal_and_lockstep_fetch_the_agents_certificate_through_the_service() {
    let s = Sealer::start("sealed-cert").await;
    let kubeseal_pem =
        String::from_utf8(ok(s.kubeseal(&["--fetch-cert"], None), "kubeseal --fetch-cert")).unwrap();
    let ours = s.h().join("cert.pem");
    s.seal(&["--fetch-cert", "-w", ours.to_str().unwrap()])
        .await
        .unwrap();
    let (_, cert) = KeyStore::new(s.client.clone(), &s.ns)
        .load()
        .await
        .unwrap()
        .newest
        .unwrap();
    assert_eq!(kubeseal_pem, cert.pem(), "the key Secret the agent generated");
    assert_eq!(std::fs::read_to_string(&ours).unwrap(), cert.pem());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_sealed_secret_applied_outside_git_is_unsealed_into_a_secret_it_owns() {
    let s = Sealer::start("sealed-unseal").await;
    let canary = format!("CANARY-unseal-{}", s.ns);
    s.apply_sealed("db", &canary);
    let secrets = s.secrets();
    let secret = eventually("the unsealed Secret", 60, async || {
        secrets.get_opt("db").await.unwrap()
    })
    .await;
    assert_eq!(secret.data.as_ref().unwrap()["password"].0, canary.as_bytes());
    assert_eq!(secret.metadata.labels.as_ref().unwrap()["app"], "db");
    let owner = &secret.metadata.owner_references.as_ref().unwrap()[0];
    assert_eq!(
        (owner.kind.as_str(), owner.controller),
        ("SealedSecret", Some(true))
    );
    let ss_api = s.sealed_secrets();
    eventually("Synced=True", 30, async || {
        (synced(&ss_api.get("db").await.unwrap())?.0 == "True").then_some(())
    })
    .await;
    // Nothing changed, nothing written; deleting the SealedSecret deletes its Secret.
    let rv = secret.metadata.resource_version.clone();
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(secrets.get("db").await.unwrap().metadata.resource_version, rv);
    ss_api.delete("db", &DeleteParams::default()).await.unwrap();
    eventually("the Secret to be garbage-collected", 60, async || {
        secrets.get_opt("db").await.unwrap().is_none().then_some(())
    })
    .await;
    s.assert_log_clean(&[&canary]);
}

#[tokio::test(flavor = "multi_thread")]
async fn validate_accepts_a_sealed_secret_and_refuses_a_renamed_copy() {
    let s = Sealer::start("sealed-validate").await;
    let (sealed_json, file) = s.apply_sealed("db", "CANARY-validate");
    ok(
        s.kubeseal(&["--validate"], Some(&sealed_json)),
        "kubeseal --validate",
    );
    s.seal(&["--validate", "-f", file.to_str().unwrap()])
        .await
        .unwrap();
    let mut moved: serde_json::Value = serde_json::from_slice(&sealed_json).unwrap();
    moved["metadata"]["name"] = "elsewhere".into();
    let moved_file = s.h().join("moved.json");
    std::fs::write(&moved_file, serde_json::to_vec(&moved).unwrap()).unwrap();
    let out = s.kubeseal(&["--validate"], Some(&serde_json::to_vec(&moved).unwrap()));
    assert!(
        !out.status.success(),
        "kubeseal --validate accepted a moved SealedSecret"
    );
    let e = s
        .seal(&["--validate", "-f", moved_file.to_str().unwrap()])
        .await
        .unwrap_err();
    assert!(
        e.contains(&format!("{}/elsewhere", s.ns)) && e.contains("strict"),
        "{e}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_foreign_secret_is_not_taken_over() {
    let s = Sealer::start("sealed-foreign").await;
    let foreign: Secret =
        serde_json::from_value(json!({ "metadata": { "name": "taken" }, "stringData": { "k": "theirs" } }))
            .unwrap();
    s.secrets()
        .create(&PostParams::default(), &foreign)
        .await
        .unwrap();
    s.apply_sealed("taken", "CANARY-foreign");
    let ss_api = s.sealed_secrets();
    let msg = eventually("Synced=False on the foreign Secret", 30, async || {
        let (st, m) = synced(&ss_api.get("taken").await.unwrap())?;
        (st == "False").then_some(m)
    })
    .await;
    assert!(msg.contains("already exists") && msg.contains("managed"), "{msg}");
    assert_eq!(
        s.secrets().get("taken").await.unwrap().data.unwrap()["k"].0,
        b"theirs"
    );
    s.assert_log_clean(&["CANARY-foreign"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_renewed_key_is_served_and_re_encrypt_moves_onto_it() {
    let s = Sealer::start("sealed-rotate").await;
    let canary = format!("CANARY-rotate-{}", s.ns);
    let (sealed_json, file) = s.apply_sealed("db", &canary);
    let ss_api = s.sealed_secrets();
    let ss = eventually("Synced=True", 60, async || {
        let o = ss_api.get("db").await.unwrap();
        (synced(&o)?.0 == "True").then_some(o)
    })
    .await;
    let store = KeyStore::new(s.client.clone(), &s.ns);
    let (first_name, first_cert) = store.load().await.unwrap().newest.unwrap();
    // The rotation CronJob's command.
    lockstep(&[
        "keygen",
        "sealing",
        "--in-cluster",
        "--bits",
        "2048",
        "--namespace",
        &s.ns,
        "--kubeconfig",
        &s.kubeconfig,
    ])
    .await
    .unwrap();
    let second_name = store.load().await.unwrap().newest.unwrap().0;
    assert_ne!(first_name, second_name);
    let port = s.agent.port;
    let second = eventually("the new certificate to be served", 30, async || {
        let (st, body) = http(port, "GET", "/v1/cert.pem", &[], b"").ok()?;
        (st == 200 && body != first_cert.pem()).then_some(body)
    })
    .await;
    let second_cert = SealingCert::from_pem("second", second.as_bytes()).unwrap();
    let only_second = {
        let key = s.secrets().get(&second_name).await.unwrap();
        let pem = String::from_utf8(key.data.unwrap()["tls.key"].0.clone()).unwrap();
        let mut ring = KeyRing::new();
        ring.push(UnsealingKey::from_pem("second", &pem).unwrap());
        ring
    };
    // kubeseal --re-encrypt and lockstep --re-encrypt, scope and template unchanged.
    let rotated: serde_json::Value = serde_json::from_slice(&ok(
        s.kubeseal(&["--re-encrypt", "-o", "json"], Some(&sealed_json)),
        "kubeseal --re-encrypt",
    ))
    .unwrap();
    let opened = sealed::unseal(&rotated, &only_second).unwrap();
    assert_eq!(opened.data["password"].expose(), canary.as_bytes());
    assert_eq!(
        rotated["spec"]["template"], ss.data["spec"]["template"],
        "template unchanged"
    );
    let in_place = s.h().join("in-place.json");
    std::fs::copy(&file, &in_place).unwrap();
    s.seal(&["--re-encrypt", "-f", in_place.to_str().unwrap()])
        .await
        .unwrap();
    let rewritten: serde_json::Value = serde_json::from_slice(&std::fs::read(&in_place).unwrap()).unwrap();
    assert!(sealed::unseal(&rewritten, &only_second).is_ok());
    assert_eq!(
        rewritten["metadata"]["annotations"][sealed::object::SEALED_WITH],
        second_cert.fingerprint()
    );
    s.assert_log_clean(&[&canary]);
}
