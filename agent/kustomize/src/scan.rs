//! Before a build: every kustomization the build reaches is read, and what Lockstep does not
//! build is refused, naming the kustomization file, the field and the entry. Remote bases and
//! URL resources, `helmCharts`, exec, containerized and legacy plugins, and paths outside the
//! repository never reach kustomize. The scan also collects what [`crate::decrypt`] needs: the
//! generators' source files.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value as Json;

use crate::paths::{self, join, kustomization_file};
use crate::{Error, Result};

/// Why an entry is refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Refusal {
    /// A remote base or a URL: Lockstep builds only what the revision holds.
    #[error(
        "remote bases and URL resources are not fetched: Lockstep builds only what is in the repository (vendor it into the repository)"
    )]
    Remote,
    /// A path that leaves the repository.
    #[error("the path leaves the repository")]
    OutsideRepository,
    /// `helmCharts`: kustomize would run `helm`.
    #[error(
        "helmCharts are not inflated by kustomize here (kustomize would run helm); render the chart with spec.helm"
    )]
    Helm,
    /// A KRM function (exec or container).
    #[error("exec and containerized KRM functions are not run")]
    Function,
    /// A plugin that is not one of kustomize's builtins.
    #[error("only kustomize's builtin plugins run (apiVersion: builtin); exec and Go plugins are not loaded")]
    Plugin,
    /// A `configMapGenerator` over a SOPS-encrypted file (the ciphertext would land in a
    /// ConfigMap).
    #[error("the file is SOPS-encrypted: generate a Secret (secretGenerator), not a ConfigMap")]
    EncryptedConfigMap,
}

/// What a build reaches.
#[derive(Clone, Debug, Default)]
pub struct Scan {
    /// Every kustomization file the build reads (repository-relative).
    pub kustomizations: Vec<String>,
    /// The top kustomization asks for `originAnnotations` itself (keep them in the output).
    pub keep_origin: bool,
    /// `secretGenerator` `envs:`/`env:` sources (repository-relative).
    pub env_sources: BTreeSet<String>,
    /// `secretGenerator` `files:` sources (repository-relative).
    pub file_sources: BTreeSet<String>,
    /// SOPS files among the resources, by their MAC (`sops.mac`, unique to a file): how a built
    /// object carrying a `sops` block is matched with its file, without kustomize's origin
    /// tracking.
    pub sops_resources: BTreeMap<String, String>,
}

/// Fields whose entries name kustomizations or resources (local files and directories, or
/// remote bases).
const REFERENCES: [&str; 3] = ["resources", "bases", "components"];
/// Fields whose entries name files kustomize loads (a URL here is fetched over HTTP).
const FILE_LISTS: [&str; 3] = ["crds", "configurations", "patchesStrategicMerge"];
/// Fields of plugin configurations.
const PLUGINS: [&str; 3] = ["generators", "transformers", "validators"];

impl Scan {
    /// Reads the kustomization in `dir` and every one it reaches.
    pub fn of(files: &BTreeMap<String, Vec<u8>>, dir: &str) -> Result<Self> {
        let mut scan = Scan::default();
        let mut seen = BTreeSet::new();
        scan.visit(files, dir, true, &mut seen)?;
        Ok(scan)
    }

    fn visit(
        &mut self,
        files: &BTreeMap<String, Vec<u8>>,
        dir: &str,
        top: bool,
        seen: &mut BTreeSet<String>,
    ) -> Result<()> {
        let Some(file) = kustomization_file(files, dir) else {
            return Ok(());
        };
        if !seen.insert(file.clone()) {
            return Ok(());
        }
        self.kustomizations.push(file.clone());
        // kustomize reports a kustomization it cannot parse in its own words.
        let Some(k) = parse(files.get(&file).map(Vec::as_slice).unwrap_or_default()) else {
            return Ok(());
        };
        let refuse = |field: &str, entry: &str, reason: Refusal| Error::Refused {
            kustomization: file.clone(),
            field: field.to_owned(),
            entry: entry.to_owned(),
            reason,
        };
        if top {
            self.keep_origin = strings(&k, "buildMetadata").any(|s| s == "originAnnotations");
        }
        for field in ["helmCharts", "helmChartInflationGenerator"] {
            if let Some(list) = k.get(field).and_then(Json::as_array).filter(|l| !l.is_empty()) {
                let name = list
                    .first()
                    .and_then(|c| c.get("name").or_else(|| c.get("chartName")))
                    .and_then(Json::as_str)
                    .unwrap_or("?");
                return Err(refuse(field, name, Refusal::Helm));
            }
        }
        for field in REFERENCES {
            for entry in strings(&k, field) {
                let Some(target) = local(files, dir, entry) else {
                    match remote_or_outside(dir, entry) {
                        Some(r) => return Err(refuse(field, entry, r)),
                        None => continue,
                    }
                };
                if paths::is_dir(files, &target) {
                    self.visit(files, &target, false, seen)?;
                } else if let Some(mac) = files
                    .get(&target)
                    .and_then(|b| crate::decrypt::sops_mac(&target, b))
                {
                    self.sops_resources.insert(mac, target);
                }
            }
        }
        let mut loads: Vec<(&str, &str)> = Vec::new();
        for field in FILE_LISTS {
            loads.extend(strings(&k, field).filter(|e| !is_inline(e)).map(|e| (field, e)));
        }
        for field in ["patches", "patchesJson6902", "replacements"] {
            loads.extend(
                items(&k, field)
                    .filter_map(|p| p.get("path")?.as_str())
                    .map(|e| (field, e)),
            );
        }
        if let Some(p) = k.pointer("/openapi/path").and_then(Json::as_str) {
            loads.push(("openapi", p));
        }
        for (field, generators) in [("configMapGenerator", false), ("secretGenerator", true)] {
            for g in items(&k, field) {
                for e in list(g, "files") {
                    let path = e.split_once('=').map_or(e, |(_, p)| p);
                    loads.push((field, path));
                    if let Some(p) = join(dir, path) {
                        self.generator_source(files, generators, p, false)
                            .map_err(|r| refuse(field, e, r))?;
                    }
                }
                for e in list(g, "envs").chain(g.get("env").and_then(Json::as_str)) {
                    loads.push((field, e));
                    if let Some(p) = join(dir, e) {
                        self.generator_source(files, generators, p, true)
                            .map_err(|r| refuse(field, e, r))?;
                    }
                }
            }
        }
        for (field, entry) in loads {
            if entry.contains("://") {
                return Err(refuse(field, entry, Refusal::Remote));
            }
            if join(dir, entry).is_none() {
                return Err(refuse(field, entry, Refusal::OutsideRepository));
            }
        }
        for field in PLUGINS {
            for entry in strings(&k, field) {
                if is_inline(entry) {
                    check_plugins(entry.as_bytes()).map_err(|r| refuse(field, "(inline)", r))?;
                    continue;
                }
                let Some(target) = local(files, dir, entry) else {
                    match remote_or_outside(dir, entry) {
                        Some(r) => return Err(refuse(field, entry, r)),
                        None => continue,
                    }
                };
                match files.get(&target) {
                    Some(bytes) => check_plugins(bytes).map_err(|r| refuse(field, entry, r))?,
                    None => self.visit(files, &target, false, seen)?,
                }
            }
        }
        Ok(())
    }

    /// Records a `secretGenerator` source; a SOPS-encrypted `configMapGenerator` source is
    /// refused.
    fn generator_source(
        &mut self,
        files: &BTreeMap<String, Vec<u8>>,
        secret: bool,
        path: String,
        env: bool,
    ) -> Result<(), Refusal> {
        match (secret, env) {
            (true, true) => {
                self.env_sources.insert(path);
            }
            (true, false) => {
                self.file_sources.insert(path);
            }
            (false, _) => {
                if files
                    .get(&path)
                    .is_some_and(|b| crate::decrypt::is_sops_file(&path, b))
                {
                    return Err(Refusal::EncryptedConfigMap);
                }
            }
        }
        Ok(())
    }
}

/// A kustomization as JSON, if it parses as a mapping.
fn parse(bytes: &[u8]) -> Option<Json> {
    let text = std::str::from_utf8(bytes).ok()?;
    let docs = lockstep_formats::yaml::load_documents(text).ok()?;
    let json = lockstep_formats::sops::stores::to_json(docs.first()?).ok()?;
    json.is_object().then_some(json)
}

fn items<'a>(k: &'a Json, field: &str) -> impl Iterator<Item = &'a Json> {
    k.get(field).and_then(Json::as_array).into_iter().flatten()
}

fn strings<'a>(k: &'a Json, field: &str) -> impl Iterator<Item = &'a str> {
    items(k, field).filter_map(Json::as_str)
}

fn list<'a>(g: &'a Json, field: &str) -> impl Iterator<Item = &'a str> {
    strings(g, field)
}

/// An inline patch or plugin configuration rather than a path.
fn is_inline(entry: &str) -> bool {
    entry.contains('\n')
}

/// The entry as a repository path, if the repository holds it (a file or a directory).
fn local(files: &BTreeMap<String, Vec<u8>>, dir: &str, entry: &str) -> Option<String> {
    if entry.contains("://") {
        return None;
    }
    let p = join(dir, entry)?;
    (files.contains_key(&p) || paths::is_dir(files, &p)).then_some(p)
}

/// Why an entry the repository does not hold is refused; `None` for a missing local path,
/// which kustomize reports in its own words.
fn remote_or_outside(dir: &str, entry: &str) -> Option<Refusal> {
    if looks_remote(entry) {
        Some(Refusal::Remote)
    } else if join(dir, entry).is_none() {
        Some(Refusal::OutsideRepository)
    } else {
        None
    }
}

/// kustomize's remote forms: a URL, `git@host:`, `git::`, or `host.tld/org/repo...`.
fn looks_remote(entry: &str) -> bool {
    if entry.contains("://") || entry.starts_with("git@") || entry.starts_with("git::") {
        return true;
    }
    let first = entry.split('/').next().unwrap_or_default();
    entry.contains('/') && first.contains('.') && !first.starts_with('.')
}

/// Refuses plugin configurations that are not kustomize builtins.
fn check_plugins(bytes: &[u8]) -> Result<(), Refusal> {
    let Ok(text) = std::str::from_utf8(bytes) else {
        return Ok(());
    };
    let Ok(docs) = lockstep_formats::yaml::load_documents(text) else {
        return Ok(());
    };
    for doc in &docs {
        let Ok(o) = lockstep_formats::sops::stores::to_json(doc) else {
            continue;
        };
        let annotations = o.pointer("/metadata/annotations");
        if ["config.kubernetes.io/function", "config.k8s.io/function"]
            .iter()
            .any(|a| annotations.and_then(|m| m.get(*a)).is_some())
        {
            return Err(Refusal::Function);
        }
        let api = o.get("apiVersion").and_then(Json::as_str).unwrap_or_default();
        if api != "builtin" && !api.starts_with("builtin/") {
            return Err(Refusal::Plugin);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn repo(files: &[(&str, &str)]) -> BTreeMap<String, Vec<u8>> {
        files
            .iter()
            .map(|(n, t)| ((*n).to_owned(), t.as_bytes().to_vec()))
            .collect()
    }

    fn refused(files: &[(&str, &str)], dir: &str) -> String {
        Scan::of(&repo(files), dir).unwrap_err().to_string()
    }

    #[test]
    fn remote_bases_and_url_resources_are_refused_naming_file_and_entry() {
        let e = refused(
            &[(
                "o/kustomization.yaml",
                "resources:\n- https://github.com/org/repo//base?ref=v1\n",
            )],
            "o",
        );
        assert!(e.starts_with("o/kustomization.yaml: resources entry `https://github.com/org/repo//base?ref=v1`: remote bases"), "{e}");
        for entry in [
            "github.com/org/repo/base?ref=v1",
            "git@github.com:org/repo.git",
            "git::https://x/y",
        ] {
            let e = refused(&[("kustomization.yaml", &format!("resources:\n- {entry}\n"))], "");
            assert!(e.contains("remote bases"), "{entry}: {e}");
        }
        let e = refused(
            &[(
                "kustomization.yaml",
                "patches:\n- path: https://example.com/p.yaml\n",
            )],
            "",
        );
        assert!(
            e.contains("patches entry `https://example.com/p.yaml`: remote"),
            "{e}"
        );
    }

    #[test]
    fn paths_may_reach_anywhere_in_the_repository_but_not_outside() {
        let files = repo(&[
            ("overlays/prod/kustomization.yaml", "resources:\n- ../../base\n"),
            (
                "base/kustomization.yaml",
                "resources: [a.yaml]\nsecretGenerator:\n- name: s\n  envs: [s.env]\n  files: [k=key.bin]\n",
            ),
            ("base/a.yaml", ""),
        ]);
        let scan = Scan::of(&files, "overlays/prod").unwrap();
        assert_eq!(
            scan.kustomizations,
            ["overlays/prod/kustomization.yaml", "base/kustomization.yaml"]
        );
        assert_eq!(scan.env_sources.iter().collect::<Vec<_>>(), ["base/s.env"]);
        assert_eq!(scan.file_sources.iter().collect::<Vec<_>>(), ["base/key.bin"]);
        let e = refused(&[("o/kustomization.yaml", "resources:\n- ../../outside\n")], "o");
        assert!(e.contains("the path leaves the repository"), "{e}");
        let e = refused(
            &[(
                "kustomization.yaml",
                "configMapGenerator:\n- name: c\n  files: [/etc/passwd]\n",
            )],
            "",
        );
        assert!(
            e.contains("configMapGenerator entry `/etc/passwd`: the path leaves"),
            "{e}"
        );
    }

    #[test]
    fn a_missing_local_resource_is_left_to_kustomize() {
        // Only a path that leaves the repository is refused here; a missing one inside it is
        // kustomize's to report, in its own words.
        Scan::of(
            &repo(&[("a/kustomization.yaml", "resources:\n- missing.yaml\n- ../x\n")]),
            "a",
        )
        .unwrap();
    }

    #[test]
    fn helm_charts_and_non_builtin_plugins_are_refused() {
        let e = refused(
            &[(
                "kustomization.yaml",
                "helmCharts:\n- name: redis\n  repo: https://x\n",
            )],
            "",
        );
        assert!(
            e.starts_with("kustomization.yaml: helmCharts entry `redis`: helmCharts"),
            "{e}"
        );
        let e = refused(
            &[
                ("kustomization.yaml", "transformers: [t.yaml]\n"),
                (
                    "t.yaml",
                    "apiVersion: someteam.example.com/v1\nkind: SedTransformer\nmetadata:\n  name: x\n",
                ),
            ],
            "",
        );
        assert!(
            e.contains("transformers entry `t.yaml`: only kustomize's builtin"),
            "{e}"
        );
        let e = refused(
            &[
                ("kustomization.yaml", "generators: [g.yaml]\n"),
                (
                    "g.yaml",
                    "apiVersion: v1\nkind: G\nmetadata:\n  name: x\n  annotations:\n    config.kubernetes.io/function: |\n      exec:\n        path: ./gen.sh\n",
                ),
            ],
            "",
        );
        assert!(e.contains("exec and containerized KRM functions"), "{e}");
        Scan::of(
            &repo(&[
                (
                    "kustomization.yaml",
                    "transformers: [t.yaml]\nbuildMetadata: [originAnnotations]\n",
                ),
                (
                    "t.yaml",
                    "apiVersion: builtin\nkind: PrefixSuffixTransformer\nmetadata:\n  name: x\nprefix: p-\n",
                ),
            ]),
            "",
        )
        .map(|s| assert!(s.keep_origin))
        .unwrap();
    }
}
