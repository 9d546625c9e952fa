//! The demo, `cargo xtask demo`: the README's first command. On this machine it starts a real
//! control plane (etcd and kube-apiserver on loopback), real moto (AWS Secrets Manager) and a
//! real OpenBao dev server (the Vault API) seeded with demo values, turns
//! `tests/example-repo/` into a Git repository, installs `deploy/install.yaml`'s namespace,
//! CRDs and RBAC, loads the throwaway keys of `keys-example/`, and runs the `lockstep-agent`
//! binary with the Deployment's arguments, as its ServiceAccount, bootstrapped onto that
//! repository. It prints progress as it goes, then one table of what is in the cluster (never
//! a secret value), shows drift put back, and checks that no planted value reached the agent's
//! log. The cluster has no nodes, so the Deployment is applied but never runs.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, DynamicObject, GroupVersionKind, ListParams, PostParams};
use kube::discovery::ApiResource;
use serde_json::{Value as Json, json};

use crate::controlplane::{ControlPlane, HarnessError, Result, free_port, io, spawn, tail};
use crate::services;

/// What to run.
#[derive(Clone, Debug)]
pub struct Options {
    /// The repository's root (`tests/example-repo/`, `keys-example/`, `deploy/install.yaml`).
    pub root: PathBuf,
    /// The `lockstep-agent` binary.
    pub agent: PathBuf,
    /// Leave everything running until Ctrl-C, for a look around with kubectl.
    pub keep: bool,
}

/// One object in the result table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Row {
    /// `Secret`, `Deployment`, ...
    pub kind: String,
    /// `namespace/name`, or the name of a cluster-scoped object.
    pub name: String,
    /// Where its content came from.
    pub from: String,
    /// Its state (for a Secret: how many keys; never a value).
    pub state: String,
    /// Where it is in Git: a file, and the kustomize build it came through (`-` for objects
    /// the agent makes from others).
    pub source: String,
    /// Its resourceVersion.
    pub resource_version: u64,
}

/// What the demo did.
#[derive(Debug)]
pub struct Report {
    /// The result table, in the order of the data flow (SOPS, sealed, external, workload).
    pub rows: Vec<Row>,
    /// The commit synced.
    pub revision: String,
    /// Seconds from the agent's start to the Sync being Ready.
    pub sync_seconds: f64,
    /// Seconds until a deleted Secret was back.
    pub heal_seconds: f64,
    /// The agent's whole log.
    pub agent_log: String,
}

/// Every secret value the demo plants: in the example repository's SOPS files and
/// SealedSecret, in moto and in OpenBao. None may appear in a log or in the demo's output.
pub const VALUES: &[&str] = &[
    "demo-password-not-secret",
    "demo-access-key",
    "demo-secret-key-6d1f",
    VAULT_ROOT_TOKEN,
    "demo-session-key-41b9",
    "demo-signing-key-4f1a",
    AWS_API_KEY,
    VAULT_APP_TOKEN,
];
const VAULT_ROOT_TOKEN: &str = "demo-root-token-7c2e";
const AWS_API_KEY: &str = "demo-api-key-93ad";
const VAULT_APP_TOKEN: &str = "demo-vault-app-token-5e07";
/// The directory of the example repository the Sync reads: Flux's layout.
const SYNC_PATH: &str = "clusters/demo";
/// The web app's objects are named with the overlay's prefix.
const WEB: &str = "demo-web";
const WEB_DB: &str = "demo-web-db";
/// The Sync the agent's bootstrap flags create.
const SYNC: &str = "lockstep-system";
const AGENT_NS: &str = "lockstep-system";
/// Kinds of the install that need nodes to mean anything; the demo runs the agent as a process.
const NOT_APPLIED: &[&str] = &["Deployment", "CronJob", "NetworkPolicy", "PodDisruptionBudget"];

fn fail(m: impl Into<String>) -> HarnessError {
    HarnessError::Demo(m.into())
}

fn kube_err(what: &str) -> impl FnOnce(kube::Error) -> HarnessError + '_ {
    move |e| fail(format!("{what}: {e}"))
}

/// Prints one line of progress.
fn say(out: &mut dyn Write, line: impl AsRef<str>) {
    let _ = writeln!(out, "{}", line.as_ref());
    let _ = out.flush();
}

/// Runs the demo, writing its progress and results to `out`.
pub async fn run(opts: &Options, out: &mut dyn Write) -> Result<Report> {
    let t0 = Instant::now();
    let work = io(
        "creating the demo's directory",
        tempfile::Builder::new().prefix("lockstep-demo-").tempdir(),
    )?;
    let elapsed = |t: Instant| format!("{:.1} s", t.elapsed().as_secs_f64());

    say(
        out,
        "[1/6] Starting a Kubernetes control plane (etcd + kube-apiserver) on loopback ...",
    );
    let t = Instant::now();
    let cp = tokio::task::spawn_blocking(|| ControlPlane::start(&crate::controlplane::Options::default()))
        .await
        .map_err(|e| fail(format!("control plane: {e}")))??;
    say(out, format!("      up at {} in {}", cp.server(), elapsed(t)));
    let admin = cp.client().await?;

    say(
        out,
        "[2/6] Starting the secret backends: moto (AWS Secrets Manager) and OpenBao (Vault API) ...",
    );
    let t = Instant::now();
    let moto = services::moto()?;
    let aws = services::aws_client(&moto.url).await;
    aws.create_secret()
        .name("demo/web-api")
        .secret_string(json!({ "apiKey": AWS_API_KEY }).to_string())
        .send()
        .await
        .map_err(|e| fail(format!("seeding moto: {e}")))?;
    let bao = services::openbao_with_token(VAULT_ROOT_TOKEN)?;
    let bao_port: u16 = bao
        .url
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .ok_or_else(|| fail("OpenBao's URL has no port"))?;
    let body = json!({ "data": { "token": VAULT_APP_TOKEN } }).to_string();
    let (status, _) = services::http(
        bao_port,
        "POST",
        "/v1/secret/data/web",
        &[
            ("X-Vault-Token", VAULT_ROOT_TOKEN),
            ("Content-Type", "application/json"),
        ],
        body.as_bytes(),
    )?;
    if status != 200 {
        return Err(fail(format!("seeding OpenBao: HTTP {status}")));
    }
    say(
        out,
        format!(
            "      moto at {} holds demo/web-api; OpenBao at {} holds secret/web ({})",
            moto.url,
            bao.url,
            elapsed(t)
        ),
    );

    say(out, "[3/6] Making a Git repository of tests/example-repo ...");
    let repo = work.path().join("example-repo");
    copy_dir(&opts.root.join("tests/example-repo"), &repo)?;
    let stores = repo.join("clusters/demo/secrets/secret-stores.yaml");
    let text = io("reading secret-stores.yaml", std::fs::read_to_string(&stores))?;
    io(
        "writing secret-stores.yaml",
        std::fs::write(&stores, text.replace("http://127.0.0.1:8200", &bao.url)),
    )?;
    for args in [
        &["init", "-q", "-b", "main"][..],
        &["add", "-A"],
        &["commit", "-qm", "example"],
    ] {
        crate::git(&repo, args);
    }
    let revision = crate::git(&repo, &["rev-parse", "HEAD"]).trim().to_owned();
    let files = crate::git(&repo, &["ls-files"]);
    say(
        out,
        format!(
            "      commit {} with {} files: a kustomize base (a Deployment, a SOPS Secret) and the overlay",
            &revision[..12],
            files.lines().count()
        ),
    );
    say(
        out,
        "      clusters/demo/web (namespace, prefix, label, image tag, a Secret generated from a SOPS",
    );
    say(
        out,
        "      dotenv file), beside plain files: a Namespace, a SOPS Secret, a SealedSecret, 2 SecretStores",
    );
    say(
        out,
        "      and 2 ExternalSecrets (the Vault store points at this OpenBao)",
    );

    say(
        out,
        "[4/6] Installing Lockstep's CRDs and RBAC (deploy/install.yaml) and the THROWAWAY keys ...",
    );
    let t = Instant::now();
    let docs = install_documents(&opts.root)?;
    // The image's entrypoint is the agent: the Deployment gives arguments only.
    let agent_args = container_command(&docs, "Deployment", "lockstep-agent")?;
    let applied: Vec<&Json> = docs
        .iter()
        .filter(|d| !NOT_APPLIED.contains(&d["kind"].as_str().unwrap_or_default()))
        .collect();
    let list = work.path().join("install.json");
    io(
        "writing the install list",
        std::fs::write(
            &list,
            json!({ "apiVersion": "v1", "kind": "List", "items": applied }).to_string(),
        ),
    )?;
    let kubectl = Command::new(crate::peer("kubectl"))
        .arg("--kubeconfig")
        .arg(cp.kubeconfig())
        .args(["apply", "--server-side", "--field-manager", "lockstep-demo", "-f"])
        .arg(&list)
        .output();
    let kubectl = io("running kubectl apply", kubectl)?;
    if !kubectl.status.success() {
        return Err(fail(format!(
            "kubectl apply: {}",
            String::from_utf8_lossy(&kubectl.stderr)
        )));
    }
    wait_established(&admin, &docs).await?;
    load_keys(&admin, &opts.root.join("keys-example")).await?;
    say(
        out,
        format!(
            "      {} objects; the agent's Deployment, CronJobs, NetworkPolicies and PDB are left out: this",
            applied.len()
        ),
    );
    say(
        out,
        format!(
            "      control plane has no nodes, so the agent runs here as a process instead ({})",
            elapsed(t)
        ),
    );

    say(
        out,
        "[5/6] Running lockstep-agent as ServiceAccount lockstep-system/lockstep-agent ...",
    );
    let t = Instant::now();
    let kubeconfig = cp
        .kubeconfig_for_service_account(AGENT_NS, "lockstep-agent")
        .await?;
    let port = free_port()?;
    let mut args: Vec<String> = agent_args
        .into_iter()
        .filter(|a| !a.starts_with("--listen=") && !a.starts_with("--git-cache="))
        .collect();
    args.push(format!("--listen=127.0.0.1:{port}"));
    args.push(format!("--git-cache={}", work.path().join("git-cache").display()));
    say(out, format!("      lockstep-agent {}", args.join(" ")));
    let mut cmd = Command::new(&opts.agent);
    cmd.args(&args)
        .env("KUBECONFIG", &kubeconfig)
        .env("POD_NAMESPACE", AGENT_NS)
        .env("POD_NAME", "lockstep-agent-demo")
        .env("LOCKSTEP_LOG_FORMAT", "json")
        .env("AWS_SECRETSMANAGER_ENDPOINT", &moto.url)
        .env("LOCKSTEP_BOOTSTRAP_URL", format!("file://{}", repo.display()))
        .env("LOCKSTEP_BOOTSTRAP_PATH", SYNC_PATH)
        .env("LOCKSTEP_KUSTOMIZE_HELPER", crate::peer("lockstep-kustomize"))
        .env("LOCKSTEP_BOOTSTRAP_SOPS_SECRET", "sops-age")
        .env("LOCKSTEP_BOOTSTRAP_INTERVAL", "30s");
    let mut agent = spawn("lockstep-agent", &mut cmd, work.path())?;
    let log = agent.log.clone();
    let syncs = Api::<DynamicObject>::namespaced_with(admin.clone(), AGENT_NS, &sync_resource());
    let mut last = String::new();
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut ready_said = false;
    loop {
        if let Ok(Some(status)) = agent.child.try_wait() {
            return Err(fail(format!(
                "lockstep-agent exited ({status}); its log ends:\n{}",
                tail(&log, 20)
            )));
        }
        if !ready_said && matches!(services::http(port, "GET", "/readyz", &[], b""), Ok((200, _))) {
            say(
                out,
                format!(
                    "      agent ready: leader, keys loaded, watches listed ({})",
                    elapsed(t)
                ),
            );
            ready_said = true;
        }
        let sync = syncs.get_opt(SYNC).await.map_err(kube_err("reading the Sync"))?;
        let ready = sync.as_ref().and_then(|s| condition(&s.data, "Ready"));
        if let Some((status, reason, message)) = &ready {
            let line = format!("{status} {reason}: {message}");
            if line != last {
                say(out, format!("      Sync {AGENT_NS}/{SYNC}: Ready={line}"));
                last = line;
            }
            if status == "True" {
                break;
            }
        }
        if Instant::now() > deadline {
            return Err(fail(format!(
                "the Sync was not Ready after 120 s; the agent's log ends:\n{}",
                tail(&log, 20)
            )));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let sync_seconds = t.elapsed().as_secs_f64();
    say(out, format!("      synced in {sync_seconds:.1} s"));
    // The SealedSecret's and the ExternalSecrets' own conditions follow within moments.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let mut pending = Vec::new();
        for (kind, group, version, cond) in [
            ("SealedSecret", "bitnami.com", "v1alpha1", "Synced"),
            ("ExternalSecret", "external-secrets.io", "v1", "Ready"),
        ] {
            for o in list_web(&admin, group, version, kind).await? {
                if condition(&o, cond).is_none_or(|(status, _, _)| status != "True") {
                    pending.push(format!(
                        "{kind} {}",
                        o["metadata"]["name"].as_str().unwrap_or_default()
                    ));
                }
            }
        }
        if pending.is_empty() {
            break;
        }
        if Instant::now() > deadline {
            return Err(fail(format!("not ready after 30 s: {}", pending.join(", "))));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    say(
        out,
        "[6/6] What is in the cluster now (no secret value is ever shown):",
    );
    let sources = sources(&repo)?;
    let mut rows = table(&admin).await?;
    for r in &mut rows {
        r.source = sources
            .iter()
            .find(|(kind, name, _)| *kind == r.kind && *name == r.name)
            .map_or_else(|| "-".to_owned(), |(_, _, s)| s.clone());
        if r.source.starts_with("secretGenerator") {
            r.from = "SOPS dotenv, decrypted in the cluster".into();
        }
    }
    say(out, "");
    say(
        out,
        format!(
            "  {:>2}  {:<14} {:<28} {:<42} {:<23} {}",
            "#", "KIND", "NAME", "FROM", "STATE", "IN GIT (AND THE KUSTOMIZE BUILD)"
        ),
    );
    for (i, r) in rows.iter().enumerate() {
        say(
            out,
            format!(
                "  {:>2}  {:<14} {:<28} {:<42} {:<23} {}",
                i + 1,
                r.kind,
                r.name,
                r.from,
                r.state,
                r.source
            ),
        );
    }
    say(out, "");
    let deployment_rv = rows
        .iter()
        .find(|r| r.kind == "Deployment")
        .map(|r| r.resource_version)
        .ok_or_else(|| fail(format!("the Deployment web/{WEB} is missing")))?;
    let mounted = mounted_secrets(&admin).await?;
    let before: Vec<&str> = rows
        .iter()
        .filter(|r| r.kind == "Secret" && mounted.contains(&r.name))
        .filter(|r| r.resource_version < deployment_rv)
        .map(|r| r.name.as_str())
        .collect();
    say(
        out,
        format!(
            "  Written before the Deployment that mounts them (resourceVersions): {} of {}, {}.",
            before.len(),
            mounted.len(),
            before.join(", ")
        ),
    );
    if before.len() != mounted.len() {
        return Err(fail("a Secret was written after the Deployment that mounts it"));
    }

    // Drift: a Secret deleted by hand comes back, without waiting for the next poll.
    let secrets: Api<Secret> = Api::namespaced(admin.clone(), "web");
    secrets
        .delete(WEB_DB, &Default::default())
        .await
        .map_err(kube_err("deleting Secret web/demo-web-db"))?;
    let t = Instant::now();
    loop {
        if let Some(s) = secrets
            .get_opt(WEB_DB)
            .await
            .map_err(kube_err("reading demo-web-db"))?
            && s.metadata.deletion_timestamp.is_none()
        {
            break;
        }
        if t.elapsed() > Duration::from_secs(30) {
            return Err(fail(
                "the deleted Secret web/demo-web-db was not put back within 30 s",
            ));
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let heal_seconds = t.elapsed().as_secs_f64();
    say(
        out,
        format!(
            "  Self-heal: `kubectl delete secret {WEB_DB} -n web`, and the agent put it back in {heal_seconds:.2} s."
        ),
    );
    let agent_log = io("reading the agent's log", std::fs::read_to_string(&log))?;
    let leaked = VALUES.iter().filter(|v| agent_log.contains(**v)).count();
    say(
        out,
        format!(
            "  The agent's log ({} lines) holds {leaked} of the {} secret values planted in this demo.",
            agent_log.lines().count(),
            VALUES.len()
        ),
    );
    if leaked > 0 {
        return Err(fail("a secret value reached the agent's log"));
    }

    if opts.keep {
        say(out, "");
        say(out, "Everything keeps running. In another terminal:");
        say(out, format!("  export KUBECONFIG={}", cp.kubeconfig().display()));
        say(
            out,
            "  kubectl get syncs,secrets,externalsecrets,sealedsecrets -A",
        );
        say(
            out,
            format!(
                "  cargo run -q --bin lockstep -- status -A    # the agent's log: {}",
                log.display()
            ),
        );
        say(out, "Press Ctrl-C to stop.");
        let _ = tokio::signal::ctrl_c().await;
    }
    // A graceful stop, as Kubernetes does it: SIGTERM, then the lease is released.
    let _ = Command::new("kill")
        .args(["-TERM", &agent.child.id().to_string()])
        .status();
    let stopped = Instant::now();
    while stopped.elapsed() < Duration::from_secs(10) {
        if let Ok(Some(_)) = agent.child.try_wait() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    say(
        out,
        format!(
            "Done in {:.1} s; everything was stopped and removed.",
            t0.elapsed().as_secs_f64()
        ),
    );
    Ok(Report {
        rows,
        revision,
        sync_seconds,
        heal_seconds,
        agent_log,
    })
}

/// The Sync kind, without the agent's crate.
fn sync_resource() -> ApiResource {
    ApiResource::from_gvk(&GroupVersionKind::gvk("lockstep.dev", "v1alpha1", "Sync"))
}

/// `(status, reason, message)` of a condition in `status.conditions`.
fn condition(o: &Json, kind: &str) -> Option<(String, String, String)> {
    let c = o
        .pointer("/status/conditions")?
        .as_array()?
        .iter()
        .find(|c| c["type"] == kind)?;
    let s = |k: &str| c[k].as_str().unwrap_or_default().to_owned();
    Some((s("status"), s("reason"), s("message")))
}

/// The documents of `deploy/install.yaml` under `root`, as JSON.
pub fn install_documents(root: &Path) -> Result<Vec<Json>> {
    let install = io(
        "reading deploy/install.yaml",
        std::fs::read_to_string(root.join("deploy/install.yaml")),
    )?;
    lockstep_formats::yaml::load_documents(&install)
        .and_then(|d| d.iter().map(lockstep_formats::sops::stores::to_json).collect())
        .map_err(|e| fail(format!("deploy/install.yaml: {e}")))
}

/// The first container's `command` followed by its `args`, in the install's `kind` named
/// `name` (a Deployment, or a CronJob's job template).
pub fn container_command(docs: &[Json], kind: &str, name: &str) -> Result<Vec<String>> {
    let o = docs
        .iter()
        .find(|d| d["kind"] == kind && d.pointer("/metadata/name") == Some(&json!(name)))
        .ok_or_else(|| fail(format!("deploy/install.yaml has no {kind} {name}")))?;
    let pod = if kind == "CronJob" {
        "/spec/jobTemplate/spec/template/spec"
    } else {
        "/spec/template/spec"
    };
    let container = o
        .pointer(&format!("{pod}/containers/0"))
        .ok_or_else(|| fail(format!("deploy/install.yaml: {kind} {name} has no container")))?;
    let strings = |k: &str| {
        container
            .get(k)
            .and_then(Json::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(Json::as_str)
                    .map(str::to_owned)
                    .collect::<Vec<_>>()
            })
            .unwrap_or_default()
    };
    Ok([strings("command"), strings("args")].concat())
}

/// Waits until every CRD is established (the agent lists its kinds at start-up).
async fn wait_established(client: &kube::Client, docs: &[Json]) -> Result<()> {
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
    use kube::runtime::wait::{await_condition, conditions::is_crd_established};
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let names: Vec<&str> = docs
        .iter()
        .filter(|d| d["kind"] == "CustomResourceDefinition")
        .filter_map(|d| d.pointer("/metadata/name").and_then(Json::as_str))
        .collect();
    let all = async {
        for n in names {
            await_condition(crds.clone(), n, is_crd_established()).await?;
        }
        Ok::<_, kube::runtime::wait::Error>(())
    };
    tokio::time::timeout(Duration::from_secs(30), all)
        .await
        .map_err(|_| fail("the CRDs were not established within 30 s"))?
        .map_err(|e| fail(format!("waiting for the CRDs: {e}")))?;
    Ok(())
}

/// The decryption Secret `sops-age` and an active sealing key, from `keys-example/`, as an
/// operator would create them with kubectl.
async fn load_keys(client: &kube::Client, dir: &Path) -> Result<()> {
    let read = |name: &str| {
        io(
            format!("reading keys-example/{name}"),
            std::fs::read_to_string(dir.join(name)),
        )
    };
    let (age, key, cert) = (read("age.agekey")?, read("sealing.key")?, read("sealing.crt")?);
    let secrets: Api<Secret> = Api::namespaced(client.clone(), AGENT_NS);
    for s in [
        json!({ "metadata": { "name": "sops-age" }, "stringData": { "age.agekey": age } }),
        json!({
            "metadata": { "name": "sealing-key-example",
                          "labels": { "sealedsecrets.bitnami.com/sealed-secrets-key": "active" } },
            "type": "kubernetes.io/tls",
            "stringData": { "tls.key": key, "tls.crt": cert },
        }),
    ] {
        let s: Secret = serde_json::from_value(s).map_err(|e| fail(e.to_string()))?;
        secrets
            .create(&PostParams::default(), &s)
            .await
            .map_err(kube_err("creating a key Secret"))?;
    }
    Ok(())
}

/// `namespace/name` of every Secret the Deployment web/demo-web mounts.
async fn mounted_secrets(client: &kube::Client) -> Result<Vec<String>> {
    let d = Api::<Deployment>::namespaced(client.clone(), "web")
        .get(WEB)
        .await
        .map_err(kube_err("reading Deployment web/demo-web"))?;
    let spec = serde_json::to_value(d.spec).map_err(|e| fail(e.to_string()))?;
    let mut names = Vec::new();
    collect_secret_names(&spec, &mut names);
    names.sort();
    names.dedup();
    Ok(names.into_iter().map(|n| format!("web/{n}")).collect())
}

fn collect_secret_names(v: &Json, out: &mut Vec<String>) {
    match v {
        Json::Object(m) => {
            for (k, v) in m {
                match (k.as_str(), v) {
                    ("secretName", Json::String(n)) => out.push(n.clone()),
                    ("secretRef" | "secretKeyRef", Json::Object(r)) => {
                        if let Some(Json::String(n)) = r.get("name") {
                            out.push(n.clone());
                        }
                    }
                    _ => collect_secret_names(v, out),
                }
            }
        }
        Json::Array(a) => a.iter().for_each(|v| collect_secret_names(v, out)),
        _ => {}
    }
}

/// The rows of the result table, in the order of their last writes.
async fn table(client: &kube::Client) -> Result<Vec<Row>> {
    let rv = |o: &Json| {
        o.pointer("/metadata/resourceVersion")
            .and_then(Json::as_str)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0)
    };
    let stores = list_web(client, "external-secrets.io", "v1", "SecretStore").await?;
    let externals = list_web(client, "external-secrets.io", "v1", "ExternalSecret").await?;
    let mut rows = Vec::new();
    let name = |o: &Json| {
        format!(
            "web/{}",
            o.pointer("/metadata/name")
                .and_then(Json::as_str)
                .unwrap_or_default()
        )
    };
    let state = |o: &Json, kind: &str| {
        condition(o, kind).map_or_else(|| "-".to_owned(), |(s, r, _)| format!("{kind}={s} {r}"))
    };
    let sealed = list_web(client, "bitnami.com", "v1alpha1", "SealedSecret").await?;
    let named = |items: &[Json], n: &str| {
        items
            .iter()
            .any(|o| o.pointer("/metadata/name").and_then(Json::as_str) == Some(n))
    };
    for s in list_web(client, "", "v1", "Secret").await? {
        let own_name = s
            .pointer("/metadata/name")
            .and_then(Json::as_str)
            .unwrap_or_default();
        let owner = s.pointer("/metadata/ownerReferences/0");
        let owner_kind = owner.and_then(|o| o["kind"].as_str()).unwrap_or_default();
        let owner_name = owner.and_then(|o| o["name"].as_str()).unwrap_or_default();
        // A Sync's SealedSecret is unsealed by the Sync (no ownerReference: the Sync owns both).
        let from = match owner_kind {
            _ if owner_kind == "SealedSecret" || named(&sealed, own_name) => {
                "SealedSecret, unsealed in the cluster".to_owned()
            }
            "ExternalSecret" => {
                let store = externals
                    .iter()
                    .find(|e| e.pointer("/metadata/name").and_then(Json::as_str) == Some(owner_name))
                    .and_then(|e| e.pointer("/spec/secretStoreRef/name").and_then(Json::as_str))
                    .and_then(|n| {
                        stores
                            .iter()
                            .find(|s| s.pointer("/metadata/name").and_then(Json::as_str) == Some(n))
                    });
                match store.and_then(|s| s.pointer("/spec/provider")) {
                    Some(p) if p.get("aws").is_some() => "ExternalSecret, AWS Secrets Manager (moto)".into(),
                    Some(p) if p.get("vault").is_some() => "ExternalSecret, Vault API (OpenBao)".into(),
                    _ => format!("ExternalSecret {owner_name}"),
                }
            }
            _ => "SOPS file, decrypted in the cluster".to_owned(),
        };
        let keys = s.get("data").and_then(Json::as_object).map_or(0, |d| d.len());
        rows.push(Row {
            kind: "Secret".into(),
            name: name(&s),
            from,
            state: format!("{keys} key{}", if keys == 1 { "" } else { "s" }),
            source: String::new(),
            resource_version: rv(&s),
        });
    }
    for (kind, cond, items) in [
        ("SealedSecret", "Synced", &sealed),
        ("SecretStore", "Ready", &stores),
        ("ExternalSecret", "Ready", &externals),
    ] {
        for o in items {
            rows.push(Row {
                kind: kind.into(),
                name: name(o),
                from: "Git".into(),
                state: state(o, cond),
                source: String::new(),
                resource_version: rv(o),
            });
        }
    }
    let d = Api::<Deployment>::namespaced(client.clone(), "web")
        .get(WEB)
        .await
        .map_err(kube_err("reading Deployment web/demo-web"))?;
    let d = serde_json::to_value(d).map_err(|e| fail(e.to_string()))?;
    rows.push(Row {
        kind: "Deployment".into(),
        name: name(&d),
        from: "Git".into(),
        state: "applied (no nodes)".into(),
        source: String::new(),
        resource_version: rv(&d),
    });
    // The order of the data flow: SOPS, sealed, external, then the workload.
    let rank = |r: &Row| match (r.kind.as_str(), r.from.split(',').next().unwrap_or_default()) {
        ("Secret", "SOPS file") => 0,
        ("SealedSecret", _) => 1,
        ("Secret", "SealedSecret") => 2,
        ("SecretStore", _) => 3,
        ("ExternalSecret", _) => 4,
        ("Secret", _) => 5,
        _ => 6,
    };
    rows.sort_by(|a, b| (rank(a), &a.name).cmp(&(rank(b), &b.name)));
    Ok(rows)
}

/// Where each object of the Sync's path is in Git, as the agent renders it (the same rules and
/// kustomize helper; ciphertext only, nothing decrypted): (kind, `namespace/name`, source).
fn sources(repo: &Path) -> Result<Vec<(String, String, String)>> {
    let mut files = std::collections::BTreeMap::new();
    read_files(repo, repo, &mut files)?;
    let helper = lockstep_kustomize::Helper {
        origins: true,
        ..lockstep_kustomize::Helper::new(crate::peer("lockstep-kustomize"))
    };
    let mut out = Vec::new();
    let mut add = |o: &Json, source: String| {
        let f = |p: &str| o.pointer(p).and_then(Json::as_str).unwrap_or_default().to_owned();
        let ns = f("/metadata/namespace");
        let name = if ns.is_empty() {
            f("/metadata/name")
        } else {
            format!("{ns}/{}", f("/metadata/name"))
        };
        out.push((f("/kind"), name, source));
    };
    for unit in lockstep_kustomize::units(&files, SYNC_PATH) {
        match unit {
            lockstep_kustomize::Unit::File(f) => {
                let objects = match lockstep_kustomize::plain::plain(&f, &files[&f]) {
                    Ok(lockstep_kustomize::plain::Plain::Objects(o)) => {
                        o.into_iter().map(|(_, j)| j).collect()
                    }
                    Ok(lockstep_kustomize::plain::Plain::Sops(_)) => {
                        let text = String::from_utf8_lossy(&files[&f]).into_owned();
                        lockstep_formats::yaml::load_documents(&text)
                            .map_err(|e| fail(e.to_string()))?
                            .iter()
                            .filter_map(|d| lockstep_formats::sops::stores::to_json(d).ok())
                            .collect()
                    }
                    Ok(_) => Vec::new(),
                    Err(e) => return Err(fail(e.to_string())),
                };
                for o in &objects {
                    add(o, f.clone());
                }
            }
            lockstep_kustomize::Unit::Kustomization { dir } => {
                for b in lockstep_kustomize::build(&helper, &files, &dir).map_err(|e| fail(e.to_string()))? {
                    let source = match (&b.origin.path, &b.origin.configured_in) {
                        (Some(p), _) => format!("{p} ({dir})"),
                        (None, Some(_)) => format!("secretGenerator ({dir})"),
                        _ => dir.clone(),
                    };
                    add(&b.object, source);
                }
            }
        }
    }
    Ok(out)
}

fn read_files(root: &Path, dir: &Path, out: &mut std::collections::BTreeMap<String, Vec<u8>>) -> Result<()> {
    for e in io("reading the repository", std::fs::read_dir(dir))? {
        let p = io("reading the repository", e)?.path();
        if p.file_name().is_some_and(|n| n == ".git") {
            continue;
        }
        if p.is_dir() {
            read_files(root, &p, out)?;
        } else {
            let rel = p.strip_prefix(root).unwrap_or(&p).to_string_lossy().into_owned();
            out.insert(rel, io("reading a file", std::fs::read(&p))?);
        }
    }
    Ok(())
}

/// Every object of a kind in namespace `web`, as JSON.
async fn list_web(client: &kube::Client, group: &str, version: &str, kind: &str) -> Result<Vec<Json>> {
    let ar = ApiResource::from_gvk(&GroupVersionKind::gvk(group, version, kind));
    Api::<DynamicObject>::namespaced_with(client.clone(), "web", &ar)
        .list(&ListParams::default())
        .await
        .map(|l| {
            l.items
                .into_iter()
                .filter_map(|o| serde_json::to_value(o).ok())
                .collect()
        })
        .map_err(|e| fail(format!("listing {kind}s: {e}")))
}

/// Copies a directory tree.
pub fn copy_dir(from: &Path, to: &Path) -> Result<()> {
    io(format!("creating {}", to.display()), std::fs::create_dir_all(to))?;
    for e in io(format!("reading {}", from.display()), std::fs::read_dir(from))? {
        let e = io(format!("reading {}", from.display()), e)?;
        let target = to.join(e.file_name());
        if io("reading a file type", e.file_type())?.is_dir() {
            copy_dir(&e.path(), &target)?;
        } else {
            io(
                format!("copying {}", e.path().display()),
                std::fs::copy(e.path(), &target),
            )?;
        }
    }
    Ok(())
}
