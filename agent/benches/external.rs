//! 500 ExternalSecrets referencing 50 distinct AWS secrets (real moto, real apiserver): the time
//! from the start of a sync to all 500 Secrets present and the backend calls it made, beside the
//! naive one-call-per-reference reader (what a controller without dedupe or batching does: one
//! `GetSecretValue` per reference, in sequence) against the same moto. Then one refresh of all
//! 500 (what the refresh loop runs when they fall due together).
//!
//! `cargo bench -p lockstep-agent --bench external`

// Benchmark code: a failed unwrap is a failed run.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::path::Path;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, ListParams, PostParams};
use lockstep_agent::plan::Inventory;
use lockstep_agent::secrets::DecryptionKeys as Keys;
use lockstep_agent::secrets::external::Engine;
use lockstep_agent::secrets::external::api::ExternalSecret;
use lockstep_agent::secrets::external::engine::LocalStores;
use lockstep_agent::source::GitCache;
use lockstep_agent::sync::{Config, sync_once};
use lockstep_tests::controlplane::{ControlPlane, Options};
use lockstep_tests::{git, services};
use serde_json::json;

const EXTERNAL_SECRETS: usize = 500;
const DISTINCT: usize = 50;
const NS: &str = "bench-es";

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        eprintln!("external: skipped (a benchmark; run `cargo bench -p lockstep-agent --bench external`)");
        return;
    }
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let work = tempfile::tempdir().unwrap();
    let w = work.path();
    eprintln!("starting the control plane and moto ...");
    let cp = ControlPlane::start(&Options::default()).unwrap();
    let moto = services::moto().unwrap();
    let kubectl = |args: &[&str]| {
        cp.kubectl(args);
    };
    let crds = Path::new(env!("CARGO_MANIFEST_DIR")).join("../crds/external-secrets.io.yaml");
    kubectl(&["apply", "--server-side", "-f", crds.to_str().unwrap()]);
    kubectl(&[
        "wait",
        "--for=condition=Established",
        "crd/externalsecrets.external-secrets.io",
        "--timeout=60s",
    ]);
    kubectl(&["create", "namespace", NS]);

    let client = rt.block_on(cp.client()).unwrap();
    let aws = rt.block_on(services::aws_client(&moto.url));
    rt.block_on(async {
        for i in 0..DISTINCT {
            aws.create_secret()
                .name(format!("app-{i}"))
                .secret_string(json!({ "user": format!("u{i}"), "password": format!("p{i}") }).to_string())
                .send()
                .await
                .unwrap();
        }
        let creds: Secret = serde_json::from_value(json!({
            "metadata": { "name": "aws-creds" },
            "stringData": { "id": "test", "secret": "test" },
        }))
        .unwrap();
        Api::<Secret>::namespaced(client.clone(), NS)
            .create(&PostParams::default(), &creds)
            .await
            .unwrap();
    });

    eprintln!(
        "making the repository: a SecretStore and {EXTERNAL_SECRETS} ExternalSecrets over {DISTINCT} AWS secrets ..."
    );
    let repo = w.join("repo");
    std::fs::create_dir_all(&repo).unwrap();
    let mut docs = vec![
        json!({ "apiVersion": "external-secrets.io/v1", "kind": "SecretStore", "metadata": { "name": "aws" },
        "spec": { "provider": { "aws": { "service": "SecretsManager", "region": "us-east-1",
            "auth": { "secretRef": { "accessKeyIDSecretRef": { "name": "aws-creds", "key": "id" },
                "secretAccessKeySecretRef": { "name": "aws-creds", "key": "secret" } } } } } } }),
    ];
    for i in 0..EXTERNAL_SECRETS {
        let key = format!("app-{}", i % DISTINCT);
        docs.push(json!({ "apiVersion": "external-secrets.io/v1", "kind": "ExternalSecret", "metadata": { "name": format!("es-{i}") },
            "spec": { "refreshInterval": "1h", "secretStoreRef": { "name": "aws" },
                "data": [{ "secretKey": "password", "remoteRef": { "key": key, "property": "password" } }] } }));
    }
    let text: Vec<String> = docs.iter().map(|d| serde_json::to_string(d).unwrap()).collect();
    std::fs::write(repo.join("all.yaml"), text.join("\n---\n")).unwrap();
    git(&repo, &["init", "-q"]);
    git(&repo, &["add", "-A"]);
    git(&repo, &["commit", "-qm", "bench"]);

    let engine = Engine::new(client.clone(), Some(moto.url.clone()));
    let cfg = Config {
        target_namespace: Some(NS.into()),
        external: Some(engine.clone()),
        ..Config::new(format!("file://{}", repo.display()), "bench.external")
    };
    let cache = GitCache::new(w.join("git-cache"));
    let secrets: Api<Secret> = Api::namespaced(client.clone(), NS);
    let managed = ListParams::default().labels("reconcile.external-secrets.io/managed=true");

    eprintln!(
        "lockstep: sync (apply the store and {EXTERNAL_SECRETS} ExternalSecrets, materialise them) ..."
    );
    let t = Instant::now();
    let out = rt
        .block_on(sync_once(
            client.clone(),
            &cache,
            &cfg,
            &Keys::default(),
            &Inventory::default(),
        ))
        .unwrap();
    let present = rt.block_on(secrets.list_metadata(&managed)).unwrap().items.len();
    let sync_time = t.elapsed();
    assert_eq!(
        present, EXTERNAL_SECRETS,
        "every Secret present when the sync returns"
    );
    let sync_calls = engine.calls.snapshot();
    let sync_total = engine.calls.total("aws");
    drop(out);

    eprintln!("lockstep: one refresh of all {EXTERNAL_SECRETS} ...");
    let batch = rt
        .block_on(Api::<ExternalSecret>::namespaced(client.clone(), NS).list(&ListParams::default()))
        .unwrap()
        .items;
    let t = Instant::now();
    let outcomes = rt.block_on(engine.run(&batch, &LocalStores::default()));
    let refresh_time = t.elapsed();
    assert!(outcomes.iter().all(|o| matches!(
        o,
        lockstep_agent::secrets::external::engine::Outcome::Synced { .. }
    )));
    let refresh_total = engine.calls.total("aws") - sync_total;

    eprintln!("naive: one GetSecretValue per reference, in sequence ...");
    let t = Instant::now();
    rt.block_on(async {
        for i in 0..EXTERNAL_SECRETS {
            let v = aws
                .get_secret_value()
                .secret_id(format!("app-{}", i % DISTINCT))
                .send()
                .await
                .unwrap();
            assert!(v.secret_string().is_some());
        }
    });
    let naive_time = t.elapsed();

    println!();
    println!(
        "{EXTERNAL_SECRETS} ExternalSecrets over {DISTINCT} distinct AWS secrets (moto), real apiserver"
    );
    println!("| {:<62} | {:>8} | {:>13} |", "what", "seconds", "backend calls");
    println!("|{:-<64}|{:->10}|{:->15}|", "", "", "");
    println!(
        "| {:<62} | {:>8.2} | {:>13} |",
        "lockstep sync: apply, read, all 500 Secrets written",
        sync_time.as_secs_f64(),
        sync_total
    );
    println!(
        "| {:<62} | {:>8.2} | {:>13} |",
        "lockstep refresh of all 500 (read, compare, nothing to write)",
        refresh_time.as_secs_f64(),
        refresh_total
    );
    println!(
        "| {:<62} | {:>8.2} | {:>13} |",
        "naive: one GetSecretValue per reference (reads only)",
        naive_time.as_secs_f64(),
        EXTERNAL_SECRETS
    );
    println!();
    println!(
        "lockstep's calls in the sync: {sync_calls:?} (BatchGetSecretValue reads up to 20 secrets a call)"
    );
    println!(
        "targets: all Secrets in < 10 s: {}; backend reads = distinct references ({DISTINCT} secrets, {} calls): {}",
        if sync_time < Duration::from_secs(10) {
            "met"
        } else {
            "NOT met"
        },
        sync_total,
        if sync_total <= DISTINCT as u64 {
            "met"
        } else {
            "NOT met"
        },
    );
}
