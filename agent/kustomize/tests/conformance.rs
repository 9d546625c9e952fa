//! Conformance: every kustomization of the corpus (`tests/corpus/<case>/`, each a repository)
//! is built by Lockstep (the helper, over the in-memory filesystem) and by the real `kustomize`
//! CLI built from the same module version; the object sets must be equal, keyed by
//! apiVersion/kind/namespace/name and compared as JSON. A case's `targets` lists the directories
//! to build; an `err-*` case must fail in both, Lockstep's message naming what its `expect`
//! holds.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use lockstep_kustomize::{Helper, build};
use serde_json::Value as Json;

fn corpus() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/corpus")
}

/// A directory as a repository held in memory.
fn load(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<String, Vec<u8>>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                walk(root, &p, out);
            } else {
                let rel = p.strip_prefix(root).unwrap().to_string_lossy().into_owned();
                out.insert(rel, std::fs::read(&p).unwrap());
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(dir, dir, &mut out);
    out
}

fn key(o: &Json) -> String {
    let f = |p: &str| o.pointer(p).and_then(Json::as_str).unwrap_or("").to_owned();
    format!(
        "{} {} {}/{}",
        f("/apiVersion"),
        f("/kind"),
        f("/metadata/namespace"),
        f("/metadata/name")
    )
}

fn objects(docs: impl IntoIterator<Item = Json>) -> BTreeMap<String, Json> {
    let mut out = BTreeMap::new();
    for o in docs {
        assert!(out.insert(key(&o), o.clone()).is_none(), "duplicate {}", key(&o));
    }
    out
}

fn cli(case: &Path, dir: &str) -> Result<BTreeMap<String, Json>, String> {
    let out = Command::new(lockstep_tests::peer("kustomize"))
        .args(["build", "--load-restrictor", "LoadRestrictionsNone", dir])
        .current_dir(case)
        .output()
        .unwrap();
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    let text = String::from_utf8(out.stdout).unwrap();
    let docs = lockstep_formats::yaml::load_documents(&text).unwrap();
    Ok(objects(
        docs.iter()
            .map(|d| lockstep_formats::sops::stores::to_json(d).unwrap()),
    ))
}

fn helper() -> Helper {
    Helper::new(lockstep_tests::peer("lockstep-kustomize"))
}

fn cases() -> Vec<PathBuf> {
    let mut cases: Vec<PathBuf> = std::fs::read_dir(corpus())
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    cases.sort();
    cases
}

#[test]
fn every_kustomization_of_the_corpus_builds_as_the_kustomize_cli_builds_it() {
    let mut built = 0;
    for case in cases().into_iter().filter(|c| c.join("targets").is_file()) {
        let files = load(&case);
        let targets = std::fs::read_to_string(case.join("targets")).unwrap();
        for dir in targets.lines().filter(|l| !l.is_empty()) {
            let name = format!("{}:{dir}", case.file_name().unwrap().to_string_lossy());
            let ours = build(&helper(), &files, dir).unwrap_or_else(|e| panic!("{name}: {e}"));
            let ours = objects(ours.into_iter().map(|b| b.object));
            let theirs = cli(&case, dir).unwrap_or_else(|e| panic!("{name}: the CLI failed: {e}"));
            assert_eq!(
                ours.keys().collect::<Vec<_>>(),
                theirs.keys().collect::<Vec<_>>(),
                "{name}: the object sets differ"
            );
            for (k, o) in &ours {
                assert_eq!(o, &theirs[k], "{name}: {k} differs");
            }
            built += ours.len();
        }
    }
    assert!(built > 30, "the corpus builds {built} objects");
}

#[test]
fn the_common_mistakes_fail_in_both_and_lockstep_names_them() {
    for case in cases().into_iter().filter(|c| c.join("expect").is_file()) {
        let name = case.file_name().unwrap().to_string_lossy().into_owned();
        let files = load(&case);
        let expect = std::fs::read_to_string(case.join("expect")).unwrap();
        let e = build(&helper(), &files, "").expect_err(&name).to_string();
        assert!(e.starts_with("kustomization.yaml: kustomize: "), "{name}: {e}");
        assert!(e.contains(expect.trim()), "{name}: `{e}` does not name {expect}");
        assert!(cli(&case, ".").is_err(), "{name}: the CLI builds it");
    }
}

#[test]
fn limits_stop_the_build_and_are_named() {
    let files = load(&corpus().join("overlays"));
    let mut h = helper();
    h.max_output = 100;
    let e = build(&h, &files, "overlays/prod").unwrap_err().to_string();
    assert_eq!(
        e,
        "kustomize build overlays/prod: its output exceeds the limit of 100 bytes (--render-max-output)"
    );
    let mut h = helper();
    h.timeout = std::time::Duration::from_millis(1);
    let e = build(&h, &files, "overlays/prod").unwrap_err().to_string();
    assert!(
        e.contains("took longer than the time limit of 1ms (--render-timeout)"),
        "{e}"
    );
}

#[test]
fn the_helper_reads_nothing_from_disk() {
    // A kustomization that names a file outside the in-memory repository which does exist on
    // this machine: kustomize cannot see it.
    let files = BTreeMap::from([(
        "kustomization.yaml".to_owned(),
        b"configMapGenerator:\n- name: c\n  files:\n  - etc/hostname\n".to_vec(),
    )]);
    let e = build(&helper(), &files, "").unwrap_err().to_string();
    assert!(e.contains("etc/hostname"), "{e}");
}

#[test]
fn the_pinned_version_is_the_one_the_helper_is_built_from() {
    let gomod = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("helper/go.mod")).unwrap();
    assert!(
        gomod.contains(&format!(
            "sigs.k8s.io/kustomize/api {}",
            lockstep_kustomize::helper::KUSTOMIZE_API_VERSION
        )),
        "{gomod}"
    );
    let out = Command::new(lockstep_tests::peer("lockstep-kustomize"))
        .arg("version")
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        format!(
            "lockstep-kustomize sigs.k8s.io/kustomize/api {}",
            lockstep_kustomize::helper::KUSTOMIZE_API_VERSION
        )
    );
}
