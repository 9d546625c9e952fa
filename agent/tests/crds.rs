//! `crds/sync.yaml` is generated from the Rust types; this fails when it is stale, and the
//! real API server accepts it.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[test]
fn the_committed_crd_is_not_stale() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../crds/sync.yaml");
    let committed = std::fs::read_to_string(&path).unwrap();
    let generated = lockstep_agent::api::crd_yaml().unwrap();
    assert!(
        committed == generated,
        "crds/sync.yaml is stale: run `cargo run -p lockstep-agent -- crdgen > crds/sync.yaml`"
    );
}

#[test]
fn the_committed_external_secrets_crds_are_not_stale() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../crds/external-secrets.io.yaml");
    let committed = std::fs::read_to_string(&path).unwrap();
    let generated = lockstep_agent::external::api::crds_yaml().unwrap();
    assert!(
        committed == generated,
        "crds/external-secrets.io.yaml is stale: run `cargo run -p lockstep-agent -- crdgen --external-secrets > crds/external-secrets.io.yaml`"
    );
}
