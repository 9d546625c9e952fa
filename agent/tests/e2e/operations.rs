//! The agent as it runs in production: replicas of the real `lockstep-agent` binary elect a
//! leader on a Lease, a repository is served over smart HTTP by the real `git http-backend`,
//! and the Sync polls only once an hour, so everything that happens within a test is pushed.
//! Exactly one replica leads; `lockstep diff` shows what a sync would change with Secret
//! values redacted, and `reconcile` applies it; `suspend` holds a pushed commit back and
//! `resume` applies it; `status` and `history` show the Sync; a killed leader is replaced
//! within the lease; SIGTERM stops cleanly and releases the lease; `/metrics` carries the
//! sync, apply and leader series; no secret value reaches a log line, the CLI's output or the
//! Sync's status. (Webhooks: [`super::webhooks`].)

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::api::Api;
use lockstep_agent::api::{RECONCILE_ANNOTATION, Sync};
use lockstep_tests::services::{self, Service};
use serde_json::json;

use super::fixtures::{
    AgeKey, Agent, condition, cp, create, eventually_showing, git, lockstep_ops, metric, secret, setup, sync,
};

/// The webhook shared secrets' prefix.
pub const HOOK_SECRET: &str = "CANARY-webhook-shared-secret";

/// A repository served over smart HTTP, `n` replicas of the agent in a namespace of their
/// own, and Sync `app` of the repository (a ConfigMap and a SOPS Secret), synced once.
pub struct Fleet {
    pub client: kube::Client,
    pub ns: String,
    pub replicas: Vec<Agent>,
    pub url: String,
    pub canary: String,
    work: PathBuf,
    age: AgeKey,
    home: tempfile::TempDir,
    _server: Service,
}

fn settings(mode: &str) -> String {
    format!("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: settings\ndata:\n  mode: {mode}\n")
}

impl Fleet {
    pub async fn start(prefix: &str, n: usize) -> Self {
        let (client, ns) = setup(prefix).await;
        let canary = format!("CANARY-ops-{ns}");
        let home = tempfile::tempdir().unwrap();
        let h = home.path();
        let work = h.join("work");
        std::fs::create_dir_all(&work).unwrap();
        git(&work, &["init", "-q"]);
        let age = AgeKey::generate(h, "age.txt");
        let root = h.join("srv");
        std::fs::create_dir_all(&root).unwrap();
        let server = services::git_http(&root).unwrap();
        let url = format!("{}/repo.git", server.url);
        let mut fleet = Self {
            client,
            ns,
            replicas: Vec::new(),
            url,
            canary,
            work,
            age,
            home,
            _server: server,
        };
        std::fs::write(fleet.work.join("settings.yaml"), settings("one")).unwrap();
        fleet.seal(&fleet.canary.clone());
        git(&fleet.work, &["add", "-A"]);
        git(&fleet.work, &["commit", "-qm", "one"]);
        let bare = root.join("repo.git");
        git(
            &fleet.work,
            &["clone", "-q", "--bare", ".", bare.to_str().unwrap()],
        );
        git(&fleet.work, &["remote", "add", "origin", bare.to_str().unwrap()]);
        let (client, ns) = (fleet.client.clone(), fleet.ns.clone());
        secret(
            &client,
            &ns,
            "sops-age",
            json!({ "key.agekey": std::fs::read_to_string(&fleet.age.path).unwrap() }),
        )
        .await;
        secret(
            &client,
            &ns,
            "hooks",
            json!({ "github": HOOK_SECRET, "gitlab": format!("{HOOK_SECRET}-gitlab"), "generic": format!("{HOOK_SECRET}-ci") }),
        )
        .await;
        for i in 0..n {
            let identity = format!("agent-{i}");
            let a = Agent::start(
                cp().kubeconfig(),
                &ns,
                &identity,
                fleet.home.path(),
                &["--lease-duration", "4s", "--webhook-secret", "hooks"],
            )
            .await;
            fleet.replicas.push(a);
        }
        fleet.leader().await;
        create(
            &client,
            &ns,
            &sync(
                "app",
                &fleet.url,
                json!({ "source": { "interval": "1h" }, "targetNamespace": ns,
                        "decryption": { "sops": { "secretRef": { "name": "sops-age" } } } }),
            ),
        )
        .await;
        let syncs = fleet.syncs();
        fleet
            .wait("the first sync", 60, async || {
                let s = syncs.get("app").await.unwrap();
                (condition(&s, "Ready")?.status == "True" && condition(&s, "Healthy")?.status == "True")
                    .then_some(())
            })
            .await;
        assert_eq!(fleet.mode().await.as_deref(), Some("one"));
        fleet
    }

    /// Encrypts the SOPS Secret with `value`.
    pub fn seal(&self, value: &str) {
        let f = self.work.join("db.sops.yaml");
        std::fs::write(
            &f,
            format!(
                "apiVersion: v1\nkind: Secret\nmetadata:\n  name: db\nstringData:\n  password: {value}\n"
            ),
        )
        .unwrap();
        lockstep_tests::sops_encrypt(&[&f], &self.age.recipient, self.home.path());
    }

    /// Sets the ConfigMap's mode, commits and pushes; returns the commit.
    pub fn push(&self, mode: &str) -> String {
        std::fs::write(self.work.join("settings.yaml"), settings(mode)).unwrap();
        git(&self.work, &["add", "-A"]);
        git(&self.work, &["commit", "-qm", mode]);
        git(&self.work, &["push", "-q", "origin", "HEAD:main"]);
        git(&self.work, &["rev-parse", "HEAD"])
    }

    /// The ConfigMap's mode in the cluster.
    pub async fn mode(&self) -> Option<String> {
        Api::<ConfigMap>::namespaced(self.client.clone(), &self.ns)
            .get_opt("settings")
            .await
            .unwrap()
            .and_then(|c| c.data?.get("mode").cloned())
    }

    pub fn syncs(&self) -> Api<Sync> {
        Api::namespaced(self.client.clone(), &self.ns)
    }

    /// Waits for `f`, showing the replicas' logs on a timeout.
    pub async fn wait<T>(&self, what: &str, secs: u64, f: impl AsyncFnMut() -> Option<T>) -> T {
        let logs: Vec<&std::path::Path> = self.replicas.iter().map(|a| a.log.as_path()).collect();
        eventually_showing(what, secs, &logs, f).await
    }

    /// The identity holding the Lease.
    pub async fn holder(&self) -> Option<String> {
        Api::<Lease>::namespaced(self.client.clone(), &self.ns)
            .get_opt("lockstep-agent")
            .await
            .unwrap()
            .and_then(|l| l.spec?.holder_identity)
    }

    /// The index of the replica that leads, once one does.
    pub async fn leader(&self) -> usize {
        let id = self.wait("a leader", 30, async || self.holder().await).await;
        self.replicas.iter().position(|a| a.identity == id).unwrap()
    }

    /// A replica that does not lead (the leader if there is only one).
    pub async fn follower(&self) -> usize {
        let l = self.leader().await;
        (0..self.replicas.len()).find(|i| *i != l).unwrap_or(l)
    }

    /// Waits until the reconcile request set on `app` is handled.
    pub async fn requests_handled(&self) {
        let syncs = self.syncs();
        self.wait("the reconcile requests handled", 20, async || {
            let s = syncs.get("app").await.unwrap();
            let asked = s
                .metadata
                .annotations
                .as_ref()?
                .get(RECONCILE_ANNOTATION)?
                .clone();
            (s.status?.last_handled_reconcile_at.as_deref() == Some(asked.as_str())).then_some(())
        })
        .await;
    }

    /// CLI arguments for this namespace and cluster.
    pub fn args(&self, cmd: &[&str]) -> Vec<String> {
        let kubeconfig = cp().kubeconfig().to_str().unwrap().to_owned();
        cmd.iter()
            .map(|s| (*s).to_owned())
            .chain([
                "-n".to_owned(),
                self.ns.clone(),
                "--kubeconfig".to_owned(),
                kubeconfig,
            ])
            .collect()
    }

    /// Makes replica `i` the Service `lockstep-agent` of the namespace, as the install does.
    pub async fn expose(&self, i: usize) {
        services::expose(
            cp(),
            &self.ns,
            "lockstep-agent",
            "http",
            services::host_ip().unwrap(),
            self.replicas[i].port,
        )
        .await
        .unwrap();
    }

    /// Asserts that no canary reached a replica's log or the Sync's status.
    pub async fn assert_nothing_leaked(&self) {
        for a in &self.replicas {
            assert!(
                !a.log_text().contains("CANARY"),
                "{}: a secret in the log",
                a.identity
            );
        }
        let status = serde_json::to_string(&self.syncs().get("app").await.unwrap().status).unwrap();
        assert!(!status.contains("CANARY"), "{status}");
    }
}

async fn ops(args: Vec<String>) -> Result<String, (String, String)> {
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    lockstep_ops(&args).await
}

#[tokio::test(flavor = "multi_thread")]
async fn one_of_two_replicas_leads_and_both_are_ready() {
    let f = Fleet::start("ops-lead", 2).await;
    let l = f.leader().await;
    let follower = f.follower().await;
    assert_ne!(l, follower);
    assert_eq!(
        metric(&f.replicas[l].metrics(), "lockstep_leader", &[]),
        Some(1.0)
    );
    assert_eq!(
        metric(&f.replicas[follower].metrics(), "lockstep_leader", &[]),
        Some(0.0)
    );
    assert!(f.replicas[l].log_text().contains("\"message\":\"leading\""));
    let secrets: Api<Secret> = Api::namespaced(f.client.clone(), &f.ns);
    assert_eq!(
        secrets.get("db").await.unwrap().data.unwrap()["password"].0,
        f.canary.as_bytes()
    );
    f.assert_nothing_leaked().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn lockstep_diff_redacts_secret_values_and_reconcile_applies_the_change() {
    let f = Fleet::start("ops-diff", 1).await;
    f.expose(0).await;
    std::fs::write(f.work.join("settings.yaml"), settings("three")).unwrap();
    f.seal(&format!("{}-rotated", f.canary));
    f.push("three");
    let mut diff_args = f.args(&["diff", "app"]);
    diff_args.extend(["--controller-namespace".into(), f.ns.clone()]);
    let (err, diff) = ops(diff_args.clone()).await.unwrap_err();
    assert_eq!(err, "2 object(s) would change", "{diff}");
    assert!(
        diff.contains(&format!("~ ConfigMap {}/settings (configured)", f.ns)),
        "{diff}"
    );
    assert!(
        diff.contains("-    mode: one") && diff.contains("+    mode: three"),
        "{diff}"
    );
    assert!(
        diff.contains(&format!("~ Secret {}/db (configured)", f.ns)),
        "{diff}"
    );
    assert!(diff.contains("password: \"<redacted: after>\""), "{diff}");
    assert!(!diff.contains("CANARY"), "a secret value in the diff:\n{diff}");
    assert_eq!(f.mode().await.as_deref(), Some("one"), "a diff writes nothing");
    ops(f.args(&["reconcile", "app", "--timeout", "30s"]))
        .await
        .unwrap();
    assert_eq!(f.mode().await.as_deref(), Some("three"));
    let clean = ops(diff_args).await.unwrap();
    assert!(clean.ends_with(": 0 to change, 2 unchanged\n"), "{clean}");
    f.assert_nothing_leaked().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_missing_sync_is_named_by_reconcile_and_diff() {
    let f = Fleet::start("ops-missing", 1).await;
    f.expose(0).await;
    let (err, _) = ops(f.args(&["reconcile", "missing", "--timeout", "5s"]))
        .await
        .unwrap_err();
    assert!(
        err.contains(&format!("Sync {}/missing", f.ns)) && err.contains("404"),
        "{err}"
    );
    let mut missing = f.args(&["diff", "missing"]);
    missing.extend(["--controller-namespace".into(), f.ns.clone()]);
    let (err, _) = ops(missing).await.unwrap_err();
    assert!(
        err.contains("HTTP 404") && err.contains(&format!("Sync {}/missing not found", f.ns)),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn suspend_holds_a_pushed_commit_back_and_resume_applies_it() {
    let f = Fleet::start("ops-suspend", 1).await;
    ops(f.args(&["suspend", "app"])).await.unwrap();
    f.push("four");
    let (status, _) =
        super::webhooks::github_push(f.replicas[0].port, &f.url, "refs/heads/main", HOOK_SECRET);
    assert_eq!(status, 200);
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        f.mode().await.as_deref(),
        Some("one"),
        "a suspended Sync syncs nothing"
    );
    let table = ops(f.args(&["status"])).await.unwrap();
    assert!(table.starts_with("NAMESPACE"), "{table}");
    assert!(table.contains("Suspended"), "{table}");
    ops(f.args(&["resume", "app", "--timeout", "30s"])).await.unwrap();
    assert_eq!(f.mode().await.as_deref(), Some("four"));
    let table = ops(f.args(&["status"])).await.unwrap();
    let row: Vec<&str> = table
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .find(|r| r.get(1) == Some(&"app"))
        .unwrap();
    assert_eq!(row[2..4], ["True", "True"], "ready and healthy: {table}");
    let history = ops(f.args(&["history", "app"])).await.unwrap();
    assert!(
        history.lines().filter(|l| l.contains("Succeeded")).count() >= 2,
        "{history}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_leaders_metrics_carry_sync_apply_and_leader_series() {
    let f = Fleet::start("ops-metrics", 1).await;
    f.push("two");
    ops(f.args(&["reconcile", "app", "--timeout", "30s"]))
        .await
        .unwrap();
    let lm = f.replicas[0].metrics();
    let l = [format!("namespace=\"{}\"", f.ns), "name=\"app\"".to_owned()];
    let l: Vec<&str> = l.iter().map(String::as_str).collect();
    let mut succeeded = l.clone();
    succeeded.push(r#"result="succeeded""#);
    assert!(
        metric(&lm, "lockstep_sync_total", &succeeded).unwrap_or(0.0) >= 2.0,
        "{lm}"
    );
    assert!(
        metric(&lm, "lockstep_sync_duration_seconds_count", &succeeded).unwrap_or(0.0) >= 2.0,
        "{lm}"
    );
    assert!(
        metric(&lm, "lockstep_objects_applied_total", &l).unwrap_or(0.0) >= 3.0,
        "{lm}"
    );
    assert_eq!(metric(&lm, "lockstep_sync_ready", &l), Some(1.0), "{lm}");
    assert_eq!(metric(&lm, "lockstep_leader", &[]), Some(1.0), "{lm}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_killed_leader_is_replaced_within_the_lease_and_syncing_goes_on() {
    let mut f = Fleet::start("ops-failover", 2).await;
    let l = f.leader().await;
    let follower = f.follower().await;
    let killed = Instant::now();
    f.replicas[l].child.kill().unwrap();
    f.replicas[l].child.wait().unwrap();
    let port = f.replicas[follower].port;
    f.wait("the follower to lead", 30, async || {
        let m = lockstep_tests::services::http(port, "GET", "/metrics", &[], b"")
            .ok()?
            .1;
        (metric(&m, "lockstep_leader", &[]) == Some(1.0)).then_some(())
    })
    .await;
    let takeover = killed.elapsed();
    eprintln!(
        "failover: the follower leads {:.2} s after the leader was killed",
        takeover.as_secs_f64()
    );
    assert!(takeover < Duration::from_secs(12), "{takeover:?}");
    assert_eq!(
        f.holder().await.as_deref(),
        Some(f.replicas[follower].identity.as_str())
    );
    f.push("five");
    let (status, body) = super::webhooks::github_push(port, &f.url, "refs/heads/main", HOOK_SECRET);
    assert_eq!(status, 200, "{body}");
    f.wait("a commit applied by the new leader", 20, async || {
        (f.mode().await.as_deref() == Some("five")).then_some(())
    })
    .await;
    f.assert_nothing_leaked().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_stops_cleanly_and_releases_the_lease() {
    let mut f = Fleet::start("ops-sigterm", 1).await;
    let a = &mut f.replicas[0];
    let stopped = Instant::now();
    Command::new("kill")
        .args(["-TERM", &a.child.id().to_string()])
        .status()
        .unwrap();
    let exit = loop {
        if let Some(s) = a.child.try_wait().unwrap() {
            break s;
        }
        assert!(
            stopped.elapsed() < Duration::from_secs(15),
            "no exit after SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(exit.success(), "{exit:?}\n{}", a.log_text());
    eprintln!(
        "shutdown: exited {:.2} s after SIGTERM",
        stopped.elapsed().as_secs_f64()
    );
    assert_eq!(f.holder().await, None, "the lease is released on shutdown");
    f.assert_nothing_leaked().await;
}
