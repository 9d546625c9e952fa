//! Diffs for `/v1/diff`: what a sync of a Sync would change now ([`crate::sync::diff`]), with
//! the Sync's own configuration and keys, read in the cluster; any replica can (it writes
//! nothing).

use kube::api::Api;

use super::{Error, schedule, spec};
use crate::api::Sync;
use crate::secrets::sealing::LiveKeys;
use crate::source::GitCache;

/// Computes what a sync would change.
#[derive(Clone)]
pub struct Differ {
    client: kube::Client,
    cache: GitCache,
    keys: LiveKeys,
    isolation: Option<String>,
    /// How revisions are rendered (the agent's renderer, shared with its syncs).
    pub render: crate::render::Render,
}

impl std::fmt::Debug for Differ {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Differ").finish_non_exhaustive()
    }
}

impl Differ {
    /// A differ with the agent's client, Git cache and sealing keys.
    pub fn new(client: kube::Client, cache: GitCache, keys: LiveKeys) -> Self {
        Self {
            client,
            cache,
            keys,
            isolation: None,
            render: crate::render::Render::default(),
        }
    }

    /// Diffs as syncs run under `--tenant-isolation` in the agent's namespace `namespace`.
    #[must_use]
    pub fn with_tenant_isolation(mut self, namespace: &str) -> Self {
        self.isolation = Some(namespace.to_owned());
        self
    }

    /// What a sync of the Sync `namespace/name` would change now, within its `spec.timeout`.
    pub async fn diff(&self, namespace: &str, name: &str) -> Result<crate::sync::diff::Report, Error> {
        let api: Api<Sync> = Api::namespaced(self.client.clone(), namespace);
        let s = api
            .get_opt(name)
            .await
            .map_err(|source| Error::Read {
                namespace: namespace.to_owned(),
                name: name.to_owned(),
                source: Box::new(source),
            })?
            .ok_or_else(|| Error::NotFound {
                namespace: namespace.to_owned(),
                name: name.to_owned(),
            })?;
        let (mut cfg, keys, last) =
            spec::prepare(&s, &self.client, &self.keys, None, self.isolation.as_deref()).await?;
        cfg.skip_if_commit = None;
        cfg.render = self.render.clone();
        let timeout = schedule::timeout(&s);
        tokio::time::timeout(
            timeout,
            crate::sync::diff::diff(self.client.clone(), &self.cache, &cfg, &keys, &last),
        )
        .await
        .map_err(|_| Error::Timeout {
            what: "diff",
            after: timeout,
        })?
        .map_err(Error::from)
    }
}
