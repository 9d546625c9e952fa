//! `lockstep install`: the in-cluster install of `deploy/` (namespace, CRDs, least-privilege
//! RBAC, the agent's Deployment, Service, NetworkPolicies, PodDisruptionBudget and the
//! key-rotation CronJobs). `--export` prints `deploy/install.yaml`, byte for byte, which is
//! what `kubectl apply -k deploy/` applies; without it the same objects are applied with
//! server-side apply.

use std::path::PathBuf;

use clap::Args;

use crate::{CliError, Result};

/// `deploy/install.yaml`, built into the binary.
pub const MANIFESTS: &str = include_str!("../../deploy/install.yaml");
/// `deploy/cluster-admin/binding.yaml`: cluster-admin for the agent (opt-in).
pub const CLUSTER_ADMIN: &str = include_str!("../../deploy/cluster-admin/binding.yaml");
/// The image the manifests name (the agent's and the rotation jobs').
pub const IMAGE: &str = "lockstep:0.1.0";
/// The field manager of `lockstep install`.
pub const FIELD_MANAGER: &str = "lockstep-install";

/// `lockstep install`.
#[derive(Args, Debug)]
pub struct InstallArgs {
    /// Print the manifests instead of applying them (for `kubectl apply -f -` or a Git
    /// repository).
    #[arg(long)]
    pub export: bool,
    /// Also bind cluster-admin to the agent, so that Syncs may apply cluster-scoped objects
    /// (CRDs, ClusterRoles, webhooks). Without it they may apply Namespaces and the usual
    /// namespaced kinds only.
    #[arg(long)]
    pub cluster_admin: bool,
    /// The image of the agent and of the rotation jobs (built from `deploy/Dockerfile`).
    #[arg(long, default_value = IMAGE)]
    pub image: String,
    /// kubeconfig file (default: `KUBECONFIG`, then `~/.kube/config`).
    #[arg(long, env = "KUBECONFIG")]
    pub kubeconfig: Option<PathBuf>,
    /// kubeconfig context.
    #[arg(long)]
    pub context: Option<String>,
}

/// The install manifests with `image` in place of [`IMAGE`], plus the cluster-admin binding
/// when asked (pure). An image reference with characters outside the OCI reference grammar is
/// refused, so it cannot change the YAML around it.
pub fn manifests(cluster_admin: bool, image: &str) -> Result<String> {
    let valid = !image.is_empty()
        && image
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '/' | ':' | '@'));
    if !valid {
        return Err(CliError::Usage(format!(
            "--image {image:?}: not an image reference (letters, digits and . _ - / : @ only)"
        )));
    }
    let mut out = MANIFESTS.replace(&format!("image: {IMAGE}\n"), &format!("image: {image}\n"));
    if cluster_admin {
        out.push_str("---\n");
        out.push_str(CLUSTER_ADMIN);
    }
    Ok(out)
}

/// Runs `lockstep install`.
pub fn run(a: InstallArgs) -> Result<()> {
    let text = manifests(a.cluster_admin, &a.image)?;
    if a.export {
        return crate::stdout_write(text.as_bytes());
    }
    let applied = apply(&text, a.kubeconfig, a.context)?;
    eprintln!(
        "Applied {} objects (field manager {FIELD_MANAGER}). Watch the agent start with\n  kubectl -n lockstep-system rollout status deployment/lockstep-agent",
        applied.len()
    );
    Ok(())
}

/// `(apiVersion, kind, namespace, name)` of a manifest, or why it is not one (pure).
#[cfg(feature = "cluster")]
fn identify(doc: &serde_json::Value, index: usize) -> Result<(String, String, Option<String>, String)> {
    let s = |p: &str| {
        doc.pointer(p)
            .and_then(serde_json::Value::as_str)
            .map(str::to_owned)
    };
    match (s("/apiVersion"), s("/kind"), s("/metadata/name")) {
        (Some(v), Some(k), Some(n)) => Ok((v, k, s("/metadata/namespace"), n)),
        _ => Err(CliError::Usage(format!(
            "install manifests, document {}: apiVersion, kind and metadata.name are required",
            index + 1
        ))),
    }
}

/// Applies every document of `text` with server-side apply, in order (the namespace and the
/// CRDs come first); returns `Kind namespace/name` of each.
#[cfg(feature = "cluster")]
pub fn apply(text: &str, kubeconfig: Option<PathBuf>, context: Option<String>) -> Result<Vec<String>> {
    use kube::api::{Api, DynamicObject, GroupVersionKind, Patch, PatchParams};
    use kube::discovery::Scope;

    let docs = lockstep_formats::yaml::load_documents(text)?
        .iter()
        .map(lockstep_formats::sops::stores::to_json)
        .collect::<std::result::Result<Vec<_>, _>>()?;
    crate::cluster::runtime()?.block_on(async {
        let client = crate::cluster::client_for(kubeconfig, context).await?;
        let mut kinds = std::collections::BTreeMap::new();
        let mut done = Vec::new();
        for (i, doc) in docs.iter().enumerate() {
            let (version, kind, namespace, name) = identify(doc, i)?;
            let (group, v) = version.rsplit_once('/').unwrap_or(("", version.as_str()));
            let gvk = GroupVersionKind::gvk(group, v, &kind);
            let (ar, caps) = match kinds.entry(format!("{version}/{kind}")) {
                std::collections::btree_map::Entry::Occupied(o) => o.into_mut(),
                std::collections::btree_map::Entry::Vacant(v) => v.insert(
                    kube::discovery::pinned_kind(&client, &gvk)
                        .await
                        .map_err(|e| CliError::Cluster(format!("{version} {kind}: {e}")))?,
                ),
            };
            let api: Api<DynamicObject> = match (&caps.scope, &namespace) {
                (Scope::Namespaced, Some(ns)) => Api::namespaced_with(client.clone(), ns, ar),
                _ => Api::all_with(client.clone(), ar),
            };
            let what = match &namespace {
                Some(ns) => format!("{kind} {ns}/{name}"),
                None => format!("{kind} {name}"),
            };
            api.patch(
                &name,
                &PatchParams::apply(FIELD_MANAGER).force(),
                &Patch::Apply(doc),
            )
            .await
            .map_err(|e| CliError::Cluster(format!("applying {what}: {e}")))?;
            eprintln!("applied {what}");
            done.push(what);
        }
        Ok(done)
    })
}

/// Applies the manifests (offline build: unavailable).
#[cfg(not(feature = "cluster"))]
pub fn apply(_text: &str, _kubeconfig: Option<PathBuf>, _context: Option<String>) -> Result<Vec<String>> {
    Err(CliError::Usage(
        "this build of lockstep is offline-only (built without the `cluster` feature): use --export".into(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_image_is_replaced_everywhere_and_checked() {
        let plain = manifests(false, IMAGE).unwrap();
        assert_eq!(plain, MANIFESTS);
        let n = MANIFESTS.matches(&format!("image: {IMAGE}\n")).count();
        assert_eq!(n, 3, "the agent and two CronJobs");
        let mine = manifests(false, "registry.example.com/lockstep@sha256:0123").unwrap();
        assert_eq!(
            mine.matches("image: registry.example.com/lockstep@sha256:0123\n")
                .count(),
            n
        );
        assert!(!mine.contains(&format!("image: {IMAGE}")));
        let err = manifests(false, "x\n  privileged: true").unwrap_err().to_string();
        assert!(
            err.starts_with("--image \"x\\n  privileged: true\": not an image reference"),
            "{err}"
        );
    }

    #[test]
    fn cluster_admin_is_opt_in() {
        assert!(!manifests(false, IMAGE).unwrap().contains("name: cluster-admin"));
        let with = manifests(true, IMAGE).unwrap();
        assert!(with.ends_with(CLUSTER_ADMIN));
        assert!(with.contains("name: cluster-admin"));
    }
}
