//! Charts, side by side in one run:
//!
//! * render: a chart of 100 components (Deployment, headless Service, ServiceAccount,
//!   ConfigMap through `tpl`, Secret: 500 objects, through `include` and a library-style
//!   helper) with a values file and a SOPS values file (real sops) of 100 passwords: Lockstep's
//!   render (the SOPS file decrypted, MAC verified, then the helper) against the real
//!   `helm template` CLI of the same Helm release given the plaintext (target: within 1.2×);
//! * chart-source reads: 20 Syncs of one chart of one HTTPS Helm repository (basic auth), 2 s
//!   interval, the agent binary on a real apiserver: index and archive GETs the repository
//!   served in 20 s once every Sync is Ready, against Flux's source-controller with one
//!   `HelmRepository` and 20 `HelmChart`s at the same interval (target: one index read per
//!   repository per interval, not one per Sync).
//!
//! `cargo xtask bench`, or `cargo bench -p lockstep-agent --bench helm` once Flux is in the
//! cache (`LOCKSTEP_BENCH_RENDER_ONLY=1`: the render part alone).

// Benchmark code: a failed unwrap is a failed run.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

mod common;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::{median, ready, until};
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, DynamicObject, GroupVersionKind, PostParams};
use kube::discovery::ApiResource;
use lockstep_agent::render::helm::{Chart, HelmConfig};
use lockstep_formats::sops::Identities;
use lockstep_tests::controlplane::{ControlPlane, Options};
use lockstep_tests::services;
use lockstep_tests::{AgeKey, git, peer};
use serde_json::json;

const COMPONENTS: usize = 100;
const RUNS: usize = 5;
const SYNCS: usize = 20;
const WINDOW: Duration = Duration::from_secs(20);
const INTERVAL_SECS: u64 = 2;

const TEMPLATE: &str = r#"{{- range $c := .Values.components }}
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: {{ $c.name }}
  labels: {{- include "platform.labels" (dict "root" $ "name" $c.name) | nindent 4 }}
spec:
  replicas: {{ $c.replicas }}
  selector: {matchLabels: {app: {{ $c.name }}}}
  template:
    metadata:
      labels: {app: {{ $c.name }}}
      annotations:
        checksum/config: {{ tpl (toYaml $c.config) $ | sha256sum }}
    spec:
      serviceAccountName: {{ $c.name }}
      containers:
        - name: app
          image: "{{ $.Values.registry }}/{{ $c.name }}:{{ $c.tag | default $.Chart.AppVersion }}"
          envFrom: [{configMapRef: {name: {{ $c.name }}-config}}, {secretRef: {name: {{ $c.name }}-db}}]
---
apiVersion: v1
kind: Service
metadata:
  name: {{ $c.name }}
  labels: {{- include "platform.labels" (dict "root" $ "name" $c.name) | nindent 4 }}
spec:
  clusterIP: None
  selector: {app: {{ $c.name }}}
  ports: [{port: {{ $c.port }}, targetPort: 8080}]
---
apiVersion: v1
kind: ServiceAccount
metadata:
  name: {{ $c.name }}
  labels: {{- include "platform.labels" (dict "root" $ "name" $c.name) | nindent 4 }}
---
apiVersion: v1
kind: ConfigMap
metadata:
  name: {{ $c.name }}-config
data:
{{ tpl (toYaml $c.config) $ | indent 2 }}
---
apiVersion: v1
kind: Secret
metadata:
  name: {{ $c.name }}-db
stringData:
  password: {{ index $.Values.passwords $c.name | quote }}
{{- end }}
"#;

const HELPERS: &str = r#"{{- define "platform.labels" -}}
app.kubernetes.io/name: {{ .name }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
helm.sh/chart: {{ printf "%s-%s" .root.Chart.Name .root.Chart.Version }}
{{- end }}
"#;

fn write(root: &Path, file: &str, text: &str) {
    let p = root.join(file);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, text).unwrap();
}

/// The chart under `repo/platform`, its SOPS file encrypted by real sops; returns the
/// plaintext of that file (for the CLI).
fn chart(repo: &Path, age: &AgeKey, home: &Path) -> String {
    write(
        repo,
        "platform/Chart.yaml",
        "apiVersion: v2\nname: platform\nversion: 1.0.0\nappVersion: \"3.1\"\n",
    );
    write(repo, "platform/templates/_helpers.tpl", HELPERS);
    write(repo, "platform/templates/components.yaml", TEMPLATE);
    let mut values = String::from("registry: registry.example.com\ncomponents:\n");
    let mut passwords = String::from("passwords:\n");
    for i in 0..COMPONENTS {
        let _ = write!(
            values,
            "  - name: c-{i}\n    replicas: {}\n    port: {}\n    config:\n      LOG_LEVEL: info\n      RELEASE: \"{{{{ .Release.Name }}}}\"\n      PEERS: \"c-{}.{{{{ .Release.Namespace }}}}\"\n",
            1 + i % 3,
            8000 + i,
            (i + 1) % COMPONENTS
        );
        let _ = writeln!(
            passwords,
            "  c-{i}: pw-{i}-{:08x}",
            i * 2_654_435_761 % 0xffff_ffff
        );
    }
    write(
        repo,
        "platform/values.yaml",
        "registry: example\ncomponents: []\npasswords: {}\n",
    );
    write(repo, "platform/values-prod.yaml", &values);
    write(repo, "platform/secrets.yaml", &passwords);
    lockstep_tests::sops_encrypt(&[&repo.join("platform/secrets.yaml")], &age.recipient, home);
    passwords
}

/// GETs of `path` in a static server's log.
fn gets(log: &Path, path: &str) -> usize {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .filter(|l| *l == format!("GET {path}"))
        .count()
}

fn main() {
    common::main_beside_flux("helm", async |crds| run(&crds).await);
}

async fn run(flux_crds: &Path) {
    let work = tempfile::tempdir().unwrap();
    let w = work.path();
    let repo = w.join("repo");
    std::fs::create_dir_all(&repo).unwrap();
    git(&repo, &["init", "-q"]);
    let age = AgeKey::generate(w, "age.txt");
    eprintln!(
        "making the chart: {COMPONENTS} components, {} objects, a SOPS values file by sops ...",
        COMPONENTS * 5
    );
    let plain_secrets = chart(&repo, &age, w);

    // Render: decryption plus the helper, in this process, against `helm template`.
    let mut files = BTreeMap::new();
    common::read_files(&repo, &repo, &mut files);
    let helper = lockstep_helm::Helper::new(peer("lockstep-helm"));
    let mut ids = Identities::new();
    ids.add_file(&age.path).unwrap();
    let cfg = HelmConfig {
        release_name: "bench".into(),
        namespace: "bench".into(),
        values_files: vec!["platform/values-prod.yaml".into(), "platform/secrets.yaml".into()],
        include_crds: true,
        ..HelmConfig::default()
    };
    eprintln!("render: {RUNS} runs each ...");
    let mut ours = Vec::new();
    let mut objects = 0;
    for _ in 0..RUNS {
        let t = Instant::now();
        let (req, source) =
            lockstep_agent::render::helm::request(&files, Chart::Directory("platform"), &cfg, Some(&ids))
                .unwrap();
        let out = lockstep_agent::render::helm::render(
            Some(&helper),
            &files,
            Chart::Directory("platform"),
            &req,
            &source,
        )
        .unwrap();
        ours.push(t.elapsed());
        objects = out.len();
    }
    assert_eq!(objects, COMPONENTS * 5);
    let plain = w.join("plain-secrets.yaml");
    std::fs::write(&plain, &plain_secrets).unwrap();
    let mut cli = Vec::new();
    for _ in 0..RUNS {
        let t = Instant::now();
        let out = Command::new(peer("helm"))
            .args([
                "template",
                "bench",
                "platform",
                "-n",
                "bench",
                "-f",
                "platform/values-prod.yaml",
                "-f",
            ])
            .arg(&plain)
            .current_dir(&repo)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        cli.push(t.elapsed());
    }
    let (ours, cli) = (median(ours), median(cli));
    let s = |d: Duration| format!("{:.2} s", d.as_secs_f64());
    if std::env::var_os("LOCKSTEP_BENCH_RENDER_ONLY").is_some() {
        println!(
            "render (median of {RUNS}): lockstep {} (decrypt + template), helm template {}",
            s(ours),
            s(cli)
        );
        return;
    }

    // Chart-source reads on a real apiserver: the agent, then Flux.
    eprintln!("starting the control plane ...");
    let cp = ControlPlane::start(&Options::default()).unwrap();
    let client = cp.client().await.unwrap();
    let crds = Path::new(env!("CARGO_MANIFEST_DIR")).join("../crds/sync.yaml");
    cp.kubectl(&["apply", "--server-side", "-f", crds.to_str().unwrap()]);
    cp.kubectl(&["apply", "--server-side", "-f", flux_crds.to_str().unwrap()]);
    for ns in ["lockstep-system", "flux-system"] {
        cp.kubectl(&["create", "namespace", ns]);
    }
    let tiny = w.join("tiny");
    write(
        &tiny,
        "Chart.yaml",
        "apiVersion: v2\nname: tiny\nversion: 1.0.0\n",
    );
    write(
        &tiny,
        "templates/cm.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {{ .Release.Name }}-settings\ndata:\n  a: b\n",
    );
    let password = "bench-password";
    let basic = format!(
        "Basic {}",
        base64::Engine::encode(
            &base64::engine::general_purpose::STANDARD,
            format!("ci:{password}")
        )
    );
    // One repository for each side, so that each one's reads are counted alone.
    let mut servers = Vec::new();
    for side in ["ls", "flux"] {
        let root = w.join(format!("charts-{side}"));
        std::fs::create_dir_all(&root).unwrap();
        let helm = |args: &[&str]| {
            let out = Command::new(peer("helm")).args(args).output().unwrap();
            assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        };
        helm(&["package", tiny.to_str().unwrap(), "-d", root.to_str().unwrap()]);
        helm(&["repo", "index", root.to_str().unwrap()]);
        servers.push(services::static_https_with_auth(&root, Some(&basic)).unwrap());
    }
    let pp = PostParams::default();
    let secret = |name: &str, data: serde_json::Value| -> Secret {
        serde_json::from_value(json!({ "metadata": { "name": name }, "stringData": data })).unwrap()
    };
    let (ls_server, ls_ca) = &servers[0];
    let (flux_server, flux_ca) = &servers[1];
    Api::<Secret>::namespaced(client.clone(), "lockstep-system")
        .create(
            &pp,
            &secret(
                "charts",
                json!({ "username": "ci", "password": password, "ca.crt": ls_ca }),
            ),
        )
        .await
        .unwrap();
    Api::<Secret>::namespaced(client.clone(), "flux-system")
        .create(
            &pp,
            &secret("charts", json!({ "username": "ci", "password": password })),
        )
        .await
        .unwrap();
    Api::<Secret>::namespaced(client.clone(), "flux-system")
        .create(&pp, &secret("charts-ca", json!({ "ca.crt": flux_ca })))
        .await
        .unwrap();
    write(&repo, "values/values.yaml", "{}\n");
    git(&repo, &["add", "-A"]);
    git(&repo, &["commit", "-qm", "bench"]);

    let (agent, _port) = common::start_agent(
        env!("CARGO_BIN_EXE_lockstep-agent"),
        cp.kubeconfig(),
        w,
        &[("LOCKSTEP_HELM_HELPER", peer("lockstep-helm"))],
    )
    .await;
    let api = |ns: &str, group: &str, version: &str, kind: &str| -> Api<DynamicObject> {
        Api::namespaced_with(
            client.clone(),
            ns,
            &ApiResource::from_gvk(&GroupVersionKind::gvk(group, version, kind)),
        )
    };
    let syncs = api("lockstep-system", "lockstep.dev", "v1alpha1", "Sync");
    eprintln!("lockstep: {SYNCS} Syncs of one chart ...");
    let url = format!("file://{}", repo.display());
    for i in 0..SYNCS {
        syncs
            .create(
                &pp,
                &serde_json::from_value(json!({
                    "apiVersion": "lockstep.dev/v1alpha1", "kind": "Sync", "metadata": { "name": format!("s{i}") },
                    "spec": { "source": { "url": url, "path": "values", "interval": format!("{INTERVAL_SECS}s") },
                              "helm": { "chart": { "repository": ls_server.url, "name": "tiny", "version": ">=1.0 <2",
                                                   "secretRef": { "name": "charts" } },
                                        "valuesFiles": ["values.yaml"] } }
                }))
                .unwrap(),
            )
            .await
            .unwrap();
    }
    until(
        "the Syncs Ready",
        Duration::from_secs(180),
        &[&agent],
        async || {
            let all = syncs.list(&Default::default()).await.ok()?.items;
            (all.len() == SYNCS && all.iter().all(ready)).then_some(())
        },
    )
    .await;
    let (index0, archive0) = (
        gets(&ls_server.log(), "/index.yaml"),
        gets(&ls_server.log(), "/tiny-1.0.0.tgz"),
    );
    tokio::time::sleep(WINDOW).await;
    let ls_index = gets(&ls_server.log(), "/index.yaml") - index0;
    let ls_archive = gets(&ls_server.log(), "/tiny-1.0.0.tgz") - archive0;
    drop(agent);

    eprintln!("flux: one HelmRepository and {SYNCS} HelmCharts ...");
    let (source_controller, kustomize_controller) = common::start_flux(cp.kubeconfig(), w);
    drop(kustomize_controller);
    let repos = api("flux-system", "source.toolkit.fluxcd.io", "v1", "HelmRepository");
    let charts = api("flux-system", "source.toolkit.fluxcd.io", "v1", "HelmChart");
    repos
        .create(
            &pp,
            &serde_json::from_value(json!({
                "apiVersion": "source.toolkit.fluxcd.io/v1", "kind": "HelmRepository", "metadata": { "name": "charts" },
                "spec": { "url": flux_server.url, "interval": format!("{INTERVAL_SECS}s"),
                          "secretRef": { "name": "charts" }, "certSecretRef": { "name": "charts-ca" } }
            }))
            .unwrap(),
        )
        .await
        .unwrap();
    for i in 0..SYNCS {
        charts
            .create(
                &pp,
                &serde_json::from_value(json!({
                    "apiVersion": "source.toolkit.fluxcd.io/v1", "kind": "HelmChart", "metadata": { "name": format!("c{i}") },
                    "spec": { "chart": "tiny", "version": ">=1.0 <2", "interval": format!("{INTERVAL_SECS}s"),
                              "sourceRef": { "kind": "HelmRepository", "name": "charts" } }
                }))
                .unwrap(),
            )
            .await
            .unwrap();
    }
    until(
        "the HelmCharts Ready",
        Duration::from_secs(300),
        &[&source_controller],
        async || {
            let all = charts.list(&Default::default()).await.ok()?.items;
            (all.len() == SYNCS && all.iter().all(ready)).then_some(())
        },
    )
    .await;
    let (index0, archive0) = (
        gets(&flux_server.log(), "/index.yaml"),
        gets(&flux_server.log(), "/tiny-1.0.0.tgz"),
    );
    tokio::time::sleep(WINDOW).await;
    let flux_index = gets(&flux_server.log(), "/index.yaml") - index0;
    let flux_archive = gets(&flux_server.log(), "/tiny-1.0.0.tgz") - archive0;

    let intervals = WINDOW.as_secs() / INTERVAL_SECS;
    println!();
    println!(
        "Charts: a {}-object chart (SOPS values file of {COMPONENTS} passwords); {SYNCS} Syncs of one repository's chart at a {INTERVAL_SECS} s interval, side by side",
        COMPONENTS * 5
    );
    println!("| {:<52} | {:>26} | {:>38} |", "what", "lockstep", "peer");
    println!("|{:-<54}|{:->28}|{:->40}|", "", "", "");
    let row = |what: &str, a: String, b: String| println!("| {what:<52} | {a:>26} | {b:>38} |");
    row(
        &format!("render (median of {RUNS})"),
        format!("{} (decrypt + template)", s(ours)),
        format!("{} (helm {} template)", s(cli), lockstep_helm::HELM_VERSION),
    );
    row(
        &format!("index reads in {} s ({intervals} intervals)", WINDOW.as_secs()),
        ls_index.to_string(),
        format!("{flux_index} (Flux source-controller)"),
    );
    row(
        &format!("archive downloads in {} s", WINDOW.as_secs()),
        ls_archive.to_string(),
        format!("{flux_archive} (Flux source-controller)"),
    );
    println!();
    let ratio = ours.as_secs_f64() / cli.as_secs_f64();
    let met = |ok: bool| if ok { "met" } else { "NOT met" };
    println!(
        "targets: render within 1.2× of helm template: {} ({ratio:.2}×); one index read per repository per interval (≤ {} in {} s for {SYNCS} Syncs): {} ({ls_index})",
        met(ratio <= 1.2),
        intervals + 1,
        WINDOW.as_secs(),
        met(ls_index as u64 <= intervals + 1),
    );
}
