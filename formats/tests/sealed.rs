//! Sealed-secret round trips, scopes and property tests (interop with real kubeseal is in
//! `sealer-cli/tests/sealed_interop.rs`).

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::OnceLock;

use lockstep_formats::sealed::{self, KeyRing, Scope, SealOptions, SealingCert, UnsealingKey};
use proptest::prelude::*;
use serde_json::json;

fn pair() -> &'static (String, String) {
    static P: OnceLock<(String, String)> = OnceLock::new();
    P.get_or_init(|| {
        let (k, c) = sealed::generate_key_pair(2048, "test", 30).unwrap();
        (k.to_string(), c)
    })
}

fn ring() -> KeyRing {
    let mut r = KeyRing::new();
    r.push(UnsealingKey::from_pem("test", &pair().0).unwrap());
    r
}

fn cert() -> SealingCert {
    SealingCert::from_pem("test", pair().1.as_bytes()).unwrap()
}

fn secret(ns: &str, name: &str, ann: serde_json::Value) -> serde_json::Value {
    json!({"apiVersion": "v1", "kind": "Secret",
           "metadata": {"name": name, "namespace": ns, "labels": {"app": "x"}, "annotations": ann, "uid": "drop-me"},
           "type": "kubernetes.io/basic-auth",
           "data": {"username": "YWRtaW4="}, "stringData": {"password": "s3cret", "username": "wins"}})
}

#[test]
fn seal_then_unseal_and_scopes_bind_what_they_should() {
    let ring = ring();
    let ss = sealed::seal_secret(&secret("ns", "db", json!({})), &cert(), &SealOptions::default()).unwrap();
    assert_eq!(ss["spec"]["template"]["type"], "kubernetes.io/basic-auth");
    assert!(ss["spec"]["template"]["metadata"].get("uid").is_none());
    assert!(
        ss["spec"]["encryptedData"]["password"]
            .as_str()
            .unwrap()
            .starts_with("AQ"),
        "2048-bit prefix"
    );
    let s = sealed::unseal(&ss, &ring).unwrap();
    assert_eq!(s.data["password"].expose(), b"s3cret");
    assert_eq!(s.data["username"].expose(), b"wins", "stringData wins over data");
    assert_eq!(s.metadata["labels"]["app"], "x");

    // Strict: another name or namespace fails, naming the object, scope and items.
    for (ns, name) in [("ns", "other"), ("other", "db")] {
        let mut moved = ss.clone();
        moved["metadata"]["name"] = name.into();
        moved["metadata"]["namespace"] = ns.into();
        let e = sealed::unseal(&moved, &ring).unwrap_err().to_string();
        assert!(
            e.contains(&format!("{ns}/{name}")) && e.contains("scope strict") && e.contains("1 key tried"),
            "{e}"
        );
        assert!(e.contains("password") && e.contains("username"), "{e}");
    }
    // Namespace-wide: the name may change, the namespace may not.
    let opts = SealOptions {
        scope: Some(Scope::NamespaceWide),
        ..Default::default()
    };
    let nw = sealed::seal_secret(&secret("ns", "db", json!({})), &cert(), &opts).unwrap();
    let mut renamed = nw.clone();
    renamed["metadata"]["name"] = "other".into();
    assert!(sealed::unseal(&renamed, &ring).is_ok());
    renamed["metadata"]["namespace"] = "elsewhere".into();
    assert!(sealed::unseal(&renamed, &ring).is_err());
    // Cluster-wide: anywhere; and the scope comes from the SealedSecret's annotations only.
    let cw = sealed::seal_secret(
        &secret("ns", "db", json!({sealed::CLUSTER_WIDE: "true"})),
        &cert(),
        &SealOptions::default(),
    )
    .unwrap();
    let mut anywhere = cw.clone();
    anywhere["metadata"]["namespace"] = "x".into();
    anywhere["metadata"]["name"] = "y".into();
    assert!(sealed::unseal(&anywhere, &ring).is_ok());
    anywhere["metadata"]["annotations"] = json!({});
    assert!(
        sealed::unseal(&anywhere, &ring).is_err(),
        "dropping the annotation changes the label"
    );
}

#[test]
fn bad_input_is_named() {
    let ring = ring();
    let mut ss =
        sealed::seal_secret(&secret("ns", "db", json!({})), &cert(), &SealOptions::default()).unwrap();
    ss["spec"]["encryptedData"]["password"] = "%%%".into();
    let e = sealed::unseal(&ss, &ring).unwrap_err().to_string();
    assert!(e.contains("password (not base64)"), "{e}");
    ss["spec"]["encryptedData"]["password"] = "AgA=".into();
    assert!(
        sealed::unseal(&ss, &ring)
            .unwrap_err()
            .to_string()
            .contains("affected items: password")
    );
    let e = sealed::seal_secret(&json!({"kind": "ConfigMap"}), &cert(), &SealOptions::default()).unwrap_err();
    assert!(e.to_string().contains("not a Secret"));
    let e = sealed::seal_secret(
        &json!({"kind": "Secret", "metadata": {"name": "a"}}),
        &cert(),
        &SealOptions::default(),
    )
    .unwrap_err();
    assert!(e.to_string().contains("--allow-empty-data"));
    let opts = SealOptions {
        namespace: Some("b".into()),
        ..Default::default()
    };
    assert!(
        sealed::seal_secret(&secret("a", "x", json!({})), &cert(), &opts)
            .unwrap_err()
            .to_string()
            .contains("differs")
    );
    assert!(
        SealingCert::from_pem("c.pem", b"garbage")
            .unwrap_err()
            .to_string()
            .contains("c.pem")
    );
    assert!(
        UnsealingKey::from_pem("k.pem", "nope")
            .unwrap_err()
            .to_string()
            .contains("k.pem")
    );
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn any_value_round_trips(value in prop::collection::vec(any::<u8>(), 0..2048), ns in "[a-z]{1,10}", name in "[a-z]{1,10}") {
        let label = Scope::Strict.label(&ns, &name);
        let ct = sealed::hybrid_encrypt(&cert(), &value, &label).unwrap();
        let key = UnsealingKey::from_pem("t", &pair().0).unwrap();
        let pt = sealed::hybrid_decrypt(&key, &ct, &label).unwrap();
        prop_assert_eq!(pt.expose(), &value[..]);
    }

    #[test]
    fn arbitrary_sealed_secrets_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..600)) {
        let key = UnsealingKey::from_pem("t", &pair().0).unwrap();
        let _ = sealed::hybrid_decrypt(&key, &bytes, b"");
        if let Ok(v) = serde_json::from_slice::<serde_json::Value>(&bytes) {
            let _ = sealed::unseal(&v, &ring());
        }
    }
}
