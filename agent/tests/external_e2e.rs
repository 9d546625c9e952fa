//! ExternalSecrets end to end on the real control plane, against real moto (AWS Secrets
//! Manager), real OpenBao (`bao server -dev`, the Vault API) and the Pulumi ESC fake: a sync
//! materialises them in the secrets stage, before the Deployment that mounts one; identical
//! references are read once; a v1beta1 manifest works; a bad property fails only its own
//! ExternalSecret with a condition naming the field; a value rotated in the backend reaches the
//! Secret within a refresh; an outage keeps the Secret, says why, backs off, and recovers.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;
use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, PostParams};
use lockstep_agent::external::api::{ExternalSecret, SecretStore, StoreStatus as SecretStoreStatus};
use lockstep_agent::external::{Engine, refresher};
use lockstep_agent::plan::Inventory;
use lockstep_agent::render::Keys;
use lockstep_agent::source::GitCache;
use lockstep_agent::sync::{self, Config};
use lockstep_tests::controlplane::ControlPlane;
use lockstep_tests::git;
use lockstep_tests::services;
use serde_json::json;

const CANARY_AWS: &str = "CANARY-aws-db-password";
const CANARY_VAULT: &str = "CANARY-vault-app-token";
const CANARY_ESC: &str = "CANARY-esc-db-password";

async fn seed_aws(c: &aws_sdk_secretsmanager::Client, password: &str) {
    for (name, value) in [
        (
            "db-creds",
            json!({ "user": "admin", "password": password }).to_string(),
        ),
        ("api-key", "plain-api-key".to_owned()),
    ] {
        c.create_secret()
            .name(name)
            .secret_string(value)
            .send()
            .await
            .unwrap();
    }
}

async fn bao(
    url: &str,
    token: &str,
    method: reqwest::Method,
    path: &str,
    body: serde_json::Value,
) -> serde_json::Value {
    let r = reqwest::Client::new()
        .request(method, format!("{url}/v1/{path}"))
        .header("X-Vault-Token", token)
        .header("Content-Type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{path}: {}", r.status());
    serde_json::from_slice(&r.bytes().await.unwrap()).unwrap_or(json!({}))
}

fn secret_value(s: &Secret, key: &str) -> String {
    String::from_utf8(s.data.as_ref().unwrap()[key].0.clone()).unwrap()
}

fn ready(es: &ExternalSecret) -> Option<(String, String, String)> {
    es.status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == "Ready")
        .map(|c| (c.status.clone(), c.reason.clone(), c.message.clone()))
}

async fn wait_for<T, F: std::future::Future<Output = Option<T>>>(
    secs: u64,
    what: &str,
    mut f: impl FnMut() -> F,
) -> T {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(t) = f().await {
            return t;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The ExternalSecret CRDs, as committed, established.
async fn install_crds(client: &kube::Client) {
    lockstep_tests::controlplane::apply_crds(
        client,
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("../crds/external-secrets.io.yaml"),
    )
    .await;
}

#[tokio::test]
async fn external_secrets_from_aws_vault_and_esc_before_workloads() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let logs = lockstep_tests::LogCapture::install();
    let cp = ControlPlane::shared();
    let client = cp.client().await.unwrap();
    let ns = cp.namespace("es").await.unwrap();

    install_crds(&client).await;

    // The backends.
    let mut moto = services::moto().unwrap();
    let moto_port: u16 = moto.url.rsplit(':').next().unwrap().parse().unwrap();
    let aws = services::aws_client(&moto.url).await;
    seed_aws(&aws, CANARY_AWS).await;
    let vault = services::openbao().unwrap();
    let root = vault.token.clone();
    bao(
        &vault.url,
        &root,
        reqwest::Method::POST,
        "secret/data/app",
        json!({ "data": { "token": CANARY_VAULT, "region": "eu" } }),
    )
    .await;
    bao(
        &vault.url,
        &root,
        reqwest::Method::PUT,
        "sys/policies/acl/read-app",
        json!({ "policy": "path \"secret/data/*\" { capabilities = [\"read\"] }" }),
    )
    .await;
    bao(
        &vault.url,
        &root,
        reqwest::Method::POST,
        "sys/auth/approle",
        json!({ "type": "approle" }),
    )
    .await;
    bao(
        &vault.url,
        &root,
        reqwest::Method::POST,
        "auth/approle/role/lockstep",
        json!({ "token_policies": ["read-app"], "token_ttl": "1h" }),
    )
    .await;
    let role_id = bao(
        &vault.url,
        &root,
        reqwest::Method::GET,
        "auth/approle/role/lockstep/role-id",
        json!({}),
    )
    .await["data"]["role_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let secret_id = bao(
        &vault.url,
        &root,
        reqwest::Method::POST,
        "auth/approle/role/lockstep/secret-id",
        json!({}),
    )
    .await["data"]["secret_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let esc = lockstep_tests::esc::EscFake::start().await.unwrap();
    esc.set(
        "acme/platform/prod",
        json!({ "db": { "password": CANARY_ESC, "host": "db.internal" }, "list": ["a", "b"] }),
    );

    // Store credentials, made in the cluster as a bootstrap would.
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns);
    let creds: Secret = serde_json::from_value(json!({
        "metadata": { "name": "backend-creds" },
        "stringData": { "aws-id": "test", "aws-secret": "test", "vault-token": root, "secret-id": secret_id, "pulumi": esc.token },
    }))
    .unwrap();
    secrets.create(&PostParams::default(), &creds).await.unwrap();

    // The repository: stores, ExternalSecrets (one v1beta1), and a Deployment mounting one.
    let repo = tempfile::tempdir().unwrap();
    let r = repo.path();
    git(r, &["init", "-q"]);
    let sel = |key: &str| json!({ "name": "backend-creds", "key": key });
    let docs = vec![
        json!({ "apiVersion": "external-secrets.io/v1", "kind": "SecretStore", "metadata": { "name": "aws" },
            "spec": { "provider": { "aws": { "service": "SecretsManager", "region": "us-east-1",
                "auth": { "secretRef": { "accessKeyIDSecretRef": sel("aws-id"), "secretAccessKeySecretRef": sel("aws-secret") } } } } } }),
        json!({ "apiVersion": "external-secrets.io/v1", "kind": "SecretStore", "metadata": { "name": "vault" },
            "spec": { "provider": { "vault": { "server": vault.url, "path": "secret", "version": "v2",
                "auth": { "tokenSecretRef": sel("vault-token") } } } } }),
        json!({ "apiVersion": "external-secrets.io/v1", "kind": "ClusterSecretStore", "metadata": { "name": format!("{ns}-approle") },
            "spec": { "conditions": [{ "namespaces": [ns] }],
                "provider": { "vault": { "server": vault.url, "path": "secret",
                "auth": { "appRole": { "roleId": role_id, "secretRef": { "name": "backend-creds", "key": "secret-id", "namespace": ns } } } } } } }),
        json!({ "apiVersion": "external-secrets.io/v1", "kind": "SecretStore", "metadata": { "name": "esc" },
            "spec": { "provider": { "pulumi": { "apiUrl": esc.url, "organization": "acme", "project": "platform", "environment": "prod",
                "accessToken": { "secretRef": sel("pulumi") } } } } }),
        json!({ "apiVersion": "external-secrets.io/v1", "kind": "ExternalSecret", "metadata": { "name": "db" },
            "spec": { "refreshInterval": "1s", "secretStoreRef": { "name": "aws" },
                "data": [
                    { "secretKey": "user", "remoteRef": { "key": "db-creds", "property": "user" } },
                    { "secretKey": "password", "remoteRef": { "key": "db-creds", "property": "password" } },
                    { "secretKey": "api-key", "remoteRef": { "key": "api-key" } } ] } }),
        json!({ "apiVersion": "external-secrets.io/v1", "kind": "ExternalSecret", "metadata": { "name": "db-copy" },
            "spec": { "refreshInterval": "1h", "secretStoreRef": { "name": "aws" },
                "dataFrom": [{ "extract": { "key": "db-creds" } }] } }),
        json!({ "apiVersion": "external-secrets.io/v1", "kind": "ExternalSecret", "metadata": { "name": "app-token" },
            "spec": { "secretStoreRef": { "name": "vault" },
                "data": [{ "secretKey": "token", "remoteRef": { "key": "app", "property": "token" } }] } }),
        json!({ "apiVersion": "external-secrets.io/v1beta1", "kind": "ExternalSecret", "metadata": { "name": "app-all" },
            "spec": { "secretStoreRef": { "name": format!("{ns}-approle"), "kind": "ClusterSecretStore" },
                "dataFrom": [{ "extract": { "key": "app" } }] } }),
        json!({ "apiVersion": "external-secrets.io/v1", "kind": "ExternalSecret", "metadata": { "name": "esc-db" },
            "spec": { "secretStoreRef": { "name": "esc" },
                "target": { "template": { "type": "Opaque", "data": { "url": "postgres://app:{{ .password }}@{{ .host }}/db" } } },
                "data": [
                    { "secretKey": "password", "remoteRef": { "key": "db.password" } },
                    { "secretKey": "host", "remoteRef": { "key": "db[\"host\"]" } } ] } }),
        json!({ "apiVersion": "external-secrets.io/v1", "kind": "ExternalSecret", "metadata": { "name": "broken" },
            "spec": { "secretStoreRef": { "name": "aws" },
                "data": [{ "secretKey": "x", "remoteRef": { "key": "db-creds", "property": "no-such-field" } }] } }),
        json!({ "apiVersion": "apps/v1", "kind": "Deployment", "metadata": { "name": "web" },
            "spec": { "replicas": 1, "selector": { "matchLabels": { "app": "web" } },
                "template": { "metadata": { "labels": { "app": "web" } },
                    "spec": { "containers": [{ "name": "web", "image": "nginx",
                        "envFrom": [{ "secretRef": { "name": "db" } }] }] } } } }),
    ];
    let text: Vec<String> = docs.iter().map(|d| serde_json::to_string(d).unwrap()).collect();
    std::fs::write(r.join("all.yaml"), text.join("\n---\n")).unwrap();
    git(r, &["add", "."]);
    git(r, &["commit", "-qm", "external secrets"]);

    let engine = Engine::new(client.clone(), Some(moto.url.clone()));
    let cfg = Config {
        target_namespace: Some(ns.clone()),
        external: Some(engine.clone()),
        ..Config::new(format!("file://{}", r.display()), format!("{ns}.es"))
    };
    let cache = GitCache::new(tempfile::tempdir().unwrap().keep());
    let out = sync::sync_once(
        client.clone(),
        &cache,
        &cfg,
        &Keys::default(),
        &Inventory::default(),
    )
    .await
    .unwrap();
    assert!(!out.skipped);

    // Values, and the order: the Secret exists before the Deployment that mounts it.
    let db = secrets.get("db").await.unwrap();
    assert_eq!(secret_value(&db, "user"), "admin");
    assert_eq!(secret_value(&db, "password"), CANARY_AWS);
    assert_eq!(secret_value(&db, "api-key"), "plain-api-key");
    assert_eq!(
        db.metadata.labels.as_ref().unwrap()["reconcile.external-secrets.io/managed"],
        "true"
    );
    assert_eq!(
        db.metadata.owner_references.as_ref().unwrap()[0].kind,
        "ExternalSecret"
    );
    let web = Api::<Deployment>::namespaced(client.clone(), &ns)
        .get("web")
        .await
        .unwrap();
    let rv = |m: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta| {
        m.resource_version.as_ref().unwrap().parse::<u64>().unwrap()
    };
    assert!(
        rv(&db.metadata) < rv(&web.metadata),
        "the Secret was written before the Deployment"
    );
    assert_eq!(
        secret_value(&secrets.get("db-copy").await.unwrap(), "password"),
        CANARY_AWS
    );
    assert_eq!(
        secret_value(&secrets.get("app-token").await.unwrap(), "token"),
        CANARY_VAULT
    );
    let all = secrets.get("app-all").await.unwrap();
    assert_eq!(secret_value(&all, "token"), CANARY_VAULT);
    assert_eq!(secret_value(&all, "region"), "eu");
    let esc_db = secrets.get("esc-db").await.unwrap();
    assert_eq!(
        secret_value(&esc_db, "url"),
        format!("postgres://app:{CANARY_ESC}@db.internal/db")
    );
    assert!(
        esc_db.data.as_ref().unwrap().get("password").is_none(),
        "the template replaces the data"
    );

    // Each distinct reference read once: two AWS keys in one BatchGetSecretValue for four
    // references, one ESC open for two, one AppRole login.
    let calls = engine.calls.snapshot();
    assert_eq!(calls.get(&("aws", "BatchGetSecretValue")), Some(&1), "{calls:?}");
    assert_eq!(calls.get(&("aws", "GetSecretValue")), None, "{calls:?}");
    assert_eq!(calls.get(&("pulumi", "OpenEnvironment")), Some(&1), "{calls:?}");
    assert_eq!(calls.get(&("vault", "Login")), Some(&1), "{calls:?}");
    assert_eq!(esc.calls().0, 1);

    // Status as ESO writes it; the broken one names its field, and failed alone.
    let ess: Api<ExternalSecret> = Api::namespaced(client.clone(), &ns);
    for name in ["db", "db-copy", "app-token", "app-all", "esc-db"] {
        let es = ess.get(name).await.unwrap();
        let (status, reason, _) = ready(&es).unwrap();
        assert_eq!(
            (status.as_str(), reason.as_str()),
            ("True", "SecretSynced"),
            "{name}"
        );
        assert!(es.status.as_ref().unwrap().refresh_time.is_some());
    }
    let broken = ess.get("broken").await.unwrap();
    let (status, reason, message) = ready(&broken).unwrap();
    assert_eq!((status.as_str(), reason.as_str()), ("False", "SecretSyncedError"));
    assert!(
        message.contains("spec.data[0].property") && message.contains("no-such-field"),
        "{message}"
    );
    assert!(secrets.get_opt("broken").await.unwrap().is_none());

    // Rotation: a new value in AWS reaches the Secret within one refresh (interval 1 s).
    let refresh = tokio::spawn(refresher::run(
        engine.clone(),
        client.clone(),
        tokio_util::sync::CancellationToken::new(),
        None,
    ));
    let rotated = format!("{CANARY_AWS}-rotated");
    aws.put_secret_value()
        .secret_id("db-creds")
        .secret_string(json!({ "user": "admin", "password": rotated }).to_string())
        .send()
        .await
        .unwrap();
    let started = std::time::Instant::now();
    wait_for(15, "the rotated value", || async {
        let s = secrets.get("db").await.ok()?;
        (secret_value(&s, "password") == rotated).then_some(())
    })
    .await;
    eprintln!(
        "rotation reached the Secret in {:.1} s",
        started.elapsed().as_secs_f64()
    );

    // Outage: the Secret stays, the condition says why, calls back off, and it recovers.
    moto.stop();
    let before = engine.calls.total("aws");
    let (_, _, why) = wait_for(20, "the outage condition", || async {
        let es = ess.get("db").await.ok()?;
        ready(&es).filter(|r| r.0 == "False")
    })
    .await;
    assert!(why.contains("BatchGetSecretValue"), "{why}");
    assert_eq!(
        secret_value(&secrets.get("db").await.unwrap(), "password"),
        rotated,
        "kept unchanged"
    );
    tokio::time::sleep(Duration::from_secs(10)).await;
    let during = engine.calls.total("aws") - before;
    assert!(
        during <= 6,
        "{during} AWS calls in ~12 s of outage with a 1 s refresh interval: not backing off"
    );
    let moto2 = services::moto_on(moto_port).unwrap();
    let aws2 = services::aws_client(&moto2.url).await;
    seed_aws(&aws2, "after-recovery").await;
    wait_for(60, "recovery", || async {
        let s = secrets.get("db").await.ok()?;
        (secret_value(&s, "password") == "after-recovery").then_some(())
    })
    .await;
    let es = ess.get("db").await.unwrap();
    assert_eq!(ready(&es).unwrap().0, "True");
    refresh.abort();

    // No secret value in any log line or in any ExternalSecret's status.
    let logs = logs.text();
    let statuses = serde_json::to_string(&ess.list(&Default::default()).await.unwrap().items).unwrap();
    for canary in [
        CANARY_AWS,
        CANARY_VAULT,
        CANARY_ESC,
        "plain-api-key",
        &secret_id,
        "after-recovery",
    ] {
        assert!(!logs.contains(canary), "a secret value reached the log");
        assert!(!statuses.contains(canary), "a secret value reached a status");
    }
}

/// Bad input: each failure is a condition on its own ExternalSecret naming the field, the rest of
/// the sync goes on; a workload mounting a failed ExternalSecret's missing Secret holds the
/// workloads stage back.
#[tokio::test]
async fn bad_input_fails_only_its_own_external_secret() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let cp = ControlPlane::shared();
    let client = cp.client().await.unwrap();
    let ns = cp.namespace("es-bad").await.unwrap();
    install_crds(&client).await;

    let moto = services::moto().unwrap();
    let aws = services::aws_client(&moto.url).await;
    for (name, value) in [
        ("json", json!({ "password": "CANARY-bad-json" }).to_string()),
        ("plain", "CANARY-bad-plain".to_owned()),
    ] {
        aws.create_secret()
            .name(name)
            .secret_string(value)
            .send()
            .await
            .unwrap();
    }
    let vault = services::openbao().unwrap();
    bao(
        &vault.url,
        &vault.token,
        reqwest::Method::PUT,
        "sys/policies/acl/only-app",
        json!({ "policy": "path \"secret/data/app\" { capabilities = [\"read\"] }" }),
    )
    .await;
    bao(
        &vault.url,
        &vault.token,
        reqwest::Method::POST,
        "secret/data/other",
        json!({ "data": { "k": "CANARY-bad-vault" } }),
    )
    .await;
    let limited = bao(
        &vault.url,
        &vault.token,
        reqwest::Method::POST,
        "auth/token/create",
        json!({ "policies": ["only-app"], "ttl": "1h" }),
    )
    .await["auth"]["client_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns);
    let creds: Secret = serde_json::from_value(json!({
        "metadata": { "name": "creds" },
        "stringData": { "aws-id": "test", "aws-secret": "test", "vault": limited },
    }))
    .unwrap();
    secrets.create(&PostParams::default(), &creds).await.unwrap();

    let sel = |key: &str| json!({ "name": "creds", "key": key });
    let es = |name: &str, store: &str, spec: serde_json::Value| {
        let mut s = json!({ "refreshInterval": "1h", "secretStoreRef": { "name": store } });
        s.as_object_mut()
            .unwrap()
            .extend(spec.as_object().unwrap().clone());
        json!({ "apiVersion": "external-secrets.io/v1", "kind": "ExternalSecret",
            "metadata": { "name": name }, "spec": s })
    };
    let one = |key: &str, property: Option<&str>| {
        let mut r = json!({ "key": key });
        if let Some(p) = property {
            r["property"] = p.into();
        }
        json!({ "data": [{ "secretKey": "v", "remoteRef": r }] })
    };
    let docs = vec![
        json!({ "apiVersion": "external-secrets.io/v1", "kind": "SecretStore", "metadata": { "name": "aws" },
            "spec": { "provider": { "aws": { "service": "SecretsManager", "region": "us-east-1",
                "auth": { "secretRef": { "accessKeyIDSecretRef": sel("aws-id"), "secretAccessKeySecretRef": sel("aws-secret") } } } } } }),
        json!({ "apiVersion": "external-secrets.io/v1", "kind": "SecretStore", "metadata": { "name": "no-creds" },
            "spec": { "provider": { "aws": { "service": "SecretsManager", "region": "us-east-1",
                "auth": { "secretRef": { "accessKeyIDSecretRef": { "name": "missing-creds", "key": "id" },
                    "secretAccessKeySecretRef": { "name": "missing-creds", "key": "secret" } } } } } } }),
        json!({ "apiVersion": "external-secrets.io/v1", "kind": "SecretStore", "metadata": { "name": "vault-limited" },
            "spec": { "provider": { "vault": { "server": vault.url, "path": "secret", "version": "v2",
                "auth": { "tokenSecretRef": sel("vault") } } } } }),
        es("good", "aws", one("json", Some("password"))),
        es("unknown-store", "no-such-store", one("json", None)),
        es("store-not-ready", "no-creds", one("json", None)),
        es("missing-property", "aws", one("json", Some("user"))),
        es("not-json", "aws", one("plain", Some("password"))),
        es("denied", "vault-limited", one("other", Some("k"))),
        es(
            "bad-template",
            "aws",
            json!({
            "data": [{ "secretKey": "pw", "remoteRef": { "key": "json", "property": "password" } }],
            "target": { "template": { "data": { "hash": "{{ .pw | sha256sum }}" } } } }),
        ),
        json!({ "apiVersion": "v1", "kind": "ConfigMap", "metadata": { "name": "settings" }, "data": { "a": "b" } }),
        json!({ "apiVersion": "apps/v1", "kind": "Deployment", "metadata": { "name": "web" },
            "spec": { "replicas": 1, "selector": { "matchLabels": { "app": "web" } },
                "template": { "metadata": { "labels": { "app": "web" } },
                    "spec": { "containers": [{ "name": "web", "image": "nginx",
                        "envFrom": [{ "secretRef": { "name": "good" } }] }] } } } }),
    ];
    let repo = tempfile::tempdir().unwrap();
    let r = repo.path();
    git(r, &["init", "-q"]);
    let write = |docs: &[serde_json::Value], msg: &str| {
        let text: Vec<String> = docs.iter().map(|d| serde_json::to_string(d).unwrap()).collect();
        std::fs::write(r.join("all.yaml"), text.join("\n---\n")).unwrap();
        git(r, &["add", "."]);
        git(r, &["commit", "-qm", msg]);
    };
    write(&docs, "bad input");
    let engine = Engine::new(client.clone(), Some(moto.url.clone()));
    let cfg = Config {
        target_namespace: Some(ns.clone()),
        external: Some(engine.clone()),
        ..Config::new(format!("file://{}", r.display()), format!("{ns}.bad"))
    };
    let cache = GitCache::new(tempfile::tempdir().unwrap().keep());
    let out = sync::sync_once(
        client.clone(),
        &cache,
        &cfg,
        &Keys::default(),
        &Inventory::default(),
    )
    .await
    .unwrap();

    // The rest of the sync went on.
    assert_eq!(
        secret_value(&secrets.get("good").await.unwrap(), "v"),
        "CANARY-bad-json"
    );
    Api::<k8s_openapi::api::core::v1::ConfigMap>::namespaced(client.clone(), &ns)
        .get("settings")
        .await
        .unwrap();
    Api::<Deployment>::namespaced(client.clone(), &ns)
        .get("web")
        .await
        .unwrap();

    // Each failure on its own ExternalSecret, naming the field.
    let ess: Api<ExternalSecret> = Api::namespaced(client.clone(), &ns);
    for (name, needles) in [
        (
            "unknown-store",
            &["spec.secretStoreRef", "\"no-such-store\" does not exist"][..],
        ),
        (
            "store-not-ready",
            &[
                "spec.secretStoreRef",
                "\"no-creds\" is not ready",
                "missing-creds",
            ],
        ),
        ("missing-property", &["spec.data[0].property", "user"]),
        ("not-json", &["spec.data[0].property", "not JSON"]),
        ("denied", &["spec.data[0]", "403", "permission denied"]),
        ("bad-template", &["spec.target.template.data.hash", "sha256sum"]),
    ] {
        let e = ess.get(name).await.unwrap();
        let (status, reason, message) = ready(&e).unwrap();
        assert_eq!(
            (status.as_str(), reason.as_str()),
            ("False", "SecretSyncedError"),
            "{name}"
        );
        for n in needles {
            assert!(message.contains(n), "{name}: {message:?} should contain {n:?}");
        }
        assert!(!message.contains("CANARY"), "{name}: a value in the condition");
        assert!(
            secrets.get_opt(name).await.unwrap().is_none(),
            "{name}: no Secret"
        );
    }
    let ready_of_store = |s: Option<SecretStoreStatus>| {
        s.and_then(|s| s.conditions.into_iter().find(|c| c.type_ == "Ready"))
            .map(|c| (c.status, c.reason))
    };
    let stores: Api<SecretStore> = Api::namespaced(client.clone(), &ns);
    assert_eq!(
        ready_of_store(stores.get("aws").await.unwrap().status),
        Some(("True".into(), "Valid".into()))
    );
    assert_eq!(
        ready_of_store(stores.get("no-creds").await.unwrap().status),
        Some(("False".into(), "InvalidProviderConfig".into()))
    );
    let inventory = out.inventory;

    // A workload mounting a failed ExternalSecret's missing Secret: the workloads stage waits,
    // the sync fails naming both, nothing is pruned.
    let mut more = docs.clone();
    more.retain(|d| d["kind"] != "ConfigMap");
    more.push(json!({ "apiVersion": "apps/v1", "kind": "Deployment", "metadata": { "name": "needs-denied" },
        "spec": { "replicas": 1, "selector": { "matchLabels": { "app": "d" } },
            "template": { "metadata": { "labels": { "app": "d" } },
                "spec": { "containers": [{ "name": "d", "image": "nginx",
                    "env": [{ "name": "K", "valueFrom": { "secretKeyRef": { "name": "denied", "key": "v" } } }] }] } } } }));
    write(&more, "a workload needs the denied one");
    let err = sync::sync_once(client.clone(), &cache, &cfg, &Keys::default(), &inventory)
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("needs-denied") && err.contains("denied"), "{err}");
    assert!(!err.contains("CANARY"));
    assert!(
        Api::<Deployment>::namespaced(client.clone(), &ns)
            .get_opt("needs-denied")
            .await
            .unwrap()
            .is_none()
    );
    Api::<k8s_openapi::api::core::v1::ConfigMap>::namespaced(client.clone(), &ns)
        .get("settings")
        .await
        .expect("not pruned by a failed sync");
}
