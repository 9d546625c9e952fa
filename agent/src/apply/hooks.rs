//! Running hooks ([`crate::plan::hooks`]): a phase's hooks wave by wave, each created (a
//! `generateName` object by a create, a named one by a create after its predecessor is gone, or
//! an apply when it keeps no BeforeHookCreation policy), followed until it succeeds or fails,
//! then deleted by its policy. Hooks carry the owner label and a `lockstep.dev/hook` label (a
//! digest of the Sync and the hook), by which the previous run of a hook is found; they are
//! never in the inventory, so never pruned.

use std::time::Duration;

use kube::api::{DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PostParams};
use lockstep_formats::secret::wipe_json;
use serde_json::Value as Json;

use super::{Applier, Error, Report, dynamic_api, kube_err};
use crate::api::FIELD_MANAGER;
use crate::plan::hooks::{DeletePolicy, HookManifest, Phase};

/// The label that finds a hook's earlier runs.
pub const HOOK_LABEL: &str = "lockstep.dev/hook";

/// How often a running hook is read.
const HOOK_POLL: Duration = Duration::from_millis(500);

/// Where a running hook stands.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum State {
    /// Still running.
    Running(String),
    /// Done.
    Succeeded,
    /// Failed, and why.
    Failed(String),
}

/// The state of a hook from its live object: a Pod by its phase (a running Pod has not
/// succeeded), a Job or anything else by its kstatus health (a Job is `Current` once complete).
pub fn state(live: &Json) -> State {
    let kind = live.get("kind").and_then(Json::as_str).unwrap_or_default();
    let api_version = live.get("apiVersion").and_then(Json::as_str).unwrap_or_default();
    if kind == "Pod" && api_version == "v1" {
        let phase = live
            .pointer("/status/phase")
            .and_then(Json::as_str)
            .unwrap_or("Pending");
        return match phase {
            "Succeeded" => State::Succeeded,
            "Failed" => State::Failed(
                live.pointer("/status/message")
                    .and_then(Json::as_str)
                    .unwrap_or("the pod failed")
                    .to_owned(),
            ),
            other => State::Running(format!("pod {other}")),
        };
    }
    let h = super::health::of(live);
    match h.status {
        super::health::Status::Current => State::Succeeded,
        super::health::Status::Failed => State::Failed(h.message),
        _ => State::Running(h.message),
    }
}

impl Applier {
    /// Runs the hooks of `phase`, wave by wave, each wave's hooks side by side; the first that
    /// fails (or is still running after `timeout`) fails the phase, naming it.
    pub async fn run_hooks(
        &self,
        hooks: &[HookManifest],
        phase: Phase,
        timeout: Duration,
        report: &mut Report,
    ) -> Result<(), Error> {
        for (_, wave) in crate::plan::hooks::waves(hooks, phase) {
            let runs = wave.into_iter().map(|h| self.run_hook(h, phase, timeout));
            for r in futures::future::join_all(runs).await {
                report.hooks.push(r?);
            }
        }
        Ok(())
    }

    /// One hook: its earlier run deleted (BeforeHookCreation), created, followed, deleted by
    /// its policy; returns what ran.
    async fn run_hook(&self, h: &HookManifest, phase: Phase, timeout: Duration) -> Result<String, Error> {
        let mut p = self.complete(&h.manifest)?;
        let namespace = p
            .object
            .pointer("/metadata/namespace")
            .and_then(Json::as_str)
            .unwrap_or_default()
            .to_owned();
        let named = p
            .object
            .pointer("/metadata/name")
            .and_then(Json::as_str)
            .unwrap_or_default()
            .to_owned();
        let template = if named.is_empty() {
            p.object
                .pointer("/metadata/generateName")
                .and_then(Json::as_str)
                .unwrap_or_default()
                .to_owned()
        } else {
            named.clone()
        };
        let label = crate::plan::digest(
            format!(
                "{}\0{}\0{}\0{namespace}\0{template}",
                self.owner, p.ar.api_version, p.ar.kind
            )
            .as_bytes(),
        );
        if let Some(labels) = p
            .object
            .pointer_mut("/metadata/labels")
            .and_then(Json::as_object_mut)
        {
            labels.insert(HOOK_LABEL.into(), label.clone().into());
        }
        let api = dynamic_api(&self.client, &p.ar, &p.scope, &namespace);
        let what = |name: &str| {
            format!(
                "{phase:?} hook {} {}",
                p.ar.kind,
                if name.is_empty() { &template } else { name }
            )
        };
        let fail = |name: &str, message: String| Error::Hook {
            hook: what(name),
            origin: h.manifest.origin.clone(),
            message,
        };
        let selector = ListParams::default().labels(&format!("{HOOK_LABEL}={label}"));
        let before = h.hook.delete.contains(&DeletePolicy::BeforeHookCreation);
        if before {
            api.delete_collection(&DeleteParams::background(), &selector)
                .await
                .map_err(kube_err(format!("deleting the last run of {}", what(&named))))?;
            if !named.is_empty() {
                self.gone(&api, &named, timeout)
                    .await
                    .map_err(|m| fail(&named, m))?;
            }
        }
        let object: DynamicObject = serde_json::from_value((*p.object).clone())
            .map_err(|e| fail(&named, format!("not an object: {e}")))?;
        let mut live = if named.is_empty() || before {
            api.create(&PostParams::default(), &object).await
        } else {
            api.patch(
                &named,
                &PatchParams::apply(FIELD_MANAGER).force(),
                &Patch::Apply(&object),
            )
            .await
        }
        .map_err(kube_err(format!(
            "creating {} ({})",
            what(&named),
            h.manifest.origin
        )))?;
        drop(object);
        wipe_json(&mut live.data);
        let name = live.metadata.name.clone().unwrap_or_default();
        tracing::info!(hook = %what(&name), "hook created");
        let deadline = tokio::time::Instant::now() + timeout;
        let result = loop {
            let mut now = api
                .get_opt(&name)
                .await
                .map_err(kube_err(format!("reading {}", what(&name))))?
                .ok_or_else(|| fail(&name, "deleted while it ran".into()))?;
            let json = serde_json::to_value(&now).unwrap_or_default();
            wipe_json(&mut now.data);
            match state(&json) {
                State::Running(m) if tokio::time::Instant::now() >= deadline => {
                    break Err(fail(
                        &name,
                        format!("still running after {} s: {m}", timeout.as_secs()),
                    ));
                }
                State::Running(_) => tokio::time::sleep(HOOK_POLL).await,
                State::Succeeded => break Ok(()),
                State::Failed(m) => break Err(fail(&name, format!("failed: {m}"))),
            }
        };
        let delete = match &result {
            Ok(()) => h.hook.delete.contains(&DeletePolicy::HookSucceeded),
            Err(_) => h.hook.delete.contains(&DeletePolicy::HookFailed),
        };
        if delete && let Err(e) = api.delete(&name, &DeleteParams::background()).await {
            tracing::warn!(hook = %what(&name), error = %crate::errors::kube_message(&e), "deleting a hook");
        }
        p.object.take();
        result.map(|()| format!("{} succeeded", what(&name)))
    }

    /// Waits until `name` is gone (its deletion by BeforeHookCreation finished).
    async fn gone(
        &self,
        api: &kube::Api<DynamicObject>,
        name: &str,
        timeout: Duration,
    ) -> Result<(), String> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            match api.get_opt(name).await {
                Ok(None) => return Ok(()),
                Ok(Some(mut o)) => wipe_json(&mut o.data),
                Err(e) => return Err(crate::errors::kube_message(&e)),
            }
            if tokio::time::Instant::now() >= deadline {
                return Err("its last run was not deleted in time (BeforeHookCreation)".into());
            }
            tokio::time::sleep(HOOK_POLL).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_hook_pod_succeeds_by_its_phase_and_a_job_by_completion() {
        let pod = |phase: &str| json!({"apiVersion": "v1", "kind": "Pod", "status": {"phase": phase}});
        assert_eq!(state(&pod("Succeeded")), State::Succeeded);
        assert!(matches!(state(&pod("Running")), State::Running(_)));
        assert!(matches!(state(&pod("Failed")), State::Failed(_)));
        let done = json!({"apiVersion": "batch/v1", "kind": "Job", "status": {"conditions": [
            {"type": "Complete", "status": "True"}], "succeeded": 1}});
        assert_eq!(state(&done), State::Succeeded);
        let failed = json!({"apiVersion": "batch/v1", "kind": "Job", "status": {"conditions": [
            {"type": "Failed", "status": "True", "message": "backoff limit"}]}});
        assert!(matches!(state(&failed), State::Failed(m) if m.contains("backoff")));
    }
}
