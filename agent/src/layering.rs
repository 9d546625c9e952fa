//! The layering the crate's map promises ([`crate`]), checked on the source: a module uses
//! only modules of its own layer or lower ones, the modules of a layer use each other without
//! a cycle, and no two sibling submodules use each other.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The layers, lowest first: api ← pipeline ← reconciler ← http ← runtime.
const LAYERS: [&[&str]; 5] = [
    &["errors", "api"],
    &["source", "render", "secrets", "plan", "apply", "sync"],
    &["reconciler"],
    &["http"],
    &["runtime"],
];

/// Whether `graph` (module → modules it uses) has a cycle; the first one found.
fn cycle(graph: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        n: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(i) = path.iter().position(|p| p == n) {
            let mut c = path[i..].to_vec();
            c.push(n.to_owned());
            return Some(c);
        }
        if done.contains(n) {
            return None;
        }
        path.push(n.to_owned());
        for m in graph.get(n).into_iter().flatten() {
            if let Some(c) = visit(m, graph, path, done) {
                return Some(c);
            }
        }
        path.pop();
        done.insert(n.to_owned());
        None
    }
    let mut done = BTreeSet::new();
    graph
        .keys()
        .find_map(|n| visit(n, graph, &mut Vec::new(), &mut done))
}

fn files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap().map(Result::unwrap) {
        let p = e.path();
        if p.is_dir() {
            files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// The code of a file, comments left out.
fn code(p: &Path) -> String {
    std::fs::read_to_string(p)
        .unwrap()
        .lines()
        .filter(|l| !l.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The identifiers that follow `prefix` in `text` (`crate::plan::x` → `plan`).
fn after<'a>(text: &'a str, prefix: &str) -> BTreeSet<&'a str> {
    text.match_indices(prefix)
        .filter(|(i, _)| {
            !text[..*i]
                .chars()
                .next_back()
                .is_some_and(|c| c.is_alphanumeric() || c == '_' || c == ':')
        })
        .map(|(i, _)| {
            let rest = &text[i + prefix.len()..];
            let end = rest
                .find(|c: char| !(c.is_alphanumeric() || c == '_'))
                .unwrap_or(rest.len());
            &rest[..end]
        })
        .filter(|m| !m.is_empty())
        .collect()
}

#[test]
fn a_cycle_is_found() {
    let g = |edges: &[(&str, &str)]| {
        let mut g: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for (a, b) in edges {
            g.entry((*a).to_owned()).or_default().insert((*b).to_owned());
        }
        g
    };
    assert_eq!(cycle(&g(&[("a", "b"), ("b", "c")])), None);
    assert_eq!(
        cycle(&g(&[("a", "b"), ("b", "c"), ("c", "a")])),
        Some(vec!["a".into(), "b".into(), "c".into(), "a".into()])
    );
}

#[test]
fn dependencies_run_one_way_and_no_modules_use_each_other() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut all = Vec::new();
    files(&src, &mut all);
    let rank = |m: &str| LAYERS.iter().position(|l| l.contains(&m));
    let mut violations = Vec::new();
    let mut uses: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    // Sibling submodules: (folder, file) → the siblings it uses.
    let mut siblings: BTreeMap<(PathBuf, String), BTreeSet<String>> = BTreeMap::new();
    for f in &all {
        let rel = f.strip_prefix(&src).unwrap();
        let top = rel.components().next().unwrap().as_os_str().to_string_lossy();
        let top = top.trim_end_matches(".rs").to_owned();
        if matches!(top.as_str(), "lib" | "main" | "layering") {
            continue;
        }
        let own = rank(&top).unwrap_or_else(|| panic!("{} is not in LAYERS", rel.display()));
        let text = code(f);
        for used in after(&text, "crate::") {
            let Some(r) = rank(used) else { continue };
            if r > own {
                violations.push(format!(
                    "{} ({top}) uses crate::{used}, a higher layer",
                    rel.display()
                ));
            }
            if used != top {
                uses.entry(top.clone()).or_default().insert(used.to_owned());
            }
        }
        let stem = f.file_stem().unwrap().to_string_lossy().into_owned();
        if stem != "mod" {
            let used: BTreeSet<String> = after(&text, "super::").into_iter().map(str::to_owned).collect();
            siblings.insert((f.parent().unwrap().to_path_buf(), stem), used);
        }
    }
    if let Some(c) = cycle(&uses) {
        violations.push(format!("module cycle: {}", c.join(" → ")));
    }
    for ((dir, a), used) in &siblings {
        for b in used {
            if a < b
                && siblings
                    .get(&(dir.clone(), b.clone()))
                    .is_some_and(|back| back.contains(a))
            {
                violations.push(format!("{}: {a} and {b} use each other", dir.display()));
            }
        }
    }
    assert!(
        violations.is_empty(),
        "layering broken:\n{}",
        violations.join("\n")
    );
}
