//! What the side-by-side benchmarks share: processes under measurement (CPU, RSS), waiting
//! with their logs shown on a timeout, and small statistics.

#![allow(dead_code)]

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use kube::api::{Api, DynamicObject, GroupVersionKind, PostParams};
use kube::discovery::ApiResource;
use serde_json::json;

/// A process under measurement, killed when dropped.
pub struct Proc {
    pub child: Child,
    pub log: PathBuf,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Proc {
    pub fn spawn(cmd: &mut Command, log: PathBuf) -> Self {
        let f = std::fs::File::create(&log).unwrap();
        let child = cmd
            .stdout(f.try_clone().unwrap())
            .stderr(f)
            .stdin(Stdio::null())
            .spawn()
            .unwrap();
        Self { child, log }
    }

    /// CPU time used so far (user + system), from /proc.
    pub fn cpu(&self) -> Duration {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.child.id())).unwrap();
        let fields: Vec<&str> = stat.rsplit(')').next().unwrap().split_whitespace().collect();
        let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
        Duration::from_millis(ticks * 10)
    }

    pub fn rss_mib(&self) -> f64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        let kib: f64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .unwrap()
            .trim()
            .trim_end_matches(" kB")
            .trim()
            .parse()
            .unwrap();
        kib / 1024.0
    }

    /// Whether the process still runs (an exited child stays a zombie until reaped).
    pub fn alive(&self) -> bool {
        std::fs::read_to_string(format!("/proc/{}/stat", self.child.id()))
            .ok()
            .and_then(|s| {
                s.rsplit(')')
                    .next()
                    .and_then(|r| r.split_whitespace().next())
                    .map(|st| st != "Z")
            })
            .unwrap_or(false)
    }

    pub fn tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().rev().take(20).collect();
        lines.into_iter().rev().collect::<Vec<_>>().join("\n")
    }
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub async fn until<T>(
    what: &str,
    within: Duration,
    procs: &[&Proc],
    mut f: impl AsyncFnMut() -> Option<T>,
) -> T {
    let deadline = Instant::now() + within;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        if Instant::now() > deadline || procs.iter().any(|p| !p.alive()) {
            let logs: Vec<String> = procs.iter().map(|p| p.tail()).collect();
            panic!("timed out waiting for {what}\n{}", logs.join("\n---\n"));
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

pub fn ready(o: &DynamicObject) -> bool {
    o.data
        .pointer("/status/conditions")
        .and_then(|c| c.as_array())
        .is_some_and(|c| c.iter().any(|c| c["type"] == "Ready" && c["status"] == "True"))
}

pub fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// Every file under `dir` (`.git` aside), keyed by its path relative to `root`.
#[allow(dead_code)]
pub fn read_files(
    root: &std::path::Path,
    dir: &std::path::Path,
    out: &mut std::collections::BTreeMap<String, Vec<u8>>,
) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.file_name().unwrap() == ".git" {
            continue;
        }
        if p.is_dir() {
            read_files(root, &p, out);
        } else {
            out.insert(
                p.strip_prefix(root).unwrap().to_string_lossy().into_owned(),
                std::fs::read(&p).unwrap(),
            );
        }
    }
}

/// The agent binary in `lockstep-system` against `kubeconfig`, its Git cache under `work`,
/// with `env` (its helpers) and `RUST_LOG=warn`; returns it, once ready, and its port.
#[allow(dead_code)]
pub async fn start_agent(
    bin: &str,
    kubeconfig: &std::path::Path,
    work: &std::path::Path,
    env: &[(&str, PathBuf)],
) -> (Proc, u16) {
    let port = free_port();
    let mut c = Command::new(bin);
    c.args([
        "--namespace",
        "lockstep-system",
        "--listen",
        &format!("127.0.0.1:{port}"),
    ])
    .args(["--git-cache", work.join("ls-git").to_str().unwrap()])
    .env("KUBECONFIG", kubeconfig)
    .env("RUST_LOG", "warn");
    for (k, v) in env {
        c.env(k, v);
    }
    let agent = Proc::spawn(&mut c, work.join("agent.log"));
    until(
        "the agent ready",
        Duration::from_secs(60),
        &[&agent],
        async || {
            matches!(
                lockstep_tests::services::http(port, "GET", "/readyz", &[], b""),
                Ok((200, _))
            )
            .then_some(())
        },
    )
    .await;
    (agent, port)
}

/// Flux's source-controller (serving artifacts on loopback) and kustomize-controller, stock
/// flags, against `kubeconfig`; state and logs under `work`.
pub fn start_flux(kubeconfig: &std::path::Path, work: &std::path::Path) -> (Proc, Proc) {
    let storage = free_port();
    let flux_env = |c: &mut Command| {
        c.env("KUBECONFIG", kubeconfig)
            .env("RUNTIME_NAMESPACE", "flux-system")
            .args(["--metrics-addr", &format!("127.0.0.1:{}", free_port())])
            .args(["--health-addr", &format!("127.0.0.1:{}", free_port())])
            .args(["--log-level", "error"]);
    };
    std::fs::create_dir_all(work.join("flux-storage")).unwrap();
    let mut sc = Command::new(lockstep_tests::peer("source-controller"));
    flux_env(&mut sc);
    sc.args(["--storage-path", work.join("flux-storage").to_str().unwrap()])
        .args(["--storage-addr", &format!("127.0.0.1:{storage}")])
        .args(["--storage-adv-addr", &format!("127.0.0.1:{storage}")]);
    let source_controller = Proc::spawn(&mut sc, work.join("source-controller.log"));
    let mut kc = Command::new(lockstep_tests::peer("kustomize-controller"));
    flux_env(&mut kc);
    let kustomize_controller = Proc::spawn(&mut kc, work.join("kustomize-controller.log"));
    (source_controller, kustomize_controller)
}

/// Flux's GitRepository and Kustomization `bench` in `flux-system` for `url` (SOPS decryption
/// with the Secret `sops-age`, into namespace `bench-flux`, the Kustomization's `interval`);
/// returns their APIs.
pub async fn create_flux_sync(
    client: &kube::Client,
    url: &str,
    interval: &str,
) -> (Api<DynamicObject>, Api<DynamicObject>) {
    let api = |group: &str, kind: &str| -> Api<DynamicObject> {
        Api::namespaced_with(
            client.clone(),
            "flux-system",
            &ApiResource::from_gvk(&GroupVersionKind::gvk(group, "v1", kind)),
        )
    };
    let repos = api("source.toolkit.fluxcd.io", "GitRepository");
    let kustomizations = api("kustomize.toolkit.fluxcd.io", "Kustomization");
    let pp = PostParams::default();
    repos
        .create(
            &pp,
            &serde_json::from_value(json!({
                "apiVersion": "source.toolkit.fluxcd.io/v1", "kind": "GitRepository", "metadata": { "name": "bench" },
                "spec": { "url": url, "interval": "10m", "ref": { "branch": "main" } }
            }))
            .unwrap(),
        )
        .await
        .unwrap();
    kustomizations
        .create(
            &pp,
            &serde_json::from_value(json!({
                "apiVersion": "kustomize.toolkit.fluxcd.io/v1", "kind": "Kustomization", "metadata": { "name": "bench" },
                "spec": { "interval": interval, "path": "./", "prune": true, "targetNamespace": "bench-flux",
                          "sourceRef": { "kind": "GitRepository", "name": "bench" },
                          "decryption": { "provider": "sops", "secretRef": { "name": "sops-age" } } }
            }))
            .unwrap(),
        )
        .await
        .unwrap();
    (repos, kustomizations)
}

/// A benchmark's `main` beside Flux: skipped unless run by `cargo bench`, Flux's CRDs found in
/// the cache (a link into the versioned build; kubectl reads a linked directory as a file),
/// then `run` on a two-thread runtime.
pub fn main_beside_flux<F: std::future::Future<Output = ()>>(name: &str, run: impl FnOnce(PathBuf) -> F) {
    if !std::env::args().any(|a| a == "--bench") {
        eprintln!("{name}: skipped (a benchmark; run `cargo bench -p lockstep-agent --bench {name}`)");
        return;
    }
    let flux_crds = lockstep_tests::cache_dir()
        .join("flux-crds")
        .canonicalize()
        .unwrap_or_default();
    assert!(
        flux_crds.is_dir(),
        "Flux is not in the cache: run `cargo xtask bench` (it builds source-controller and kustomize-controller)"
    );
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(run(flux_crds));
}
