//! `dependsOn`: a Sync waits (`DependencyNotReady`, naming why) until its dependency is Ready
//! and Healthy, and is applied as soon as it is; a cycle stalls the Syncs on it.

use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, Patch, PatchParams};
use lockstep_agent::api::Sync;
use serde_json::json;

use super::fixtures::{Controller, Repo, condition, create, eventually, setup};
use super::health::{config_map, gadget, gadgets, get, precreate, report, sync_into};

#[tokio::test]
async fn a_sync_waits_for_its_dependency_to_be_ready_and_healthy() {
    let (client, ns) = setup("deps").await;
    let gadgets = gadgets(&client, &ns);
    let _ctl = Controller::start(&client, &ns).await;
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), &ns);
    let infra = Repo::new();
    infra.write("g.yaml", &gadget("platform", 0));
    infra.commit("infra");
    let app = Repo::new();
    app.write("cm.yaml", &config_map("app", 0));
    app.commit("app");
    precreate(&gadgets, "platform").await;
    create(
        &client,
        &ns,
        &sync_into(
            "app",
            &app.url(),
            &ns,
            json!({ "dependsOn": [{ "name": "infra" }] }),
        ),
    )
    .await;
    let waiting = eventually("app waiting for infra", 20, async || {
        let c = condition(&get(&client, &ns, "app").await, "Ready")?;
        (c.reason == "DependencyNotReady").then_some(c)
    })
    .await;
    assert_eq!(waiting.message, format!("dependency {ns}/infra does not exist"));
    create(&client, &ns, &sync_into("infra", &infra.url(), &ns, json!({}))).await;
    let waiting = eventually("app waiting for infra's health", 20, async || {
        let c = condition(&get(&client, &ns, "app").await, "Ready")?;
        c.message.contains("is not healthy").then_some(c)
    })
    .await;
    assert!(waiting.message.contains("Gadget"), "{}", waiting.message);
    assert!(
        cms.get_opt("app").await.unwrap().is_none(),
        "nothing of app is applied before infra is healthy"
    );
    report(&gadgets, "platform", 2, "True").await;
    let healthy_at = eventually("infra healthy", 20, async || {
        let c = condition(&get(&client, &ns, "infra").await, "Healthy")?;
        (c.status == "True").then(Instant::now)
    })
    .await;
    eventually("app applied", 10, async || {
        cms.get_opt("app").await.unwrap().map(|_| ())
    })
    .await;
    let after = healthy_at.elapsed();
    eprintln!(
        "dependsOn: app applied {:.2} s after infra became healthy",
        after.as_secs_f64()
    );
    assert!(after < Duration::from_secs(3), "{after:?}");
    eventually("app Ready", 10, async || {
        (condition(&get(&client, &ns, "app").await, "Ready")?.status == "True").then_some(())
    })
    .await;
}

#[tokio::test]
async fn a_dependency_cycle_stalls_the_syncs_on_it() {
    let (client, ns) = setup("deps-cycle").await;
    let _ctl = Controller::start(&client, &ns).await;
    let repo = Repo::new();
    repo.write("cm.yaml", &config_map("x", 0));
    repo.commit("one");
    create(&client, &ns, &sync_into("infra", &repo.url(), &ns, json!({}))).await;
    create(
        &client,
        &ns,
        &sync_into(
            "app",
            &repo.url(),
            &ns,
            json!({ "dependsOn": [{ "name": "infra" }] }),
        ),
    )
    .await;
    eventually("app Ready", 30, async || {
        (condition(&get(&client, &ns, "app").await, "Ready")?.status == "True").then_some(())
    })
    .await;
    Api::<Sync>::namespaced(client.clone(), &ns)
        .patch(
            "infra",
            &PatchParams::default(),
            &Patch::Merge(json!({ "spec": { "dependsOn": [{ "name": "app" }] } })),
        )
        .await
        .unwrap();
    let stalled = eventually("the cycle stalls infra", 20, async || {
        let c = condition(&get(&client, &ns, "infra").await, "Stalled")?;
        (c.status == "True").then_some(c)
    })
    .await;
    assert_eq!(
        stalled.message,
        format!("spec.dependsOn: the dependencies form a cycle: {ns}/infra → {ns}/app → {ns}/infra")
    );
    assert_eq!(stalled.reason, "DependencyCycle");
}
