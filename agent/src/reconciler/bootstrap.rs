//! The bootstrap Sync: the one the agent creates (or updates) at start-up from its flags, so
//! that an install needs nothing but the agent to start pulling the platform repository.

use kube::api::{Api, Patch, PatchParams};
use tracing::info;

use super::Error;
use crate::api::{Decryption, GitRef, LocalRef, SopsDecryption, Source, Sync, SyncSpec};

/// The Sync the agent creates at start-up from its flags (`--bootstrap-*`).
#[derive(Clone, Debug)]
pub struct Bootstrap {
    /// Repository URL.
    pub url: String,
    /// Branch.
    pub branch: String,
    /// Directory.
    pub path: String,
    /// Poll interval (Go duration).
    pub interval: String,
    /// Secret with `*.agekey` entries.
    pub sops_secret: Option<String>,
    /// Secret with repository credentials.
    pub secret: Option<String>,
}

impl Bootstrap {
    /// The Sync's spec.
    pub fn spec(&self) -> SyncSpec {
        SyncSpec {
            source: Source {
                url: self.url.clone(),
                reference: Some(GitRef {
                    branch: Some(self.branch.clone()),
                    ..GitRef::default()
                }),
                path: (!self.path.is_empty()).then(|| self.path.clone()),
                secret_ref: self.secret.clone().map(|name| LocalRef { name }),
                interval: Some(self.interval.clone()),
                recurse: None,
            },
            decryption: self.sops_secret.clone().map(|name| Decryption {
                sops: Some(SopsDecryption {
                    secret_ref: LocalRef { name },
                }),
                sealed_secrets: None,
            }),
            ..SyncSpec::default()
        }
    }
}

/// Creates or updates the bootstrap Sync `namespace/name` (server-side apply, field manager
/// `lockstep-bootstrap`): fields set by other managers (a later `kubectl edit`) are left alone
/// unless the flags set them too.
pub async fn bootstrap(
    client: kube::Client,
    namespace: &str,
    name: &str,
    b: &Bootstrap,
) -> Result<(), Error> {
    let obj = serde_json::json!({
        "apiVersion": "lockstep.dev/v1alpha1", "kind": "Sync",
        "metadata": { "name": name, "namespace": namespace },
        "spec": b.spec(),
    });
    let api: Api<Sync> = Api::namespaced(client, namespace);
    api.patch(
        name,
        &PatchParams::apply("lockstep-bootstrap").force(),
        &Patch::Apply(&obj),
    )
    .await
    .map_err(|source| Error::Bootstrap {
        namespace: namespace.to_owned(),
        name: name.to_owned(),
        source: Box::new(source),
    })?;
    info!(sync.namespace = %namespace, sync.name = %name, "bootstrap Sync applied");
    Ok(())
}
