//! Pure: a Flux `Kustomization` and its `GitRepository` → the `Sync` spec that does what
//! kustomize-controller would, the fields Lockstep does not act on named; and a Sync's status
//! → the Kustomization's and the GitRepository's, in Flux's shape.

use crate::flux::{
    Artifact, FluxInventory, FluxInventoryEntry, GitRepository, GitRepositoryStatus, Kustomization,
    KustomizationStatus,
};
use crate::{
    Condition, Decryption, DependencyRef, GitRef, IgnoreRule, IgnoreTarget, KustomizeSpec, LocalRef, Reason,
    Retry, SopsDecryption, Source, Sync, SyncSpec,
};

/// What a Kustomization becomes.
#[derive(Clone, Debug, PartialEq)]
pub struct Translation {
    /// The Sync's spec.
    pub spec: SyncSpec,
    /// `field: why` for every field set that Lockstep does not act on.
    pub unsupported: Vec<String>,
}

/// Why a Kustomization cannot be reconciled at all (its Ready condition says so; nothing is
/// applied or pruned).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TranslateError {
    /// `spec.sourceRef.kind` is not a GitRepository.
    #[error("spec.sourceRef.kind {0}: only GitRepository sources are reconciled by Lockstep")]
    SourceKind(String),
    /// The GitRepository's credentials live in another namespace than the Kustomization.
    #[error(
        "spec.sourceRef: GitRepository {0} has a secretRef and is in another namespace; Lockstep reads credentials from the Kustomization's namespace"
    )]
    CrossNamespaceCredentials(String),
    /// A `ref.name` that is no branch or tag.
    #[error("GitRepository {repo}: spec.ref.name {name:?}: only refs/heads/… and refs/tags/… are fetched")]
    RefName {
        /// The GitRepository.
        repo: String,
        /// The reference.
        name: String,
    },
    /// `spec.decryption.provider` is not `sops`.
    #[error("spec.decryption.provider {0:?}: only sops")]
    DecryptionProvider(String),
}

/// Flux's `ref` precedence (commit, name, semver, tag, branch), default branch `master`.
pub fn git_ref(repo: &GitRepository) -> Result<GitRef, TranslateError> {
    let r = repo.spec.reference.clone().unwrap_or_default();
    let only = |f: fn(&mut GitRef) -> &mut Option<String>, v: &String| {
        let mut g = GitRef::default();
        *f(&mut g) = Some(v.clone());
        g
    };
    if let Some(c) = &r.commit {
        return Ok(only(|g| &mut g.commit, c));
    }
    if let Some(n) = &r.name {
        if let Some(b) = n.strip_prefix("refs/heads/") {
            return Ok(only(|g| &mut g.branch, &b.to_owned()));
        }
        if let Some(t) = n.strip_prefix("refs/tags/") {
            return Ok(only(|g| &mut g.tag, &t.to_owned()));
        }
        return Err(TranslateError::RefName {
            repo: key(repo),
            name: n.clone(),
        });
    }
    if let Some(s) = &r.semver {
        return Ok(only(|g| &mut g.semver, s));
    }
    if let Some(t) = &r.tag {
        return Ok(only(|g| &mut g.tag, t));
    }
    Ok(only(
        |g| &mut g.branch,
        r.branch.as_ref().unwrap_or(&"master".to_owned()),
    ))
}

fn key<K: kube::Resource>(o: &K) -> String {
    format!(
        "{}/{}",
        o.meta().namespace.as_deref().unwrap_or_default(),
        o.meta().name.as_deref().unwrap_or_default()
    )
}

/// The Sync spec for `k` over `repo`.
pub fn translate(k: &Kustomization, repo: &GitRepository) -> Result<Translation, TranslateError> {
    let s = &k.spec;
    if s.source_ref.kind != "GitRepository" {
        return Err(TranslateError::SourceKind(s.source_ref.kind.clone()));
    }
    let same_ns = repo.metadata.namespace == k.metadata.namespace;
    if !same_ns && repo.spec.secret_ref.is_some() {
        return Err(TranslateError::CrossNamespaceCredentials(key(repo)));
    }
    let mut unsupported = Vec::new();
    let mut named = |field: &str, set: bool, why: &str| {
        if set {
            unsupported.push(format!("{field}: {why}"));
        }
    };
    let r = &repo.spec;
    named(
        "GitRepository spec.provider",
        r.provider.as_deref().is_some_and(|p| p != "generic"),
        "only generic credentials",
    );
    named(
        "GitRepository spec.verify",
        r.verify.is_some(),
        "commit signatures are not verified",
    );
    named(
        "GitRepository spec.timeout",
        r.timeout.is_some(),
        "a fetch is bounded by the agent's own Git timeout",
    );
    named(
        "GitRepository spec.serviceAccountName",
        r.service_account_name.is_some(),
        "no workload identity",
    );
    named(
        "GitRepository spec.proxySecretRef",
        r.proxy_secret_ref.is_some(),
        "no proxy",
    );
    named(
        "GitRepository spec.ignore",
        r.ignore.is_some(),
        "every file under the path is read",
    );
    named(
        "GitRepository spec.recurseSubmodules",
        r.recurse_submodules == Some(true),
        "submodules are not checked out",
    );
    named(
        "GitRepository spec.include",
        !r.include.is_empty(),
        "other repositories are not copied in",
    );
    named(
        "GitRepository spec.sparseCheckout",
        !r.sparse_checkout.is_empty(),
        "the whole tree is fetched",
    );
    named(
        "spec.healthChecks",
        !s.health_checks.is_empty(),
        "every applied object's health is waited for instead (as with spec.wait); objects this Kustomization does not apply are not checked",
    );
    named(
        "spec.healthCheckExprs",
        !s.health_check_exprs.is_empty(),
        "kstatus rules only",
    );
    named("spec.force", s.force == Some(true), "objects are not recreated");
    named(
        "spec.serviceAccountName",
        s.service_account_name.is_some(),
        "applied as the agent",
    );
    named(
        "spec.kubeConfig",
        s.kube_config.is_some(),
        "applied to this cluster",
    );
    named(
        "spec.deletionPolicy",
        s.deletion_policy.as_deref().is_some_and(|p| p != "Orphan"),
        "deleting the Kustomization leaves its objects (Orphan)",
    );
    named(
        "spec.dependsOn[].readyExpr",
        s.depends_on.iter().any(|d| d.ready_expr.is_some()),
        "a dependency is ready when its Ready condition is True",
    );
    named(
        "spec.buildMetadata",
        !s.build_metadata.is_empty(),
        "no build annotations are added",
    );
    named(
        "spec.ignore[].target",
        s.ignore
            .iter()
            .filter_map(|r| r.target.as_ref())
            .any(|t| t.version.is_some() || t.label_selector.is_some() || t.annotation_selector.is_some()),
        "targets match by group, kind, name and namespace (exactly) only",
    );
    let ignore = s
        .ignore
        .iter()
        .map(|r| IgnoreRule {
            json_pointers: r.paths.clone(),
            target: r.target.as_ref().map(|t| IgnoreTarget {
                group: t.group.clone(),
                kind: t.kind.clone(),
                name: t.name.clone(),
                namespace: t.namespace.clone(),
            }),
        })
        .collect();
    let decryption = match &s.decryption {
        None => None,
        Some(d) if d.provider != "sops" => {
            return Err(TranslateError::DecryptionProvider(d.provider.clone()));
        }
        Some(d) => {
            named(
                "spec.decryption.serviceAccountName",
                d.service_account_name.is_some(),
                "no cloud KMS",
            );
            d.secret_ref.as_ref().map(|r| Decryption {
                sops: Some(SopsDecryption {
                    secret_ref: LocalRef { name: r.name.clone() },
                }),
                sealed_secrets: None,
            })
        }
    };
    let path = s
        .path
        .as_deref()
        .map(|p| p.trim_start_matches("./").trim_matches('/').to_owned())
        .filter(|p| !p.is_empty() && p != ".");
    let retry = s.retry_interval.as_ref().map(|d| Retry {
        duration: Some(d.clone()),
        factor: Some(1),
        max_duration: Some(d.clone()),
    });
    let spec = SyncSpec {
        source: Source {
            url: r.url.clone(),
            reference: Some(git_ref(repo)?),
            path,
            secret_ref: r.secret_ref.as_ref().map(|n| LocalRef { name: n.name.clone() }),
            interval: Some(r.interval.clone()),
            recurse: None,
        },
        decryption,
        target_namespace: s.target_namespace.clone(),
        prune: Some(s.prune),
        // Flux prunes whatever left the source: no budget.
        prune_budget_percent: Some(100),
        allow_mass_deletion: Some(true),
        suspend: s.suspend.or(r.suspend),
        timeout: s.timeout.clone().or_else(|| Some(s.interval.clone())),
        wait: (s.wait == Some(true) || !s.health_checks.is_empty()).then_some(true),
        retry,
        depends_on: s
            .depends_on
            .iter()
            .map(|d| DependencyRef {
                name: d.name.clone(),
                namespace: d.namespace.clone(),
            })
            .collect(),
        post_build: s.post_build.clone(),
        ignore,
        // Always: Flux builds every path with kustomize, generating a kustomization when there
        // is none, with the target namespace as its namespace.
        kustomize: Some(KustomizeSpec {
            name_prefix: s.name_prefix.clone(),
            name_suffix: s.name_suffix.clone(),
            patches: s.patches.clone(),
            images: s.images.clone(),
            components: s.components.clone(),
            ignore_missing_components: s.ignore_missing_components,
            common_metadata: s.common_metadata.clone(),
            ..KustomizeSpec::default()
        }),
        ..SyncSpec::default()
    };
    Ok(Translation { spec, unsupported })
}

/// Flux's reason for a Sync's Ready reason.
pub fn flux_reason(r: Option<Reason>) -> &'static str {
    match r {
        Some(Reason::Succeeded) => "ReconciliationSucceeded",
        Some(Reason::Progressing) => "Progressing",
        Some(Reason::SourceFailed) => "ArtifactFailed",
        Some(Reason::RenderFailed | Reason::DecryptionKeysFailed) => "BuildFailed",
        Some(Reason::HealthCheckFailed | Reason::HealthCheckCanceled | Reason::TimedOut) => {
            "HealthCheckFailed"
        }
        Some(Reason::DependencyNotReady | Reason::DependencyCycle) => "DependencyNotReady",
        Some(Reason::PruneBudgetExceeded) => "PruneFailed",
        _ => "ReconciliationFailed",
    }
}

/// `<namespace>_<name>_<group>_<kind>` and the version, from an apiVersion.
fn inventory_entry(api_version: &str, kind: &str, namespace: &str, name: &str) -> FluxInventoryEntry {
    let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version));
    FluxInventoryEntry {
        id: format!("{namespace}_{name}_{group}_{kind}"),
        v: version.to_owned(),
    }
}

/// A condition with its transition time kept from `old` when its status did not change.
fn condition(
    old: &[Condition],
    type_: &str,
    status: &str,
    reason: &str,
    message: String,
    now: &str,
    generation: Option<i64>,
) -> Condition {
    let since = old
        .iter()
        .find(|c| c.type_ == type_ && c.status == status)
        .map(|c| c.last_transition_time.clone())
        .unwrap_or_else(|| now.to_owned());
    Condition {
        type_: type_.to_owned(),
        status: status.to_owned(),
        reason: reason.to_owned(),
        message,
        last_transition_time: since,
        observed_generation: generation,
    }
}

/// The Kustomization's status from its Sync's (`None`: not created yet), with `failure` when
/// it could not be translated and `unsupported` naming what is not acted on.
pub fn kustomization_status(
    k: &Kustomization,
    sync: Option<&Sync>,
    failure: Option<&str>,
    unsupported: &[String],
    now: &str,
) -> KustomizationStatus {
    let old = k.status.clone().unwrap_or_default();
    let generation = k.metadata.generation;
    let mut st = KustomizationStatus {
        observed_generation: old.observed_generation,
        last_applied_revision: old.last_applied_revision.clone(),
        last_attempted_revision: old.last_attempted_revision.clone(),
        last_handled_reconcile_at: old.last_handled_reconcile_at.clone(),
        inventory: old.inventory.clone(),
        conditions: Vec::new(),
    };
    let sync_status = sync.and_then(|s| s.status.as_ref());
    if let Some(msg) = failure {
        st.conditions.push(condition(
            &old.conditions,
            "Ready",
            "False",
            "ReconciliationFailed",
            msg.to_owned(),
            now,
            generation,
        ));
        st.conditions.push(condition(
            &old.conditions,
            "Stalled",
            "True",
            "ReconciliationFailed",
            msg.to_owned(),
            now,
            generation,
        ));
        st.observed_generation = generation;
    } else if let (Some(s), Some(ss)) = (sync, sync_status) {
        let current = ss.observed_generation == s.metadata.generation;
        for c in &ss.conditions {
            let reason = match c.type_.as_str() {
                "Ready" => flux_reason(Reason::parse(&c.reason)),
                "Healthy" if c.status == "True" => "Succeeded",
                "Healthy" => flux_reason(Reason::parse(&c.reason)),
                _ => flux_reason(Reason::parse(&c.reason)),
            };
            let message = match (
                c.type_.as_str(),
                c.status.as_str(),
                ss.last_applied_revision.as_deref(),
            ) {
                ("Ready", "True", Some(rev)) => format!("Applied revision: {rev}"),
                _ => c.message.clone(),
            };
            st.conditions.push(condition(
                &old.conditions,
                &c.type_,
                &c.status,
                reason,
                message,
                now,
                generation,
            ));
        }
        if current {
            st.observed_generation = generation;
        }
        st.last_applied_revision.clone_from(&ss.last_applied_revision);
        st.last_attempted_revision.clone_from(&ss.last_attempted_revision);
        st.last_handled_reconcile_at = k
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(crate::flux::FLUX_RECONCILE_ANNOTATION))
            .cloned()
            .or(st.last_handled_reconcile_at);
        st.inventory = Some(FluxInventory {
            entries: ss
                .inventory
                .iter()
                .map(|e| inventory_entry(&e.api_version, &e.kind, &e.namespace, &e.name))
                .collect(),
        });
    } else {
        st.conditions.push(condition(
            &old.conditions,
            "Ready",
            "Unknown",
            "Progressing",
            "Reconciliation in progress".into(),
            now,
            generation,
        ));
        st.conditions.push(condition(
            &old.conditions,
            "Reconciling",
            "True",
            "Progressing",
            "Reconciliation in progress".into(),
            now,
            generation,
        ));
    }
    if !unsupported.is_empty() {
        st.conditions.push(condition(
            &old.conditions,
            "Unsupported",
            "True",
            "FieldsIgnored",
            format!("Lockstep does not act on: {}", unsupported.join("; ")),
            now,
            generation,
        ));
    }
    st
}

/// A GitRepository's status from the Syncs of the Kustomizations that use it: the newest
/// revision one of them fetched, or the fetch failure the newest reports.
pub fn git_repository_status(repo: &GitRepository, consumers: &[&Sync], now: &str) -> GitRepositoryStatus {
    let old = repo.status.clone().unwrap_or_default();
    let generation = repo.metadata.generation;
    let mut st = GitRepositoryStatus {
        observed_generation: generation,
        artifact: old.artifact.clone(),
        last_handled_reconcile_at: repo
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(crate::flux::FLUX_RECONCILE_ANNOTATION))
            .cloned(),
        conditions: Vec::new(),
    };
    let failed = consumers.iter().find_map(|s| {
        let c = s
            .status
            .as_ref()?
            .conditions
            .iter()
            .find(|c| c.type_ == "Ready")?;
        (c.status == "False" && Reason::parse(&c.reason) == Some(Reason::SourceFailed))
            .then(|| c.message.clone())
    });
    let revision = consumers
        .iter()
        .find_map(|s| s.status.as_ref()?.last_attempted_revision.clone());
    match (failed, revision) {
        (Some(msg), _) => {
            st.conditions.push(condition(
                &old.conditions,
                "Ready",
                "False",
                "GitOperationFailed",
                msg,
                now,
                generation,
            ));
        }
        (None, Some(rev)) => {
            if st.artifact.as_ref().map(|a| &a.revision) != Some(&rev) {
                st.artifact = Some(Artifact {
                    digest: rev
                        .rsplit_once('@')
                        .map_or_else(|| rev.clone(), |(_, d)| d.to_owned()),
                    revision: rev.clone(),
                    last_update_time: now.to_owned(),
                    ..Artifact::default()
                });
            }
            st.conditions.push(condition(
                &old.conditions,
                "Ready",
                "True",
                "Succeeded",
                format!("stored artifact for revision '{rev}'"),
                now,
                generation,
            ));
        }
        (None, None) => {
            st.conditions.push(condition(
                &old.conditions,
                "Ready",
                "Unknown",
                "Progressing",
                "fetched by the Kustomizations that use it; none has fetched yet".into(),
                now,
                generation,
            ));
        }
    }
    st
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn repo(spec: serde_json::Value) -> GitRepository {
        serde_json::from_value(
            json!({ "apiVersion": "source.toolkit.fluxcd.io/v1", "kind": "GitRepository",
            "metadata": { "name": "infra", "namespace": "flux-system" }, "spec": spec }),
        )
        .unwrap()
    }

    fn ks(spec: serde_json::Value) -> Kustomization {
        serde_json::from_value(
            json!({ "apiVersion": "kustomize.toolkit.fluxcd.io/v1", "kind": "Kustomization",
            "metadata": { "name": "apps", "namespace": "flux-system", "generation": 2 }, "spec": spec }),
        )
        .unwrap()
    }

    #[test]
    fn refs_follow_flux_precedence_and_default_to_master() {
        let r = |v| git_ref(&repo(json!({ "url": "https://x", "interval": "1m", "ref": v }))).unwrap();
        assert_eq!(r(json!({})).branch.as_deref(), Some("master"));
        assert_eq!(
            r(json!({ "branch": "main", "tag": "v1" })).tag.as_deref(),
            Some("v1")
        );
        assert_eq!(
            r(json!({ "tag": "v1", "semver": ">=1" })).semver.as_deref(),
            Some(">=1")
        );
        assert_eq!(
            r(json!({ "semver": ">=1", "name": "refs/heads/dev" }))
                .branch
                .as_deref(),
            Some("dev")
        );
        assert_eq!(
            r(json!({ "name": "refs/tags/v2", "commit": "abc" }))
                .commit
                .as_deref(),
            Some("abc")
        );
        assert!(
            git_ref(&repo(
                json!({ "url": "x", "interval": "1m", "ref": { "name": "refs/pull/1/head" } })
            ))
            .is_err()
        );
    }

    #[test]
    fn a_kustomization_becomes_a_sync_and_names_what_is_ignored() {
        let r = repo(
            json!({ "url": "https://git.example/infra", "interval": "1m", "secretRef": { "name": "git" },
                             "ref": { "branch": "main" } }),
        );
        let k = ks(
            json!({ "sourceRef": { "kind": "GitRepository", "name": "infra" }, "path": "./apps/prod",
            "interval": "10m", "retryInterval": "30s", "prune": true, "targetNamespace": "apps", "wait": true,
            "dependsOn": [{ "name": "infra" }], "decryption": { "provider": "sops", "secretRef": { "name": "sops-age" } },
            "postBuild": { "substitute": { "a": "b" } }, "images": [{ "name": "x", "newTag": "2" }], "force": true }),
        );
        let t = translate(&k, &r).unwrap();
        let s = &t.spec;
        assert_eq!(s.source.url, "https://git.example/infra");
        assert_eq!(s.source.path.as_deref(), Some("apps/prod"));
        assert_eq!(s.source.interval.as_deref(), Some("1m"));
        assert_eq!(s.source.secret_ref.as_ref().unwrap().name, "git");
        assert_eq!(
            (s.prune, s.prune_budget_percent, s.wait),
            (Some(true), Some(100), Some(true))
        );
        assert_eq!(s.timeout.as_deref(), Some("10m"));
        assert_eq!(s.retry.as_ref().unwrap().duration.as_deref(), Some("30s"));
        assert_eq!(s.depends_on[0].name, "infra");
        assert_eq!(
            s.decryption
                .as_ref()
                .unwrap()
                .sops
                .as_ref()
                .unwrap()
                .secret_ref
                .name,
            "sops-age"
        );
        assert_eq!(s.post_build.as_ref().unwrap().substitute["a"], "b");
        assert_eq!(s.kustomize.as_ref().unwrap().images.len(), 1);
        assert_eq!(t.unsupported, ["spec.force: objects are not recreated"]);

        let oci = ks(
            json!({ "sourceRef": { "kind": "OCIRepository", "name": "x" }, "interval": "1m", "prune": true }),
        );
        assert_eq!(
            translate(&oci, &r),
            Err(TranslateError::SourceKind("OCIRepository".into()))
        );
    }

    #[test]
    fn status_in_flux_shape() {
        let k = ks(
            json!({ "sourceRef": { "kind": "GitRepository", "name": "infra" }, "interval": "1m", "prune": true }),
        );
        let sync: Sync = serde_json::from_value(json!({ "apiVersion": "lockstep.dev/v1alpha1", "kind": "Sync",
            "metadata": { "name": "apps", "generation": 1 }, "spec": { "source": { "url": "x" } },
            "status": { "observedGeneration": 1, "lastAppliedRevision": "main@sha1:abc", "lastAttemptedRevision": "main@sha1:abc",
              "conditions": [{ "type": "Ready", "status": "True", "reason": "Succeeded", "message": "x", "lastTransitionTime": "t0" }],
              "inventory": [{ "apiVersion": "apps/v1", "kind": "Deployment", "namespace": "web", "name": "web", "hash": "h" },
                            { "apiVersion": "v1", "kind": "Namespace", "namespace": "", "name": "web", "hash": "h" }] } })).unwrap();
        let st = kustomization_status(&k, Some(&sync), None, &["spec.images: not applied".into()], "t1");
        assert_eq!(st.observed_generation, Some(2));
        assert_eq!(st.last_applied_revision.as_deref(), Some("main@sha1:abc"));
        let ready = &st.conditions[0];
        assert_eq!(
            (ready.reason.as_str(), ready.message.as_str()),
            ("ReconciliationSucceeded", "Applied revision: main@sha1:abc")
        );
        let ids: Vec<_> = st
            .inventory
            .unwrap()
            .entries
            .into_iter()
            .map(|e| (e.id, e.v))
            .collect();
        assert_eq!(
            ids,
            [
                ("web_web_apps_Deployment".into(), "v1".into()),
                ("_web__Namespace".into(), "v1".into())
            ]
        );
        assert_eq!(st.conditions[1].type_, "Unsupported");

        let r = repo(json!({ "url": "x", "interval": "1m" }));
        let g = git_repository_status(&r, &[&sync], "t1");
        assert_eq!(g.artifact.unwrap().revision, "main@sha1:abc");
        assert_eq!(
            g.conditions[0].message,
            "stored artifact for revision 'main@sha1:abc'"
        );
    }
}
