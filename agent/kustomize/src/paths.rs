//! Paths inside a repository held in memory (file path → bytes), and which of its directories
//! are kustomize builds (pure).

use std::collections::BTreeMap;

/// The file names kustomize recognises, in its order of preference.
pub const KUSTOMIZATION_FILES: [&str; 3] = ["kustomization.yaml", "kustomization.yml", "Kustomization"];

/// What to render under a Sync's path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Unit {
    /// A directory holding a kustomization: one kustomize build.
    Kustomization {
        /// The directory (repository-relative; empty for the root).
        dir: String,
    },
    /// A plain file (repository-relative).
    File(String),
}

/// `dir/name`, or `name` at the root.
pub fn child(dir: &str, name: &str) -> String {
    if dir.is_empty() {
        name.to_owned()
    } else {
        format!("{dir}/{name}")
    }
}

/// `rel` resolved against `dir` (both repository-relative, `/`-separated), `.` and `..` folded;
/// `None` when it leaves the repository or is absolute.
pub fn join(dir: &str, rel: &str) -> Option<String> {
    if rel.starts_with('/') {
        return None;
    }
    let mut parts: Vec<&str> = dir.split('/').filter(|p| !p.is_empty() && *p != ".").collect();
    for p in rel.split('/') {
        match p {
            "" | "." => {}
            ".." => {
                parts.pop()?;
            }
            p => parts.push(p),
        }
    }
    Some(parts.join("/"))
}

/// The kustomization file of `dir`, if it has one.
pub fn kustomization_file(files: &BTreeMap<String, Vec<u8>>, dir: &str) -> Option<String> {
    KUSTOMIZATION_FILES
        .iter()
        .map(|n| child(dir, n))
        .find(|f| files.contains_key(f))
}

/// Whether `dir` holds any file.
pub fn is_dir(files: &BTreeMap<String, Vec<u8>>, dir: &str) -> bool {
    if dir.is_empty() {
        return !files.is_empty();
    }
    let prefix = format!("{dir}/");
    files
        .range(prefix.clone()..)
        .next()
        .is_some_and(|(k, _)| k.starts_with(&prefix))
}

/// The files under `dir`, in path order.
pub fn under<'a>(
    files: &'a BTreeMap<String, Vec<u8>>,
    dir: &str,
) -> impl Iterator<Item = (&'a String, &'a Vec<u8>)> + 'a {
    let prefix = if dir.is_empty() {
        String::new()
    } else {
        format!("{dir}/")
    };
    files
        .range(prefix.clone()..)
        .take_while(move |(k, _)| k.starts_with(&prefix))
}

/// What to render under `path`, Flux's rule: a kustomization at `path` is one build; otherwise
/// every file is a plain manifest, except that a subdirectory holding a kustomization is built
/// as one (and not descended into).
pub fn units(files: &BTreeMap<String, Vec<u8>>, path: &str) -> Vec<Unit> {
    units_with(files, path, true)
}

/// [`units`], reading subdirectories only when `recurse` (Argo CD's `directory.recurse`, false
/// there by default: only the files directly in `path`).
pub fn units_with(files: &BTreeMap<String, Vec<u8>>, path: &str, recurse: bool) -> Vec<Unit> {
    if kustomization_file(files, path).is_some() {
        return vec![Unit::Kustomization { dir: path.to_owned() }];
    }
    if !recurse {
        let prefix = if path.is_empty() {
            String::new()
        } else {
            format!("{path}/")
        };
        return under(files, path)
            .filter(|(f, _)| !f[prefix.len()..].contains('/'))
            .map(|(f, _)| Unit::File(f.clone()))
            .collect();
    }
    let mut out = Vec::new();
    let mut built: Option<String> = None;
    for (file, _) in under(files, path) {
        if let Some(dir) = &built
            && file.starts_with(&format!("{dir}/"))
        {
            continue;
        }
        match kustomized_ancestor(files, path, file) {
            Some(dir) => {
                out.push(Unit::Kustomization { dir: dir.clone() });
                built = Some(dir);
            }
            None => out.push(Unit::File(file.clone())),
        }
    }
    out
}

/// The outermost directory between `path` (exclusive) and `file` that holds a kustomization.
fn kustomized_ancestor(files: &BTreeMap<String, Vec<u8>>, path: &str, file: &str) -> Option<String> {
    let rest = if path.is_empty() {
        file
    } else {
        file.strip_prefix(path)?.trim_start_matches('/')
    };
    let mut dir = path.to_owned();
    let mut segments: Vec<&str> = rest.split('/').collect();
    segments.pop();
    for s in segments {
        dir = child(&dir, s);
        if kustomization_file(files, &dir).is_some() {
            return Some(dir);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn repo(names: &[&str]) -> BTreeMap<String, Vec<u8>> {
        names.iter().map(|n| ((*n).to_owned(), Vec::new())).collect()
    }

    #[test]
    fn join_folds_dots_and_refuses_to_leave_the_repository() {
        assert_eq!(join("overlays/prod", "../../base").as_deref(), Some("base"));
        assert_eq!(join("", "./a/./b.yaml").as_deref(), Some("a/b.yaml"));
        assert_eq!(join("a", "..").as_deref(), Some(""));
        assert_eq!(join("overlays/prod", "../../../etc"), None);
        assert_eq!(join("a", "/etc/passwd"), None);
    }

    #[test]
    fn a_kustomization_at_the_path_is_one_build() {
        let files = repo(&["app/Kustomization", "app/a.yaml", "app/sub/kustomization.yaml"]);
        assert_eq!(
            units(&files, "app"),
            vec![Unit::Kustomization { dir: "app".into() }]
        );
    }

    #[test]
    fn a_plain_directory_builds_its_kustomized_subdirectories_as_units() {
        let files = repo(&[
            "clusters/prod/apps/kustomization.yaml",
            "clusters/prod/apps/x/deep.yaml",
            "clusters/prod/infra/kustomization.yml",
            "clusters/prod/ns.yaml",
            "clusters/prod/plain/cm.yaml",
            "clusters/prod/plain/nested/kustomization.yaml",
            "other/x.yaml",
        ]);
        assert_eq!(
            units(&files, "clusters/prod"),
            vec![
                Unit::Kustomization {
                    dir: "clusters/prod/apps".into()
                },
                Unit::Kustomization {
                    dir: "clusters/prod/infra".into()
                },
                Unit::File("clusters/prod/ns.yaml".into()),
                Unit::File("clusters/prod/plain/cm.yaml".into()),
                Unit::Kustomization {
                    dir: "clusters/prod/plain/nested".into()
                },
            ]
        );
        assert!(is_dir(&files, "clusters"));
        assert!(!is_dir(&files, "cluster"));
    }
}
