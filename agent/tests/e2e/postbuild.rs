//! `spec.postBuild` on the real control plane: a kustomize overlay with Flux-style variables
//! from a ConfigMap, a Secret (its canary) and `substitute`, substituted after the build and
//! after SOPS decryption (a variable inside a SOPS Secret), typed as Flux types them
//! (`replicas: ${replicas}` a number), `$${x}` kept, a `substitute: disabled` object left
//! alone; a changed ConfigMap renders the same commit again; an unset variable fails the Sync
//! naming file, object, field and variable, nothing pruned; the canary is in no status, event
//! or log.

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use lockstep_agent::api::Sync;
use serde_json::json;

use super::fixtures::{
    AgeKey, Controller, Repo, age_secret, create, failed_on, logs, ready, secret, setup, sync, wait_for,
    wait_ready,
};

const DEPLOY: &str = "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web-${cluster_name}\n  labels:\n    domain: ${domain:=example.com}\nspec:\n  replicas: ${replicas}\n  selector: {matchLabels: {app: web}}\n  template:\n    metadata: {labels: {app: web}}\n    spec:\n      containers:\n        - name: web\n          image: registry.k8s.io/pause:3.10\n          args: [\"$${HOME}\", \"${region,,}\"]\n";

#[tokio::test]
async fn post_build_substitutes_variables_as_flux_does() {
    let (client, ns) = setup("postbuild").await;
    let keydir = tempfile::tempdir().unwrap();
    let age = AgeKey::generate(keydir.path(), "age.txt");
    age_secret(&client, &ns, &age).await;
    let canary = format!("CANARY-postbuild-{ns}");
    let repo = Repo::new();
    repo.write(
        "app/kustomization.yaml",
        "resources:\n- deploy.yaml\n- db.sops.yaml\n- settings.yaml\n- raw.yaml\n",
    )
    .write("app/deploy.yaml", DEPLOY)
    .write_sops(
        "app/db.sops.yaml",
        "apiVersion: v1\nkind: Secret\nmetadata:\n  name: db-${cluster_name}\nstringData:\n  url: postgres://${db_user}@db\n",
        &age,
    )
    .write(
        "app/settings.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: settings\ndata:\n  token: ${token}\n  cluster: ${cluster_name}\n",
    )
    .write(
        "app/raw.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: raw\n  annotations:\n    kustomize.toolkit.fluxcd.io/substitute: disabled\ndata:\n  script: echo ${not_a_variable}\n",
    );
    repo.commit("app with variables");
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), &ns);
    cms.create(
        &PostParams::default(),
        &serde_json::from_value(json!({
            "metadata": { "name": "cluster-vars" },
            "data": { "cluster_name": "from-configmap", "replicas": "2", "region": "EU-West", "db_user": "app" }
        }))
        .unwrap(),
    )
    .await
    .unwrap();
    secret(&client, &ns, "secret-vars", json!({ "token": canary })).await;
    let _ctl = Controller::start(&client, &ns).await;
    create(
        &client,
        &ns,
        &sync(
            "app",
            &repo.url(),
            json!({ "source": { "path": "app", "interval": "1s" }, "targetNamespace": ns,
                    "decryption": { "sops": { "secretRef": { "name": "sops-age" } } },
                    "postBuild": {
                        "substitute": { "cluster_name": "prod" },
                        "substituteFrom": [
                            { "kind": "ConfigMap", "name": "cluster-vars" },
                            { "kind": "Secret", "name": "secret-vars" },
                            { "kind": "ConfigMap", "name": "not-there", "optional": true }
                        ] } }),
        ),
    )
    .await;
    let s = wait_ready(&client, &ns, "app", "True", 90).await;

    // `substitute` overrides substituteFrom; numbers become numbers; defaults, case, `$${}`.
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns);
    let web = deployments.get("web-prod").await.unwrap();
    let spec = web.spec.as_ref().unwrap();
    assert_eq!(spec.replicas, Some(2));
    assert_eq!(web.metadata.labels.as_ref().unwrap()["domain"], "example.com");
    let args = spec.template.spec.as_ref().unwrap().containers[0]
        .args
        .clone()
        .unwrap();
    assert_eq!(args, ["${HOME}", "eu-west"]);
    // After decryption: the SOPS Secret's name and value.
    let db = Api::<Secret>::namespaced(client.clone(), &ns)
        .get("db-prod")
        .await
        .unwrap();
    assert_eq!(db.data.as_ref().unwrap()["url"].0, b"postgres://app@db");
    let settings = cms.get("settings").await.unwrap();
    assert_eq!(settings.data.as_ref().unwrap()["token"], canary);
    assert_eq!(
        cms.get("raw").await.unwrap().data.unwrap()["script"],
        "echo ${not_a_variable}"
    );
    let inventory = s.status.as_ref().unwrap().inventory.len();
    assert_eq!(inventory, 4);

    // A changed variable renders the same commit again.
    cms.patch(
        "cluster-vars",
        &PatchParams::default(),
        &Patch::Merge(json!({ "data": { "replicas": "3" } })),
    )
    .await
    .unwrap();
    lockstep_tests::eventually("the new replicas", 60, async || {
        let d = deployments.get("web-prod").await.ok()?;
        (d.spec?.replicas == Some(3)).then_some(())
    })
    .await;

    // An unset variable (strict, as current Flux): the Sync fails naming the file, the object,
    // the field and the variable; nothing is applied or pruned.
    repo.write(
        "app/deploy.yaml",
        &DEPLOY.replace("${domain:=example.com}", "${missing_var}"),
    );
    let commit = repo.commit("unset variable");
    let s = failed_on(&client, &ns, "app", &commit).await;
    let (_, reason, message) = ready(&s).unwrap();
    assert_eq!(reason, "RenderFailed", "{message}");
    for part in [
        "Deployment web-${cluster_name} (kustomize build app)",
        "metadata.labels.domain",
        "variable not set (strict mode): \"missing_var\"",
    ] {
        assert!(message.contains(part), "{part:?} not in {message}");
    }
    assert_eq!(s.status.as_ref().unwrap().inventory.len(), inventory);
    assert!(deployments.get_opt("web-prod").await.unwrap().is_some());

    // A missing ConfigMap that is not optional.
    repo.write("app/deploy.yaml", DEPLOY);
    repo.commit("fixed");
    wait_ready(&client, &ns, "app", "True", 90).await;
    Api::<Sync>::namespaced(client.clone(), &ns)
        .patch(
            "app",
            &PatchParams::default(),
            &Patch::Merge(json!({ "spec": { "postBuild": { "substituteFrom": [
                { "kind": "ConfigMap", "name": "cluster-vars" },
                { "kind": "ConfigMap", "name": "absent-vars" } ] } } })),
        )
        .await
        .unwrap();
    let s = wait_for(&client, &ns, "app", 60, |s: &Sync| {
        ready(s).is_some_and(|(st, r, _)| st == "False" && r == "SourceFailed")
    })
    .await;
    let (_, _, message) = ready(&s).unwrap();
    assert!(
        message.contains("spec.postBuild.substituteFrom[1]") && message.contains("absent-vars"),
        "{message}"
    );

    // The canary: in no status, event or log.
    let s = Api::<Sync>::namespaced(client.clone(), &ns)
        .get("app")
        .await
        .unwrap();
    assert!(!serde_json::to_string(&s).unwrap().contains(&canary));
    let events: Api<k8s_openapi::api::events::v1::Event> = Api::namespaced(client.clone(), &ns);
    let events = serde_json::to_string(&events.list(&ListParams::default()).await.unwrap().items).unwrap();
    assert!(!events.contains(&canary), "a secret value reached an event");
    assert!(!logs().text().contains(&canary), "a secret value reached the log");
}
