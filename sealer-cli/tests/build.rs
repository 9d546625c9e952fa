//! `lockstep build` on a kustomize overlay whose base holds a SOPS Secret (real sops): the
//! objects as the agent renders them, ciphertext unless `--decrypt`, Secret values redacted
//! unless `--show-secrets`, refusals naming the kustomization and the entry; on a chart with a
//! SOPS values file, the objects `helm template` renders with the same values.

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
        .env("LOCKSTEP_HELM_HELPER", lockstep_tests::peer("lockstep-helm"))
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

/// `(kind, name)` of every document of a multi-document YAML text.
fn kinds_and_names(text: &str) -> std::collections::BTreeSet<(String, String)> {
    lockstep_formats::yaml::load_documents(text)
        .unwrap()
        .iter()
        .map(|d| lockstep_formats::sops::stores::to_json(d).unwrap())
        .filter(|o| o.get("kind").is_some())
        .map(|o| {
            let name = o["metadata"]["name"]
                .as_str()
                .or(o["metadata"]["generateName"].as_str())
                .unwrap()
                .to_owned();
            (o["kind"].as_str().unwrap().to_owned(), name)
        })
        .collect()
}

#[test]
fn build_renders_a_chart_with_a_sops_values_file_as_helm_template_does() {
    let dir = tempfile::tempdir().unwrap();
    let r = dir.path();
    let key = lockstep_tests::AgeKey::generate(r, "age.txt");
    let write = |p: &str, t: &str| {
        std::fs::create_dir_all(r.join(p).parent().unwrap()).unwrap();
        std::fs::write(r.join(p), t).unwrap();
    };
    std::fs::create_dir_all(r.join(".git")).unwrap();
    write(
        "charts/app/Chart.yaml",
        "apiVersion: v2\nname: app\nversion: 0.1.0\n",
    );
    write(
        "charts/app/values.yaml",
        "greeting: hello\ndb:\n  password: \"\"\n",
    );
    write(
        "charts/app/templates/secret.yaml",
        "apiVersion: v1\nkind: Secret\nmetadata:\n  name: {{ .Release.Name }}-db\nstringData:\n  password: {{ .Values.db.password | quote }}\n",
    );
    write(
        "charts/app/templates/cm.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {{ .Release.Name }}-config\ndata:\n  greeting: {{ .Values.greeting | quote }}\n  dsn: \"postgres://app:{{ .Values.db.password }}@db\"\n",
    );
    write(
        "charts/app/templates/migrate.yaml",
        "apiVersion: batch/v1\nkind: Job\nmetadata:\n  generateName: {{ .Release.Name }}-migrate-\n  annotations:\n    argocd.argoproj.io/hook: PreSync\nspec:\n  template:\n    spec:\n      restartPolicy: Never\n      containers: [{name: m, image: busybox}]\n",
    );
    let plain = format!("db:\n  password: {CANARY}\n");
    write("charts/app/secrets.yaml", &plain);
    lockstep_tests::sops_encrypt(&[&r.join("charts/app/secrets.yaml")], &key.recipient, r);
    let id = key.path.to_str().unwrap();

    let out = lockstep(&["build", "charts/app", "-f", "secrets.yaml"], r);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("charts/app/secrets.yaml: a SOPS-encrypted values file, but --decrypt was not given"),
        "{err}"
    );

    let args = [
        "build",
        "charts/app",
        "-f",
        "secrets.yaml",
        "--set",
        "greeting=hi",
        "--release-name",
        "web",
        "--decrypt",
        "--identity",
        id,
    ];
    let out = lockstep(&args, r);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.contains("# Source: app/templates/cm.yaml (ConfigMap web-config)"),
        "{text}"
    );
    assert!(
        text.contains("greeting: hi") && text.contains("password: <redacted>"),
        "{text}"
    );
    assert!(
        text.contains("dsn: <redacted>"),
        "a value inside another string: {text}"
    );
    assert!(!text.contains(CANARY), "{text}");

    let mut shown = args.to_vec();
    shown.push("--show-secrets");
    let out = lockstep(&shown, r);
    assert!(String::from_utf8(out.stdout).unwrap().contains(CANARY));

    // The same objects as `helm template` with the plaintext values.
    let plain_file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(plain_file.path(), &plain).unwrap();
    let helm = Command::new(lockstep_tests::peer("helm"))
        .args(["template", "web", "charts/app", "-f"])
        .arg(plain_file.path())
        .args(["--set", "greeting=hi"])
        .current_dir(r)
        .output()
        .unwrap();
    assert!(helm.status.success(), "{}", String::from_utf8_lossy(&helm.stderr));
    assert_eq!(
        kinds_and_names(&text),
        kinds_and_names(&String::from_utf8(helm.stdout).unwrap())
    );
}
