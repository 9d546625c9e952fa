//! A chart directory's dependencies (`Chart.yaml` `dependencies`, or `requirements.yaml` for
//! `apiVersion: v1`): which are vendored under `charts/`, which are `file://` charts of the
//! same repository (sent under `charts/` as `helm dependency build` would copy them), and which
//! must come from a chart repository.

use std::collections::BTreeMap;

use serde_json::Value as Json;

use crate::{Error, Result};

/// A dependency as the chart lists it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Dependency {
    /// The chart's name.
    pub name: String,
    /// The version (a range, or the exact version `Chart.lock` pinned).
    pub version: String,
    /// Where it comes from (`https://…`, `oci://…`, `file://…`, or empty when vendored).
    pub repository: String,
}

/// Where a dependency is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Place {
    /// Under the chart's `charts/`, as a directory or an archive.
    Vendored,
    /// A chart directory of the same repository (repository-relative).
    Local(String),
    /// To be fetched from its repository.
    Remote,
}

/// The dependencies of the chart at `dir` among `files`, each with its place.
pub fn dependencies(files: &BTreeMap<String, Vec<u8>>, dir: &str) -> Result<Vec<(Dependency, Place)>> {
    let path = |name: &str| lockstep_kustomize::paths::child(dir, name);
    let chart = yaml(files, &path("Chart.yaml"))?.unwrap_or(Json::Null);
    let listed = match chart.get("dependencies") {
        Some(d) => d.clone(),
        None => yaml(files, &path("requirements.yaml"))?
            .and_then(|r| r.get("dependencies").cloned())
            .unwrap_or(Json::Null),
    };
    let lock = match yaml(files, &path("Chart.lock"))? {
        Some(l) => Some(l),
        None => yaml(files, &path("requirements.lock"))?,
    };
    let locked = |name: &str| {
        lock.as_ref()?
            .get("dependencies")?
            .as_array()?
            .iter()
            .find(|d| d.get("name").and_then(Json::as_str) == Some(name))?
            .get("version")?
            .as_str()
            .map(str::to_owned)
    };
    let vendored = vendored(files, dir)?;
    let mut out = Vec::new();
    for d in listed.as_array().into_iter().flatten() {
        let s = |k: &str| d.get(k).and_then(Json::as_str).unwrap_or_default().to_owned();
        let name = s("name");
        if name.is_empty() {
            return Err(dependency(dir, "(unnamed)", "a dependency has no `name`"));
        }
        let dep = Dependency {
            version: locked(&name).unwrap_or_else(|| s("version")),
            repository: s("repository"),
            name,
        };
        let place = if vendored.iter().any(|v| v == &dep.name) {
            Place::Vendored
        } else if let Some(rel) = dep.repository.strip_prefix("file://") {
            let target = lockstep_kustomize::paths::join(dir, rel).ok_or_else(|| {
                dependency(
                    dir,
                    &dep.name,
                    &format!("`{}` leaves the repository", dep.repository),
                )
            })?;
            if !files.contains_key(&lockstep_kustomize::paths::child(&target, "Chart.yaml")) {
                return Err(dependency(
                    dir,
                    &dep.name,
                    &format!("`{}`: no Chart.yaml at {target}", dep.repository),
                ));
            }
            Place::Local(target)
        } else {
            Place::Remote
        };
        out.push((dep, place));
    }
    Ok(out)
}

/// The names of the charts under `dir/charts/`: directories by their `Chart.yaml` name,
/// archives by their file name (`<name>-<version>.tgz`).
fn vendored(files: &BTreeMap<String, Vec<u8>>, dir: &str) -> Result<Vec<String>> {
    let prefix = lockstep_kustomize::paths::child(dir, "charts/");
    let mut names = Vec::new();
    for (path, _) in files.range(prefix.clone()..) {
        let Some(rel) = path.strip_prefix(&prefix) else {
            break;
        };
        match rel.split_once('/') {
            Some((sub, "Chart.yaml")) => {
                let chart = yaml(files, path)?.unwrap_or(Json::Null);
                names.push(
                    chart
                        .get("name")
                        .and_then(Json::as_str)
                        .map_or_else(|| sub.to_owned(), str::to_owned),
                );
            }
            None if rel.ends_with(".tgz") => {
                let stem = rel.trim_end_matches(".tgz");
                // The name is what precedes the version (which starts with a digit).
                let cut = stem
                    .match_indices('-')
                    .find(|(i, _)| stem[i + 1..].starts_with(|c: char| c.is_ascii_digit()))
                    .map_or(stem.len(), |(i, _)| i);
                names.push(stem[..cut].to_owned());
            }
            _ => {}
        }
    }
    Ok(names)
}

fn yaml(files: &BTreeMap<String, Vec<u8>>, path: &str) -> Result<Option<Json>> {
    let Some(bytes) = files.get(path) else {
        return Ok(None);
    };
    let format = |source: lockstep_formats::Error| Error::Format {
        chart: path.to_owned(),
        source,
    };
    let text = std::str::from_utf8(bytes).map_err(|_| Error::ValuesFile {
        file: path.to_owned(),
        message: "not UTF-8 text".into(),
    })?;
    let docs = lockstep_formats::yaml::load_documents(text).map_err(|e| format(e.in_file(path)))?;
    match docs.first() {
        Some(d) => Ok(Some(
            lockstep_formats::sops::stores::to_json(d).map_err(|e| format(e.in_file(path)))?,
        )),
        None => Ok(None),
    }
}

fn dependency(chart: &str, name: &str, message: &str) -> Error {
    Error::Dependency {
        chart: if chart.is_empty() {
            ".".into()
        } else {
            chart.to_owned()
        },
        name: name.to_owned(),
        message: message.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn files(entries: &[(&str, &str)]) -> BTreeMap<String, Vec<u8>> {
        entries
            .iter()
            .map(|(p, t)| ((*p).to_owned(), t.as_bytes().to_vec()))
            .collect()
    }

    #[test]
    fn each_dependency_has_its_place() {
        let f = files(&[
            (
                "apps/web/Chart.yaml",
                "apiVersion: v2\nname: web\nversion: 1.0.0\ndependencies:\n- {name: cache, version: 0.1.0}\n- {name: common, version: '>=0.3', repository: 'file://../../libs/common'}\n- {name: postgresql, version: '^15', repository: 'https://charts.example.com'}\n- {name: redis, version: '18.x', repository: 'oci://registry.example.com/charts'}\n",
            ),
            (
                "apps/web/Chart.lock",
                "dependencies:\n- {name: postgresql, version: 15.5.2, repository: 'https://charts.example.com'}\n",
            ),
            (
                "apps/web/charts/cache/Chart.yaml",
                "name: cache\nversion: 0.1.0\n",
            ),
            ("apps/web/charts/other-9.9.9.tgz", "…"),
            (
                "libs/common/Chart.yaml",
                "name: common\nversion: 0.3.0\ntype: library\n",
            ),
        ]);
        let deps = dependencies(&f, "apps/web").unwrap();
        let places: Vec<(&str, &str, &Place)> = deps
            .iter()
            .map(|(d, p)| (d.name.as_str(), d.version.as_str(), p))
            .collect();
        assert_eq!(
            places,
            [
                ("cache", "0.1.0", &Place::Vendored),
                ("common", ">=0.3", &Place::Local("libs/common".into())),
                ("postgresql", "15.5.2", &Place::Remote),
                ("redis", "18.x", &Place::Remote),
            ]
        );
        assert_eq!(vendored(&f, "apps/web").unwrap(), ["cache", "other"]);
    }

    #[test]
    fn a_local_dependency_outside_the_repository_or_missing_is_named() {
        let f = files(&[(
            "web/Chart.yaml",
            "name: web\ndependencies:\n- {name: a, repository: 'file://../../x'}\n",
        )]);
        assert_eq!(
            dependencies(&f, "web").unwrap_err().to_string(),
            "chart web: dependency a: `file://../../x` leaves the repository"
        );
        let f = files(&[(
            "web/Chart.yaml",
            "name: web\ndependencies:\n- {name: a, repository: 'file://../a'}\n",
        )]);
        assert_eq!(
            dependencies(&f, "web").unwrap_err().to_string(),
            "chart web: dependency a: `file://../a`: no Chart.yaml at a"
        );
    }
}
