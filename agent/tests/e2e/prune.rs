//! Prune: what leaves Git is deleted, nothing is pruned after a failed decryption, the prune
//! budget holds until mass deletion is allowed, and an object annotated
//! `lockstep.dev/prune: disabled` stays.

use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::Api;
use lockstep_agent::plan::Inventory;

use super::fixtures::setup;
use super::sync::App;

#[tokio::test]
async fn an_object_removed_from_git_is_pruned() {
    let (client, ns) = setup("prune").await;
    let app = App::new(&ns);
    let first = app.sync(&client, &Inventory::default()).await.unwrap();
    app.repo.remove("deploy/app/cm.yaml");
    app.repo.commit("drop settings");
    let out = app.sync(&client, &first.inventory).await.unwrap();
    assert_eq!(
        out.pruned.iter().map(|i| i.name.as_str()).collect::<Vec<_>>(),
        ["settings"]
    );
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), &ns);
    assert!(cms.get_opt("settings").await.unwrap().is_none());
    assert!(!out.inventory.entries.keys().any(|k| k.ends_with("/settings")));
}

#[tokio::test]
async fn a_failed_decryption_prunes_nothing() {
    let (client, ns) = setup("prune-tamper").await;
    let app = App::new(&ns);
    let first = app.sync(&client, &Inventory::default()).await.unwrap();
    let enc = app.repo.read("deploy/app/db.sops.yaml");
    app.repo.write(
        "deploy/app/db.sops.yaml",
        &enc.replace("name: db", "name: db\n    labels: {tampered: \"true\"}"),
    );
    app.repo.remove("deploy/app/extra.yaml");
    app.repo.commit("tamper");
    let err = app.sync(&client, &first.inventory).await.unwrap_err().to_string();
    assert!(
        err.contains("app/db.sops.yaml") && err.contains("MAC mismatch"),
        "{err}"
    );
    assert!(!err.contains(&app.canary));
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), &ns);
    assert!(
        cms.get_opt("extra").await.unwrap().is_some(),
        "nothing may be pruned after a failed decryption"
    );
}

#[tokio::test]
async fn the_prune_budget_holds_until_mass_deletion_is_allowed() {
    let (client, ns) = setup("prune-budget").await;
    let app = App::new(&ns);
    let first = app.sync(&client, &Inventory::default()).await.unwrap();
    for f in [
        "deploy/app/deployment.yaml",
        "deploy/app/api.sealed.yaml",
        "deploy/app/extra.yaml",
    ] {
        app.repo.remove(f);
    }
    app.repo.commit("remove most");
    let err = app.sync(&client, &first.inventory).await.unwrap_err().to_string();
    assert!(err.contains("refusing to prune 5 of 8 objects"), "{err}");
    assert!(err.contains("set spec.allowMassDeletion to confirm"), "{err}");
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), &ns);
    assert!(
        cms.get_opt("extra").await.unwrap().is_some(),
        "nothing was deleted"
    );
    let mut allow = app.cfg.clone();
    allow.allow_mass_deletion = true;
    let done =
        lockstep_agent::sync::sync_once(client.clone(), &app.cache, &allow, &app.keys, &first.inventory)
            .await
            .unwrap();
    assert_eq!(done.pruned.len(), 5, "{:?}", done.pruned);
    assert!(cms.get_opt("extra").await.unwrap().is_none());
}

#[tokio::test]
async fn an_object_annotated_prune_disabled_stays() {
    let (client, ns) = setup("prune-keep").await;
    let app = App::new(&ns);
    app.repo.write(
        "deploy/app/cm.yaml",
        &format!(
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: settings\n  namespace: {ns}\n  annotations:\n    lockstep.dev/prune: disabled\ndata:\n  mode: blue\n"
        ),
    );
    app.repo.commit("keep settings");
    let first = app.sync(&client, &Inventory::default()).await.unwrap();
    app.repo.remove("deploy/app/cm.yaml");
    app.repo.commit("drop settings");
    let out = app.sync(&client, &first.inventory).await.unwrap();
    assert!(out.pruned.is_empty(), "{:?}", out.pruned);
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), &ns);
    assert!(cms.get_opt("settings").await.unwrap().is_some());
}
