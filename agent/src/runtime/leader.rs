//! Leader election on a Lease (`coordination.k8s.io/v1`, through `kube-lease-manager`, which
//! writes it with server-side apply): only the leader runs the controllers and renews sealing
//! keys; every replica serves the HTTP endpoints (certificates, webhooks, metrics).
//!
//! Safety comes first, as in client-go: a leader that fails to renew its lease (and fails
//! once more at once) stops leading for good, and the process exits, so that two replicas
//! never act as leaders for longer than the renewal margin. A replica shutting down releases
//! the lease. A killed leader's lease expires after its duration, and a follower takes over.

use std::time::Duration;

use kube_lease_manager::{LeaseManager, LeaseManagerBuilder};

/// Errors of the election.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The Lease could not be read or created.
    #[error("lease {namespace}/{name}: {message}")]
    Lease {
        /// Its namespace.
        namespace: String,
        /// Its name.
        name: String,
        /// What went wrong.
        message: String,
    },
}

/// One replica's part in the election.
pub struct Election {
    manager: LeaseManager,
    identity: String,
    grace: Duration,
    namespace: String,
    name: String,
}

impl std::fmt::Debug for Election {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Election")
            .field("identity", &self.identity)
            .field("lease", &format!("{}/{}", self.namespace, self.name))
            .finish_non_exhaustive()
    }
}

impl Election {
    /// Joins the election for the Lease `namespace/name` (created when missing) as `identity`
    /// (the pod's name); a lease not renewed for `duration` may be taken over. The leader
    /// renews a third of `duration` before it runs out.
    pub async fn join(
        client: kube::Client,
        namespace: &str,
        name: &str,
        identity: &str,
        duration: Duration,
    ) -> Result<Self, Error> {
        let secs = duration.as_secs().max(3);
        let grace = (secs / 3).max(1);
        let manager = LeaseManagerBuilder::new(client, name)
            .with_namespace(namespace)
            .with_identity(identity)
            .with_duration(secs)
            .with_grace(grace)
            .with_field_manager(format!("lockstep-agent/{identity}"))
            .build()
            .await
            .map_err(|e| Error::Lease {
                namespace: namespace.to_owned(),
                name: name.to_owned(),
                message: e.to_string(),
            })?;
        Ok(Self {
            manager,
            identity: identity.to_owned(),
            grace: Duration::from_secs(grace),
            namespace: namespace.to_owned(),
            name: name.to_owned(),
        })
    }

    /// Waits until this replica holds the lease.
    pub async fn acquire(&self) {
        tracing::info!(identity = %self.identity, lease = %self.name, "waiting to lead");
        loop {
            match self.manager.changed().await {
                Ok(true) => break,
                Ok(false) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "leader election");
                    tokio::time::sleep(Duration::from_secs(2)).await;
                }
            }
        }
        tracing::info!(identity = %self.identity, lease = %self.name, "leading");
    }

    /// Keeps renewing the lease while leading; returns why leadership ended: the lease went
    /// to another replica, or renewing it failed twice in a row (a leader that cannot renew
    /// must stop before its lease runs out).
    pub async fn hold(&self) -> String {
        loop {
            match self.manager.changed().await {
                Ok(true) => continue,
                Ok(false) => return "the lease was taken over by another replica".into(),
                Err(first) => {
                    // One more try at once: a renewal that succeeds keeps `changed` waiting
                    // for the next one, past this bound.
                    match tokio::time::timeout(self.grace / 2, self.manager.changed()).await {
                        Err(_) | Ok(Ok(true)) => {
                            tracing::warn!(error = %first, "renewing the lease failed once; renewed");
                        }
                        Ok(Ok(false)) => return "the lease was taken over by another replica".into(),
                        Ok(Err(e)) => return format!("renewing the lease failed: {first}; then: {e}"),
                    }
                }
            }
        }
    }

    /// Gives the lease up (shutdown), so that another replica leads without waiting for it to
    /// run out.
    pub async fn release(&self) {
        match self.manager.release().await {
            Ok(()) => tracing::info!(identity = %self.identity, "lease released"),
            Err(e) => tracing::warn!(error = %e, "releasing the lease"),
        }
    }
}
