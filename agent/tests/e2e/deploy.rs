//! `deploy/` on a control plane of its own (etcd, kube-apiserver, kube-controller-manager),
//! installed once and shared by this module's tests:
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
//!   `/v1/*` through the install's own Service and the API server's proxy; a namespace's admin
//!   may write Syncs that stay in it, an editor may not.
//! * The rotation CronJobs' commands run here, with the same arguments, as their
//!   ServiceAccount: a new sealing key is served at once and old SealedSecrets still open;
//!   `lockstep seal --re-encrypt` moves one onto it. A new age identity lands in `sops-age`;
//!   `lockstep sops updatekeys` re-encrypts the repository to it; the agent decrypts with it,
//!   also once the old identity is removed.
//! * The backup runbook: the keys exported with kubectl and encrypted with `lockstep sops`,
//!   a lost namespace's keys restored from it, and the agent carries on with them.
//! * No secret value or key reaches any log.
//!
//! Tests that change what the whole cluster sees (cluster-admin, the keys) take the module's
//! lock exclusively; the others share it.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use lockstep_agent::api::Sync;
use lockstep_tests::controlplane::{ControlPlane, Options, install_crypto_provider};
use lockstep_tests::demo::{container_command, install_documents};
use lockstep_tests::services::{self, Service, http};
use lockstep_tests::{eventually_showing, ok, peer};
use serde_json::{Value as Json, json};

use super::fixtures::{Repo, free_port, lockstep, lockstep_bin, root};

const NS: &str = "lockstep-system";
const AGENT: &str = "system:serviceaccount:lockstep-system:lockstep-agent";
const ROTATION: &str = "system:serviceaccount:lockstep-system:lockstep-key-rotation";
const KEY_LABEL: &str = "sealedsecrets.bitnami.com/sealed-secrets-key";
/// The recipient of `keys-example/age.agekey`.
const OLD_RECIPIENT: &str = "age1n390r3np7a2wrvaw2l06t9jgfxwjlu03xwzr7tcz3ac4x3xnh9ws36rl35";

/// The installed cluster.
struct Installed {
    cp: ControlPlane,
    docs: Vec<Json>,
    /// `kubectl kustomize deploy`.
    built: String,
    /// What `kubectl apply -k deploy` printed: stdout, stderr.
    applied: (String, String),
    work: tempfile::TempDir,
    port: u16,
    /// The agent, replaced by the restore test.
    agent: Mutex<Service>,
    /// A developer bound to `lockstep-sealer`.
    developer: PathBuf,
    /// Held shared by most tests, exclusively by those that change the cluster's rights or keys.
    lock: tokio::sync::RwLock<()>,
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
    String::from_utf8(ok(kubectl(cp, args, stdin), &format!("kubectl {args:?}"))).unwrap()
}

/// `kubectl auth can-i ARGS --as=WHO`.
fn can_i(cp: &ControlPlane, who: &str, args: &str) -> bool {
    let mut all: Vec<&str> = vec!["auth", "can-i"];
    all.extend(args.split_whitespace());
    let who = format!("--as={who}");
    all.push(&who);
    String::from_utf8_lossy(&kubectl(cp, &all, None).stdout).trim() == "yes"
}

/// Creates `sops-age` with the example age identity (`keys-example/age.agekey`), as the
/// install's instructions do.
async fn example_age_secret(secrets: &Api<Secret>) {
    let age_key = std::fs::read_to_string(root().join("keys-example/age.agekey")).unwrap();
    let s: Secret = serde_json::from_value(
        json!({ "metadata": { "name": "sops-age" }, "stringData": { "age.agekey": age_key } }),
    )
    .unwrap();
    secrets.create(&PostParams::default(), &s).await.unwrap();
}

/// Asserts that `who` may do each of `allowed` and none of `refused` (`kubectl auth can-i`).
fn assert_rights(cp: &ControlPlane, who: &str, allowed: &[&str], refused: &[&str]) {
    for a in allowed {
        assert!(can_i(cp, who, a), "{who} may not {a}");
    }
    for r in refused {
        assert!(!can_i(cp, who, r), "{who} may {r}");
    }
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

impl Installed {
    fn get() -> &'static Self {
        static I: OnceLock<Installed> = OnceLock::new();
        I.get_or_init(|| {
            std::thread::spawn(|| {
                tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap()
                    .block_on(Self::install())
            })
            .join()
            .unwrap()
        })
    }

    async fn install() -> Self {
        install_crypto_provider();
        let cp = ControlPlane::start(&Options {
            controller_manager: true,
            ..Options::default()
        })
        .unwrap();
        let docs = install_documents(&root()).unwrap();
        let built = kubectl_ok(&cp, &["kustomize", "deploy"], None);
        let out = kubectl(&cp, &["apply", "-k", "deploy"], None);
        let applied = (
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        );
        assert!(out.status.success(), "kubectl apply -k deploy: {}", applied.1);
        let client = cp.client().await.unwrap();
        example_age_secret(&Api::namespaced(client.clone(), NS)).await;
        let work = tempfile::tempdir().unwrap();
        let port = free_port();
        let agent = start_agent(&cp, &docs, port, &work.path().join("git-cache")).await;
        let logs = [agent.log()];
        let logs: Vec<&Path> = logs.iter().map(PathBuf::as_path).collect();
        // With --key-renew-period=0 the agent still makes the first sealing key.
        eventually_showing("the agent's first sealing key", 60, &logs, async || {
            matches!(http(port, "GET", "/v1/cert.pem", &[], b""), Ok((200, _))).then_some(())
        })
        .await;
        // The install's Service reaches it through the API server's proxy, as in a cluster: a
        // stand-in Pod with the Deployment's labels and port gets endpoints from the real
        // endpoint-slice controller.
        services::stand_in_pod(
            &cp,
            NS,
            "lockstep-agent-0",
            &json!({ "app.kubernetes.io/name": "lockstep-agent" }),
            &[("http", port)],
            services::host_ip().unwrap(),
        )
        .await
        .unwrap();
        kubectl_ok(
            &cp,
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
        Self {
            cp,
            docs,
            built,
            applied,
            work,
            port,
            agent: Mutex::new(agent),
            developer,
            lock: tokio::sync::RwLock::new(()),
        }
    }

    async fn client(&self) -> kube::Client {
        self.cp.client().await.unwrap()
    }

    fn agent_log(&self) -> PathBuf {
        self.agent.lock().unwrap().log()
    }

    /// Waits for `f`, showing the agent's log on a timeout.
    async fn wait<T>(&self, what: &str, secs: u64, f: impl AsyncFnMut() -> Option<T>) -> T {
        let log = self.agent_log();
        eventually_showing(what, secs, &[log.as_path()], f).await
    }

    /// The certificate the agent serves now.
    fn served_cert(&self) -> String {
        match http(self.port, "GET", "/v1/cert.pem", &[], b"") {
            Ok((200, pem)) => pem,
            other => panic!("/v1/cert.pem: {other:?}"),
        }
    }

    async fn sealing_keys(&self) -> Vec<Secret> {
        Api::<Secret>::namespaced(self.client().await, NS)
            .list(&ListParams::default().labels(&format!("{KEY_LABEL}=active")))
            .await
            .unwrap()
            .items
    }

    /// Asserts that the agent's log holds none of `secrets` (nor any key material).
    fn assert_log_clean(&self, secrets: &[&str]) {
        let text = std::fs::read_to_string(self.agent_log()).unwrap();
        assert!(text.lines().count() > 3, "{text}");
        for s in secrets.iter().chain(&["AGE-SECRET-KEY-", "PRIVATE KEY"]) {
            assert!(!text.contains(s), "the agent's log holds a secret");
        }
    }

    /// Runs a rotation CronJob's command, with its arguments, as its ServiceAccount in the
    /// agent's namespace; returns what it printed.
    async fn run_cronjob(&self, name: &str) -> String {
        let cmd = container_command(&self.docs, "CronJob", name).unwrap();
        assert_eq!(cmd[0], "/usr/local/bin/lockstep", "{cmd:?}");
        let a: Vec<&str> = cmd[1..].iter().map(String::as_str).collect();
        let mut job = services::in_cluster(
            &self.cp,
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

/// An application in its own namespace `shop-<name>`, synced by Sync `<name>` of the agent's
/// namespace: a Namespace, a ConfigMap, a Role and RoleBinding, a Deployment mounting a SOPS
/// Secret (for the example age key) and a SealedSecret (sealed with the served certificate).
struct App {
    name: String,
    shop: String,
    repo: Repo,
    canary: String,
    sealed: PathBuf,
    plain: PathBuf,
}

impl App {
    async fn new(i: &Installed, name: &str) -> Self {
        let shop = format!("shop-{name}");
        let canary = format!("CANARY-deploy-{name}");
        let repo = Repo::new();
        let write = |p: &str, docs: &[Json]| {
            let text: Vec<String> = docs
                .iter()
                .map(|d| serde_json::to_string_pretty(d).unwrap())
                .collect();
            repo.write(p, &text.join("\n---\n"));
        };
        write(
            "app/app.yaml",
            &[
                json!({ "apiVersion": "v1", "kind": "Namespace", "metadata": { "name": shop } }),
                json!({ "apiVersion": "v1", "kind": "ConfigMap", "metadata": { "name": "settings", "namespace": shop },
                        "data": { "mode": "one" } }),
                json!({ "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
                        "metadata": { "name": "read-settings", "namespace": shop },
                        "rules": [{ "apiGroups": [""], "resources": ["configmaps"], "verbs": ["get"] }] }),
                json!({ "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
                        "metadata": { "name": "read-settings", "namespace": shop },
                        "roleRef": { "apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "read-settings" },
                        "subjects": [{ "kind": "ServiceAccount", "name": "default", "namespace": shop }] }),
                json!({ "apiVersion": "apps/v1", "kind": "Deployment", "metadata": { "name": "shop", "namespace": shop },
                        "spec": { "selector": { "matchLabels": { "app": "shop" } },
                                  "template": { "metadata": { "labels": { "app": "shop" } },
                                                "spec": { "containers": [{ "name": "shop", "image": "registry.k8s.io/pause:3.10",
                                                    "envFrom": [{ "secretRef": { "name": "db" } }, { "secretRef": { "name": "session" } }] }] } } } }),
            ],
        );
        write(
            "app/db.sops.yaml",
            &[
                json!({ "apiVersion": "v1", "kind": "Secret", "metadata": { "name": "db", "namespace": shop },
                      "stringData": { "password": canary } }),
            ],
        );
        let home = i.work.path().join(format!("home-{name}"));
        std::fs::create_dir_all(&home).unwrap();
        lockstep_tests::sops_encrypt(&[&repo.path().join("app/db.sops.yaml")], OLD_RECIPIENT, &home);
        let cert = i.work.path().join(format!("{name}.pem"));
        std::fs::write(&cert, i.served_cert()).unwrap();
        let plain = i.work.path().join(format!("{name}-session.json"));
        std::fs::write(
            &plain,
            json!({ "apiVersion": "v1", "kind": "Secret", "metadata": { "name": "session", "namespace": shop },
                    "stringData": { "key": format!("{canary}-session") } })
            .to_string(),
        )
        .unwrap();
        let sealed = repo.path().join("app/session.sealed.yaml");
        lockstep(&[
            "seal",
            "--cert",
            cert.to_str().unwrap(),
            "-f",
            plain.to_str().unwrap(),
            "-w",
            sealed.to_str().unwrap(),
            "-o",
            "yaml",
        ])
        .await
        .unwrap();
        Self {
            name: name.to_owned(),
            shop,
            repo,
            canary,
            sealed,
            plain,
        }
    }

    /// Creates the Sync of `path` (in the agent's namespace).
    async fn create_sync(&self, client: &kube::Client, name: &str, path: &str) {
        let s: Sync = serde_json::from_value(json!({
            "apiVersion": "lockstep.dev/v1alpha1", "kind": "Sync",
            "metadata": { "name": name, "namespace": NS },
            "spec": { "source": { "url": self.repo.url(), "path": path, "interval": "1h" },
                      "decryption": { "sops": { "secretRef": { "name": "sops-age" } } } }
        }))
        .unwrap();
        Api::<Sync>::namespaced(client.clone(), NS)
            .create(&PostParams::default(), &s)
            .await
            .unwrap();
    }

    /// Commits, creates the Sync and waits until it is Ready at that commit.
    async fn sync(&self, i: &Installed) -> kube::Client {
        let c = self.repo.commit("app");
        let client = i.client().await;
        self.create_sync(&client, &self.name, "app").await;
        synced_at(i, &client, &self.name, &c).await;
        client
    }

    fn set_mode(&self, mode: &str) {
        let text = self.repo.read("app/app.yaml");
        let updated = ["one", "two", "three"].iter().fold(text, |t, m| {
            t.replace(&format!("\"mode\": \"{m}\""), &format!("\"mode\": \"{mode}\""))
        });
        self.repo.write("app/app.yaml", &updated);
    }
}

/// Asks for a sync now, as `lockstep reconcile` does, and waits until `sync` is Ready at
/// `commit`.
async fn synced_at(i: &Installed, client: &kube::Client, sync: &str, commit: &str) {
    let syncs: Api<Sync> = Api::namespaced(client.clone(), NS);
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
    i.wait(&format!("Sync {sync} Ready at {commit}"), 60, async || {
        let r = ready(&syncs.get(sync).await.ok()?)?;
        (r.0 == "True" && r.3.ends_with(commit)).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn install_yaml_is_the_kustomize_build_and_applies_without_a_warning() {
    let i = Installed::get();
    let _shared = i.lock.read().await;
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
        as_json(&i.built) == as_json(&committed),
        "deploy/install.yaml is stale: run `cargo xtask manifests`"
    );
    assert_eq!(committed, lockstep_cli::install::MANIFESTS);
    assert!(
        !i.applied.1.contains("Warning"),
        "kubectl apply -k deploy warned:\n{}",
        i.applied.1
    );
    assert_eq!(i.applied.0.lines().count(), i.docs.len(), "{}", i.applied.0);
    // `lockstep install` applies the same objects (server-side, taking them over): no change.
    lockstep(&[
        "install",
        "--kubeconfig",
        &i.cp.kubeconfig().display().to_string(),
    ])
    .await
    .unwrap();
    let ns: Json =
        serde_json::from_str(&kubectl_ok(&i.cp, &["get", "namespace", NS, "-o", "json"], None)).unwrap();
    assert_eq!(
        ns["metadata"]["labels"]["pod-security.kubernetes.io/enforce"],
        "restricted"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn rbac_grants_the_agent_and_the_rotation_job_what_they_need_and_nothing_more() {
    let i = Installed::get();
    let _shared = i.lock.read().await;
    let cp = &i.cp;
    assert_rights(
        cp,
        AGENT,
        &[
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
        ],
        &[
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
        ],
    );
    assert_rights(
        cp,
        ROTATION,
        &[
            "create secrets -n lockstep-system",
            "get secrets/sops-age -n lockstep-system",
            "update secrets/sops-age -n lockstep-system",
        ],
        &[
            "list secrets -n lockstep-system",
            "get secrets/other -n lockstep-system",
            "delete secrets/sops-age -n lockstep-system",
            "create secrets -n default",
            "get syncs.lockstep.dev -n lockstep-system",
        ],
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_developer_bound_to_lockstep_sealer_fetches_the_certificate_through_the_service() {
    let i = Installed::get();
    let _shared = i.lock.read().await;
    assert!(!can_i(&i.cp, "developer", "get secrets -n lockstep-system"));
    assert!(can_i(
        &i.cp,
        "developer",
        "get services/lockstep-agent -n lockstep-system"
    ));
    assert!(!can_i(
        &i.cp,
        "developer",
        "get services/other -n lockstep-system"
    ));
    let fetched = i.work.path().join("fetched.pem");
    let developer = i.developer.display().to_string();
    i.wait("the certificate through the Service", 60, async || {
        lockstep(&[
            "seal",
            "--fetch-cert",
            "-w",
            fetched.to_str().unwrap(),
            "--kubeconfig",
            &developer,
        ])
        .await
        .ok()
    })
    .await;
    assert_eq!(std::fs::read_to_string(&fetched).unwrap(), i.served_cert());
    assert!(!i.sealing_keys().await.is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn an_application_syncs_with_the_least_privilege_rbac() {
    let i = Installed::get();
    let _shared = i.lock.read().await;
    let app = App::new(i, "least").await;
    let client = app.sync(i).await;
    let shop: Api<Secret> = Api::namespaced(client.clone(), &app.shop);
    assert_eq!(
        shop.get("db").await.unwrap().data.unwrap()["password"].0,
        app.canary.as_bytes()
    );
    assert!(shop.get("session").await.is_ok());
    i.assert_log_clean(&[&app.canary]);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_cluster_role_is_refused_with_its_name_until_the_cluster_admin_overlay() {
    let i = Installed::get();
    let _exclusive = i.lock.write().await;
    let app = App::new(i, "cluster").await;
    let shop = app.shop.clone();
    let client = app.sync(i).await;
    let cluster: Vec<String> = [
        json!({ "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
                "metadata": { "name": "lockstep-e2e-reader" },
                "rules": [{ "apiGroups": [""], "resources": ["configmaps"], "verbs": ["get"] }] }),
        json!({ "apiVersion": "v1", "kind": "ConfigMap",
                "metadata": { "name": "after-the-clusterrole", "namespace": shop,
                              "annotations": { "lockstep.dev/sync-wave": "1" } } }),
    ]
    .iter()
    .map(Json::to_string)
    .collect();
    app.repo.write("cluster/cluster.yaml", &cluster.join("\n---\n"));
    let c1 = app.repo.commit("cluster");
    app.create_sync(&client, "cluster-scoped", "cluster").await;
    let syncs: Api<Sync> = Api::namespaced(client.clone(), NS);
    let refused = i
        .wait("Sync cluster refused", 60, async || {
            let r = ready(&syncs.get("cluster-scoped").await.ok()?)?;
            (r.0 == "False").then_some(r)
        })
        .await;
    assert!(
        refused.2.contains("ClusterRole")
            && refused.2.contains("lockstep-e2e-reader")
            && refused.2.contains("forbidden"),
        "{refused:?}"
    );
    let configmaps: Api<ConfigMap> = Api::namespaced(client.clone(), &shop);
    assert!(
        configmaps
            .get_opt("after-the-clusterrole")
            .await
            .unwrap()
            .is_none(),
        "no later wave is applied"
    );
    // Opting in to cluster-scoped objects: deploy/cluster-admin.
    kubectl_ok(&i.cp, &["apply", "-k", "deploy/cluster-admin"], None);
    synced_at(i, &client, "cluster-scoped", &c1).await;
    assert!(
        configmaps
            .get_opt("after-the-clusterrole")
            .await
            .unwrap()
            .is_some()
    );
    syncs.delete("cluster-scoped", &Default::default()).await.unwrap();
    kubectl_ok(
        &i.cp,
        &["delete", "clusterrolebinding", "lockstep-agent-cluster-admin"],
        None,
    );
    assert!(!can_i(
        &i.cp,
        AGENT,
        "create clusterroles.rbac.authorization.k8s.io"
    ));
}

#[tokio::test(flavor = "multi_thread")]
async fn tenants_stay_in_their_namespace_and_editors_cannot_write_syncs() {
    let i = Installed::get();
    let _shared = i.lock.read().await;
    let cp = &i.cp;
    let client = i.client().await;
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
    i.wait("Syncs in the built-in admin and view roles", 30, async || {
        (can_i(cp, "alice", "create syncs.lockstep.dev -n team-a")
            && can_i(cp, "bob", "list syncs.lockstep.dev -n team-a"))
        .then_some(())
    })
    .await;
    assert!(
        !can_i(cp, "bob", "create syncs.lockstep.dev -n team-a"),
        "an editor may write Syncs"
    );
    assert!(!can_i(cp, "alice", "create syncs.lockstep.dev -n default"));
    let repo = Repo::new();
    for (dir, docs) in [
        (
            "ok",
            vec![json!({ "apiVersion": "v1", "kind": "ConfigMap", "metadata": { "name": "hello" } })],
        ),
        (
            "elsewhere",
            vec![
                json!({ "apiVersion": "v1", "kind": "ConfigMap", "metadata": { "name": "innocent" } }),
                json!({ "apiVersion": "v1", "kind": "ConfigMap", "metadata": { "name": "planted", "namespace": "default" } }),
            ],
        ),
        (
            "cluster",
            vec![
                json!({ "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
                          "metadata": { "name": "tenant-wants-this" }, "rules": [] }),
            ],
        ),
    ] {
        let text: Vec<String> = docs.iter().map(|d| d.to_string()).collect();
        repo.write(&format!("tenant/{dir}/objects.yaml"), &text.join("\n---\n"));
    }
    let t1 = repo.commit("tenant");
    let alice = cp.client_as("alice", &[]).await.unwrap();
    let team: Api<Sync> = Api::namespaced(alice, "team-a");
    for name in ["ok", "elsewhere", "cluster"] {
        let s: Sync = serde_json::from_value(json!({
            "apiVersion": "lockstep.dev/v1alpha1", "kind": "Sync",
            "metadata": { "name": name, "namespace": "team-a" },
            "spec": { "source": { "url": repo.url(), "path": format!("tenant/{name}"), "interval": "1h" } }
        }))
        .unwrap();
        team.create(&PostParams::default(), &s).await.unwrap();
    }
    i.wait("tenant Sync ok Ready", 60, async || {
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
            "ConfigMap planted: metadata.namespace \"default\": this Sync may only apply into its own namespace \"team-a\"",
        ),
        (
            "cluster",
            "ClusterRole tenant-wants-this: cluster-scoped objects are applied only by Syncs in the agent's namespace",
        ),
    ] {
        let r = i
            .wait(&format!("tenant Sync {name} refused"), 60, async || {
                let r = ready(&team.get(name).await.ok()?)?;
                (r.0 == "False").then_some(r)
            })
            .await;
        assert!(r.2.contains(expect), "{name}: {r:?}");
    }
    assert!(
        Api::<ConfigMap>::namespaced(client.clone(), "default")
            .get_opt("planted")
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        team_configmaps.get_opt("innocent").await.unwrap().is_none(),
        "nothing of a refused revision is applied"
    );
    for name in ["ok", "elsewhere", "cluster"] {
        team.delete(name, &Default::default()).await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_labelled_cluster_role_extends_lockstep_apply() {
    let i = Installed::get();
    let _shared = i.lock.read().await;
    assert!(!can_i(&i.cp, AGENT, "create podtemplates -n anything"));
    kubectl_ok(
        &i.cp,
        &["apply", "-f", "-"],
        Some(
            json!({ "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
                    "metadata": { "name": "podtemplates-for-lockstep", "labels": { "lockstep.dev/aggregate-to-apply": "true" } },
                    "rules": [{ "apiGroups": [""], "resources": ["podtemplates"], "verbs": ["create", "patch"] }] })
            .to_string()
            .as_bytes(),
        ),
    );
    i.wait("aggregation into lockstep-apply-extensions", 30, async || {
        can_i(&i.cp, AGENT, "create podtemplates -n anything").then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_sealing_key_job_adds_a_key_and_re_encrypt_moves_onto_it() {
    let i = Installed::get();
    let _exclusive = i.lock.write().await;
    let app = App::new(i, "sealing").await;
    let client = app.sync(i).await;
    let cert1 = i.served_cert();
    let keys_before = i.sealing_keys().await.len();
    let printed = i.run_cronjob("lockstep-sealing-key-renewal").await;
    assert!(printed.contains("-----BEGIN CERTIFICATE-----"), "{printed}");
    assert_eq!(i.sealing_keys().await.len(), keys_before + 1, "old keys are kept");
    let port = i.port;
    let cert2 = i
        .wait("the new certificate served", 30, async || {
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
    app.repo.write("app/touch", "1");
    let c2 = app.repo.commit("touch");
    synced_at(i, &client, &app.name, &c2).await;
    // ...and `lockstep seal --re-encrypt`, through the agent, moves it onto the new key.
    let resealed = i.work.path().join("session.resealed.yaml");
    let developer = i.developer.display().to_string();
    lockstep(&[
        "seal",
        "--re-encrypt",
        "-f",
        app.sealed.to_str().unwrap(),
        "-w",
        resealed.to_str().unwrap(),
        "--kubeconfig",
        &developer,
    ])
    .await
    .unwrap();
    let newest = i
        .sealing_keys()
        .await
        .into_iter()
        .find(|s| s.data.as_ref().unwrap()["tls.crt"].0 == cert2.as_bytes())
        .unwrap();
    let new_key = i.work.path().join("new.key");
    std::fs::write(&new_key, &newest.data.as_ref().unwrap()["tls.key"].0).unwrap();
    let opened = i.work.path().join("opened.json");
    lockstep(&[
        "seal",
        "--recovery-unseal",
        "--recovery-private-key",
        new_key.to_str().unwrap(),
        "-f",
        resealed.to_str().unwrap(),
        "-w",
        opened.to_str().unwrap(),
    ])
    .await
    .unwrap();
    assert!(std::fs::read_to_string(&opened).unwrap().contains("\"key\""));
    std::fs::remove_file(&new_key).unwrap();
    std::fs::remove_file(&opened).unwrap();
    std::fs::remove_file(&app.plain).unwrap();
    std::fs::copy(&resealed, &app.sealed).unwrap();
    let c3 = app.repo.commit("re-encrypted");
    synced_at(i, &client, &app.name, &c3).await;
    i.assert_log_clean(&[&app.canary]);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_age_job_adds_an_identity_and_updatekeys_moves_the_repository_onto_it() {
    let i = Installed::get();
    let _exclusive = i.lock.write().await;
    let app = App::new(i, "age").await;
    let client = app.sync(i).await;
    let secrets: Api<Secret> = Api::namespaced(client.clone(), NS);
    let printed = i.run_cronjob("lockstep-age-key-rotation").await;
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
        format!("{OLD_RECIPIENT},{new_recipient}")
    );
    app.repo.write(
        ".sops.yaml",
        &format!(
            "creation_rules:\n  - path_regex: \\.sops\\.yaml$\n    encrypted_regex: ^(data|stringData)$\n    age: {new_recipient}\n"
        ),
    );
    let db_file = app.repo.path().join("app/db.sops.yaml");
    lockstep(&[
        "sops",
        "updatekeys",
        "-y",
        "--config",
        app.repo.path().join(".sops.yaml").to_str().unwrap(),
        "--identity",
        root().join("keys-example/age.agekey").to_str().unwrap(),
        db_file.to_str().unwrap(),
    ])
    .await
    .unwrap();
    let text = std::fs::read_to_string(&db_file).unwrap();
    assert!(
        text.contains(&new_recipient) && !text.contains(OLD_RECIPIENT),
        "{text}"
    );
    let c4 = app.repo.commit("updatekeys");
    synced_at(i, &client, &app.name, &c4).await;
    // The old identity leaves the Secret; the agent decrypts with the new one alone.
    kubectl_ok(
        &i.cp,
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
    app.set_mode("two");
    let c5 = app.repo.commit("after the old key left");
    synced_at(i, &client, &app.name, &c5).await;
    let configmaps: Api<ConfigMap> = Api::namespaced(client.clone(), &app.shop);
    assert_eq!(
        configmaps.get("settings").await.unwrap().data.unwrap()["mode"],
        "two"
    );
    i.assert_log_clean(&[&app.canary]);
    // Back as it was, for the other tests: the example identity alone.
    secrets.delete("sops-age", &Default::default()).await.unwrap();
    example_age_secret(&Api::namespaced(client.clone(), NS)).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_lost_namespace_is_restored_from_the_encrypted_backup_and_the_agent_carries_on() {
    let i = Installed::get();
    let _exclusive = i.lock.write().await;
    let app = App::new(i, "backup").await;
    let client = app.sync(i).await;
    let served = i.served_cert();
    let keys_before = i.sealing_keys().await.len();
    let offline = lockstep_tests::AgeKey::generate(i.work.path(), "offline");
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
        let exported = kubectl_ok(&i.cp, &a, None);
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
        let path = i.work.path().join(file);
        std::fs::write(&path, exported).unwrap();
        lockstep(&[
            "sops",
            "encrypt",
            "--age",
            &offline.recipient,
            "--encrypted-regex",
            "^(data|stringData)$",
            "-i",
            path.to_str().unwrap(),
        ])
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
    let first_log = {
        let mut agent = i.agent.lock().unwrap();
        agent
            .terminate(Duration::from_secs(30))
            .expect("the agent did not stop");
        std::fs::read_to_string(agent.log()).unwrap()
    };
    kubectl_ok(&i.cp, &["-n", NS, "delete", "secret", "-l", KEY_LABEL], None);
    kubectl_ok(&i.cp, &["-n", NS, "delete", "secret", "sops-age"], None);
    for path in &backups {
        // `lockstep sops decrypt FILE | kubectl apply -f -`: no plaintext on disk.
        let plain = ok(
            Command::new(lockstep_bin())
                .args(["sops", "decrypt", "--identity"])
                .arg(&offline.path)
                .arg(path)
                .output()
                .unwrap(),
            "lockstep sops decrypt",
        );
        kubectl_ok(&i.cp, &["apply", "-f", "-"], Some(&plain));
    }
    let restarted = start_agent(&i.cp, &i.docs, i.port, &i.work.path().join("git-cache")).await;
    *i.agent.lock().unwrap() = restarted;
    let port = i.port;
    let back = i
        .wait("the restored agent's certificate", 60, async || {
            match http(port, "GET", "/v1/cert.pem", &[], b"") {
                Ok((200, pem)) => Some(pem),
                _ => None,
            }
        })
        .await;
    assert_eq!(back, served, "the restored newest key is the one served");
    assert_eq!(
        i.sealing_keys().await.len(),
        keys_before,
        "no key was made: the restored ones serve"
    );
    app.set_mode("three");
    let c6 = app.repo.commit("after the restore");
    synced_at(i, &client, &app.name, &c6).await;
    for text in [first_log, std::fs::read_to_string(i.agent_log()).unwrap()] {
        for secret in [app.canary.as_str(), "AGE-SECRET-KEY-", "PRIVATE KEY"] {
            assert!(!text.contains(secret), "an agent's log holds a secret");
        }
    }
}
