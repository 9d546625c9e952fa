//! Proof that the test control plane is a real Kubernetes API server: server-side apply with
//! field ownership, CRDs with schema validation and custom objects, RBAC that refuses a
//! restricted identity, garbage collection through ownerReferences, and kubectl against it.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DynamicObject, GroupVersionKind, Patch, PatchParams, PostParams};
use kube::discovery::ApiResource;
use lockstep_tests::controlplane::ControlPlane;
use serde_json::json;

fn cp() -> &'static ControlPlane {
    ControlPlane::shared()
}

#[tokio::test]
async fn server_side_apply_records_field_managers() {
    let cp = cp();
    eprintln!("control plane up in {:.1} s", cp.start_seconds);
    let ns = cp.namespace("ssa").await.unwrap();
    let client = cp.client().await.unwrap();
    let api: Api<Deployment> = Api::namespaced(client, &ns);
    let desired = json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": { "name": "web", "labels": { "app": "web" } },
        "spec": {
            "replicas": 2,
            "selector": { "matchLabels": { "app": "web" } },
            "template": {
                "metadata": { "labels": { "app": "web" } },
                "spec": { "containers": [{ "name": "web", "image": "registry.k8s.io/pause:3.10" }] }
            }
        }
    });
    let pp = PatchParams::apply("lockstep-test").force();
    api.patch("web", &pp, &Patch::Apply(&desired)).await.unwrap();

    // A second manager takes one field; the apiserver tracks both owners.
    let scale = json!({ "apiVersion": "apps/v1", "kind": "Deployment", "metadata": { "name": "web" }, "spec": { "replicas": 5 } });
    api.patch(
        "web",
        &PatchParams::apply("hpa-like").force(),
        &Patch::Apply(&scale),
    )
    .await
    .unwrap();

    let got = api.get("web").await.unwrap();
    let managers: Vec<(String, String)> = got
        .metadata
        .managed_fields
        .unwrap_or_default()
        .into_iter()
        .map(|m| (m.manager.unwrap_or_default(), m.operation.unwrap_or_default()))
        .collect();
    assert!(
        managers.contains(&("lockstep-test".into(), "Apply".into())),
        "{managers:?}"
    );
    assert!(
        managers.contains(&("hpa-like".into(), "Apply".into())),
        "{managers:?}"
    );
    assert_eq!(got.spec.unwrap().replicas, Some(5));

    // Without force, re-applying a field another manager owns is a conflict (409).
    let err = api
        .patch(
            "web",
            &PatchParams::apply("lockstep-test"),
            &Patch::Apply(&desired),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, kube::Error::Api(ref s) if s.code == 409), "{err}");
}

#[tokio::test]
async fn crds_are_validated_and_custom_objects_stored() {
    let cp = cp();
    let client = cp.client().await.unwrap();
    let ns = cp.namespace("crd").await.unwrap();
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let crd: CustomResourceDefinition = serde_json::from_value(json!({
        "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": { "name": "widgets.test.lockstep.dev" },
        "spec": {
            "group": "test.lockstep.dev",
            "names": { "kind": "Widget", "plural": "widgets", "singular": "widget" },
            "scope": "Namespaced",
            "versions": [{
                "name": "v1", "served": true, "storage": true,
                "schema": { "openAPIV3Schema": { "type": "object", "properties": {
                    "spec": { "type": "object", "required": ["size"], "properties": {
                        "size": { "type": "integer", "minimum": 1 } } } } } }
            }]
        }
    }))
    .unwrap();
    crds.patch(
        "widgets.test.lockstep.dev",
        &PatchParams::apply("lockstep-test").force(),
        &Patch::Apply(&crd),
    )
    .await
    .unwrap();
    // Bounded wait for Established.
    let cond = kube::runtime::wait::conditions::is_crd_established();
    tokio::time::timeout(
        Duration::from_secs(30),
        kube::runtime::wait::await_condition(crds.clone(), "widgets.test.lockstep.dev", cond),
    )
    .await
    .expect("CRD not established within 30 s")
    .unwrap();

    let ar = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("test.lockstep.dev", "v1", "Widget"),
        "widgets",
    );
    let widgets: Api<DynamicObject> = Api::namespaced_with(client, &ns, &ar);
    let ok = json!({ "apiVersion": "test.lockstep.dev/v1", "kind": "Widget", "metadata": { "name": "w" }, "spec": { "size": 3 } });
    widgets
        .patch("w", &PatchParams::apply("lockstep-test"), &Patch::Apply(&ok))
        .await
        .unwrap();
    assert_eq!(widgets.get("w").await.unwrap().data["spec"]["size"], 3);
    // The schema is enforced by the server.
    let bad = json!({ "apiVersion": "test.lockstep.dev/v1", "kind": "Widget", "metadata": { "name": "bad" }, "spec": { "size": 0 } });
    let err = widgets
        .patch("bad", &PatchParams::apply("lockstep-test"), &Patch::Apply(&bad))
        .await
        .unwrap_err();
    assert!(matches!(err, kube::Error::Api(ref s) if s.code == 422), "{err}");
}

#[tokio::test]
async fn a_restricted_identity_is_refused_what_rbac_denies() {
    let cp = cp();
    let ns = cp.namespace("rbac").await.unwrap();
    let admin = cp.client().await.unwrap();
    let restricted = cp.client_as("restricted-user", &[]).await.unwrap();

    let secrets: Api<Secret> = Api::namespaced(restricted.clone(), &ns);
    let err = secrets.list(&Default::default()).await.unwrap_err();
    assert!(matches!(err, kube::Error::Api(ref s) if s.code == 403), "{err}");

    // Grant read on ConfigMaps only.
    let role: Role = serde_json::from_value(json!({
        "metadata": { "name": "cm-reader" },
        "rules": [{ "apiGroups": [""], "resources": ["configmaps"], "verbs": ["get", "list"] }]
    }))
    .unwrap();
    Api::<Role>::namespaced(admin.clone(), &ns)
        .create(&PostParams::default(), &role)
        .await
        .unwrap();
    let binding: RoleBinding = serde_json::from_value(json!({
        "metadata": { "name": "cm-reader" },
        "roleRef": { "apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "cm-reader" },
        "subjects": [{ "apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": "restricted-user" }]
    }))
    .unwrap();
    Api::<RoleBinding>::namespaced(admin, &ns)
        .create(&PostParams::default(), &binding)
        .await
        .unwrap();

    let cms: Api<ConfigMap> = Api::namespaced(restricted.clone(), &ns);
    let mut allowed = false;
    for _ in 0..50 {
        if cms.list(&Default::default()).await.is_ok() {
            allowed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(allowed, "the RoleBinding should allow listing ConfigMaps");
    let err = secrets.list(&Default::default()).await.unwrap_err();
    assert!(
        matches!(err, kube::Error::Api(ref s) if s.code == 403),
        "secrets stay forbidden: {err}"
    );
    let err = cms
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({ "metadata": { "name": "x" } })).unwrap(),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(err, kube::Error::Api(ref s) if s.code == 403),
        "create stays forbidden: {err}"
    );
}

#[tokio::test]
async fn owner_references_cascade_through_the_garbage_collector() {
    let cp = cp();
    let ns = cp.namespace("gc").await.unwrap();
    let client = cp.client().await.unwrap();
    let cms: Api<ConfigMap> = Api::namespaced(client, &ns);
    let owner = cms
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({ "metadata": { "name": "owner" } })).unwrap(),
        )
        .await
        .unwrap();
    let child: ConfigMap = serde_json::from_value(json!({
        "metadata": { "name": "child", "ownerReferences": [{
            "apiVersion": "v1", "kind": "ConfigMap", "name": "owner", "uid": owner.metadata.uid.unwrap()
        }] }
    }))
    .unwrap();
    cms.create(&PostParams::default(), &child).await.unwrap();
    cms.delete("owner", &Default::default()).await.unwrap();
    let mut gone = false;
    for _ in 0..300 {
        if cms.get_opt("child").await.unwrap().is_none() {
            gone = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        gone,
        "kube-controller-manager's garbage collector should delete the dependent within 30 s"
    );
}

#[tokio::test]
async fn kubectl_works_with_the_generated_kubeconfig() {
    let cp = cp();
    let ns = cp.namespace("kubectl").await.unwrap();
    let out = std::process::Command::new(lockstep_tests::peer("kubectl"))
        .arg("--kubeconfig")
        .arg(cp.kubeconfig())
        .args([
            "create",
            "configmap",
            "from-kubectl",
            "-n",
            &ns,
            "--from-literal=a=b",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let cms: Api<ConfigMap> = Api::namespaced(cp.client().await.unwrap(), &ns);
    assert_eq!(cms.get("from-kubectl").await.unwrap().data.unwrap()["a"], "b");
}
