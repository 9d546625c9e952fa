//! `lockstep import flux|argocd PATH`: the Flux `GitRepository` and `Kustomization` objects, or
//! the Argo CD `Application`s, of a repository, translated into `Sync`s by the same code the
//! agent's `--accept` front-ends run ([`lockstep_api::flux::translate`],
//! [`lockstep_api::argocd::translate`]), for teams that would rather switch kinds. The
//! Syncs go to standard output as one YAML stream; the report (per Kustomization: what it
//! became, what changes meaning, what is not acted on) to standard error.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use clap::{Args, ValueEnum};
use lockstep_api::flux::translate::{self, Translation};
use lockstep_api::flux::{GitRepository, Kustomization};
use lockstep_formats::sops::stores;
use serde_json::Value as Json;

use crate::{CliError, Result, stdout_write};

/// Whose objects.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum From {
    /// Flux: `source.toolkit.fluxcd.io` GitRepository, `kustomize.toolkit.fluxcd.io`
    /// Kustomization.
    Flux,
    /// Argo CD: `argoproj.io` Application.
    Argocd,
}

/// `lockstep import`
#[derive(Args, Debug)]
pub struct ImportArgs {
    /// Whose objects to translate.
    #[arg(value_enum)]
    pub from: From,
    /// A repository (or a directory of it): every YAML file under it is read.
    #[arg(value_name = "PATH")]
    pub path: PathBuf,
    /// The namespace of objects that name none (default: `flux-system` for Flux, `argocd` for
    /// Argo CD, where their installs put them).
    #[arg(long)]
    pub default_namespace: Option<String>,
}

/// What changes meaning for every Kustomization, however it is written.
pub const MEANING: [&str; 3] = [
    "drift is put back within seconds, not at spec.interval",
    "deleting the Sync leaves its objects in place (Flux's deletionPolicy Orphan)",
    "the GitRepository's interval is the Sync's poll interval",
];

/// Runs `lockstep import`.
pub fn run(a: ImportArgs) -> Result<()> {
    let (out, report) = match a.from {
        From::Flux => import(&a.path, a.default_namespace.as_deref().unwrap_or("flux-system"))?,
        From::Argocd => import_argocd(&a.path, a.default_namespace.as_deref().unwrap_or("argocd"))?,
    };
    eprint!("{report}");
    stdout_write(out.as_bytes())
}

/// The Syncs (YAML) and the report for the objects under `root`.
pub fn import(root: &Path, default_ns: &str) -> Result<(String, String)> {
    let mut repos: BTreeMap<(String, String), GitRepository> = BTreeMap::new();
    let mut kustomizations: Vec<(String, Kustomization)> = Vec::new();
    for (rel, json) in objects(root, default_ns)? {
        let api = json
            .get("apiVersion")
            .and_then(Json::as_str)
            .unwrap_or_default()
            .to_owned();
        let kind = json
            .get("kind")
            .and_then(Json::as_str)
            .unwrap_or_default()
            .to_owned();
        let group = api.split('/').next().unwrap_or_default();
        let bad = |e: serde_json::Error| CliError::Usage(format!("{rel}: {kind}: {e}"));
        match (group, kind.as_str()) {
            ("source.toolkit.fluxcd.io", "GitRepository") => {
                let r: GitRepository = serde_json::from_value(json).map_err(bad)?;
                let key = (
                    r.metadata.namespace.clone().unwrap_or_default(),
                    r.metadata.name.clone().unwrap_or_default(),
                );
                repos.insert(key, r);
            }
            ("kustomize.toolkit.fluxcd.io", "Kustomization") => {
                kustomizations.push((rel.clone(), serde_json::from_value(json).map_err(bad)?));
            }
            _ => {}
        }
    }
    let mut syncs = Vec::new();
    let mut report = String::new();
    for (file, k) in &kustomizations {
        let (ns, name) = (
            k.metadata.namespace.clone().unwrap_or_default(),
            k.metadata.name.clone().unwrap_or_default(),
        );
        if k.spec.source_ref.kind != "GitRepository" {
            let e = translate::TranslateError::SourceKind(k.spec.source_ref.kind.clone());
            report.push_str(&format!(
                "Kustomization {ns}/{name} ({file}): not translated: {e}\n"
            ));
            continue;
        }
        let source_ns = k.spec.source_ref.namespace.clone().unwrap_or_else(|| ns.clone());
        let Some(repo) = repos.get(&(source_ns.clone(), k.spec.source_ref.name.clone())) else {
            report.push_str(&format!(
                "Kustomization {ns}/{name} ({file}): not translated: {} {source_ns}/{} is not in {}\n",
                k.spec.source_ref.kind,
                k.spec.source_ref.name,
                root.display()
            ));
            continue;
        };
        match translate::translate(k, repo) {
            Ok(Translation { spec, unsupported }) => {
                report.push_str(&format!("Kustomization {ns}/{name} ({file}): Sync {ns}/{name}\n"));
                for m in MEANING {
                    report.push_str(&format!("  changes meaning: {m}\n"));
                }
                for u in unsupported {
                    report.push_str(&format!("  not acted on: {u}\n"));
                }
                let sync = serde_json::json!({
                    "apiVersion": "lockstep.dev/v1alpha1",
                    "kind": "Sync",
                    "metadata": { "name": name, "namespace": ns },
                    "spec": spec,
                });
                syncs.push(stores::from_json(sync));
            }
            Err(e) => report.push_str(&format!(
                "Kustomization {ns}/{name} ({file}): not translated: {e}\n"
            )),
        }
    }
    if kustomizations.is_empty() {
        report.push_str(&format!("no Flux Kustomization under {}\n", root.display()));
    }
    let out = if syncs.is_empty() {
        String::new()
    } else {
        lockstep_formats::yaml::emit_documents(&syncs)?
    };
    Ok((out, report))
}

/// The objects of every YAML file under `root` (with the file, relative), namespaced to
/// `default_ns` when they name none; files that are not YAML objects are left out.
fn objects(root: &Path, default_ns: &str) -> Result<Vec<(String, Json)>> {
    let mut files = Vec::new();
    walk(root, &mut files)?;
    let mut out = Vec::new();
    for file in files {
        let rel = file.strip_prefix(root).unwrap_or(&file).display().to_string();
        let text = std::fs::read_to_string(&file).map_err(|source| CliError::Io {
            path: file.clone(),
            source,
        })?;
        let Ok(docs) = lockstep_formats::yaml::load_documents(&text) else {
            continue;
        };
        for doc in docs {
            let Ok(mut json) = stores::to_json(&doc) else {
                continue;
            };
            if json.pointer("/metadata/namespace").is_none()
                && let Some(md) = json.get_mut("metadata").and_then(Json::as_object_mut)
            {
                md.insert("namespace".into(), Json::String(default_ns.to_owned()));
            }
            out.push((rel.clone(), json));
        }
    }
    Ok(out)
}

/// The Syncs (YAML) and the report for the Argo CD Applications under `root` (repository
/// credentials are not looked up: a private repository's Sync needs its `secretRef` added).
pub fn import_argocd(root: &Path, default_ns: &str) -> Result<(String, String)> {
    let mut syncs = Vec::new();
    let mut report = String::new();
    for (file, json) in objects(root, default_ns)? {
        let api = json.get("apiVersion").and_then(Json::as_str).unwrap_or_default();
        let kind = json.get("kind").and_then(Json::as_str).unwrap_or_default();
        if !(api.starts_with("argoproj.io/") && kind == "Application") {
            continue;
        }
        let app: lockstep_api::argocd::Application =
            serde_json::from_value(json).map_err(|e| CliError::Usage(format!("{file}: Application: {e}")))?;
        let (ns, name) = (
            app.metadata.namespace.clone().unwrap_or_default(),
            app.metadata.name.clone().unwrap_or_default(),
        );
        match lockstep_api::argocd::translate::translate(&app, None) {
            Ok(Translation { spec, unsupported }) => {
                report.push_str(&format!("Application {ns}/{name} ({file}): Sync {ns}/{name}\n"));
                for u in unsupported {
                    report.push_str(&format!("  not acted on: {u}\n"));
                }
                syncs.push(stores::from_json(serde_json::json!({
                    "apiVersion": "lockstep.dev/v1alpha1",
                    "kind": "Sync",
                    "metadata": { "name": name, "namespace": ns },
                    "spec": spec,
                })));
            }
            Err(e) => report.push_str(&format!(
                "Application {ns}/{name} ({file}): not translated: {e}\n"
            )),
        }
    }
    if syncs.is_empty() && report.is_empty() {
        report.push_str(&format!("no Argo CD Application under {}\n", root.display()));
    }
    let out = if syncs.is_empty() {
        String::new()
    } else {
        lockstep_formats::yaml::emit_documents(&syncs)?
    };
    Ok((out, report))
}

/// Every `.yaml`/`.yml` file under `dir`, `.git` and hidden directories left out, in order.
fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    let io = |source| CliError::Io {
        path: dir.to_owned(),
        source,
    };
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .map_err(io)?
        .filter_map(|e| e.ok())
        .collect();
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let p = e.path();
        let hidden = e.file_name().to_string_lossy().starts_with('.');
        match e.file_type() {
            Ok(t) if t.is_dir() && !hidden => walk(&p, out)?,
            Ok(t) if t.is_file() && p.extension().is_some_and(|x| x == "yaml" || x == "yml") => out.push(p),
            _ => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn a_flux_repository_becomes_syncs_with_a_report() {
        let dir = tempfile::tempdir().unwrap();
        let w = |f: &str, t: &str| {
            let p = dir.path().join(f);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, t).unwrap();
        };
        w(
            "clusters/prod/flux-system/gotk-sync.yaml",
            "apiVersion: source.toolkit.fluxcd.io/v1\nkind: GitRepository\nmetadata:\n  name: flux-system\n  namespace: flux-system\nspec:\n  interval: 1m0s\n  ref:\n    branch: main\n  secretRef:\n    name: flux-system\n  url: ssh://git@github.com/org/fleet\n---\napiVersion: kustomize.toolkit.fluxcd.io/v1\nkind: Kustomization\nmetadata:\n  name: flux-system\n  namespace: flux-system\nspec:\n  interval: 10m0s\n  path: ./clusters/prod\n  prune: true\n  sourceRef:\n    kind: GitRepository\n    name: flux-system\n",
        );
        w(
            "clusters/prod/apps.yaml",
            "apiVersion: kustomize.toolkit.fluxcd.io/v1\nkind: Kustomization\nmetadata:\n  name: apps\nspec:\n  interval: 10m\n  path: ./apps/prod\n  prune: true\n  dependsOn: [{name: flux-system}]\n  force: true\n  sourceRef: {kind: GitRepository, name: flux-system}\n---\napiVersion: kustomize.toolkit.fluxcd.io/v1\nkind: Kustomization\nmetadata:\n  name: charts\nspec:\n  interval: 10m\n  prune: true\n  sourceRef: {kind: OCIRepository, name: charts}\n",
        );
        w("apps/prod/values.yaml", "{{ not yaml");
        let (out, report) = import(dir.path(), "flux-system").unwrap();
        // The same directory holds no Application.
        assert!(
            import_argocd(dir.path(), "argocd")
                .unwrap()
                .1
                .starts_with("no Argo CD Application")
        );
        let docs = lockstep_formats::yaml::load_documents(&out).unwrap();
        let syncs: Vec<Json> = docs.iter().map(|d| stores::to_json(d).unwrap()).collect();
        assert_eq!(syncs.len(), 2, "{out}");
        let apps = syncs.iter().find(|s| s["metadata"]["name"] == "apps").unwrap();
        assert_eq!(apps["metadata"]["namespace"], "flux-system");
        assert_eq!(apps["spec"]["source"]["url"], "ssh://git@github.com/org/fleet");
        assert_eq!(apps["spec"]["source"]["path"], "apps/prod");
        assert_eq!(apps["spec"]["source"]["secretRef"]["name"], "flux-system");
        assert_eq!(apps["spec"]["dependsOn"][0]["name"], "flux-system");
        assert!(
            report
                .contains("Kustomization flux-system/apps (clusters/prod/apps.yaml): Sync flux-system/apps"),
            "{report}"
        );
        assert!(
            report.contains("  not acted on: spec.force: objects are not recreated"),
            "{report}"
        );
        assert!(
            report.contains(
                "Kustomization flux-system/charts (clusters/prod/apps.yaml): not translated: spec.sourceRef.kind OCIRepository: only GitRepository sources"
            ),
            "{report}"
        );
    }

    #[test]
    fn argo_cd_applications_become_syncs_with_a_report() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("apps.yaml"),
            "apiVersion: argoproj.io/v1alpha1\nkind: Application\nmetadata:\n  name: guestbook\nspec:\n  project: default\n  source:\n    repoURL: https://github.com/argoproj/argocd-example-apps.git\n    targetRevision: HEAD\n    path: guestbook\n  destination:\n    server: https://kubernetes.default.svc\n    namespace: guestbook\n  syncPolicy:\n    automated: {prune: true, selfHeal: true}\n    syncOptions: [CreateNamespace=true, Replace=true]\n---\napiVersion: argoproj.io/v1alpha1\nkind: Application\nmetadata:\n  name: remote\nspec:\n  source: {repoURL: https://x, path: a}\n  destination: {name: prod-eu}\n",
        )
        .unwrap();
        let (out, report) = import_argocd(dir.path(), "argocd").unwrap();
        let docs = lockstep_formats::yaml::load_documents(&out).unwrap();
        let sync = stores::to_json(&docs[0]).unwrap();
        assert_eq!(docs.len(), 1);
        assert_eq!(sync["metadata"]["namespace"], "argocd");
        assert_eq!(sync["spec"]["source"]["ref"]["branch"], "HEAD");
        assert_eq!(sync["spec"]["defaultNamespace"], "guestbook");
        assert_eq!(
            (
                sync["spec"]["prune"].as_bool(),
                sync["spec"]["selfHeal"].as_bool()
            ),
            (Some(true), Some(true))
        );
        assert!(
            report.contains("Application argocd/guestbook (apps.yaml): Sync argocd/guestbook"),
            "{report}"
        );
        assert!(
            report.contains("  not acted on: spec.syncPolicy.syncOptions Replace=true: not acted on"),
            "{report}"
        );
        assert!(
            report
                .contains("Application argocd/remote (apps.yaml): not translated: spec.destination: prod-eu"),
            "{report}"
        );
    }
}
