//! The real `lockstep-agent` binary on the real control plane, reached the way users reach it:
//!
//! * its bootstrap flags create a Sync that pulls a repository over smart HTTP with basic
//!   authentication (real `git http-backend` behind a password); a wrong password fails with a
//!   condition that does not show it;
//! * real `kubeseal` (and `lockstep seal`) fetch its certificate through the API server's
//!   service proxy, `--validate` against it, and `--re-encrypt` with the key it renewed;
//! * a SealedSecret applied outside Git is unsealed into a Secret it owns, a foreign Secret is
//!   refused with a condition, and deleting the SealedSecret deletes the Secret;
//! * no secret value reaches its log.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::lockstep;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, DeleteParams, DynamicObject, PostParams};
use lockstep_agent::api::Sync;
use lockstep_agent::sealing::KeyStore;
use lockstep_formats::sealed::{self, KeyRing, SealingCert, UnsealingKey};
use lockstep_tests::controlplane::{ControlPlane, Options, install_crypto_provider};
use lockstep_tests::git;
use lockstep_tests::services::{self, http};
use lockstep_tests::{ok, peer, run};
use serde_json::json;

const CANARY: &str = "CANARY-agent-binary-value";
const PASSWORD: &str = "CANARY-git-password";
static AGENT_LOG: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();

async fn eventually<T>(what: &str, secs: u64, mut f: impl AsyncFnMut() -> Option<T>) -> T {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = f().await {
            return v;
        }
        if tokio::time::Instant::now() >= deadline {
            let log = AGENT_LOG
                .get()
                .and_then(|p| std::fs::read_to_string(p).ok())
                .unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(30).collect();
            let tail: Vec<&str> = tail.into_iter().rev().collect();
            panic!(
                "timed out waiting for {what}; the agent's log ends:\n{}",
                tail.join("\n")
            );
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Runs `lockstep seal ARGS` in-process (the CLI library), off the async runtime.
async fn lockstep_seal(args: Vec<String>) -> Result<(), String> {
    lockstep(["seal".to_owned()].into_iter().chain(args).collect()).await
}

fn synced(o: &DynamicObject) -> Option<(String, String)> {
    let c = o.data.pointer("/status/conditions/0")?;
    Some((
        c.get("status")?.as_str()?.to_owned(),
        c.get("message")?.as_str().unwrap_or("").to_owned(),
    ))
}

#[tokio::test(flavor = "multi_thread")]
async fn the_agent_binary_serves_kubeseal_unseals_outside_git_and_pulls_with_credentials() {
    install_crypto_provider();
    let cp = ControlPlane::shared_with(Options {
        controller_manager: true,
        ..Options::default()
    });
    let client = cp.client().await.unwrap();
    let ns = cp.namespace("agent").await.unwrap();
    let home = tempfile::tempdir().unwrap();
    let h = home.path();
    let kubeconfig = cp.kubeconfig().to_str().unwrap().to_owned();
    let crds = Path::new(env!("CARGO_MANIFEST_DIR")).join("../crds");
    for f in ["sync.yaml", "sealedsecrets.bitnami.com.yaml"] {
        let mut c = Command::new(peer("kubectl"));
        c.args(["--kubeconfig", &kubeconfig, "apply", "--server-side", "-f"])
            .arg(crds.join(f));
        ok(run(&mut c, h, None), "kubectl apply crds");
    }

    // A repository behind a password, served by the real git http-backend.
    let work = tempfile::tempdir().unwrap();
    let w = work.path();
    git(w, &["init", "-q"]);
    std::fs::create_dir_all(w.join("app")).unwrap();
    std::fs::write(
        w.join("app/cm.yaml"),
        format!("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: pulled\n  namespace: {ns}\ndata:\n  from: git\n"),
    )
    .unwrap();
    git(w, &["add", "."]);
    git(w, &["commit", "-qm", "one"]);
    let root = tempfile::tempdir().unwrap();
    git(
        w,
        &[
            "clone",
            "-q",
            "--bare",
            ".",
            root.path().join("repo.git").to_str().unwrap(),
        ],
    );
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(root.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let basic = {
        use base64::Engine;
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("deploy:{PASSWORD}"))
        )
    };
    let (server, ca) = services::git_https_with_auth(root.path(), Some(&basic)).unwrap();

    let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns);
    for (name, pw) in [("git-auth", PASSWORD), ("git-wrong", "not-the-password")] {
        let s: Secret = serde_json::from_value(json!({
            "metadata": { "name": name },
            "stringData": { "username": "deploy", "password": pw, "ca.crt": ca }
        }))
        .unwrap();
        secrets.create(&PostParams::default(), &s).await.unwrap();
    }

    // The agent, with bootstrap flags.
    let port = std::net::TcpListener::bind("0.0.0.0:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let log_path = h.join("agent.log");
    let log = std::fs::File::create(&log_path).unwrap();
    AGENT_LOG.set(log_path.clone()).unwrap();
    struct Kill(std::process::Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let _agent = Kill(
        Command::new(env!("CARGO_BIN_EXE_lockstep-agent"))
            .args([
                "--namespace",
                &ns,
                "--listen",
                &format!("0.0.0.0:{port}"),
                "--log-format",
                "json",
            ])
            .args(["--git-cache", h.join("git").to_str().unwrap()])
            .args(["--bootstrap-url", &format!("{}/repo.git", server.url)])
            .args([
                "--bootstrap-path",
                "app",
                "--bootstrap-name",
                "boot",
                "--bootstrap-secret",
                "git-auth",
            ])
            .args(["--bootstrap-interval", "10s"])
            .env("KUBECONFIG", &kubeconfig)
            .env("RUST_LOG", "info")
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap(),
    );
    eventually("/readyz", 120, async || {
        matches!(http(port, "GET", "/readyz", &[], b""), Ok((200, _))).then_some(())
    })
    .await;
    services::expose(
        cp,
        &ns,
        "lockstep-agent",
        "http",
        services::host_ip().unwrap(),
        port,
    )
    .await
    .unwrap();

    // The bootstrap Sync pulled over HTTP with basic authentication.
    let syncs: Api<Sync> = Api::namespaced(client.clone(), &ns);
    let ready = |s: &Sync| {
        s.status
            .as_ref()?
            .conditions
            .iter()
            .find(|c| c.type_ == "Ready")
            .map(|c| (c.status.clone(), c.message.clone()))
    };
    eventually("the bootstrap Sync to be Ready", 60, async || {
        let s = syncs.get_opt("boot").await.unwrap()?;
        (ready(&s)?.0 == "True").then_some(())
    })
    .await;
    let cms: Api<k8s_openapi::api::core::v1::ConfigMap> = Api::namespaced(client.clone(), &ns);
    assert!(cms.get_opt("pulled").await.unwrap().is_some());
    // A wrong password fails, and the condition does not show either password.
    let wrong: Sync = serde_json::from_value(json!({
        "apiVersion": "lockstep.dev/v1alpha1", "kind": "Sync", "metadata": { "name": "wrong" },
        "spec": { "source": { "url": format!("{}/repo.git", server.url), "path": "app", "secretRef": { "name": "git-wrong" } } }
    }))
    .unwrap();
    syncs.create(&PostParams::default(), &wrong).await.unwrap();
    let msg = eventually("the wrong-password Sync to fail", 60, async || {
        let s = syncs.get_opt("wrong").await.unwrap()?;
        let (status, msg) = ready(&s)?;
        (status == "False").then_some(msg)
    })
    .await;
    assert!(msg.contains("repo.git"), "{msg}");
    assert!(
        !msg.contains(PASSWORD) && !msg.contains("not-the-password"),
        "{msg}"
    );

    // The certificate, through the service proxy: real kubeseal and lockstep agree with the key
    // Secret the agent generated.
    let ctl = [
        "--controller-namespace",
        ns.as_str(),
        "--controller-name",
        "lockstep-agent",
        "--kubeconfig",
        &kubeconfig,
    ];
    let mut c = Command::new(peer("kubeseal"));
    c.arg("--fetch-cert").args(ctl);
    let kubeseal_pem = String::from_utf8(ok(run(&mut c, h, None), "kubeseal --fetch-cert")).unwrap();
    let ours = h.join("cert.pem");
    let args = |extra: &[&str]| -> Vec<String> { ctl.iter().chain(extra).map(|s| s.to_string()).collect() };
    lockstep_seal(args(&["--fetch-cert", "-w", ours.to_str().unwrap()]))
        .await
        .unwrap();
    let store = KeyStore::new(client.clone(), &ns);
    let first = store.load().await.unwrap();
    let (first_name, first_cert) = first.newest.clone().unwrap();
    assert_eq!(kubeseal_pem, first_cert.pem());
    assert_eq!(std::fs::read_to_string(&ours).unwrap(), first_cert.pem());

    // kubeseal seals with the certificate it fetches; the SealedSecret is applied outside Git.
    let plain = format!(
        "apiVersion: v1\nkind: Secret\nmetadata:\n  name: db\n  namespace: {ns}\n  labels:\n    app: db\nstringData:\n  password: {CANARY}\n"
    );
    let mut c = Command::new(peer("kubeseal"));
    c.args(ctl).args(["-o", "json"]);
    let sealed_json = ok(run(&mut c, h, Some(plain.as_bytes())), "kubeseal");
    let sealed_file = h.join("db.sealed.json");
    std::fs::write(&sealed_file, &sealed_json).unwrap();
    let mut c = Command::new(peer("kubectl"));
    c.args(["--kubeconfig", &kubeconfig, "apply", "-f"])
        .arg(&sealed_file);
    ok(run(&mut c, h, None), "kubectl apply SealedSecret");
    let ss_api: Api<DynamicObject> =
        Api::namespaced_with(client.clone(), &ns, &lockstep_agent::unsealer::api_resource());
    let secret = eventually("the unsealed Secret", 60, async || {
        secrets.get_opt("db").await.unwrap()
    })
    .await;
    assert_eq!(secret.data.as_ref().unwrap()["password"].0, CANARY.as_bytes());
    assert_eq!(secret.metadata.labels.as_ref().unwrap()["app"], "db");
    let owner = &secret.metadata.owner_references.as_ref().unwrap()[0];
    assert_eq!(
        (owner.kind.as_str(), owner.controller),
        ("SealedSecret", Some(true))
    );
    let ss = eventually("Synced=True", 30, async || {
        let o = ss_api.get("db").await.unwrap();
        (synced(&o)?.0 == "True").then_some(o)
    })
    .await;
    let rv = secret.metadata.resource_version.clone();

    // --validate: kubeseal and lockstep, against the agent; a copy renamed fails (strict scope).
    let mut c = Command::new(peer("kubeseal"));
    c.arg("--validate").args(ctl);
    ok(run(&mut c, h, Some(&sealed_json)), "kubeseal --validate");
    lockstep_seal(args(&["--validate", "-f", sealed_file.to_str().unwrap()]))
        .await
        .unwrap();
    let mut moved: serde_json::Value = serde_json::from_slice(&sealed_json).unwrap();
    moved["metadata"]["name"] = "elsewhere".into();
    let moved_file = h.join("moved.json");
    std::fs::write(&moved_file, serde_json::to_vec(&moved).unwrap()).unwrap();
    let mut c = Command::new(peer("kubeseal"));
    c.arg("--validate").args(ctl);
    let out = run(&mut c, h, Some(&serde_json::to_vec(&moved).unwrap()));
    assert!(
        !out.status.success(),
        "kubeseal --validate accepted a moved SealedSecret"
    );
    let e = lockstep_seal(args(&["--validate", "-f", moved_file.to_str().unwrap()]))
        .await
        .unwrap_err();
    assert!(
        e.contains(&format!("{ns}/elsewhere")) && e.contains("strict"),
        "{e}"
    );

    // A foreign Secret is not taken over.
    let foreign: Secret =
        serde_json::from_value(json!({ "metadata": { "name": "taken" }, "stringData": { "k": "theirs" } }))
            .unwrap();
    secrets.create(&PostParams::default(), &foreign).await.unwrap();
    let taken = plain.replace("name: db", "name: taken");
    let mut c = Command::new(peer("kubeseal"));
    c.args(ctl).args(["-o", "json"]);
    let taken_json = ok(run(&mut c, h, Some(taken.as_bytes())), "kubeseal");
    let taken_file = h.join("taken.json");
    std::fs::write(&taken_file, &taken_json).unwrap();
    let mut c = Command::new(peer("kubectl"));
    c.args(["--kubeconfig", &kubeconfig, "apply", "-f"])
        .arg(&taken_file);
    ok(run(&mut c, h, None), "kubectl apply SealedSecret");
    let msg = eventually("Synced=False on the foreign Secret", 30, async || {
        let o = ss_api.get("taken").await.unwrap();
        let (s, m) = synced(&o)?;
        (s == "False").then_some(m)
    })
    .await;
    assert!(msg.contains("already exists") && msg.contains("managed"), "{msg}");
    assert_eq!(
        secrets.get("taken").await.unwrap().data.unwrap()["k"].0,
        b"theirs"
    );

    // A key renewed with the rotation CronJob's command is picked up by watch and served;
    // kubeseal --re-encrypt and lockstep --re-encrypt re-seal with it, scope and template
    // unchanged.
    lockstep(
        [
            "keygen",
            "sealing",
            "--in-cluster",
            "--bits",
            "2048",
            "--namespace",
            &ns,
            "--kubeconfig",
            &kubeconfig,
        ]
        .map(String::from)
        .to_vec(),
    )
    .await
    .unwrap();
    let second_name = store.load().await.unwrap().newest.unwrap().0;
    let second = eventually("the new certificate to be served", 30, async || {
        let (s, body) = http(port, "GET", "/v1/cert.pem", &[], b"").ok()?;
        (s == 200 && body != first_cert.pem()).then_some(body)
    })
    .await;
    let second_cert = SealingCert::from_pem("second", second.as_bytes()).unwrap();
    let only_second = {
        let keys = Api::<Secret>::namespaced(client.clone(), &ns)
            .get(&second_name)
            .await
            .unwrap();
        let pem = String::from_utf8(keys.data.unwrap()["tls.key"].0.clone()).unwrap();
        let mut ring = KeyRing::new();
        ring.push(UnsealingKey::from_pem("second", &pem).unwrap());
        ring
    };
    let mut c = Command::new(peer("kubeseal"));
    c.arg("--re-encrypt").args(ctl).args(["-o", "json"]);
    let rotated: serde_json::Value =
        serde_json::from_slice(&ok(run(&mut c, h, Some(&sealed_json)), "kubeseal --re-encrypt")).unwrap();
    let opened = sealed::unseal(&rotated, &only_second).unwrap();
    assert_eq!(opened.data["password"].expose(), CANARY.as_bytes());
    assert_eq!(
        rotated["spec"]["template"], ss.data["spec"]["template"],
        "template unchanged"
    );
    let in_place = h.join("in-place.json");
    std::fs::copy(&sealed_file, &in_place).unwrap();
    lockstep_seal(args(&["--re-encrypt", "-f", in_place.to_str().unwrap()]))
        .await
        .unwrap();
    let rewritten: serde_json::Value = serde_json::from_slice(&std::fs::read(&in_place).unwrap()).unwrap();
    assert!(sealed::unseal(&rewritten, &only_second).is_ok());
    assert_eq!(
        rewritten["metadata"]["annotations"][sealed::object::SEALED_WITH],
        second_cert.fingerprint()
    );
    assert_ne!(first_name, second_name);

    // Nothing changed, nothing written; deleting the SealedSecret deletes its Secret.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(secrets.get("db").await.unwrap().metadata.resource_version, rv);
    ss_api.delete("db", &DeleteParams::default()).await.unwrap();
    eventually("the Secret to be garbage-collected", 60, async || {
        secrets.get_opt("db").await.unwrap().is_none().then_some(())
    })
    .await;

    // Metrics: the bootstrap Sync's results, bounded labels, the provider-call family.
    let (status, body) = http(port, "GET", "/metrics", &[], b"").unwrap();
    assert_eq!(status, 200);
    assert!(
        body.contains(&format!(
            "lockstep_sync_total{{namespace=\"{ns}\",name=\"boot\",result=\"succeeded\"}}"
        )),
        "{body}"
    );
    assert!(
        body.contains(&format!(
            "lockstep_sync_ready{{namespace=\"{ns}\",name=\"boot\"}} 1"
        )),
        "{body}"
    );
    assert!(
        body.contains("# TYPE lockstep_externalsecret_provider_api_calls counter"),
        "{body}"
    );
    assert!(body.contains("lockstep_sync_duration_seconds_bucket"), "{body}");

    // No secret value, no password, in any log line.
    let log = std::fs::read_to_string(&log_path).unwrap();
    assert!(log.contains("SealedSecret controller started"), "{log}");
    // The bootstrap Sync polls every 10 s: an unchanged commit skips render and apply.
    assert!(log.contains(r#""skipped":true"#), "no skipped poll in the log");
    for needle in [CANARY, PASSWORD, "not-the-password"] {
        assert!(!log.contains(needle), "{needle} in the agent's log");
    }
    drop(server);
}
