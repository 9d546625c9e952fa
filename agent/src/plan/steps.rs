//! Steps: every object's stage (CRDs and namespaces, then secrets, then workloads) and wave
//! within it (`lockstep.dev/sync-wave`, or Argo CD's `argocd.argoproj.io/sync-wave`; default 0,
//! negative first), and, within a step, which objects changed since the last sync.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value as Json;

use super::{Error, Inventory, ObjectId, group_of};
use crate::api::WAVE_ANNOTATIONS;
use crate::render::Manifest;

/// Apply stages, in order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Stage {
    /// CRDs, Namespaces, cluster-scoped classes, and Roles and ClusterRoles (the API server
    /// reads a role to check a binding of it for escalation, so a binding applied before its
    /// role fails).
    Foundations,
    /// Secrets, SealedSecrets, ExternalSecrets and their stores: before anything mounts them.
    Secrets,
    /// Everything else.
    Workloads,
}

/// The stage of an object, by API group and kind.
pub fn stage(api_version: &str, kind: &str) -> Stage {
    match (group_of(api_version), kind) {
        ("apiextensions.k8s.io", "CustomResourceDefinition") | ("", "Namespace") => Stage::Foundations,
        (_, "StorageClass" | "PriorityClass" | "IngressClass" | "RuntimeClass" | "GatewayClass") => {
            Stage::Foundations
        }
        ("rbac.authorization.k8s.io", "Role" | "ClusterRole") => Stage::Foundations,
        ("", "Secret") | ("bitnami.com", "SealedSecret") => Stage::Secrets,
        (
            "external-secrets.io",
            "ExternalSecret" | "SecretStore" | "ClusterSecretStore" | "ClusterExternalSecret",
        ) => Stage::Secrets,
        _ => Stage::Workloads,
    }
}

/// The wave of a manifest (default 0), or an error naming the file and annotation.
pub fn wave(m: &Manifest) -> Result<i64, Error> {
    for annotation in WAVE_ANNOTATIONS {
        if let Some(v) = m
            .object
            .pointer("/metadata/annotations")
            .and_then(|a| a.get(annotation))
        {
            let text = v.as_str().map(str::trim).unwrap_or_default();
            return text.parse().map_err(|_| Error::Wave {
                origin: m.origin.clone(),
                annotation,
                value: v.as_str().map_or_else(|| v.to_string(), str::to_owned),
            });
        }
    }
    Ok(0)
}

/// The manifests one step applies: one wave of one stage.
#[derive(Debug)]
pub struct Step<'a> {
    /// The stage.
    pub stage: Stage,
    /// The wave within it.
    pub wave: i64,
    /// The manifests, in the order rendered.
    pub manifests: Vec<&'a Manifest>,
}

/// The manifests grouped into steps, in apply order: stage by stage, wave by wave. Every wave
/// annotation is checked first, so a bad one applies nothing.
pub fn steps(manifests: &[Manifest]) -> Result<Vec<Step<'_>>, Error> {
    let mut by_step: BTreeMap<(Stage, i64), Vec<&Manifest>> = BTreeMap::new();
    for m in manifests {
        let s = |f: &str| m.object.get(f).and_then(Json::as_str).unwrap_or_default();
        by_step
            .entry((stage(s("apiVersion"), s("kind")), wave(m)?))
            .or_default()
            .push(m);
    }
    Ok(by_step
        .into_iter()
        .map(|((stage, wave), manifests)| Step {
            stage,
            wave,
            manifests,
        })
        .collect())
}

/// What one step does with its objects: the ones to write, how many are unchanged, and the
/// inventory entries of all of them.
#[derive(Debug, PartialEq)]
pub struct StepPlan<T> {
    /// Objects to write (new, changed, or forced), with what the caller attached to them.
    pub write: Vec<(ObjectId, T)>,
    /// Objects whose desired state is the one last applied.
    pub unchanged: usize,
    /// Every object of the step with its hash, for the next inventory.
    pub inventory: Vec<(ObjectId, String)>,
}

/// Decides which of a step's objects to write (pure): those not in `last`, those whose hash
/// differs from the one recorded there, and those in `force` (drifted in the cluster) by key.
pub fn plan_step<T>(
    objects: Vec<(ObjectId, String, T)>,
    last: &Inventory,
    force: &BTreeSet<String>,
) -> StepPlan<T> {
    let mut plan = StepPlan {
        write: Vec::new(),
        unchanged: 0,
        inventory: Vec::with_capacity(objects.len()),
    };
    for (id, hash, payload) in objects {
        let key = id.key();
        let unchanged = !force.contains(&key) && last.entries.get(&key).is_some_and(|(_, old)| *old == hash);
        if unchanged {
            plan.unchanged += 1;
        } else {
            plan.write.push((id.clone(), payload));
        }
        plan.inventory.push((id, hash));
    }
    plan
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use serde_json::json;

    fn manifest(kind: &str, name: &str, annotations: Json) -> Manifest {
        let av = if kind == "Deployment" { "apps/v1" } else { "v1" };
        Manifest::plain(
            format!("{name}.yaml"),
            json!({ "apiVersion": av, "kind": kind,
                    "metadata": { "name": name, "annotations": annotations } }),
        )
    }

    #[test]
    fn stages_put_secrets_before_workloads() {
        assert_eq!(
            stage("apiextensions.k8s.io/v1", "CustomResourceDefinition"),
            Stage::Foundations
        );
        assert_eq!(stage("v1", "Namespace"), Stage::Foundations);
        assert_eq!(stage("rbac.authorization.k8s.io/v1", "Role"), Stage::Foundations);
        assert_eq!(
            stage("rbac.authorization.k8s.io/v1", "ClusterRole"),
            Stage::Foundations
        );
        assert_eq!(
            stage("rbac.authorization.k8s.io/v1", "RoleBinding"),
            Stage::Workloads
        );
        assert_eq!(stage("v1", "Secret"), Stage::Secrets);
        assert_eq!(stage("bitnami.com/v1alpha1", "SealedSecret"), Stage::Secrets);
        assert_eq!(stage("external-secrets.io/v1", "ExternalSecret"), Stage::Secrets);
        assert_eq!(stage("apps/v1", "Deployment"), Stage::Workloads);
        assert_eq!(
            stage("example.com/v1", "Secret"),
            Stage::Workloads,
            "a CRD kind named Secret is not a Secret"
        );
        assert!(Stage::Foundations < Stage::Secrets && Stage::Secrets < Stage::Workloads);
    }

    #[test]
    fn steps_go_stage_by_stage_then_wave_by_wave_in_rendered_order() {
        let ms = vec![
            manifest("Deployment", "web", json!({})),
            manifest("ConfigMap", "late", json!({ "lockstep.dev/sync-wave": "2" })),
            manifest(
                "ConfigMap",
                "early",
                json!({ "argocd.argoproj.io/sync-wave": " -1 " }),
            ),
            manifest("Secret", "db", json!({})),
            manifest("Namespace", "ns", json!({ "lockstep.dev/sync-wave": "5" })),
            manifest("ConfigMap", "plain", json!({})),
        ];
        let got: Vec<(Stage, i64, Vec<&str>)> = steps(&ms)
            .unwrap()
            .iter()
            .map(|s| {
                let names = s.manifests.iter().map(|m| m.origin.as_str()).collect();
                (s.stage, s.wave, names)
            })
            .collect();
        assert_eq!(
            got,
            [
                (Stage::Foundations, 5, vec!["ns.yaml"]),
                (Stage::Secrets, 0, vec!["db.yaml"]),
                (Stage::Workloads, -1, vec!["early.yaml"]),
                (Stage::Workloads, 0, vec!["web.yaml", "plain.yaml"]),
                (Stage::Workloads, 2, vec!["late.yaml"]),
            ]
        );
        // Lockstep's annotation wins over Argo CD's.
        let both = manifest(
            "ConfigMap",
            "both",
            json!({ "lockstep.dev/sync-wave": "3", "argocd.argoproj.io/sync-wave": "-3" }),
        );
        assert_eq!(wave(&both).unwrap(), 3);
    }

    #[test]
    fn a_wave_that_is_not_an_integer_names_the_file_and_annotation() {
        let ms = vec![
            manifest("ConfigMap", "fine", json!({})),
            manifest("ConfigMap", "broken", json!({ "lockstep.dev/sync-wave": "soon" })),
        ];
        let e = steps(&ms).unwrap_err().to_string();
        assert_eq!(
            e,
            "broken.yaml: metadata.annotations[lockstep.dev/sync-wave]: \"soon\" is not an integer"
        );
    }

    #[test]
    fn only_new_changed_or_forced_objects_are_written() {
        let id = |n: &str| ObjectId {
            api_version: "v1".into(),
            kind: "ConfigMap".into(),
            namespace: "x".into(),
            name: n.into(),
        };
        let last = Inventory {
            entries: [("same", "h1"), ("changed", "h2"), ("drifted", "h3")]
                .into_iter()
                .map(|(n, h)| (id(n).key(), (id(n), h.to_owned())))
                .collect(),
        };
        let objects = vec![
            (id("same"), "h1".to_owned(), 1),
            (id("changed"), "h2-new".to_owned(), 2),
            (id("drifted"), "h3".to_owned(), 3),
            (id("new"), "h4".to_owned(), 4),
        ];
        let force = BTreeSet::from([id("drifted").key()]);
        let plan = plan_step(objects, &last, &force);
        let written: Vec<i32> = plan.write.iter().map(|(_, p)| *p).collect();
        assert_eq!(written, [2, 3, 4]);
        assert_eq!(plan.unchanged, 1);
        assert_eq!(plan.inventory.len(), 4, "unchanged objects stay in the inventory");
        assert_eq!(plan.inventory[1], (id("changed"), "h2-new".to_owned()));
    }
}
