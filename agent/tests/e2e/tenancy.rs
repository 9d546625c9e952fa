//! Tenant isolation (`--tenant-isolation`): a Sync outside the agent's namespace applies only
//! into its own. Objects without a namespace land there; an object naming another namespace or
//! a cluster-scoped one stops the sync before anything of the revision is applied; a
//! `spec.targetNamespace` elsewhere is refused. (The install's RBAC around it, who may write
//! Syncs, is in [`super::deploy`].)

use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::Api;
use serde_json::json;

use super::fixtures::{Controller, ControllerOptions, Repo, create, ready, setup, sync, wait_ready};

async fn tenant(prefix: &str) -> (kube::Client, String, Controller) {
    let (client, ns) = setup(prefix).await;
    let ctl = Controller::start_with(
        &client,
        &ns,
        ControllerOptions {
            agent_namespace: Some("lockstep-system".into()),
            tenant_isolation: true,
            ..ControllerOptions::default()
        },
    )
    .await;
    (client, ns, ctl)
}

#[tokio::test]
async fn a_tenants_objects_without_a_namespace_land_in_its_own() {
    let (client, ns, _ctl) = tenant("tenant").await;
    let repo = Repo::new();
    repo.write(
        "cm.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: hello\n",
    );
    repo.commit("one");
    create(&client, &ns, &sync("ok", &repo.url(), json!({}))).await;
    wait_ready(&client, &ns, "ok", "True", 60).await;
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), &ns);
    assert!(cms.get_opt("hello").await.unwrap().is_some());
}

#[tokio::test]
async fn an_object_in_another_namespace_stops_the_sync_before_anything_is_applied() {
    let (client, ns, _ctl) = tenant("tenant-elsewhere").await;
    let repo = Repo::new();
    repo.write(
        "objects.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: innocent\n---\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: planted\n  namespace: kube-public\n",
    );
    repo.commit("one");
    create(&client, &ns, &sync("elsewhere", &repo.url(), json!({}))).await;
    let s = wait_ready(&client, &ns, "elsewhere", "False", 60).await;
    let (_, reason, message) = ready(&s).unwrap();
    assert_eq!(reason, "ApplyFailed");
    assert!(
        message.contains(&format!(
            "ConfigMap planted: metadata.namespace \"kube-public\": this Sync may only apply into its own namespace \"{ns}\""
        )),
        "{message}"
    );
    assert!(
        Api::<ConfigMap>::namespaced(client.clone(), "kube-public")
            .get_opt("planted")
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        Api::<ConfigMap>::namespaced(client.clone(), &ns)
            .get_opt("innocent")
            .await
            .unwrap()
            .is_none(),
        "nothing of a refused revision is applied"
    );
}

#[tokio::test]
async fn a_cluster_scoped_object_is_refused_to_a_tenant() {
    let (client, ns, _ctl) = tenant("tenant-cluster").await;
    let repo = Repo::new();
    repo.write(
        "role.yaml",
        "apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRole\nmetadata:\n  name: tenant-wants-this\nrules: []\n",
    );
    repo.commit("one");
    create(&client, &ns, &sync("cluster", &repo.url(), json!({}))).await;
    let s = wait_ready(&client, &ns, "cluster", "False", 60).await;
    let message = ready(&s).unwrap().2;
    assert!(
        message.contains(
            "ClusterRole tenant-wants-this: cluster-scoped objects are applied only by Syncs in the agent's namespace"
        ),
        "{message}"
    );
}

#[tokio::test]
async fn a_target_namespace_elsewhere_is_refused_and_stalls() {
    let (client, ns, _ctl) = tenant("tenant-target").await;
    let repo = Repo::new();
    repo.write(
        "cm.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: hello\n",
    );
    repo.commit("one");
    create(
        &client,
        &ns,
        &sync("target", &repo.url(), json!({ "targetNamespace": "default" })),
    )
    .await;
    let s = wait_ready(&client, &ns, "target", "False", 60).await;
    let (_, reason, message) = ready(&s).unwrap();
    assert_eq!(reason, "Unsupported");
    assert!(
        message.contains("spec.targetNamespace \"default\"")
            && message.contains(&format!("own namespace \"{ns}\"")),
        "{message}"
    );
    assert_eq!(super::fixtures::condition(&s, "Stalled").unwrap().status, "True");
}
