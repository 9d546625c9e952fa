//! `deploy/` on the real control plane (etcd, kube-apiserver, kube-controller-manager):
//!
//! * `kubectl apply -k deploy/` takes it with no Pod Security warning (the `restricted` profile
//!   is enforced in the agent's namespace); `deploy/install.yaml` is what kustomize builds, and
//!   `lockstep install` applies the same objects.
//! * The agent runs as the install's ServiceAccount, with the Deployment's arguments and the
//!   pod's in-cluster credentials. Its RBAC is enough for an application (a Namespace, a SOPS
//!   Secret, a SealedSecret, a Deployment, a Role and RoleBinding) and nothing more: a
//!   ClusterRole is refused, with a condition naming it, and no later wave is applied, until
//!   `deploy/cluster-admin` is applied. `kubectl auth can-i` confirms the rest, for the agent,
//!   the rotation jobs, and a developer bound to `lockstep-sealer`, who reaches the agent's
//!   `/v1/*` through the install's own Service and the API server's proxy.
//! * The rotation CronJobs' commands run here, with the same arguments, as their
//!   ServiceAccount: a new sealing key is served at once and old SealedSecrets still open;
//!   `lockstep seal --re-encrypt` moves one onto it. A new age identity lands in `sops-age`;
//!   `lockstep sops updatekeys` re-encrypts the repository to it; the agent decrypts with it,
//!   also once the old identity is removed.
//! * The backup runbook: the keys exported with kubectl and encrypted with `lockstep sops`,
//!   a lost namespace's keys restored from it, and the agent carries on with them.
//! * No secret value or key reaches any log.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::{args, lockstep};
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use lockstep_agent::api::Sync;
use lockstep_tests::controlplane::{ControlPlane, install_crypto_provider};
use lockstep_tests::demo::{container_command, install_documents};
use lockstep_tests::services::{self, Service, http};
use lockstep_tests::{git, peer};
use serde_json::{Value as Json, json};

const NS: &str = "lockstep-system";
const AGENT: &str = "system:serviceaccount:lockstep-system:lockstep-agent";
const ROTATION: &str = "system:serviceaccount:lockstep-system:lockstep-key-rotation";
const CANARY: &str = "CANARY-deploy-e2e-db-password";
const SESSION: &str = "CANARY-deploy-e2e-session";
const KEY_LABEL: &str = "sealedsecrets.bitnami.com/sealed-secrets-key";

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The `lockstep` binary beside this test's `lockstep-agent`, built (or found up to date) once.
fn lockstep_bin() -> PathBuf {
    static BUILT: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
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

fn kubectl(cp: &ControlPlane, args: &[&str], stdin: Option<&[u8]>) -> Output {
    let mut c = Command::new(peer("kubectl"));
    c.arg("--kubeconfig")
        .arg(cp.kubeconfig())
        .args(args)
        .current_dir(root())
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = c.spawn().unwrap();
    if let Some(input) = stdin {
        use std::io::Write;
        child.stdin.take().unwrap().write_all(input).unwrap();
    }
    child.wait_with_output().unwrap()
}

fn kubectl_ok(cp: &ControlPlane, args: &[&str], stdin: Option<&[u8]>) -> String {
    let out = kubectl(cp, args, stdin);
    assert!(
        out.status.success(),
        "kubectl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// `kubectl auth can-i ARGS --as=WHO`.
fn can_i(cp: &ControlPlane, who: &str, args: &str) -> bool {
    let mut all: Vec<&str> = vec!["auth", "can-i"];
    all.extend(args.split_whitespace());
    let who = format!("--as={who}");
    all.push(&who);
    let out = kubectl(cp, &all, None);
    String::from_utf8_lossy(&out.stdout).trim() == "yes"
}

async fn eventually<T>(what: &str, secs: u64, logs: &[&Path], mut f: impl AsyncFnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = f().await {
            return v;
        }
        if Instant::now() >= deadline {
            let tails: Vec<String> = logs
                .iter()
                .map(|l| {
                    let text = std::fs::read_to_string(l).unwrap_or_default();
                    let lines: Vec<&str> = text.lines().collect();
                    lines[lines.len().saturating_sub(15)..].join("\n")
                })
                .collect();
            panic!(
                "timed out waiting for {what}; logs end:\n{}",
                tails.join("\n---\n")
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// `(status, reason, message)` of the Sync's Ready condition, and the commit it applied.
fn ready(s: &Sync) -> Option<(String, String, String, String)> {
    let st = s.status.as_ref()?;
    let c = st.conditions.iter().find(|c| c.type_ == "Ready")?;
    Some((
        c.status.clone(),
        c.reason.clone(),
        c.message.clone(),
        st.last_applied_revision.clone().unwrap_or_default(),
    ))
}

/// The agent as the Deployment runs it: the install's ServiceAccount and in-cluster
/// credentials, the Deployment's arguments; only the listen address and the Git cache (paths
/// of this machine) differ.
async fn start_agent(cp: &ControlPlane, docs: &[Json], port: u16, cache: &Path) -> Service {
    let mut a: Vec<String> = container_command(docs, "Deployment", "lockstep-agent")
        .unwrap()
        .into_iter()
        .filter(|a| !a.starts_with("--listen=") && !a.starts_with("--git-cache="))
        .collect();
    assert!(a.contains(&"--key-renew-period=0".to_owned()), "{a:?}");
    a.push(format!("--listen=0.0.0.0:{port}"));
    a.push(format!("--git-cache={}", cache.display()));
    a.push("--identity=lockstep-agent-0".into());
    let a: Vec<&str> = a.iter().map(String::as_str).collect();
    services::in_cluster(
        cp,
        "lockstep-agent",
        Path::new(env!("CARGO_BIN_EXE_lockstep-agent")),
        &a,
        NS,
        "lockstep-agent",
    )
    .await
    .unwrap()
}

/// Runs a rotation CronJob's command, with its arguments, as its ServiceAccount in the
/// agent's namespace; returns what it printed.
async fn run_cronjob(cp: &ControlPlane, docs: &[Json], name: &str) -> String {
    let cmd = container_command(docs, "CronJob", name).unwrap();
    assert_eq!(cmd[0], "/usr/local/bin/lockstep", "{cmd:?}");
    let a: Vec<&str> = cmd[1..].iter().map(String::as_str).collect();
    let mut job = services::in_cluster(
        cp,
        "rotation-job",
        &lockstep_bin(),
        &a,
        NS,
        "lockstep-key-rotation",
    )
    .await
    .unwrap();
    let status = job
        .wait(Duration::from_secs(120))
        .expect("the job did not finish");
    let log = std::fs::read_to_string(job.log()).unwrap();
    assert!(status.success(), "{name}: {cmd:?} failed:\n{log}");
    for secret in ["PRIVATE KEY", "AGE-SECRET-KEY-"] {
        assert!(!log.contains(secret), "{name} printed key material");
    }
    log
}

async fn sealing_keys(secrets: &Api<Secret>) -> Vec<Secret> {
    secrets
        .list(&ListParams::default().labels(&format!("{KEY_LABEL}=active")))
        .await
        .unwrap()
        .items
}

fn commit(repo: &Path, message: &str) -> String {
    git(repo, &["add", "-A"]);
    git(repo, &["commit", "-qm", message]);
    git(repo, &["rev-parse", "HEAD"])
}

/// Asks for a sync now, as `lockstep reconcile` does, and waits until `sync` is Ready at
/// `commit`.
async fn synced_at(syncs: &Api<Sync>, sync: &str, commit: &str, logs: &[&Path]) {
    let now = lockstep_formats::sops::now_rfc3339_nanos();
    syncs
        .patch(
            sync,
            &PatchParams::default(),
            &Patch::Merge(
                json!({ "metadata": { "annotations": { "lockstep.dev/reconcile-requested-at": now } } }),
            ),
        )
        .await
        .unwrap();
    eventually(&format!("Sync {sync} Ready at {commit}"), 60, logs, async || {
        let r = ready(&syncs.get(sync).await.ok()?)?;
        (r.0 == "True" && r.3.ends_with(commit)).then_some(())
    })
    .await;
}

#[tokio::test]
async fn install_rbac_rotation_and_recovery() {
    install_crypto_provider();
    let cp = ControlPlane::shared();
    let client = cp.client().await.unwrap();
    let docs = install_documents(&root()).unwrap();
    let work = tempfile::tempdir().unwrap();

    // ---- The install: kustomize, the same as one file, no Pod Security warning. ----
    let built = kubectl_ok(cp, &["kustomize", "deploy"], None);
    let as_json = |text: &str| -> Vec<Json> {
        let mut v: Vec<Json> = lockstep_formats::yaml::load_documents(text)
            .unwrap()
            .iter()
            .map(|d| lockstep_formats::sops::stores::to_json(d).unwrap())
            .collect();
        v.sort_by_key(|o| {
            format!(
                "{}/{}/{}",
                o["kind"], o["metadata"]["namespace"], o["metadata"]["name"]
            )
        });
        v
    };
    let committed = std::fs::read_to_string(root().join("deploy/install.yaml")).unwrap();
    assert!(
        as_json(&built) == as_json(&committed),
        "deploy/install.yaml is stale: run `cargo xtask manifests`"
    );
    assert_eq!(committed, lockstep_cli::install::MANIFESTS);
    let out = kubectl(cp, &["apply", "-k", "deploy"], None);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "kubectl apply -k deploy: {stderr}");
    assert!(
        !stderr.contains("Warning"),
        "kubectl apply -k deploy warned:\n{stderr}"
    );
    let applied = String::from_utf8_lossy(&out.stdout);
    assert_eq!(applied.lines().count(), docs.len(), "{applied}");
    // `lockstep install` applies the same objects (server-side, taking them over): no change.
    lockstep(args(&[
        "install",
        "--kubeconfig",
        &cp.kubeconfig().display().to_string(),
    ]))
    .await
    .unwrap();
    let ns = kubectl_ok(cp, &["get", "namespace", NS, "-o", "json"], None);
    let ns: Json = serde_json::from_str(&ns).unwrap();
    assert_eq!(
        ns["metadata"]["labels"]["pod-security.kubernetes.io/enforce"],
        "restricted"
    );

    // ---- RBAC, as kubectl auth can-i sees it. ----
    for allowed in [
        "create deployments.apps -n anything",
        "delete statefulsets.apps -n anything",
        "create namespaces",
        "create rolebindings.rbac.authorization.k8s.io -n anything",
        "list secrets --all-namespaces",
        "patch syncs.lockstep.dev --subresource=status -n anything",
        "create sealedsecrets.bitnami.com -n anything",
        "create externalsecrets.external-secrets.io -n anything",
        "create leases.coordination.k8s.io -n lockstep-system",
        "create events.events.k8s.io -n anything",
        "create serviceaccounts --subresource=token -n anything",
    ] {
        assert!(can_i(cp, AGENT, allowed), "the agent may not {allowed}");
    }
    for refused in [
        "create clusterroles.rbac.authorization.k8s.io",
        "create clusterrolebindings.rbac.authorization.k8s.io",
        "escalate roles.rbac.authorization.k8s.io -n anything",
        "bind clusterroles.rbac.authorization.k8s.io",
        "create customresourcedefinitions.apiextensions.k8s.io",
        "create validatingwebhookconfigurations.admissionregistration.k8s.io",
        "create clustersecretstores.external-secrets.io",
        "create pods --subresource=exec -n anything",
        "impersonate users",
        "impersonate serviceaccounts -n anything",
        "patch nodes",
        "create persistentvolumes",
        "create leases.coordination.k8s.io -n kube-system",
    ] {
        assert!(!can_i(cp, AGENT, refused), "the agent may {refused}");
    }
    for allowed in [
        "create secrets -n lockstep-system",
        "get secrets/sops-age -n lockstep-system",
        "update secrets/sops-age -n lockstep-system",
    ] {
        assert!(can_i(cp, ROTATION, allowed), "the rotation job may not {allowed}");
    }
    for refused in [
        "list secrets -n lockstep-system",
        "get secrets/other -n lockstep-system",
        "delete secrets/sops-age -n lockstep-system",
        "create secrets -n default",
        "get syncs.lockstep.dev -n lockstep-system",
    ] {
        assert!(!can_i(cp, ROTATION, refused), "the rotation job may {refused}");
    }

    // ---- The agent, as deployed. ----
    let secrets: Api<Secret> = Api::namespaced(client.clone(), NS);
    let age_key = std::fs::read_to_string(root().join("keys-example/age.agekey")).unwrap();
    let old_recipient = "age1n390r3np7a2wrvaw2l06t9jgfxwjlu03xwzr7tcz3ac4x3xnh9ws36rl35";
    secrets
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({
                "metadata": { "name": "sops-age" },
                "stringData": { "age.agekey": age_key },
            }))
            .unwrap(),
        )
        .await
        .unwrap();
    let port = std::net::TcpListener::bind("0.0.0.0:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let cache = work.path().join("git-cache");
    let mut agent = start_agent(cp, &docs, port, &cache).await;
    let agent_log = agent.log();
    let logs = [agent_log.as_path()];
    // With --key-renew-period=0 the agent still makes the first sealing key.
    let cert1 = eventually("the agent's first sealing key", 60, &logs, async || {
        match http(port, "GET", "/v1/cert.pem", &[], b"") {
            Ok((200, pem)) => Some(pem),
            _ => None,
        }
    })
    .await;
    assert_eq!(sealing_keys(&secrets).await.len(), 1);
    // The install's Service reaches it through the API server's proxy, as in a cluster: a
    // stand-in Pod with the Deployment's labels and port gets endpoints from the real
    // endpoint-slice controller.
    services::stand_in_pod(
        cp,
        NS,
        "lockstep-agent-0",
        &json!({ "app.kubernetes.io/name": "lockstep-agent" }),
        &[("http", port)],
        services::host_ip().unwrap(),
    )
    .await
    .unwrap();
    // A developer bound to lockstep-sealer fetches the certificate; Secrets stay out of reach.
    kubectl_ok(
        cp,
        &[
            "-n",
            NS,
            "create",
            "rolebinding",
            "sealers",
            "--role=lockstep-sealer",
            "--user=developer",
        ],
        None,
    );
    let developer = cp.kubeconfig_as("developer", &[]).unwrap();
    assert!(!can_i(cp, "developer", "get secrets -n lockstep-system"));
    assert!(can_i(
        cp,
        "developer",
        "get services/lockstep-agent -n lockstep-system"
    ));
    assert!(!can_i(cp, "developer", "get services/other -n lockstep-system"));
    let fetched = work.path().join("cert1.pem");
    eventually("the certificate through the Service", 60, &logs, async || {
        lockstep(args(&[
            "seal",
            "--fetch-cert",
            "-w",
            &fetched.display().to_string(),
            "--kubeconfig",
            &developer.display().to_string(),
        ]))
        .await
        .ok()
    })
    .await;
    assert_eq!(std::fs::read_to_string(&fetched).unwrap(), cert1);

    // The application's repository: what the least-privilege RBAC must be enough for.
    let repo = work.path().join("repo");
    std::fs::create_dir_all(repo.join("app")).unwrap();
    std::fs::create_dir_all(repo.join("cluster")).unwrap();
    git(&repo, &["init", "-q"]);
    let write = |p: &str, docs: &[Json]| {
        let text: Vec<String> = docs
            .iter()
            .map(|d| serde_json::to_string_pretty(d).unwrap())
            .collect();
        std::fs::write(repo.join(p), text.join("\n---\n")).unwrap();
    };
    write(
        "app/app.yaml",
        &[
            json!({ "apiVersion": "v1", "kind": "Namespace", "metadata": { "name": "shop" } }),
            json!({ "apiVersion": "v1", "kind": "ConfigMap", "metadata": { "name": "settings", "namespace": "shop" },
                    "data": { "mode": "one" } }),
            json!({ "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
                    "metadata": { "name": "read-settings", "namespace": "shop" },
                    "rules": [{ "apiGroups": [""], "resources": ["configmaps"], "verbs": ["get"] }] }),
            json!({ "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
                    "metadata": { "name": "read-settings", "namespace": "shop" },
                    "roleRef": { "apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "read-settings" },
                    "subjects": [{ "kind": "ServiceAccount", "name": "default", "namespace": "shop" }] }),
            json!({ "apiVersion": "apps/v1", "kind": "Deployment", "metadata": { "name": "shop", "namespace": "shop" },
                    "spec": { "selector": { "matchLabels": { "app": "shop" } },
                              "template": { "metadata": { "labels": { "app": "shop" } },
                                            "spec": { "containers": [{ "name": "shop", "image": "registry.k8s.io/pause:3.10",
                                                "envFrom": [{ "secretRef": { "name": "db" } }, { "secretRef": { "name": "session" } }] }] } } } }),
        ],
    );
    write(
        "app/db.sops.yaml",
        &[
            json!({ "apiVersion": "v1", "kind": "Secret", "metadata": { "name": "db", "namespace": "shop" },
                  "stringData": { "password": CANARY } }),
        ],
    );
    let home = work.path().join("home");
    std::fs::create_dir_all(&home).unwrap();
    lockstep_tests::sops_encrypt(&[&repo.join("app/db.sops.yaml")], old_recipient, &home);
    let plain = work.path().join("session.json");
    std::fs::write(
        &plain,
        json!({ "apiVersion": "v1", "kind": "Secret", "metadata": { "name": "session", "namespace": "shop" },
                "stringData": { "key": SESSION } })
        .to_string(),
    )
    .unwrap();
    let sealed1 = repo.join("app/session.sealed.yaml");
    lockstep(args(&[
        "seal",
        "--cert",
        fetched.to_str().unwrap(),
        "-f",
        plain.to_str().unwrap(),
        "-w",
        sealed1.to_str().unwrap(),
        "-o",
        "yaml",
    ]))
    .await
    .unwrap();
    // Cluster-scoped, and a later wave that must not be applied when it is refused.
    write(
        "cluster/cluster.yaml",
        &[
            json!({ "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
                    "metadata": { "name": "lockstep-e2e-reader" },
                    "rules": [{ "apiGroups": [""], "resources": ["configmaps"], "verbs": ["get"] }] }),
            json!({ "apiVersion": "v1", "kind": "ConfigMap",
                    "metadata": { "name": "after-the-clusterrole", "namespace": "shop",
                                  "annotations": { "lockstep.dev/sync-wave": "1" } } }),
        ],
    );
    let c1 = commit(&repo, "app");
    let syncs: Api<Sync> = Api::namespaced(client.clone(), NS);
    let url = format!("file://{}", repo.display());
    for (name, path) in [("app", "app"), ("cluster", "cluster")] {
        let s: Sync = serde_json::from_value(json!({
            "apiVersion": "lockstep.dev/v1alpha1", "kind": "Sync",
            "metadata": { "name": name, "namespace": NS },
            "spec": { "source": { "url": url, "path": path, "interval": "1h" },
                      "decryption": { "sops": { "secretRef": { "name": "sops-age" } } } }
        }))
        .unwrap();
        syncs.create(&PostParams::default(), &s).await.unwrap();
    }
    eventually("Sync app Ready", 60, &logs, async || {
        let r = ready(&syncs.get("app").await.ok()?)?;
        (r.0 == "True" && r.3.ends_with(&c1)).then_some(())
    })
    .await;
    let shop: Api<Secret> = Api::namespaced(client.clone(), "shop");
    let db = shop.get("db").await.unwrap();
    assert_eq!(db.data.unwrap()["password"].0, CANARY.as_bytes());
    assert!(shop.get("session").await.is_ok());
    // A ClusterRole is beyond the agent's RBAC: refused, named, and the next wave not applied.
    let refused = eventually("Sync cluster refused", 60, &logs, async || {
        let r = ready(&syncs.get("cluster").await.ok()?)?;
        (r.0 == "False").then_some(r)
    })
    .await;
    assert!(
        refused.2.contains("ClusterRole")
            && refused.2.contains("lockstep-e2e-reader")
            && refused.2.contains("forbidden"),
        "{refused:?}"
    );
    let configmaps: Api<ConfigMap> = Api::namespaced(client.clone(), "shop");
    assert!(
        configmaps
            .get_opt("after-the-clusterrole")
            .await
            .unwrap()
            .is_none()
    );
    // Tenant isolation (the Deployment's --tenant-isolation=true): a namespace admin's Sync
    // applies into that namespace and nowhere else; nothing of a refused revision is applied.
    kubectl_ok(cp, &["create", "namespace", "team-a"], None);
    kubectl_ok(
        cp,
        &[
            "-n",
            "team-a",
            "create",
            "rolebinding",
            "admins",
            "--clusterrole=admin",
            "--user=alice",
        ],
        None,
    );
    kubectl_ok(
        cp,
        &[
            "-n",
            "team-a",
            "create",
            "rolebinding",
            "editors",
            "--clusterrole=edit",
            "--user=bob",
        ],
        None,
    );
    eventually(
        "Syncs in the built-in admin and view roles",
        30,
        &logs,
        async || {
            (can_i(cp, "alice", "create syncs.lockstep.dev -n team-a")
                && can_i(cp, "bob", "list syncs.lockstep.dev -n team-a"))
            .then_some(())
        },
    )
    .await;
    assert!(
        !can_i(cp, "bob", "create syncs.lockstep.dev -n team-a"),
        "an editor may write Syncs"
    );
    assert!(!can_i(cp, "alice", "create syncs.lockstep.dev -n shop"));
    for (dir, docs) in [
        (
            "tenant/ok",
            vec![json!({ "apiVersion": "v1", "kind": "ConfigMap", "metadata": { "name": "hello" } })],
        ),
        (
            "tenant/elsewhere",
            vec![
                json!({ "apiVersion": "v1", "kind": "ConfigMap", "metadata": { "name": "innocent" } }),
                json!({ "apiVersion": "v1", "kind": "ConfigMap", "metadata": { "name": "planted", "namespace": "shop" } }),
            ],
        ),
        (
            "tenant/cluster",
            vec![
                json!({ "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
                         "metadata": { "name": "tenant-wants-this" }, "rules": [] }),
            ],
        ),
    ] {
        std::fs::create_dir_all(repo.join(dir)).unwrap();
        write(&format!("{dir}/objects.yaml"), &docs);
    }
    let t1 = commit(&repo, "tenant");
    let alice = cp.client_as("alice", &[]).await.unwrap();
    let team: Api<Sync> = Api::namespaced(alice, "team-a");
    for name in ["ok", "elsewhere", "cluster"] {
        let s: Sync = serde_json::from_value(json!({
            "apiVersion": "lockstep.dev/v1alpha1", "kind": "Sync",
            "metadata": { "name": name, "namespace": "team-a" },
            "spec": { "source": { "url": url, "path": format!("tenant/{name}"), "interval": "1h" } }
        }))
        .unwrap();
        team.create(&PostParams::default(), &s).await.unwrap();
    }
    eventually("tenant Sync ok Ready", 60, &logs, async || {
        let r = ready(&team.get("ok").await.ok()?)?;
        (r.0 == "True" && r.3.ends_with(&t1)).then_some(())
    })
    .await;
    let team_configmaps: Api<ConfigMap> = Api::namespaced(client.clone(), "team-a");
    assert!(
        team_configmaps.get_opt("hello").await.unwrap().is_some(),
        "a namespace-less object lands in the Sync's namespace"
    );
    for (name, expect) in [
        (
            "elsewhere",
            "ConfigMap planted: metadata.namespace \"shop\": this Sync may only apply into its own namespace \"team-a\"",
        ),
        (
            "cluster",
            "ClusterRole tenant-wants-this: cluster-scoped objects are applied only by Syncs in the agent's namespace",
        ),
    ] {
        let r = eventually(&format!("tenant Sync {name} refused"), 60, &logs, async || {
            let r = ready(&team.get(name).await.ok()?)?;
            (r.0 == "False").then_some(r)
        })
        .await;
        assert!(r.2.contains(expect), "{name}: {r:?}");
    }
    assert!(configmaps.get_opt("planted").await.unwrap().is_none());
    assert!(
        team_configmaps.get_opt("innocent").await.unwrap().is_none(),
        "nothing of a refused revision is applied"
    );
    for name in ["ok", "elsewhere", "cluster"] {
        team.delete(name, &Default::default()).await.unwrap();
    }

    // Opting in to cluster-scoped objects: deploy/cluster-admin.
    kubectl_ok(cp, &["apply", "-k", "deploy/cluster-admin"], None);
    synced_at(&syncs, "cluster", &t1, &logs).await;
    assert!(
        configmaps
            .get_opt("after-the-clusterrole")
            .await
            .unwrap()
            .is_some()
    );
    syncs.delete("cluster", &Default::default()).await.unwrap();
    kubectl_ok(
        cp,
        &["delete", "clusterrolebinding", "lockstep-agent-cluster-admin"],
        None,
    );
    assert!(!can_i(cp, AGENT, "create clusterroles.rbac.authorization.k8s.io"));
    // More kinds by aggregation: a labelled ClusterRole is folded into lockstep-apply-extensions.
    assert!(!can_i(cp, AGENT, "create podtemplates -n anything"));
    kubectl_ok(
        cp,
        &["apply", "-f", "-"],
        Some(
            json!({ "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
                    "metadata": { "name": "podtemplates-for-lockstep", "labels": { "lockstep.dev/aggregate-to-apply": "true" } },
                    "rules": [{ "apiGroups": [""], "resources": ["podtemplates"], "verbs": ["create", "patch"] }] })
            .to_string()
            .as_bytes(),
        ),
    );
    eventually(
        "aggregation into lockstep-apply-extensions",
        30,
        &logs,
        async || can_i(cp, AGENT, "create podtemplates -n anything").then_some(()),
    )
    .await;

    // ---- Sealing-key renewal: the CronJob's command, as its ServiceAccount. ----
    let printed = run_cronjob(cp, &docs, "lockstep-sealing-key-renewal").await;
    assert!(printed.contains("-----BEGIN CERTIFICATE-----"), "{printed}");
    assert_eq!(sealing_keys(&secrets).await.len(), 2, "old keys are kept");
    let cert2 = eventually("the new certificate served", 30, &logs, async || {
        match http(port, "GET", "/v1/cert.pem", &[], b"") {
            Ok((200, pem)) if pem != cert1 => Some(pem),
            _ => None,
        }
    })
    .await;
    assert!(
        printed.contains(cert2.trim()),
        "the job printed another certificate"
    );
    // The old SealedSecret still opens (a new commit makes the agent unseal it again)...
    std::fs::write(repo.join("app/touch"), "1").unwrap();
    let c2 = commit(&repo, "touch");
    synced_at(&syncs, "app", &c2, &logs).await;
    // ...and `lockstep seal --re-encrypt`, through the agent, moves it onto the new key.
    let resealed = work.path().join("session.resealed.yaml");
    lockstep(args(&[
        "seal",
        "--re-encrypt",
        "-f",
        &sealed1.display().to_string(),
        "-w",
        &resealed.display().to_string(),
        "--kubeconfig",
        &developer.display().to_string(),
    ]))
    .await
    .unwrap();
    let newest = sealing_keys(&secrets)
        .await
        .into_iter()
        .find(|s| s.data.as_ref().unwrap()["tls.crt"].0 == cert2.as_bytes())
        .unwrap();
    let new_key = work.path().join("new.key");
    std::fs::write(&new_key, &newest.data.as_ref().unwrap()["tls.key"].0).unwrap();
    let opened = work.path().join("opened.json");
    lockstep(args(&[
        "seal",
        "--recovery-unseal",
        "--recovery-private-key",
        &new_key.display().to_string(),
        "-f",
        &resealed.display().to_string(),
        "-w",
        &opened.display().to_string(),
    ]))
    .await
    .unwrap();
    assert!(std::fs::read_to_string(&opened).unwrap().contains("\"key\""));
    std::fs::remove_file(&new_key).unwrap();
    std::fs::remove_file(&opened).unwrap();
    std::fs::copy(&resealed, &sealed1).unwrap();
    let c3 = commit(&repo, "re-encrypted");
    synced_at(&syncs, "app", &c3, &logs).await;

    // ---- age rotation: the CronJob's command, then the laptop's part of the runbook. ----
    let printed = run_cronjob(cp, &docs, "lockstep-age-key-rotation").await;
    let new_recipient = printed
        .lines()
        .find(|l| l.starts_with("age1"))
        .unwrap_or_else(|| panic!("no recipient printed:\n{printed}"))
        .trim()
        .to_owned();
    let sops_age = secrets.get("sops-age").await.unwrap();
    assert_eq!(
        sops_age.data.as_ref().unwrap().len(),
        2,
        "the old identity is kept"
    );
    assert_eq!(
        sops_age.metadata.annotations.as_ref().unwrap()["lockstep.dev/age-recipients"],
        format!("{old_recipient},{new_recipient}")
    );
    std::fs::write(
        repo.join(".sops.yaml"),
        format!(
            "creation_rules:\n  - path_regex: \\.sops\\.yaml$\n    encrypted_regex: ^(data|stringData)$\n    age: {new_recipient}\n"
        ),
    )
    .unwrap();
    let db_file = repo.join("app/db.sops.yaml");
    lockstep(args(&[
        "sops",
        "updatekeys",
        "-y",
        "--config",
        &repo.join(".sops.yaml").display().to_string(),
        "--identity",
        &root().join("keys-example/age.agekey").display().to_string(),
        &db_file.display().to_string(),
    ]))
    .await
    .unwrap();
    let text = std::fs::read_to_string(&db_file).unwrap();
    assert!(
        text.contains(&new_recipient) && !text.contains(old_recipient),
        "{text}"
    );
    let c4 = commit(&repo, "updatekeys");
    synced_at(&syncs, "app", &c4, &logs).await;
    // The old identity leaves the Secret; the agent decrypts with the new one alone.
    kubectl_ok(
        cp,
        &[
            "-n",
            NS,
            "patch",
            "secret",
            "sops-age",
            "--type=json",
            "-p",
            r#"[{"op":"remove","path":"/data/age.agekey"}]"#,
        ],
        None,
    );
    configmap_mode(&repo, "two");
    let c5 = commit(&repo, "after the old key left");
    synced_at(&syncs, "app", &c5, &logs).await;
    assert_eq!(
        configmaps.get("settings").await.unwrap().data.unwrap()["mode"],
        "two"
    );

    // ---- Backup and recovery, as the runbook has it. ----
    let offline = lockstep_tests::AgeKey::generate(work.path(), "offline");
    let mut backups = Vec::new();
    for (file, selector) in [
        (
            "sealing-keys.yaml",
            vec!["get", "secret", "-l", KEY_LABEL, "-o", "yaml"],
        ),
        ("sops-age.yaml", vec!["get", "secret", "sops-age", "-o", "yaml"]),
    ] {
        let mut a = vec!["-n", NS];
        a.extend(selector);
        let exported = kubectl_ok(cp, &a, None);
        let values: Vec<String> = lockstep_formats::yaml::load_documents(&exported)
            .unwrap()
            .iter()
            .map(|d| lockstep_formats::sops::stores::to_json(d).unwrap())
            .flat_map(|d| {
                let items = d
                    .get("items")
                    .and_then(Json::as_array)
                    .cloned()
                    .unwrap_or_else(|| vec![d]);
                items
                    .into_iter()
                    .flat_map(|i| i["data"].as_object().cloned().unwrap_or_default().into_values())
            })
            .filter_map(|v| v.as_str().map(str::to_owned))
            .collect();
        assert!(!values.is_empty(), "{file}: nothing exported");
        let path = work.path().join(file);
        std::fs::write(&path, exported).unwrap();
        lockstep(args(&[
            "sops",
            "encrypt",
            "--age",
            &offline.recipient,
            "--encrypted-regex",
            "^(data|stringData)$",
            "-i",
            &path.display().to_string(),
        ]))
        .await
        .unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(
            values.iter().all(|v| !text.contains(v.as_str())),
            "{file} is not encrypted"
        );
        backups.push(path);
    }
    // The disaster: the agent is gone, and so are its keys.
    agent
        .terminate(Duration::from_secs(30))
        .expect("the agent did not stop");
    kubectl_ok(cp, &["-n", NS, "delete", "secret", "-l", KEY_LABEL], None);
    kubectl_ok(cp, &["-n", NS, "delete", "secret", "sops-age"], None);
    for path in &backups {
        // `lockstep sops decrypt FILE | kubectl apply -f -`: no plaintext on disk.
        let plain = Command::new(lockstep_bin())
            .args(["sops", "decrypt", "--identity"])
            .arg(&offline.path)
            .arg(path)
            .output()
            .unwrap();
        assert!(
            plain.status.success(),
            "{}",
            String::from_utf8_lossy(&plain.stderr)
        );
        kubectl_ok(cp, &["apply", "-f", "-"], Some(&plain.stdout));
    }
    let first_log = std::fs::read_to_string(&agent_log).unwrap();
    drop(agent);
    let mut agent = start_agent(cp, &docs, port, &cache).await;
    let restored_log = agent.log();
    let logs = [restored_log.as_path()];
    let served = eventually(
        "the restored agent's certificate",
        60,
        &logs,
        async || match http(port, "GET", "/v1/cert.pem", &[], b"") {
            Ok((200, pem)) => Some(pem),
            _ => None,
        },
    )
    .await;
    assert_eq!(served, cert2, "the restored newest key is the one served");
    assert_eq!(
        sealing_keys(&secrets).await.len(),
        2,
        "no key was made: the restored ones serve"
    );
    configmap_mode(&repo, "three");
    let c6 = commit(&repo, "after the restore");
    synced_at(&syncs, "app", &c6, &logs).await;

    // Nothing secret in any log.
    agent.terminate(Duration::from_secs(30));
    for (which, text) in [
        ("first", first_log),
        ("restored", std::fs::read_to_string(&restored_log).unwrap()),
    ] {
        assert!(text.lines().count() > 3, "{text}");
        for secret in [CANARY, SESSION, "AGE-SECRET-KEY-", "PRIVATE KEY"] {
            assert!(!text.contains(secret), "the {which} agent's log holds a secret");
        }
    }
}

fn configmap_mode(repo: &Path, mode: &str) {
    let path = repo.join("app/app.yaml");
    let text = std::fs::read_to_string(&path).unwrap();
    let updated = ["one", "two", "three"].iter().fold(text, |t, m| {
        t.replace(&format!("\"mode\": \"{m}\""), &format!("\"mode\": \"{mode}\""))
    });
    std::fs::write(path, updated).unwrap();
}
