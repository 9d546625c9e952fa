//! Flux's objects as they are, side by side with Flux: the real source-controller v1.9.3 and
//! kustomize-controller v1.9.6 reconcile a GitRepository and two Kustomizations in one
//! namespace, the agent binary (`--accept=flux`) the same objects in another, over one
//! repository served by `git http-backend` (a plain directory; a kustomize overlay with a SOPS
//! Secret made by real sops, `postBuild` variables from `substitute`, a ConfigMap and a
//! Secret, and `dependsOn` on the first). The objects applied are equal field by field (apart
//! from managers, ownership labels and what the API server assigns), the Kustomizations'
//! status has Flux's shape and revision, a new commit reaches both, `flux reconcile`'s
//! annotation is handled, and an unsupported field is named in a condition. Then `lockstep
//! import flux` turns the same objects into Syncs that give the same objects, and Lockstep
//! takes over Flux's namespace once Flux stops: no object deleted or recreated (uids kept),
//! drift healed afterwards.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;

use kube::api::{Api, DynamicObject, ListParams, Patch, PatchParams, PostParams};
use kube::discovery::ApiResource;
use lockstep_agent::api::flux::{GitRepository, Kustomization};
use lockstep_tests::{eventually, git, peer, services};
use serde_json::{Value as Json, json};

use super::fixtures::{AgeKey, Agent, Repo, age_secret, cp, free_port, secret, setup};

/// Flux's CRDs (its own), applied once per binary.
fn flux_crds() {
    static DONE: OnceLock<()> = OnceLock::new();
    DONE.get_or_init(|| {
        let dir = lockstep_tests::cache_dir()
            .join("flux-crds")
            .canonicalize()
            .expect("Flux is not in the cache: run `cargo xtask setup`");
        cp().kubectl(&["apply", "--server-side", "-f", dir.to_str().unwrap()]);
        cp().kubectl(&[
            "wait",
            "--for=condition=established",
            "--timeout=60s",
            "crd/gitrepositories.source.toolkit.fluxcd.io",
            "crd/kustomizations.kustomize.toolkit.fluxcd.io",
        ]);
    });
}

/// Flux's two controllers, confined to `ns` (their runtime namespace); killed when dropped.
struct Flux(Vec<Child>);

impl Drop for Flux {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Flux {
    fn start(ns: &str, work: &Path) -> Self {
        let storage = free_port();
        let spawn = |name: &str, extra: &[String]| {
            let log = std::fs::File::create(work.join(format!("{name}.log"))).unwrap();
            Command::new(peer(name))
                .env("KUBECONFIG", cp().kubeconfig())
                .env("RUNTIME_NAMESPACE", ns)
                .args(["--watch-all-namespaces=false", "--log-level", "info"])
                .args(["--metrics-addr", &format!("127.0.0.1:{}", free_port())])
                .args(["--health-addr", &format!("127.0.0.1:{}", free_port())])
                .args(extra)
                .stdin(Stdio::null())
                .stdout(log.try_clone().unwrap())
                .stderr(log)
                .spawn()
                .unwrap()
        };
        std::fs::create_dir_all(work.join("storage")).unwrap();
        let sc = spawn(
            "source-controller",
            &[
                "--storage-path".into(),
                work.join("storage").display().to_string(),
                "--storage-addr".into(),
                format!("127.0.0.1:{storage}"),
                "--storage-adv-addr".into(),
                format!("127.0.0.1:{storage}"),
            ],
        );
        let kc = spawn("kustomize-controller", &[]);
        Self(vec![sc, kc])
    }
}

const DEPLOY: &str = "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\n  labels:\n    cluster: ${cluster_name}\nspec:\n  replicas: ${replicas}\n  selector: {matchLabels: {app: web}}\n  template:\n    metadata: {labels: {app: web}}\n    spec:\n      containers:\n        - name: web\n          image: registry.k8s.io/pause:3.10\n          env:\n            - {name: DOMAIN, value: \"${domain:=example.com}\"}\n            - {name: TOKEN, value: \"${token}\"}\n            - {name: LITERAL, value: \"$${HOME}\"}\n";

/// The repository both read: `infra/` (plain files) and `apps/prod` (an overlay of
/// `apps/base`, with a SOPS Secret).
fn repository(age: &AgeKey, canary: &str) -> Repo {
    let repo = Repo::new();
    repo.write(
        "infra/settings.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: infra-settings\ndata:\n  tier: infra\n",
    )
    .write("apps/base/kustomization.yaml", "resources:\n- deploy.yaml\n- svc.yaml\n- db.sops.yaml\n")
    .write("apps/base/deploy.yaml", DEPLOY)
    .write(
        "apps/base/svc.yaml",
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: web\nspec:\n  clusterIP: None\n  selector: {app: web}\n  ports: [{port: 80}]\n",
    )
    .write_sops(
        "apps/base/db.sops.yaml",
        &format!("apiVersion: v1\nkind: Secret\nmetadata:\n  name: db\nstringData:\n  password: {canary}-db\n"),
        age,
    )
    .write(
        "apps/prod/kustomization.yaml",
        "resources:\n- ../base\nnamePrefix: prod-\nlabels:\n- pairs:\n    env: prod\n",
    );
    repo.commit("infra and apps");
    repo
}

/// The GitRepository and the two Kustomizations, for `ns`, as a repository would hold them.
fn flux_objects(ns: &str, url: &str, branch: &str) -> Vec<Json> {
    vec![
        json!({ "apiVersion": "source.toolkit.fluxcd.io/v1", "kind": "GitRepository",
            "metadata": { "name": "fleet", "namespace": ns },
            "spec": { "url": url, "interval": "2s", "ref": { "branch": branch } } }),
        json!({ "apiVersion": "kustomize.toolkit.fluxcd.io/v1", "kind": "Kustomization",
            "metadata": { "name": "infra", "namespace": ns },
            "spec": { "interval": "1m", "path": "./infra", "prune": true, "targetNamespace": ns, "namePrefix": "i-",
                      "sourceRef": { "kind": "GitRepository", "name": "fleet" } } }),
        json!({ "apiVersion": "kustomize.toolkit.fluxcd.io/v1", "kind": "Kustomization",
            "metadata": { "name": "apps", "namespace": ns },
            "spec": { "interval": "1m", "path": "./apps/prod", "prune": true, "targetNamespace": ns,
                      "sourceRef": { "kind": "GitRepository", "name": "fleet" },
                      "dependsOn": [{ "name": "infra" }],
                      "decryption": { "provider": "sops", "secretRef": { "name": "sops-age" } },
                      "images": [{ "name": "registry.k8s.io/pause", "newTag": "3.9" }],
                      "patches": [{ "patch": "- op: add\n  path: /metadata/annotations/patched\n  value: by-flux",
                                    "target": { "kind": "Deployment" } }],
                      "commonMetadata": { "labels": { "team": "web" } },
                      "nameSuffix": "-v1",
                      "postBuild": {
                          "substitute": { "cluster_name": "prod" },
                          "substituteFrom": [
                              { "kind": "ConfigMap", "name": "cluster-vars" },
                              { "kind": "Secret", "name": "secret-vars" } ] } } }),
    ]
}

/// The inputs the Kustomizations read, in `ns`: the age key, the variables.
async fn inputs(client: &kube::Client, ns: &str, age: &AgeKey, canary: &str) {
    age_secret(client, ns, age).await;
    secret(client, ns, "secret-vars", json!({ "token": canary })).await;
    Api::<k8s_openapi::api::core::v1::ConfigMap>::namespaced(client.clone(), ns)
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({ "metadata": { "name": "cluster-vars" },
                "data": { "cluster_name": "from-configmap", "replicas": "2" } }))
            .unwrap(),
        )
        .await
        .unwrap();
}

/// The same GitRepository and Kustomizations (and their inputs) in `ns`.
async fn objects(client: &kube::Client, ns: &str, url: &str, branch: &str, age: &AgeKey, canary: &str) {
    inputs(client, ns, age, canary).await;
    for o in flux_objects(ns, url, branch) {
        let ar = ApiResource::from_gvk(&kube::core::GroupVersionKind::gvk(
            o["apiVersion"].as_str().unwrap().split('/').next().unwrap(),
            "v1",
            o["kind"].as_str().unwrap(),
        ));
        Api::<DynamicObject>::namespaced_with(client.clone(), ns, &ar)
            .create(&PostParams::default(), &serde_json::from_value(o).unwrap())
            .await
            .unwrap();
    }
}

/// Waits until Kustomization `name` in `ns` is Ready on `commit`; returns it.
async fn ready_on(client: &kube::Client, ns: &str, name: &str, commit: &str, secs: u64) -> Kustomization {
    let ks: Api<Kustomization> = Api::namespaced(client.clone(), ns);
    eventually(
        &format!("Kustomization {ns}/{name} Ready on {commit}"),
        secs,
        async || {
            let k = ks.get(name).await.ok()?;
            let st = k.status.as_ref()?;
            let ready = st.conditions.iter().find(|c| c.type_ == "Ready")?;
            (ready.status == "True" && st.last_applied_revision.as_deref()?.ends_with(commit)).then_some(k)
        },
    )
    .await
}

/// The objects a Kustomization applied in `ns`, by kind and name, without what differs by
/// nature: the namespace, managers, ownership labels and annotations, what the API server
/// assigns, status.
async fn applied(client: &kube::Client, ns: &str, k: &Kustomization) -> BTreeMap<String, Json> {
    let entries = k
        .status
        .as_ref()
        .unwrap()
        .inventory
        .as_ref()
        .unwrap()
        .entries
        .iter()
        .map(|e| {
            let parts: Vec<&str> = e.id.splitn(4, '_').collect();
            (
                parts[2].to_owned(),
                e.v.clone(),
                parts[3].to_owned(),
                parts[1].to_owned(),
            )
        });
    objects_of(client, ns, entries.collect()).await
}

/// [`applied`] for (group, version, kind, name) entries.
async fn objects_of(
    client: &kube::Client,
    ns: &str,
    entries: Vec<(String, String, String, String)>,
) -> BTreeMap<String, Json> {
    let mut out = BTreeMap::new();
    for (group, version, kind, name) in &entries {
        let (group, kind, name) = (group.as_str(), kind.as_str(), name.as_str());
        let api_version = if group.is_empty() {
            version.clone()
        } else {
            format!("{group}/{version}")
        };
        let ar = ApiResource::from_gvk(&kube::core::GroupVersionKind::gvk(group, version, kind));
        let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), ns, &ar);
        let o = api.get(name).await.unwrap();
        let mut v = serde_json::to_value(&o).unwrap();
        v["apiVersion"] = json!(api_version);
        let md = v["metadata"].as_object_mut().unwrap();
        for f in [
            "uid",
            "resourceVersion",
            "creationTimestamp",
            "generation",
            "managedFields",
            "namespace",
        ] {
            md.remove(f);
        }
        for m in ["labels", "annotations"] {
            if let Some(map) = md.get_mut(m).and_then(Json::as_object_mut) {
                map.retain(|k, _| {
                    !k.starts_with("kustomize.toolkit.fluxcd.io/")
                        && !k.starts_with("lockstep.dev/")
                        && k != "deployment.kubernetes.io/revision"
                });
                if map.is_empty() {
                    md.remove(m);
                }
            }
        }
        v.as_object_mut().unwrap().remove("status");
        if kind == "Service" {
            let spec = v["spec"].as_object_mut().unwrap();
            spec.remove("clusterIP");
            spec.remove("clusterIPs");
        }
        // The ownerReferences name objects of each namespace.
        out.insert(format!("{kind}/{name}"), v);
    }
    out
}

/// The objects whose uids the takeover must keep.
const TAKEN_OVER: &[&str] = &[
    "v1/ConfigMap/i-infra-settings",
    "apps/v1/Deployment/prod-web-v1",
    "v1/Secret/prod-db-v1",
    "v1/Service/prod-web-v1",
];

/// The uids of `objects` (`apiVersion/Kind/name`) in `ns`.
async fn object_uids(client: &kube::Client, ns: &str, objects: &[&str]) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for o in objects {
        let (api_version, rest) = o.rsplit_once('/').unwrap();
        let (api_version, kind) = api_version.rsplit_once('/').unwrap();
        let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version));
        let ar = ApiResource::from_gvk(&kube::core::GroupVersionKind::gvk(group, version, kind));
        let obj = Api::<DynamicObject>::namespaced_with(client.clone(), ns, &ar)
            .get(rest)
            .await
            .unwrap();
        out.push(((*o).to_owned(), obj.metadata.uid.unwrap()));
    }
    out
}

#[tokio::test]
async fn flux_objects_reconcile_as_flux_reconciles_them() {
    flux_crds();
    let (client, flux_ns) = setup("flux-peer").await;
    let (_, lock_ns) = setup("flux-lockstep").await;
    let work = tempfile::tempdir().unwrap();
    let age = AgeKey::generate(work.path(), "age.txt");
    let canary = format!("CANARY-flux-{lock_ns}");
    let repo = repository(&age, &canary);
    // Served over smart HTTP (Flux takes http(s) and ssh URLs only).
    let srv = work.path().join("srv");
    std::fs::create_dir_all(&srv).unwrap();
    let bare = srv.join("fleet.git");
    git(
        repo.path(),
        &["clone", "-q", "--bare", ".", bare.to_str().unwrap()],
    );
    git(repo.path(), &["remote", "add", "origin", bare.to_str().unwrap()]);
    let server = services::git_http(&srv).unwrap();
    let url = format!("{}/fleet.git", server.url);
    let branch = git(repo.path(), &["rev-parse", "--abbrev-ref", "HEAD"]);
    let commit = git(repo.path(), &["rev-parse", "HEAD"]);

    let flux_controllers = Flux::start(&flux_ns, work.path());
    let _agent = Agent::start(
        cp().kubeconfig(),
        &lock_ns,
        "flux-lockstep",
        work.path(),
        &["--accept=flux"],
    )
    .await;
    for ns in [&flux_ns, &lock_ns] {
        objects(&client, ns, &url, &branch, &age, &canary).await;
    }

    // Both apply the same objects.
    let mut results = Vec::new();
    for ns in [&flux_ns, &lock_ns] {
        let infra = ready_on(&client, ns, "infra", &commit, 120).await;
        let apps = ready_on(&client, ns, "apps", &commit, 120).await;
        let mut objects = applied(&client, ns, &infra).await;
        objects.extend(applied(&client, ns, &apps).await);
        results.push((infra, apps, objects));
    }
    let (flux, lock) = (&results[0], &results[1]);
    assert_eq!(
        flux.2.keys().collect::<Vec<_>>(),
        lock.2.keys().collect::<Vec<_>>(),
        "the same objects"
    );
    for (key, want) in &flux.2 {
        assert_eq!(&lock.2[key], want, "{key} differs from Flux's");
    }
    let deploy = &lock.2["Deployment/prod-web-v1"];
    assert_eq!(deploy["spec"]["replicas"], 2);
    assert_eq!(deploy["metadata"]["annotations"]["patched"], "by-flux");
    assert_eq!(deploy["metadata"]["labels"]["team"], "web");
    assert_eq!(
        deploy["spec"]["template"]["spec"]["containers"][0]["image"],
        "registry.k8s.io/pause:3.9"
    );
    assert_eq!(deploy["metadata"]["labels"]["cluster"], "prod");
    // The status in Flux's shape.
    for (k, peer) in [(&lock.0, &flux.0), (&lock.1, &flux.1)] {
        let (st, want) = (k.status.as_ref().unwrap(), peer.status.as_ref().unwrap());
        assert_eq!(st.last_applied_revision, want.last_applied_revision);
        let ready = |s: &lockstep_agent::api::flux::KustomizationStatus| {
            let c = s.conditions.iter().find(|c| c.type_ == "Ready").unwrap().clone();
            (c.status, c.reason, c.message)
        };
        assert_eq!(ready(st), ready(want));
        let ids = |s: &lockstep_agent::api::flux::KustomizationStatus, ns: &str| {
            let mut v: Vec<String> = s
                .inventory
                .as_ref()
                .unwrap()
                .entries
                .iter()
                .map(|e| format!("{}/{}", e.id.replace(ns, "NS"), e.v))
                .collect();
            v.sort();
            v
        };
        assert_eq!(ids(st, &lock_ns), ids(want, &flux_ns));
    }
    let repos: Api<GitRepository> = Api::namespaced(client.clone(), &lock_ns);
    eventually("the GitRepository's artifact revision", 30, async || {
        let st = repos.get("fleet").await.ok()?.status?;
        let ready = st.conditions.iter().find(|c| c.type_ == "Ready")?;
        (ready.status == "True" && st.artifact?.revision.ends_with(&commit)).then_some(())
    })
    .await;

    // A new commit reaches both.
    repo.write(
        "infra/settings.yaml",
        &repo
            .read("infra/settings.yaml")
            .replace("tier: infra", "tier: two"),
    );
    let second = repo.commit("two");
    git(repo.path(), &["push", "-q", "origin", &format!("HEAD:{branch}")]);
    for ns in [&flux_ns, &lock_ns] {
        ready_on(&client, ns, "infra", &second, 120).await;
        let cm = Api::<k8s_openapi::api::core::v1::ConfigMap>::namespaced(client.clone(), ns)
            .get("i-infra-settings")
            .await
            .unwrap();
        assert_eq!(cm.data.unwrap()["tier"], "two");
    }

    // An unsupported field is named; `flux reconcile`'s annotation is handled.
    let ks: Api<Kustomization> = Api::namespaced(client.clone(), &lock_ns);
    ks.patch(
        "infra",
        &PatchParams::default(),
        &Patch::Merge(
            json!({ "metadata": { "annotations": { "reconcile.fluxcd.io/requestedAt": "now-1" } },
                              "spec": { "force": true } }),
        ),
    )
    .await
    .unwrap();
    eventually(
        "the unsupported field named, the request handled",
        60,
        async || {
            let k = ks.get("infra").await.ok()?;
            let st = k.status?;
            let c = st.conditions.iter().find(|c| c.type_ == "Unsupported")?;
            (c.message.contains("spec.force") && st.last_handled_reconcile_at.as_deref() == Some("now-1"))
                .then_some(())
        },
    )
    .await;

    // `lockstep import flux` on the same objects: Syncs that, applied, give the same objects.
    let (_, import_ns) = setup("flux-import").await;
    let clusters = work.path().join("clusters");
    std::fs::create_dir_all(&clusters).unwrap();
    for (i, o) in flux_objects(&import_ns, &url, &branch).iter().enumerate() {
        std::fs::write(
            clusters.join(format!("{i}.yaml")),
            serde_json::to_string(o).unwrap(),
        )
        .unwrap();
    }
    let (yaml, report) = lockstep_cli::import::import(&clusters, "flux-system").unwrap();
    assert!(
        report.contains(&format!(
            "Kustomization {import_ns}/apps (2.yaml): Sync {import_ns}/apps"
        )),
        "{report}"
    );
    inputs(&client, &import_ns, &age, &canary).await;
    let _ctl = super::fixtures::Controller::start(&client, &import_ns).await;
    for doc in lockstep_formats::yaml::load_documents(&yaml).unwrap() {
        let s: lockstep_agent::api::Sync =
            serde_json::from_value(lockstep_formats::sops::stores::to_json(&doc).unwrap()).unwrap();
        super::fixtures::create(&client, &import_ns, &s).await;
    }
    let mut imported = BTreeMap::new();
    for name in ["infra", "apps"] {
        let s = super::fixtures::wait_ready(&client, &import_ns, name, "True", 120).await;
        let entries = s.status.unwrap().inventory.into_iter().map(|e| {
            let (group, version) = e
                .api_version
                .rsplit_once('/')
                .map_or((String::new(), e.api_version.clone()), |(g, v)| {
                    (g.to_owned(), v.to_owned())
                });
            (group, version, e.kind, e.name)
        });
        imported.extend(objects_of(&client, &import_ns, entries.collect()).await);
    }
    for (key, want) in &flux.2 {
        let mut want = want.clone();
        if key == "ConfigMap/i-infra-settings" {
            want["data"]["tier"] = json!("two");
        }
        assert_eq!(
            imported.get(key),
            Some(&want),
            "imported: {key} differs from Flux's"
        );
    }

    // Taking over: Flux stops, Lockstep accepts the same objects; nothing is deleted or
    // recreated, and drift is healed from then on.
    let before = object_uids(&client, &flux_ns, TAKEN_OVER).await;
    drop(flux_controllers);
    let _takeover = Agent::start(
        cp().kubeconfig(),
        &flux_ns,
        "flux-takeover",
        work.path(),
        &["--accept=flux"],
    )
    .await;
    for name in ["infra", "apps"] {
        eventually(&format!("{name} reconciled by Lockstep"), 120, async || {
            let s = Api::<lockstep_agent::api::Sync>::namespaced(client.clone(), &flux_ns)
                .get(name)
                .await
                .ok()?;
            let ready = s.status?.conditions.into_iter().find(|c| c.type_ == "Ready")?;
            (ready.status == "True").then_some(())
        })
        .await;
    }
    let after = object_uids(&client, &flux_ns, TAKEN_OVER).await;
    assert_eq!(
        before, after,
        "an object was deleted or recreated in the takeover"
    );
    let deployments: Api<k8s_openapi::api::apps::v1::Deployment> = Api::namespaced(client.clone(), &flux_ns);
    deployments
        .patch(
            "prod-web-v1",
            &PatchParams::default(),
            &Patch::Merge(json!({ "spec": { "replicas": 5 } })),
        )
        .await
        .unwrap();
    eventually("the drift healed after the takeover", 60, async || {
        (deployments.get("prod-web-v1").await.ok()?.spec?.replicas == Some(2)).then_some(())
    })
    .await;

    // The canary of the Secret variable and the SOPS file: in no status.
    for k in ks.list(&ListParams::default()).await.unwrap().items {
        assert!(!serde_json::to_string(&k).unwrap().contains(&canary));
    }
}
