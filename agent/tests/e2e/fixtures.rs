//! What every feature's tests share: one real control plane with the CRDs installed, one log
//! capture for the canary checks, Git repositories, Sync builders, an in-process Sync
//! controller confined to a test's namespace, the agent binary, and the CLI in-process.

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use kube::api::{Api, Patch, PatchParams, PostParams};
use lockstep_agent::api::{Condition, Sync};
use lockstep_agent::reconciler::{self, Context, Scope, metrics::Metrics};
use lockstep_agent::secrets::sealing;
use lockstep_agent::source::GitCache;
use lockstep_tests::controlplane::{ControlPlane, install_crypto_provider};
use lockstep_tests::services::http;
use serde_json::{Value as Json, json};

pub use lockstep_tests::{AgeKey, LogCapture, eventually, eventually_showing, git};

/// The repository root.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The control plane shared by every test of this binary (etcd, kube-apiserver,
/// kube-controller-manager), with Lockstep's CRDs, Bitnami's and ESO's installed.
pub fn cp() -> &'static ControlPlane {
    static READY: OnceLock<()> = OnceLock::new();
    let cp = ControlPlane::shared();
    READY.get_or_init(|| {
        install_crypto_provider();
        for f in [
            "sync.yaml",
            "sealedsecrets.bitnami.com.yaml",
            "external-secrets.io.yaml",
            "argoproj.io.yaml",
        ] {
            let path = root().join("crds").join(f);
            cp.kubectl(&["apply", "--server-side", "-f", path.to_str().unwrap()]);
        }
        cp.kubectl(&[
            "wait",
            "--for=condition=Established",
            "crd",
            "--all",
            "--timeout=60s",
        ]);
    });
    cp
}

/// Everything this process logs (every in-process controller of every test), for the canary
/// checks; installed on first use.
pub fn logs() -> &'static LogCapture {
    static LOGS: OnceLock<LogCapture> = OnceLock::new();
    LOGS.get_or_init(LogCapture::install)
}

/// A client and a fresh namespace named after `prefix`.
pub async fn setup(prefix: &str) -> (kube::Client, String) {
    let cp = cp();
    logs();
    (cp.client().await.unwrap(), cp.namespace(prefix).await.unwrap())
}

/// A free TCP port on every interface.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("0.0.0.0:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A Git repository in a temporary directory, committed with a fixed identity on `main`.
pub struct Repo {
    dir: tempfile::TempDir,
}

impl Repo {
    /// An empty repository.
    pub fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        git(dir.path(), &["init", "-q"]);
        Self { dir }
    }

    /// Its directory.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Its `file://` URL.
    pub fn url(&self) -> String {
        format!("file://{}", self.path().display())
    }

    /// Writes `text` to `file` (directories made as needed).
    pub fn write(&self, file: &str, text: &str) -> &Self {
        let p = self.path().join(file);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
        self
    }

    /// Writes a Secret manifest to `file` and encrypts it with the real `sops` for `age`.
    pub fn write_sops(&self, file: &str, plain: &str, age: &AgeKey) -> &Self {
        self.write(file, plain);
        lockstep_tests::sops_encrypt(&[&self.path().join(file)], &age.recipient, self.path());
        self
    }

    /// Reads `file`.
    pub fn read(&self, file: &str) -> String {
        std::fs::read_to_string(self.path().join(file)).unwrap()
    }

    /// Removes `file`.
    pub fn remove(&self, file: &str) -> &Self {
        std::fs::remove_file(self.path().join(file)).unwrap();
        self
    }

    /// Commits everything; returns the commit id.
    pub fn commit(&self, message: &str) -> String {
        git(self.path(), &["add", "-A"]);
        git(self.path(), &["commit", "-qm", message]);
        git(self.path(), &["rev-parse", "HEAD"])
    }
}

/// A Sync named `name` pulling `url`, with `spec` merged into its spec.
pub fn sync(name: &str, url: &str, spec: Json) -> Sync {
    let mut s = json!({
        "apiVersion": "lockstep.dev/v1alpha1", "kind": "Sync",
        "metadata": { "name": name },
        "spec": { "source": { "url": url } },
    });
    if let (Some(into), Some(from)) = (s["spec"].as_object_mut(), spec.as_object()) {
        for (k, v) in from {
            match (k.as_str(), v) {
                ("source", Json::Object(src)) => {
                    for (sk, sv) in src {
                        into["source"][sk] = sv.clone();
                    }
                }
                _ => {
                    into.insert(k.clone(), v.clone());
                }
            }
        }
    }
    serde_json::from_value(s).unwrap()
}

/// Creates a Sync in `ns`.
pub async fn create(client: &kube::Client, ns: &str, s: &Sync) {
    Api::<Sync>::namespaced(client.clone(), ns)
        .create(&PostParams::default(), s)
        .await
        .unwrap();
}

/// Creates a Secret with `string_data` in `ns`.
pub async fn secret(client: &kube::Client, ns: &str, name: &str, string_data: Json) {
    let s: k8s_openapi::api::core::v1::Secret =
        serde_json::from_value(json!({ "metadata": { "name": name }, "stringData": string_data })).unwrap();
    Api::<k8s_openapi::api::core::v1::Secret>::namespaced(client.clone(), ns)
        .create(&PostParams::default(), &s)
        .await
        .unwrap();
}

/// Creates Secret `sops-age` in `ns` with `age`'s identity (a `*.agekey` entry, as Flux takes
/// it).
pub async fn age_secret(client: &kube::Client, ns: &str, age: &AgeKey) {
    secret(
        client,
        ns,
        "sops-age",
        json!({ "age.agekey": std::fs::read_to_string(&age.path).unwrap() }),
    )
    .await;
}

/// A CustomResourceDefinition of `kind` in `group` (`v1`, namespaced, any content, a status
/// subresource), applied and established once per binary; returns its YAML.
pub fn test_crd(group: &str, kind: &str) -> String {
    static DONE: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());
    let mut done = DONE.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let (singular, plural) = (kind.to_lowercase(), format!("{}s", kind.to_lowercase()));
    let crd = format!(
        "apiVersion: apiextensions.k8s.io/v1\nkind: CustomResourceDefinition\nmetadata:\n  name: {plural}.{group}\nspec:\n  group: {group}\n  scope: Namespaced\n  names: {{kind: {kind}, plural: {plural}, singular: {singular}, listKind: {kind}List}}\n  versions:\n    - name: v1\n      served: true\n      storage: true\n      subresources: {{status: {{}}}}\n      schema:\n        openAPIV3Schema: {{type: object, x-kubernetes-preserve-unknown-fields: true}}\n"
    );
    if !done.iter().any(|k| k == kind) {
        let f = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(f.path(), &crd).unwrap();
        cp().kubectl(&["apply", "--server-side", "-f", f.path().to_str().unwrap()]);
        cp().kubectl(&[
            "wait",
            "--for=condition=Established",
            &format!("crd/{plural}.{group}"),
        ]);
        done.push(kind.to_owned());
    }
    crd
}

/// A condition of a Sync.
pub fn condition(s: &Sync, type_: &str) -> Option<Condition> {
    s.status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == type_)
        .cloned()
}

/// `(status, reason, message)` of a Sync's `Ready` condition.
pub fn ready(s: &Sync) -> Option<(String, String, String)> {
    condition(s, "Ready").map(|c| (c.status, c.reason, c.message))
}

/// Waits until the Sync `ns/name` satisfies `pred`; returns it.
pub async fn wait_for(
    client: &kube::Client,
    ns: &str,
    name: &str,
    secs: u64,
    pred: impl Fn(&Sync) -> bool,
) -> Sync {
    let api: Api<Sync> = Api::namespaced(client.clone(), ns);
    let deadline = std::time::Instant::now() + Duration::from_secs(secs);
    loop {
        let last = api.get_opt(name).await.ok().flatten();
        match last {
            Some(s) if pred(&s) => return s,
            _ if std::time::Instant::now() >= deadline => panic!(
                "timed out after {secs} s waiting for Sync {ns}/{name}; its status: {}",
                last.and_then(|s| s.status)
                    .map(|st| serde_json::to_string(&st.conditions).unwrap())
                    .unwrap_or_default()
            ),
            _ => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}

/// The Sync once its `Ready` is `False` for `commit` (within 90 s).
pub async fn failed_on(client: &kube::Client, ns: &str, name: &str, commit: &str) -> Sync {
    wait_for(client, ns, name, 90, |s| {
        ready(s).is_some_and(|r| r.0 == "False")
            && s.status
                .as_ref()
                .and_then(|st| st.last_attempted_revision.as_deref())
                .is_some_and(|r| r.ends_with(commit))
    })
    .await
}

/// Waits until the Sync `ns/name` has `Ready` with status `status`; returns it.
pub async fn wait_ready(client: &kube::Client, ns: &str, name: &str, status: &str, secs: u64) -> Sync {
    wait_for(client, ns, name, secs, |s| {
        ready(s).is_some_and(|r| r.0 == status)
    })
    .await
}

/// The value of the first series of `name` whose labels contain every one of `labels`.
pub fn metric(text: &str, name: &str, labels: &[&str]) -> Option<f64> {
    text.lines()
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
        })
        .find(|l| labels.iter().all(|want| l.contains(want)))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

/// An in-process Sync controller confined to one namespace, as the agent runs it; stopped
/// when dropped.
pub struct Controller {
    /// Its metrics.
    pub metrics: Metrics,
    /// Its renderer (how many kustomize builds it started).
    pub render: lockstep_agent::render::Render,
    /// Its chart cache (index reads, archive downloads).
    pub charts: Arc<lockstep_agent::source::charts::ChartCache>,
    handle: tokio::task::JoinHandle<()>,
}

impl Drop for Controller {
    fn drop(&mut self) {
        self.handle.abort();
    }
}

/// How to start a [`Controller`].
#[derive(Default)]
pub struct ControllerOptions {
    /// The agent's namespace (default: the watched one).
    pub agent_namespace: Option<String>,
    /// `--tenant-isolation`.
    pub tenant_isolation: bool,
    /// The ExternalSecret engine.
    pub external: Option<lockstep_agent::secrets::external::Engine>,
    /// Sealing keys.
    pub sealing: Option<sealing::SealingKeys>,
}

impl Controller {
    /// A controller of the Syncs in `ns`.
    pub async fn start(client: &kube::Client, ns: &str) -> Self {
        Self::start_with(client, ns, ControllerOptions::default()).await
    }

    /// A controller of the Syncs in `ns`, as `opts` say; returns once it has listed.
    pub async fn start_with(client: &kube::Client, ns: &str, opts: ControllerOptions) -> Self {
        let keys = sealing::fixed(opts.sealing.unwrap_or(sealing::SealingKeys {
            ring: Default::default(),
            newest: None,
        }));
        let (mut ctx, drifted) = Context::new(
            client.clone(),
            GitCache::new(tempfile::tempdir().unwrap().keep()),
            opts.agent_namespace.unwrap_or_else(|| ns.to_owned()),
            keys,
            opts.external,
        );
        ctx.scope = Scope::Namespace(ns.to_owned());
        ctx.tenant_isolation = opts.tenant_isolation;
        ctx.render.kustomize = Some(lockstep_kustomize::Helper::new(kustomize_helper()));
        ctx.render.helm = Some(lockstep_helm::Helper::new(lockstep_tests::peer("lockstep-helm")));
        let render = ctx.render.clone();
        let charts = ctx.charts.clone();
        let metrics = ctx.metrics.clone();
        let readiness = reconciler::Readiness::default();
        let gate = readiness.gate("syncs");
        let handle = tokio::spawn(reconciler::run_until(
            Arc::new(ctx),
            drifted,
            std::future::pending(),
            Some(gate),
        ));
        eventually("the controller's first list", 30, async || {
            readiness.is_ready().then_some(())
        })
        .await;
        Self {
            metrics,
            render,
            charts,
            handle,
        }
    }
}

/// The kustomize helper `cargo xtask setup` built.
pub fn kustomize_helper() -> PathBuf {
    lockstep_tests::peer("lockstep-kustomize")
}

/// Runs `lockstep ARGS` in-process (the CLI library), off the async runtime: what the binary
/// would do, with its error message on failure.
pub async fn lockstep(args: &[&str]) -> Result<(), String> {
    let args: Vec<String> = args.iter().map(|s| (*s).to_owned()).collect();
    tokio::task::spawn_blocking(move || {
        use clap::Parser;
        let cli = lockstep_cli::Cli::try_parse_from(std::iter::once("lockstep".to_owned()).chain(args))
            .map_err(|e| e.to_string())?;
        lockstep_cli::run(cli).map_err(|e| e.to_string())
    })
    .await
    .unwrap()
}

/// Runs an operations command of `lockstep` in-process: `Ok(stdout)`, or the error with what
/// was printed.
pub async fn lockstep_ops(args: &[&str]) -> Result<String, (String, String)> {
    let args: Vec<String> = args.iter().map(|s| (*s).to_owned()).collect();
    tokio::task::spawn_blocking(move || {
        use clap::Parser;
        let cli =
            lockstep_cli::Cli::try_parse_from(std::iter::once("lockstep".to_owned()).chain(args)).unwrap();
        let lockstep_cli::Command::Ops(cmd) = cli.command else {
            panic!("not an ops command")
        };
        let mut out = Vec::new();
        let r = lockstep_cli::ops::run_to(cmd, &mut out);
        let text = String::from_utf8(out).unwrap();
        r.map(|()| text.clone()).map_err(|e| (e.to_string(), text))
    })
    .await
    .unwrap()
}

/// The `lockstep` binary beside this test's `lockstep-agent`, built (or found up to date) once.
pub fn lockstep_bin() -> PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            lockstep_tests::sibling_binary(
                Path::new(env!("CARGO_BIN_EXE_lockstep-agent")),
                "lockstep-cli",
                "lockstep",
            )
        })
        .clone()
}

/// The `lockstep-agent` binary, run as a replica would run, confined to its namespace
/// (`--watch-all-namespaces=false`) so that tests side by side do not see each other; killed
/// when dropped.
pub struct Agent {
    /// The process.
    pub child: Child,
    /// Its HTTP port.
    pub port: u16,
    /// Its log file.
    pub log: PathBuf,
    /// Its identity in the election.
    pub identity: String,
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Agent {
    /// Starts a replica in `ns` named `identity`, with `args` added; logs and caches go to
    /// `dir`. Returns once `/readyz` answers 200.
    pub async fn start(kubeconfig: &Path, ns: &str, identity: &str, dir: &Path, args: &[&str]) -> Self {
        let port = free_port();
        let log = dir.join(format!("{identity}.log"));
        let file = std::fs::File::create(&log).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_lockstep-agent"))
            .args(["--namespace", ns, "--listen", &format!("0.0.0.0:{port}")])
            .args([
                "--identity",
                identity,
                "--watch-all-namespaces=false",
                "--log-format",
                "json",
            ])
            .arg("--git-cache")
            .arg(dir.join(format!("{identity}-git")))
            .args(args)
            .env("KUBECONFIG", kubeconfig)
            .env("LOCKSTEP_KUSTOMIZE_HELPER", kustomize_helper())
            .env("LOCKSTEP_HELM_HELPER", lockstep_tests::peer("lockstep-helm"))
            .env(
                "RUST_LOG",
                std::env::var("AGENT_LOG").unwrap_or_else(|_| "info".into()),
            )
            .stdout(file.try_clone().unwrap())
            .stderr(file)
            .spawn()
            .unwrap();
        let agent = Self {
            child,
            port,
            log,
            identity: identity.to_owned(),
        };
        let logs = [agent.log.as_path()];
        eventually_showing(&format!("{identity} ready"), 60, &logs, async || {
            matches!(http(port, "GET", "/readyz", &[], b""), Ok((200, _))).then_some(())
        })
        .await;
        agent
    }

    /// Its `/metrics`.
    pub fn metrics(&self) -> String {
        http(self.port, "GET", "/metrics", &[], b"")
            .map(|(_, b)| b)
            .unwrap_or_default()
    }

    /// What it logged so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Its peak resident memory so far, in MiB (`VmHWM`).
    pub fn peak_rss_mib(&self) -> f64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        let kib: f64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap();
        kib / 1024.0
    }

    /// Whether it is still running.
    pub fn running(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }
}

/// Sleeps a little, to let watches list before a change is made.
pub async fn settle() {
    tokio::time::sleep(Duration::from_millis(500)).await;
}

/// A stand-in for the kubelet in `ns` (the test control plane has none; its real job
/// controller makes the Pods of Jobs and completes them): every Pod a Job made is marked
/// `Succeeded`, or `Failed` when its template has the label `lockstep-test/outcome: fail`; every
/// other Pod `Running` and `Ready`; and, standing in for the deployment controller the test
/// control plane does not run, every Deployment rolled out. Returns the task and the names of
/// the Jobs whose Pods it finished, in order.
pub fn kubelet(
    client: &kube::Client,
    ns: &str,
) -> (tokio::task::JoinHandle<()>, Arc<std::sync::Mutex<Vec<String>>>) {
    use k8s_openapi::api::core::v1::Pod;
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    let deployments: Api<k8s_openapi::api::apps::v1::Deployment> = Api::namespaced(client.clone(), ns);
    let finished = Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen = finished.clone();
    let handle = tokio::spawn(async move {
        loop {
            if let Ok(list) = pods.list(&Default::default()).await {
                for p in list.items {
                    let name = p.metadata.name.clone().unwrap_or_default();
                    let labels = p.metadata.labels.clone().unwrap_or_default();
                    let phase = p
                        .status
                        .as_ref()
                        .and_then(|s| s.phase.clone())
                        .unwrap_or_default();
                    let status = if let Some(job) = labels.get("job-name") {
                        if phase == "Succeeded" || phase == "Failed" {
                            continue;
                        }
                        let fail = labels.get("lockstep-test/outcome").map(String::as_str) == Some("fail");
                        seen.lock().unwrap().push(job.clone());
                        let phase = if fail { "Failed" } else { "Succeeded" };
                        json!({ "status": { "phase": phase } })
                    } else {
                        if phase == "Running" {
                            continue;
                        }
                        json!({ "status": { "phase": "Running", "conditions": [
                            { "type": "Ready", "status": "True" }, { "type": "ContainersReady", "status": "True" },
                            { "type": "PodScheduled", "status": "True" }, { "type": "Initialized", "status": "True" }] } })
                    };
                    let _ = pods
                        .patch_status(&name, &PatchParams::default(), &Patch::Merge(&status))
                        .await;
                }
            }
            if let Ok(list) = deployments.list(&Default::default()).await {
                for d in list.items {
                    let generation = d.metadata.generation.unwrap_or_default();
                    if d.status.as_ref().and_then(|s| s.observed_generation) == Some(generation) {
                        continue;
                    }
                    let n = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
                    let status = json!({ "status": { "observedGeneration": generation, "replicas": n,
                        "updatedReplicas": n, "readyReplicas": n, "availableReplicas": n, "conditions": [
                        { "type": "Available", "status": "True", "reason": "MinimumReplicasAvailable" },
                        { "type": "Progressing", "status": "True", "reason": "NewReplicaSetAvailable" }] } });
                    let name = d.metadata.name.unwrap_or_default();
                    let _ = deployments
                        .patch_status(&name, &PatchParams::default(), &Patch::Merge(&status))
                        .await;
                }
            }
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        }
    });
    (handle, finished)
}
