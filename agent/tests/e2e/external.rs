//! ExternalSecrets against real moto (AWS Secrets Manager), real OpenBao (`bao server -dev`,
//! the Vault API) and the Pulumi ESC fake: a sync materialises them in the secrets stage,
//! before the Deployment that mounts one; identical references are read once; a v1beta1
//! manifest works; status is written as ESO writes it, and a bad reference fails only its own
//! ExternalSecret with a condition naming the field; a value rotated in the backend reaches
//! the Secret within a refresh; an outage keeps the Secret, says why, backs off, and recovers;
//! a workload mounting a failed ExternalSecret's missing Secret holds the workloads back.

use std::sync::OnceLock;
use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::api::Api;
use lockstep_agent::plan::Inventory;
use lockstep_agent::reconciler::{Gate, Scope, external_secrets};
use lockstep_agent::secrets::DecryptionKeys as Keys;
use lockstep_agent::secrets::external::Engine;
use lockstep_agent::secrets::external::api::{ExternalSecret, SecretStore, StoreStatus};
use lockstep_agent::source::GitCache;
use lockstep_agent::sync::{self, Config};
use lockstep_tests::services::{self, Service};
use serde_json::{Value as Json, json};

use super::fixtures::{Repo, eventually, logs, secret, setup};

/// moto and OpenBao, shared by the tests of this module (each uses names of its own).
struct Backends {
    moto: Service,
    vault: Service,
    /// AppRole `lockstep` (read `secret/data/*`): its role id.
    role_id: String,
}

fn backends() -> &'static Backends {
    static B: OnceLock<Backends> = OnceLock::new();
    B.get_or_init(|| {
        let moto = services::moto().unwrap();
        let vault = services::openbao().unwrap();
        let bao = |method: &str, path: &str, body: Json| bao_sync(&vault, method, path, body);
        bao(
            "PUT",
            "sys/policies/acl/read-app",
            json!({ "policy": "path \"secret/data/*\" { capabilities = [\"read\"] }" }),
        );
        bao("POST", "sys/auth/approle", json!({ "type": "approle" }));
        bao(
            "POST",
            "auth/approle/role/lockstep",
            json!({ "token_policies": ["read-app"], "token_ttl": "1h" }),
        );
        let role_id = bao("GET", "auth/approle/role/lockstep/role-id", json!({}))["data"]["role_id"]
            .as_str()
            .unwrap()
            .to_owned();
        Backends { moto, vault, role_id }
    })
}

/// A request to OpenBao as root, off any async runtime.
fn bao_sync(vault: &Service, method: &str, path: &str, body: Json) -> Json {
    let (url, token, method, path) = (
        vault.url.clone(),
        vault.token.clone(),
        method.to_owned(),
        path.to_owned(),
    );
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(bao(&url, &token, &method, &path, body))
    })
    .join()
    .unwrap()
}

async fn bao(url: &str, token: &str, method: &str, path: &str, body: Json) -> Json {
    let r = reqwest::Client::new()
        .request(method.parse().unwrap(), format!("{url}/v1/{path}"))
        .header("X-Vault-Token", token)
        .header("Content-Type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{path}: {}", r.status());
    serde_json::from_slice(&r.bytes().await.unwrap()).unwrap_or(json!({}))
}

/// The first sync of a revision.
async fn first_sync(client: &kube::Client, cache: &GitCache, cfg: &Config) -> sync::Outcome {
    sync::sync_once(
        client.clone(),
        cache,
        cfg,
        &Keys::default(),
        &Inventory::default(),
    )
    .await
    .unwrap()
}

/// Creates secret `name` in Secrets Manager.
async fn seed(aws: &aws_sdk_secretsmanager::Client, name: &str, value: &str) {
    aws.create_secret()
        .name(name)
        .secret_string(value)
        .send()
        .await
        .unwrap();
}

fn value(s: &Secret, key: &str) -> String {
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

/// Writes `docs` as one file and commits.
fn write(repo: &Repo, docs: &[Json], message: &str) {
    let text: Vec<String> = docs.iter().map(|d| serde_json::to_string(d).unwrap()).collect();
    repo.write("all.yaml", &text.join("\n---\n"));
    repo.commit(message);
}

/// A sync of every kind of ExternalSecret against the three backends, done.
struct Materialized {
    client: kube::Client,
    ns: String,
    engine: Engine,
    esc: lockstep_tests::esc::EscFake,
    /// `(aws secret, vault path, esc value)` canaries.
    canaries: [String; 3],
    secret_id: String,
    aws: aws_sdk_secretsmanager::Client,
    db_creds: String,
    _repo: Repo,
}

impl Materialized {
    async fn new(prefix: &str, moto: &Service) -> Self {
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
        let b = backends();
        let (client, ns) = setup(prefix).await;
        let canaries = [
            format!("CANARY-aws-{ns}"),
            format!("CANARY-vault-{ns}"),
            format!("CANARY-esc-{ns}"),
        ];
        let aws = services::aws_client(&moto.url).await;
        let db_creds = format!("{ns}-db-creds");
        for (name, v) in [
            (
                db_creds.clone(),
                json!({ "user": "admin", "password": canaries[0] }).to_string(),
            ),
            (format!("{ns}-api-key"), "plain-api-key".to_owned()),
        ] {
            seed(&aws, &name, &v).await;
        }
        let v = &b.vault;
        bao(
            &v.url,
            &v.token,
            "POST",
            &format!("secret/data/{ns}"),
            json!({ "data": { "token": canaries[1], "region": "eu" } }),
        )
        .await;
        let secret_id = bao(
            &v.url,
            &v.token,
            "POST",
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
            json!({ "db": { "password": canaries[2], "host": "db.internal" }, "list": ["a", "b"] }),
        );
        secret(
            &client,
            &ns,
            "backend-creds",
            json!({ "aws-id": "test", "aws-secret": "test", "vault-token": v.token, "secret-id": secret_id, "pulumi": esc.token }),
        )
        .await;
        let sel = |key: &str| json!({ "name": "backend-creds", "key": key });
        let docs = vec![
            json!({ "apiVersion": "external-secrets.io/v1", "kind": "SecretStore", "metadata": { "name": "aws" },
                "spec": { "provider": { "aws": { "service": "SecretsManager", "region": "us-east-1",
                    "auth": { "secretRef": { "accessKeyIDSecretRef": sel("aws-id"), "secretAccessKeySecretRef": sel("aws-secret") } } } } } }),
            json!({ "apiVersion": "external-secrets.io/v1", "kind": "SecretStore", "metadata": { "name": "vault" },
                "spec": { "provider": { "vault": { "server": v.url, "path": "secret", "version": "v2",
                    "auth": { "tokenSecretRef": sel("vault-token") } } } } }),
            json!({ "apiVersion": "external-secrets.io/v1", "kind": "ClusterSecretStore", "metadata": { "name": format!("{ns}-approle") },
                "spec": { "conditions": [{ "namespaces": [ns] }],
                    "provider": { "vault": { "server": v.url, "path": "secret",
                    "auth": { "appRole": { "roleId": b.role_id, "secretRef": { "name": "backend-creds", "key": "secret-id", "namespace": ns } } } } } } }),
            json!({ "apiVersion": "external-secrets.io/v1", "kind": "SecretStore", "metadata": { "name": "esc" },
                "spec": { "provider": { "pulumi": { "apiUrl": esc.url, "organization": "acme", "project": "platform", "environment": "prod",
                    "accessToken": { "secretRef": sel("pulumi") } } } } }),
            json!({ "apiVersion": "external-secrets.io/v1", "kind": "ExternalSecret", "metadata": { "name": "db" },
                "spec": { "refreshInterval": "1s", "secretStoreRef": { "name": "aws" },
                    "data": [
                        { "secretKey": "user", "remoteRef": { "key": db_creds, "property": "user" } },
                        { "secretKey": "password", "remoteRef": { "key": db_creds, "property": "password" } },
                        { "secretKey": "api-key", "remoteRef": { "key": format!("{ns}-api-key") } } ] } }),
            json!({ "apiVersion": "external-secrets.io/v1", "kind": "ExternalSecret", "metadata": { "name": "db-copy" },
                "spec": { "refreshInterval": "1h", "secretStoreRef": { "name": "aws" },
                    "dataFrom": [{ "extract": { "key": db_creds } }] } }),
            json!({ "apiVersion": "external-secrets.io/v1", "kind": "ExternalSecret", "metadata": { "name": "app-token" },
                "spec": { "secretStoreRef": { "name": "vault" },
                    "data": [{ "secretKey": "token", "remoteRef": { "key": ns, "property": "token" } }] } }),
            json!({ "apiVersion": "external-secrets.io/v1beta1", "kind": "ExternalSecret", "metadata": { "name": "app-all" },
                "spec": { "secretStoreRef": { "name": format!("{ns}-approle"), "kind": "ClusterSecretStore" },
                    "dataFrom": [{ "extract": { "key": ns } }] } }),
            json!({ "apiVersion": "external-secrets.io/v1", "kind": "ExternalSecret", "metadata": { "name": "esc-db" },
                "spec": { "secretStoreRef": { "name": "esc" },
                    "target": { "template": { "type": "Opaque", "data": { "url": "postgres://app:{{ .password }}@{{ .host }}/db" } } },
                    "data": [
                        { "secretKey": "password", "remoteRef": { "key": "db.password" } },
                        { "secretKey": "host", "remoteRef": { "key": "db[\"host\"]" } } ] } }),
            json!({ "apiVersion": "external-secrets.io/v1", "kind": "ExternalSecret", "metadata": { "name": "broken" },
                "spec": { "secretStoreRef": { "name": "aws" },
                    "data": [{ "secretKey": "x", "remoteRef": { "key": db_creds, "property": "no-such-field" } }] } }),
            json!({ "apiVersion": "apps/v1", "kind": "Deployment", "metadata": { "name": "web" },
                "spec": { "replicas": 1, "selector": { "matchLabels": { "app": "web" } },
                    "template": { "metadata": { "labels": { "app": "web" } },
                        "spec": { "containers": [{ "name": "web", "image": "nginx",
                            "envFrom": [{ "secretRef": { "name": "db" } }] }] } } } }),
        ];
        let repo = Repo::new();
        write(&repo, &docs, "external secrets");
        let engine = Engine::new(client.clone(), Some(moto.url.clone()));
        let cfg = Config {
            target_namespace: Some(ns.clone()),
            external: Some(engine.clone()),
            ..Config::new(repo.url(), format!("{ns}.es"))
        };
        let cache = GitCache::new(tempfile::tempdir().unwrap().keep());
        let out = first_sync(&client, &cache, &cfg).await;
        assert!(!out.skipped);
        Self {
            client,
            ns,
            engine,
            esc,
            canaries,
            secret_id,
            aws,
            db_creds,
            _repo: repo,
        }
    }

    fn secrets(&self) -> Api<Secret> {
        Api::namespaced(self.client.clone(), &self.ns)
    }

    fn external_secrets(&self) -> Api<ExternalSecret> {
        Api::namespaced(self.client.clone(), &self.ns)
    }

    /// The refresher of this namespace's ExternalSecrets, until dropped.
    fn refresher(&self) -> tokio::task::JoinHandle<()> {
        let (engine, client, ns) = (self.engine.clone(), self.client.clone(), self.ns.clone());
        tokio::spawn(async move {
            external_secrets::run(
                engine,
                client,
                tokio_util::sync::CancellationToken::new(),
                &Scope::Namespace(ns),
                None::<Gate>,
            )
            .await;
        })
    }

    /// Asserts that no value reached the log or a status.
    async fn assert_nothing_leaked(&self) {
        let logs = logs().text();
        let statuses = serde_json::to_string(
            &self
                .external_secrets()
                .list(&Default::default())
                .await
                .unwrap()
                .items,
        )
        .unwrap();
        for canary in self.canaries.iter().chain([&self.secret_id]) {
            assert!(!logs.contains(canary.as_str()), "a secret value reached the log");
            assert!(
                !statuses.contains(canary.as_str()),
                "a secret value reached a status"
            );
        }
    }
}

#[tokio::test]
async fn external_secrets_are_written_before_the_workloads_that_mount_them() {
    let m = Materialized::new("es", &backends().moto).await;
    let [aws, vault, esc] = &m.canaries;
    let secrets = m.secrets();
    let db = secrets.get("db").await.unwrap();
    assert_eq!(value(&db, "user"), "admin");
    assert_eq!(value(&db, "password"), *aws);
    assert_eq!(value(&db, "api-key"), "plain-api-key");
    assert_eq!(
        db.metadata.labels.as_ref().unwrap()["reconcile.external-secrets.io/managed"],
        "true"
    );
    assert_eq!(
        db.metadata.owner_references.as_ref().unwrap()[0].kind,
        "ExternalSecret"
    );
    let web = Api::<Deployment>::namespaced(m.client.clone(), &m.ns)
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
    assert_eq!(value(&secrets.get("db-copy").await.unwrap(), "password"), *aws);
    assert_eq!(value(&secrets.get("app-token").await.unwrap(), "token"), *vault);
    let all = secrets.get("app-all").await.unwrap();
    assert_eq!(
        value(&all, "token"),
        *vault,
        "a v1beta1 ExternalSecret through a ClusterSecretStore"
    );
    assert_eq!(value(&all, "region"), "eu");
    let esc_db = secrets.get("esc-db").await.unwrap();
    assert_eq!(
        value(&esc_db, "url"),
        format!("postgres://app:{esc}@db.internal/db")
    );
    assert!(
        esc_db.data.as_ref().unwrap().get("password").is_none(),
        "the template replaces the data"
    );
    m.assert_nothing_leaked().await;
}

#[tokio::test]
async fn identical_references_are_read_once() {
    let m = Materialized::new("es-once", &backends().moto).await;
    // Two AWS keys in one BatchGetSecretValue for four references, one ESC open for two, one
    // AppRole login.
    let calls = m.engine.calls.snapshot();
    assert_eq!(calls.get(&("aws", "BatchGetSecretValue")), Some(&1), "{calls:?}");
    assert_eq!(calls.get(&("aws", "GetSecretValue")), None, "{calls:?}");
    assert_eq!(calls.get(&("pulumi", "OpenEnvironment")), Some(&1), "{calls:?}");
    assert_eq!(calls.get(&("vault", "Login")), Some(&1), "{calls:?}");
    assert_eq!(m.esc.calls().0, 1);
}

#[tokio::test]
async fn status_is_written_as_eso_writes_it_and_a_broken_one_fails_alone() {
    let m = Materialized::new("es-status", &backends().moto).await;
    let ess = m.external_secrets();
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
    let (status, reason, message) = ready(&ess.get("broken").await.unwrap()).unwrap();
    assert_eq!((status.as_str(), reason.as_str()), ("False", "SecretSyncedError"));
    assert!(
        message.contains("spec.data[0].property") && message.contains("no-such-field"),
        "{message}"
    );
    assert!(m.secrets().get_opt("broken").await.unwrap().is_none());
}

#[tokio::test]
async fn a_value_rotated_in_the_backend_reaches_the_secret_within_a_refresh() {
    let m = Materialized::new("es-rotate", &backends().moto).await;
    let refresh = m.refresher();
    let rotated = format!("{}-rotated", m.canaries[0]);
    m.aws
        .put_secret_value()
        .secret_id(&m.db_creds)
        .secret_string(json!({ "user": "admin", "password": rotated }).to_string())
        .send()
        .await
        .unwrap();
    let started = std::time::Instant::now();
    let secrets = m.secrets();
    eventually("the rotated value", 15, async || {
        (value(&secrets.get("db").await.ok()?, "password") == rotated).then_some(())
    })
    .await;
    eprintln!(
        "rotation reached the Secret in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    refresh.abort();
    m.assert_nothing_leaked().await;
}

#[tokio::test]
async fn an_outage_keeps_the_secret_says_why_backs_off_and_recovers() {
    let mut moto = services::moto().unwrap();
    let moto_port: u16 = moto.url.rsplit(':').next().unwrap().parse().unwrap();
    let m = Materialized::new("es-outage", &moto).await;
    let refresh = m.refresher();
    let (secrets, ess) = (m.secrets(), m.external_secrets());
    moto.stop();
    let before = m.engine.calls.total("aws");
    let (_, _, why) = eventually("the outage condition", 20, async || {
        ready(&ess.get("db").await.ok()?).filter(|r| r.0 == "False")
    })
    .await;
    assert!(why.contains("BatchGetSecretValue"), "{why}");
    assert_eq!(
        value(&secrets.get("db").await.unwrap(), "password"),
        m.canaries[0],
        "kept unchanged"
    );
    tokio::time::sleep(Duration::from_secs(10)).await;
    let during = m.engine.calls.total("aws") - before;
    assert!(
        during <= 6,
        "{during} AWS calls in ~12 s of outage with a 1 s refresh interval: not backing off"
    );
    let moto2 = services::moto_on(moto_port).unwrap();
    let aws2 = services::aws_client(&moto2.url).await;
    aws2.create_secret()
        .name(&m.db_creds)
        .secret_string(json!({ "user": "admin", "password": "after-recovery" }).to_string())
        .send()
        .await
        .unwrap();
    aws2.create_secret()
        .name(format!("{}-api-key", m.ns))
        .secret_string("plain-api-key")
        .send()
        .await
        .unwrap();
    eventually("recovery", 60, async || {
        (value(&secrets.get("db").await.ok()?, "password") == "after-recovery").then_some(())
    })
    .await;
    // The status follows the Secret's write.
    eventually("Ready again", 10, async || {
        (ready(&ess.get("db").await.ok()?)?.0 == "True").then_some(())
    })
    .await;
    refresh.abort();
    assert!(
        !logs().text().contains("after-recovery"),
        "a secret value reached the log"
    );
}

/// A revision of bad references (and a good one, a ConfigMap and a Deployment mounting the
/// good one's Secret), synced.
struct BadInput {
    client: kube::Client,
    ns: String,
    docs: Vec<Json>,
    repo: Repo,
    cfg: Config,
    cache: GitCache,
    out: sync::Outcome,
}

impl BadInput {
    async fn new(prefix: &str) -> Self {
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
        let b = backends();
        let (client, ns) = setup(prefix).await;
        let aws = services::aws_client(&b.moto.url).await;
        for (name, v) in [
            (
                format!("{ns}-json"),
                json!({ "password": "CANARY-bad-json" }).to_string(),
            ),
            (format!("{ns}-plain"), "CANARY-bad-plain".to_owned()),
        ] {
            seed(&aws, &name, &v).await;
        }
        let v = &b.vault;
        bao(
            &v.url,
            &v.token,
            "PUT",
            &format!("sys/policies/acl/only-{ns}"),
            json!({ "policy": format!("path \"secret/data/{ns}-app\" {{ capabilities = [\"read\"] }}") }),
        )
        .await;
        bao(
            &v.url,
            &v.token,
            "POST",
            &format!("secret/data/{ns}-other"),
            json!({ "data": { "k": "CANARY-bad-vault" } }),
        )
        .await;
        let limited = bao(
            &v.url,
            &v.token,
            "POST",
            "auth/token/create",
            json!({ "policies": [format!("only-{ns}")], "ttl": "1h" }),
        )
        .await["auth"]["client_token"]
            .as_str()
            .unwrap()
            .to_owned();
        secret(
            &client,
            &ns,
            "creds",
            json!({ "aws-id": "test", "aws-secret": "test", "vault": limited }),
        )
        .await;
        let sel = |key: &str| json!({ "name": "creds", "key": key });
        let es = |name: &str, store: &str, spec: Json| {
            let mut s = json!({ "refreshInterval": "1h", "secretStoreRef": { "name": store } });
            s.as_object_mut()
                .unwrap()
                .extend(spec.as_object().unwrap().clone());
            json!({ "apiVersion": "external-secrets.io/v1", "kind": "ExternalSecret", "metadata": { "name": name }, "spec": s })
        };
        let one = |key: &str, property: Option<&str>| {
            let mut r = json!({ "key": key });
            if let Some(p) = property {
                r["property"] = p.into();
            }
            json!({ "data": [{ "secretKey": "v", "remoteRef": r }] })
        };
        let (json_key, plain_key, other_key) =
            (format!("{ns}-json"), format!("{ns}-plain"), format!("{ns}-other"));
        let docs = vec![
            json!({ "apiVersion": "external-secrets.io/v1", "kind": "SecretStore", "metadata": { "name": "aws" },
                "spec": { "provider": { "aws": { "service": "SecretsManager", "region": "us-east-1",
                    "auth": { "secretRef": { "accessKeyIDSecretRef": sel("aws-id"), "secretAccessKeySecretRef": sel("aws-secret") } } } } } }),
            json!({ "apiVersion": "external-secrets.io/v1", "kind": "SecretStore", "metadata": { "name": "no-creds" },
                "spec": { "provider": { "aws": { "service": "SecretsManager", "region": "us-east-1",
                    "auth": { "secretRef": { "accessKeyIDSecretRef": { "name": "missing-creds", "key": "id" },
                        "secretAccessKeySecretRef": { "name": "missing-creds", "key": "secret" } } } } } } }),
            json!({ "apiVersion": "external-secrets.io/v1", "kind": "SecretStore", "metadata": { "name": "vault-limited" },
                "spec": { "provider": { "vault": { "server": v.url, "path": "secret", "version": "v2",
                    "auth": { "tokenSecretRef": sel("vault") } } } } }),
            es("good", "aws", one(&json_key, Some("password"))),
            es("unknown-store", "no-such-store", one(&json_key, None)),
            es("store-not-ready", "no-creds", one(&json_key, None)),
            es("missing-property", "aws", one(&json_key, Some("user"))),
            es("not-json", "aws", one(&plain_key, Some("password"))),
            es("denied", "vault-limited", one(&other_key, Some("k"))),
            es(
                "bad-template",
                "aws",
                json!({
                "data": [{ "secretKey": "pw", "remoteRef": { "key": json_key, "property": "password" } }],
                "target": { "template": { "data": { "hash": "{{ .pw | sha256sum }}" } } } }),
            ),
            json!({ "apiVersion": "v1", "kind": "ConfigMap", "metadata": { "name": "settings" }, "data": { "a": "b" } }),
            json!({ "apiVersion": "apps/v1", "kind": "Deployment", "metadata": { "name": "web" },
                "spec": { "replicas": 1, "selector": { "matchLabels": { "app": "web" } },
                    "template": { "metadata": { "labels": { "app": "web" } },
                        "spec": { "containers": [{ "name": "web", "image": "nginx",
                            "envFrom": [{ "secretRef": { "name": "good" } }] }] } } } }),
        ];
        let repo = Repo::new();
        write(&repo, &docs, "bad input");
        let engine = Engine::new(client.clone(), Some(b.moto.url.clone()));
        let cfg = Config {
            target_namespace: Some(ns.clone()),
            external: Some(engine),
            ..Config::new(repo.url(), format!("{ns}.bad"))
        };
        let cache = GitCache::new(tempfile::tempdir().unwrap().keep());
        let out = first_sync(&client, &cache, &cfg).await;
        Self {
            client,
            ns,
            docs,
            repo,
            cfg,
            cache,
            out,
        }
    }
}

#[tokio::test]
async fn each_bad_reference_fails_only_its_own_external_secret_naming_the_field() {
    let b = BadInput::new("es-bad").await;
    let secrets: Api<Secret> = Api::namespaced(b.client.clone(), &b.ns);
    // The rest of the sync went on.
    assert_eq!(value(&secrets.get("good").await.unwrap(), "v"), "CANARY-bad-json");
    Api::<ConfigMap>::namespaced(b.client.clone(), &b.ns)
        .get("settings")
        .await
        .unwrap();
    Api::<Deployment>::namespaced(b.client.clone(), &b.ns)
        .get("web")
        .await
        .unwrap();
    let ess: Api<ExternalSecret> = Api::namespaced(b.client.clone(), &b.ns);
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
        let (status, reason, message) = ready(&ess.get(name).await.unwrap()).unwrap();
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
}

#[tokio::test]
async fn stores_report_whether_they_are_valid() {
    let b = BadInput::new("es-stores").await;
    let of = |s: Option<StoreStatus>| {
        s.and_then(|s| s.conditions.into_iter().find(|c| c.type_ == "Ready"))
            .map(|c| (c.status, c.reason))
    };
    let stores: Api<SecretStore> = Api::namespaced(b.client.clone(), &b.ns);
    assert_eq!(
        of(stores.get("aws").await.unwrap().status),
        Some(("True".into(), "Valid".into()))
    );
    assert_eq!(
        of(stores.get("no-creds").await.unwrap().status),
        Some(("False".into(), "InvalidProviderConfig".into()))
    );
}

#[tokio::test]
async fn a_workload_mounting_a_failed_secret_holds_the_workloads_back() {
    let b = BadInput::new("es-hold").await;
    let mut more = b.docs.clone();
    more.retain(|d| d["kind"] != "ConfigMap");
    more.push(json!({ "apiVersion": "apps/v1", "kind": "Deployment", "metadata": { "name": "needs-denied" },
        "spec": { "replicas": 1, "selector": { "matchLabels": { "app": "d" } },
            "template": { "metadata": { "labels": { "app": "d" } },
                "spec": { "containers": [{ "name": "d", "image": "nginx",
                    "env": [{ "name": "K", "valueFrom": { "secretKeyRef": { "name": "denied", "key": "v" } } }] }] } } } }));
    write(&b.repo, &more, "a workload needs the denied one");
    let err = sync::sync_once(
        b.client.clone(),
        &b.cache,
        &b.cfg,
        &Keys::default(),
        &b.out.inventory,
    )
    .await
    .unwrap_err()
    .to_string();
    assert!(err.contains("needs-denied") && err.contains("denied"), "{err}");
    assert!(!err.contains("CANARY"));
    assert!(
        Api::<Deployment>::namespaced(b.client.clone(), &b.ns)
            .get_opt("needs-denied")
            .await
            .unwrap()
            .is_none()
    );
    Api::<ConfigMap>::namespaced(b.client.clone(), &b.ns)
        .get("settings")
        .await
        .expect("not pruned by a failed sync");
}
