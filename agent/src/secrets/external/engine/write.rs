//! Writing: an ExternalSecret's Secret server-side applied (or left as it is when its data hash
//! matches), as its creation policy says, and the ExternalSecret's status as ESO writes it.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, Patch, PatchParams};
use lockstep_formats::secret::SecretJson;
use serde_json::{Value as Json, json};
use zeroize::Zeroizing;

use super::{Engine, FIELD_MANAGER, Outcome};
use crate::api::conditions::{FALSE, TRUE};
use crate::secrets::WipedSecret;
use crate::secrets::external::api::{
    ExternalSecret, READY, SECRET_MISSING, SECRET_SYNCED, SECRET_SYNCED_ERROR,
};
use crate::secrets::external::{plan, values};

impl Engine {
    /// Writes one Secret as the creation policy says; nothing when unchanged.
    pub(super) async fn write(&self, es: &ExternalSecret, secret: SecretJson) -> Outcome {
        let ns = es.metadata.namespace.clone().unwrap_or_default();
        let name = plan::target_name(es);
        let api: Api<Secret> = Api::namespaced(self.client.clone(), &ns);
        let policy = plan::creation_policy(es);
        if policy == "None" {
            return Outcome::Skipped("creationPolicy None: no Secret is written".into());
        }
        let live = match api.get_opt(&name).await {
            Ok(l) => l.map(WipedSecret),
            Err(e) => return Outcome::Failed(format!("reading Secret {ns}/{name}: {e}")),
        };
        if let Some(l) = &live {
            // Another ExternalSecret's Secret is not taken over.
            let foreign = l.metadata.owner_references.iter().flatten().any(|o| {
                o.kind == "ExternalSecret"
                    && Some(&o.uid) != es.metadata.uid.as_ref()
                    && o.controller == Some(true)
            });
            if foreign {
                return Outcome::Failed(format!("target Secret {name} is owned by another ExternalSecret"));
            }
        }
        let want_hash = secret.pointer(&format!(
            "/metadata/annotations/{}",
            plan::DATA_HASH_ANNOTATION.replace('/', "~1")
        ));
        if let Some(l) = &live {
            let data: BTreeMap<String, values::Bytes> = l
                .data
                .iter()
                .flatten()
                .map(|(k, v)| (k.clone(), Zeroizing::new(v.0.clone())))
                .collect();
            let same_data = want_hash.and_then(Json::as_str) == Some(values::data_hash(&data).as_str());
            let annotated = l
                .metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(plan::DATA_HASH_ANNOTATION))
                .map(String::as_str)
                == want_hash.and_then(Json::as_str);
            if same_data && annotated {
                return Outcome::Synced { written: false };
            }
            if l.immutable == Some(true) {
                return Outcome::Failed("could not update secret, target is immutable".into());
            }
        }
        let body = match (policy, live.is_some()) {
            ("Merge", false) => {
                return Outcome::Skipped("secret will not be created due to CreationPolicy=Merge".into());
            }
            ("Merge", true) | ("CreateOrMerge", true) => {
                let mut secret = secret;
                let data = secret.get_mut("data").map(Json::take).unwrap_or_default();
                SecretJson::new(json!({
                    "apiVersion": "v1", "kind": "Secret",
                    "metadata": { "name": name, "namespace": ns,
                        "annotations": secret["metadata"]["annotations"], "labels": { plan::MANAGED_LABEL: "true" } },
                    "data": data,
                }))
            }
            _ => secret,
        };
        let manager = format!(
            "{FIELD_MANAGER}/{}",
            es.metadata.name.as_deref().unwrap_or_default()
        );
        let manager: String = manager.chars().take(128).collect();
        match api
            .patch(
                &name,
                &PatchParams::apply(&manager).force(),
                &Patch::Apply(&*body),
            )
            .await
        {
            // What the API server sends back holds the values too.
            Ok(written) => {
                drop(WipedSecret(written));
                Outcome::Synced { written: true }
            }
            Err(kube::Error::Api(s)) => Outcome::Failed(format!(
                "could not update secret {name}: {} ({})",
                s.message, s.code
            )),
            Err(e) => Outcome::Failed(format!("could not update secret {name}: {e}")),
        }
    }

    /// The ExternalSecret's status: `Ready` with `SecretSynced`/`SecretSyncedError`,
    /// `refreshTime` (when the successful refresh started), `syncedResourceVersion`, `binding`.
    pub(super) async fn report(&self, es: &ExternalSecret, outcome: &Outcome, started: &str) {
        let ns = es.metadata.namespace.clone().unwrap_or_default();
        let Some(name) = es.metadata.name.clone() else {
            return;
        };
        let (status, reason, message) = match outcome {
            Outcome::Synced { .. } => (TRUE, SECRET_SYNCED, "secret synced".to_owned()),
            Outcome::Skipped(m) if m.contains("Merge") => (FALSE, SECRET_MISSING, m.clone()),
            Outcome::Skipped(m) => (TRUE, SECRET_SYNCED, m.clone()),
            Outcome::Failed(m) => (FALSE, SECRET_SYNCED_ERROR, m.clone()),
        };
        let prev = es
            .status
            .as_ref()
            .map(|s| s.conditions.clone())
            .unwrap_or_default();
        let last = prev
            .iter()
            .find(|c| c.type_ == READY && c.status == status && c.reason == reason)
            .map(|c| c.last_transition_time.clone())
            .unwrap_or_else(|| started.to_owned());
        let mut st = json!({
            "conditions": [{ "type": READY, "status": status, "reason": reason, "message": message,
                "lastTransitionTime": last, "observedGeneration": es.metadata.generation }],
            "binding": { "name": plan::target_name(es) },
        });
        if status == TRUE {
            st["refreshTime"] = started.into();
            st["syncedResourceVersion"] = plan::resource_version(es).into();
        }
        let api: Api<ExternalSecret> = Api::namespaced(self.client.clone(), &ns);
        if let Err(e) = api
            .patch_status(
                &name,
                &PatchParams::default(),
                &Patch::Merge(json!({ "status": st })),
            )
            .await
        {
            tracing::warn!(externalsecret = %format!("{ns}/{name}"), error = %e, "could not write status");
        }
        match outcome {
            Outcome::Failed(m) => {
                tracing::warn!(externalsecret = %format!("{ns}/{name}"), reason, message = %m, "externalsecret failed")
            }
            _ => tracing::debug!(externalsecret = %format!("{ns}/{name}"), reason, "externalsecret synced"),
        }
    }
}
