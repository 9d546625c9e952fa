//! Commands for people running Lockstep: `status`, `history`, `diff`, `suspend`, `resume`,
//! `reconcile`. They read and annotate `Sync` objects (`lockstep.dev/v1alpha1`) through the API
//! server with the user's own credentials, so RBAC decides who may do what; `diff` asks the
//! agent (through the API server's service proxy, as `seal --fetch-cert` does), because only
//! the agent holds the decryption keys. Nothing here shows a secret value.

use std::path::PathBuf;

use clap::{Args, Subcommand};
use serde_json::Value as Json;

use crate::{CliError, Result};

pub use lockstep_formats::names::RECONCILE_ANNOTATION;

/// Where the Syncs are and how to reach the cluster.
#[derive(Args, Clone, Debug)]
pub struct Target {
    /// The Syncs' namespace (default: the kubeconfig context's).
    #[arg(short, long)]
    pub namespace: Option<String>,
    /// kubeconfig file (default: `KUBECONFIG`, `~/.kube/config`, or in-cluster).
    #[arg(long, env = "KUBECONFIG")]
    pub kubeconfig: Option<PathBuf>,
    /// kubeconfig context.
    #[arg(long)]
    pub context: Option<String>,
}

/// `lockstep status|history|diff|suspend|resume|reconcile`.
#[derive(Subcommand, Debug)]
pub enum OpsCommand {
    /// A table of Syncs: ready, healthy, revision, and what is wrong.
    Status {
        /// Where.
        #[command(flatten)]
        target: Target,
        /// Every namespace.
        #[arg(short = 'A', long)]
        all_namespaces: bool,
    },
    /// The last syncs of one Sync, newest first.
    History {
        /// The Sync.
        sync: String,
        /// Where.
        #[command(flatten)]
        target: Target,
    },
    /// What a sync would change now (secret values redacted); exits 1 when something would.
    Diff {
        /// The Sync.
        sync: String,
        /// Where.
        #[command(flatten)]
        target: Target,
        /// Namespace of the agent's Service.
        #[arg(
            long,
            env = "SEALED_SECRETS_CONTROLLER_NAMESPACE",
            default_value = "lockstep-system"
        )]
        controller_namespace: String,
        /// Name of the agent's Service.
        #[arg(
            long,
            env = "SEALED_SECRETS_CONTROLLER_NAME",
            default_value = "lockstep-agent"
        )]
        controller_name: String,
    },
    /// Stop syncing a Sync (drift is no longer healed either).
    Suspend {
        /// The Sync.
        sync: String,
        /// Where.
        #[command(flatten)]
        target: Target,
    },
    /// Sync a suspended Sync again, starting now.
    Resume {
        /// The Sync.
        sync: String,
        /// Where.
        #[command(flatten)]
        target: Target,
        /// How to wait.
        #[command(flatten)]
        wait: Wait,
    },
    /// Sync now instead of at the next poll.
    Reconcile {
        /// The Sync.
        sync: String,
        /// Where.
        #[command(flatten)]
        target: Target,
        /// How to wait.
        #[command(flatten)]
        wait: Wait,
    },
}

/// Waiting for the agent to act on a request.
#[derive(Args, Clone, Debug)]
pub struct Wait {
    /// Return once the request is made, without waiting for the sync.
    #[arg(long)]
    pub no_wait: bool,
    /// How long to wait for the sync, as a Go duration.
    #[arg(long, default_value = "5m")]
    pub timeout: String,
}

/// One row of `status`, from a Sync (pure).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Row {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// `Ready` condition's status (`-` when absent; `Suspended` when suspended).
    pub ready: String,
    /// `Healthy` condition's status (`-` when absent).
    pub healthy: String,
    /// The last applied revision, its commit shortened.
    pub revision: String,
    /// What is wrong: the `Ready` message when not ready, else the `Healthy` one when not
    /// healthy.
    pub message: String,
}

fn cond<'a>(s: &'a Json, type_: &str) -> Option<&'a Json> {
    s.pointer("/status/conditions")?
        .as_array()?
        .iter()
        .find(|c| c.get("type").and_then(Json::as_str) == Some(type_))
}

fn field<'a>(c: Option<&'a Json>, f: &str) -> &'a str {
    c.and_then(|c| c.get(f)).and_then(Json::as_str).unwrap_or("")
}

/// `main@sha1:0123456789abcdef…` → `main@sha1:0123456789ab`.
fn short(rev: &str) -> String {
    match rev.split_once("@sha1:") {
        Some((r, c)) => format!("{r}@sha1:{}", &c[..c.len().min(12)]),
        None => rev.to_owned(),
    }
}

impl Row {
    /// The row of a Sync (its JSON).
    pub fn of(s: &Json) -> Self {
        let text = |p: &str| s.pointer(p).and_then(Json::as_str).unwrap_or("").to_owned();
        let (ready, healthy) = (cond(s, "Ready"), cond(s, "Healthy"));
        let suspended = s.pointer("/spec/suspend").and_then(Json::as_bool) == Some(true);
        let status = |c: Option<&Json>| match field(c, "status") {
            "" => "-".to_owned(),
            v => v.to_owned(),
        };
        let message = if field(ready, "status") != "True" {
            field(ready, "message")
        } else if field(healthy, "status") != "True" {
            field(healthy, "message")
        } else {
            ""
        };
        Self {
            namespace: text("/metadata/namespace"),
            name: text("/metadata/name"),
            ready: if suspended {
                "Suspended".into()
            } else {
                status(ready)
            },
            healthy: status(healthy),
            revision: short(&text("/status/lastAppliedRevision")),
            message: message.to_owned(),
        }
    }
}

/// Columns padded to their widest cell, two spaces apart, as `kubectl get` prints them.
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for r in rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let n = cells.len();
        let mut out = String::new();
        for (i, (c, w)) in cells.into_iter().zip(&widths).enumerate() {
            out.push_str(c);
            if i + 1 < n {
                out.push_str(&" ".repeat(w - c.chars().count() + 2));
            }
        }
        out.trim_end().to_owned() + "\n"
    };
    let mut out = line(header.to_vec());
    for r in rows {
        out.push_str(&line(r.iter().map(String::as_str).collect()));
    }
    out
}

/// `lockstep diff`'s text from the agent's report (pure); the number of changes.
pub fn diff_text(report: &Json) -> (String, usize) {
    let changes = report
        .get("changes")
        .and_then(Json::as_array)
        .cloned()
        .unwrap_or_default();
    let mut out = String::new();
    for c in &changes {
        let action = field(Some(c), "action");
        let sign = match action {
            "created" => '+',
            "pruned" => '-',
            _ => '~',
        };
        out.push_str(&format!("{sign} {} ({action})\n", field(Some(c), "object")));
        out.push_str(field(Some(c), "diff"));
    }
    let unchanged = report.get("unchanged").and_then(Json::as_u64).unwrap_or(0);
    out.push_str(&format!(
        "{}: {} to change, {unchanged} unchanged\n",
        field(Some(report), "revision"),
        changes.len()
    ));
    (out, changes.len())
}

/// Runs an operations command, printing to standard output.
pub fn run(cmd: OpsCommand) -> Result<()> {
    run_to(cmd, &mut std::io::stdout().lock())
}

/// Runs an operations command, writing its output (tables, diffs) to `out`; progress and
/// errors go to standard error.
pub fn run_to(cmd: OpsCommand, out: &mut dyn std::io::Write) -> Result<()> {
    imp::run(cmd, out)
}

#[cfg_attr(not(feature = "cluster"), allow(dead_code))] // the offline build prints nothing
fn emit(out: &mut dyn std::io::Write, text: &str) -> Result<()> {
    out.write_all(text.as_bytes())
        .and_then(|()| out.flush())
        .map_err(|source| CliError::Io {
            path: "standard output".into(),
            source,
        })
}

#[cfg(feature = "cluster")]
mod imp {
    use super::*;
    use crate::cluster;
    use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams};

    fn syncs(client: &kube::Client, namespace: Option<&str>) -> Api<DynamicObject> {
        let ar = ApiResource::from_gvk_with_plural(
            &GroupVersionKind::gvk(
                lockstep_formats::names::GROUP,
                lockstep_formats::names::SYNC_VERSION,
                "Sync",
            ),
            "syncs",
        );
        match namespace {
            Some(ns) => Api::namespaced_with(client.clone(), ns, &ar),
            None => Api::all_with(client.clone(), &ar),
        }
    }

    fn kerr(what: String) -> impl FnOnce(kube::Error) -> CliError {
        move |e| match e {
            kube::Error::Api(s) => CliError::Cluster(format!("{what}: {} ({})", s.message, s.code)),
            e => CliError::Cluster(format!("{what}: {e}")),
        }
    }

    async fn connect(t: &Target) -> Result<(kube::Client, String)> {
        let client = cluster::client_for(t.kubeconfig.clone(), t.context.clone()).await?;
        let ns = t
            .namespace
            .clone()
            .unwrap_or_else(|| client.default_namespace().to_owned());
        Ok((client, ns))
    }

    fn json(o: DynamicObject) -> Json {
        serde_json::to_value(o).unwrap_or_default()
    }

    pub(super) fn run(cmd: OpsCommand, out: &mut dyn std::io::Write) -> Result<()> {
        cluster::runtime()?.block_on(async move {
            match cmd {
                OpsCommand::Status {
                    target,
                    all_namespaces,
                } => status(&target, all_namespaces, out).await,
                OpsCommand::History { sync, target } => history(&target, &sync, out).await,
                OpsCommand::Diff {
                    sync,
                    target,
                    controller_namespace,
                    controller_name,
                } => diff(&target, &sync, controller_namespace, controller_name, out).await,
                OpsCommand::Suspend { sync, target } => suspend(&target, &sync, true, None).await,
                OpsCommand::Resume { sync, target, wait } => suspend(&target, &sync, false, Some(wait)).await,
                OpsCommand::Reconcile { sync, target, wait } => {
                    let (client, ns) = connect(&target).await?;
                    reconcile(&client, &ns, &sync, &wait).await
                }
            }
        })
    }

    async fn status(t: &Target, all: bool, out: &mut dyn std::io::Write) -> Result<()> {
        let (client, ns) = connect(t).await?;
        let api = syncs(&client, (!all).then_some(ns.as_str()));
        let list = api.list(&Default::default()).await.map_err(kerr(format!(
            "listing Syncs in {}",
            if all { "all namespaces" } else { &ns }
        )))?;
        if list.items.is_empty() {
            eprintln!(
                "No Syncs found{}.",
                if all {
                    String::new()
                } else {
                    format!(" in namespace {ns}")
                }
            );
            return Ok(());
        }
        let rows: Vec<Vec<String>> = list
            .items
            .into_iter()
            .map(|s| {
                let r = Row::of(&json(s));
                vec![r.namespace, r.name, r.ready, r.healthy, r.revision, r.message]
            })
            .collect();
        emit(
            out,
            &table(
                &["NAMESPACE", "NAME", "READY", "HEALTHY", "REVISION", "MESSAGE"],
                &rows,
            ),
        )
    }

    async fn get(client: &kube::Client, ns: &str, name: &str) -> Result<Json> {
        syncs(client, Some(ns))
            .get(name)
            .await
            .map(json)
            .map_err(kerr(format!("Sync {ns}/{name}")))
    }

    async fn history(t: &Target, name: &str, out: &mut dyn std::io::Write) -> Result<()> {
        let (client, ns) = connect(t).await?;
        let s = get(&client, &ns, name).await?;
        let entries = s
            .pointer("/status/history")
            .and_then(Json::as_array)
            .cloned()
            .unwrap_or_default();
        if entries.is_empty() {
            eprintln!("Sync {ns}/{name} has not synced yet.");
            return Ok(());
        }
        let n = |e: &Json, f: &str| e.get(f).and_then(Json::as_u64).unwrap_or(0).to_string();
        let rows: Vec<Vec<String>> = entries
            .iter()
            .map(|e| {
                vec![
                    field(Some(e), "time").to_owned(),
                    short(field(Some(e), "revision")),
                    field(Some(e), "result").to_owned(),
                    n(e, "applied"),
                    n(e, "pruned"),
                ]
            })
            .collect();
        emit(
            out,
            &table(&["TIME", "REVISION", "RESULT", "APPLIED", "PRUNED"], &rows),
        )
    }

    async fn diff(
        t: &Target,
        name: &str,
        controller_namespace: String,
        controller_name: String,
        out: &mut dyn std::io::Write,
    ) -> Result<()> {
        let (client, ns) = connect(t).await?;
        let agent = cluster::Controller {
            namespace: controller_namespace,
            name: controller_name,
            kubeconfig: t.kubeconfig.clone(),
            context: t.context.clone(),
        };
        let body = serde_json::to_vec(&serde_json::json!({ "namespace": ns, "name": name }))
            .map_err(|e| CliError::Cluster(e.to_string()))?;
        let (status, text) = cluster::post(&client, &agent, "/v1/diff", body).await?;
        if status != 200 {
            return Err(CliError::Cluster(format!(
                "diff of Sync {ns}/{name}: HTTP {status}: {}",
                text.trim()
            )));
        }
        let report: Json = serde_json::from_str(&text)
            .map_err(|e| CliError::Cluster(format!("the agent's diff is not JSON: {e}")))?;
        let (text, n) = diff_text(&report);
        emit(out, &text)?;
        if n > 0 {
            return Err(CliError::Differences(n));
        }
        Ok(())
    }

    async fn suspend(t: &Target, name: &str, suspend: bool, wait: Option<Wait>) -> Result<()> {
        let (client, ns) = connect(t).await?;
        let patch =
            serde_json::json!({ "spec": { "suspend": if suspend { Json::Bool(true) } else { Json::Null } } });
        syncs(&client, Some(&ns))
            .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .map_err(kerr(format!("Sync {ns}/{name}")))?;
        if suspend {
            eprintln!("Sync {ns}/{name} suspended");
            return Ok(());
        }
        eprintln!("Sync {ns}/{name} resumed");
        match wait {
            Some(w) => reconcile(&client, &ns, name, &w).await,
            None => Ok(()),
        }
    }

    async fn reconcile(client: &kube::Client, ns: &str, name: &str, wait: &Wait) -> Result<()> {
        let timeout = lockstep_formats::duration::parse(&wait.timeout)
            .ok_or_else(|| CliError::Usage(format!("--timeout {:?} is not a Go duration", wait.timeout)))?;
        let at = lockstep_formats::sops::now_rfc3339_nanos();
        let patch = serde_json::json!({ "metadata": { "annotations": { RECONCILE_ANNOTATION: at } } });
        let api = syncs(client, Some(ns));
        api.patch(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .map_err(kerr(format!("Sync {ns}/{name}")))?;
        eprintln!("Sync {ns}/{name}: reconcile requested");
        if wait.no_wait {
            return Ok(());
        }
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let s = get(client, ns, name).await?;
            if s.pointer("/status/lastHandledReconcileAt").and_then(Json::as_str) == Some(at.as_str()) {
                let ready = cond(&s, "Ready");
                let rev = short(
                    s.pointer("/status/lastAttemptedRevision")
                        .and_then(Json::as_str)
                        .unwrap_or(""),
                );
                return match field(ready, "status") {
                    "True" => {
                        eprintln!("Sync {ns}/{name}: {rev} applied");
                        Ok(())
                    }
                    _ => Err(CliError::Cluster(format!(
                        "Sync {ns}/{name}: {}: {}",
                        field(ready, "reason"),
                        field(ready, "message")
                    ))),
                };
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(CliError::Cluster(format!(
                    "Sync {ns}/{name}: the agent did not act on the request within {} s (is it running? is the Sync suspended?)",
                    timeout.as_secs()
                )));
            }
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        }
    }
}

#[cfg(not(feature = "cluster"))]
mod imp {
    use super::*;

    pub(super) fn run(_cmd: OpsCommand, _out: &mut dyn std::io::Write) -> Result<()> {
        Err(CliError::Usage(
            "this build of lockstep is offline-only (built without the `cluster` feature)".into(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn status_rows_say_what_is_wrong() {
        let s = json!({ "metadata": { "namespace": "ops", "name": "apps" },
            "status": { "lastAppliedRevision": "main@sha1:0123456789abcdef0123", "conditions": [
                { "type": "Ready", "status": "True", "message": "Applied revision main@sha1:0123" },
                { "type": "Healthy", "status": "Unknown", "message": "Deployment ops/web InProgress (LessReady)" } ] } });
        let r = Row::of(&s);
        assert_eq!(r.revision, "main@sha1:0123456789ab");
        assert_eq!((r.ready.as_str(), r.healthy.as_str()), ("True", "Unknown"));
        assert_eq!(r.message, "Deployment ops/web InProgress (LessReady)");
        let s = json!({ "metadata": { "namespace": "ops", "name": "apps" }, "spec": { "suspend": true } });
        let r = Row::of(&s);
        assert_eq!(
            (r.ready.as_str(), r.healthy.as_str(), r.revision.as_str()),
            ("Suspended", "-", "")
        );
        let t = table(&["A", "BB"], &[vec!["long".into(), "x".into()]]);
        assert_eq!(t, "A     BB\nlong  x\n");
    }

    #[test]
    fn diff_text_counts_changes() {
        let report = json!({ "revision": "main@sha1:abc", "unchanged": 2, "changes": [
            { "object": "ConfigMap ns/a", "action": "configured", "diff": "-x\n+y\n" },
            { "object": "ConfigMap ns/b", "action": "pruned", "diff": "" } ] });
        let (text, n) = diff_text(&report);
        assert_eq!(n, 2);
        assert!(
            text.starts_with("~ ConfigMap ns/a (configured)\n-x\n+y\n- ConfigMap ns/b (pruned)\n"),
            "{text}"
        );
        assert!(text.ends_with("main@sha1:abc: 2 to change, 2 unchanged\n"));
    }
}
