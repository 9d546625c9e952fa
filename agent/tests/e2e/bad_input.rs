//! Hostile input from Git, against the agent binary: a 1 KB "billion laughs" file and a file
//! nested beyond the bound fail their own Sync with a condition naming the file, while the
//! agent stays up, its memory bounded, and goes on syncing everything else.

use std::time::Duration;

use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::Api;
use serde_json::json;

use super::fixtures::{Agent, Repo, cp, create, ready, setup, sync, wait_for, wait_ready};

#[tokio::test(flavor = "multi_thread")]
async fn a_billion_laughs_file_fails_its_sync_and_the_agent_stays_up() {
    let (client, ns) = setup("laughs").await;
    let dir = tempfile::tempdir().unwrap();
    let mut agent = Agent::start(
        cp().kubeconfig(),
        &ns,
        "agent",
        dir.path(),
        &["--leader-election=false"],
    )
    .await;
    let before = agent.peak_rss_mib();
    let hostile = Repo::new();
    hostile
        .write("laughs.yaml", &lockstep_tests::billion_laughs())
        .write(
            "deep.yaml",
            &format!("a: {}1{}\n", "[".repeat(210), "]".repeat(210)),
        )
        .write(
            "cm.yaml",
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: from-hostile\n",
        );
    hostile.commit("hostile");
    let fine = Repo::new();
    fine.write(
        "cm.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: fine\n",
    );
    fine.commit("fine");
    create(
        &client,
        &ns,
        &sync("hostile", &hostile.url(), json!({ "targetNamespace": ns })),
    )
    .await;
    let s = wait_for(&client, &ns, "hostile", 60, |s| {
        ready(s).is_some_and(|r| r.0 == "False")
    })
    .await;
    let (_, reason, message) = ready(&s).unwrap();
    assert_eq!(reason, "RenderFailed");
    assert!(
        (message.contains("laughs.yaml") && message.contains("excessive aliasing"))
            || (message.contains("deep.yaml") && message.contains("nested deeper than 200 levels")),
        "{message}"
    );
    assert!(
        Api::<ConfigMap>::namespaced(client.clone(), &ns)
            .get_opt("from-hostile")
            .await
            .unwrap()
            .is_none(),
        "nothing of the revision is applied"
    );
    // Each file is refused on its own, naming it.
    hostile.remove("deep.yaml");
    hostile.commit("only the laughs");
    let s = wait_for(&client, &ns, "hostile", 60, |s| {
        ready(s).is_some_and(|r| r.0 == "False" && r.2.contains("laughs.yaml"))
    })
    .await;
    assert!(ready(&s).unwrap().2.contains("excessive aliasing"));
    // The agent is up, its memory bounded, and it syncs the next Sync as usual.
    create(
        &client,
        &ns,
        &sync("fine", &fine.url(), json!({ "targetNamespace": ns })),
    )
    .await;
    wait_ready(&client, &ns, "fine", "True", 60).await;
    assert!(agent.running(), "the agent went down:\n{}", agent.log_text());
    let peak = agent.peak_rss_mib();
    eprintln!("agent peak RSS: {before:.0} MiB before, {peak:.0} MiB after the hostile files");
    assert!(
        peak < before + 64.0,
        "memory grew from {before:.0} to {peak:.0} MiB"
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(agent.running(), "the agent went down:\n{}", agent.log_text());
}
