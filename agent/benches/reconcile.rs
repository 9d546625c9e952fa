//! Continuous reconciliation of a 1,000-object Sync (900 ConfigMaps, 100 SOPS Secrets made by
//! real sops), side by side with Flux (source-controller and kustomize-controller, built from
//! the Go module proxy) in one run, on one real apiserver, from one repository served over
//! smart HTTP by the real `git http-backend`; each tool syncs into its own namespace:
//!
//! * cold sync: from creating the Sync (the GitRepository and Kustomization) to Ready;
//! * a manual edit (a merge patch by another field manager, as `kubectl edit` writes) until
//!   it is put back; Flux corrects drift at its Kustomization's interval, Lockstep on the
//!   watch event;
//! * a push until its commit is applied: Lockstep is sent a signed GitHub webhook; Flux's
//!   GitRepository gets the annotation that its notification-controller's Receiver sets for a
//!   verified webhook (so Flux's figure leaves out the receiver itself);
//! * idle CPU over 60 s with everything synced (Lockstep watching the 1,000 objects), and
//!   resident memory.
//!
//! `cargo xtask bench` (builds Flux into the cache first), or
//! `cargo bench -p lockstep-agent --bench reconcile` once it is there.

// Benchmark code: a failed unwrap is a failed run.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::{Proc, free_port, median, ready, until};

use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::api::{Api, DynamicObject, GroupVersionKind, Patch, PatchParams, PostParams};
use kube::discovery::ApiResource;
use lockstep_tests::controlplane::{ControlPlane, Options};
use lockstep_tests::services::{self, http};
use lockstep_tests::{AgeKey, git};
use serde_json::json;

const OBJECTS: usize = 1000;
const SECRETS: usize = 100;
/// Flux's Kustomization interval: how often it looks for drift (its default in the docs'
/// examples is 10m; 30 s keeps the run short and flatters Flux's correction time).
const FLUX_INTERVAL: &str = "30s";
const EDITS: usize = 5;
const FLUX_EDITS: usize = 3;
const PUSHES: usize = 3;
const IDLE: Duration = Duration::from_secs(60);
const HOOK: &str = "bench-webhook-secret";

fn signed_push(port: u16, url: &str) -> u16 {
    lockstep_tests::services::github_push(port, url, "refs/heads/main", HOOK)
        .unwrap()
        .0
}

fn main() {
    common::main_beside_flux("reconcile", async |crds| run(&crds).await);
}

async fn run(flux_crds: &Path) {
    let work = tempfile::tempdir().unwrap();
    let w = work.path();
    eprintln!("starting the control plane ...");
    let cp = ControlPlane::start(&Options::default()).unwrap();
    let client = cp.client().await.unwrap();
    let crds = Path::new(env!("CARGO_MANIFEST_DIR")).join("../crds/sync.yaml");
    cp.kubectl(&["apply", "--server-side", "-f", crds.to_str().unwrap()]);
    cp.kubectl(&["apply", "--server-side", "-f", flux_crds.to_str().unwrap()]);
    for ns in ["lockstep-system", "bench-ls", "flux-system", "bench-flux"] {
        cp.kubectl(&["create", "namespace", ns]);
    }

    eprintln!(
        "making the repository: {} ConfigMaps, {SECRETS} SOPS Secrets (sops) ...",
        OBJECTS - SECRETS
    );
    let repo = w.join("repo");
    std::fs::create_dir_all(repo.join("cm")).unwrap();
    std::fs::create_dir_all(repo.join("secrets")).unwrap();
    git(&repo, &["init", "-q"]);
    let cm = |i: usize, value: &str| {
        format!(
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: cm-{i}\ndata:\n  key: {value}\n  other: \"{i}\"\n"
        )
    };
    for i in 0..OBJECTS - SECRETS {
        std::fs::write(repo.join(format!("cm/cm-{i}.yaml")), cm(i, &format!("value-{i}"))).unwrap();
    }
    let age = AgeKey::generate(w, "age.txt");
    let mut encrypt = Vec::new();
    for i in 0..SECRETS {
        let p = repo.join(format!("secrets/sops-{i}.yaml"));
        std::fs::write(
            &p,
            format!(
                "apiVersion: v1\nkind: Secret\nmetadata:\n  name: sops-{i}\nstringData:\n  password: pw-{i}\n"
            ),
        )
        .unwrap();
        encrypt.push(p);
    }
    lockstep_tests::sops_encrypt(
        &encrypt.iter().map(PathBuf::as_path).collect::<Vec<_>>(),
        &age.recipient,
        w,
    );
    git(&repo, &["add", "-A"]);
    git(&repo, &["commit", "-qm", "bench"]);
    let root = w.join("srv");
    std::fs::create_dir_all(&root).unwrap();
    git(
        &repo,
        &[
            "clone",
            "-q",
            "--bare",
            ".",
            root.join("repo.git").to_str().unwrap(),
        ],
    );
    git(
        &repo,
        &["remote", "add", "origin", root.join("repo.git").to_str().unwrap()],
    );
    let server = services::git_http(&root).unwrap();
    let url = format!("{}/repo.git", server.url);

    let age_key = std::fs::read_to_string(&age.path).unwrap();
    let secret = |name: &str, data: serde_json::Value| -> Secret {
        serde_json::from_value(json!({ "metadata": { "name": name }, "stringData": data })).unwrap()
    };
    let pp = PostParams::default();
    let ls_secrets: Api<Secret> = Api::namespaced(client.clone(), "lockstep-system");
    ls_secrets
        .create(&pp, &secret("sops-age", json!({ "key.agekey": age_key })))
        .await
        .unwrap();
    ls_secrets
        .create(&pp, &secret("hooks", json!({ "github": HOOK })))
        .await
        .unwrap();
    Api::<Secret>::namespaced(client.clone(), "flux-system")
        .create(&pp, &secret("sops-age", json!({ "age.agekey": age_key })))
        .await
        .unwrap();

    // Lockstep: the agent binary, as in a cluster (leader election, webhooks).
    let port = free_port();
    let agent = Proc::spawn(
        Command::new(env!("CARGO_BIN_EXE_lockstep-agent"))
            .args([
                "--namespace",
                "lockstep-system",
                "--listen",
                &format!("127.0.0.1:{port}"),
            ])
            .args([
                "--webhook-secret",
                "hooks",
                "--git-cache",
                w.join("ls-git").to_str().unwrap(),
            ])
            .env("KUBECONFIG", cp.kubeconfig())
            .env("RUST_LOG", "warn"),
        w.join("agent.log"),
    );
    until(
        "the agent ready",
        Duration::from_secs(60),
        &[&agent],
        async || matches!(http(port, "GET", "/readyz", &[], b""), Ok((200, _))).then_some(()),
    )
    .await;
    // Flux: source-controller serving artifacts on loopback, kustomize-controller.
    let (source_controller, kustomize_controller) = common::start_flux(cp.kubeconfig(), w);
    let flux = [&source_controller, &kustomize_controller];

    // Cold syncs.
    let syncs: Api<DynamicObject> = Api::namespaced_with(
        client.clone(),
        "lockstep-system",
        &ApiResource::from_gvk(&GroupVersionKind::gvk("lockstep.dev", "v1alpha1", "Sync")),
    );
    let sync: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "lockstep.dev/v1alpha1", "kind": "Sync", "metadata": { "name": "bench" },
        "spec": { "source": { "url": url, "interval": "10m" }, "targetNamespace": "bench-ls",
                  "decryption": { "sops": { "secretRef": { "name": "sops-age" } } } }
    }))
    .unwrap();
    eprintln!("lockstep: cold sync ...");
    let t = Instant::now();
    syncs.create(&pp, &sync).await.unwrap();
    until(
        "the Sync Ready",
        Duration::from_secs(120),
        &[&agent],
        async || ready(&syncs.get("bench").await.unwrap()).then_some(()),
    )
    .await;
    let ls_cold = t.elapsed();

    eprintln!("flux: cold sync ...");
    let t = Instant::now();
    let (repos, kustomizations) = common::create_flux_sync(&client, &url, FLUX_INTERVAL).await;
    until(
        "the Kustomization Ready",
        Duration::from_secs(300),
        &flux,
        async || ready(&kustomizations.get("bench").await.unwrap()).then_some(()),
    )
    .await;
    let flux_cold = t.elapsed();

    // Manual edits put back.
    let edit = async |ns: &str, i: usize, edits: usize, within: Duration, procs: &[&Proc]| -> Vec<Duration> {
        let cms: Api<ConfigMap> = Api::namespaced(client.clone(), ns);
        let params = PatchParams {
            field_manager: Some("kubectl-edit".into()),
            ..PatchParams::default()
        };
        let mut took = Vec::new();
        for n in 0..edits {
            let name = format!("cm-{}", i + n * 7);
            let want = format!("value-{}", i + n * 7);
            let t = Instant::now();
            cms.patch(
                &name,
                &params,
                &Patch::Merge(json!({ "data": { "key": "edited" } })),
            )
            .await
            .unwrap();
            until(&format!("{ns}/{name} put back"), within, procs, async || {
                let c = cms.get(&name).await.unwrap();
                (c.data?.get("key")? == &want).then_some(())
            })
            .await;
            took.push(t.elapsed());
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        took
    };
    eprintln!("lockstep: {EDITS} manual edits ...");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let ls_edits = edit("bench-ls", 11, EDITS, Duration::from_secs(30), &[&agent]).await;
    eprintln!("flux: {FLUX_EDITS} manual edits (interval {FLUX_INTERVAL}) ...");
    let flux_edits = edit("bench-flux", 11, FLUX_EDITS, Duration::from_secs(120), &flux).await;

    // Pushes until applied.
    let mut ls_pushes = Vec::new();
    let mut flux_pushes = Vec::new();
    for n in 0..PUSHES {
        let i = 3 + n;
        let value = format!("pushed-{n}");
        std::fs::write(repo.join(format!("cm/cm-{i}.yaml")), cm(i, &value)).unwrap();
        git(&repo, &["commit", "-qam", &value]);
        git(&repo, &["push", "-q", "origin", "HEAD:main"]);
        let applied = async |ns: &str, procs: &[&Proc]| {
            let cms: Api<ConfigMap> = Api::namespaced(client.clone(), ns);
            until(
                &format!("{ns}/cm-{i} = {value}"),
                Duration::from_secs(120),
                procs,
                async || {
                    let c = cms.get(&format!("cm-{i}")).await.unwrap();
                    (c.data?.get("key")? == &value).then_some(())
                },
            )
            .await;
        };
        let t = Instant::now();
        assert_eq!(signed_push(port, &url), 200);
        applied("bench-ls", &[&agent]).await;
        ls_pushes.push(t.elapsed());
        let t = Instant::now();
        let at = lockstep_formats::sops::now_rfc3339_nanos();
        repos
            .patch(
                "bench",
                &PatchParams::default(),
                &Patch::Merge(
                    json!({ "metadata": { "annotations": { "reconcile.fluxcd.io/requestedAt": at } } }),
                ),
            )
            .await
            .unwrap();
        applied("bench-flux", &flux).await;
        flux_pushes.push(t.elapsed());
    }

    // Idle.
    eprintln!("idle for {} s ...", IDLE.as_secs());
    tokio::time::sleep(Duration::from_secs(5)).await;
    let flux_cpu = || source_controller.cpu() + kustomize_controller.cpu();
    let (ls0, flux0, t) = (agent.cpu(), flux_cpu(), Instant::now());
    tokio::time::sleep(IDLE).await;
    let wall = t.elapsed().as_secs_f64();
    let ls_idle = (agent.cpu() - ls0).as_secs_f64() / wall * 100.0;
    let flux_idle = (flux_cpu() - flux0).as_secs_f64() / wall * 100.0;
    // Flux again at the interval its docs use (10m), so that its idle figure is not a
    // reconcile in progress: the spec change reconciles once, then it rests.
    eprintln!("flux: idle at interval 10m for {} s ...", IDLE.as_secs());
    kustomizations
        .patch(
            "bench",
            &PatchParams::default(),
            &Patch::Merge(json!({ "spec": { "interval": "10m" } })),
        )
        .await
        .unwrap();
    until(
        "the Kustomization to observe interval 10m",
        Duration::from_secs(300),
        &flux,
        async || {
            let k = kustomizations.get("bench").await.unwrap();
            let observed = k
                .data
                .pointer("/status/observedGeneration")
                .and_then(|g| g.as_i64());
            (observed == k.metadata.generation && ready(&k)).then_some(())
        },
    )
    .await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    let (flux0, t) = (flux_cpu(), Instant::now());
    tokio::time::sleep(IDLE).await;
    let flux_rest = (flux_cpu() - flux0).as_secs_f64() / t.elapsed().as_secs_f64() * 100.0;
    let watched = http(port, "GET", "/metrics", &[], b"")
        .unwrap()
        .1
        .lines()
        .find_map(|l| l.strip_prefix("lockstep_watched_objects "))
        .unwrap_or("?")
        .to_owned();
    let (ls_rss, flux_rss) = (
        agent.rss_mib(),
        source_controller.rss_mib() + kustomize_controller.rss_mib(),
    );

    let s = |d: Duration| format!("{:.2} s", d.as_secs_f64());
    let max = |v: &[Duration]| v.iter().max().copied().unwrap_or_default();
    println!();
    println!(
        "Reconciling {OBJECTS} objects ({} ConfigMaps, {SECRETS} SOPS Secrets) from Git over HTTP on a real apiserver, side by side",
        OBJECTS - SECRETS
    );
    println!(
        "| {:<44} | {:>22} | {:>34} |",
        "what", "lockstep", "Flux (kustomize v1.9.6, source v1.9.3)"
    );
    println!("|{:-<46}|{:->24}|{:->36}|", "", "", "");
    let row = |what: &str, a: String, b: String| println!("| {what:<44} | {a:>22} | {b:>34} |");
    row("cold sync (create → Ready)", s(ls_cold), s(flux_cold));
    row(
        "manual edit → put back (median / max)",
        format!("{} / {}", s(median(ls_edits.clone())), s(max(&ls_edits))),
        format!(
            "{} / {} (interval {FLUX_INTERVAL})",
            s(median(flux_edits.clone())),
            s(max(&flux_edits))
        ),
    );
    row(
        "push → commit applied (median / max)",
        format!("{} / {}", s(median(ls_pushes.clone())), s(max(&ls_pushes))),
        format!("{} / {}", s(median(flux_pushes.clone())), s(max(&flux_pushes))),
    );
    row(
        &format!("idle CPU over {} s (% of one core)", IDLE.as_secs()),
        format!("{ls_idle:.2} %"),
        format!("{flux_idle:.2} % (interval {FLUX_INTERVAL})"),
    );
    row("", String::new(), format!("{flux_rest:.2} % (interval 10m)"));
    row(
        "resident memory",
        format!("{ls_rss:.1} MiB"),
        format!("{flux_rss:.1} MiB"),
    );
    println!();
    println!(
        "lockstep watched {watched} objects for drift; the push is a signed GitHub webhook to lockstep, and for Flux the annotation its Receiver sets"
    );
    let met = |ok: bool| if ok { "met" } else { "NOT met" };
    println!(
        "targets: correction < 2 s: {}; webhook-to-applied < 2 s: {}; idle CPU < 1 % of a core: {}",
        met(max(&ls_edits) < Duration::from_secs(2)),
        met(max(&ls_pushes) < Duration::from_secs(2)),
        met(ls_idle < 1.0)
    );
}
