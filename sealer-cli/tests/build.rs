//! `lockstep build` on a kustomize overlay whose base holds a SOPS Secret (real sops): the
//! objects as the agent renders them, ciphertext unless `--decrypt`, Secret values redacted
//! unless `--show-secrets`, refusals naming the kustomization and the entry.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::{Command, Output};

const CANARY: &str = "CANARY-cli-build-5b1d";

fn lockstep(args: &[&str], cwd: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_lockstep"))
        .args(args)
        .current_dir(cwd)
        .env(
            "LOCKSTEP_KUSTOMIZE_HELPER",
            lockstep_tests::peer("lockstep-kustomize"),
        )
        .env_remove("SOPS_AGE_KEY")
        .env_remove("SOPS_AGE_KEY_FILE")
        .env("HOME", cwd)
        .output()
        .unwrap()
}

fn tree() -> (tempfile::TempDir, lockstep_tests::AgeKey) {
    let dir = tempfile::tempdir().unwrap();
    let r = dir.path();
    let key = lockstep_tests::AgeKey::generate(r, "age.txt");
    let write = |p: &str, t: &str| {
        std::fs::create_dir_all(r.join(p).parent().unwrap()).unwrap();
        std::fs::write(r.join(p), t).unwrap();
    };
    std::fs::create_dir_all(r.join(".git")).unwrap();
    write("base/kustomization.yaml", "resources: [db.sops.yaml, cm.yaml]\n");
    write(
        "base/cm.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: settings\n",
    );
    write(
        "base/db.sops.yaml",
        &format!("apiVersion: v1\nkind: Secret\nmetadata:\n  name: db\nstringData:\n  password: {CANARY}\n"),
    );
    write(
        "overlays/prod/kustomization.yaml",
        "resources: [../../base]\nnamePrefix: prod-\nnamespace: prod\n",
    );
    lockstep_tests::sops_encrypt(&[&r.join("base/db.sops.yaml")], &key.recipient, r);
    (dir, key)
}

#[test]
fn build_prints_the_overlay_as_the_agent_renders_it() {
    let (dir, key) = tree();
    let r = dir.path();
    let out = lockstep(&["build", "overlays/prod"], r);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.contains("# Source: base/cm.yaml (kustomize build overlays/prod)"),
        "{text}"
    );
    assert!(
        text.contains("name: prod-settings") && text.contains("namespace: prod"),
        "{text}"
    );
    assert!(text.contains("<redacted>") && !text.contains(CANARY), "{text}");

    let id = key.path.to_str().unwrap();
    let out = lockstep(&["build", "overlays/prod", "--decrypt", "--identity", id], r);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.contains("name: prod-db") && text.contains("password: <redacted>"),
        "{text}"
    );
    assert!(!text.contains("sops:") && !text.contains(CANARY), "{text}");

    let out = lockstep(
        &[
            "build",
            "overlays/prod",
            "--decrypt",
            "--identity",
            id,
            "--show-secrets",
        ],
        r,
    );
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains(&format!("password: {CANARY}")), "{text}");

    // From inside the tree, the repository is found by its .git.
    let out = lockstep(&["build", "."], &r.join("overlays/prod"));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn build_refuses_a_remote_base_naming_the_kustomization_and_entry() {
    let (dir, _) = tree();
    let r = dir.path();
    std::fs::write(
        r.join("overlays/prod/kustomization.yaml"),
        "resources:\n- ../../base\n- github.com/example/infra//base?ref=v1\n",
    )
    .unwrap();
    let out = lockstep(&["build", "overlays/prod"], r);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("overlays/prod/kustomization.yaml: resources entry `github.com/example/infra//base?ref=v1`: remote bases"),
        "{err}"
    );
}
