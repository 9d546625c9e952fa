//! Pure: an Argo CD `Application` → the `Sync` spec that does what Argo CD's application
//! controller would (the fields Lockstep does not act on named), and a Sync's status → the
//! Application's, in Argo CD's shape.

use super::{
    Application, ApplicationCondition, ApplicationStatus, HealthStatus, OperationState, ResourceStatus,
    SyncOperationResult, SyncStatus,
};
use crate::flux::translate::Translation;
use crate::{
    CommonMetadata, GitRef, HelmParameter as SyncHelmParameter, HelmSpec, IgnoreRule, IgnoreTarget,
    KustomizeSpec, LocalRef, Reason, Retry, Source, Sync, SyncSpec,
};

/// Why an Application cannot be reconciled at all.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ApplicationError {
    /// No `spec.source` (several `sources` are not read).
    #[error("spec.source: an Application needs one source (spec.sources is not read by Lockstep)")]
    NoSource,
    /// The destination is another cluster.
    #[error(
        "spec.destination: {0}: Lockstep applies to the cluster it runs in (https://kubernetes.default.svc, in-cluster)"
    )]
    OtherCluster(String),
    /// A chart of a Helm repository.
    #[error(
        "spec.source.chart {0}: charts from Helm repositories are not read for Applications yet; a chart in Git (spec.source.path) is"
    )]
    RepositoryChart(String),
    /// A config management plugin.
    #[error("spec.source.plugin: config management plugins are not run")]
    Plugin,
}

/// Notes `field: why` in `out` when `set`.
fn named(out: &mut Vec<String>, field: &str, set: bool, why: &str) {
    if set {
        out.push(format!("{field}: {why}"));
    }
}

/// `image=newName:tag`, `image:tag`, `image@digest` → kustomize's image object.
pub fn kustomize_image(s: &str) -> serde_json::Value {
    let (name, new) = match s.split_once('=') {
        Some((n, rest)) => (n.to_owned(), rest.to_owned()),
        None => (String::new(), s.to_owned()),
    };
    let (image, digest) = match new.split_once('@') {
        Some((i, d)) => (i.to_owned(), Some(d.to_owned())),
        None => (new.clone(), None),
    };
    // A `:` after the last `/` is the tag (a registry port comes before a `/`).
    let (image, tag) = match image.rfind(':') {
        Some(i) if !image[i..].contains('/') => (image[..i].to_owned(), Some(image[i + 1..].to_owned())),
        _ => (image, None),
    };
    let mut o = serde_json::Map::new();
    if name.is_empty() {
        o.insert("name".into(), image.into());
    } else {
        o.insert("name".into(), name.into());
        o.insert("newName".into(), image.into());
    }
    if let Some(t) = tag {
        o.insert("newTag".into(), t.into());
    }
    if let Some(d) = digest {
        o.insert("digest".into(), d.into());
    }
    serde_json::Value::Object(o)
}

/// The Sync spec for `app`; `credentials`: the name of a repository Secret (labelled
/// `argocd.argoproj.io/secret-type: repository`) whose `url` is the source's.
pub fn translate(app: &Application, credentials: Option<&str>) -> Result<Translation, ApplicationError> {
    let s = &app.spec;
    let src = s.source.as_ref().ok_or(ApplicationError::NoSource)?;
    let server = s.destination.server.as_deref();
    let cluster = s.destination.name.as_deref();
    if server.is_some_and(|v| v != "https://kubernetes.default.svc")
        || cluster.is_some_and(|v| v != "in-cluster")
    {
        return Err(ApplicationError::OtherCluster(
            server.or(cluster).unwrap_or_default().to_owned(),
        ));
    }
    if let Some(c) = &src.chart {
        return Err(ApplicationError::RepositoryChart(c.clone()));
    }
    if src.plugin.is_some() {
        return Err(ApplicationError::Plugin);
    }
    let mut unsupported = Vec::new();
    named(
        &mut unsupported,
        "spec.sources",
        !s.sources.is_empty(),
        "only spec.source is read",
    );
    let policy = s.sync_policy.clone().unwrap_or_default();
    let automated = policy.automated.as_ref().filter(|a| a.enabled != Some(false));
    named(
        &mut unsupported,
        "spec.syncPolicy.automated",
        automated.is_none(),
        "absent: a manual sync (argocd app sync) is not run by Lockstep; the Application's Sync is suspended until automated is set",
    );
    let mut create_namespace = false;
    for o in &policy.sync_options {
        match o.as_str() {
            "CreateNamespace=true" => create_namespace = true,
            // What Lockstep always does: server-side apply, prune after everything else, write
            // only what changed, keep ignored fields out of the apply.
            "ServerSideApply=true"
            | "PruneLast=true"
            | "ApplyOutOfSyncOnly=true"
            | "RespectIgnoreDifferences=true"
            | "CreateNamespace=false"
            | "Validate=true" => {}
            other => unsupported.push(format!("spec.syncPolicy.syncOptions {other}: not acted on")),
        }
    }
    named(
        &mut unsupported,
        "spec.syncPolicy.managedNamespaceMetadata",
        policy.managed_namespace_metadata.is_some(),
        "the namespace is made bare",
    );
    named(
        &mut unsupported,
        "spec.syncPolicy.retry.limit",
        policy
            .retry
            .as_ref()
            .and_then(|r| r.limit)
            .is_some_and(|l| l >= 0),
        "a failed sync is retried until it succeeds",
    );
    let retry = policy
        .retry
        .as_ref()
        .and_then(|r| r.backoff.as_ref())
        .map(|b| Retry {
            duration: b.duration.clone(),
            factor: b.factor.and_then(|f| u32::try_from(f).ok()),
            max_duration: b.max_duration.clone(),
        });
    let mut ignore = Vec::new();
    for (i, d) in s.ignore_differences.iter().enumerate() {
        named(
            &mut unsupported,
            &format!("spec.ignoreDifferences[{i}].jqPathExpressions"),
            !d.jq_path_expressions.is_empty(),
            "only jsonPointers",
        );
        named(
            &mut unsupported,
            &format!("spec.ignoreDifferences[{i}].managedFieldsManagers"),
            !d.managed_fields_managers.is_empty(),
            "only jsonPointers",
        );
        if !d.json_pointers.is_empty() {
            ignore.push(IgnoreRule {
                json_pointers: d.json_pointers.clone(),
                target: Some(IgnoreTarget {
                    group: d.group.clone(),
                    kind: Some(d.kind.clone()).filter(|k| !k.is_empty()),
                    name: d.name.clone(),
                    namespace: d.namespace.clone(),
                }),
            });
        }
    }
    let dir = src.directory.clone().unwrap_or_default();
    named(
        &mut unsupported,
        "spec.source.directory.include",
        dir.include.is_some(),
        "every file is read",
    );
    named(
        &mut unsupported,
        "spec.source.directory.exclude",
        dir.exclude.is_some(),
        "every file is read",
    );
    named(
        &mut unsupported,
        "spec.source.directory.jsonnet",
        dir.jsonnet.is_some(),
        "Jsonnet is not rendered",
    );
    let kustomize = src.kustomize.as_ref().map(|k| {
        named(
            &mut unsupported,
            "spec.source.kustomize.version",
            k.version.is_some(),
            "kustomize v5.8.2's engine builds every path",
        );
        for key in k.other.keys() {
            unsupported.push(format!("spec.source.kustomize.{key}: not acted on"));
        }
        KustomizeSpec {
            name_prefix: k.name_prefix.clone(),
            name_suffix: k.name_suffix.clone(),
            patches: k.patches.clone(),
            images: k.images.iter().map(|i| kustomize_image(i)).collect(),
            components: k.components.clone(),
            ignore_missing_components: k.ignore_missing_components,
            common_metadata: (!k.common_annotations.is_empty()).then(|| CommonMetadata {
                labels: Default::default(),
                annotations: k.common_annotations.clone(),
            }),
            common_labels: k.common_labels.clone(),
            replicas: k.replicas.clone(),
        }
    });
    let kustomize_namespace = src.kustomize.as_ref().and_then(|k| k.namespace.clone());
    let helm = src.helm.as_ref().map(|h| {
        named(
            &mut unsupported,
            "spec.source.helm.ignoreMissingValueFiles",
            h.ignore_missing_value_files == Some(true),
            "a missing values file fails the sync",
        );
        for key in h.other.keys() {
            unsupported.push(format!("spec.source.helm.{key}: not acted on"));
        }
        let mut values = h.values_object.clone();
        if values.is_none()
            && let Some(text) = &h.values
            && let Ok(docs) = lockstep_formats::yaml::load_documents(text)
            && let Some(d) = docs.first()
        {
            values = lockstep_formats::sops::stores::to_json(d).ok();
        }
        HelmSpec {
            release_name: Some(
                h.release_name
                    .clone()
                    .unwrap_or_else(|| app.metadata.name.clone().unwrap_or_default()),
            ),
            values_files: h.value_files.clone(),
            values,
            set: h
                .parameters
                .iter()
                .map(|p| SyncHelmParameter {
                    name: p.name.clone(),
                    value: p.value.clone(),
                    force_string: p.force_string,
                })
                .collect(),
            include_crds: h.skip_crds.map(|s| !s),
            kube_version: h.kube_version.clone(),
            api_versions: h.api_versions.clone(),
            skip_tests: h.skip_tests,
            ..HelmSpec::default()
        }
    });
    let revision = src
        .target_revision
        .clone()
        .filter(|r| !r.is_empty())
        .unwrap_or_else(|| "HEAD".into());
    let reference = if revision.len() == 40 && revision.bytes().all(|b| b.is_ascii_hexdigit()) {
        GitRef {
            commit: Some(revision),
            ..GitRef::default()
        }
    } else {
        // A branch or `HEAD`; Argo CD also takes a tag here, which Lockstep reads as a branch.
        GitRef {
            branch: Some(revision),
            ..GitRef::default()
        }
    };
    let helm_namespace = src.helm.as_ref().and_then(|h| h.namespace.clone());
    let spec = SyncSpec {
        source: Source {
            url: src.repo_url.clone(),
            reference: Some(reference),
            path: src
                .path
                .clone()
                .map(|p| p.trim_start_matches("./").trim_matches('/').to_owned())
                .filter(|p| !p.is_empty() && p != "."),
            secret_ref: credentials.map(|n| LocalRef { name: n.to_owned() }),
            interval: Some("3m".into()),
            recurse: Some(dir.recurse == Some(true)),
        },
        target_namespace: kustomize_namespace
            .or(helm_namespace.filter(|_| helm.is_some()))
            .or_else(|| {
                // A chart's release namespace is its destination namespace.
                helm.as_ref().and(s.destination.namespace.clone())
            }),
        default_namespace: s.destination.namespace.clone(),
        create_namespace: Some(create_namespace),
        prune: Some(automated.is_some_and(|a| a.prune == Some(true))),
        prune_budget_percent: Some(100),
        allow_mass_deletion: Some(true),
        self_heal: Some(automated.is_some_and(|a| a.self_heal == Some(true))),
        suspend: Some(automated.is_none()),
        retry,
        ignore,
        kustomize,
        helm,
        ..SyncSpec::default()
    };
    Ok(Translation { spec, unsupported })
}

/// The Application's status from its Sync's (`None`: not created yet); `failure` when it could
/// not be translated.
pub fn application_status(
    app: &Application,
    sync: Option<&Sync>,
    failure: Option<&str>,
    unsupported: &[String],
    now: &str,
) -> ApplicationStatus {
    let old = app.status.clone().unwrap_or_default();
    let source_type = app.spec.source.as_ref().map(|s| {
        if s.helm.is_some() {
            "Helm"
        } else if s.kustomize.is_some() {
            "Kustomize"
        } else {
            "Directory"
        }
        .to_owned()
    });
    let mut st = ApplicationStatus {
        source_type,
        reconciled_at: Some(now.to_owned()),
        ..ApplicationStatus::default()
    };
    let condition = |type_: &str, message: String| ApplicationCondition {
        type_: type_.to_owned(),
        message,
        last_transition_time: Some(now.to_owned()),
    };
    if let Some(msg) = failure {
        st.sync = Some(SyncStatus {
            status: "Unknown".into(),
            revision: None,
        });
        st.health = Some(HealthStatus {
            status: "Unknown".into(),
            message: None,
        });
        st.conditions.push(condition("InvalidSpecError", msg.to_owned()));
        return st;
    }
    let ss = sync.and_then(|s| s.status.as_ref());
    let find = |t: &str| ss.and_then(|ss| ss.conditions.iter().find(|c| c.type_ == t));
    let commit = |rev: Option<&String>| rev.and_then(|r| r.rsplit_once("sha1:").map(|(_, c)| c.to_owned()));
    let ready = find("Ready");
    let applied = commit(ss.and_then(|s| s.last_applied_revision.as_ref()));
    let attempted = commit(ss.and_then(|s| s.last_attempted_revision.as_ref()));
    let synced = ready.is_some_and(|c| c.status == "True") && applied.is_some() && applied == attempted;
    st.sync = Some(SyncStatus {
        status: if ss.is_none() {
            "Unknown"
        } else if synced {
            "Synced"
        } else {
            "OutOfSync"
        }
        .into(),
        revision: attempted.clone().or(applied.clone()),
    });
    let healthy = find("Healthy");
    st.health = Some(HealthStatus {
        status: match (
            healthy.map(|c| c.status.as_str()),
            healthy.and_then(|c| Reason::parse(&c.reason)),
        ) {
            (Some("True"), _) => "Healthy",
            (Some("Unknown"), _) | (_, Some(Reason::Progressing)) => "Progressing",
            (Some("False"), _) => "Degraded",
            _ if sync.is_some_and(|s| s.spec.suspend == Some(true)) => "Suspended",
            _ => "Missing",
        }
        .into(),
        message: healthy.map(|c| c.message.clone()).filter(|m| !m.is_empty()),
    });
    if let Some(r) = ready {
        let phase = match (r.status.as_str(), Reason::parse(&r.reason)) {
            ("True", _) => "Succeeded",
            (_, Some(Reason::Progressing)) => "Running",
            _ => "Failed",
        };
        st.operation_state = Some(OperationState {
            phase: phase.into(),
            message: Some(if phase == "Succeeded" {
                "successfully synced (all tasks run)".to_owned()
            } else {
                r.message.clone()
            }),
            sync_result: attempted.clone().map(|revision| SyncOperationResult { revision }),
            started_at: old
                .operation_state
                .as_ref()
                .filter(|o| o.sync_result.as_ref().map(|s| &s.revision) == attempted.as_ref())
                .map(|o| o.started_at.clone())
                .unwrap_or_else(|| r.last_transition_time.clone()),
            finished_at: (phase != "Running").then(|| r.last_transition_time.clone()),
        });
    }
    st.resources = ss
        .map(|ss| {
            ss.inventory
                .iter()
                .map(|e| {
                    let (group, version) = e.api_version.rsplit_once('/').unwrap_or(("", &e.api_version));
                    ResourceStatus {
                        group: group.to_owned(),
                        version: version.to_owned(),
                        kind: e.kind.clone(),
                        namespace: e.namespace.clone(),
                        name: e.name.clone(),
                        status: Some(if synced { "Synced" } else { "OutOfSync" }.into()),
                    }
                })
                .collect()
        })
        .unwrap_or_default();
    if !unsupported.is_empty() {
        st.conditions.push(condition(
            "UnsupportedFields",
            format!("Lockstep does not act on: {}", unsupported.join("; ")),
        ));
    }
    st
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn app(spec: serde_json::Value) -> Application {
        serde_json::from_value(
            json!({ "apiVersion": "argoproj.io/v1alpha1", "kind": "Application",
            "metadata": { "name": "web", "namespace": "argocd" }, "spec": spec }),
        )
        .unwrap()
    }

    #[test]
    fn images_as_argo_cd_writes_them() {
        assert_eq!(
            kustomize_image("nginx:1.25"),
            json!({ "name": "nginx", "newTag": "1.25" })
        );
        assert_eq!(
            kustomize_image("nginx=registry.local:5000/nginx:2"),
            json!({ "name": "nginx", "newName": "registry.local:5000/nginx", "newTag": "2" })
        );
        assert_eq!(
            kustomize_image("web@sha256:abc"),
            json!({ "name": "web", "digest": "sha256:abc" })
        );
        assert_eq!(
            kustomize_image("registry.local:5000/web"),
            json!({ "name": "registry.local:5000/web" })
        );
    }

    #[test]
    fn an_application_becomes_a_sync() {
        let a = app(json!({ "project": "default",
            "source": { "repoURL": "https://git.example/apps", "targetRevision": "HEAD", "path": "guestbook",
                        "kustomize": { "namePrefix": "p-", "images": ["web:2"], "commonLabels": { "a": "b" } } },
            "destination": { "server": "https://kubernetes.default.svc", "namespace": "guestbook" },
            "syncPolicy": { "automated": { "prune": true }, "syncOptions": ["CreateNamespace=true", "Replace=true"],
                            "retry": { "limit": 5, "backoff": { "duration": "5s", "factor": 2, "maxDuration": "3m" } } },
            "ignoreDifferences": [{ "group": "apps", "kind": "Deployment", "jsonPointers": ["/spec/replicas"] }] }));
        let t = translate(&a, Some("repo-creds")).unwrap();
        let s = &t.spec;
        assert_eq!(
            s.source.reference.as_ref().unwrap().branch.as_deref(),
            Some("HEAD")
        );
        assert_eq!(s.source.recurse, Some(false));
        assert_eq!(s.source.secret_ref.as_ref().unwrap().name, "repo-creds");
        assert_eq!(
            (s.default_namespace.as_deref(), s.target_namespace.as_deref()),
            (Some("guestbook"), None)
        );
        assert_eq!(
            (s.prune, s.self_heal, s.suspend, s.create_namespace),
            (Some(true), Some(false), Some(false), Some(true))
        );
        assert_eq!(
            s.kustomize.as_ref().unwrap().images,
            [json!({ "name": "web", "newTag": "2" })]
        );
        assert_eq!(s.ignore[0].json_pointers, ["/spec/replicas"]);
        assert_eq!(
            t.unsupported,
            [
                "spec.syncPolicy.syncOptions Replace=true: not acted on",
                "spec.syncPolicy.retry.limit: a failed sync is retried until it succeeds",
            ]
        );
        let manual =
            app(json!({ "source": { "repoURL": "x", "path": "." }, "destination": { "namespace": "a" } }));
        assert_eq!(translate(&manual, None).unwrap().spec.suspend, Some(true));
        let remote =
            app(json!({ "source": { "repoURL": "x" }, "destination": { "server": "https://other:6443" } }));
        assert!(matches!(
            translate(&remote, None),
            Err(ApplicationError::OtherCluster(_))
        ));
    }

    #[test]
    fn status_in_argo_cd_shape() {
        let a = app(json!({ "source": { "repoURL": "x", "path": "." }, "destination": {} }));
        let sync: Sync = serde_json::from_value(json!({ "apiVersion": "lockstep.dev/v1alpha1", "kind": "Sync",
            "metadata": { "name": "web" }, "spec": { "source": { "url": "x" } },
            "status": { "lastAppliedRevision": "HEAD@sha1:abc", "lastAttemptedRevision": "HEAD@sha1:abc",
              "conditions": [{ "type": "Ready", "status": "True", "reason": "Succeeded", "message": "", "lastTransitionTime": "t0" },
                             { "type": "Healthy", "status": "True", "reason": "Succeeded", "message": "", "lastTransitionTime": "t0" }],
              "inventory": [{ "apiVersion": "apps/v1", "kind": "Deployment", "namespace": "a", "name": "web", "hash": "h" }] } })).unwrap();
        let st = application_status(&a, Some(&sync), None, &[], "t1");
        assert_eq!(st.sync.unwrap().status, "Synced");
        assert_eq!(st.health.unwrap().status, "Healthy");
        let op = st.operation_state.unwrap();
        assert_eq!(
            (op.phase.as_str(), op.sync_result.unwrap().revision.as_str()),
            ("Succeeded", "abc")
        );
        assert_eq!(st.resources[0].group, "apps");
        assert_eq!(st.source_type.as_deref(), Some("Directory"));
    }
}
