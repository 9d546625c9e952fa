//! The CRDs: `crds/*.yaml` are generated from the Rust types and fail here when stale, and
//! every field path a message names (`spec.allowMassDeletion`, `spec.data[0].property`)
//! exists in the schema of one of the kinds the agent serves.

use std::collections::BTreeSet;
use std::path::Path;

use kube::CustomResourceExt;
use serde_json::Value as Json;

use super::fixtures::root;

#[test]
fn the_committed_crd_is_not_stale() {
    let committed = std::fs::read_to_string(root().join("crds/sync.yaml")).unwrap();
    let generated = lockstep_agent::api::crd::crd_yaml().unwrap();
    assert!(
        committed == generated,
        "crds/sync.yaml is stale: run `cargo run -p lockstep-agent -- crdgen > crds/sync.yaml`"
    );
}

#[test]
fn the_committed_external_secrets_crds_are_not_stale() {
    let committed = std::fs::read_to_string(root().join("crds/external-secrets.io.yaml")).unwrap();
    let generated = lockstep_agent::secrets::external::api::crds_yaml().unwrap();
    assert!(
        committed == generated,
        "crds/external-secrets.io.yaml is stale: run `cargo run -p lockstep-agent -- crdgen --external-secrets > crds/external-secrets.io.yaml`"
    );
}

/// The string literals of a Rust source, comments left out.
fn literals(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    for line in text.lines().filter(|l| !l.trim_start().starts_with("//")) {
        let mut chars = line.chars();
        while let Some(c) = chars.next() {
            if c != '"' {
                continue;
            }
            let mut lit = String::new();
            let mut escaped = false;
            for c in chars.by_ref() {
                match (escaped, c) {
                    (false, '\\') => escaped = true,
                    (false, '"') => break,
                    _ => {
                        escaped = false;
                        lit.push(c);
                    }
                }
            }
            out.push(lit);
        }
    }
    out
}

/// The field paths under `spec.` or `status.` a message names (`spec.data[{i}].remoteRef.key`
/// → `spec.data.remoteRef.key`).
fn field_paths(lit: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for start in ["spec.", "status."] {
        for (i, _) in lit.match_indices(start) {
            if lit[..i]
                .chars()
                .next_back()
                .is_some_and(|c| c.is_alphanumeric() || c == '.' || c == '_')
            {
                continue;
            }
            let mut path = String::new();
            let mut depth = 0;
            for c in lit[i..].chars() {
                match c {
                    '[' => depth += 1,
                    ']' => depth -= 1,
                    _ if depth > 0 => {}
                    c if c.is_alphanumeric() || c == '.' => path.push(c),
                    _ => break,
                }
            }
            let path = path.trim_end_matches('.').to_owned();
            if path.contains('.') {
                out.insert(path);
            }
        }
    }
    out
}

/// Whether `path` is in the `v1`-style schema of `crd`.
fn in_schema(crd: &Json, path: &str) -> bool {
    let Some(mut node) = crd.pointer("/spec/versions/0/schema/openAPIV3Schema") else {
        return false;
    };
    for seg in path.split('.') {
        while let Some(items) = node.get("items") {
            node = items;
        }
        if node.get("x-kubernetes-preserve-unknown-fields") == Some(&Json::Bool(true)) {
            return true;
        }
        match node.pointer(&format!("/properties/{seg}")) {
            Some(next) => node = next,
            None => match node.get("additionalProperties") {
                Some(next) if next.is_object() => node = next,
                _ => return false,
            },
        }
    }
    true
}

fn sources(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap().map(Result::unwrap) {
        let p = e.path();
        if p.is_dir() {
            sources(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

#[test]
fn every_field_path_in_a_message_exists_in_the_crds() {
    use lockstep_agent::secrets::external::api::{ClusterSecretStore, ExternalSecret, SecretStore};
    let crds: Vec<Json> = [
        lockstep_agent::api::Sync::crd(),
        ExternalSecret::crd(),
        SecretStore::crd(),
        ClusterSecretStore::crd(),
    ]
    .into_iter()
    .map(|c| serde_json::to_value(c).unwrap())
    .collect();
    let mut files = Vec::new();
    sources(&root().join("agent/src"), &mut files);
    let (mut checked, mut missing) = (BTreeSet::new(), Vec::new());
    for f in &files {
        for lit in literals(&std::fs::read_to_string(f).unwrap()) {
            for path in field_paths(&lit) {
                if !crds.iter().any(|c| in_schema(c, &path)) {
                    missing.push(format!("{}: {path} (in {lit:?})", f.display()));
                }
                checked.insert(path);
            }
        }
    }
    assert!(
        missing.is_empty(),
        "field paths not in any CRD:\n{}",
        missing.join("\n")
    );
    for must in [
        "spec.allowMassDeletion",
        "spec.targetNamespace",
        "spec.source.secretRef",
        "spec.dependsOn",
    ] {
        assert!(
            checked.contains(must),
            "{must} was not found in any message: {checked:?}"
        );
    }
    // The check itself: the field path the budget message used to name is refused.
    let sync = &crds[0];
    assert!(!in_schema(sync, "spec.prune.allowMassDeletion"));
    assert!(in_schema(sync, "spec.decryption.sops.secretRef"));
    assert_eq!(
        field_paths("spec.data[{i}].remoteRef.key: x"),
        BTreeSet::from(["spec.data.remoteRef.key".to_owned()])
    );
}
