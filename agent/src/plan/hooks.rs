//! Hooks, one model for both ecosystems: Argo CD's resource hooks (`argocd.argoproj.io/hook`,
//! `argocd.argoproj.io/hook-delete-policy`) and Helm's (`helm.sh/hook`, `helm.sh/hook-weight`,
//! `helm.sh/hook-delete-policy`), mapped as Argo CD maps them: `pre-install`/`pre-upgrade` are
//! PreSync, `post-install`/`post-upgrade` PostSync, the weight is the hook's wave, and an object
//! with an Argo CD hook annotation ignores its Helm ones. A hook is not part of the inventory:
//! it is created in its phase (by `generateName` when it has one) and deleted by its policy,
//! BeforeHookCreation when it names none.
//!
//! Pure: the role of an object, from its annotations.

use std::collections::BTreeSet;

use serde_json::Value as Json;

use super::Error;
use crate::api::WAVE_ANNOTATIONS;

/// Argo CD's hook annotation.
pub const ARGO_HOOK: &str = "argocd.argoproj.io/hook";
/// Argo CD's hook deletion policy annotation.
pub const ARGO_DELETE_POLICY: &str = "argocd.argoproj.io/hook-delete-policy";
/// Helm's hook annotation.
pub const HELM_HOOK: &str = "helm.sh/hook";
/// Helm's hook weight annotation.
pub const HELM_WEIGHT: &str = "helm.sh/hook-weight";
/// Helm's hook deletion policy annotation.
pub const HELM_DELETE_POLICY: &str = "helm.sh/hook-delete-policy";

/// When a hook runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Phase {
    /// Before the sync's first stage; all must succeed for the sync to go on.
    PreSync,
    /// With the sync's objects, after the PreSync hooks succeeded.
    Sync,
    /// After the last wave is applied and healthy.
    PostSync,
    /// When the sync fails.
    SyncFail,
}

/// When a hook is deleted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum DeletePolicy {
    /// The previous one is deleted before the hook is created again (the default).
    BeforeHookCreation,
    /// Deleted once it succeeded.
    HookSucceeded,
    /// Deleted once it failed.
    HookFailed,
}

/// A hook's place.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Hook {
    /// Its phases (a hook may name several).
    pub phases: BTreeSet<Phase>,
    /// Its wave within a phase (`helm.sh/hook-weight` for a Helm hook, else the sync wave).
    pub wave: i64,
    /// When it is deleted.
    pub delete: BTreeSet<DeletePolicy>,
    /// It has `generateName` and no name: created, never applied.
    pub generated: bool,
}

/// What an object of a render is to a sync.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Role {
    /// An object of the sync: applied, inventoried, pruned, healed.
    Resource,
    /// A hook.
    Hook(Hook),
    /// Not applied at all: Argo CD's `Skip`, or a Helm hook of an event a GitOps sync has no
    /// counterpart for (`test`, `pre-delete`, `post-delete`, `pre-rollback`, `post-rollback`),
    /// as Argo CD leaves them out. PreDelete and PostDelete hooks are not run either.
    Skipped,
}

/// The role of `object` (`origin` names it in errors).
pub fn role(origin: &str, object: &Json) -> Result<Role, Error> {
    let annotations = object.pointer("/metadata/annotations");
    let get = |k: &str| annotations.and_then(|a| a.get(k)).and_then(Json::as_str);
    let csv = |k: &str| -> Vec<String> {
        get(k)
            .map(|v| {
                v.split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default()
    };
    let bad = |annotation: &'static str, value: &str, expected: &str| Error::Hook {
        origin: origin.to_owned(),
        annotation,
        value: value.to_owned(),
        expected: expected.to_owned(),
    };
    let (phases, from_helm) = if get(ARGO_HOOK).is_some() {
        let mut phases = BTreeSet::new();
        let mut skip = false;
        for v in csv(ARGO_HOOK) {
            match v.as_str() {
                "PreSync" => phases.insert(Phase::PreSync),
                "Sync" => phases.insert(Phase::Sync),
                "PostSync" => phases.insert(Phase::PostSync),
                "SyncFail" => phases.insert(Phase::SyncFail),
                "Skip" => {
                    skip = true;
                    false
                }
                "PreDelete" | "PostDelete" => false,
                other => {
                    return Err(bad(
                        ARGO_HOOK,
                        other,
                        "PreSync, Sync, PostSync, SyncFail, Skip, PreDelete or PostDelete",
                    ));
                }
            };
        }
        // Argo CD: Skip alone skips; with other hooks it is one of them.
        if skip && phases.is_empty() {
            return Ok(Role::Skipped);
        }
        (phases, false)
    } else if get(HELM_HOOK).is_some() {
        let mut phases = BTreeSet::new();
        for v in csv(HELM_HOOK) {
            match v.as_str() {
                "pre-install" | "pre-upgrade" => phases.insert(Phase::PreSync),
                "post-install" | "post-upgrade" => phases.insert(Phase::PostSync),
                "test" | "test-success" | "test-failure" | "pre-delete" | "post-delete" | "pre-rollback"
                | "post-rollback" | "crd-install" => false,
                other => {
                    return Err(bad(
                        HELM_HOOK,
                        other,
                        "pre-install, pre-upgrade, post-install, post-upgrade, pre-delete, post-delete, pre-rollback, post-rollback or test",
                    ));
                }
            };
        }
        (phases, true)
    } else {
        return Ok(Role::Resource);
    };
    if phases.is_empty() {
        return Ok(Role::Skipped);
    }
    let mut delete = BTreeSet::new();
    for v in csv(ARGO_DELETE_POLICY) {
        delete.insert(match v.as_str() {
            "HookSucceeded" => DeletePolicy::HookSucceeded,
            "HookFailed" => DeletePolicy::HookFailed,
            "BeforeHookCreation" => DeletePolicy::BeforeHookCreation,
            other => {
                return Err(bad(
                    ARGO_DELETE_POLICY,
                    other,
                    "HookSucceeded, HookFailed or BeforeHookCreation",
                ));
            }
        });
    }
    for v in csv(HELM_DELETE_POLICY) {
        delete.insert(match v.as_str() {
            "hook-succeeded" => DeletePolicy::HookSucceeded,
            "hook-failed" => DeletePolicy::HookFailed,
            "before-hook-creation" => DeletePolicy::BeforeHookCreation,
            other => {
                return Err(bad(
                    HELM_DELETE_POLICY,
                    other,
                    "hook-succeeded, hook-failed or before-hook-creation",
                ));
            }
        });
    }
    if delete.is_empty() {
        delete.insert(DeletePolicy::BeforeHookCreation);
    }
    let weight_annotations: &[&'static str] = if from_helm {
        &[HELM_WEIGHT]
    } else {
        &WAVE_ANNOTATIONS
    };
    let mut wave = 0;
    for &annotation in weight_annotations {
        if let Some(v) = annotations.and_then(|a| a.get(annotation)) {
            let text = v.as_str().map(str::trim).unwrap_or_default();
            wave = text.parse().map_err(|_| Error::Wave {
                origin: origin.to_owned(),
                annotation,
                value: v.as_str().map_or_else(|| v.to_string(), str::to_owned),
            })?;
            break;
        }
    }
    let named = object
        .pointer("/metadata/name")
        .and_then(Json::as_str)
        .is_some_and(|n| !n.is_empty());
    let generated = !named
        && object
            .pointer("/metadata/generateName")
            .and_then(Json::as_str)
            .is_some_and(|n| !n.is_empty());
    Ok(Role::Hook(Hook {
        phases,
        wave,
        delete,
        generated,
    }))
}

/// A hook of a render, with its place.
#[derive(Debug)]
pub struct HookManifest {
    /// Its phases, wave and policy.
    pub hook: Hook,
    /// The object.
    pub manifest: crate::render::Manifest,
}

/// A render's manifests split by [`role`]: the sync's resources, in order, and its hooks;
/// skipped objects are left out. Every hook annotation is checked first, so a bad one applies
/// nothing.
pub fn split(
    manifests: Vec<crate::render::Manifest>,
) -> Result<(Vec<crate::render::Manifest>, Vec<HookManifest>), Error> {
    let mut resources = Vec::with_capacity(manifests.len());
    let mut hooks = Vec::new();
    for m in manifests {
        match role(&m.origin, &m.object)? {
            Role::Resource if m.field("/metadata/name").is_empty() => {
                return Err(Error::GeneratedName { origin: m.origin });
            }
            Role::Resource => resources.push(m),
            Role::Hook(hook) => hooks.push(HookManifest { hook, manifest: m }),
            Role::Skipped => {}
        }
    }
    Ok((resources, hooks))
}

/// The hooks of `phase`, wave by wave (lowest first), each wave in render order.
pub fn waves(hooks: &[HookManifest], phase: Phase) -> Vec<(i64, Vec<&HookManifest>)> {
    let mut by_wave: std::collections::BTreeMap<i64, Vec<&HookManifest>> = Default::default();
    for h in hooks.iter().filter(|h| h.hook.phases.contains(&phase)) {
        by_wave.entry(h.hook.wave).or_default().push(h);
    }
    by_wave.into_iter().collect()
}

/// The Secrets of the revision a hook mounts: when any, the hooks of its phase run only after
/// the secrets stage (and `namespaces`, the revision's namespaces a hook goes to, likewise
/// after the foundations stage).
pub fn needs_revision_objects(
    hook: &HookManifest,
    secrets: &BTreeSet<(String, String)>,
    namespaces: &BTreeSet<String>,
    namespace_of: impl Fn(&crate::render::Manifest) -> String,
) -> bool {
    let ns = namespace_of(&hook.manifest);
    namespaces.contains(&ns)
        || super::secret_refs(&hook.manifest.object)
            .into_iter()
            .any(|name| secrets.contains(&(ns.clone(), name)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn object(annotations: Json) -> Json {
        json!({ "apiVersion": "batch/v1", "kind": "Job", "metadata": { "name": "m", "annotations": annotations } })
    }

    fn hook(phases: &[Phase], wave: i64, delete: &[DeletePolicy]) -> Role {
        Role::Hook(Hook {
            phases: phases.iter().copied().collect(),
            wave,
            delete: delete.iter().copied().collect(),
            generated: false,
        })
    }

    #[test]
    fn argo_cd_hooks() {
        let cases = [
            (json!({}), Role::Resource),
            (
                json!({ ARGO_HOOK: "PreSync" }),
                hook(&[Phase::PreSync], 0, &[DeletePolicy::BeforeHookCreation]),
            ),
            (
                json!({ ARGO_HOOK: "PreSync, PostSync", ARGO_DELETE_POLICY: "HookSucceeded", "argocd.argoproj.io/sync-wave": "-2" }),
                hook(
                    &[Phase::PreSync, Phase::PostSync],
                    -2,
                    &[DeletePolicy::HookSucceeded],
                ),
            ),
            (
                json!({ ARGO_HOOK: "SyncFail", ARGO_DELETE_POLICY: "HookFailed,BeforeHookCreation" }),
                hook(
                    &[Phase::SyncFail],
                    0,
                    &[DeletePolicy::HookFailed, DeletePolicy::BeforeHookCreation],
                ),
            ),
            (json!({ ARGO_HOOK: "Skip" }), Role::Skipped),
            (
                json!({ ARGO_HOOK: "Skip,Sync" }),
                hook(&[Phase::Sync], 0, &[DeletePolicy::BeforeHookCreation]),
            ),
            (json!({ ARGO_HOOK: "PostDelete" }), Role::Skipped),
        ];
        for (annotations, want) in cases {
            assert_eq!(
                role("f.yaml", &object(annotations.clone())).unwrap(),
                want,
                "{annotations}"
            );
        }
    }

    #[test]
    fn helm_hooks_map_as_argo_cd_maps_them() {
        let cases = [
            (
                json!({ HELM_HOOK: "pre-install,pre-upgrade", HELM_WEIGHT: "-5", HELM_DELETE_POLICY: "before-hook-creation,hook-succeeded" }),
                hook(
                    &[Phase::PreSync],
                    -5,
                    &[DeletePolicy::BeforeHookCreation, DeletePolicy::HookSucceeded],
                ),
            ),
            (
                json!({ HELM_HOOK: "post-install", "argocd.argoproj.io/sync-wave": "3" }),
                hook(&[Phase::PostSync], 0, &[DeletePolicy::BeforeHookCreation]),
            ),
            (json!({ HELM_HOOK: "test" }), Role::Skipped),
            (json!({ HELM_HOOK: "pre-delete" }), Role::Skipped),
            // An Argo CD hook annotation wins over Helm's.
            (
                json!({ ARGO_HOOK: "PostSync", HELM_HOOK: "pre-install", HELM_WEIGHT: "9" }),
                hook(&[Phase::PostSync], 0, &[DeletePolicy::BeforeHookCreation]),
            ),
        ];
        for (annotations, want) in cases {
            assert_eq!(
                role("f.yaml", &object(annotations.clone())).unwrap(),
                want,
                "{annotations}"
            );
        }
    }

    #[test]
    fn a_generated_name_is_created() {
        let o = json!({ "apiVersion": "batch/v1", "kind": "Job",
            "metadata": { "generateName": "migrate-", "annotations": { ARGO_HOOK: "PreSync" } } });
        let Role::Hook(h) = role("f.yaml", &o).unwrap() else {
            panic!("a hook")
        };
        assert!(h.generated);
    }

    #[test]
    fn bad_values_are_named() {
        let e = |a: Json| {
            role("jobs.yaml (document 2)", &object(a))
                .unwrap_err()
                .to_string()
        };
        assert_eq!(
            e(json!({ ARGO_HOOK: "Presync" })),
            "jobs.yaml (document 2): metadata.annotations[argocd.argoproj.io/hook]: \"Presync\" is not one of PreSync, Sync, PostSync, SyncFail, Skip, PreDelete or PostDelete"
        );
        assert_eq!(
            e(json!({ HELM_HOOK: "pre-install", HELM_WEIGHT: "first" })),
            "jobs.yaml (document 2): metadata.annotations[helm.sh/hook-weight]: \"first\" is not an integer"
        );
        assert!(
            e(json!({ ARGO_HOOK: "PreSync", ARGO_DELETE_POLICY: "Always" }))
                .contains("HookSucceeded, HookFailed or BeforeHookCreation")
        );
    }

    #[test]
    fn hooks_are_split_from_resources_and_ordered_by_wave() {
        let m = |name: &str, a: Json| {
            crate::render::Manifest::plain(
                name,
                json!({
            "apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": name, "annotations": a}}),
            )
        };
        let (resources, hooks) = split(vec![
            m("app", json!({})),
            m(
                "late",
                json!({ARGO_HOOK: "PreSync", "argocd.argoproj.io/sync-wave": "2"}),
            ),
            m("early", json!({HELM_HOOK: "pre-install", HELM_WEIGHT: "-1"})),
            m("post", json!({ARGO_HOOK: "PostSync"})),
            m("skipped", json!({ARGO_HOOK: "Skip"})),
        ])
        .unwrap();
        let generated = crate::render::Manifest::plain(
            "job.yaml",
            json!({"apiVersion": "batch/v1", "kind": "Job", "metadata": {"generateName": "x-"}}),
        );
        let e = split(vec![generated]).unwrap_err().to_string();
        assert!(
            e.starts_with("job.yaml: metadata.name is missing (metadata.generateName is for hooks"),
            "{e}"
        );
        assert_eq!(resources.len(), 1);
        let pre: Vec<(i64, Vec<&str>)> = waves(&hooks, Phase::PreSync)
            .into_iter()
            .map(|(w, hs)| (w, hs.iter().map(|h| h.manifest.origin.as_str()).collect()))
            .collect();
        assert_eq!(pre, vec![(-1, vec!["early"]), (2, vec!["late"])]);
        assert_eq!(waves(&hooks, Phase::PostSync).len(), 1);
    }
}
