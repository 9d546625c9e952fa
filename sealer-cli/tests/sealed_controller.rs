//! The real sealed-secrets controller, in a real cluster: it unseals what Lockstep seals, and the
//! key it generated works in Lockstep once exported the documented way (the migration path:
//! `kubectl get secret -l sealedsecrets.bitnami.com/sealed-secrets-key -o yaml`).

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::Duration;

use common::{Env, ok, peer, run};
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DynamicObject, ListParams, Patch, PatchParams};
use kube::discovery::ApiResource;
use lockstep_tests::controlplane::ControlPlane;
use lockstep_tests::services;
use serde_json::json;

/// The SealedSecret CRD, reduced to what the controller needs (`crds/` will carry the full one).
fn crd() -> CustomResourceDefinition {
    serde_json::from_value(json!({
        "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": { "name": "sealedsecrets.bitnami.com" },
        "spec": {
            "group": "bitnami.com", "scope": "Namespaced",
            "names": { "kind": "SealedSecret", "plural": "sealedsecrets", "singular": "sealedsecret", "listKind": "SealedSecretList" },
            "versions": [{ "name": "v1alpha1", "served": true, "storage": true, "subresources": { "status": {} },
                "schema": { "openAPIV3Schema": { "type": "object", "x-kubernetes-preserve-unknown-fields": true } } }]
        }
    }))
    .unwrap()
}

async fn wait_for<T>(what: &str, secs: u64, mut f: impl AsyncFnMut() -> Option<T>) -> T {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {secs} s waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[tokio::test]
async fn the_real_controller_and_lockstep_share_keys_both_ways() {
    let cp = ControlPlane::shared();
    let client = cp.client().await.unwrap();
    let ns = cp.namespace("sealed").await.unwrap();
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    crds.patch(
        "sealedsecrets.bitnami.com",
        &PatchParams::apply("lockstep-test").force(),
        &Patch::Apply(crd()),
    )
    .await
    .unwrap();
    let admin: k8s_openapi::api::rbac::v1::ClusterRoleBinding = serde_json::from_value(json!({
        "metadata": { "name": format!("{ns}-controller") },
        "roleRef": { "apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "cluster-admin" },
        "subjects": [{ "kind": "ServiceAccount", "name": "sealed-secrets", "namespace": ns }]
    }))
    .unwrap();
    Api::<k8s_openapi::api::rbac::v1::ClusterRoleBinding>::all(client.clone())
        .create(&Default::default(), &admin)
        .await
        .unwrap();
    let listen = format!("--listen-addr=127.0.0.1:{}", free());
    let metrics = format!("--listen-metrics-addr=127.0.0.1:{}", free());
    let controller = services::in_cluster(
        cp,
        "sealed-secrets-controller",
        &peer("sealed-secrets-controller"),
        &[&listen, &metrics, "--all-namespaces=false", "--key-size=2048"],
        &ns,
        "sealed-secrets",
    )
    .await
    .unwrap();

    // The controller generates its key Secret in its namespace.
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns);
    let key_secret = wait_for("the controller's key", 60, async || {
        let l = secrets
            .list(&ListParams::default().labels("sealedsecrets.bitnami.com/sealed-secrets-key=active"))
            .await
            .ok()?;
        l.items.into_iter().next()
    })
    .await;
    assert_eq!(
        key_secret.type_.as_deref(),
        Some("kubernetes.io/tls"),
        "log: {}",
        controller.log().display()
    );

    // The documented backup, handed to Lockstep unchanged.
    let env = Env::new();
    let backup = ok(
        run(
            std::process::Command::new(peer("kubectl"))
                .arg("--kubeconfig")
                .arg(cp.kubeconfig())
                .args([
                    "get",
                    "secret",
                    "-n",
                    &ns,
                    "-l",
                    "sealedsecrets.bitnami.com/sealed-secrets-key",
                    "-o",
                    "yaml",
                ]),
            env.dir.path(),
            None,
        ),
        "kubectl backup",
    );
    env.write("backup.yaml", &backup);
    let cert = key_secret.data.as_ref().unwrap()["tls.crt"].0.clone();
    env.write("controller.crt", &cert);

    let plain = format!(
        "apiVersion: v1\nkind: Secret\nmetadata:\n  name: app\n  namespace: {ns}\nstringData:\n  token: from-lockstep\n"
    );
    env.write("app.yaml", plain.as_bytes());

    // Lockstep seals → the real controller unseals in the cluster.
    let sealed = ok(
        env.lockstep(None, &["seal", "--cert", "controller.crt", "-f", "app.yaml"]),
        "lockstep seal",
    );
    let obj: DynamicObject = serde_json::from_slice(&sealed).unwrap();
    let ss_ar = ApiResource {
        group: "bitnami.com".into(),
        version: "v1alpha1".into(),
        api_version: "bitnami.com/v1alpha1".into(),
        kind: "SealedSecret".into(),
        plural: "sealedsecrets".into(),
    };
    Api::<DynamicObject>::namespaced_with(client.clone(), &ns, &ss_ar)
        .create(&Default::default(), &obj)
        .await
        .unwrap();
    let unsealed = wait_for(
        "the controller to unseal Lockstep's SealedSecret",
        60,
        async || secrets.get_opt("app").await.ok().flatten(),
    )
    .await;
    assert_eq!(unsealed.data.unwrap()["token"].0, b"from-lockstep");

    // kubeseal seals with the controller's certificate → Lockstep unseals with the backup.
    let mut k = std::process::Command::new(peer("kubeseal"));
    k.args(["--cert", "controller.crt", "-o", "json"])
        .current_dir(env.dir.path());
    let by_kubeseal = ok(run(&mut k, env.dir.path(), Some(plain.as_bytes())), "kubeseal");
    let out = ok(
        env.lockstep_with(
            None,
            &[
                "seal",
                "--recovery-unseal",
                "--recovery-private-key",
                "backup.yaml",
                "-o",
                "yaml",
            ],
            Some(&by_kubeseal),
        ),
        "lockstep unseal with the controller's key",
    );
    assert!(
        String::from_utf8_lossy(&out).contains(&lockstep_formats::sealed::encode_base64(b"from-lockstep"))
    );
    drop(controller);
}

fn free() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}
