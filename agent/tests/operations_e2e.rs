//! The agent as it runs in production, on the real control plane: two replicas of the real
//! `lockstep-agent` binary elect a leader on a Lease, a repository is served over smart HTTP by
//! the real `git http-backend`, and the Sync polls only once an hour, so everything that
//! happens within the test is pushed:
//!
//! * both replicas are ready once their watches have listed, exactly one leads (`/metrics`);
//! * a signed GitHub push webhook sent to the *follower* gets the new commit applied by the
//!   leader within a second (measured); a bad signature is refused (401) and triggers nothing;
//! * `lockstep diff` shows what a sync would change, Secret values redacted; `lockstep
//!   reconcile` applies it and waits; `suspend` holds a pushed commit back, `resume` applies
//!   it; `status` and `history` show the Sync;
//! * the leader killed with SIGKILL is replaced by the follower within the lease duration, and
//!   syncing goes on; SIGTERM stops the new leader cleanly and releases the lease;
//! * `/metrics` carries the sync, apply, webhook and leader series; no secret value reaches a
//!   log line, the CLI's output or the Sync's status.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use hmac::Mac;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::api::{Api, PostParams};
use lockstep_agent::api::Sync;
use lockstep_agent::controller::RECONCILE_ANNOTATION;
use lockstep_tests::controlplane::{ControlPlane, install_crypto_provider};
use lockstep_tests::services::{self, http};
use lockstep_tests::{AgeKey, git};
use serde_json::json;

const CANARY: &str = "CANARY-operations-secret-value";
const HOOK_SECRET: &str = "CANARY-webhook-shared-secret";

/// A replica of the agent, killed when dropped.
struct Agent {
    child: Child,
    port: u16,
    log: PathBuf,
    identity: String,
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Agent {
    fn start(cp: &ControlPlane, ns: &str, identity: &str, dir: &Path) -> Self {
        let port = std::net::TcpListener::bind("0.0.0.0:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let log = dir.join(format!("{identity}.log"));
        let file = std::fs::File::create(&log).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_lockstep-agent"))
            .args(["--namespace", ns, "--listen", &format!("0.0.0.0:{port}")])
            .args(["--identity", identity, "--lease-duration", "4s"])
            .args(["--webhook-secret", "hooks"])
            .args([
                "--git-cache",
                dir.join(format!("{identity}-git")).to_str().unwrap(),
            ])
            .env("KUBECONFIG", cp.kubeconfig())
            .env(
                "RUST_LOG",
                std::env::var("AGENT_LOG").unwrap_or_else(|_| "info".into()),
            )
            .stdout(file.try_clone().unwrap())
            .stderr(file)
            .spawn()
            .unwrap();
        Self {
            child,
            port,
            log,
            identity: identity.to_owned(),
        }
    }

    fn metrics(&self) -> String {
        http(self.port, "GET", "/metrics", &[], b"")
            .map(|(_, b)| b)
            .unwrap_or_default()
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

/// The value of the first series of `name` whose labels contain every one of `labels`.
fn metric(text: &str, name: &str, labels: &[&str]) -> Option<f64> {
    text.lines()
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
        })
        .find(|l| labels.iter().all(|want| l.contains(want)))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

async fn eventually<T>(
    what: &str,
    within: Duration,
    agents: &[&Agent],
    mut f: impl AsyncFnMut() -> Option<T>,
) -> T {
    let deadline = Instant::now() + within;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        if Instant::now() >= deadline {
            let logs: Vec<String> = agents
                .iter()
                .map(|a| {
                    let text = a.log_text();
                    let tail: Vec<&str> = text.lines().rev().take(15).collect();
                    let tail: Vec<&str> = tail.into_iter().rev().collect();
                    format!("--- {} ---\n{}", a.identity, tail.join("\n"))
                })
                .collect();
            panic!("timed out waiting for {what}\n{}", logs.join("\n"));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn github_push(port: u16, url: &str, reference: &str, secret: &str) -> (u16, String) {
    let body = json!({ "ref": reference, "repository": { "clone_url": url, "html_url": url } }).to_string();
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(body.as_bytes());
    let sig = format!("sha256={}", hex::encode(mac.finalize().into_bytes()));
    http(
        port,
        "POST",
        "/hook/github",
        &[
            ("X-GitHub-Event", "push"),
            ("X-Hub-Signature-256", &sig),
            ("Content-Type", "application/json"),
        ],
        body.as_bytes(),
    )
    .unwrap()
}

/// Runs `lockstep ARGS` in-process (off the async runtime): `Ok(stdout)` or the error with
/// what was printed.
async fn lockstep(args: Vec<String>) -> Result<String, (String, String)> {
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

fn settings(mode: &str) -> String {
    format!("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: settings\ndata:\n  mode: {mode}\n")
}

#[tokio::test(flavor = "multi_thread")]
async fn two_replicas_elect_a_leader_take_webhooks_fail_over_and_answer_the_cli() {
    install_crypto_provider();
    let cp = ControlPlane::shared();
    let client = cp.client().await.unwrap();
    let ns = cp.namespace("ops").await.unwrap();
    let home = tempfile::tempdir().unwrap();
    let h = home.path();
    cp.kubectl(&[
        "apply",
        "--server-side",
        "-f",
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../crds/sync.yaml")
            .to_str()
            .unwrap(),
    ]);

    // A repository: a ConfigMap and a SOPS Secret (real sops), served over smart HTTP.
    let work = h.join("work");
    std::fs::create_dir_all(&work).unwrap();
    git(&work, &["init", "-q"]);
    let age = AgeKey::generate(h, "age.txt");
    std::fs::write(work.join("settings.yaml"), settings("one")).unwrap();
    let seal = |value: &str| {
        std::fs::write(
            work.join("db.sops.yaml"),
            format!(
                "apiVersion: v1\nkind: Secret\nmetadata:\n  name: db\nstringData:\n  password: {value}\n"
            ),
        )
        .unwrap();
        lockstep_tests::sops_encrypt(&[&work.join("db.sops.yaml")], &age.recipient, h);
    };
    seal(CANARY);
    git(&work, &["add", "-A"]);
    git(&work, &["commit", "-qm", "one"]);
    let root = h.join("srv");
    std::fs::create_dir_all(&root).unwrap();
    git(
        &work,
        &[
            "clone",
            "-q",
            "--bare",
            ".",
            root.join("repo.git").to_str().unwrap(),
        ],
    );
    git(
        &work,
        &["remote", "add", "origin", root.join("repo.git").to_str().unwrap()],
    );
    let server = services::git_http(&root).unwrap();
    let url = format!("{}/repo.git", server.url);
    let commit = |msg: &str| {
        git(&work, &["add", "-A"]);
        git(&work, &["commit", "-qm", msg]);
        git(&work, &["push", "-q", "origin", "HEAD:main"]);
        git(&work, &["rev-parse", "HEAD"])
    };

    let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns);
    let secret = |name: &str, data: serde_json::Value| -> Secret {
        serde_json::from_value(json!({ "metadata": { "name": name }, "stringData": data })).unwrap()
    };
    let age_key = std::fs::read_to_string(&age.path).unwrap();
    secrets
        .create(
            &PostParams::default(),
            &secret("sops-age", json!({ "key.agekey": age_key })),
        )
        .await
        .unwrap();
    secrets
        .create(
            &PostParams::default(),
            &secret(
                "hooks",
                json!({
                    "github": HOOK_SECRET,
                    "gitlab": format!("{HOOK_SECRET}-gitlab"),
                    "generic": format!("{HOOK_SECRET}-ci"),
                }),
            ),
        )
        .await
        .unwrap();

    // Two replicas.
    let a = Agent::start(cp, &ns, "agent-a", h);
    let b = Agent::start(cp, &ns, "agent-b", h);
    for agent in [&a, &b] {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            match http(agent.port, "GET", "/readyz", &[], b"") {
                Ok((200, _)) => break,
                Ok((_, said)) if Instant::now() >= deadline => {
                    panic!("{} not ready: {said}\n{}", agent.identity, agent.log_text())
                }
                Err(e) if Instant::now() >= deadline => {
                    panic!("{}: {e}\n{}", agent.identity, agent.log_text())
                }
                _ => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
    }
    let leases: Api<Lease> = Api::namespaced(client.clone(), &ns);
    let holder = async || {
        leases
            .get_opt("lockstep-agent")
            .await
            .unwrap()
            .and_then(|l| l.spec?.holder_identity)
    };
    let leader_id = eventually("a leader", Duration::from_secs(30), &[&a, &b], async || {
        holder().await
    })
    .await;
    let (leader, follower) = if leader_id == a.identity { (a, b) } else { (b, a) };
    assert_eq!(metric(&leader.metrics(), "lockstep_leader", &[]), Some(1.0));
    assert_eq!(metric(&follower.metrics(), "lockstep_leader", &[]), Some(0.0));

    // The Sync, polling once an hour.
    let syncs: Api<Sync> = Api::namespaced(client.clone(), &ns);
    let sync: Sync = serde_json::from_value(json!({
        "apiVersion": "lockstep.dev/v1alpha1", "kind": "Sync", "metadata": { "name": "app" },
        "spec": {
            "source": { "url": url, "interval": "1h" },
            "decryption": { "sops": { "secretRef": { "name": "sops-age" } } },
            "targetNamespace": ns,
        }
    }))
    .unwrap();
    syncs.create(&PostParams::default(), &sync).await.unwrap();
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), &ns);
    let mode = async || {
        cms.get_opt("settings")
            .await
            .unwrap()
            .and_then(|c| c.data?.get("mode").cloned())
    };
    eventually(
        "the first sync",
        Duration::from_secs(60),
        &[&leader, &follower],
        async || {
            let s = syncs.get("app").await.unwrap();
            let c = s.status?.conditions;
            let healthy = c.iter().any(|c| c.type_ == "Healthy" && c.status == "True");
            let ready = c.iter().any(|c| c.type_ == "Ready" && c.status == "True");
            (ready && healthy).then_some(())
        },
    )
    .await;
    assert_eq!(mode().await.as_deref(), Some("one"));
    assert_eq!(
        secrets.get("db").await.unwrap().data.unwrap()["password"].0,
        CANARY.as_bytes()
    );

    // A push, announced by a signed GitHub webhook to the follower: applied by the leader.
    std::fs::write(work.join("settings.yaml"), settings("two")).unwrap();
    let two = commit("two");
    let t = Instant::now();
    let (status, body) = github_push(follower.port, &url, "refs/heads/main", HOOK_SECRET);
    assert_eq!(status, 200, "{body}");
    assert!(body.contains(&format!("{ns}/app")), "{body}");
    eventually(
        "the pushed commit applied",
        Duration::from_secs(10),
        &[&leader, &follower],
        async || (mode().await.as_deref() == Some("two")).then_some(()),
    )
    .await;
    let webhook_to_applied = t.elapsed();
    eprintln!(
        "webhook to applied: {:.3} s (commit {})",
        webhook_to_applied.as_secs_f64(),
        &two[..12]
    );
    assert!(
        webhook_to_applied < Duration::from_secs(1),
        "{webhook_to_applied:?}"
    );

    // A bad signature, another branch: nothing is triggered.
    let before = syncs.get("app").await.unwrap().metadata.annotations;
    let (status, body) = github_push(follower.port, &url, "refs/heads/main", "not-the-secret");
    assert_eq!(status, 401, "{body}");
    let (status, body) = github_push(follower.port, &url, "refs/heads/feature", HOOK_SECRET);
    assert_eq!((status, body.trim()), (200, r#"{"triggered":[]}"#));
    assert_eq!(syncs.get("app").await.unwrap().metadata.annotations, before);
    // GitLab's token and a generic signed body trigger the same Sync.
    let gitlab = json!({ "ref": "refs/heads/main", "project": { "git_http_url": url } }).to_string();
    let (status, body) = http(
        follower.port,
        "POST",
        "/hook/gitlab",
        &[
            ("X-Gitlab-Event", "Push Hook"),
            ("X-Gitlab-Token", &format!("{HOOK_SECRET}-gitlab")),
        ],
        gitlab.as_bytes(),
    )
    .unwrap();
    assert_eq!(status, 200, "{body}");
    assert!(body.contains(&format!("{ns}/app")), "{body}");
    let generic = json!({ "repository": url }).to_string();
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(format!("{HOOK_SECRET}-ci").as_bytes()).unwrap();
    mac.update(generic.as_bytes());
    let sig = format!("sha256={}", hex::encode(mac.finalize().into_bytes()));
    let (status, body) = http(
        follower.port,
        "POST",
        "/hook/generic",
        &[("X-Signature", &sig)],
        generic.as_bytes(),
    )
    .unwrap();
    assert_eq!(status, 200, "{body}");
    assert!(body.contains(&format!("{ns}/app")), "{body}");
    let fm = follower.metrics();
    for provider in ["gitlab", "generic"] {
        assert_eq!(
            metric(
                &fm,
                "lockstep_webhook_requests_total",
                &[&format!("provider=\"{provider}\""), r#"result="triggered""#]
            ),
            Some(1.0),
            "{fm}"
        );
    }
    assert_eq!(
        metric(
            &fm,
            "lockstep_webhook_requests_total",
            &[r#"provider="github""#, r#"result="unauthorized""#]
        ),
        Some(1.0),
        "{fm}"
    );

    // Let the syncs those requests asked for finish before the next commit.
    eventually(
        "the webhook requests handled",
        Duration::from_secs(20),
        &[&leader, &follower],
        async || {
            let s = syncs.get("app").await.unwrap();
            let asked = s
                .metadata
                .annotations
                .as_ref()?
                .get(RECONCILE_ANNOTATION)?
                .clone();
            (s.status?.last_handled_reconcile_at.as_deref() == Some(asked.as_str())).then_some(())
        },
    )
    .await;

    // lockstep diff, through the service proxy to a replica: a ConfigMap change and a new
    // Secret value, the value never shown; then reconcile applies them and the diff is empty.
    services::expose(
        cp,
        &ns,
        "lockstep-agent",
        "http",
        services::host_ip().unwrap(),
        follower.port,
    )
    .await
    .unwrap();
    std::fs::write(work.join("settings.yaml"), settings("three")).unwrap();
    seal(&format!("{CANARY}-rotated"));
    commit("three");
    let kubeconfig = cp.kubeconfig().to_str().unwrap().to_owned();
    let args = |cmd: &[&str]| -> Vec<String> {
        cmd.iter()
            .map(|s| s.to_string())
            .chain(["-n", &ns, "--kubeconfig", &kubeconfig].map(String::from))
            .collect()
    };
    let mut diff_args = args(&["diff", "app"]);
    diff_args.extend(["--controller-namespace".into(), ns.clone()]);
    let (err, diff) = lockstep(diff_args.clone()).await.unwrap_err();
    assert_eq!(err, "2 object(s) would change", "{diff}");
    assert!(
        diff.contains(&format!("~ ConfigMap {ns}/settings (configured)")),
        "{diff}"
    );
    assert!(
        diff.contains("-    mode: two") && diff.contains("+    mode: three"),
        "{diff}"
    );
    assert!(diff.contains(&format!("~ Secret {ns}/db (configured)")), "{diff}");
    assert!(diff.contains("password: \"<redacted: after>\""), "{diff}");
    assert!(!diff.contains("CANARY"), "a secret value in the diff:\n{diff}");
    assert_eq!(mode().await.as_deref(), Some("two"), "a diff writes nothing");
    lockstep(args(&["reconcile", "app", "--timeout", "30s"]))
        .await
        .unwrap();
    assert_eq!(mode().await.as_deref(), Some("three"));
    let clean = lockstep(diff_args.clone()).await.unwrap();
    assert!(clean.ends_with(": 0 to change, 2 unchanged\n"), "{clean}");
    // A Sync that does not exist: named, for both.
    let (err, _) = lockstep(args(&["reconcile", "missing", "--timeout", "5s"]))
        .await
        .unwrap_err();
    assert!(
        err.contains(&format!("Sync {ns}/missing")) && err.contains("404"),
        "{err}"
    );
    let mut missing = args(&["diff", "missing"]);
    missing.extend(["--controller-namespace".into(), ns.clone()]);
    let (err, _) = lockstep(missing).await.unwrap_err();
    assert!(
        err.contains("HTTP 404") && err.contains(&format!("Sync {ns}/missing not found")),
        "{err}"
    );

    // suspend holds a pushed commit back; resume applies it.
    lockstep(args(&["suspend", "app"])).await.unwrap();
    std::fs::write(work.join("settings.yaml"), settings("four")).unwrap();
    commit("four");
    let (status, _) = github_push(leader.port, &url, "refs/heads/main", HOOK_SECRET);
    assert_eq!(status, 200);
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        mode().await.as_deref(),
        Some("three"),
        "a suspended Sync syncs nothing"
    );
    let table = lockstep(args(&["status"])).await.unwrap();
    assert!(table.starts_with("NAMESPACE"), "{table}");
    assert!(table.contains("Suspended"), "{table}");
    lockstep(args(&["resume", "app", "--timeout", "30s"]))
        .await
        .unwrap();
    assert_eq!(mode().await.as_deref(), Some("four"));
    let table = lockstep(args(&["status"])).await.unwrap();
    let row: Vec<&str> = table
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .find(|r| r.get(1) == Some(&"app"))
        .unwrap();
    assert_eq!(row[2..4], ["True", "True"], "ready and healthy: {table}");
    let history = lockstep(args(&["history", "app"])).await.unwrap();
    assert!(
        history.lines().filter(|l| l.contains("Succeeded")).count() >= 3,
        "{history}"
    );

    // The leader's metrics.
    let lm = leader.metrics();
    let sync_labels = [format!("namespace=\"{ns}\""), "name=\"app\"".to_owned()];
    let l: Vec<&str> = sync_labels.iter().map(String::as_str).collect();
    let mut succeeded = l.clone();
    succeeded.push(r#"result="succeeded""#);
    assert!(
        metric(&lm, "lockstep_sync_total", &succeeded).unwrap_or(0.0) >= 4.0,
        "{lm}"
    );
    assert!(
        metric(&lm, "lockstep_sync_duration_seconds_count", &succeeded).unwrap_or(0.0) >= 4.0,
        "{lm}"
    );
    assert!(
        metric(&lm, "lockstep_objects_applied_total", &l).unwrap_or(0.0) >= 5.0,
        "{lm}"
    );
    assert_eq!(metric(&lm, "lockstep_sync_ready", &l), Some(1.0), "{lm}");
    assert!(
        metric(&lm, "lockstep_webhook_requests_total", &[r#"result="triggered""#]).unwrap_or(0.0) >= 1.0,
        "{lm}"
    );

    // The leader killed: the follower takes over within the lease, and syncing goes on.
    let mut leader = leader;
    let killed = Instant::now();
    leader.child.kill().unwrap();
    leader.child.wait().unwrap();
    let new_leader = eventually(
        "the follower to lead",
        Duration::from_secs(30),
        &[&follower],
        async || (metric(&follower.metrics(), "lockstep_leader", &[]) == Some(1.0)).then_some(()),
    )
    .await;
    let () = new_leader;
    let takeover = killed.elapsed();
    eprintln!(
        "failover: the follower leads {:.2} s after the leader was killed",
        takeover.as_secs_f64()
    );
    assert!(takeover < Duration::from_secs(12), "{takeover:?}");
    assert_eq!(holder().await.as_deref(), Some(follower.identity.as_str()));
    std::fs::write(work.join("settings.yaml"), settings("five")).unwrap();
    commit("five");
    let (status, body) = github_push(follower.port, &url, "refs/heads/main", HOOK_SECRET);
    assert_eq!(status, 200, "{body}");
    eventually(
        "a commit applied by the new leader",
        Duration::from_secs(20),
        &[&follower],
        async || (mode().await.as_deref() == Some("five")).then_some(()),
    )
    .await;

    // SIGTERM: a clean stop, the lease released for the next replica.
    let mut follower = follower;
    let stopped = Instant::now();
    Command::new("kill")
        .args(["-TERM", &follower.child.id().to_string()])
        .status()
        .unwrap();
    let exit = loop {
        if let Some(s) = follower.child.try_wait().unwrap() {
            break s;
        }
        assert!(
            stopped.elapsed() < Duration::from_secs(15),
            "no exit after SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(exit.success(), "{exit:?}\n{}", follower.log_text());
    assert_eq!(holder().await, None, "the lease is released on shutdown");
    eprintln!(
        "shutdown: exited {:.2} s after SIGTERM",
        stopped.elapsed().as_secs_f64()
    );

    // No secret value anywhere it could leak.
    for agent in [&leader, &follower] {
        let log = agent.log_text();
        assert!(!log.contains("CANARY"), "{}: a secret in the log", agent.identity);
        assert!(log.contains("\"message\":\"leading\""), "{}", agent.identity);
    }
    let status = serde_json::to_string(&syncs.get("app").await.unwrap().status).unwrap();
    assert!(!status.contains("CANARY"), "{status}");
}
