//! Helm charts synced by the controller, rendered by Helm's engine in the helper: a chart in
//! Git with a SOPS values file (real sops), `valuesFrom` a ConfigMap (at a target path) and a
//! Secret, `set`, `kubeVersion` and `apiVersions`; a PreSync hook Job (`generateName`, Argo CD's
//! annotation) that mounts the chart's Secret runs after it and before the Deployment, a
//! PostSync Job (Helm's annotation, `hook-succeeded`) after everything is healthy (a stand-in
//! kubelet finishes the Pods; the real job controller completes the Jobs); hooks stay out of
//! the inventory. A template error, a bad values file and a failing hook each fail the Sync
//! naming the template, file or hook, nothing pruned, the SyncFail hook run. Charts from a
//! Helm repository (real `helm package` + `helm repo index`, HTTPS, basic auth) and from an
//! OCI registry (CNCF Distribution, htpasswd, pushed by the real `helm push`): the version a
//! range picks, a chart of the repository with a dependency fetched from the Helm repository
//! with the credentials `spec.helm.repositories` gives, a missing version and a wrong digest
//! named. Canaries nowhere.

use std::process::Command;
use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::api::{Api, Patch, PatchParams, PostParams};
use lockstep_agent::api::Sync;
use lockstep_tests::eventually;
use serde_json::json;

use super::fixtures::{
    AgeKey, Controller, Repo, age_secret, create, kubelet, logs, ready, secret, setup, sync, wait_for,
    wait_ready,
};

const CHART: &str = "apiVersion: v2\nname: app\nversion: 0.1.0\n";
const VALUES: &str = "replicas: 3\nbanner: \"\"\nfailHook: false\nimage: registry.k8s.io/pause:3.10\ndb:\n  password: \"\"\napiToken: \"\"\n";
const SECRET: &str = "apiVersion: v1\nkind: Secret\nmetadata:\n  name: {{ .Release.Name }}-db\nstringData:\n  password: {{ required \"db.password is required\" .Values.db.password | quote }}\n  token: {{ .Values.apiToken | quote }}\n";
const CONFIG: &str = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {{ .Release.Name }}-config\ndata:\n  banner: {{ .Values.banner | quote }}\n  kube: {{ .Capabilities.KubeVersion.Version | quote }}\n  monitoring: {{ .Capabilities.APIVersions.Has \"monitoring.coreos.com/v1\" | quote }}\n  namespace: {{ .Release.Namespace | quote }}\n";
const DEPLOY: &str = "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: {{ .Release.Name }}\nspec:\n  replicas: {{ .Values.replicas }}\n  selector: {matchLabels: {app: {{ .Release.Name }}}}\n  template:\n    metadata: {labels: {app: {{ .Release.Name }}}}\n    spec:\n      containers:\n        - name: app\n          image: {{ .Values.image }}\n          envFrom: [{secretRef: {name: {{ .Release.Name }}-db}}]\n";
const MIGRATE: &str = "apiVersion: batch/v1\nkind: Job\nmetadata:\n  generateName: {{ .Release.Name }}-migrate-\n  annotations:\n    argocd.argoproj.io/hook: PreSync\nspec:\n  backoffLimit: 0\n  template:\n    metadata:\n      labels:\n        lockstep-test/outcome: {{ if .Values.failHook }}fail{{ else }}ok{{ end }}\n    spec:\n      restartPolicy: Never\n      containers:\n        - name: migrate\n          image: {{ .Values.image }}\n          envFrom: [{secretRef: {name: {{ .Release.Name }}-db}}]\n";
const SMOKE: &str = "apiVersion: batch/v1\nkind: Job\nmetadata:\n  name: {{ .Release.Name }}-smoke\n  annotations:\n    helm.sh/hook: post-install,post-upgrade\n    helm.sh/hook-delete-policy: hook-succeeded\nspec:\n  backoffLimit: 0\n  template:\n    spec:\n      restartPolicy: Never\n      containers:\n        - name: smoke\n          image: {{ .Values.image }}\n";
const ON_FAIL: &str = "apiVersion: batch/v1\nkind: Job\nmetadata:\n  name: {{ .Release.Name }}-on-fail\n  annotations:\n    argocd.argoproj.io/hook: SyncFail\nspec:\n  backoffLimit: 0\n  template:\n    spec:\n      restartPolicy: Never\n      containers:\n        - name: notify\n          image: {{ .Values.image }}\n";

fn rv(o: &kube::api::ObjectMeta) -> u64 {
    o.resource_version.as_deref().unwrap().parse().unwrap()
}

fn helm(args: &[&str], env: &[(&str, &std::path::Path)]) {
    let mut c = Command::new(lockstep_tests::peer("helm"));
    c.args(args);
    for (k, v) in env {
        c.env(k, v);
    }
    lockstep_tests::ok(c.output().unwrap(), "helm");
}

/// The Sync's `Ready` message once it is `False` for a new commit.
async fn failure(client: &kube::Client, ns: &str, name: &str, commit: &str) -> (String, String) {
    let s = super::fixtures::failed_on(client, ns, name, commit).await;
    let r = ready(&s).unwrap();
    (r.1, r.2)
}

#[tokio::test]
async fn a_chart_in_git_with_sops_values_and_hooks_syncs_in_order_and_failures_name_their_cause() {
    let (client, ns) = setup("helm-git").await;
    let keydir = tempfile::tempdir().unwrap();
    let age = AgeKey::generate(keydir.path(), "age.txt");
    let canary = format!("CANARY-helm-{ns}");
    let repo = Repo::new();
    repo.write("charts/app/Chart.yaml", CHART)
        .write("charts/app/values.yaml", VALUES)
        .write("charts/app/templates/secret.yaml", SECRET)
        .write("charts/app/templates/config.yaml", CONFIG)
        .write("charts/app/templates/deploy.yaml", DEPLOY)
        .write("charts/app/templates/migrate.yaml", MIGRATE)
        .write("charts/app/templates/smoke.yaml", SMOKE)
        .write("charts/app/templates/on-fail.yaml", ON_FAIL)
        .write(
            "charts/app/templates/NOTES.txt",
            "Installed {{ .Release.Name }}.\n",
        )
        .write("charts/app/values-prod.yaml", "replicas: 2\n")
        .write_sops(
            "charts/app/secrets.yaml",
            &format!("db:\n  password: {canary}-sops\n"),
            &age,
        );
    let first = repo.commit("a chart");
    age_secret(&client, &ns, &age).await;
    secret(
        &client,
        &ns,
        "app-token",
        json!({ "values.yaml": format!("apiToken: {canary}-token\n") }),
    )
    .await;
    let cm: ConfigMap = serde_json::from_value(json!({ "metadata": { "name": "app-extra" },
        "data": { "banner.txt": "hello: from a ConfigMap" } }))
    .unwrap();
    Api::<ConfigMap>::namespaced(client.clone(), &ns)
        .create(&PostParams::default(), &cm)
        .await
        .unwrap();
    let (stand_in, finished) = kubelet(&client, &ns);
    let ctl = Controller::start(&client, &ns).await;
    let spec = json!({
        "source": { "path": "charts/app", "interval": "1s" },
        "targetNamespace": ns,
        "decryption": { "sops": { "secretRef": { "name": "sops-age" } } },
        "helm": {
            "releaseName": "web",
            "valuesFiles": ["values-prod.yaml", "secrets.yaml"],
            "valuesFrom": [
                { "kind": "ConfigMap", "name": "app-extra", "valuesKey": "banner.txt", "targetPath": "banner" },
                { "kind": "Secret", "name": "app-token" }
            ],
            "set": [{ "name": "replicas", "value": "1" }],
            "kubeVersion": "v1.36.0",
            "apiVersions": ["monitoring.coreos.com/v1"]
        }
    });
    create(&client, &ns, &sync("app", &repo.url(), spec)).await;
    let s = wait_ready(&client, &ns, "app", "True", 120).await;

    // Values: the SOPS file decrypted, valuesFrom (a ConfigMap at a target path, a Secret),
    // `set` last; Capabilities as the spec gives them; the release namespace.
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns);
    let db = secrets.get("web-db").await.unwrap();
    let data = db.data.as_ref().unwrap();
    assert_eq!(data["password"].0, format!("{canary}-sops").as_bytes());
    assert_eq!(data["token"].0, format!("{canary}-token").as_bytes());
    let config = Api::<ConfigMap>::namespaced(client.clone(), &ns)
        .get("web-config")
        .await
        .unwrap();
    let d = config.data.unwrap();
    assert_eq!(
        d["banner"], "hello: from a ConfigMap",
        "targetPath sets the key's text as one string"
    );
    assert_eq!(d["kube"], "v1.36.0");
    assert_eq!(d["monitoring"], "true");
    assert_eq!(d["namespace"], ns);
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns);
    let web = deployments.get("web").await.unwrap();
    assert_eq!(
        web.spec.as_ref().unwrap().replicas,
        Some(1),
        "set wins over the values files"
    );

    // Hooks: the PreSync Job (generateName) after the Secret it mounts and before the
    // Deployment; the PostSync Job after it, deleted once it succeeded; no hook inventoried.
    let jobs: Api<Job> = Api::namespaced(client.clone(), &ns);
    let migrate: Vec<Job> = jobs
        .list(&Default::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|j| j.metadata.name.as_deref().unwrap().starts_with("web-migrate-"))
        .collect();
    assert_eq!(migrate.len(), 1, "one PreSync run");
    let migrate = &migrate[0].metadata;
    assert!(
        rv(&db.metadata) < rv(migrate),
        "the hook ran before the Secret it mounts"
    );
    let created = |m: &kube::api::ObjectMeta| m.creation_timestamp.clone().unwrap().0;
    assert!(created(migrate) <= created(&web.metadata));
    assert!(
        migrate.uid < web.metadata.uid || rv(migrate) < rv(&web.metadata),
        "the Deployment was applied before the PreSync hook"
    );
    let ran = finished.lock().unwrap().clone();
    assert_eq!(ran.len(), 2, "{ran:?}");
    assert!(
        ran[0].starts_with("web-migrate-") && ran[1] == "web-smoke",
        "{ran:?}"
    );
    eventually("the PostSync hook deleted (hook-succeeded)", 30, async || {
        jobs.get_opt("web-smoke").await.unwrap().is_none().then_some(())
    })
    .await;
    let st = s.status.as_ref().unwrap();
    assert!(st.inventory.iter().all(|e| e.kind != "Job"), "{:?}", st.inventory);
    assert!(st.inventory.iter().any(|e| e.kind == "Deployment"));
    assert!(st.last_applied_inputs.is_some());

    // An unchanged poll renders nothing and runs no hook.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(finished.lock().unwrap().len(), 2, "a poll ran the hooks again");

    // A template error: named with its template and line; nothing applied or pruned.
    repo.write(
        "charts/app/templates/broken.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {{ .Values.nope.deeper }}\n",
    );
    let c = repo.commit("a template error");
    let (reason, message) = failure(&client, &ns, "app", &c).await;
    assert_eq!(reason, "RenderFailed");
    assert!(message.contains("templates/broken.yaml:4"), "{message}");
    repo.remove("charts/app/templates/broken.yaml");

    // A bad values file: named.
    repo.write("charts/app/values-prod.yaml", "replicas: [2\n");
    let c = repo.commit("a bad values file");
    let (reason, message) = failure(&client, &ns, "app", &c).await;
    assert_eq!(reason, "RenderFailed");
    assert!(message.contains("values-prod.yaml"), "{message}");

    // A failing PreSync hook: the Sync fails naming it, the workload is not updated, the
    // SyncFail hook runs.
    repo.write(
        "charts/app/values-prod.yaml",
        "failHook: true\nimage: registry.k8s.io/pause:3.9\n",
    );
    let c = repo.commit("a failing hook");
    let (reason, message) = failure(&client, &ns, "app", &c).await;
    assert_eq!(reason, "HookFailed", "{message}");
    assert!(message.contains("PreSync hook Job web-migrate-"), "{message}");
    eventually("the SyncFail hook ran", 30, async || {
        finished
            .lock()
            .unwrap()
            .iter()
            .any(|j| j == "web-on-fail")
            .then_some(())
    })
    .await;
    let web = deployments.get("web").await.unwrap();
    let image = web.spec.unwrap().template.spec.unwrap().containers[0]
        .image
        .clone();
    assert_eq!(
        image.as_deref(),
        Some("registry.k8s.io/pause:3.10"),
        "the workload was updated"
    );
    assert!(
        secrets.get_opt("web-db").await.unwrap().is_some(),
        "nothing was pruned"
    );

    // Back to good: applied again.
    repo.write("charts/app/values-prod.yaml", "replicas: 2\n");
    let c = repo.commit("fixed");
    wait_for(&client, &ns, "app", 90, |s| {
        ready(s).is_some_and(|r| r.0 == "True")
            && s.status
                .as_ref()
                .and_then(|st| st.last_applied_revision.as_deref())
                .is_some_and(|r| r.ends_with(&c))
    })
    .await;
    assert_ne!(first, c);

    // `lockstep diff` (the agent's /v1/diff) renders the chart as the sync does: a values change,
    // the Sync suspended, shows the Deployment reconfigured, no hook, and no value.
    Api::<Sync>::namespaced(client.clone(), &ns)
        .patch(
            "app",
            &PatchParams::default(),
            &Patch::Merge(json!({ "spec": { "suspend": true } })),
        )
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    repo.write(
        "charts/app/values-prod.yaml",
        "image: registry.k8s.io/pause:3.9\n",
    );
    repo.commit("a new image");
    let mut differ = lockstep_agent::reconciler::Differ::new(
        client.clone(),
        lockstep_agent::source::GitCache::new(keydir.path().join("diff-cache")),
        lockstep_agent::secrets::sealing::fixed(lockstep_agent::secrets::sealing::SealingKeys {
            ring: Default::default(),
            newest: None,
        }),
    );
    differ.render.helm = Some(lockstep_helm::Helper::new(lockstep_tests::peer("lockstep-helm")));
    let report = differ.diff(&ns, "app").await.unwrap();
    let web = report
        .changes
        .iter()
        .find(|c| c.object.contains("Deployment") && c.object.contains("web"))
        .unwrap_or_else(|| panic!("no change to the Deployment: {report:?}"));
    assert_eq!(web.action, "configured");
    assert!(
        web.diff
            .lines()
            .any(|l| l.starts_with('+') && l.contains("pause:3.9")),
        "{}",
        web.diff
    );
    let text = serde_json::to_string(&report).unwrap();
    assert!(!text.contains(&canary), "a value in the diff");
    assert!(!text.contains("migrate"), "a hook in the diff: {text}");

    // The canaries: in no status, event or log.
    let status = serde_json::to_string(
        &Api::<Sync>::namespaced(client.clone(), &ns)
            .get("app")
            .await
            .unwrap(),
    )
    .unwrap();
    let events = serde_json::to_string(
        &Api::<k8s_openapi::api::core::v1::Event>::namespaced(client.clone(), &ns)
            .list(&Default::default())
            .await
            .unwrap(),
    )
    .unwrap();
    for (what, text) in [("status", status), ("events", events), ("logs", logs().text())] {
        assert!(!text.contains(&canary), "a canary in the {what}");
    }
    drop(ctl);
    stand_in.abort();
}

#[tokio::test]
async fn charts_from_a_helm_repository_and_an_oci_registry_are_fetched_by_range_and_checked() {
    let (client, ns) = setup("helm-repo").await;
    let work = tempfile::tempdir().unwrap();
    let password = format!("CANARY-registry-{ns}");
    let root = work.path().join("repo");
    std::fs::create_dir_all(&root).unwrap();
    let chart = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("helm/tests/charts/web");
    helm(
        &["package", chart.to_str().unwrap(), "-d", root.to_str().unwrap()],
        &[],
    );
    helm(&["repo", "index", root.to_str().unwrap()], &[]);
    let basic = format!(
        "Basic {}",
        base64::Engine::encode(
            &base64::engine::general_purpose::STANDARD,
            format!("ci:{password}")
        )
    );
    let (server, ca) = lockstep_tests::services::static_https_with_auth(&root, Some(&basic)).unwrap();
    secret(
        &client,
        &ns,
        "charts",
        json!({ "username": "ci", "password": password, "ca.crt": ca }),
    )
    .await;

    // The same chart pushed to an OCI registry by the real helm CLI.
    let (registry, registry_ca) = lockstep_tests::services::oci_registry("ci", &password).unwrap();
    let ca_file = work.path().join("registry-ca.pem");
    std::fs::write(&ca_file, &registry_ca).unwrap();
    let helm_env = [
        ("HELM_REGISTRY_CONFIG", work.path().join("registry.json")),
        ("HOME", work.path().to_path_buf()),
    ];
    let env: Vec<(&str, &std::path::Path)> = helm_env.iter().map(|(k, v)| (*k, v.as_path())).collect();
    helm(
        &[
            "registry",
            "login",
            &registry.url,
            "-u",
            "ci",
            "-p",
            &password,
            "--ca-file",
            ca_file.to_str().unwrap(),
        ],
        &env,
    );
    helm(
        &[
            "push",
            root.join("web-1.2.3.tgz").to_str().unwrap(),
            &format!("oci://{}/charts", registry.url),
            "--ca-file",
            ca_file.to_str().unwrap(),
        ],
        &env,
    );
    let auth = base64::Engine::encode(
        &base64::engine::general_purpose::STANDARD,
        format!("ci:{password}"),
    );
    let docker: Secret = serde_json::from_value(json!({
        "metadata": { "name": "registry" }, "type": "kubernetes.io/dockerconfigjson",
        "stringData": { ".dockerconfigjson": json!({ "auths": { registry.url.clone(): { "auth": auth } } }).to_string() } }))
    .unwrap();
    Api::<Secret>::namespaced(client.clone(), &ns)
        .create(&PostParams::default(), &docker)
        .await
        .unwrap();
    secret(&client, &ns, "registry-ca", json!({ "ca.crt": registry_ca })).await;

    let repo = Repo::new();
    repo.write(
        "web/values.yaml",
        "cache:\n  enabled: false\nhooks:\n  migrate: false\nreplicaCount: 1\n",
    );
    // A chart of the repository depending on the repository's chart (fetched, not vendored).
    repo.write(
        "umbrella/Chart.yaml",
        &format!(
            "apiVersion: v2\nname: umbrella\nversion: 0.1.0\ndependencies:\n  - name: web\n    version: \">=1.0 <2\"\n    repository: {}\n",
            server.url
        ),
    )
    .write(
        "umbrella/values.yaml",
        "web:\n  cache:\n    enabled: false\n  hooks:\n    migrate: false\n  replicaCount: 1\n",
    );
    repo.commit("values");
    let (stand_in, _finished) = kubelet(&client, &ns);
    let ctl = Controller::start(&client, &ns).await;
    let helm_spec = |chart: serde_json::Value, release: &str, crds: bool| {
        json!({ "source": { "path": "web", "interval": "2s" }, "targetNamespace": ns,
                "helm": { "chart": chart, "releaseName": release, "valuesFiles": ["values.yaml"], "includeCRDs": crds } })
    };
    create(
        &client,
        &ns,
        &sync(
            "from-repo",
            &repo.url(),
            helm_spec(
                json!({ "repository": server.url, "name": "web", "version": ">=1.0 <2", "secretRef": { "name": "charts" } }),
                "repo",
                true,
            ),
        ),
    )
    .await;
    create(
        &client,
        &ns,
        &sync(
            "from-oci",
            &repo.url(),
            helm_spec(
                json!({ "repository": format!("oci://{}/charts", registry.url), "name": "web", "version": "~1.2",
                        "secretRef": { "name": "registry" }, "certSecretRef": { "name": "registry-ca" } }),
                "oci",
                false,
            ),
        ),
    )
    .await;
    let from_repo = wait_ready(&client, &ns, "from-repo", "True", 120).await;
    let chart = from_repo
        .status
        .as_ref()
        .unwrap()
        .last_applied_chart
        .clone()
        .unwrap();
    assert!(chart.starts_with("web 1.2.3 (sha256:"), "{chart}");
    let from_oci = wait_ready(&client, &ns, "from-oci", "True", 120).await;
    let oci_chart = from_oci
        .status
        .as_ref()
        .unwrap()
        .last_applied_chart
        .clone()
        .unwrap();
    assert_eq!(chart, oci_chart, "the same archive from both");
    create(
        &client,
        &ns,
        &sync(
            "with-dependency",
            &repo.url(),
            json!({ "source": { "path": "umbrella", "interval": "1h" }, "targetNamespace": ns,
                    "helm": { "releaseName": "dep", "includeCRDs": false,
                              "repositories": [{ "url": server.url, "secretRef": { "name": "charts" } }] } }),
        ),
    )
    .await;
    wait_ready(&client, &ns, "with-dependency", "True", 120).await;
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns);
    for d in ["repo-web", "oci-web", "dep-web"] {
        assert_eq!(
            deployments.get(d).await.unwrap().spec.unwrap().replicas,
            Some(1),
            "{d}"
        );
    }

    // Polls read the index (once per interval for both Syncs' repository) and the tag, and
    // download nothing again.
    let downloads = ctl
        .charts
        .archive_downloads
        .load(std::sync::atomic::Ordering::Relaxed);
    assert_eq!(
        downloads, 2,
        "one archive from each source (the dependency is the repository's, kept)"
    );
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(
        ctl.charts
            .archive_downloads
            .load(std::sync::atomic::Ordering::Relaxed),
        downloads,
        "a poll downloaded the chart again"
    );

    // A missing version: named, nothing pruned.
    let api: Api<Sync> = Api::namespaced(client.clone(), &ns);
    let set_chart = |name: &'static str, chart: serde_json::Value| {
        let api = api.clone();
        async move {
            api.patch(
                name,
                &PatchParams::default(),
                &Patch::Merge(json!({ "spec": { "helm": { "chart": chart } } })),
            )
            .await
            .unwrap();
        }
    };
    set_chart("from-repo", json!({ "version": "^9" })).await;
    let s = wait_ready(&client, &ns, "from-repo", "False", 60).await;
    let (reason, message) = ready(&s).map(|r| (r.1, r.2)).unwrap();
    assert_eq!(reason, "SourceFailed");
    assert!(
        message.contains("no version of chart `web` matches `^9` (the newest: 1.2.3)"),
        "{message}"
    );
    set_chart("from-oci", json!({ "version": "^9" })).await;
    let s = wait_ready(&client, &ns, "from-oci", "False", 60).await;
    let message = ready(&s).unwrap().2;
    assert!(
        message.contains("no tag matches `^9` (the newest: 1.2.3)"),
        "{message}"
    );
    assert!(
        deployments.get_opt("repo-web").await.unwrap().is_some(),
        "nothing was pruned"
    );

    // A wrong digest: the index lists one the archive does not have; an OCI manifest digest
    // that is not the tag's.
    let index = std::fs::read_to_string(root.join("index.yaml")).unwrap();
    let digest_line = index
        .lines()
        .find(|l| l.trim_start().starts_with("digest:"))
        .unwrap();
    std::fs::write(
        root.join("index.yaml"),
        index.replace(digest_line, &format!("    digest: {}", "f".repeat(64))),
    )
    .unwrap();
    set_chart("from-repo", json!({ "version": "1.2.3" })).await;
    let s = wait_for(&client, &ns, "from-repo", 60, |s| {
        ready(s).is_some_and(|r| r.0 == "False" && r.2.contains("SHA-256"))
    })
    .await;
    let message = ready(&s).unwrap().2;
    assert!(
        message.contains("web-1.2.3.tgz: the archive's SHA-256 is"),
        "{message}"
    );
    set_chart(
        "from-oci",
        json!({ "version": null, "digest": format!("sha256:{}", "1".repeat(64)) }),
    )
    .await;
    let s = wait_for(&client, &ns, "from-oci", 60, |s| {
        ready(s).is_some_and(|r| r.0 == "False" && r.2.contains("sha256:1111"))
    })
    .await;
    let message = ready(&s).unwrap().2;
    assert!(message.contains("/charts/web"), "{message}");

    for s in [
        api.get("from-repo").await.unwrap(),
        api.get("from-oci").await.unwrap(),
    ] {
        let text = serde_json::to_string(&s).unwrap();
        assert!(
            !text.contains(&password) && !text.contains(&auth),
            "a credential in the status"
        );
    }
    assert!(!logs().text().contains(&password), "a credential in the logs");
    drop(ctl);
    stand_in.abort();
}

#[tokio::test]
async fn hooks_of_a_plain_directory_run_around_the_sync_not_when_drift_heals_and_are_replaced_by_the_next() {
    let (client, ns) = setup("hooks-plain").await;
    let repo = Repo::new();
    let job = |meta: &str, annotations: &str| {
        format!(
            "apiVersion: batch/v1\nkind: Job\nmetadata:\n  {meta}\n  annotations:\n{annotations}spec:\n  backoffLimit: 0\n  template:\n    spec:\n      restartPolicy: Never\n      containers: [{{name: h, image: busybox}}]\n"
        )
    };
    repo.write("cm.yaml", "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: settings\ndata:\n  v: \"1\"\n")
        .write("pre.yaml", &job("generateName: pre-", "    argocd.argoproj.io/hook: PreSync\n"))
        .write(
            "post.yaml",
            &job(
                "name: post",
                "    argocd.argoproj.io/hook: PostSync\n    argocd.argoproj.io/hook-delete-policy: HookSucceeded\n",
            ),
        );
    repo.commit("hooks");
    let (stand_in, finished) = kubelet(&client, &ns);
    let _ctl = Controller::start(&client, &ns).await;
    create(
        &client,
        &ns,
        &sync(
            "plain",
            &repo.url(),
            json!({ "source": { "interval": "1s" }, "targetNamespace": ns }),
        ),
    )
    .await;
    let s = wait_ready(&client, &ns, "plain", "True", 90).await;
    assert!(s.status.unwrap().inventory.iter().all(|e| e.kind == "ConfigMap"));
    let jobs: Api<Job> = Api::namespaced(client.clone(), &ns);
    let pre_jobs = async || -> Vec<String> {
        jobs.list(&Default::default())
            .await
            .unwrap()
            .items
            .into_iter()
            .filter_map(|j| j.metadata.name.filter(|n| n.starts_with("pre-")))
            .collect()
    };
    let first = pre_jobs().await;
    assert_eq!(first.len(), 1, "{first:?}");
    let ran = finished.lock().unwrap().clone();
    assert_eq!(ran, [first[0].clone(), "post".to_owned()]);
    eventually("the PostSync hook deleted (HookSucceeded)", 30, async || {
        jobs.get_opt("post").await.unwrap().is_none().then_some(())
    })
    .await;

    // Healing drift of the same revision runs no hook.
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), &ns);
    cms.patch(
        "settings",
        &PatchParams::default(),
        &Patch::Merge(json!({ "data": { "v": "drifted" } })),
    )
    .await
    .unwrap();
    eventually("the drift healed", 60, async || {
        let cm = cms.get("settings").await.ok()?;
        (cm.data?.get("v")? == "1").then_some(())
    })
    .await;
    assert_eq!(finished.lock().unwrap().len(), 2, "healing drift ran a hook");
    assert_eq!(pre_jobs().await, first);

    // The next commit: the last PreSync run deleted (BeforeHookCreation), a new one created.
    repo.write(
        "cm.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: settings\ndata:\n  v: \"2\"\n",
    );
    let c = repo.commit("v2");
    wait_for(&client, &ns, "plain", 90, |s| {
        s.status
            .as_ref()
            .and_then(|st| st.last_applied_revision.as_deref())
            .is_some_and(|r| r.ends_with(&c))
    })
    .await;
    let second = pre_jobs().await;
    assert_eq!(second.len(), 1, "{second:?}");
    assert_ne!(second, first, "the PreSync hook was not created anew");
    assert_eq!(finished.lock().unwrap().len(), 4);
    stand_in.abort();
}
