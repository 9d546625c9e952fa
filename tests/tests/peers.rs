//! The other peers the project installs start and answer: moto (AWS Secrets Manager), OpenBao
//! (Vault KV v2), kubeseal and the sealed-secrets controller.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use lockstep_tests::services::{self, http};

fn port(url: &str) -> u16 {
    url.rsplit(':').next().unwrap().parse().unwrap()
}

#[test]
fn moto_serves_secrets_manager() {
    let moto = services::moto().unwrap();
    let p = port(&moto.url);
    let headers = [
        ("Content-Type", "application/x-amz-json-1.1"),
        (
            "Authorization",
            "AWS4-HMAC-SHA256 Credential=test/20260101/us-east-1/secretsmanager/aws4_request, SignedHeaders=host, Signature=x",
        ),
    ];
    let target = |t: &'static str| [headers[0], headers[1], ("X-Amz-Target", t)];
    let (code, body) = http(
        p,
        "POST",
        "/",
        &target("secretsmanager.CreateSecret"),
        br#"{"Name":"db","SecretString":"{\"password\":\"p\"}"}"#,
    )
    .unwrap();
    assert_eq!(code, 200, "{body}");
    let (code, body) = http(
        p,
        "POST",
        "/",
        &target("secretsmanager.GetSecretValue"),
        br#"{"SecretId":"db"}"#,
    )
    .unwrap();
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("password"), "{body}");
}

#[test]
fn openbao_dev_server_serves_kv_v2() {
    let bao = services::openbao().unwrap();
    let p = port(&bao.url);
    let auth = [("X-Vault-Token", bao.token.as_str())];
    let (code, body) = http(
        p,
        "POST",
        "/v1/secret/data/app",
        &auth,
        br#"{"data":{"password":"p"}}"#,
    )
    .unwrap();
    assert_eq!(code, 200, "{body}");
    let (code, body) = http(p, "GET", "/v1/secret/data/app", &auth, b"").unwrap();
    assert_eq!(code, 200, "{body}");
    assert!(body.contains(r#""password":"p""#), "{body}");
    let (code, _) = http(
        p,
        "GET",
        "/v1/secret/data/app",
        &[("X-Vault-Token", "wrong")],
        b"",
    )
    .unwrap();
    assert_eq!(code, 403);
}

#[test]
fn an_outage_is_a_refused_connection() {
    let mut bao = services::openbao().unwrap();
    let p = port(&bao.url);
    bao.stop();
    assert!(http(p, "GET", "/v1/sys/health", &[], b"").is_err());
}

#[test]
fn kubeseal_and_the_controller_are_the_pinned_release() {
    for (bin, expect) in [
        ("kubeseal", "kubeseal version: v0.36.6"),
        ("sealed-secrets-controller", "controller version: v0.36.6"),
    ] {
        let out = std::process::Command::new(lockstep_tests::peer(bin))
            .arg("--version")
            .output()
            .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(text.contains(expect), "{bin}: {text}");
    }
}
