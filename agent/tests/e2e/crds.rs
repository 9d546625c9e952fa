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

#[test]
fn the_committed_flux_crds_are_not_stale() {
    let committed = std::fs::read_to_string(root().join("crds/fluxcd.io.yaml")).unwrap();
    let generated = lockstep_agent::api::crd::flux_crds_yaml().unwrap();
    assert!(
        committed == generated,
        "crds/fluxcd.io.yaml is stale: run `cargo run -p lockstep-agent -- crdgen --flux > crds/fluxcd.io.yaml`"
    );
}

#[test]
fn the_committed_argocd_crd_is_not_stale() {
    let committed = std::fs::read_to_string(root().join("crds/argoproj.io.yaml")).unwrap();
    let generated = lockstep_agent::api::crd::argocd_crds_yaml().unwrap();
    assert!(
        committed == generated,
        "crds/argoproj.io.yaml is stale: run `cargo run -p lockstep-agent -- crdgen --argocd > crds/argoproj.io.yaml`"
    );
}

/// Every field path under a schema's `properties`; below an open object (any fields kept),
/// nothing more is listed.
fn schema_paths(schema: &Json, prefix: &str, out: &mut BTreeSet<String>) {
    if schema.get("x-kubernetes-preserve-unknown-fields") == Some(&Json::Bool(true)) {
        out.insert(format!("{prefix}.*"));
        return;
    }
    if let Some(props) = schema.get("properties").and_then(Json::as_object) {
        for (k, v) in props {
            let p = format!("{prefix}.{k}");
            out.insert(p.clone());
            schema_paths(v, &p, out);
        }
    }
    if let Some(items) = schema.get("items") {
        schema_paths(items, &format!("{prefix}[]"), out);
    }
}

/// Whether `path` is in `ours`, or under an open object of it.
fn covered(ours: &BTreeSet<String>, path: &str) -> bool {
    ours.contains(path)
        || path
            .char_indices()
            .filter(|(_, c)| *c == '.' || *c == '[')
            .any(|(i, _)| ours.contains(&format!("{}.*", &path[..i])))
}

/// Lockstep's Flux CRDs take every spec field of Flux's own (source-controller v1.9.3,
/// kustomize-controller v1.9.6, as `cargo xtask setup` builds them): a Flux repository's
/// objects are accepted as they are where Lockstep's CRDs stand in for Flux's.
#[test]
fn the_flux_crds_take_every_field_of_fluxs_own() {
    let dir = lockstep_tests::cache_dir().join("flux-crds");
    let ours: Vec<Json> = [
        serde_json::to_value(lockstep_agent::api::flux::GitRepository::crd()).unwrap(),
        serde_json::to_value(lockstep_agent::api::flux::Kustomization::crd()).unwrap(),
    ]
    .into();
    for (file, ours) in [
        ("source.toolkit.fluxcd.io_gitrepositories.yaml", &ours[0]),
        ("kustomize.toolkit.fluxcd.io_kustomizations.yaml", &ours[1]),
    ] {
        let text = std::fs::read_to_string(dir.join(file)).expect("Flux's CRDs (run `cargo xtask setup`)");
        let upstream = lockstep_formats::yaml::load_documents(&text).unwrap();
        let upstream = lockstep_formats::sops::stores::to_json(&upstream[0]).unwrap();
        let version = |crd: &Json| -> Json {
            crd["spec"]["versions"]
                .as_array()
                .unwrap()
                .iter()
                .find(|v| v["name"] == "v1")
                .unwrap()["schema"]["openAPIV3Schema"]["properties"]["spec"]
                .clone()
        };
        let (mut want, mut have) = (BTreeSet::new(), BTreeSet::new());
        schema_paths(&version(&upstream), "spec", &mut want);
        schema_paths(&version(ours), "spec", &mut have);
        let missing: Vec<&String> = want.iter().filter(|p| !covered(&have, p)).collect();
        assert!(
            missing.is_empty(),
            "{file}: fields of Flux's CRD missing from Lockstep's: {missing:?}"
        );
    }
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
