//! The README's first command, `cargo xtask demo`, as a test: the same
//! [`lockstep_tests::demo::run`] on a fresh control plane, with this build's agent binary. It
//! must end green: every object of the example repository in place and ready, the Secrets
//! written before the Deployment that mounts them, a deleted Secret put back, and none of the
//! demo's secret values in its output or in the agent's log.

use std::path::PathBuf;

use lockstep_tests::demo::{Options, VALUES, run};

#[tokio::test]
async fn the_demo_runs_green() {
    let opts = Options {
        root: PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".."),
        agent: PathBuf::from(env!("CARGO_BIN_EXE_lockstep-agent")),
        keep: false,
    };
    let mut out = Vec::new();
    let report = match run(&opts, &mut out).await {
        Ok(r) => r,
        Err(e) => panic!("the demo failed: {e}\n{}", String::from_utf8_lossy(&out)),
    };
    let out = String::from_utf8(out).unwrap();
    println!("{out}");

    // Progress, step by step, then the table.
    for step in 1..=6 {
        assert!(out.contains(&format!("[{step}/6] ")), "{out}");
    }
    let row = |kind: &str, name: &str| {
        report
            .rows
            .iter()
            .find(|r| r.kind == kind && r.name == name)
            .unwrap_or_else(|| panic!("no {kind} {name} in the table:\n{out}"))
    };
    for (kind, name, from, state) in [
        (
            "Secret",
            "web/demo-web-db",
            "SOPS file, decrypted in the cluster",
            "2 keys",
        ),
        (
            "Secret",
            "web/backend-credentials",
            "SOPS file, decrypted in the cluster",
            "3 keys",
        ),
        ("SealedSecret", "web/web-session", "Git", "Synced=True Unsealed"),
        (
            "Secret",
            "web/web-session",
            "SealedSecret, unsealed in the cluster",
            "1 key",
        ),
        ("SecretStore", "web/aws", "Git", "Ready=True Valid"),
        ("SecretStore", "web/vault", "Git", "Ready=True Valid"),
        ("ExternalSecret", "web/web-api", "Git", "Ready=True SecretSynced"),
        (
            "ExternalSecret",
            "web/web-token",
            "Git",
            "Ready=True SecretSynced",
        ),
        (
            "Secret",
            "web/web-api",
            "ExternalSecret, AWS Secrets Manager (moto)",
            "1 key",
        ),
        (
            "Secret",
            "web/web-token",
            "ExternalSecret, Vault API (OpenBao)",
            "1 key",
        ),
    ] {
        let r = row(kind, name);
        assert_eq!(
            (r.from.as_str(), r.state.as_str()),
            (from, state),
            "{kind} {name}"
        );
    }
    // Which object came from which overlay: the kustomize build and the file in it.
    assert_eq!(
        row("Secret", "web/demo-web-db").source,
        "apps/web/base/web-db.sops.yaml (clusters/demo/web)"
    );
    assert_eq!(
        row("Deployment", "web/demo-web").source,
        "apps/web/base/deployment.yaml (clusters/demo/web)"
    );
    assert_eq!(
        row("Secret", "web/backend-credentials").source,
        "clusters/demo/secrets/backend-credentials.sops.yaml"
    );
    let generated = report
        .rows
        .iter()
        .find(|r| r.name.starts_with("web/demo-web-env-"))
        .unwrap_or_else(|| panic!("no generated Secret in the table:\n{out}"));
    assert_eq!(
        (
            generated.from.as_str(),
            generated.state.as_str(),
            generated.source.as_str()
        ),
        (
            "SOPS dotenv, decrypted in the cluster",
            "2 keys",
            "secretGenerator (clusters/demo/web)"
        )
    );
    let deployment = row("Deployment", "web/demo-web").resource_version;
    for secret in [
        "web/demo-web-db",
        generated.name.as_str(),
        "web/web-session",
        "web/web-api",
        "web/web-token",
    ] {
        assert!(
            row("Secret", secret).resource_version < deployment,
            "{secret} was written after the Deployment"
        );
    }
    assert_eq!(report.rows.len(), 12, "{out}");
    assert!(out.contains("Written before the Deployment that mounts them (resourceVersions): 5 of 5"));
    assert!(report.heal_seconds < 5.0, "healed in {} s", report.heal_seconds);
    assert_eq!(report.revision.len(), 40);

    // No planted value anywhere: not in the demo's output, not in the agent's log.
    assert!(
        report.agent_log.lines().count() > 3,
        "the agent logged: {}",
        report.agent_log
    );
    for v in VALUES {
        assert!(!out.contains(v), "the demo printed a secret value");
        assert!(!report.agent_log.contains(v), "the agent logged a secret value");
    }
    println!(
        "demo: synced in {:.2} s after the agent started; a deleted Secret back in {:.2} s",
        report.sync_seconds, report.heal_seconds
    );
}
