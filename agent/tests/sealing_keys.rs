//! Sealing keys in a real cluster: renewal adds keys and keeps the old ones, a compromised key
//! is never used again, and keys made by the agent open what `kubeseal` sealed with their cert.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use lockstep_agent::sealing::{DEFAULT_RENEW_PERIOD, KeyStore};
use lockstep_formats::sealed::{self, SealOptions};
use lockstep_tests::controlplane::ControlPlane;
use serde_json::json;

#[tokio::test]
async fn renew_keep_old_keys_and_never_use_compromised_ones() {
    let cp = ControlPlane::shared();
    let ns = cp.namespace("keys").await.unwrap();
    let store = KeyStore::new(cp.client().await.unwrap(), &ns);
    let now = 2_000_000_000;
    assert!(store.load().await.unwrap().newest.is_none());
    let first = store
        .renew_if_due(now, DEFAULT_RENEW_PERIOD, None)
        .await
        .unwrap()
        .expect("no key yet: renew");
    // Fresh key: nothing due.
    assert!(
        store
            .renew_if_due(time_now(), DEFAULT_RENEW_PERIOD, None)
            .await
            .unwrap()
            .is_none()
    );
    let keys = store.load().await.unwrap();
    let (_, cert1) = keys.newest.clone().unwrap();
    let secret =
        json!({"kind": "Secret", "metadata": {"name": "db", "namespace": "prod"}, "stringData": {"p": "v"}});
    let old = sealed::seal_secret(&secret, &cert1, &SealOptions::default()).unwrap();

    // On demand (e.g. after the cut-off): a second key; the newest seals, both decrypt.
    let second = store
        .renew_if_due(time_now(), DEFAULT_RENEW_PERIOD, Some(time_now() + 60))
        .await
        .unwrap()
        .unwrap();
    assert_ne!(first, second);
    let keys = store.load().await.unwrap();
    assert_eq!(keys.ring.len(), 2);
    assert_eq!(keys.newest.as_ref().unwrap().0, second);
    assert!(
        sealed::unseal(&old, &keys.ring).is_ok(),
        "old keys stay for decryption"
    );

    // Compromised: gone from the ring; what only it could open no longer opens.
    store.mark_compromised(&first).await.unwrap();
    let keys = store.load().await.unwrap();
    assert_eq!(keys.ring.len(), 1);
    let err = sealed::unseal(&old, &keys.ring).unwrap_err().to_string();
    assert!(err.contains("no key could decrypt SealedSecret prod/db"), "{err}");
}

fn time_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}
