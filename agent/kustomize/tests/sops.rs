//! SOPS after the build, with files the real `sops` encrypted: a Secret in a base, a
//! secretGenerator over a SOPS dotenv file and over a SOPS binary file, built under an overlay
//! that sets a namespace, a name prefix and labels; then a tampered original, a patched
//! `ENC[]`, a moved value and a merged generator key, each refused naming the file and key.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::process::Command;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use lockstep_formats::sops::Identities;
use lockstep_kustomize::{Built, Encrypted, Helper, build, decrypt};

const CANARY_DB: &str = "CANARY-kustomize-db-9f1c";
const CANARY_ENV: &str = "CANARY-kustomize-env-77ab";
const CANARY_KEY: &str = "CANARY-kustomize-keyfile-3d2e";

struct Tree {
    files: BTreeMap<String, Vec<u8>>,
    ids: Identities,
    _dir: tempfile::TempDir,
}

fn tree(overlay: &str) -> Tree {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let key = lockstep_tests::AgeKey::generate(root, "key.txt");
    let write = |p: &str, text: &str| {
        let p = root.join("repo").join(p);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    };
    write(
        "base/kustomization.yaml",
        "resources:\n- deploy.yaml\n- db.sops.yaml\nsecretGenerator:\n- name: app-env\n  envs:\n  - app.env\n- name: tls\n  files:\n  - tls.key=key.bin\n",
    );
    write(
        "base/deploy.yaml",
        "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\nspec:\n  template:\n    spec:\n      containers:\n      - name: web\n        image: nginx\n        envFrom:\n        - secretRef:\n            name: app-env\n",
    );
    write(
        "base/db.sops.yaml",
        &format!(
            "apiVersion: v1\nkind: Secret\nmetadata:\n  name: db\nstringData:\n  password: {CANARY_DB}\n  user: admin\n"
        ),
    );
    write("base/app.env", &format!("API_TOKEN={CANARY_ENV}\nMODE=strict\n"));
    write("base/key.bin", CANARY_KEY);
    write("overlays/prod/kustomization.yaml", overlay);
    write(
        "overlays/prod/db-patch.sops.yaml",
        "apiVersion: v1\nkind: Secret\nmetadata:\n  name: db\nstringData:\n  password: patched\n",
    );
    let repo = root.join("repo");
    lockstep_tests::sops_encrypt(
        &[
            &repo.join("base/db.sops.yaml"),
            &repo.join("overlays/prod/db-patch.sops.yaml"),
        ],
        &key.recipient,
        root,
    );
    lockstep_tests::sops_encrypt_all(
        &[&repo.join("base/app.env"), &repo.join("base/key.bin")],
        &key.recipient,
        root,
    );
    let mut files = BTreeMap::new();
    for f in [
        "base/kustomization.yaml",
        "base/deploy.yaml",
        "base/db.sops.yaml",
        "base/app.env",
        "base/key.bin",
        "overlays/prod/kustomization.yaml",
        "overlays/prod/db-patch.sops.yaml",
    ] {
        files.insert(f.to_owned(), std::fs::read(repo.join(f)).unwrap());
    }
    let mut ids = Identities::new();
    ids.add_file(&key.path).unwrap();
    Tree {
        files,
        ids,
        _dir: dir,
    }
}

const OVERLAY: &str =
    "resources:\n- ../../base\nnamespace: prod\nnamePrefix: prod-\nlabels:\n- pairs:\n    env: prod\n";

fn helper() -> Helper {
    Helper::new(lockstep_tests::peer("lockstep-kustomize"))
}

fn find<'a>(built: &'a [Built], kind: &str, prefix: &str) -> &'a Built {
    built
        .iter()
        .find(|b| {
            b.object["kind"] == kind
                && b.object["metadata"]["name"]
                    .as_str()
                    .is_some_and(|n| n.starts_with(prefix))
        })
        .unwrap_or_else(|| panic!("no {kind} {prefix}*"))
}

fn assert_no_canary(text: &str) {
    for c in [CANARY_DB, CANARY_ENV, CANARY_KEY] {
        assert!(!text.contains(c), "a canary leaked: {text}");
    }
}

#[test]
fn sops_values_are_decrypted_after_the_build_as_kustomize_placed_them() {
    let t = tree(OVERLAY);
    let built = build(&helper(), &t.files, "overlays/prod").unwrap();
    assert_no_canary(&format!("{built:?}"));

    let db = find(&built, "Secret", "prod-db");
    assert_eq!(
        db.encrypted,
        Some(Encrypted::Resource("base/db.sops.yaml".into()))
    );
    assert_eq!(
        db.origin_label(),
        "base/db.sops.yaml (kustomize build overlays/prod)"
    );
    let plain = decrypt(&t.files, db, Some(&t.ids)).unwrap();
    assert_eq!(plain["stringData"]["password"], CANARY_DB);
    assert_eq!(plain["stringData"]["user"], "admin");
    assert_eq!(plain["metadata"]["namespace"], "prod");
    assert_eq!(plain["metadata"]["labels"]["env"], "prod");
    assert!(plain.get("sops").is_none());
    assert!(
        plain["metadata"].get("annotations").is_none(),
        "build annotations removed"
    );

    let env = find(&built, "Secret", "prod-app-env-");
    assert_eq!(
        env.encrypted,
        Some(Encrypted::Generated {
            files: vec![],
            env: Some("base/app.env".into())
        })
    );
    let plain = decrypt(&t.files, env, Some(&t.ids)).unwrap();
    let data = plain["data"].as_object().unwrap();
    assert_eq!(
        data.keys().collect::<Vec<_>>(),
        ["API_TOKEN", "MODE"],
        "sops_* keys dropped"
    );
    assert_eq!(
        B64.decode(data["API_TOKEN"].as_str().unwrap()).unwrap(),
        CANARY_ENV.as_bytes()
    );
    assert_eq!(
        find(&built, "Deployment", "prod-web").object["spec"]["template"]["spec"]["containers"][0]["envFrom"]
            [0]["secretRef"]["name"],
        env.object["metadata"]["name"],
        "the workload refers to the hashed name"
    );

    let tls = find(&built, "Secret", "prod-tls-");
    let plain = decrypt(&t.files, tls, Some(&t.ids)).unwrap();
    assert_eq!(
        B64.decode(plain["data"]["tls.key"].as_str().unwrap()).unwrap(),
        CANARY_KEY.as_bytes()
    );

    // The hash suffix is kustomize's, over ciphertext: the CLI over the same files names the
    // Secrets the same, and no plaintext digest reaches a name.
    let dir = tempfile::tempdir().unwrap();
    for (f, b) in &t.files {
        let p = dir.path().join(f);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, b).unwrap();
    }
    let out = Command::new(lockstep_tests::peer("kustomize"))
        .args(["build", "overlays/prod"])
        .current_dir(dir.path())
        .output()
        .unwrap();
    let cli = String::from_utf8(out.stdout).unwrap();
    for b in [env, tls] {
        assert!(cli.contains(&format!(
            "name: {}\n",
            b.object["metadata"]["name"].as_str().unwrap()
        )));
    }
}

fn refused(t: &Tree) -> String {
    let built = build(&helper(), &t.files, "overlays/prod").unwrap();
    let errors: Vec<String> = built
        .iter()
        .filter_map(|b| decrypt(&t.files, b, Some(&t.ids)).err())
        .map(|e| e.to_string())
        .collect();
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert_no_canary(&errors[0]);
    errors[0].clone()
}

#[test]
fn a_tampered_original_fails_its_mac_naming_the_file() {
    let mut t = tree(OVERLAY);
    let f = t.files.get_mut("base/db.sops.yaml").unwrap();
    *f = String::from_utf8(f.clone())
        .unwrap()
        .replace("name: db", "name: dbx")
        .into_bytes();
    let built = build(&helper(), &t.files, "overlays/prod").unwrap();
    let db = find(&built, "Secret", "prod-dbx");
    let e = decrypt(&t.files, db, Some(&t.ids)).unwrap_err().to_string();
    assert!(e.starts_with("base/db.sops.yaml: "), "{e}");
    assert!(e.to_lowercase().contains("mac"), "{e}");
}

#[test]
fn a_patch_over_an_encrypted_value_is_refused_naming_file_and_key() {
    let t = tree(&format!(
        "{OVERLAY}patches:\n- target:\n    kind: Secret\n    name: db\n  patch: |-\n    - op: replace\n      path: /stringData/password\n      value: hunter2\n"
    ));
    let e = refused(&t);
    assert_eq!(
        e,
        "base/db.sops.yaml: `stringData.password`: an encrypted value was changed or removed by a patch (in Secret prod-db); nothing was applied"
    );
}

#[test]
fn an_encrypted_value_moved_to_another_key_is_refused() {
    let t = tree(&format!(
        "{OVERLAY}patches:\n- target:\n    kind: Secret\n    name: db\n  patch: |-\n    - op: move\n      from: /stringData/password\n      path: /stringData/admin\n"
    ));
    let e = refused(&t);
    assert!(
        e.starts_with("base/db.sops.yaml: `stringData.admin`: an encrypted value was moved here from `stringData.password`"),
        "{e}"
    );
}

#[test]
fn an_encrypted_patch_is_refused() {
    // Its values could not be checked against any resource file: the merged `sops` block is
    // the patch's.
    let t = tree(&format!("{OVERLAY}patches:\n- path: db-patch.sops.yaml\n"));
    let e = build(&helper(), &t.files, "overlays/prod")
        .unwrap_err()
        .to_string();
    assert_no_canary(&e);
    assert_eq!(
        e,
        "Secret prod-db (kustomize build overlays/prod): Secret prod-db carries a `sops` block that is none of the build's SOPS resources (SOPS-encrypted patches are not supported: their values could not be verified)"
    );
}

#[test]
fn a_generator_merge_over_a_sops_key_is_refused() {
    let t = tree(&format!(
        "{OVERLAY}secretGenerator:\n- name: app-env\n  behavior: merge\n  literals:\n  - API_TOKEN=overridden\n"
    ));
    let e = refused(&t);
    assert!(
        e.starts_with("base/app.env: `API_TOKEN`: `data.API_TOKEN` is not the file's value"),
        "{e}"
    );
}

#[test]
fn without_keys_the_file_to_decrypt_is_named() {
    let t = tree(OVERLAY);
    let built = build(&helper(), &t.files, "overlays/prod").unwrap();
    let e = decrypt(&t.files, find(&built, "Secret", "prod-db"), None)
        .unwrap_err()
        .to_string();
    assert!(
        e.starts_with("base/db.sops.yaml is SOPS-encrypted, but no decryption keys"),
        "{e}"
    );
    let plain = decrypt(&t.files, find(&built, "Deployment", "prod-web"), None).unwrap();
    assert_eq!(plain["metadata"]["namespace"], "prod");
}
