//! Prune: delete what left Git, when it still carries this Sync's label and is not annotated
//! `lockstep.dev/prune: disabled`.

use kube::api::DeleteParams;

use super::{Applier, Error, dynamic_api, kube_err};
use crate::api::{OWNER_LABEL, PRUNE_ANNOTATION};
use crate::plan::ObjectId;

impl Applier {
    /// Deletes the objects that left Git ([`crate::plan::prune_set`], within the budget), when
    /// they still carry this Sync's label and are not annotated `lockstep.dev/prune: disabled`.
    /// Returns what was deleted.
    pub async fn prune(&self, ids: &[ObjectId]) -> Result<Vec<ObjectId>, Error> {
        let mut deleted = Vec::new();
        for id in ids {
            let Some((ar, caps)) = self.discovery.resolve_gvk(&id.gvk()) else {
                continue; // its kind is gone, and so is the object
            };
            let api = dynamic_api(&self.client, &ar, &caps.scope, &id.namespace);
            let Some(current) = api
                .get_metadata_opt(&id.name)
                .await
                .map_err(kube_err(format!("reading {id}")))?
            else {
                continue;
            };
            let ours = current.metadata.labels.as_ref().and_then(|l| l.get(OWNER_LABEL)) == Some(&self.owner);
            let kept = current
                .metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(PRUNE_ANNOTATION))
                .map(String::as_str)
                == Some("disabled");
            if ours && !kept {
                api.delete(&id.name, &DeleteParams::background())
                    .await
                    .map_err(kube_err(format!("pruning {id}")))?;
                deleted.push(id.clone());
            }
        }
        Ok(deleted)
    }
}
