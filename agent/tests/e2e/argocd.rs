//! Argo CD's Applications as they are (`--accept=argocd`, the agent binary), against Argo CD's
//! documented behaviour: an app of apps (a root Application whose directory holds a plain
//! directory, a kustomize source with a name prefix and an image, a chart in Git with a values
//! file and a parameter, and a manual Application);
//! `targetRevision: HEAD`; `directory.recurse` false by default (a subdirectory's file is not
//! applied); `destination.namespace` for objects that name none, a namespace an object names
//! kept; `syncPolicy.automated` with `selfHeal` healing drift; a manual Application suspended
//! and named; `status.sync.status`, `status.health.status`, `status.operationState` and
//! `status.resources` as Argo CD writes them; an unsupported sync option named.

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, Patch, PatchParams, PostParams};
use lockstep_agent::api::argocd::Application;
use lockstep_tests::eventually;
use serde_json::json;

use super::fixtures::{Agent, Repo, cp, setup};

fn application(
    name: &str,
    ns: &str,
    url: &str,
    source: serde_json::Value,
    policy: serde_json::Value,
) -> serde_json::Value {
    let mut src = json!({ "repoURL": url, "targetRevision": "HEAD" });
    for (k, v) in source.as_object().unwrap() {
        src[k] = v.clone();
    }
    json!({ "apiVersion": "argoproj.io/v1alpha1", "kind": "Application",
        "metadata": { "name": name, "namespace": ns },
        "spec": { "project": "default", "source": src,
                  "destination": { "server": "https://kubernetes.default.svc", "namespace": ns },
                  "syncPolicy": policy } })
}

/// Waits until Application `name` is Synced and Healthy on `commit`; returns it.
async fn synced(apps: &Api<Application>, name: &str, commit: &str) -> Application {
    eventually(
        &format!("Application {name} Synced and Healthy on {commit}"),
        120,
        async || {
            let a = apps.get(name).await.ok()?;
            let st = a.status.as_ref()?;
            (st.sync.as_ref()?.status == "Synced"
                && st.sync.as_ref()?.revision.as_deref() == Some(commit)
                && st.health.as_ref()?.status == "Healthy")
                .then_some(a)
        },
    )
    .await
}

#[tokio::test]
async fn an_app_of_apps_syncs_as_argo_cd_documents() {
    let (client, ns) = setup("argocd").await;
    let (_, other) = setup("argocd-other").await;
    let work = tempfile::tempdir().unwrap();
    let repo = Repo::new();
    let url = repo.url();
    let automated =
        json!({ "automated": { "prune": true, "selfHeal": true }, "syncOptions": ["ServerSideApply=true"] });
    let children = [
        application(
            "guestbook",
            &ns,
            &url,
            json!({ "path": "guestbook" }),
            automated.clone(),
        ),
        application(
            "web",
            &ns,
            &url,
            json!({ "path": "web", "kustomize": { "namePrefix": "prod-", "images": ["registry.k8s.io/pause:3.9"],
                    "commonLabels": { "team": "web" }, "replicas": [{ "name": "web", "count": 2 }] } }),
            json!({ "automated": {}, "syncOptions": ["Replace=true"] }),
        ),
        application("manual", &ns, &url, json!({ "path": "guestbook" }), json!({})),
        application(
            "chart",
            &ns,
            &url,
            json!({ "path": "chart", "helm": { "valueFiles": ["values-prod.yaml"],
                    "parameters": [{ "name": "size", "value": "large" }] } }),
            automated.clone(),
        ),
    ];
    for (i, c) in children.iter().enumerate() {
        repo.write(&format!("apps/{i}.yaml"), &serde_json::to_string(c).unwrap());
    }
    repo.write(
        "apps/extra/ignored.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: not-recursed\ndata: {a: b}\n",
    )
    .write(
        "guestbook/ui.yaml",
        &format!("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: ui\ndata:\n  color: blue\n---\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: elsewhere\n  namespace: {other}\ndata: {{a: b}}\n"),
    )
    .write(
        "guestbook/sub/deep.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: deep\ndata: {a: b}\n",
    )
    .write("chart/Chart.yaml", "apiVersion: v2\nname: colors\nversion: 0.1.0\n")
    .write("chart/values.yaml", "color: blue\nsize: small\n")
    .write("chart/values-prod.yaml", "color: red\n")
    .write(
        "chart/templates/cm.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {{ .Release.Name }}-colors\n  namespace: {{ .Release.Namespace }}\ndata:\n  color: {{ .Values.color }}\n  size: {{ .Values.size }}\n",
    )
    .write("web/kustomization.yaml", "resources:\n- deploy.yaml\n")
    .write(
        "web/deploy.yaml",
        "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\nspec:\n  selector: {matchLabels: {app: web}}\n  template:\n    metadata: {labels: {app: web}}\n    spec:\n      containers:\n        - name: web\n          image: registry.k8s.io/pause:3.10\n",
    );
    let commit = repo.commit("apps");
    let _agent = Agent::start(
        cp().kubeconfig(),
        &ns,
        "argocd",
        work.path(),
        &["--accept=argocd"],
    )
    .await;
    let _kubelet = super::fixtures::kubelet(&client, &ns);
    let apps: Api<Application> = Api::namespaced(client.clone(), &ns);
    apps.create(
        &PostParams::default(),
        &serde_json::from_value(application(
            "root",
            &ns,
            &url,
            json!({ "path": "apps" }),
            automated.clone(),
        ))
        .unwrap(),
    )
    .await
    .unwrap();

    // The root applies the children (not apps/extra: no recursion), which sync in turn.
    let root = synced(&apps, "root", &commit).await;
    let st = root.status.as_ref().unwrap();
    let mut kinds: Vec<String> = st
        .resources
        .iter()
        .map(|r| format!("{}/{}", r.kind, r.name))
        .collect();
    kinds.sort();
    assert_eq!(
        kinds,
        [
            "Application/chart",
            "Application/guestbook",
            "Application/manual",
            "Application/web"
        ]
    );
    assert_eq!(st.operation_state.as_ref().unwrap().phase, "Succeeded");
    assert_eq!(st.source_type.as_deref(), Some("Directory"));
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), &ns);
    assert!(cms.get_opt("not-recursed").await.unwrap().is_none());
    synced(&apps, "guestbook", &commit).await;
    assert_eq!(cms.get("ui").await.unwrap().data.unwrap()["color"], "blue");
    assert!(
        cms.get_opt("deep").await.unwrap().is_none(),
        "directory.recurse is false by default"
    );
    assert!(
        Api::<ConfigMap>::namespaced(client.clone(), &other)
            .get_opt("elsewhere")
            .await
            .unwrap()
            .is_some(),
        "a namespace an object names is kept"
    );
    let web = synced(&apps, "web", &commit).await;
    let d = Api::<Deployment>::namespaced(client.clone(), &ns)
        .get("prod-web")
        .await
        .unwrap();
    assert_eq!(d.metadata.labels.as_ref().unwrap()["team"], "web");
    assert_eq!(d.spec.as_ref().unwrap().replicas, Some(2));
    assert_eq!(
        d.spec.as_ref().unwrap().selector.match_labels.as_ref().unwrap()["team"],
        "web",
        "commonLabels reach the selector, as kustomize's do"
    );
    assert_eq!(
        d.spec.unwrap().template.spec.unwrap().containers[0]
            .image
            .as_deref(),
        Some("registry.k8s.io/pause:3.9")
    );
    let conditions = &web.status.as_ref().unwrap().conditions;
    assert!(
        conditions
            .iter()
            .any(|c| c.type_ == "UnsupportedFields" && c.message.contains("Replace=true")),
        "{conditions:?}"
    );

    // A chart in Git with a values file and a parameter, released as the Application, into the
    // destination namespace.
    let chart = synced(&apps, "chart", &commit).await;
    assert_eq!(chart.status.unwrap().source_type.as_deref(), Some("Helm"));
    let colors = cms.get("chart-colors").await.unwrap().data.unwrap();
    assert_eq!(
        (colors["color"].as_str(), colors["size"].as_str()),
        ("red", "large")
    );

    // A manual Application is not synced, and says why.
    let manual = apps.get("manual").await.unwrap();
    let st = manual.status.unwrap();
    assert!(
        st.conditions
            .iter()
            .any(|c| c.message.contains("spec.syncPolicy.automated")),
        "{:?}",
        st.conditions
    );
    assert_ne!(st.sync.map(|s| s.status).as_deref(), Some("Synced"));

    // selfHeal puts drift back.
    cms.patch(
        "ui",
        &PatchParams::default(),
        &Patch::Merge(json!({ "data": { "color": "red" } })),
    )
    .await
    .unwrap();
    eventually("selfHeal put the drift back", 60, async || {
        (cms.get("ui").await.ok()?.data?.get("color")? == "blue").then_some(())
    })
    .await;

    // A new commit reaches the child.
    repo.write(
        "guestbook/ui.yaml",
        &repo
            .read("guestbook/ui.yaml")
            .replace("color: blue", "color: green"),
    );
    let second = repo.commit("green");
    // Argo CD polls every 3 minutes, as the Syncs here do: `argocd app get --refresh`'s
    // annotation asks for it now.
    apps.patch(
        "guestbook",
        &PatchParams::default(),
        &Patch::Merge(json!({ "metadata": { "annotations": { "argocd.argoproj.io/refresh": "normal" } } })),
    )
    .await
    .unwrap();
    let refreshed = synced(&apps, "guestbook", &second).await;
    assert!(
        !refreshed
            .metadata
            .annotations
            .unwrap_or_default()
            .contains_key("argocd.argoproj.io/refresh"),
        "the refresh annotation is removed once handled, as Argo CD removes it"
    );
    assert_eq!(cms.get("ui").await.unwrap().data.unwrap()["color"], "green");
}
