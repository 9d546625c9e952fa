//! Health of applied objects: kstatus's rules (cli-utils `pkg/kstatus/status`, as Flux uses
//! them, with Flux's Job rule: a running Job is in progress), pure functions of the live object.
//! Lockstep's own addition: an ExternalSecret or SealedSecret whose `Ready`/`Synced` condition
//! is `False` for the generation it observed has failed, so a wait fails fast instead of timing
//! out.

use serde_json::Value as Json;

use crate::api::Reason;
use crate::api::conditions::{FALSE, TRUE, UNKNOWN};
use crate::plan::ObjectId;

/// The health of one object, best to worst for aggregation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Status {
    /// Reconciled and available.
    Current,
    /// Being deleted.
    Terminating,
    /// Not yet (rolling out, no observed generation, not ready).
    InProgress,
    /// Will not get there without a change (deadline exceeded, `Stalled`, a failed Job).
    Failed,
    /// Does not exist.
    NotFound,
}

impl Status {
    /// kstatus's name.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Current => "Current",
            Status::Terminating => "Terminating",
            Status::InProgress => "InProgress",
            Status::Failed => "Failed",
            Status::NotFound => "NotFound",
        }
    }
}

/// A status and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Health {
    /// The status.
    pub status: Status,
    /// Why (kstatus's message, or the object's own condition message).
    pub message: String,
}

fn h(status: Status, message: impl Into<String>) -> Health {
    Health {
        status,
        message: message.into(),
    }
}

fn int(o: &Json, pointer: &str) -> Option<i64> {
    o.pointer(pointer).and_then(Json::as_i64)
}

fn condition<'a>(o: &'a Json, type_: &str) -> Option<&'a Json> {
    o.pointer("/status/conditions")
        .and_then(Json::as_array)?
        .iter()
        .find(|c| c.get("type").and_then(Json::as_str) == Some(type_))
}

fn cond_is(o: &Json, type_: &str, status: &str) -> bool {
    condition(o, type_)
        .and_then(|c| c.get("status"))
        .and_then(Json::as_str)
        == Some(status)
}

fn cond_field<'a>(o: &'a Json, type_: &str, field: &str) -> &'a str {
    condition(o, type_)
        .and_then(|c| c.get(field))
        .and_then(Json::as_str)
        .unwrap_or_default()
}

/// The health of a live object (kstatus `Compute`).
pub fn of(o: &Json) -> Health {
    if o.pointer("/metadata/deletionTimestamp")
        .is_some_and(|t| !t.is_null())
    {
        return h(Status::Terminating, "being deleted");
    }
    let generation = int(o, "/metadata/generation");
    let observed = int(o, "/status/observedGeneration");
    if let (Some(g), Some(og)) = (generation, observed)
        && g != og
    {
        return h(
            Status::InProgress,
            format!("generation {g} not yet observed (observed {og})"),
        );
    }
    if cond_is(o, "Reconciling", "True") {
        return h(Status::InProgress, cond_field(o, "Reconciling", "message"));
    }
    if cond_is(o, "Stalled", "True") {
        return h(Status::Failed, cond_field(o, "Stalled", "message"));
    }
    let api_version = o.get("apiVersion").and_then(Json::as_str).unwrap_or_default();
    let group = api_version.rsplit_once('/').map_or("", |(g, _)| g);
    let kind = o.get("kind").and_then(Json::as_str).unwrap_or_default();
    match (group, kind) {
        ("apps" | "extensions", "Deployment") => deployment(o),
        ("apps", "StatefulSet") => stateful_set(o),
        ("apps" | "extensions", "DaemonSet") => daemon_set(o),
        ("apps" | "extensions", "ReplicaSet") => replica_set(o),
        ("batch", "Job") => job(o),
        ("", "Pod") => pod(o),
        ("", "PersistentVolumeClaim") => {
            if o.pointer("/status/phase").and_then(Json::as_str) == Some("Bound") {
                h(Status::Current, "bound")
            } else {
                h(Status::InProgress, "not bound")
            }
        }
        ("", "Service") => {
            let lb = o.pointer("/spec/type").and_then(Json::as_str) == Some("LoadBalancer");
            let ip = o
                .pointer("/spec/clusterIP")
                .and_then(Json::as_str)
                .unwrap_or_default();
            if lb && ip.is_empty() {
                h(Status::InProgress, "cluster IP not yet assigned")
            } else {
                h(Status::Current, "service is ready")
            }
        }
        ("apiextensions.k8s.io", "CustomResourceDefinition") => crd(o),
        ("", "Secret" | "ConfigMap") | ("batch", "CronJob") => h(Status::Current, "resource is current"),
        ("external-secrets.io", "ExternalSecret") | ("bitnami.com", "SealedSecret") => {
            let type_ = if kind == "ExternalSecret" {
                "Ready"
            } else {
                "Synced"
            };
            match condition(o, type_)
                .and_then(|c| c.get("status"))
                .and_then(Json::as_str)
            {
                Some("True") => h(Status::Current, "synced"),
                Some("False") if observed.is_none() || observed == generation => {
                    h(Status::Failed, cond_field(o, type_, "message"))
                }
                _ => h(Status::InProgress, "not yet synced"),
            }
        }
        _ => match condition(o, "Ready")
            .and_then(|c| c.get("status"))
            .and_then(Json::as_str)
        {
            Some("True") => h(Status::Current, cond_field(o, "Ready", "message")),
            Some(_) => h(Status::InProgress, cond_field(o, "Ready", "message")),
            None => h(Status::Current, "resource is current"),
        },
    }
}

fn replicas(o: &Json) -> i64 {
    int(o, "/spec/replicas").unwrap_or(1)
}

fn st(o: &Json, field: &str) -> i64 {
    int(o, &format!("/status/{field}")).unwrap_or(0)
}

fn deployment(o: &Json) -> Health {
    if cond_field(o, "Progressing", "reason") == "ProgressDeadlineExceeded" {
        return h(Status::Failed, "progress deadline exceeded");
    }
    let mut progressing = o.pointer("/spec/progressDeadlineSeconds").is_none();
    if cond_is(o, "Progressing", "True") && cond_field(o, "Progressing", "reason") == "NewReplicaSetAvailable"
    {
        progressing = true;
    }
    let available = cond_is(o, "Available", "True");
    let spec = replicas(o);
    let checks = [
        (spec > st(o, "replicas"), "replicas"),
        (spec > st(o, "updatedReplicas"), "updated replicas"),
        (st(o, "replicas") > spec, "pending termination"),
        (
            st(o, "updatedReplicas") > st(o, "availableReplicas"),
            "available replicas",
        ),
        (spec > st(o, "readyReplicas"), "ready replicas"),
    ];
    for (failing, what) in checks {
        if failing {
            return h(
                Status::InProgress,
                format!(
                    "{what}: {}/{spec} ready, {} updated, {} available",
                    st(o, "readyReplicas"),
                    st(o, "updatedReplicas"),
                    st(o, "availableReplicas")
                ),
            );
        }
    }
    if !progressing {
        return h(Status::InProgress, "replica set not available");
    }
    if !available {
        return h(Status::InProgress, "deployment not available");
    }
    h(Status::Current, format!("{spec} replicas ready"))
}

fn stateful_set(o: &Json) -> Health {
    if o.pointer("/spec/updateStrategy/type").and_then(Json::as_str) == Some("OnDelete") {
        return h(Status::Current, "update strategy OnDelete");
    }
    let spec = replicas(o);
    if spec > st(o, "replicas") || spec > st(o, "readyReplicas") || st(o, "replicas") > spec {
        return h(
            Status::InProgress,
            format!("{}/{spec} ready", st(o, "readyReplicas")),
        );
    }
    if let Some(p) = int(o, "/spec/updateStrategy/rollingUpdate/partition") {
        return if st(o, "updatedReplicas") < spec - p {
            h(Status::InProgress, "partitioned roll out in progress")
        } else {
            h(Status::Current, "partitioned roll out complete")
        };
    }
    if spec > st(o, "currentReplicas") {
        return h(Status::InProgress, "current replicas");
    }
    let rev = |f: &str| o.pointer(&format!("/status/{f}")).and_then(Json::as_str);
    if rev("currentRevision") != rev("updateRevision") {
        return h(Status::InProgress, "revision mismatch");
    }
    h(Status::Current, format!("{spec} replicas ready"))
}

fn daemon_set(o: &Json) -> Health {
    if int(o, "/metadata/generation").is_none() || int(o, "/status/observedGeneration").is_none() {
        return h(Status::InProgress, "no observed generation");
    }
    let Some(desired) = int(o, "/status/desiredNumberScheduled") else {
        return h(Status::InProgress, "no desired number");
    };
    for f in [
        "currentNumberScheduled",
        "updatedNumberScheduled",
        "numberAvailable",
        "numberReady",
    ] {
        if desired > st(o, f) {
            return h(Status::InProgress, format!("{f}: {}/{desired}", st(o, f)));
        }
    }
    h(Status::Current, format!("{desired} pods ready"))
}

fn replica_set(o: &Json) -> Health {
    if cond_is(o, "ReplicaFailure", "True") {
        return h(Status::InProgress, "replica failure");
    }
    let spec = replicas(o);
    if spec > st(o, "fullyLabeledReplicas")
        || spec > st(o, "availableReplicas")
        || spec > st(o, "readyReplicas")
        || st(o, "replicas") > spec
    {
        return h(
            Status::InProgress,
            format!("{}/{spec} ready", st(o, "readyReplicas")),
        );
    }
    h(Status::Current, format!("{spec} replicas ready"))
}

fn job(o: &Json) -> Health {
    if o.pointer("/spec/suspend").and_then(Json::as_bool) == Some(true) {
        return h(Status::Current, "suspended");
    }
    if cond_is(o, "Complete", "True") {
        return h(Status::Current, "job completed");
    }
    if cond_is(o, "Failed", "True") {
        return h(Status::Failed, cond_field(o, "Failed", "message"));
    }
    if o.pointer("/status/startTime").is_none() {
        return h(Status::InProgress, "job not started");
    }
    h(Status::InProgress, "job running")
}

fn pod(o: &Json) -> Health {
    match o.pointer("/status/phase").and_then(Json::as_str) {
        Some("Succeeded") => h(Status::Current, "pod succeeded"),
        Some("Failed") => h(Status::Current, "pod completed, but not successfully"),
        Some("Running") => {
            if cond_is(o, "Ready", "True") {
                return h(Status::Current, "pod is ready");
            }
            let crash = o
                .pointer("/status/containerStatuses")
                .and_then(Json::as_array)
                .is_some_and(|cs| {
                    cs.iter().any(|c| {
                        c.pointer("/state/waiting/reason").and_then(Json::as_str) == Some("CrashLoopBackOff")
                    })
                });
            if crash {
                h(Status::Failed, "container in CrashLoopBackOff")
            } else {
                h(Status::InProgress, "pod running, not ready")
            }
        }
        _ => {
            if cond_is(o, "PodScheduled", "False")
                && cond_field(o, "PodScheduled", "reason") == "Unschedulable"
            {
                h(Status::InProgress, "pod unschedulable")
            } else {
                h(Status::InProgress, "pod pending")
            }
        }
    }
}

fn crd(o: &Json) -> Health {
    if cond_is(o, "NamesAccepted", "False") {
        return h(Status::Failed, cond_field(o, "NamesAccepted", "message"));
    }
    if cond_is(o, "Established", "True") {
        return h(Status::Current, "established");
    }
    if cond_is(o, "Established", "False") && cond_field(o, "Established", "reason") != "Installing" {
        return h(Status::Failed, cond_field(o, "Established", "message"));
    }
    h(Status::InProgress, "not yet established")
}

/// The aggregate of several objects' health: the worst status (`Current` for none).
pub fn worst<'a>(all: impl IntoIterator<Item = &'a Health>) -> Status {
    all.into_iter().map(|h| h.status).max().unwrap_or(Status::Current)
}

/// How many objects a message names before it says "and N more".
const NAMED: usize = 10;

/// The objects, their status and why, as one line (`Deployment ns/web InProgress (…); …`),
/// naming at most ten.
pub fn describe<'a>(objects: impl IntoIterator<Item = (&'a ObjectId, &'a Health)>) -> String {
    let all: Vec<_> = objects.into_iter().collect();
    let mut parts: Vec<String> = all
        .iter()
        .take(NAMED)
        .map(|(id, h)| format!("{id} {} ({})", h.status.as_str(), h.message))
        .collect();
    if all.len() > NAMED {
        parts.push(format!("and {} more", all.len() - NAMED));
    }
    parts.join("; ")
}

/// A Sync's `Healthy` condition from its objects' health (pure): `True`/`Succeeded` when all
/// are `Current`; `False`/`HealthCheckFailed` naming the failed ones when any has `Failed`;
/// otherwise `Unknown`/`Progressing` naming those not yet `Current`.
pub fn condition_of(all: &[(ObjectId, Health)]) -> (&'static str, Reason, String) {
    let failed: Vec<_> = all.iter().filter(|(_, h)| h.status == Status::Failed).collect();
    if !failed.is_empty() {
        return (
            FALSE,
            Reason::HealthCheckFailed,
            describe(failed.iter().map(|(id, h)| (id, h))),
        );
    }
    let pending: Vec<_> = all.iter().filter(|(_, h)| h.status != Status::Current).collect();
    if pending.is_empty() {
        return (TRUE, Reason::Succeeded, format!("{} objects current", all.len()));
    }
    (
        UNKNOWN,
        Reason::Progressing,
        describe(pending.iter().map(|(id, h)| (id, h))),
    )
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use serde_json::json;

    fn deploy(status: Json) -> Json {
        json!({ "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": { "name": "d", "generation": 2 }, "spec": { "replicas": 3 }, "status": status })
    }

    #[test]
    fn deployment_rules() {
        let ok = deploy(
            json!({ "observedGeneration": 2, "replicas": 3, "updatedReplicas": 3,
            "readyReplicas": 3, "availableReplicas": 3,
            "conditions": [{ "type": "Available", "status": "True" },
                { "type": "Progressing", "status": "True", "reason": "NewReplicaSetAvailable" }] }),
        );
        assert_eq!(of(&ok).status, Status::Current);
        let old = deploy(json!({ "observedGeneration": 1 }));
        assert_eq!(of(&old).status, Status::InProgress);
        assert!(of(&old).message.contains("generation 2"));
        let rolling = deploy(
            json!({ "observedGeneration": 2, "replicas": 3, "updatedReplicas": 1,
            "readyReplicas": 3, "availableReplicas": 3 }),
        );
        assert_eq!(of(&rolling).status, Status::InProgress);
        let dead = deploy(json!({ "observedGeneration": 2,
            "conditions": [{ "type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded" }] }));
        assert_eq!(of(&dead).status, Status::Failed);
    }

    #[test]
    fn generic_rules() {
        let cm = json!({ "apiVersion": "v1", "kind": "ConfigMap", "metadata": { "name": "c" } });
        assert_eq!(of(&cm).status, Status::Current);
        let deleting = json!({ "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": { "name": "c", "deletionTimestamp": "2026-01-01T00:00:00Z" } });
        assert_eq!(of(&deleting).status, Status::Terminating);
        let stalled = json!({ "apiVersion": "x.io/v1", "kind": "Thing", "metadata": { "generation": 1 },
            "status": { "observedGeneration": 1, "conditions": [{ "type": "Stalled", "status": "True", "message": "bad" }] } });
        assert_eq!(of(&stalled), h(Status::Failed, "bad"));
        let not_ready = json!({ "apiVersion": "x.io/v1", "kind": "Thing",
            "status": { "conditions": [{ "type": "Ready", "status": "False" }] } });
        assert_eq!(of(&not_ready).status, Status::InProgress);
        let bare = json!({ "apiVersion": "x.io/v1", "kind": "Thing" });
        assert_eq!(of(&bare).status, Status::Current);
    }

    #[test]
    fn jobs_pvcs_services_and_externalsecrets() {
        let running = json!({ "apiVersion": "batch/v1", "kind": "Job", "status": { "startTime": "t" } });
        assert_eq!(of(&running).status, Status::InProgress);
        let failed = json!({ "apiVersion": "batch/v1", "kind": "Job",
            "status": { "conditions": [{ "type": "Failed", "status": "True", "message": "backoff" }] } });
        assert_eq!(of(&failed).status, Status::Failed);
        let pvc =
            json!({ "apiVersion": "v1", "kind": "PersistentVolumeClaim", "status": { "phase": "Pending" } });
        assert_eq!(of(&pvc).status, Status::InProgress);
        let lb = json!({ "apiVersion": "v1", "kind": "Service", "spec": { "type": "LoadBalancer" } });
        assert_eq!(of(&lb).status, Status::InProgress);
        let es = json!({ "apiVersion": "external-secrets.io/v1", "kind": "ExternalSecret", "metadata": { "generation": 1 },
            "status": { "conditions": [{ "type": "Ready", "status": "False", "message": "spec.data[0]: denied" }] } });
        assert_eq!(of(&es), h(Status::Failed, "spec.data[0]: denied"));
        let sts = json!({ "apiVersion": "apps/v1", "kind": "StatefulSet", "spec": { "replicas": 2 },
            "status": { "replicas": 2, "readyReplicas": 2, "currentReplicas": 2, "currentRevision": "a", "updateRevision": "b" } });
        assert_eq!(of(&sts).status, Status::InProgress);
        assert_eq!(worst([&of(&pvc), &of(&es)]), Status::Failed);
        assert_eq!(worst([]), Status::Current);
    }

    #[test]
    fn a_syncs_healthy_condition_names_what_is_not_current() {
        let id = |kind: &str, name: &str| ObjectId {
            api_version: "apps/v1".into(),
            kind: kind.into(),
            namespace: "ns".into(),
            name: name.into(),
        };
        let ok = h(Status::Current, "fine");
        let all = vec![(id("Deployment", "a"), ok.clone())];
        assert_eq!(
            condition_of(&all),
            ("True", Reason::Succeeded, "1 objects current".into())
        );
        let mut all = all;
        all.push((id("Deployment", "b"), h(Status::InProgress, "LessReady")));
        let (status, reason, msg) = condition_of(&all);
        assert_eq!((status, reason), ("Unknown", Reason::Progressing));
        assert_eq!(msg, "Deployment ns/b InProgress (LessReady)");
        all.push((id("Job", "c"), h(Status::Failed, "backoff limit")));
        let (status, reason, msg) = condition_of(&all);
        assert_eq!((status, reason), ("False", Reason::HealthCheckFailed));
        assert_eq!(msg, "Job ns/c Failed (backoff limit)");
        let many: Vec<_> = (0..12)
            .map(|i| (id("Deployment", &format!("d{i}")), h(Status::InProgress, "x")))
            .collect();
        assert!(condition_of(&many).2.ends_with("; and 2 more"));
        // kstatus has no Ingress rule: an Ingress is current (no load balancer wait, unlike Argo).
        let ing =
            json!({ "apiVersion": "networking.k8s.io/v1", "kind": "Ingress", "metadata": { "name": "i" } });
        assert_eq!(of(&ing).status, Status::Current);
    }
}
