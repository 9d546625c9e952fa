//! The test that chose the YAML library (README, design notes). Each candidate must load real
//! sops output and a multi-document manifest and keep key order; the SOPS engine also needs the
//! comments (sops encrypts them, and two of its rules are decided by them).
//!
//! | candidate | sops output | multi-doc | key order | comments | maintained |
//! |---|---|---|---|---|---|
//! | serde_yaml 0.9 | yes | yes | yes | no | no (archived, `+deprecated`) |
//! | serde-saphyr 2 | yes | yes | yes (into an ordered map) | no | yes (kube-rs uses it) |
//! | granit-parser 2 (under serde-saphyr), via `lockstep_formats::yaml` | yes | yes | yes | yes | yes |

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use lockstep_formats::tree::{MapItem, Value};
use lockstep_formats::yaml;

/// Made by real sops 3.11 (see tests/example-repo/.sops.yaml).
const SOPS_OUTPUT: &str = include_str!("../../tests/example-repo/apps/web/base/web-db.sops.yaml");
const MANIFESTS: &str = "apiVersion: v1\nkind: Namespace\nmetadata: {name: a}\n---\nzeta: 1\nalpha: 2\nmid: 3\n---\n# only a comment\nkind: ConfigMap\n";
const TOP_KEYS: [&str; 6] = ["apiVersion", "kind", "metadata", "type", "stringData", "sops"];

#[test]
fn serde_yaml_loads_and_keeps_order_but_drops_comments() {
    let v: serde_yaml::Value = serde_yaml::from_str(SOPS_OUTPUT).unwrap();
    let keys: Vec<&str> = v
        .as_mapping()
        .unwrap()
        .keys()
        .map(|k| k.as_str().unwrap())
        .collect();
    assert_eq!(keys, TOP_KEYS);
    let docs: Vec<serde_yaml::Value> = serde_yaml::Deserializer::from_str(MANIFESTS)
        .map(|d| serde::Deserialize::deserialize(d).unwrap())
        .collect();
    assert_eq!(docs.len(), 3);
    let order: Vec<&str> = docs[1]
        .as_mapping()
        .unwrap()
        .keys()
        .map(|k| k.as_str().unwrap())
        .collect();
    assert_eq!(order, ["zeta", "alpha", "mid"]);
    // The encrypted comment (`#ENC[...]`) of stringData is gone: no way to decrypt or re-encrypt it.
    assert!(!format!("{v:?}").contains("type:comment"));
}

#[test]
fn serde_saphyr_loads_and_keeps_order_but_drops_comments() {
    let v: serde_json::Value = serde_saphyr::from_str(SOPS_OUTPUT).unwrap();
    let keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(keys, TOP_KEYS);
    let docs: Vec<serde_json::Value> = serde_saphyr::from_multiple(MANIFESTS).unwrap();
    assert_eq!(docs.len(), 3);
    let order: Vec<&str> = docs[1].as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(order, ["zeta", "alpha", "mid"]);
    assert!(!v.to_string().contains("type:comment"));
}

#[test]
fn granit_parser_tree_keeps_order_and_comments() {
    let docs = yaml::load_mappings(SOPS_OUTPUT).unwrap();
    let keys: Vec<&str> = docs[0]
        .iter()
        .filter_map(|i| {
            if let MapItem::Entry(k, _) = i {
                Some(k.as_str())
            } else {
                None
            }
        })
        .collect();
    assert_eq!(keys, TOP_KEYS);
    let Some(Value::Map(string_data)) = lockstep_formats::tree::get(&docs[0], "stringData") else {
        panic!()
    };
    assert!(matches!(&string_data[0], MapItem::Comment(c) if c.contains("type:comment")));
    let docs = yaml::load_documents(MANIFESTS).unwrap();
    assert_eq!(docs.len(), 3);
    let Value::Map(second) = &docs[1] else { panic!() };
    let order: Vec<&str> = second
        .iter()
        .filter_map(|i| {
            if let MapItem::Entry(k, _) = i {
                Some(k.as_str())
            } else {
                None
            }
        })
        .collect();
    assert_eq!(order, ["zeta", "alpha", "mid"]);
    let Value::Map(third) = &docs[2] else { panic!() };
    assert!(matches!(&third[0], MapItem::Comment(c) if c == " only a comment"));
}
