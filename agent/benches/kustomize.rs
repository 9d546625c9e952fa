//! A kustomize tree of 50 apps, each a base (Deployment, a headless Service (the test control
//! plane's service range holds 254 addresses), ServiceAccount, ConfigMap, a
//! SOPS Secret made by real sops) and 3 overlays (prefix, label, image tag, replicas, a patch, a
//! configMapGenerator, a secretGenerator over a SOPS dotenv file): 150 overlays, 1,050 objects,
//! one kustomization at the root listing them. Side by side in one run:
//!
//! * render: Lockstep's build through the helper plus the decryption of every SOPS value (MAC
//!   verified), against the real `kustomize build` CLI (same module version) alone, which
//!   decrypts nothing (target: within 1.2× of the CLI);
//! * cold sync on a real apiserver, from one repository over smart HTTP: the agent binary
//!   against Flux's source-controller and kustomize-controller (which decrypt too; target:
//!   ≥ 10× faster);
//! * no-op polls: the builds the agent started over 10 s of polls of an unchanged commit
//!   (`lockstep_render_builds_total`; target: none).
//!
//! `cargo xtask bench`, or `cargo bench -p lockstep-agent --bench kustomize` once Flux is in the
//! cache (`LOCKSTEP_BENCH_RENDER_ONLY=1`: the render part alone).

// Benchmark code: a failed unwrap is a failed run.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::{median, ready, until};
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, DynamicObject, GroupVersionKind, PostParams};
use kube::discovery::ApiResource;
use lockstep_formats::sops::Identities;
use lockstep_tests::controlplane::{ControlPlane, Options};
use lockstep_tests::services::{self, http};
use lockstep_tests::{AgeKey, git, peer};
use serde_json::json;

const APPS: usize = 50;
const ENVS: [&str; 3] = ["dev", "staging", "prod"];
const RUNS: usize = 5;

fn write(root: &Path, file: &str, text: &str) {
    let p = root.join(file);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, text).unwrap();
}

/// The tree, with its SOPS files encrypted by real sops.
fn tree(repo: &Path, age: &AgeKey, home: &Path) -> usize {
    let mut overlays = Vec::new();
    let mut sops_secrets = Vec::new();
    let mut dotenvs = Vec::new();
    for a in 0..APPS {
        let app = format!("app-{a}");
        let base = format!("apps/{app}/base");
        write(
            repo,
            &format!("{base}/kustomization.yaml"),
            "resources:\n- deployment.yaml\n- service.yaml\n- serviceaccount.yaml\n- configmap.yaml\n- db.sops.yaml\n",
        );
        write(
            repo,
            &format!("{base}/deployment.yaml"),
            &format!(
                "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: {app}\n  labels: {{app: {app}}}\nspec:\n  replicas: 1\n  selector: {{matchLabels: {{app: {app}}}}}\n  template:\n    metadata: {{labels: {{app: {app}}}}}\n    spec:\n      serviceAccountName: {app}\n      containers:\n      - name: app\n        image: registry.example.com/{app}:1.0\n        envFrom:\n        - configMapRef: {{name: {app}-settings}}\n        - secretRef: {{name: {app}-db}}\n        - secretRef: {{name: {app}-env}}\n"
            ),
        );
        write(
            repo,
            &format!("{base}/service.yaml"),
            &format!(
                "apiVersion: v1\nkind: Service\nmetadata:\n  name: {app}\nspec:\n  clusterIP: None\n  selector: {{app: {app}}}\n  ports:\n  - port: 80\n    targetPort: 8080\n"
            ),
        );
        write(
            repo,
            &format!("{base}/serviceaccount.yaml"),
            &format!("apiVersion: v1\nkind: ServiceAccount\nmetadata:\n  name: {app}\n"),
        );
        write(
            repo,
            &format!("{base}/configmap.yaml"),
            &format!(
                "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {app}-settings\ndata:\n  LOG_LEVEL: info\n"
            ),
        );
        write(
            repo,
            &format!("{base}/db.sops.yaml"),
            &format!(
                "apiVersion: v1\nkind: Secret\nmetadata:\n  name: {app}-db\nstringData:\n  password: pw-{a}\n  user: {app}\n"
            ),
        );
        sops_secrets.push(repo.join(format!("{base}/db.sops.yaml")));
        for (e, env) in ENVS.iter().enumerate() {
            let dir = format!("apps/{app}/overlays/{env}");
            write(
                repo,
                &format!("{dir}/kustomization.yaml"),
                &format!(
                    "resources:\n- ../../base\nnamePrefix: {env}-\nlabels:\n- pairs: {{env: {env}}}\n  includeTemplates: true\nimages:\n- name: registry.example.com/{app}\n  newTag: \"1.{e}\"\nreplicas:\n- name: {app}\n  count: {}\npatches:\n- target: {{kind: Deployment}}\n  patch: |-\n    - op: add\n      path: /spec/template/metadata/annotations\n      value: {{tier: {env}}}\nconfigMapGenerator:\n- name: {app}-flags\n  literals: [ENV={env}]\nsecretGenerator:\n- name: {app}-env\n  envs: [app.env]\n",
                    e + 1
                ),
            );
            write(
                repo,
                &format!("{dir}/app.env"),
                &format!("TOKEN=token-{a}-{env}\nREGION=eu\n"),
            );
            dotenvs.push(repo.join(format!("{dir}/app.env")));
            overlays.push(dir);
        }
    }
    let list: String = overlays.iter().map(|o| format!("- {o}\n")).collect();
    write(repo, "kustomization.yaml", &format!("resources:\n{list}"));
    lockstep_tests::sops_encrypt(
        &sops_secrets.iter().map(PathBuf::as_path).collect::<Vec<_>>(),
        &age.recipient,
        home,
    );
    lockstep_tests::sops_encrypt_all(
        &dotenvs.iter().map(PathBuf::as_path).collect::<Vec<_>>(),
        &age.recipient,
        home,
    );
    overlays.len() * 7
}

fn main() {
    common::main_beside_flux("kustomize", async |crds| run(&crds).await);
}

async fn run(flux_crds: &Path) {
    let work = tempfile::tempdir().unwrap();
    let w = work.path();
    let repo = w.join("repo");
    std::fs::create_dir_all(&repo).unwrap();
    git(&repo, &["init", "-q"]);
    let age = AgeKey::generate(w, "age.txt");
    eprintln!(
        "making the tree: {APPS} apps × (base + {} overlays), SOPS files by sops ...",
        ENVS.len()
    );
    let objects = tree(&repo, &age, w);
    git(&repo, &["add", "-A"]);
    git(&repo, &["commit", "-qm", "bench"]);

    // Render: the helper plus decryption, in this process, against the kustomize CLI.
    let mut files = BTreeMap::new();
    common::read_files(&repo, &repo, &mut files);
    let helper = lockstep_kustomize::Helper::new(peer("lockstep-kustomize"));
    let mut ids = Identities::new();
    ids.add_file(&age.path).unwrap();
    eprintln!("render: {RUNS} runs each ...");
    let mut ours = Vec::new();
    let mut built = 0;
    let mut decrypted = 0;
    for _ in 0..RUNS {
        let t = Instant::now();
        let out = lockstep_kustomize::build(&helper, &files, "").unwrap();
        decrypted = 0;
        for b in &out {
            if b.encrypted.is_some() {
                lockstep_kustomize::decrypt(&files, b, Some(&ids)).unwrap();
                decrypted += 1;
            }
        }
        ours.push(t.elapsed());
        built = out.len();
    }
    assert_eq!(built, objects);
    let mut cli = Vec::new();
    for _ in 0..RUNS {
        let t = Instant::now();
        let out = Command::new(peer("kustomize"))
            .args(["build", "--load-restrictor", "LoadRestrictionsNone", "."])
            .current_dir(&repo)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        cli.push(t.elapsed());
    }
    let (ours, cli) = (median(ours), median(cli));
    if std::env::var_os("LOCKSTEP_BENCH_RENDER_ONLY").is_some() {
        println!("render (median of {RUNS}): lockstep {ours:.2?} (build + decrypt), kustomize CLI {cli:.2?}");
        return;
    }

    // Cold sync on a real apiserver, against Flux.
    eprintln!("starting the control plane ...");
    let cp = ControlPlane::start(&Options::default()).unwrap();
    let client = cp.client().await.unwrap();
    let crds = Path::new(env!("CARGO_MANIFEST_DIR")).join("../crds/sync.yaml");
    cp.kubectl(&["apply", "--server-side", "-f", crds.to_str().unwrap()]);
    cp.kubectl(&["apply", "--server-side", "-f", flux_crds.to_str().unwrap()]);
    for ns in ["lockstep-system", "bench-ls", "flux-system", "bench-flux"] {
        cp.kubectl(&["create", "namespace", ns]);
    }
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
    let server = services::git_http(&root).unwrap();
    let url = format!("{}/repo.git", server.url);
    let age_key = std::fs::read_to_string(&age.path).unwrap();
    let secret = |name: &str, data: serde_json::Value| -> Secret {
        serde_json::from_value(json!({ "metadata": { "name": name }, "stringData": data })).unwrap()
    };
    let pp = PostParams::default();
    Api::<Secret>::namespaced(client.clone(), "lockstep-system")
        .create(&pp, &secret("sops-age", json!({ "key.agekey": age_key })))
        .await
        .unwrap();
    Api::<Secret>::namespaced(client.clone(), "flux-system")
        .create(&pp, &secret("sops-age", json!({ "age.agekey": age_key })))
        .await
        .unwrap();
    let (agent, port) = common::start_agent(
        env!("CARGO_BIN_EXE_lockstep-agent"),
        cp.kubeconfig(),
        w,
        &[("LOCKSTEP_KUSTOMIZE_HELPER", peer("lockstep-kustomize"))],
    )
    .await;
    let (source_controller, kustomize_controller) = common::start_flux(cp.kubeconfig(), w);
    let flux = [&source_controller, &kustomize_controller];

    let api = |ns: &str, group: &str, version: &str, kind: &str| -> Api<DynamicObject> {
        Api::namespaced_with(
            client.clone(),
            ns,
            &ApiResource::from_gvk(&GroupVersionKind::gvk(group, version, kind)),
        )
    };
    let syncs = api("lockstep-system", "lockstep.dev", "v1alpha1", "Sync");
    eprintln!("lockstep: cold sync ...");
    let t = Instant::now();
    syncs
        .create(
            &pp,
            &serde_json::from_value(json!({
                "apiVersion": "lockstep.dev/v1alpha1", "kind": "Sync", "metadata": { "name": "bench" },
                "spec": { "source": { "url": url, "interval": "1s" }, "targetNamespace": "bench-ls",
                          "decryption": { "sops": { "secretRef": { "name": "sops-age" } } } }
            }))
            .unwrap(),
        )
        .await
        .unwrap();
    until(
        "the Sync Ready",
        Duration::from_secs(180),
        &[&agent],
        async || ready(&syncs.get("bench").await.unwrap()).then_some(()),
    )
    .await;
    let ls_cold = t.elapsed();
    let builds = || {
        http(port, "GET", "/metrics", &[], b"")
            .unwrap()
            .1
            .lines()
            .find_map(|l| l.strip_prefix("lockstep_render_builds_total "))
            .and_then(|v| v.trim().parse::<u64>().ok())
            .unwrap()
    };
    let before = builds();
    eprintln!("lockstep: 10 s of 1 s polls of the same commit ...");
    tokio::time::sleep(Duration::from_secs(10)).await;
    let noop_builds = builds() - before;

    eprintln!("flux: cold sync ...");
    let t = Instant::now();
    let (_, kustomizations) = common::create_flux_sync(&client, &url, "10m").await;
    until(
        "the Kustomization Ready",
        Duration::from_secs(600),
        &flux,
        async || ready(&kustomizations.get("bench").await.unwrap()).then_some(()),
    )
    .await;
    let flux_cold = t.elapsed();
    let count = async |ns: &str| {
        let secrets: Api<Secret> = Api::namespaced(client.clone(), ns);
        secrets.list(&Default::default()).await.unwrap().items.len()
    };
    let (ls_secrets, flux_secrets) = (count("bench-ls").await, count("bench-flux").await);
    assert_eq!(ls_secrets, flux_secrets, "both decrypted the same Secrets");

    let s = |d: Duration| format!("{:.2} s", d.as_secs_f64());
    println!();
    println!(
        "A kustomize tree: {APPS} apps × (base + {} overlays), {objects} objects ({decrypted} from SOPS files, decrypted), side by side",
        ENVS.len()
    );
    println!("| {:<44} | {:>24} | {:>35} |", "what", "lockstep", "peer");
    println!("|{:-<46}|{:->26}|{:->37}|", "", "", "");
    let row = |what: &str, a: String, b: String| println!("| {what:<44} | {a:>24} | {b:>35} |");
    row(
        &format!("render (median of {RUNS})"),
        format!("{} (build + decrypt)", s(ours)),
        format!("{} (kustomize v5.8.2 CLI)", s(cli)),
    );
    row(
        "cold sync (create → Ready)",
        s(ls_cold),
        format!("{} (Flux kustomize-controller)", s(flux_cold)),
    );
    row(
        "builds started by 10 s of no-op polls",
        noop_builds.to_string(),
        "-".into(),
    );
    println!();
    let ratio = ours.as_secs_f64() / cli.as_secs_f64();
    let speedup = flux_cold.as_secs_f64() / ls_cold.as_secs_f64();
    let met = |ok: bool| if ok { "met" } else { "NOT met" };
    println!(
        "targets: render within 1.2× of the CLI: {} ({ratio:.2}×); cold sync ≥ 10× faster than Flux: {} ({speedup:.1}×); no-op poll starts no build: {}",
        met(ratio <= 1.2),
        met(speedup >= 10.0),
        met(noop_builds == 0)
    );
}
