//! Flux's kustomization generator (`fluxcd/pkg/kustomize` v1.35.7 `Generator.GenerateManifest`,
//! what kustomize-controller v1.9.6 runs before every build), pure: the kustomization at a path,
//! or one generated from its YAML files when it has none, with a Kustomization's
//! `targetNamespace` (as kustomize's `namespace`), `namePrefix`, `nameSuffix`, `patches`,
//! `components` and `images` written into it. kustomize then builds it as Flux would.

use std::collections::BTreeMap;

use serde_json::{Value as Json, json};

use crate::paths::{child, kustomization_file, under};
use crate::{Error, Result};

/// What a Flux Kustomization (or a Sync's `spec.kustomize`) adds to the build.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize)]
pub struct Overlay {
    /// `namespace` (Flux's `targetNamespace`).
    pub namespace: Option<String>,
    /// `namePrefix`.
    pub name_prefix: Option<String>,
    /// `nameSuffix`.
    pub name_suffix: Option<String>,
    /// `patches`, appended (each `{patch, target}`).
    pub patches: Vec<Json>,
    /// `components`, appended (paths relative to the directory).
    pub components: Vec<String>,
    /// Leave out components that do not exist.
    pub ignore_missing_components: bool,
    /// `images`, merged by name into the kustomization's own.
    pub images: Vec<Json>,
    /// kustomize `commonLabels` (selectors included), merged over the kustomization's: Argo
    /// CD's `kustomize.commonLabels`.
    pub common_labels: std::collections::BTreeMap<String, String>,
    /// kustomize `replicas` (`{name, count}`), appended: Argo CD's `kustomize.replicas`.
    pub replicas: Vec<Json>,
}

/// File names source-controller leaves out of every artifact (its default ignore patterns), so
/// Flux never lists them.
const IGNORED_NAMES: [&str; 10] = [
    ".sops.yaml",
    ".flux.yaml",
    ".goreleaser.yml",
    ".gitlab-ci.yml",
    ".travis.yml",
    "appveyor.yml",
    ".drone.yml",
    "cloudbuild.yaml",
    "codeship-services.yml",
    "codeship-steps.yml",
];
const IGNORED_DIRS: [&str; 3] = [".git", ".github", ".circleci"];

/// The kustomization file of `dir` and its text with `o` written in: the existing one's, or one
/// Flux would generate (every `.yaml`/`.yml` file under `dir`, a subdirectory holding a
/// kustomization as one entry, in Go's walk order).
pub fn kustomization(files: &BTreeMap<String, Vec<u8>>, dir: &str, o: &Overlay) -> Result<(String, Vec<u8>)> {
    let (file, mut k) = match kustomization_file(files, dir) {
        Some(f) => {
            let text =
                std::str::from_utf8(files.get(&f).map(Vec::as_slice).unwrap_or_default()).map_err(|_| {
                    Error::Object {
                        origin: f.clone(),
                        message: "not UTF-8".into(),
                    }
                })?;
            let docs = lockstep_formats::yaml::load_documents(text).map_err(|e| e.in_file(f.clone()))?;
            let k = match docs.first() {
                Some(d) => lockstep_formats::sops::stores::to_json(d)?,
                None => json!({}),
            };
            if !k.is_object() {
                return Err(Error::Object {
                    origin: f,
                    message: "a kustomization must be a mapping".into(),
                });
            }
            (f, k)
        }
        None => {
            let resources = generated_resources(files, dir);
            let mut k = json!({ "apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization" });
            if resources.is_empty() {
                k["namespace"] = json!("_placeholder");
            } else {
                k["resources"] = json!(resources);
            }
            (child(dir, "kustomization.yaml"), k)
        }
    };
    let map = k.as_object_mut().ok_or_else(|| Error::Object {
        origin: file.clone(),
        message: "a kustomization must be a mapping".into(),
    })?;
    if let Some(ns) = &o.namespace {
        map.insert("namespace".into(), json!(ns));
    }
    if let Some(p) = &o.name_prefix {
        map.insert("namePrefix".into(), json!(p));
    }
    if let Some(s) = &o.name_suffix {
        map.insert("nameSuffix".into(), json!(s));
    }
    append(map, "patches", o.patches.iter().cloned());
    for c in &o.components {
        if c.starts_with('/') || c.contains("://") || crate::paths::join(dir, c).is_none() {
            return Err(Error::Object {
                origin: file.clone(),
                message: format!("component path '{c}' must be local and relative"),
            });
        }
        let exists = crate::paths::join(dir, c)
            .is_some_and(|p| crate::paths::is_dir(files, &p) || files.contains_key(&p));
        if !exists && o.ignore_missing_components {
            continue;
        }
        append(map, "components", std::iter::once(json!(c)));
    }
    merge_images(map, &o.images);
    if !o.common_labels.is_empty() {
        let entry = map.entry("commonLabels".to_owned()).or_insert_with(|| json!({}));
        if !entry.is_object() {
            *entry = json!({});
        }
        if let Some(labels) = entry.as_object_mut() {
            for (k, v) in &o.common_labels {
                labels.insert(k.clone(), json!(v));
            }
        }
    }
    append(map, "replicas", o.replicas.iter().cloned());
    let doc = lockstep_formats::sops::stores::from_json(k);
    let text = lockstep_formats::yaml::emit_documents(&[doc])?;
    Ok((file, text.into_bytes()))
}

fn append(map: &mut serde_json::Map<String, Json>, key: &str, items: impl Iterator<Item = Json>) {
    let entry = map.entry(key.to_owned()).or_insert_with(|| json!([]));
    if !entry.is_array() {
        *entry = json!([]);
    }
    if let Some(list) = entry.as_array_mut() {
        list.extend(items);
    }
}

/// Flux's image merge: an image of the same name has `newName` replaced when given, and
/// `newTag` and `digest` replaced together when either is given; others are appended.
fn merge_images(map: &mut serde_json::Map<String, Json>, images: &[Json]) {
    if images.is_empty() {
        return;
    }
    let entry = map.entry("images".to_owned()).or_insert_with(|| json!([]));
    let Some(list) = entry.as_array_mut() else { return };
    for img in images {
        let name = img.get("name").and_then(Json::as_str).unwrap_or_default();
        let field = |k: &str| img.get(k).and_then(Json::as_str).unwrap_or_default().to_owned();
        match list
            .iter_mut()
            .find(|i| i.get("name").and_then(Json::as_str) == Some(name))
        {
            Some(existing) => {
                if !field("newName").is_empty() {
                    existing["newName"] = json!(field("newName"));
                }
                if !field("newTag").is_empty() || !field("digest").is_empty() {
                    let obj = existing.as_object_mut();
                    if let Some(obj) = obj {
                        obj.remove("newTag");
                        obj.remove("digest");
                        for k in ["newTag", "digest"] {
                            if !field(k).is_empty() {
                                obj.insert(k.into(), json!(field(k)));
                            }
                        }
                    }
                }
            }
            None => {
                let mut new = serde_json::Map::new();
                for k in ["name", "newName", "newTag", "digest"] {
                    if !field(k).is_empty() {
                        new.insert(k.into(), json!(field(k)));
                    }
                }
                list.push(Json::Object(new));
            }
        }
    }
}

/// Flux's `scanManifests`: `./`-relative YAML files and kustomized subdirectories under `dir`.
fn generated_resources(files: &BTreeMap<String, Vec<u8>>, dir: &str) -> Vec<String> {
    let prefix = if dir.is_empty() {
        String::new()
    } else {
        format!("{dir}/")
    };
    let mut rels: Vec<&str> = under(files, dir).map(|(f, _)| &f[prefix.len()..]).collect();
    // Go's filepath.Walk: directory entries in lexical order, a directory's files right after it.
    rels.sort_by(|a, b| a.split('/').cmp(b.split('/')));
    let mut out = Vec::new();
    let mut skipped: Option<String> = None;
    for rel in rels {
        if let Some(s) = &skipped
            && rel.starts_with(s.as_str())
        {
            continue;
        }
        let segments: Vec<&str> = rel.split('/').collect();
        if segments[..segments.len() - 1]
            .iter()
            .any(|s| IGNORED_DIRS.contains(s))
        {
            continue;
        }
        // The outermost kustomized directory on the way, if any.
        let mut sub = String::new();
        let mut kustomized = None;
        for s in &segments[..segments.len() - 1] {
            sub = if sub.is_empty() {
                (*s).to_owned()
            } else {
                format!("{sub}/{s}")
            };
            if kustomization_file(files, &child(dir, &sub)).is_some() {
                kustomized = Some(sub.clone());
                break;
            }
        }
        if let Some(k) = kustomized {
            out.push(format!("./{k}"));
            skipped = Some(format!("{k}/"));
            continue;
        }
        let name = segments[segments.len() - 1];
        if IGNORED_NAMES.contains(&name) || !(name.ends_with(".yaml") || name.ends_with(".yml")) {
            continue;
        }
        out.push(format!("./{rel}"));
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn repo(files: &[&str]) -> BTreeMap<String, Vec<u8>> {
        files
            .iter()
            .map(|f| ((*f).to_owned(), b"kind: X\n".to_vec()))
            .collect()
    }

    fn parsed(text: &[u8]) -> Json {
        let docs = lockstep_formats::yaml::load_documents(std::str::from_utf8(text).unwrap()).unwrap();
        lockstep_formats::sops::stores::to_json(&docs[0]).unwrap()
    }

    #[test]
    fn a_kustomization_is_generated_as_flux_generates_one() {
        let files = repo(&[
            "apps/a.yaml",
            "apps/a/x.yaml",
            "apps/b.yml",
            "apps/c.json",
            "apps/.sops.yaml",
            "apps/sub/kustomization.yaml",
            "apps/sub/deep/y.yaml",
            "apps/.github/ci.yaml",
            "other/z.yaml",
        ]);
        let o = Overlay {
            namespace: Some("prod".into()),
            name_prefix: Some("p-".into()),
            ..Default::default()
        };
        let (file, text) = kustomization(&files, "apps", &o).unwrap();
        assert_eq!(file, "apps/kustomization.yaml");
        let k = parsed(&text);
        assert_eq!(
            k["resources"],
            json!(["./a/x.yaml", "./a.yaml", "./b.yml", "./sub"])
        );
        assert_eq!(
            (k["namespace"].as_str(), k["namePrefix"].as_str()),
            (Some("prod"), Some("p-"))
        );
        let (_, empty) = kustomization(&repo(&["x/readme.md"]), "x", &Overlay::default()).unwrap();
        assert_eq!(parsed(&empty)["namespace"], "_placeholder");
    }

    #[test]
    fn an_existing_kustomization_gets_the_overlay_written_in() {
        let mut files = repo(&["app/base/kustomization.yaml", "app/comp/kustomization.yaml"]);
        files.insert(
            "app/Kustomization".into(),
            b"resources: [base]\npatches:\n- path: p.yaml\nimages:\n- {name: web, newTag: v1, digest: sha256:old}\n- {name: db, newName: pg}\n".to_vec(),
        );
        let o = Overlay {
            patches: vec![json!({ "patch": "- op: add", "target": { "kind": "Deployment" } })],
            components: vec!["comp".into(), "missing".into()],
            ignore_missing_components: true,
            images: vec![
                json!({ "name": "web", "newTag": "v2" }),
                json!({ "name": "cache", "newName": "redis" }),
            ],
            ..Default::default()
        };
        let (file, text) = kustomization(&files, "app", &o).unwrap();
        assert_eq!(file, "app/Kustomization");
        let k = parsed(&text);
        assert_eq!(k["patches"].as_array().unwrap().len(), 2);
        assert_eq!(k["components"], json!(["comp"]));
        assert_eq!(
            k["images"],
            json!([{ "name": "web", "newTag": "v2" }, { "name": "db", "newName": "pg" }, { "name": "cache", "newName": "redis" }])
        );
        let argo = Overlay {
            common_labels: [("team".to_owned(), "web".to_owned())].into(),
            replicas: vec![json!({ "name": "web", "count": 3 })],
            ..Default::default()
        };
        let k = parsed(&kustomization(&files, "app", &argo).unwrap().1);
        assert_eq!(
            (
                k["commonLabels"]["team"].as_str(),
                k["replicas"][0]["count"].as_i64()
            ),
            (Some("web"), Some(3))
        );
        let bad = Overlay {
            components: vec!["/etc".into()],
            ..Default::default()
        };
        assert!(
            kustomization(&files, "app", &bad)
                .unwrap_err()
                .to_string()
                .contains("must be local and relative")
        );
    }
}
